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

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    detailed: bool,
}

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

pub async fn get(
    _: Require<ModelsList>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, SupervisorError> {
    let (raw_type, name) = path.into_inner();
    Ok(HttpResponse::Ok().json(family_of(&state, &raw_type, &name)?.body))
}

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
