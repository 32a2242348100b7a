//! The one error type of the identity crate; the supervisor maps each variant to a status in
//! one place (`SupervisorError::status_code`).

use thiserror::Error;
use xi_auth::AuthError;

#[derive(Debug, Error)]
pub enum IdentityError {
    /// A malformed request: an unknown permission, a short password, a bad expiry (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such user or key (404).
    #[error("{0}")]
    NotFound(String),
    /// A duplicate username, or a write to a config-file principal (409).
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this to this target: granting what it does not hold, removing the
    /// last admin, touching another user's key (403).
    #[error("{0}")]
    Forbidden(String),
    /// A bad, used or expired refresh token; a wrong current password (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Login and authentication failures, as the config-file auth reports them.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The database cannot be reached (503); requests with cached credentials keep working.
    #[error("the identity store is unavailable: {0}")]
    Unavailable(String),
    /// A bug or a database fault that is not the caller's (500, logged).
    #[error("identity store error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for IdentityError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => IdentityError::Unavailable(e.to_string()),
            sqlx::Error::Database(db) if is_connection_loss(db.code().as_deref()) => {
                IdentityError::Unavailable(e.to_string())
            }
            _ => IdentityError::Internal(e.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for IdentityError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::Execute(inner)
            | sqlx::migrate::MigrateError::ExecuteMigration(inner, _) => inner.into(),
            other => IdentityError::Internal(format!("cannot migrate the database: {other}")),
        }
    }
}

/// PostgreSQL's SQLSTATE classes for a server going away: 57P01-57P03 (admin shutdown, crash
/// shutdown, cannot connect now) and class 08 (connection exceptions).
fn is_connection_loss(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03"))
}

pub type Result<T> = std::result::Result<T, IdentityError>;
