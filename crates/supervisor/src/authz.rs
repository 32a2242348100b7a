//! Deny by default: the middleware authenticates every request that is not on the public list
//! and stores the caller in the request; the [`Require`] extractor in each handler's signature
//! checks the permission that handler needs.

use std::future::{ready, Ready};
use std::marker::PhantomData;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, ResponseError};
use xi_api::Permission;
use xi_auth::{AuthError, Principal};

use crate::error::SupervisorError;
use crate::state::AppState;

/// Who is calling, as decided by the middleware.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Auth is off: every route is open.
    AuthOff,
    /// Shared, so the extractors' copies cost a counter increment, not an allocation.
    User(Arc<Principal>),
}

impl Caller {
    /// The username for logs, if there is one.
    pub fn username(&self) -> Option<&str> {
        match self {
            Caller::AuthOff => None,
            Caller::User(p) => Some(&p.username),
        }
    }
}

/// Authenticates every non-public request. Failures answer 401 here, before any handler runs.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // Borrow the state (no Arc clone: the counter would bounce between worker threads).
    let decision = match req.app_data::<web::Data<AppState>>() {
        None => Err(SupervisorError::internal("application state missing")),
        Some(state) => match &state.auth {
            None => Ok(Some(Caller::AuthOff)),
            Some(_) if state.public.contains(req.method(), req.path()) => Ok(None),
            Some(auth) => {
                let header = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                auth.authenticate(header)
                    .map(|p| Some(Caller::User(Arc::new(p))))
                    .map_err(SupervisorError::Auth)
            }
        },
    };
    match decision {
        Ok(Some(caller)) => {
            req.extensions_mut().insert(caller);
        }
        Ok(None) => {}
        Err(err) => {
            return Ok(req
                .into_response(err.error_response())
                .map_into_right_body())
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
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
                Err(SupervisorError::Forbidden {
                    required: P::PERMISSION,
                })
            }
            Some(caller) => Ok(Require {
                caller,
                _permission: PhantomData,
            }),
        };
        ready(result)
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
