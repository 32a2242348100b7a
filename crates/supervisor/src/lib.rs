//! The xinference-rs supervisor: the REST API every client talks to.
//!
//! Parts:
//! - [`config`]: [`SupervisorConfig`], built once by the launcher binary and passed down.
//! - [`Supervisor`]: loads auth and the registry ([`Supervisor::new`]), then serves on an
//!   already-bound listener until shutdown ([`Supervisor::run`]).
//! - `authz`: deny-by-default authentication middleware and the `Require<P>` extractor by
//!   which every protected handler names its permission.
//! - `routes`: the one route table (method, path, permission, handler) and the handlers,
//!   split by resource; `routes::ui` serves the web UI (`ui/`, embedded in the binary) at `/ui/`.
//! - `registry`: built-in catalogue (embedded JSON) and custom registrations (persisted
//!   atomically under `$XINFERENCE_HOME/model/v2/<type>/<name>.json`).
//! - `cluster`: the workers (in-process and remote), their heartbeats and deaths, placement
//!   of launches, and [`RemoteWorker`](cluster::RemoteWorker), the HTTP client of a worker.
//! - `lifecycle`: launch plans, the models table, launches and terminations.
//! - `error`: [`SupervisorError`], the crate's one error type, and its mapping to HTTP.
//! - [`limits`]: body deadlines (408), open connections per client address (429), keep-alive
//!   and open-file limits: what keeps slow clients from holding every file descriptor.
//!
//! Invariants: every route is in the route table; every error body is `{"detail": ...}`;
//! password hashing never runs on the request threads.

mod authz;
mod cluster;
pub mod config;
mod error;
mod lifecycle;
pub mod limits;
mod login_pool;
mod metrics;
mod registry;
mod routes;
mod server;
mod state;

pub use config::SupervisorConfig;
pub use error::SupervisorError;
pub use routes::{route_table, Access, RouteDef, Verb};
pub use server::{Running, Supervisor};
