//! Single sign-on routes: the browser's authorization-code flow (`/api/oidc/authorize`,
//! `/api/oidc/callback`, `/api/oidc/logout`, upstream's paths), the one-time code exchange,
//! the CLI's device flow, and the provider list for the login page.
//!
//! A finished login never puts tokens in a URL: the callback redirects with a one-time code
//! (60 s, single use; bound to the CLI's PKCE verifier in its loopback flow) that the page or
//! the CLI trades for the session's tokens with a POST.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use xi_api::sso::{
    DeviceLoginRequest, DeviceLoginStarted, DeviceTokenRequest, SsoExchange, SsoProvider,
    SsoProviders, UiConfig,
};
use xi_identity::{FederatedLogin, Issued};
use xi_oidc::flow::{pkce_challenge, random_token};
use xi_oidc::{CliReturn, FederatedUser, OidcError, Sso};

use crate::error::SupervisorError;
use crate::state::AppState;

/// The cookie binding a login's `state` to the browser that started it.
const STATE_COOKIE: &str = "xi_oidc_state";
/// The cookie binding a finished login's one-time code to the browser it came back to, so a
/// code sent to someone else's browser is useless there (login CSRF).
const BINDING_COOKIE: &str = "xi_sso_binding";

/// A finished login waiting for its one-time code: the session's tokens and the provider.
pub struct Handoff {
    issued: Issued,
    provider: String,
}

fn sso(state: &AppState) -> Result<&Sso, SupervisorError> {
    state
        .sso
        .as_deref()
        .ok_or_else(|| SupervisorError::NotFound("Single sign-on is not configured".into()))
}

fn identity(state: &AppState) -> Result<&xi_identity::Identity, SupervisorError> {
    state
        .identity
        .as_deref()
        .ok_or_else(|| SupervisorError::internal("single sign-on without the identity store"))
}

#[utoipa::path(
    get,
    path = "/v1/auth/sso/providers",
    tag = "sso",
    summary = "The single sign-on providers",
    responses((status = 200, body = SsoProviders))
)]
pub async fn providers(state: web::Data<AppState>) -> HttpResponse {
    let providers = state
        .sso
        .iter()
        .flat_map(|sso| sso.providers())
        .map(|p| SsoProvider {
            name: p.name.clone(),
            display_name: p.display_name.clone(),
        })
        .collect();
    HttpResponse::Ok().json(SsoProviders { providers })
}

#[utoipa::path(
    get,
    path = "/v1/cluster/ui_config",
    tag = "sso",
    summary = "What the web UI needs to know (single sign-on)",
    responses((status = 200, body = UiConfig))
)]
pub async fn ui_config(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(UiConfig {
        auth_advanced: state.identity.is_some(),
        oidc_enabled: state.sso.is_some(),
        token_router_enabled: state.auth_on(),
    })
}

/// This server's origin as the browser reached it. Behind a TLS proxy, configure the
/// provider's `redirect_uri` and `post_logout_redirect_uri` instead.
fn origin(req: &HttpRequest) -> String {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuthorizeQuery {
    provider: Option<String>,
    cli_redirect: Option<String>,
    cli_challenge: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/oidc/authorize",
    tag = "sso",
    summary = "Start a single sign-on login in the browser",
    params(AuthorizeQuery),
    responses(
        (status = 302, description = "To the provider's login page (sets the `state` cookie)", headers(("Location" = String))),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
        (status = 404, description = "No such provider", body = xi_api::ErrorBody),
        (status = 503, description = "The provider cannot be reached", body = xi_api::ErrorBody),
    )
)]
pub async fn authorize(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<AuthorizeQuery>,
) -> Result<HttpResponse, SupervisorError> {
    let sso = sso(&state)?;
    let cli = match &query.cli_redirect {
        Some(redirect) => Some(CliReturn::parse(redirect, query.cli_challenge.as_deref())?),
        None => None,
    };
    let redirect_uri = format!("{}/api/oidc/callback", origin(&req));
    let address = super::identity::peer(&state, &req);
    let begun = sso
        .begin(query.provider.as_deref(), &redirect_uri, cli, &address)
        .await?;
    let login_state = begun.state;
    // Secure only where the browser comes back over https: a plain-http server would
    // otherwise never get its own cookie back.
    let secure = secure_suffix(&begun.redirect_uri);
    Ok(HttpResponse::Found()
        .insert_header((header::LOCATION, begun.url))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::SET_COOKIE,
            format!(
                "{STATE_COOKIE}={login_state}; HttpOnly; SameSite=Lax; Path=/api/oidc; \
                 Max-Age=600{secure}"
            ),
        ))
        .finish())
}

fn secure_suffix(redirect_uri: &str) -> &'static str {
    match redirect_uri.starts_with("https:") {
        true => "; Secure",
        false => "",
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    /// RFC 9207: the issuer of the answer, when the provider names it.
    iss: Option<String>,
}

/// The value of cookie `name` that this browser sent, if any.
fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    let cookies = req.headers().get(header::COOKIE)?.to_str().ok()?;
    cookies.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then(|| value.to_string())
    })
}

#[utoipa::path(
    get,
    path = "/api/oidc/callback",
    tag = "sso",
    summary = "The identity provider's answer to a browser login",
    params(CallbackQuery),
    responses(
        (status = 302, description = "To the web UI (or the waiting CLI) with a one-time code", headers(("Location" = String))),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
        (status = 401, description = "The provider refused, or the state does not match", body = xi_api::ErrorBody),
        (status = 502, description = "The provider answered badly", body = xi_api::ErrorBody),
    )
)]
pub async fn callback(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<CallbackQuery>,
) -> Result<HttpResponse, SupervisorError> {
    let sso = sso(&state)?;
    let address = super::identity::peer(&state, &req);
    let login_state = query.state.as_deref().unwrap_or("");
    let browser = cookie(&req, STATE_COOKIE);
    // Only this browser's own login may reach its CLI, be abandoned, or be audited (a
    // stranger's guesses cost a log line at most, not a database write).
    let ours = sso.is_ours(login_state, browser.as_deref());
    let cli = sso.cli_return(login_state, browser.as_deref());
    let finished = match &query.error {
        Some(error) => {
            sso.abandon(login_state, browser.as_deref());
            let error: String = error
                .chars()
                .filter(char::is_ascii_graphic)
                .take(64)
                .collect();
            Err(OidcError::BadRequest(format!(
                "The identity provider refused the login: {error}"
            )))
        }
        None => {
            sso.finish(
                login_state,
                browser.as_deref(),
                query.code.as_deref().unwrap_or(""),
                query.iss.as_deref(),
            )
            .await
        }
    };
    let result = match finished {
        Ok(finished) => hand_over(&state, finished, &address).await,
        Err(e) => Err(failed(&state, &address, e, ours).await),
    };
    match (result, cli) {
        (Ok(response), _) => Ok(response),
        (Err(err), Some(cli)) => Ok(tell_cli(cli, &err)),
        (Err(err), None) => Err(err),
    }
}

/// Opens the session of a finished login and redirects with its one-time code: to the UI, or
/// to the CLI that started it.
async fn hand_over(
    state: &AppState,
    finished: xi_oidc::Finished,
    address: &str,
) -> Result<HttpResponse, SupervisorError> {
    let provider = finished.user.provider.clone();
    let issued = log_in(state, &finished.user, address).await?;
    // The code is bound to a verifier: the CLI's own, or a fresh one kept in this browser.
    let binding = random_token();
    let challenge = match &finished.cli {
        Some(cli) => cli.challenge.clone(),
        None => pkce_challenge(&binding),
    };
    let code = state
        .sso_handoffs
        .put(Handoff { issued, provider }, challenge)?;
    let mut response = HttpResponse::Found();
    response
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .append_header((
            header::SET_COOKIE,
            format!("{STATE_COOKIE}=; HttpOnly; SameSite=Lax; Path=/api/oidc; Max-Age=0"),
        ));
    let location = match finished.cli {
        Some(cli) => {
            let mut url = cli.redirect;
            url.query_pairs_mut().append_pair("code", &code);
            url.to_string()
        }
        None => {
            response.append_header((
                header::SET_COOKIE,
                format!(
                    "{BINDING_COOKIE}={binding}; HttpOnly; SameSite=Lax; \
                     Path=/v1/auth/sso/exchange; Max-Age=60"
                ),
            ));
            format!("/ui/#/sso/{code}")
        }
    };
    Ok(response
        .insert_header((header::LOCATION, location))
        .finish())
}

/// Sends the browser back to the waiting CLI with the error, so it stops at once; the page
/// it shows says what went wrong.
fn tell_cli(cli: CliReturn, err: &SupervisorError) -> HttpResponse {
    let mut url = cli.redirect;
    url.query_pairs_mut()
        .append_pair("error", "login_failed")
        .append_pair("error_description", &err.to_string());
    HttpResponse::Found()
        .insert_header((header::LOCATION, url.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// A refused single sign-on: counted, audited when it was a real login (`audit`; never a
/// token), and the error returned.
async fn failed(state: &AppState, address: &str, e: OidcError, audit: bool) -> SupervisorError {
    state.metrics.logins.with_label_values(&["failure"]).inc();
    tracing::info!(error = %e, %address, "single sign-on refused");
    if let (true, Some(identity)) = (audit, &state.identity) {
        identity
            .record(xi_identity::audit::Event {
                action: "login",
                outcome: "sso_refused",
                address: Some(address),
                detail: Some(e.to_string()),
                ..Default::default()
            })
            .await;
    }
    e.into()
}

/// Opens the session of a user the provider vouched for.
async fn log_in(
    state: &AppState,
    user: &FederatedUser,
    address: &str,
) -> Result<Issued, SupervisorError> {
    let login = FederatedLogin {
        provider: user.provider.clone(),
        issuer: user.issuer.clone(),
        subject: user.subject.clone(),
        username: user.username.clone(),
        permissions: user.permissions,
    };
    let result = identity(state)?.login_federated(&login, address).await;
    let label = if result.is_ok() { "success" } else { "failure" };
    state.metrics.logins.with_label_values(&[label]).inc();
    if result.is_ok() {
        tracing::info!(user = %user.username, provider = %user.provider, %address, "single sign-on succeeded");
    }
    Ok(result?)
}

fn tokens(handoff: Handoff) -> HttpResponse {
    super::identity::tokens_of(handoff.issued, Some(handoff.provider))
}

#[utoipa::path(
    post,
    path = "/v1/auth/sso/exchange",
    tag = "sso",
    summary = "Tokens for the one-time code of a browser login",
    request_body = SsoExchange,
    responses(
        (status = 200, body = xi_api::auth::TokenResponse),
        (status = 401, description = "A bad or used code", body = xi_api::ErrorBody),
        (status = 422, description = "A body of the wrong shape", body = xi_api::ErrorBody),
    )
)]
pub async fn exchange(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<SsoExchange>,
) -> Result<HttpResponse, SupervisorError> {
    sso(&state)?;
    // The CLI sends its verifier; a browser has its binding cookie.
    let verifier = body
        .code_verifier
        .clone()
        .or_else(|| cookie(&req, BINDING_COOKIE));
    let handoff = state
        .sso_handoffs
        .exchange(&body.code, verifier.as_deref())?;
    let mut response = tokens(handoff);
    if let Ok(spent) = header::HeaderValue::from_str(&format!(
        "{BINDING_COOKIE}=; HttpOnly; SameSite=Lax; Path=/v1/auth/sso/exchange; Max-Age=0"
    )) {
        response.headers_mut().append(header::SET_COOKIE, spent);
    }
    Ok(response)
}

#[utoipa::path(
    post,
    path = "/v1/auth/sso/device",
    tag = "sso",
    summary = "Start a device login (RFC 8628) for a CLI",
    request_body = DeviceLoginRequest,
    responses(
        (status = 200, body = DeviceLoginStarted),
        (status = 404, description = "No such provider", body = xi_api::ErrorBody),
        (status = 503, description = "The provider cannot be reached", body = xi_api::ErrorBody),
    )
)]
pub async fn device(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<DeviceLoginRequest>,
) -> Result<HttpResponse, SupervisorError> {
    let address = super::identity::peer(&state, &req);
    let started = sso(&state)?
        .start_device(body.provider.as_deref(), &address)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(DeviceLoginStarted {
            handle: started.handle,
            user_code: started.user_code,
            verification_uri: started.verification_uri,
            verification_uri_complete: started.verification_uri_complete,
            expires_in: started.expires_in,
            interval: started.interval,
        }))
}

#[utoipa::path(
    post,
    path = "/v1/auth/sso/device/token",
    tag = "sso",
    summary = "Poll a device login for its tokens",
    request_body = DeviceTokenRequest,
    responses(
        (status = 200, body = xi_api::auth::TokenResponse),
        (status = 400, description = "RFC 8628's `authorization_pending`, `slow_down`, `expired_token` or `access_denied` as `detail`", body = xi_api::ErrorBody),
    )
)]
pub async fn device_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<DeviceTokenRequest>,
) -> Result<HttpResponse, SupervisorError> {
    let sso = sso(&state)?;
    let address = super::identity::peer(&state, &req);
    let known = sso.has_device(&body.handle);
    let user = match sso.poll_device(&body.handle).await {
        Ok(user) => user,
        Err(e @ OidcError::Pending("authorization_pending" | "slow_down")) => return Err(e.into()),
        Err(e) => return Err(failed(&state, &address, e, known).await),
    };
    let issued = log_in(&state, &user, &address).await?;
    Ok(tokens(Handoff {
        issued,
        provider: user.provider,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogoutQuery {
    provider: Option<String>,
}

/// RP-initiated logout: to the provider's end-session page (our own session is ended by
/// `POST /v1/auth/logout` before), else back to the UI.
#[utoipa::path(
    get,
    path = "/api/oidc/logout",
    operation_id = "sso_logout",
    tag = "sso",
    summary = "Log out at the identity provider",
    params(LogoutQuery),
    responses(
        (status = 302, description = "To the provider's end-session page, else the web UI", headers(("Location" = String))),
    )
)]
pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<LogoutQuery>,
) -> Result<HttpResponse, SupervisorError> {
    let back = format!("{}/ui/", origin(&req));
    let location = sso(&state)?
        .logout_url(query.provider.as_deref(), &back)
        .await?
        .unwrap_or_else(|| "/ui/".to_string());
    Ok(HttpResponse::Found()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}
