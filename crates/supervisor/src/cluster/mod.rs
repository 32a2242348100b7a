//! The cluster side of the supervisor: its workers ([`members`]), remote workers over HTTP
//! ([`remote`]), where launches go ([`placement`]) and workers joining, leaving
//! and dying ([`membership`]).

pub mod members;
pub mod membership;
pub mod placement;
pub mod remote;

pub use members::{MemberView, WorkerSet, MISSED_HEARTBEATS};
