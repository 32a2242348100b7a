//! The one error type of this crate. The supervisor maps each kind to an HTTP status in its
//! error table; the messages are safe to show (they never hold a secret or a token).

/// What went wrong with single sign-on.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The OIDC configuration is invalid: stops startup, naming the field.
    #[error("{source_label}: {field}: {message}")]
    Config {
        source_label: String,
        field: String,
        message: String,
    },
    /// No provider of that name is configured (404).
    #[error("No single sign-on provider named {0:?}")]
    UnknownProvider(String),
    /// The caller's request is malformed or refers to a flow that does not exist (400).
    #[error("{0}")]
    BadRequest(String),
    /// A device login is still waiting for the user (400 with the RFC 8628 code as detail).
    #[error("{0}")]
    Pending(&'static str),
    /// The provider vouches for the user, but this server's rules keep them out (403).
    #[error("{0}")]
    Denied(String),
    /// A token (ID token, access token) failed verification (401).
    #[error("{0}")]
    InvalidToken(String),
    /// The provider answered, but not as the protocol says (502).
    #[error("{0}")]
    Upstream(String),
    /// The provider cannot be reached or is failing (503).
    #[error("{0}")]
    Unavailable(String),
    /// Too many logins are in progress at once (503).
    #[error("{0}")]
    Busy(String),
}

impl OidcError {
    pub(crate) fn config(
        label: &str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> OidcError {
        OidcError::Config {
            source_label: label.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> OidcError {
        OidcError::InvalidToken(message.into())
    }
}

pub type Result<T, E = OidcError> = std::result::Result<T, E>;
