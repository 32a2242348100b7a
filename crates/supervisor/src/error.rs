//! [`SupervisorError`], the crate's one error type, and the one place that turns errors into
//! HTTP responses (status, `{"detail": ...}`, `WWW-Authenticate`, `Retry-After`).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::error::{JsonPayloadError, PayloadError, QueryPayloadError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use thiserror::Error;
use xi_api::{ErrorBody, Permission};
use xi_auth::AuthError;

#[derive(Debug, Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("Not enough permissions")]
    Forbidden { required: Permission },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
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
}

impl ResponseError for SupervisorError {
    fn status_code(&self) -> StatusCode {
        match self {
            SupervisorError::Auth(auth) => match auth {
                AuthError::BadLogin
                | AuthError::NotAuthenticated
                | AuthError::InvalidCredentials => StatusCode::UNAUTHORIZED,
                AuthError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
                AuthError::Disabled => StatusCode::BAD_REQUEST,
                AuthError::Config { .. } | AuthError::ClusterSecret(_) | AuthError::Internal(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
            SupervisorError::Forbidden { .. } => StatusCode::FORBIDDEN,
            SupervisorError::ClusterSecret => StatusCode::UNAUTHORIZED,
            SupervisorError::BadRequest(_) => StatusCode::BAD_REQUEST,
            SupervisorError::NotFound(_) => StatusCode::NOT_FOUND,
            SupervisorError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            SupervisorError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            SupervisorError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            SupervisorError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            SupervisorError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            SupervisorError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
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
        let detail = match self {
            SupervisorError::Auth(
                AuthError::Config { .. } | AuthError::ClusterSecret(_) | AuthError::Internal(_),
            )
            | SupervisorError::Startup(_)
            | SupervisorError::Internal(_) => {
                tracing::error!(error = %self, "internal error while serving a request");
                "Internal server error".to_string()
            }
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(status);
        match self {
            SupervisorError::Auth(
                AuthError::BadLogin | AuthError::NotAuthenticated | AuthError::InvalidCredentials,
            ) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            SupervisorError::Forbidden { required } => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    format!("Bearer scope=\"{required}\""),
                ));
            }
            SupervisorError::Auth(AuthError::Throttled { retry_after_secs }) => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            SupervisorError::Unavailable {
                retry_after: Some(secs),
                ..
            } => {
                response.insert_header((header::RETRY_AFTER, secs.to_string()));
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
