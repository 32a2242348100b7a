//! The one error type of the auth crate. The REST layer maps each variant to a status code.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum AuthError {
    /// The auth config file is unusable. `field` names the JSON path (and user) at fault.
    #[error("invalid auth config {path}: {field}: {message}")]
    Config {
        path: String,
        field: String,
        message: String,
    },
    /// Wrong username or password (the same for an unknown user).
    #[error("Incorrect username or password")]
    BadLogin,
    /// No usable `Authorization: Bearer` header.
    #[error("Not authenticated")]
    NotAuthenticated,
    /// A bad, expired or tampered token, or an unknown api key.
    #[error("Could not validate credentials")]
    InvalidCredentials,
    /// Too many failed logins; retry after this many seconds.
    #[error("Too many failed login attempts, retry in {retry_after_secs} s")]
    Throttled { retry_after_secs: u64 },
    /// Too many password checks are waiting; retry shortly (503).
    #[error("Too many logins in progress, retry shortly")]
    Busy,
    /// `/token` was called while auth is off.
    #[error("Authentication is not enabled")]
    Disabled,
    /// The cluster secret is missing, too short or unreadable.
    #[error("{0}")]
    ClusterSecret(String),
    /// Hashing or signing failed inside a library (never caused by user input).
    #[error("internal auth error: {0}")]
    Internal(String),
}

impl AuthError {
    pub(crate) fn config(path: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        AuthError::Config {
            path: path.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
}
