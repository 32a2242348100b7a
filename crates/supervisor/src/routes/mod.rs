//! The route table: every route's method, path, access rule and handler, in one place.
//!
//! The server registers exactly these routes; the middleware's public list is derived from the
//! `Access::Public` rows (and the `PublicOrRequires` rows unless `--metrics-require-auth`); the
//! permission-matrix test walks this table, and `docs/auth.md`'s permission table is generated
//! from it (`tests/it/docs.rs`). A handler enforces its row's permission through `Require<P>`
//! (or `RequireUnlessPublic<P>`, or the identity routes' `Acting<P>`, which wraps `Require<P>`)
//! in its signature, and the test proves the two agree.

mod audio;
pub(crate) mod auth;
mod catalogue;
mod cluster;
pub(crate) mod generation;
mod identity;
pub(crate) mod inference;
mod internal;
mod models;
pub(crate) mod openapi;
mod registrations;
pub(crate) mod sso;
mod ui;

use actix_web::dev::ResourceDef;
use actix_web::http::Method;
use actix_web::{web, HttpResponse, Route};
use xi_api::Permission;

use crate::error::SupervisorError;
use crate::state::PublicRoutes;

/// HTTP methods used by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Put,
    Delete,
}

impl Verb {
    pub fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Put => Method::PUT,
            Verb::Delete => Method::DELETE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Put => "PUT",
            Verb::Delete => "DELETE",
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed (login, health, discovery).
    Public,
    /// A caller holding this permission (or `admin`).
    Requires(Permission),
    /// Any authenticated caller, whatever its permissions (routes about the caller itself;
    /// the handler decides what it may do there).
    Authenticated,
    /// Public by default; this permission when the server is started with the switch
    /// (`--metrics-require-auth`, `--docs-require-auth`).
    PublicOrRequires(Permission, Switch),
    /// Workers of this cluster only: the cluster secret, never a user's credentials.
    Cluster,
}

/// A server flag that turns `PublicOrRequires` rows into protected ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// `--metrics-require-auth`: `GET /metrics`.
    Metrics,
    /// `--docs-require-auth`: `GET /openapi.json` and `GET /docs`.
    Docs,
}

impl Switch {
    /// The flag, as the CLI spells it.
    pub fn flag(self) -> &'static str {
        match self {
            Switch::Metrics => "--metrics-require-auth",
            Switch::Docs => "--docs-require-auth",
        }
    }
}

/// One row of the route table.
#[derive(Clone, Copy)]
pub struct RouteDef {
    pub verb: Verb,
    /// actix path pattern; `{name}` segments are parameters.
    pub path: &'static str,
    pub access: Access,
    handler: fn(Route) -> Route,
}

impl std::fmt::Debug for RouteDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {:?}", self.verb.as_str(), self.path, self.access)
    }
}

const fn row(
    verb: Verb,
    path: &'static str,
    access: Access,
    handler: fn(Route) -> Route,
) -> RouteDef {
    RouteDef {
        verb,
        path,
        access,
        handler,
    }
}

use Access::{Authenticated, Cluster, Public, PublicOrRequires, Requires};
use Permission::*;
use Switch::{Docs, Metrics};
use Verb::{Delete, Get, Post, Put};

/// Every route of the API. Literal paths come before parameterised ones that would match them
/// (`/v1/models/instances` before `/v1/models/{model_uid}`): actix matches in this order.
pub fn route_table() -> Vec<RouteDef> {
    vec![
        // Public: discovery, login, health.
        row(Get, "/status", Public, |r| r.to(cluster::status)),
        row(Get, "/v1/cluster/auth", Public, |r| {
            r.to(auth::cluster_auth)
        }),
        row(Post, "/token", Public, |r| r.to(auth::token)),
        row(Get, "/v1/models/families", Public, |r| {
            r.to(catalogue::families)
        }),
        row(Get, "/v1/models/prompts", Public, |r| {
            r.to(catalogue::prompts)
        }),
        // The web UI's static files: the page logs in itself, then calls the routes below.
        row(Get, "/", Public, |r| r.to(ui::to_ui)),
        row(Get, "/ui", Public, |r| r.to(ui::ui_to_ui)),
        row(Get, "/ui/", Public, |r| r.to(ui::index)),
        row(Get, "/ui/{file}", Public, |r| r.to(ui::asset)),
        row(Get, "/metrics", PublicOrRequires(Admin, Metrics), |r| {
            r.to(cluster::metrics)
        }),
        // The API's OpenAPI document and its docs page (public, as upstream's /docs).
        row(
            Get,
            "/openapi.json",
            PublicOrRequires(ModelsList, Docs),
            |r| r.to(openapi::openapi_json),
        ),
        row(Get, "/docs", PublicOrRequires(ModelsList, Docs), |r| {
            r.to(openapi::docs)
        }),
        // Cluster administration.
        row(Get, "/v1/cluster/info", Requires(Admin), |r| {
            r.to(cluster::info)
        }),
        row(Get, "/v1/cluster/version", Requires(Admin), |r| {
            r.to(cluster::version)
        }),
        row(Get, "/v1/cluster/devices", Requires(ModelsList), |r| {
            r.to(cluster::devices)
        }),
        row(Get, "/v1/workers", Requires(Admin), |r| {
            r.to(cluster::workers)
        }),
        row(Get, "/v1/supervisor", Requires(Admin), |r| {
            r.to(cluster::supervisor)
        }),
        row(Delete, "/v1/clusters", Requires(Admin), |r| {
            r.to(cluster::stop_cluster)
        }),
        // Engines and the model lifecycle.
        row(Get, "/v1/engines/{model_name}", Requires(ModelsList), |r| {
            r.to(catalogue::engines)
        }),
        row(
            Get,
            "/v1/engines/{model_type}/{model_name}",
            Requires(ModelsList),
            |r| r.to(catalogue::engines_by_type),
        ),
        row(Get, "/v1/models/instances", Requires(ModelsList), |r| {
            r.to(models::instances)
        }),
        row(Get, "/v1/models", Requires(ModelsList), |r| {
            r.to(models::list)
        }),
        row(Post, "/v1/models", Requires(ModelsStart), |r| {
            r.to(models::launch)
        }),
        row(Get, "/v1/models/{model_uid}", Requires(ModelsList), |r| {
            r.to(models::describe)
        }),
        row(
            Delete,
            "/v1/models/{model_uid}",
            Requires(ModelsStop),
            |r| r.to(models::terminate),
        ),
        row(
            Get,
            "/v1/models/{model_uid}/progress",
            Requires(ModelsRead),
            |r| r.to(models::progress),
        ),
        row(
            Post,
            "/v1/models/{model_uid}/cancel",
            Requires(ModelsStop),
            |r| r.to(models::cancel),
        ),
        // Registrations.
        row(
            Get,
            "/v1/model_registrations/{model_type}",
            Requires(ModelsList),
            |r| r.to(registrations::list),
        ),
        row(
            Post,
            "/v1/model_registrations/{model_type}",
            Requires(ModelsRegister),
            |r| r.to(registrations::register),
        ),
        row(
            Get,
            "/v1/model_registrations/{model_type}/{model_name}",
            Requires(ModelsList),
            |r| r.to(registrations::get),
        ),
        row(
            Delete,
            "/v1/model_registrations/{model_type}/{model_name}",
            Requires(ModelsUnregister),
            |r| r.to(registrations::unregister),
        ),
        // Inference (OpenAI shapes).
        row(Post, "/v1/chat/completions", Requires(ModelsRead), |r| {
            r.to(generation::chat)
        }),
        row(Post, "/v1/completions", Requires(ModelsRead), |r| {
            r.to(generation::completions)
        }),
        row(Post, "/v1/embeddings", Requires(ModelsRead), |r| {
            r.to(inference::embeddings)
        }),
        row(Post, "/v1/rerank", Requires(ModelsRead), |r| {
            r.to(inference::rerank)
        }),
        row(
            Post,
            "/v1/audio/transcriptions",
            Requires(ModelsRead),
            |r| r.to(audio::transcriptions),
        ),
        row(Post, "/v1/audio/translations", Requires(ModelsRead), |r| {
            r.to(audio::translations)
        }),
        // Sessions of the identity store: a refresh token is its own credential.
        row(Post, "/v1/auth/refresh", Public, |r| {
            r.to(identity::refresh)
        }),
        row(Post, "/v1/auth/logout", Public, |r| r.to(identity::logout)),
        // Single sign-on: the browser's redirects (upstream's paths), the one-time code and
        // device logins; each is its own credential, as a login is.
        row(Get, "/v1/auth/sso/providers", Public, |r| {
            r.to(sso::providers)
        }),
        row(Post, "/v1/auth/sso/exchange", Public, |r| {
            r.to(sso::exchange)
        }),
        row(Post, "/v1/auth/sso/device", Public, |r| r.to(sso::device)),
        row(Post, "/v1/auth/sso/device/token", Public, |r| {
            r.to(sso::device_token)
        }),
        row(Get, "/api/oidc/authorize", Public, |r| r.to(sso::authorize)),
        row(Get, "/api/oidc/callback", Public, |r| r.to(sso::callback)),
        row(Get, "/api/oidc/logout", Public, |r| r.to(sso::logout)),
        row(Get, "/v1/cluster/ui_config", Public, |r| {
            r.to(sso::ui_config)
        }),
        row(Get, "/v1/auth/me", Authenticated, |r| r.to(identity::me)),
        // Users and api keys of the identity store.
        row(Post, "/v1/admin/users", Requires(UsersManage), |r| {
            r.to(identity::create_user)
        }),
        row(Get, "/v1/admin/users", Requires(UsersManage), |r| {
            r.to(identity::users)
        }),
        row(Get, "/v1/admin/users/{id}", Requires(UsersManage), |r| {
            r.to(identity::user)
        }),
        row(Put, "/v1/admin/users/{id}", Requires(UsersManage), |r| {
            r.to(identity::update_user)
        }),
        row(Delete, "/v1/admin/users/{id}", Requires(UsersManage), |r| {
            r.to(identity::delete_user)
        }),
        row(Put, "/v1/admin/users/{id}/password", Authenticated, |r| {
            r.to(identity::change_password)
        }),
        row(
            Get,
            "/v1/admin/users/{id}/permissions",
            Requires(UsersManage),
            |r| r.to(identity::user_permissions),
        ),
        row(
            Put,
            "/v1/admin/users/{id}/permissions",
            Requires(UsersManage),
            |r| r.to(identity::set_user_permissions),
        ),
        row(Post, "/v1/admin/keys", Requires(KeysCreate), |r| {
            r.to(identity::create_key)
        }),
        row(Get, "/v1/admin/keys", Requires(KeysCreate), |r| {
            r.to(identity::keys)
        }),
        row(Get, "/v1/admin/keys/{id}", Requires(KeysCreate), |r| {
            r.to(identity::key)
        }),
        row(Put, "/v1/admin/keys/{id}", Requires(KeysCreate), |r| {
            r.to(identity::update_key)
        }),
        row(Delete, "/v1/admin/keys/{id}", Requires(KeysCreate), |r| {
            r.to(identity::delete_key)
        }),
        row(
            Get,
            "/v1/admin/keys/{id}/permissions",
            Requires(KeysCreate),
            |r| r.to(identity::key_models),
        ),
        row(
            Put,
            "/v1/admin/keys/{id}/permissions",
            Requires(KeysCreate),
            |r| r.to(identity::set_key_models),
        ),
        row(Get, "/v1/admin/audit", Requires(Admin), |r| {
            r.to(identity::audit)
        }),
        // Cluster members (workers joining, heartbeats, leaving).
        row(Post, "/internal/v1/workers/join", Cluster, |r| {
            r.to(internal::join)
        }),
        row(Post, "/internal/v1/workers/heartbeat", Cluster, |r| {
            r.to(internal::heartbeat)
        }),
        row(Post, "/internal/v1/workers/leave", Cluster, |r| {
            r.to(internal::leave)
        }),
    ]
}

/// The public and cluster rows of the table, and the `PublicOrRequires` rows whose switch is
/// off (`protected` says which are on): what the middleware lets through without user
/// credentials (cluster handlers check the cluster secret themselves).
pub fn public_routes(table: &[RouteDef], protected: impl Fn(Switch) -> bool) -> PublicRoutes {
    let routes = table
        .iter()
        .filter(|r| match r.access {
            Access::Public | Access::Cluster => true,
            Access::PublicOrRequires(_, switch) => !protected(switch),
            Access::Requires(_) | Access::Authenticated => false,
        })
        .map(|r| (r.verb.method(), ResourceDef::new(r.path)))
        .collect();
    PublicRoutes::new(routes)
}

/// Registers the table: one actix resource per path, holding that path's methods, answering a
/// JSON 405 for any other method.
pub fn configure(table: &[RouteDef], cfg: &mut web::ServiceConfig) {
    let mut paths: Vec<&'static str> = Vec::new();
    for def in table {
        if !paths.contains(&def.path) {
            paths.push(def.path);
        }
    }
    for path in paths {
        let mut resource = web::resource(path).default_service(web::to(method_not_allowed));
        for def in table.iter().filter(|d| d.path == path) {
            resource = resource.route((def.handler)(web::route().method(def.verb.method())));
        }
        cfg.service(resource);
    }
}

async fn method_not_allowed() -> Result<HttpResponse, SupervisorError> {
    Err(SupervisorError::MethodNotAllowed)
}

/// Any path not in the table.
pub async fn not_found() -> Result<HttpResponse, SupervisorError> {
    Err(SupervisorError::NotFound("Not Found".into()))
}
