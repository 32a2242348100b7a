//! The cluster's parts: its workers ([`members`]), remote workers over HTTP ([`remote`]) and
//! where launches go ([`placement`]). Workers joining, leaving and dying, and what that does
//! to the models, is the job of `domain::Cluster`; nothing here knows the models table.

pub mod members;
pub mod placement;
pub mod remote;

pub use members::{MemberView, WorkerSet, MISSED_HEARTBEATS};
pub use remote::RemoteWorker;
