//! Deny by default: the middleware authenticates every request that is not on the public list
//! and stores the caller in the request; the [`Require`] extractor in each handler's signature
//! checks the permission that handler needs.

use std::future::{ready, Ready};
use std::marker::PhantomData;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, ResponseError};
use xi_api::Permission;
use xi_auth::{AuthError, Principal};

use crate::error::SupervisorError;
use crate::state::AppState;
use crate::usage;

/// Who is calling, as decided by the middleware.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Auth is off: every route is open.
    AuthOff,
    /// Shared, so the extractors' copies cost a counter increment, not an allocation.
    User(Arc<Principal>),
}

impl Caller {
    /// Whether the caller may see and use model `uid` (an api key with a model list sees only
    /// those models; to it the others do not exist).
    pub fn may_use_model(&self, uid: &str, model_type: &str) -> bool {
        match self {
            Caller::AuthOff => true,
            Caller::User(p) => p.may_use_model(uid, model_type),
        }
    }

    /// The principal, when auth is on.
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Caller::AuthOff => None,
            Caller::User(p) => Some(p),
        }
    }

    /// The username for logs, if there is one.
    pub fn username(&self) -> Option<&str> {
        match self {
            Caller::AuthOff => None,
            Caller::User(p) => Some(&p.username),
        }
    }
}

/// Authenticates every non-public request. Failures answer 401 here, before any handler runs.
/// With the identity store, it authenticates (config principals too) and an account that must
/// change its password may only do that (and see itself, and log out): anything else is 403.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let decision = match req.app_data::<web::Data<AppState>>() {
        None => Err(SupervisorError::internal("application state missing")),
        Some(state) if !state.auth_on() => Ok(Some((Caller::AuthOff, None))),
        Some(state) if state.public.contains(req.method(), req.path()) => Ok(None),
        Some(state) => {
            // Visible ASCII, as `HeaderValue::to_str` demands, but checked a word at a time
            // (the parser has already refused control characters).
            let header = req
                .headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes())
                .filter(|b| b.is_ascii())
                .and_then(|b| std::str::from_utf8(b).ok());
            let caller = match (&state.identity, &state.auth) {
                (Some(_), _) if state.sso.is_some() => match provider_token(state, header).await {
                    Some(result) => result.map(|p| (p, None)),
                    None => store_caller(state, header).await,
                },
                (Some(_), _) => store_caller(state, header).await,
                (None, Some(auth)) => auth
                    .authenticate(header)
                    .map(|p| (Arc::new(p), None))
                    .map_err(SupervisorError::Auth),
                (None, None) => Err(SupervisorError::internal("auth on without a source")),
            };
            caller
                .and_then(|(p, admission)| Ok((must_change_gate(&req, p)?, admission)))
                .and_then(|(p, admission)| {
                    // Refused for this principal: audited here, with who it was.
                    let permit = usage::admit(state, &p, admission)
                        .inspect_err(|e| audit_denial(state, req.request(), e, Some(&p)))?;
                    Ok(Some((Caller::User(p), permit)))
                })
        }
    };
    let permit = match decision {
        Ok(Some((caller, permit))) => {
            req.extensions_mut().insert(caller);
            permit
        }
        Ok(None) => None,
        Err(err) => {
            let audited_already = matches!(err, SupervisorError::Limited { .. });
            if let Some(state) = req
                .app_data::<web::Data<AppState>>()
                .filter(|_| !audited_already)
            {
                audit_denial(state, req.request(), &err, None);
            }
            return Ok(req
                .into_response(err.error_response())
                .map_into_right_body());
        }
    };
    let res = next.call(req).await?;
    Ok(match permit {
        // A key's in-flight slot is held until the whole answer (a stream too) is sent.
        Some(permit) => res.map_body(|_, body| {
            EitherBody::left(EitherBody::right(usage::Guarded::new(body, permit)))
        }),
        None => res.map_into_left_body().map_into_left_body(),
    })
}

/// A caller of the identity store (its keys, sessions, and the config file's principals).
async fn store_caller(
    state: &AppState,
    header: Option<&str>,
) -> Result<
    (
        Arc<Principal>,
        Option<Result<xi_identity::limits::Permit, xi_identity::limits::Refusal>>,
    ),
    SupervisorError,
> {
    let Some(identity) = &state.identity else {
        return Err(SupervisorError::internal("no identity store"));
    };
    identity
        .authenticate_request(header)
        .await
        .map(|a| (a.principal, a.admission))
        .map_err(SupervisorError::from)
}

/// An identity provider's own access token (a JWT naming an issuer) when single sign-on
/// accepts them; `None` for every other credential. Refusals answer as any bad credential
/// does (the reason is logged); an unreachable provider is 503.
async fn provider_token(
    state: &AppState,
    header: Option<&str>,
) -> Option<Result<Arc<Principal>, SupervisorError>> {
    let sso = state.sso.as_ref()?;
    let token = xi_auth::service::bearer_token(header)?;
    let user = match sso.bearer(token).await? {
        Ok(user) => user,
        Err(e @ (xi_oidc::OidcError::Unavailable(_) | xi_oidc::OidcError::Busy(_))) => {
            return Some(Err(e.into()))
        }
        Err(e) => {
            tracing::info!(reason = %e, "provider access token refused");
            return Some(Err(AuthError::InvalidCredentials.into()));
        }
    };
    // An admin who disabled the user here keeps them out on every path.
    if let Some(identity) = &state.identity {
        match identity
            .federated_disabled(&user.issuer, &user.subject)
            .await
        {
            Ok(false) => {}
            Ok(true) => {
                return Some(Err(SupervisorError::Denied(
                    "User account is disabled".into(),
                )))
            }
            Err(e) => return Some(Err(e.into())),
        }
    }
    Some(Ok(Arc::new(Principal {
        // Store usernames cannot hold ':', so this never names one of them.
        username: format!("{}:{}", user.provider, user.username),
        permissions: user.permissions,
        credential: xi_auth::Credential::ProviderToken,
        user_id: None,
        session: None,
        must_change_password: false,
        key: None,
    })))
}

/// Records a refused request in the identity store's audit log (when there is one).
pub fn audit_denial(
    state: &AppState,
    req: &HttpRequest,
    err: &SupervisorError,
    caller: Option<&Principal>,
) {
    let Some(identity) = &state.identity else {
        return;
    };
    let outcome = match err {
        SupervisorError::Auth(AuthError::NotAuthenticated) => "not_authenticated",
        SupervisorError::Auth(_) | SupervisorError::Unauthorized(_) => "invalid_credentials",
        SupervisorError::Forbidden { .. } => "forbidden",
        SupervisorError::Denied(_) => "refused",
        SupervisorError::Limited { .. } => "limited",
        _ => return,
    };
    identity.note_denied(xi_identity::Denial {
        outcome,
        username: caller.map(|p| p.username.clone()),
        key_prefix: caller
            .and_then(|p| p.key.as_ref().map(|k| k.prefix.clone()))
            .or_else(|| presented_key_prefix(req)),
        target: format!("{} {}", req.method(), req.path()),
        address: crate::client_address::of(req, &state.config.trusted_proxies),
        detail: Some(err.to_string()),
    });
}

/// The display prefix (the 7 characters listings show) of an api key presented as bearer, so a
/// refused key can be told apart in the audit log; never more of it.
fn presented_key_prefix(req: &HttpRequest) -> Option<String> {
    let header = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = xi_auth::service::bearer_token(Some(header))?;
    let is_key = xi_identity::keys::looks_like_key(token) || xi_auth::service::is_api_key(token);
    is_key.then(|| token[..7].to_string())
}

/// Lets an account that must change its password through only to change it (its own), see
/// itself, or log out.
#[inline]
fn must_change_gate(
    req: &ServiceRequest,
    p: Arc<Principal>,
) -> Result<Arc<Principal>, SupervisorError> {
    if !p.must_change_password {
        return Ok(p);
    }
    let own_password = p
        .user_id
        .is_some_and(|id| req.path() == format!("/v1/admin/users/{id}/password"));
    let allowed = match *req.method() {
        Method::PUT => own_password,
        Method::GET => req.path() == "/v1/auth/me",
        Method::POST => req.path() == "/v1/auth/logout",
        _ => false,
    };
    match allowed {
        true => Ok(p),
        false => Err(SupervisorError::Denied(
            xi_identity::MUST_CHANGE_PASSWORD.into(),
        )),
    }
}

/// A permission a handler can require, as a type (so it sits in the handler's signature).
pub trait RequiredPermission {
    const PERMISSION: Permission;
}

macro_rules! permission_markers {
    ($($name:ident => $perm:ident),* $(,)?) => {
        $(
            #[doc = concat!("Marker for `", stringify!($perm), "`.")]
            pub struct $name;
            impl RequiredPermission for $name {
                const PERMISSION: Permission = Permission::$perm;
            }
        )*
    };
}

permission_markers! {
    ModelsList => ModelsList,
    ModelsRead => ModelsRead,
    ModelsRegister => ModelsRegister,
    ModelsUnregister => ModelsUnregister,
    ModelsStart => ModelsStart,
    ModelsStop => ModelsStop,
    UsersManage => UsersManage,
    KeysCreate => KeysCreate,
    Admin => Admin,
}

/// Extractor: the request's caller holds permission `P` (or auth is off). Otherwise 403, or
/// 401 when the middleware let the request through unauthenticated (a public route whose
/// handler wrongly asks for a permission: still denied).
pub struct Require<P: RequiredPermission> {
    pub caller: Caller,
    _permission: PhantomData<P>,
}

impl<P: RequiredPermission> FromRequest for Require<P> {
    type Error = SupervisorError;
    type Future = Ready<Result<Self, SupervisorError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let caller = req.extensions().get::<Caller>().cloned();
        let result = match caller {
            None => Err(SupervisorError::Auth(AuthError::NotAuthenticated)),
            Some(Caller::User(p)) if !p.permissions.allows(P::PERMISSION) => {
                tracing::info!(user = %p.username, required = %P::PERMISSION, path = %req.path(), "permission denied");
                let err = SupervisorError::Forbidden {
                    required: P::PERMISSION,
                };
                if let Some(state) = req.app_data::<web::Data<AppState>>() {
                    audit_denial(state, req, &err, Some(&p));
                }
                Err(err)
            }
            Some(caller) => Ok(Require {
                caller,
                _permission: PhantomData,
            }),
        };
        ready(result)
    }
}

/// Extractor: any authenticated caller, whatever its permissions (routes about the caller
/// itself: `/v1/auth/me`, changing one's own password). 401 when the request was let through
/// unauthenticated.
pub struct Authenticated {
    pub caller: Caller,
}

impl FromRequest for Authenticated {
    type Error = SupervisorError;
    type Future = Ready<Result<Self, SupervisorError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let caller = req.extensions().get::<Caller>().cloned();
        ready(
            caller
                .map(|caller| Authenticated { caller })
                .ok_or(SupervisorError::Auth(AuthError::NotAuthenticated)),
        )
    }
}

/// Extractor for a `PublicOrRequires(P)` row of the route table: passes when the middleware
/// let the request through as public (the row is public in this server's config); otherwise
/// the caller must hold `P`, exactly as [`Require`]. It never opens a route the middleware
/// authenticated.
pub struct RequireUnlessPublic<P: RequiredPermission> {
    _permission: PhantomData<P>,
}

impl<P: RequiredPermission> FromRequest for RequireUnlessPublic<P> {
    type Error = SupervisorError;
    type Future = Ready<Result<Self, SupervisorError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if req.extensions().get::<Caller>().is_none() {
            return ready(Ok(RequireUnlessPublic {
                _permission: PhantomData,
            }));
        }
        let result = Require::<P>::from_request(req, payload)
            .into_inner()
            .map(|_| RequireUnlessPublic {
                _permission: PhantomData,
            });
        ready(result)
    }
}

/// Extractor: the request carries the cluster secret (internal routes of workers). User
/// credentials never count, whatever their permissions.
pub struct ClusterCall;

impl FromRequest for ClusterCall {
    type Error = SupervisorError;
    type Future = Ready<Result<Self, SupervisorError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let presented = req
            .headers()
            .get(xi_api::cluster::CLUSTER_SECRET_HEADER)
            .and_then(|v| v.to_str().ok());
        let result = match (req.app_data::<web::Data<AppState>>(), presented) {
            (None, _) => Err(SupervisorError::internal("application state missing")),
            (Some(state), Some(secret)) if state.cluster.secret().matches(secret) => {
                Ok(ClusterCall)
            }
            (Some(_), presented) => {
                let peer = req
                    .peer_addr()
                    .map_or_else(|| "?".to_string(), |a| a.to_string());
                tracing::warn!(
                    %peer,
                    path = %req.path(),
                    secret = if presented.is_some() { "wrong" } else { "missing" },
                    "refused a cluster call: wrong or missing cluster secret"
                );
                Err(SupervisorError::ClusterSecret)
            }
        };
        ready(result)
    }
}
