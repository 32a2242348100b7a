//! The one error type of the engine crate.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    /// A required file is not in the model folder.
    #[error("model folder {folder} has no {file} ({what})")]
    MissingFile {
        folder: PathBuf,
        file: String,
        what: &'static str,
    },
    /// A file is there but unusable.
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    /// The model's architecture or options are not supported.
    #[error("{0}")]
    Unsupported(String),
    /// The request cannot be served as asked (too long, bad token id, ...).
    #[error("{0}")]
    InvalidInput(String),
    /// A tensor operation failed.
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

impl EngineError {
    pub(crate) fn bad_file(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        EngineError::BadFile {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    /// Whether the caller (the request or the launch options) is at fault, as opposed to us.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, EngineError::Compute(_))
    }
}
