//! `POST /token` (JSON or OAuth2 password form) and `GET /v1/cluster/auth`.

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;
use xi_api::auth::{AuthStatus, LoginRequest, TokenResponse};
use xi_auth::AuthError;

use crate::error::SupervisorError;
use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/v1/cluster/auth",
    tag = "auth",
    summary = "Whether authentication is on",
    responses(
        (status = 200, description = "Whether the server requires authentication", body = AuthStatus),
    )
)]
pub async fn cluster_auth(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(AuthStatus {
        auth: state.auth_on(),
    })
}

#[utoipa::path(
    post,
    path = "/token",
    tag = "auth",
    summary = "Log in: a username and password for an access token",
    request_body(content((LoginRequest = "application/json"), (LoginRequest = "application/x-www-form-urlencoded")), description = "JSON, or the OAuth2 password grant form"),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, description = "Authentication is off", body = xi_api::ErrorBody),
        (status = 401, description = "A bad login (the same answer for an unknown user)", body = xi_api::ErrorBody),
        (status = 422, description = "A body of the wrong shape", body = xi_api::ErrorBody),
        (status = 429, description = "Too many failed logins (`Retry-After`)", body = xi_api::ErrorBody),
    )
)]
pub async fn token(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, SupervisorError> {
    if !state.auth_on() {
        return Err(AuthError::Disabled.into());
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let login = parse_login(content_type, &body)?;
    if let Some(identity) = state.identity.clone() {
        let address = super::identity::peer(&state, &req);
        return store_login(&state, &identity, login, &address).await;
    }
    let Some(auth) = state.auth.clone() else {
        return Err(AuthError::Disabled.into());
    };
    // The peer address (X-Forwarded-For only from a --trusted-proxy): a header anyone may
    // write would let an attacker pick its own bucket.
    let address = super::identity::peer(&state, &req);

    if let Some(retry_after_secs) = auth.throttled(&login.username, &address) {
        state.metrics.logins.with_label_values(&["throttled"]).inc();
        tracing::warn!(user = %login.username, %address, "login throttled");
        return Err(AuthError::Throttled { retry_after_secs }.into());
    }
    let username = login.username.clone();
    let result = state
        .login_pool
        .run(move || auth.login(&login.username, &login.password, &address))
        .await?;

    match result {
        Ok(issued) => {
            state.metrics.logins.with_label_values(&["success"]).inc();
            tracing::info!(user = %username, "login succeeded");
            Ok(HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(TokenResponse {
                    access_token: issued.access_token,
                    token_type: "bearer".into(),
                    expires_in: issued.expires_in,
                    refresh_token: None,
                    must_change_password: false,
                    provider: None,
                }))
        }
        Err(err) => {
            let label = match err {
                AuthError::Throttled { .. } => "throttled",
                _ => "failure",
            };
            state.metrics.logins.with_label_values(&[label]).inc();
            tracing::info!(user = %username, "login failed");
            Err(err.into())
        }
    }
}

/// A login through the identity store (config users too): a session with a refresh token.
async fn store_login(
    state: &AppState,
    identity: &xi_identity::Identity,
    login: LoginRequest,
    address: &str,
) -> Result<HttpResponse, SupervisorError> {
    let result = identity
        .login(&login.username, &login.password, address)
        .await;
    let label = match &result {
        Ok(_) => "success",
        Err(xi_identity::IdentityError::Auth(AuthError::Throttled { .. })) => "throttled",
        Err(_) => "failure",
    };
    state.metrics.logins.with_label_values(&[label]).inc();
    // A throttled storm would flood the log: its refusals are counted, and logged at debug.
    match label {
        "throttled" => tracing::debug!(user = %login.username, %address, "login throttled"),
        "success" => tracing::info!(user = %login.username, %address, "login succeeded"),
        _ => tracing::info!(user = %login.username, %address, "login failed"),
    }
    Ok(super::identity::tokens(result?))
}

/// Reads `{"username","password"}` from JSON, or the OAuth2 password grant form.
pub(crate) fn parse_login(
    content_type: &str,
    body: &[u8],
) -> Result<LoginRequest, SupervisorError> {
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let form: HashMap<String, String> = serde_urlencoded::from_bytes(body)
            .map_err(|e| SupervisorError::Unprocessable(format!("Invalid form body: {e}")))?;
        if let Some(grant) = form.get("grant_type").filter(|g| g.as_str() != "password") {
            return Err(SupervisorError::Unprocessable(format!(
                "Unsupported grant_type {grant:?}; only \"password\" is supported"
            )));
        }
        let field = |name: &str| {
            form.get(name)
                .cloned()
                .ok_or_else(|| SupervisorError::Unprocessable(format!("Field required: {name}")))
        };
        return Ok(LoginRequest {
            username: field("username")?,
            password: field("password")?,
        });
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        SupervisorError::Unprocessable(format!(
            "Body must be JSON {{\"username\": ..., \"password\": ...}} or an OAuth2 password form: {e}"
        ))
    })?;
    let field = |name: &str| match value.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(SupervisorError::Unprocessable(format!(
            "Field {name} must be a string"
        ))),
        None => Err(SupervisorError::Unprocessable(format!(
            "Field required: {name}"
        ))),
    };
    Ok(LoginRequest {
        username: field("username")?,
        password: field("password")?,
    })
}
