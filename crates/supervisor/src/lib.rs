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
//! - `domain`: [`Cluster`](domain::Cluster), the one handle the routes call for anything about
//!   models and workers (`plan`, `launch`, `terminate`, `cancel`, `progress`, `serving`,
//!   `dispatch`, `join`, `heartbeat`, `leave`, `expire`, `shutdown`). It owns the `ModelTable`,
//!   the `WorkerSet`, the registry, and the HTTP client and cluster secret remote workers are
//!   reached with; it never sees actix, and is tested without HTTP over `xi_testkit::FakeWorker`.
//! - `state`: `AppState`, what the HTTP layer shares: the `Cluster` handle, auth, the public
//!   routes, metrics, the login pool, the config and the server's address.
//! - `registry`: built-in catalogue (embedded JSON) and custom registrations (persisted
//!   atomically under `$XINFERENCE_HOME/model/v2/<type>/<name>.json`).
//! - `cluster`: the cluster's parts: the workers (`WorkerSet`: in-process and remote, their
//!   heartbeats and deaths), placement of launches, and
//!   [`RemoteWorker`](cluster::RemoteWorker), the HTTP client of a worker.
//! - `lifecycle`: launch plans, the models table (`ModelTable`, `ModelEntry`), what a launch
//!   sends to workers, and sending a request to a model's replicas.
//! - `error`: [`SupervisorError`], the crate's one error type, and its mapping to HTTP.
//! - [`limits`]: body deadlines (408), open connections per client address (429), keep-alive
//!   and open-file limits: what keeps slow clients from holding every file descriptor.
//!
//! Invariants: every route is in the route table; every error body is `{"detail": ...}`;
//! password hashing never runs on the request threads. Imports point one way: `server` →
//! `routes` → `authz` / `limits` → `state` → `domain` → `lifecycle`, `cluster`, `registry` →
//! `error`; nothing below `state` imports it, and `domain`, `lifecycle` and `cluster` never import
//! actix (but `RemoteWorker`, an HTTP client, streams its byte type).

mod authz;
mod client_address;
mod clock;
mod cluster;
pub mod config;
mod domain;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod lifecycle;
pub mod limits;
mod metrics;
mod registry;
mod routes;
mod server;
mod state;
mod usage;

pub use config::SupervisorConfig;
pub use error::SupervisorError;
pub use routes::openapi::document as openapi_document;
pub use routes::{route_table, Access, RouteDef, Switch, Verb};
pub use server::{Running, Supervisor};
