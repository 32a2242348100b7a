//! The one error type of the client crate.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    /// The server answered with an error status; `detail` is its `{"detail": ...}` text.
    #[error("{detail} (HTTP {status})")]
    Server { status: u16, detail: String },
    /// The server could not be reached or the connection broke.
    #[error("cannot reach {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    /// Auth is on and no api key or stored token was found.
    #[error("{endpoint} requires a login: run `xinference login -e {endpoint} --username <user> --password <password>`, or pass --api-key")]
    NotLoggedIn { endpoint: String },
    /// Bad input on our side (a file that is not JSON, a missing argument, ...).
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing a local file failed.
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
}

impl ClientError {
    /// Whether the server refused the credentials (401) — the stored token may have expired.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, ClientError::Server { status: 401, .. })
    }
}
