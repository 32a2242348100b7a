//! [`SupervisorError`], the crate's one error type, and the one place that turns errors into
//! HTTP responses (status, `{"detail": ...}`, `WWW-Authenticate`, `Retry-After`).
//!
//! Errors arrive here by one `From` per boundary: [`AuthError`] and [`WorkerError`] (itself made
//! from the engine's errors by the engine crate). [`ResponseError::status_code`] below is the
//! crate's one status table; `docs/errors.md` lists it. Internal failures (ours, not the
//! client's) answer 500 with a generic detail and a short reference; the cause is logged at
//! error level with the same reference, never sent.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::error::{JsonPayloadError, PayloadError, QueryPayloadError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use thiserror::Error;
use xi_api::worker::{WorkerError, WorkerErrorKind};
use xi_api::{ErrorBody, Permission};
use xi_auth::AuthError;
use xi_identity::IdentityError;

/// Which kind of route looked a model uid up. Upstream Xinference answers an unknown uid with
/// 400 on the management routes (describe, terminate, cancel, ...) and 404 on the inference
/// routes (since v2.7); clients depend on both, so the status follows the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelLookup {
    /// `/v1/models/{uid}` and its sub-routes: 400.
    Management,
    /// `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/rerank`: 404.
    Inference,
}

#[derive(Debug, Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("Not enough permissions")]
    Forbidden { required: Permission },
    /// Refused for a reason beyond a missing permission (granting what one does not hold,
    /// the last admin, an account that must change its password).
    #[error("{0}")]
    Denied(String),
    /// Bad credentials other than a login's: a used refresh token, a disabled key (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The request conflicts with what exists (a duplicate name, a config-file user).
    #[error("{0}")]
    Conflict(String),
    /// An api key over one of its limits (429 with `Retry-After`).
    #[error("{detail}")]
    Limited { detail: String, retry_after: u64 },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// No model with this uid (or none ready, for the routes that describe a running model).
    #[error("Model not found in the model list, uid: {uid}")]
    ModelNotFound { uid: String, lookup: ModelLookup },
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{detail}")]
    Unavailable {
        detail: String,
        retry_after: Option<u64>,
    },
    /// A feature the request asks for is not implemented (upstream: `logit_bias`, 501).
    #[error("{0}")]
    NotImplemented(String),
    /// A launch was cancelled (upstream answers 499).
    #[error("{0}")]
    Cancelled(String),
    /// An internal (worker) call without the right cluster secret.
    #[error("Missing or wrong cluster secret")]
    ClusterSecret,
    /// An upstream service (an identity provider) answered against its protocol (502).
    #[error("{0}")]
    BadGateway(String),
    /// Startup failures (bad home folder, unreadable registrations folder).
    #[error("{0}")]
    Startup(String),
    /// Something that is our fault. The message is logged, never sent.
    #[error("Internal server error")]
    Internal(String),
}

impl SupervisorError {
    pub fn internal(err: impl std::fmt::Display) -> Self {
        SupervisorError::Internal(err.to_string())
    }

    /// An unknown model uid, answered as upstream does on that kind of route.
    pub fn model_not_found(uid: impl Into<String>, lookup: ModelLookup) -> Self {
        SupervisorError::ModelNotFound {
            uid: uid.into(),
            lookup,
        }
    }

    /// The cause of an internal failure (logged, never sent); `None` for the client's errors.
    fn internal_cause(&self) -> Option<String> {
        match self {
            SupervisorError::Auth(
                e @ (AuthError::Config { .. }
                | AuthError::ClusterSecret(_)
                | AuthError::Internal(_)),
            ) => Some(e.to_string()),
            SupervisorError::Startup(cause) | SupervisorError::Internal(cause) => {
                Some(cause.clone())
            }
            _ => None,
        }
    }

    /// What the client is told: the message, or for an internal failure a generic detail with
    /// a reference under which the cause is logged. Also for errors sent as an event once a
    /// stream has started.
    pub fn client_detail(&self) -> String {
        match self.internal_cause() {
            Some(cause) => {
                let reference = format!("{:08x}", rand::random::<u32>());
                tracing::error!(%reference, %cause, "internal error while serving a request");
                format!("{INTERNAL_DETAIL}; see the server log (ref {reference})")
            }
            None => self.to_string(),
        }
    }
}

/// The start of every internal failure's detail.
pub const INTERNAL_DETAIL: &str = "Internal server error";

/// The identity store's errors; an unreachable database is 503 with a retry hint (its cause
/// is logged), everything else says what was wrong.
impl From<IdentityError> for SupervisorError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::BadRequest(m) => SupervisorError::BadRequest(m),
            IdentityError::NotFound(m) => SupervisorError::NotFound(m),
            IdentityError::Conflict(m) => SupervisorError::Conflict(m),
            IdentityError::Forbidden(m) => SupervisorError::Denied(m),
            IdentityError::Unauthorized(m) => SupervisorError::Unauthorized(m),
            IdentityError::Auth(e) => SupervisorError::Auth(e),
            IdentityError::Unavailable(cause) => {
                tracing::warn!(%cause, "identity store unavailable");
                SupervisorError::Unavailable {
                    detail: "The identity store (database) is unavailable; try again shortly"
                        .into(),
                    retry_after: Some(5),
                }
            }
            IdentityError::Internal(cause) => SupervisorError::Internal(cause),
        }
    }
}

/// Single sign-on's errors. A provider that cannot be reached is 503, one that breaks the
/// protocol 502; a refused token is 401, a bad request 400.
impl From<xi_oidc::OidcError> for SupervisorError {
    fn from(e: xi_oidc::OidcError) -> Self {
        use xi_oidc::OidcError;
        match e {
            OidcError::Config { .. } => SupervisorError::Startup(e.to_string()),
            OidcError::UnknownProvider(_) => SupervisorError::NotFound(e.to_string()),
            OidcError::BadRequest(m) => SupervisorError::BadRequest(m),
            OidcError::Pending(code) => SupervisorError::BadRequest(code.to_string()),
            OidcError::InvalidToken(m) => SupervisorError::Unauthorized(m),
            OidcError::Denied(m) => SupervisorError::Denied(m),
            OidcError::Upstream(m) => SupervisorError::BadGateway(m),
            OidcError::Unavailable(m) => SupervisorError::Unavailable {
                detail: m,
                retry_after: Some(30),
            },
            OidcError::Busy(m) => SupervisorError::Unavailable {
                detail: m,
                retry_after: Some(10),
            },
        }
    }
}

/// The one table from worker kinds to the client's errors (statuses follow from
/// [`ResponseError::status_code`]).
impl From<WorkerError> for SupervisorError {
    fn from(e: WorkerError) -> Self {
        match e.kind {
            WorkerErrorKind::InvalidModel | WorkerErrorKind::InvalidInput => {
                SupervisorError::BadRequest(e.message)
            }
            WorkerErrorKind::NotFound => SupervisorError::NotFound(e.message),
            WorkerErrorKind::Unavailable | WorkerErrorKind::Unreachable => {
                SupervisorError::Unavailable {
                    detail: e.message,
                    retry_after: None,
                }
            }
            WorkerErrorKind::Busy => SupervisorError::Unavailable {
                detail: e.message,
                retry_after: Some(1),
            },
            WorkerErrorKind::Cancelled => SupervisorError::Cancelled(e.message),
            WorkerErrorKind::TooLarge => SupervisorError::PayloadTooLarge(e.message),
            WorkerErrorKind::Internal => SupervisorError::Internal(e.message),
        }
    }
}

impl ResponseError for SupervisorError {
    fn status_code(&self) -> StatusCode {
        match self {
            SupervisorError::Auth(auth) => match auth {
                AuthError::BadLogin
                | AuthError::NotAuthenticated
                | AuthError::InvalidCredentials => StatusCode::UNAUTHORIZED,
                AuthError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
                AuthError::Busy => StatusCode::SERVICE_UNAVAILABLE,
                AuthError::Disabled => StatusCode::BAD_REQUEST,
                AuthError::Config { .. } | AuthError::ClusterSecret(_) | AuthError::Internal(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
            SupervisorError::Forbidden { .. } | SupervisorError::Denied(_) => StatusCode::FORBIDDEN,
            SupervisorError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            SupervisorError::Conflict(_) => StatusCode::CONFLICT,
            SupervisorError::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
            SupervisorError::ClusterSecret => StatusCode::UNAUTHORIZED,
            SupervisorError::BadRequest(_) => StatusCode::BAD_REQUEST,
            SupervisorError::NotFound(_) => StatusCode::NOT_FOUND,
            SupervisorError::ModelNotFound { lookup, .. } => match lookup {
                ModelLookup::Management => StatusCode::BAD_REQUEST,
                ModelLookup::Inference => StatusCode::NOT_FOUND,
            },
            SupervisorError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            SupervisorError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            SupervisorError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            SupervisorError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            SupervisorError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            SupervisorError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            SupervisorError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            SupervisorError::Cancelled(_) => {
                StatusCode::from_u16(499).unwrap_or(StatusCode::CONFLICT)
            }
            SupervisorError::Startup(_) | SupervisorError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let detail = self.client_detail();
        let mut response = HttpResponse::build(status);
        match self {
            SupervisorError::Auth(
                AuthError::BadLogin | AuthError::NotAuthenticated | AuthError::InvalidCredentials,
            )
            | SupervisorError::Unauthorized(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            SupervisorError::Forbidden { required } => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    format!("Bearer scope=\"{required}\""),
                ));
            }
            SupervisorError::Auth(AuthError::Throttled { retry_after_secs })
            | SupervisorError::Limited {
                retry_after: retry_after_secs,
                ..
            } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            SupervisorError::Unavailable {
                retry_after: Some(secs),
                ..
            } => {
                response.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            SupervisorError::Auth(AuthError::Busy) => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        response.json(ErrorBody::new(detail))
    }
}

/// JSON body errors: too large is 413, wrong content type 415, bad JSON 422.
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let mapped = match &err {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => SupervisorError::PayloadTooLarge(
            format!("Request body is larger than the limit of {limit} bytes"),
        ),
        JsonPayloadError::Payload(PayloadError::Overflow) => {
            SupervisorError::PayloadTooLarge("Request body is too large".into())
        }
        JsonPayloadError::ContentType => {
            SupervisorError::UnsupportedMediaType("Content type must be application/json".into())
        }
        JsonPayloadError::Deserialize(e) => {
            SupervisorError::Unprocessable(format!("Invalid JSON body: {e}"))
        }
        other => SupervisorError::BadRequest(format!("Cannot read the request body: {other}")),
    };
    mapped.into()
}

/// Path parameters of the wrong type (`/v1/admin/users/abc`) are 422 naming the problem, as
/// FastAPI answers them.
pub fn path_error(err: actix_web::error::PathError, _req: &HttpRequest) -> actix_web::Error {
    SupervisorError::Unprocessable(format!("Invalid path parameter: {err}")).into()
}

/// Query-string errors (`?detailed=maybe`) are 422, as FastAPI answers them.
pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    SupervisorError::Unprocessable(format!("Invalid query string: {err}")).into()
}

/// Last line of defence: any error response that is not JSON yet (actix's own 404/405/413,
/// extractor errors we did not map) gets a `{"detail": ...}` body; status and headers stay.
pub fn ensure_json_body<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let detail = match status {
        StatusCode::NOT_FOUND => "Not Found".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "Method Not Allowed".to_string(),
        StatusCode::PAYLOAD_TOO_LARGE => "Request body is too large".to_string(),
        other => other.canonical_reason().unwrap_or("Error").to_string(),
    };
    let body = serde_json::to_string(&ErrorBody::new(detail)).unwrap_or_default();
    let (req, mut response) = res.into_parts();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let response = response.set_body(BoxBody::new(body));
    let res = ServiceResponse::new(req, response).map_into_right_body::<B>();
    Ok(ErrorHandlerResponse::Response(res))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(
        e: SupervisorError,
    ) -> (u16, actix_web::http::header::HeaderMap, serde_json::Value) {
        let response = e.error_response();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = actix_web::body::to_bytes(response.into_body())
            .await
            .unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or_default();
        (status, headers, body)
    }

    #[test]
    fn worker_kinds_get_the_status_the_worker_answered_with() {
        for kind in WorkerErrorKind::ALL {
            let e = SupervisorError::from(WorkerError::new(kind, "why"));
            assert_eq!(e.status_code().as_u16(), kind.status(), "{kind:?}");
        }
    }

    #[actix_web::test]
    async fn a_worker_error_keeps_its_message_unless_it_is_internal() {
        for kind in WorkerErrorKind::ALL {
            let (status, headers, body) =
                answer(WorkerError::new(kind, "the replica said why").into()).await;
            let detail = body["detail"].as_str().unwrap_or_default().to_string();
            if kind == WorkerErrorKind::Internal {
                assert_eq!(status, 500);
                assert!(
                    detail.starts_with("Internal server error; see the server log (ref "),
                    "{detail}"
                );
                assert!(!detail.contains("why"), "{detail}");
            } else {
                assert_eq!(detail, "the replica said why", "{kind:?}");
            }
            let retry = headers.get(header::RETRY_AFTER);
            assert_eq!(
                retry.and_then(|v| v.to_str().ok()),
                (kind == WorkerErrorKind::Busy).then_some("1"),
                "{kind:?}"
            );
        }
    }

    #[actix_web::test]
    async fn internal_failures_are_a_generic_500_with_a_fresh_reference() {
        let cause = "a KV cache of another kind at /home/secret/model";
        let failures = [
            SupervisorError::internal(cause),
            SupervisorError::Startup(cause.into()),
            SupervisorError::Auth(AuthError::Internal(cause.into())),
        ];
        let mut references = Vec::new();
        for e in failures {
            let (status, _, body) = answer(e).await;
            assert_eq!(status, 500);
            let detail = body["detail"].as_str().unwrap_or_default().to_string();
            assert!(detail.starts_with(INTERNAL_DETAIL), "{detail}");
            assert!(
                !detail.contains("secret") && !detail.contains("KV"),
                "{detail}"
            );
            references.push(detail);
        }
        references.dedup();
        assert_eq!(references.len(), 3, "{references:?}");
        // What a stream sends once it has started is the same generic detail.
        let streamed = SupervisorError::from(WorkerError::new(WorkerErrorKind::Internal, cause));
        assert!(streamed.client_detail().starts_with(INTERNAL_DETAIL));
        // The text kept for `/v1/models/instances` never carries the cause either.
        assert_eq!(
            SupervisorError::internal(cause).to_string(),
            INTERNAL_DETAIL
        );
    }

    #[test]
    fn an_unknown_uid_is_400_on_management_routes_and_404_on_inference_routes() {
        let cases = [
            (ModelLookup::Management, 400),
            (ModelLookup::Inference, 404),
        ];
        for (lookup, status) in cases {
            let e = SupervisorError::model_not_found("ghost", lookup);
            assert_eq!(e.status_code().as_u16(), status, "{lookup:?}");
            assert_eq!(
                e.client_detail(),
                "Model not found in the model list, uid: ghost"
            );
        }
    }
}
