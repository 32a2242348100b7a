//! `/v1/model_registrations/{model_type}[/{model_name}]`: list, get, register, unregister.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use xi_api::models::{ModelType, RegisterModelRequest};

use crate::authz::{ModelsList, ModelsRegister, ModelsUnregister, Require};
use crate::error::SupervisorError;
use crate::registry::Family;
use crate::state::AppState;

pub fn parse_type(raw: &str) -> Result<ModelType, SupervisorError> {
    raw.parse().map_err(SupervisorError::BadRequest)
}

/// The family `name` of type `raw_type` (built-in or registered); 400 as upstream when unknown.
pub fn family_of(state: &AppState, raw_type: &str, name: &str) -> Result<Family, SupervisorError> {
    let model_type = parse_type(raw_type)?;
    state
        .cluster
        .registry()
        .get(model_type, name)
        .ok_or_else(|| not_found(name))
}

/// Upstream's answer for a model name it does not know (400).
pub fn not_found(name: &str) -> SupervisorError {
    SupervisorError::BadRequest(format!("Model {name} not found"))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default)]
    detailed: bool,
}

#[utoipa::path(
    get,
    path = "/v1/model_registrations/{model_type}",
    operation_id = "list_registrations",
    tag = "registrations",
    summary = "List the families of a type",
    params(
        ("model_type" = String, Path, description = "`LLM`, `embedding`, `rerank` or `audio`"),
        ListQuery,
    ),
    responses(
        (status = 200, description = "Built-in and registered families of the type", body = Vec<Object>),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
    )
)]
pub async fn list(
    _: Require<ModelsList>,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, SupervisorError> {
    let model_type = parse_type(&path)?;
    let families = state.cluster.registry().list(model_type);
    let body: Vec<Value> = families
        .into_iter()
        .map(|f| match query.detailed {
            true => Value::Object(f.body),
            false => json!({ "model_name": f.name, "is_builtin": f.builtin }),
        })
        .collect();
    Ok(HttpResponse::Ok().json(body))
}

#[utoipa::path(
    get,
    path = "/v1/model_registrations/{model_type}/{model_name}",
    tag = "registrations",
    summary = "A family's definition",
    params(
        ("model_type" = String, Path, description = "`LLM`, `embedding`, `rerank` or `audio`"),
        ("model_name" = String, Path, description = "A family name"),
    ),
    responses(
        (status = 200, description = "The family's definition", body = Object),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
    )
)]
pub async fn get(
    _: Require<ModelsList>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, SupervisorError> {
    let (raw_type, name) = path.into_inner();
    Ok(HttpResponse::Ok().json(family_of(&state, &raw_type, &name)?.body))
}

#[utoipa::path(
    post,
    path = "/v1/model_registrations/{model_type}",
    tag = "registrations",
    summary = "Register a custom model",
    params(
        ("model_type" = String, Path, description = "`LLM`, `embedding`, `rerank` or `audio`"),
    ),
    request_body = RegisterModelRequest,
    responses(
        (status = 200, description = "Registered (`null`)", body = Option<Object>),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
        (status = 422, description = "A body of the wrong shape", body = xi_api::ErrorBody),
    )
)]
pub async fn register(
    require: Require<ModelsRegister>,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<RegisterModelRequest>,
) -> Result<HttpResponse, SupervisorError> {
    let model_type = parse_type(&path)?;
    let request = body.into_inner();
    if let Some(ip) = &request.worker_ip {
        // One registry serves the whole cluster, so there is nothing to pin.
        tracing::info!(worker_ip = %ip, "worker_ip ignored: registrations are cluster-wide");
    }
    let registry_state = state.clone();
    let name = web::block(move || {
        registry_state
            .cluster
            .registry()
            .register(model_type, &request.model, request.persist)
    })
    .await
    .map_err(SupervisorError::internal)??;
    tracing::info!(user = ?require.caller.username(), %model_type, model = %name, "model registered");
    Ok(HttpResponse::Ok().json(Value::Null))
}

#[utoipa::path(
    delete,
    path = "/v1/model_registrations/{model_type}/{model_name}",
    tag = "registrations",
    summary = "Unregister a custom model",
    params(
        ("model_type" = String, Path, description = "`LLM`, `embedding`, `rerank` or `audio`"),
        ("model_name" = String, Path, description = "A family name"),
    ),
    responses(
        (status = 200, description = "Unregistered (`null`)", body = Option<Object>),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
    )
)]
pub async fn unregister(
    require: Require<ModelsUnregister>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, SupervisorError> {
    let (raw_type, name) = path.into_inner();
    let model_type = parse_type(&raw_type)?;
    let registry_state = state.clone();
    let target = name.clone();
    web::block(move || {
        registry_state
            .cluster
            .registry()
            .unregister(model_type, &target)
    })
    .await
    .map_err(SupervisorError::internal)??;
    tracing::info!(user = ?require.caller.username(), %model_type, model = %name, "model unregistered");
    Ok(HttpResponse::Ok().json(Value::Null))
}
