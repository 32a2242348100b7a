//! Wire types of xinference-rs: what crosses HTTP between clients, the supervisor and workers.
//!
//! Parts: [`permission`] (the permission names of the auth system and their aliases),
//! [`auth`] (login and token shapes), [`identity`] (users, api keys and sessions of the
//! identity store), [`models`] (launch/registration/description shapes),
//! [`launch`] (the typed launch options, parsed once), [`generation`] (the typed sampling fields
//! of a generation request and their defaults), [`guide`] (structured output: the constraint a
//! request puts on its answer), [`tools`] (tool calling: the functions a chat offers and the
//! calls an answer makes), [`audio`] (speech-to-text requests, transcripts and their
//! formats), [`framing`] (cutting NDJSON and Server-Sent Event streams into messages, bounded),
//! [`worker`] (the supervisor's view of a
//! worker), [`sso`] (single sign-on: providers, one-time login codes, device logins), [`cluster`] (the supervisor <-> worker protocol), [`names`] (the rules for names
//! that become paths) and
//! [`ErrorBody`] (every error body is `{"detail": "..."}`).
//!
//! Invariant: this crate knows nothing of actix, candle or any runtime; it is plain serde types.

pub mod audio;
pub mod auth;
pub mod cluster;
pub mod framing;
pub mod generation;
pub mod guide;
pub mod identity;
pub mod launch;
pub mod models;
pub mod names;
pub mod permission;
pub mod sso;
pub mod tools;
pub mod worker;

use serde::{Deserialize, Serialize};

pub use permission::{Permission, PermissionSet};

/// The body of every error response, as upstream Xinference sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub detail: String,
}

impl ErrorBody {
    pub fn new(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
        }
    }
}
