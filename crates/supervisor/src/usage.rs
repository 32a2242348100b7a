//! Use of the API by key and user: admission within a key's limits (429 naming the limit,
//! with `Retry-After`), the in-flight slot held until the response body is sent, and the
//! tokens each request used ([`Meter`]), counted in the identity store and on `/metrics`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::web::Bytes;
use prometheus::IntCounterVec;
use xi_auth::Principal;
use xi_identity::limits::{Permit, Refusal};
use xi_identity::Identity;

use crate::authz::Caller;
use crate::error::SupervisorError;
use crate::state::AppState;

/// The `key` label of a caller: its key's display prefix, `-` for a token login.
pub(crate) fn key_label(p: &Principal) -> &str {
    p.key.as_ref().map_or("-", |k| k.prefix.as_str())
}

/// Counts one authenticated request and, for an identity-store key, takes its admission within
/// the key's limits (decided with its authentication: `admission`). The permit, when the key
/// limits requests in flight, must live as long as the response (see [`Guarded`]).
pub fn admit(
    state: &AppState,
    p: &Arc<Principal>,
    admission: Option<Result<Permit, Refusal>>,
) -> Result<Option<Permit>, SupervisorError> {
    let (Some(admission), Some(key)) = (admission, &p.key) else {
        state.metrics.usage_request(p, false);
        return Ok(None);
    };
    match admission {
        Ok(permit) => {
            // A store key's principal is the one its cache entry shares.
            state.metrics.usage_request(p, true);
            Ok(key.limits.concurrent_requests.map(|_| permit))
        }
        Err(refusal) => {
            state
                .metrics
                .limited
                .with_label_values(&[refusal.limit])
                .inc();
            tracing::info!(key = %key.prefix, user = %p.username, limit = refusal.limit, "api key limited");
            Err(SupervisorError::Limited {
                detail: refusal.to_string(),
                retry_after: refusal.retry_after_secs,
            })
        }
    }
}

/// A response body that holds a key's in-flight slot until it has been sent (a streamed
/// answer counts as in flight while it streams).
pub struct Guarded<B> {
    body: Pin<Box<B>>,
    _permit: Permit,
}

impl<B> Guarded<B> {
    pub fn new(body: B, permit: Permit) -> Self {
        Guarded {
            body: Box::pin(body),
            _permit: permit,
        }
    }
}

impl<B: MessageBody> MessageBody for Guarded<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        self.body.as_mut().poll_next(cx)
    }
}

/// Counts the tokens of one request for its caller (key and user).
#[derive(Clone)]
pub struct Meter {
    target: Option<Arc<Target>>,
}

struct Target {
    identity: Option<(Arc<Identity>, i64)>,
    key: String,
    user: String,
    tokens: IntCounterVec,
}

impl Meter {
    pub fn of(state: &AppState, caller: &Caller) -> Meter {
        let Some(p) = caller.principal() else {
            return Meter { target: None };
        };
        let identity = match (&state.identity, &p.key) {
            (Some(identity), Some(key)) => Some((identity.clone(), key.id)),
            _ => None,
        };
        Meter {
            target: Some(Arc::new(Target {
                identity,
                key: key_label(p).to_string(),
                user: p.username.clone(),
                tokens: state.metrics.usage_tokens.clone(),
            })),
        }
    }

    pub fn record(&self, prompt: usize, completion: usize) {
        let Some(t) = &self.target else { return };
        let (prompt, completion) = (prompt as u64, completion as u64);
        t.tokens
            .with_label_values(&[&t.key, &t.user, "prompt"])
            .inc_by(prompt);
        t.tokens
            .with_label_values(&[&t.key, &t.user, "completion"])
            .inc_by(completion);
        if let Some((identity, key)) = &t.identity {
            identity.record_tokens(*key, prompt, completion);
        }
    }
}
