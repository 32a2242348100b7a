//! The one error type of the engine crate.
//!
//! Messages go back to API clients, so they never carry a backtrace (candle attaches one to
//! its errors when `RUST_BACKTRACE` is set) and never echo the content of a model file (a
//! file that is not a model could be anything): they name the file, the field or the tensor.
//!
//! [`EngineError`] becomes a [`WorkerError`] in one place (`From` below): the worker crate
//! never decides what an engine failure means. Each variant has one worker kind:
//!
//! | variant | worker kind | why |
//! |---|---|---|
//! | `MissingFile`, `BadFile`, `Unsupported` | `InvalidModel` | the model or its launch options are wrong |
//! | `InvalidInput` | `InvalidInput` | the request cannot be served as sent |
//! | `Compute`, `Internal` | `Internal` | our fault: the client gets a generic 500 |

use std::path::PathBuf;

use thiserror::Error;
use xi_api::worker::{WorkerError, WorkerErrorKind};

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
    /// A tensor operation failed (the candle error's message, without its backtrace).
    #[error("model computation failed: {0}")]
    Compute(String),
    /// An invariant of ours does not hold (a split that must give three parts, a logits row
    /// that must be there): a bug, never the caller's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<candle_core::Error> for EngineError {
    fn from(e: candle_core::Error) -> Self {
        tracing::debug!(error = ?e, "candle error");
        EngineError::Compute(candle_message(&e))
    }
}

impl EngineError {
    pub(crate) fn bad_file(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        EngineError::BadFile {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn internal(what: impl Into<String>) -> Self {
        EngineError::Internal(what.into())
    }

    /// Whether the caller (the request or the launch options) is at fault, as opposed to us.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, EngineError::Compute(_) | EngineError::Internal(_))
    }

    /// The worker's kind for this error (the one table from engine to worker).
    pub fn worker_kind(&self) -> WorkerErrorKind {
        match self {
            EngineError::MissingFile { .. }
            | EngineError::BadFile { .. }
            | EngineError::Unsupported(_) => WorkerErrorKind::InvalidModel,
            EngineError::InvalidInput(_) => WorkerErrorKind::InvalidInput,
            EngineError::Compute(_) | EngineError::Internal(_) => WorkerErrorKind::Internal,
        }
    }
}

impl From<EngineError> for WorkerError {
    fn from(e: EngineError) -> Self {
        WorkerError::new(e.worker_kind(), e.to_string())
    }
}

/// A candle error's message without the backtrace candle attaches (with `RUST_BACKTRACE` set)
/// at any level of wrapping.
pub fn candle_message(e: &candle_core::Error) -> String {
    use candle_core::Error;
    let text = match e {
        Error::WithBacktrace { inner, .. } => return candle_message(inner),
        Error::Context { inner, context } => format!("{context}: {}", candle_message(inner)),
        Error::WithPath { inner, path } => format!("{}: {}", path.display(), candle_message(inner)),
        other => other.to_string(),
    };
    strip_backtrace(&text)
}

/// The innermost candle error, under any backtrace, path or context wrapping.
pub(crate) fn candle_root(e: &candle_core::Error) -> &candle_core::Error {
    use candle_core::Error;
    match e {
        Error::WithBacktrace { inner, .. }
        | Error::Context { inner, .. }
        | Error::WithPath { inner, .. } => candle_root(inner),
        other => other,
    }
}

/// Cuts a rendered backtrace out of a message (one formatted into a string further down, where
/// the structure is gone): its frames are lines like `  12: name` and `      at file:line`.
fn strip_backtrace(text: &str) -> String {
    let frame = |line: &str| {
        let t = line.trim_start();
        if line.len() == t.len() {
            return false;
        }
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        (digits > 0 && t[digits..].starts_with(": ")) || t.starts_with("at ")
    };
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !frame(l) && l.trim() != "stack backtrace:")
        .collect();
    lines.join("\n").trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_has_one_worker_kind_and_client_errors_are_the_callers() {
        let cases = [
            (
                EngineError::MissingFile {
                    folder: "m".into(),
                    file: "config.json".into(),
                    what: "the model config",
                },
                WorkerErrorKind::InvalidModel,
            ),
            (
                EngineError::bad_file("m/x.gguf", "not a GGUF file"),
                WorkerErrorKind::InvalidModel,
            ),
            (
                EngineError::Unsupported("architecture Foo".into()),
                WorkerErrorKind::InvalidModel,
            ),
            (
                EngineError::InvalidInput("too long".into()),
                WorkerErrorKind::InvalidInput,
            ),
            (
                EngineError::Compute("shape mismatch".into()),
                WorkerErrorKind::Internal,
            ),
            (
                EngineError::internal("q/k/v split"),
                WorkerErrorKind::Internal,
            ),
        ];
        for (e, kind) in cases {
            let client = e.is_client_error();
            assert_eq!(client, kind != WorkerErrorKind::Internal, "{e:?}");
            let message = e.to_string();
            let w = WorkerError::from(e);
            assert_eq!(w.kind, kind, "{message}");
            assert_eq!(w.message, message);
        }
    }

    #[test]
    fn invariant_failures_are_internal_not_invalid_input() {
        let e = EngineError::internal("missing logits row");
        assert!(!e.is_client_error());
        assert_eq!(e.to_string(), "internal error: missing logits row");
        assert_eq!(WorkerError::from(e).kind, WorkerErrorKind::Internal);
    }

    #[test]
    fn candle_errors_lose_their_backtraces_at_any_depth() {
        let bt = |e: candle_core::Error| candle_core::Error::WithBacktrace {
            inner: Box::new(e),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        let raw = bt(candle_core::Error::Msg("shape mismatch".into()).context("in layer 3"));
        assert!(raw.to_string().lines().count() > 3, "no backtrace to strip");
        let wrapped = bt(candle_core::Error::Msg(format!("outer: {raw}")));
        for e in [raw, wrapped] {
            let message = EngineError::from(e).to_string();
            assert!(message.contains("shape mismatch"), "{message}");
            assert!(message.lines().count() <= 2, "{message}");
            assert!(!message.contains("backtrace"), "{message}");
            assert!(!message.contains(".rs:"), "{message}");
        }
    }
}
