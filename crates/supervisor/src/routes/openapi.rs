//! The OpenAPI 3.1 document of the REST API (`GET /openapi.json`) and its docs page
//! (`GET /docs`).
//!
//! Operations come from the handlers' `#[utoipa::path]` attributes and their schemas from the
//! types the handlers parse and answer (`xi-api`'s wire types, the request bodies of the
//! routes). Who may call each operation is *not* written there: [`document`] fills in every
//! operation's security, its `x-permission` and its 401/403 answers from the route table, the
//! same rows the middleware enforces. A test (`tests/it/openapi.rs`) fails when a route of the
//! table is missing from the document or the document has one the table does not.

use std::sync::LazyLock;

use actix_web::{web, HttpResponse};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, PathItem, RefOr, Response, ResponseBuilder};
use utoipa::OpenApi;
use xi_api::cluster::CLUSTER_SECRET_HEADER;
use xi_api::ErrorBody;

use crate::authz::{ModelsList, RequireUnlessPublic};

use super::{audio, auth, catalogue, cluster, generation, identity, inference, internal};
use super::{models, registrations, sso, ui, Access, RouteDef, Verb};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "xinference-rs",
        description = "The REST API of xinference-rs: Xinference's API (models, registrations, \
            cluster), OpenAI's inference routes and the identity store. With authentication on, \
            every route but the public ones takes `Authorization: Bearer <token or api key>`; \
            each operation names the permission it needs in `x-permission` (`admin` holds all)."
    ),
    paths(
        auth::cluster_auth, auth::token,
        identity::refresh, identity::logout, identity::me,
        sso::providers, sso::ui_config, sso::authorize, sso::callback, sso::exchange,
        sso::device, sso::device_token, sso::logout,
        catalogue::families, catalogue::prompts, catalogue::engines, catalogue::engines_by_type,
        models::instances, models::list, models::launch, models::describe, models::terminate,
        models::progress, models::cancel,
        registrations::list, registrations::register, registrations::get,
        registrations::unregister,
        generation::chat, generation::completions, inference::embeddings, inference::rerank,
        audio::transcriptions, audio::translations,
        identity::create_user, identity::users, identity::user, identity::update_user,
        identity::delete_user, identity::change_password, identity::user_permissions,
        identity::set_user_permissions, identity::create_key, identity::keys, identity::key,
        identity::update_key, identity::delete_key, identity::key_models,
        identity::set_key_models, identity::audit,
        cluster::status, cluster::info, cluster::version, cluster::devices, cluster::workers,
        cluster::supervisor, cluster::stop_cluster, cluster::metrics,
        internal::join, internal::heartbeat, internal::leave,
        ui::to_ui, ui::ui_to_ui, ui::index, ui::asset,
        openapi_json, docs,
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "auth", description = "Logins, tokens and sessions"),
        (name = "sso", description = "Single sign-on with OpenID Connect"),
        (name = "models", description = "The catalogue and the model lifecycle"),
        (name = "registrations", description = "Custom model definitions"),
        (name = "inference", description = "OpenAI-compatible inference"),
        (name = "users", description = "Users of the identity store, and its audit log"),
        (name = "keys", description = "API keys of the identity store"),
        (name = "cluster", description = "The cluster, its workers and its metrics"),
        (name = "internal", description = "Workers of this cluster only (the cluster secret)"),
        (name = "ui", description = "The web UI"),
        (name = "docs", description = "This document"),
    )
)]
struct ApiDoc;

/// Security scheme names.
const BEARER: &str = "bearer";
const API_KEY: &str = "api_key";
const CLUSTER: &str = "cluster_secret";

/// The document, with each operation's security taken from `table`.
pub fn document(table: &[RouteDef]) -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let components = doc.components.get_or_insert_with(Default::default);
    let bearer = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .bearer_format("JWT")
        .description(Some(
            "An access token from `POST /token` (or a provider's, with SSO)",
        ))
        .build();
    let key = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .bearer_format("API key")
        .description(Some(
            "An api key (`sk-...` from the config file, `xf-...` from the store)",
        ))
        .build();
    components.add_security_scheme(BEARER, SecurityScheme::Http(bearer));
    components.add_security_scheme(API_KEY, SecurityScheme::Http(key));
    let cluster = ApiKeyValue::with_description(CLUSTER_SECRET_HEADER, "The cluster's secret");
    components.add_security_scheme(CLUSTER, SecurityScheme::ApiKey(ApiKey::Header(cluster)));
    for row in table {
        if let Some(item) = doc.paths.paths.get_mut(row.path) {
            if let Some(op) = operation(item, row.verb) {
                secure(op, row.access);
            }
        }
    }
    doc
}

/// The operation of `verb` in a path item.
fn operation(item: &mut PathItem, verb: Verb) -> Option<&mut Operation> {
    match verb {
        Verb::Get => item.get.as_mut(),
        Verb::Post => item.post.as_mut(),
        Verb::Put => item.put.as_mut(),
        Verb::Delete => item.delete.as_mut(),
    }
}

fn requirement(name: &str) -> SecurityRequirement {
    SecurityRequirement::new(name, Vec::<String>::new())
}

fn error_response(description: &str) -> RefOr<Response> {
    let content = utoipa::openapi::ContentBuilder::new()
        .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .build()
        .into()
}

/// One operation's security, permission and auth answers, as its row of the table says.
fn secure(op: &mut Operation, access: Access) {
    let user = vec![requirement(BEARER), requirement(API_KEY)];
    let (security, permission) = match access {
        Access::Public => (vec![SecurityRequirement::default()], None),
        Access::Authenticated => (user, Some("authenticated")),
        Access::Requires(p) => (user, Some(p.as_str())),
        Access::PublicOrRequires(p, _) => {
            let mut optional = vec![SecurityRequirement::default()];
            optional.extend(user);
            (optional, Some(p.as_str()))
        }
        Access::Cluster => (vec![requirement(CLUSTER)], Some("cluster")),
    };
    op.security = Some(security);
    let responses = &mut op.responses.responses;
    if !matches!(access, Access::Public) {
        responses
            .entry("401".into())
            .or_insert_with(|| error_response("Not authenticated (with authentication on)"));
    }
    if matches!(access, Access::Requires(_) | Access::PublicOrRequires(..)) {
        responses
            .entry("403".into())
            .or_insert_with(|| error_response("The caller lacks the permission"));
    }
    if let Some(permission) = permission {
        let extensions = op.extensions.get_or_insert_with(Default::default);
        extensions.insert("x-permission".into(), serde_json::json!(permission));
    }
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "docs",
    summary = "This API's OpenAPI 3.1 document",
    responses((status = 200, description = "This document", body = Object))
)]
pub async fn openapi_json(
    _: RequireUnlessPublic<ModelsList>,
    doc: web::Data<OpenApiJson>,
) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.0.clone())
}

/// A page that renders the document.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    summary = "This API's docs page",
    responses(
        (status = 200, description = "The API's docs page", body = String, content_type = "text/html"),
    )
)]
pub async fn docs(_: RequireUnlessPublic<ModelsList>) -> HttpResponse {
    let (page, csp) = &*DOCS_PAGE;
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", csp.as_str()))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(page.clone())
}

/// The document serialised once at startup.
pub struct OpenApiJson(pub String);

/// The page with its script inlined, and a Content-Security-Policy that runs that script
/// alone (by its hash) and lets the page fetch only this server.
static DOCS_PAGE: LazyLock<(String, String)> = LazyLock::new(|| {
    let script = include_str!("docs.js");
    let page = include_str!("docs.html").replace("{script}", script);
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script));
    let csp = format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    (page, csp)
});
