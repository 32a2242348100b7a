//! The identity store's routes: sessions (`/v1/auth/refresh`, `/v1/auth/logout`,
//! `/v1/auth/me`), users (`/v1/admin/users`), api keys (`/v1/admin/keys`) and the audit log
//! (`/v1/admin/audit`), in upstream's advanced-auth shapes. Each handler takes the caller from
//! its `Require`/`Authenticated` extractor and hands it to `xi_identity::Identity`, which
//! applies the rules (nobody grants what they do not hold, the last admin stays, ...).

use std::future::{ready, Ready};
use std::marker::PhantomData;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::Deserialize;
use xi_api::auth::TokenResponse;
use xi_api::identity::{
    ChangePasswordRequest, CreateKeyRequest, CreateUserRequest, KeyModelPermissions, MeResponse,
    Ok as Done, RefreshRequest, UpdateKeyRequest, UpdateUserRequest, UserPermissions,
    SOURCE_CONFIG, SOURCE_OIDC,
};
use xi_auth::{Credential, Principal};
use xi_identity::audit::Filter;
use xi_identity::{Identity, Issued};

use crate::authz::{
    Admin, Authenticated, Caller, KeysCreate, Require, RequiredPermission, UsersManage,
};
use crate::error::SupervisorError;
use crate::state::AppState;

/// The identity store, or 404 as if these routes did not exist (auth off, or the store off).
fn identity(state: &AppState) -> Result<Arc<Identity>, SupervisorError> {
    state.identity.clone().ok_or_else(|| {
        SupervisorError::NotFound(
            "The identity store is not enabled (start with --auth-config or --auth)".into(),
        )
    })
}

/// The caller's principal (these routes are never reached with auth off: see [`identity`]).
fn principal(caller: &Caller) -> Result<&Principal, SupervisorError> {
    caller
        .principal()
        .ok_or_else(|| SupervisorError::internal("identity route without a principal"))
}

/// What an admin handler acts with: the identity store, the caller holding permission `P`
/// (checked by [`Require<P>`], so the row's permission is in the handler's signature), and the
/// client's address for the audit log.
pub struct Acting<P: RequiredPermission> {
    identity: Arc<Identity>,
    actor: Arc<Principal>,
    address: String,
    _permission: PhantomData<P>,
}

impl<P: RequiredPermission> Acting<P> {
    fn actor(&self) -> &Principal {
        &self.actor
    }
}

impl<P: RequiredPermission> FromRequest for Acting<P> {
    type Error = SupervisorError;
    type Future = Ready<Result<Self, SupervisorError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let acting = (|| {
            let require = Require::<P>::from_request(req, payload).into_inner()?;
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| SupervisorError::internal("application state missing"))?;
            let Caller::User(actor) = require.caller else {
                return Err(SupervisorError::internal(
                    "identity route without a principal",
                ));
            };
            Ok(Acting {
                identity: identity(state)?,
                actor,
                address: peer(state, req),
                _permission: PhantomData,
            })
        })();
        ready(acting)
    }
}

/// The client's address: the socket's peer, or what a `--trusted-proxy` forwards.
pub(super) fn peer(state: &AppState, req: &HttpRequest) -> String {
    crate::client_address::of(req, &state.config.trusted_proxies)
}

/// The answer to a login or a refresh (never cached by proxies).
pub(super) fn tokens(issued: Issued) -> HttpResponse {
    tokens_of(issued, None)
}

/// [`tokens`] of a single sign-on login, which names its provider.
pub(super) fn tokens_of(issued: Issued, provider: Option<String>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(TokenResponse {
            access_token: issued.access_token,
            token_type: "bearer".into(),
            expires_in: issued.expires_in,
            refresh_token: Some(issued.refresh_token),
            must_change_password: issued.must_change_password,
            provider,
        })
}

fn done() -> HttpResponse {
    HttpResponse::Ok().json(Done::YES)
}

#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "auth",
    summary = "New tokens for a refresh token",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens (the refresh token is single use)", body = TokenResponse),
        (status = 401, description = "A bad or used refresh token", body = xi_api::ErrorBody),
    )
)]
pub async fn refresh(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<RefreshRequest>,
) -> Result<HttpResponse, SupervisorError> {
    let identity = identity(&state)?;
    let issued = identity
        .refresh(&body.refresh_token, &peer(&state, &req))
        .await?;
    Ok(tokens(issued))
}

/// Public: a refresh token alone ends its session (so an expired access token is no obstacle);
/// without one, the session of the bearer token presented.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    operation_id = "logout",
    tag = "auth",
    summary = "End a session",
    request_body(content = Option<RefreshRequest>, description = "The refresh token, or none (then the bearer token's session)"),
    responses((status = 200, body = Done))
)]
pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Option<web::Json<RefreshRequest>>,
) -> Result<HttpResponse, SupervisorError> {
    let identity = identity(&state)?;
    let refresh_token = body
        .map(|b| b.into_inner().refresh_token)
        .unwrap_or_default();
    // Logging out is idempotent: a bearer that no longer authenticates has nothing to end.
    let caller = match refresh_token.is_empty() {
        true => {
            let header = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            identity.authenticate(header).await.ok()
        }
        false => None,
    };
    identity
        .logout(&refresh_token, caller.as_deref(), &peer(&state, &req))
        .await?;
    Ok(done())
}

#[utoipa::path(
    get,
    path = "/v1/auth/me",
    tag = "auth",
    summary = "Who the caller is and what it may do",
    responses((status = 200, body = MeResponse))
)]
pub async fn me(
    who: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, SupervisorError> {
    let store = identity(&state)?;
    let p = principal(&who.caller)?;
    // A store user's source is in its row (`local` or `oidc`); the rest have none there.
    let source = match (p.user_id, &p.credential) {
        (Some(id), _) => store.user(id).await?.source,
        (None, Credential::ProviderToken) => SOURCE_OIDC.into(),
        (None, _) => SOURCE_CONFIG.into(),
    };
    Ok(HttpResponse::Ok().json(MeResponse {
        id: p.user_id,
        username: p.username.clone(),
        source,
        permissions: p
            .permissions
            .names()
            .into_iter()
            .map(String::from)
            .collect(),
        must_change_password: p.must_change_password,
        credential: match p.credential {
            Credential::Token => "token".into(),
            Credential::ApiKey => "api_key".into(),
            Credential::ProviderToken => "provider_token".into(),
        },
    }))
}

#[utoipa::path(
    post,
    path = "/v1/admin/users",
    tag = "users",
    summary = "Create a user",
    request_body = CreateUserRequest,
    responses(
        (status = 201, body = xi_api::identity::CreatedUser),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
        (status = 409, description = "The username is taken", body = xi_api::ErrorBody),
        (status = 422, description = "A body of the wrong shape", body = xi_api::ErrorBody),
    )
)]
pub async fn create_user(
    a: Acting<UsersManage>,
    body: web::Json<CreateUserRequest>,
) -> Result<HttpResponse, SupervisorError> {
    let created = a
        .identity
        .create_user(a.actor(), body.into_inner(), &a.address)
        .await?;
    Ok(HttpResponse::Created().json(created))
}

#[utoipa::path(
    get,
    path = "/v1/admin/users",
    tag = "users",
    summary = "List users",
    responses((status = 200, body = Vec<xi_api::identity::UserInfo>))
)]
pub async fn users(a: Acting<UsersManage>) -> Result<HttpResponse, SupervisorError> {
    Ok(HttpResponse::Ok().json(a.identity.users().await?))
}

#[utoipa::path(
    get,
    path = "/v1/admin/users/{id}",
    tag = "users",
    summary = "Describe a user",
    params(("id" = i64, Path, description = "The row id")),
    responses(
        (status = 200, body = xi_api::identity::UserInfo),
        (status = 404, description = "No such user", body = xi_api::ErrorBody),
    )
)]
pub async fn user(
    a: Acting<UsersManage>,
    id: web::Path<i64>,
) -> Result<HttpResponse, SupervisorError> {
    Ok(HttpResponse::Ok().json(a.identity.user(*id).await?))
}

#[utoipa::path(
    put,
    path = "/v1/admin/users/{id}",
    tag = "users",
    summary = "Update a user",
    params(("id" = i64, Path, description = "The row id")),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, body = xi_api::identity::UserInfo),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
        (status = 404, description = "No such user", body = xi_api::ErrorBody),
        (status = 422, description = "A body of the wrong shape", body = xi_api::ErrorBody),
    )
)]
pub async fn update_user(
    a: Acting<UsersManage>,
    id: web::Path<i64>,
    body: web::Json<UpdateUserRequest>,
) -> Result<HttpResponse, SupervisorError> {
    a.identity
        .update_user(a.actor(), *id, body.into_inner(), &a.address)
        .await?;
    Ok(done())
}

#[utoipa::path(
    delete,
    path = "/v1/admin/users/{id}",
    tag = "users",
    summary = "Delete a user",
    params(("id" = i64, Path, description = "The row id")),
    responses(
        (status = 200, body = Done),
        (status = 404, description = "No such user", body = xi_api::ErrorBody),
        (status = 409, description = "The last administrator", body = xi_api::ErrorBody),
    )
)]
pub async fn delete_user(
    a: Acting<UsersManage>,
    id: web::Path<i64>,
) -> Result<HttpResponse, SupervisorError> {
    a.identity.delete_user(a.actor(), *id, &a.address).await?;
    Ok(done())
}

/// Anyone authenticated: one's own password (with the current one), or with `users:manage`
/// anyone's (the store checks which).
#[utoipa::path(
    put,
    path = "/v1/admin/users/{id}/password",
    tag = "users",
    summary = "Change a password (one's own, or anyone's with users:manage)",
    params(("id" = i64, Path, description = "The row id")),
    request_body = ChangePasswordRequest,
    responses(
        (status = 200, body = Done),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
        (status = 404, description = "No such user", body = xi_api::ErrorBody),
        (status = 409, description = "A single sign-on user has no password", body = xi_api::ErrorBody),
    )
)]
pub async fn change_password(
    req: HttpRequest,
    who: Authenticated,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    body: web::Json<ChangePasswordRequest>,
) -> Result<HttpResponse, SupervisorError> {
    let identity = identity(&state)?;
    let actor = principal(&who.caller)?;
    identity
        .change_password(actor, *id, body.into_inner(), &peer(&state, &req))
        .await?;
    Ok(done())
}

#[utoipa::path(
    get,
    path = "/v1/admin/users/{id}/permissions",
    tag = "users",
    summary = "A user's permissions",
    params(("id" = i64, Path, description = "The row id")),
    responses(
        (status = 200, body = UserPermissions),
        (status = 404, description = "No such user", body = xi_api::ErrorBody),
    )
)]
pub async fn user_permissions(
    a: Acting<UsersManage>,
    id: web::Path<i64>,
) -> Result<HttpResponse, SupervisorError> {
    let permissions = a.identity.user(*id).await?.permissions;
    Ok(HttpResponse::Ok().json(UserPermissions { permissions }))
}

#[utoipa::path(
    put,
    path = "/v1/admin/users/{id}/permissions",
    tag = "users",
    summary = "Set a user's permissions",
    params(("id" = i64, Path, description = "The row id")),
    request_body = UserPermissions,
    responses(
        (status = 200, body = UserPermissions),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
        (status = 404, description = "No such user", body = xi_api::ErrorBody),
    )
)]
pub async fn set_user_permissions(
    a: Acting<UsersManage>,
    id: web::Path<i64>,
    body: web::Json<UserPermissions>,
) -> Result<HttpResponse, SupervisorError> {
    let change = UpdateUserRequest {
        permissions: Some(body.into_inner().permissions),
        ..UpdateUserRequest::default()
    };
    a.identity
        .update_user(a.actor(), *id, change, &a.address)
        .await?;
    Ok(done())
}

#[utoipa::path(
    post,
    path = "/v1/admin/keys",
    tag = "keys",
    summary = "Create an api key",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "The key, shown this once", body = xi_api::identity::CreatedKey),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
        (status = 422, description = "A body of the wrong shape", body = xi_api::ErrorBody),
    )
)]
pub async fn create_key(
    a: Acting<KeysCreate>,
    body: web::Json<CreateKeyRequest>,
) -> Result<HttpResponse, SupervisorError> {
    let created = a
        .identity
        .create_key(a.actor(), body.into_inner(), &a.address)
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(created))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeysQuery {
    owner: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/keys",
    tag = "keys",
    summary = "List api keys (one's own; everyone's with keys:manage)",
    params(KeysQuery),
    responses((status = 200, body = Vec<xi_api::identity::KeyInfo>))
)]
pub async fn keys(
    a: Acting<KeysCreate>,
    query: web::Query<KeysQuery>,
) -> Result<HttpResponse, SupervisorError> {
    Ok(HttpResponse::Ok().json(a.identity.keys(a.actor(), query.owner).await?))
}

#[utoipa::path(
    get,
    path = "/v1/admin/keys/{id}",
    tag = "keys",
    summary = "Describe an api key",
    params(("id" = i64, Path, description = "The row id")),
    responses(
        (status = 200, body = xi_api::identity::KeyInfo),
        (status = 404, description = "No such key (or not the caller's)", body = xi_api::ErrorBody),
    )
)]
pub async fn key(
    a: Acting<KeysCreate>,
    id: web::Path<i64>,
) -> Result<HttpResponse, SupervisorError> {
    Ok(HttpResponse::Ok().json(a.identity.key(a.actor(), *id).await?))
}

#[utoipa::path(
    put,
    path = "/v1/admin/keys/{id}",
    tag = "keys",
    summary = "Update an api key",
    params(("id" = i64, Path, description = "The row id")),
    request_body = UpdateKeyRequest,
    responses(
        (status = 200, body = xi_api::identity::KeyInfo),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
        (status = 404, description = "No such key (or not the caller's)", body = xi_api::ErrorBody),
    )
)]
pub async fn update_key(
    a: Acting<KeysCreate>,
    id: web::Path<i64>,
    body: web::Json<UpdateKeyRequest>,
) -> Result<HttpResponse, SupervisorError> {
    a.identity
        .update_key(a.actor(), *id, body.into_inner(), &a.address)
        .await?;
    Ok(done())
}

#[utoipa::path(
    delete,
    path = "/v1/admin/keys/{id}",
    tag = "keys",
    summary = "Revoke an api key",
    params(("id" = i64, Path, description = "The row id")),
    responses(
        (status = 200, body = Done),
        (status = 404, description = "No such key (or not the caller's)", body = xi_api::ErrorBody),
    )
)]
pub async fn delete_key(
    a: Acting<KeysCreate>,
    id: web::Path<i64>,
) -> Result<HttpResponse, SupervisorError> {
    a.identity.delete_key(a.actor(), *id, &a.address).await?;
    Ok(done())
}

#[utoipa::path(
    get,
    path = "/v1/admin/keys/{id}/permissions",
    tag = "keys",
    summary = "The models an api key may use",
    params(("id" = i64, Path, description = "The row id")),
    responses(
        (status = 200, body = KeyModelPermissions),
        (status = 404, description = "No such key (or not the caller's)", body = xi_api::ErrorBody),
    )
)]
pub async fn key_models(
    a: Acting<KeysCreate>,
    id: web::Path<i64>,
) -> Result<HttpResponse, SupervisorError> {
    let model_permissions = a.identity.key(a.actor(), *id).await?.model_permissions;
    Ok(HttpResponse::Ok().json(KeyModelPermissions { model_permissions }))
}

#[utoipa::path(
    put,
    path = "/v1/admin/keys/{id}/permissions",
    tag = "keys",
    summary = "Set the models an api key may use",
    params(("id" = i64, Path, description = "The row id")),
    request_body = KeyModelPermissions,
    responses(
        (status = 200, body = KeyModelPermissions),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
        (status = 404, description = "No such key (or not the caller's)", body = xi_api::ErrorBody),
    )
)]
pub async fn set_key_models(
    a: Acting<KeysCreate>,
    id: web::Path<i64>,
    body: web::Json<KeyModelPermissions>,
) -> Result<HttpResponse, SupervisorError> {
    let change = UpdateKeyRequest {
        model_permissions: Some(body.into_inner().model_permissions),
        ..UpdateKeyRequest::default()
    };
    a.identity
        .update_key(a.actor(), *id, change, &a.address)
        .await?;
    Ok(done())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    username: Option<String>,
    key_prefix: Option<String>,
    action: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    before_id: Option<i64>,
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    tag = "users",
    summary = "The audit log (newest first)",
    params(AuditQuery),
    responses(
        (status = 200, body = Vec<xi_identity::audit::AuditEvent>),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
    )
)]
pub async fn audit(
    a: Acting<Admin>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, SupervisorError> {
    let q = query.into_inner();
    let filter = Filter {
        username: q.username,
        key_prefix: q.key_prefix,
        action: q.action,
        since: q.since,
        until: q.until,
        before_id: q.before_id,
        limit: q.limit.unwrap_or(100),
    };
    Ok(HttpResponse::Ok().json(a.identity.audit(&filter).await?))
}
