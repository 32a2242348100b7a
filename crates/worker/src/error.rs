//! [`NodeError`]: why a cluster worker process stops. Model-level failures are
//! [`xi_api::worker::WorkerError`]s, answered to the supervisor, never fatal here.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum NodeError {
    /// The worker cannot start (bad address, port in use).
    #[error("{0}")]
    Startup(String),
    /// The supervisor refused us (wrong cluster secret): retrying cannot help.
    #[error("{0}")]
    Refused(String),
    /// The supervisor cannot be reached now (retried).
    #[error("cannot reach the supervisor: {0}")]
    Unreachable(String),
}
