//! The model lifecycle: list, launch, describe, terminate, progress, cancel, instances.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use xi_api::models::{LaunchModelRequest, LaunchStatus, ModelUidResponse};

use crate::authz::{Caller, ModelsList, ModelsRead, ModelsStart, ModelsStop, Require};
use crate::error::{ModelLookup, SupervisorError};
use crate::lifecycle::ModelEntry;
use crate::state::AppState;

fn not_found(uid: &str) -> SupervisorError {
    SupervisorError::model_not_found(uid, ModelLookup::Management)
}

/// Model `uid`, if the caller may see it (an api key with a model list sees only those).
fn visible(
    state: &AppState,
    caller: &Caller,
    uid: &str,
) -> Result<std::sync::Arc<ModelEntry>, SupervisorError> {
    state
        .cluster
        .model(uid)
        .filter(|e| caller.may_use_model(&e.uid, e.model_type.as_str()))
        .ok_or_else(|| not_found(uid))
}

/// A model that is ready, for the routes that describe running models.
fn ready(
    state: &AppState,
    caller: &Caller,
    uid: &str,
) -> Result<std::sync::Arc<ModelEntry>, SupervisorError> {
    Some(visible(state, caller, uid)?)
        .filter(|e| e.status() == LaunchStatus::Ready)
        .ok_or_else(|| not_found(uid))
}

fn description(entry: &ModelEntry) -> Value {
    let mut body = entry.snapshot().description;
    body.insert("replica".into(), json!(entry.replica_count()));
    Value::Object(body)
}

pub async fn list(require: Require<ModelsList>, state: web::Data<AppState>) -> HttpResponse {
    let data: Vec<Value> = state
        .cluster
        .models()
        .ready()
        .iter()
        .filter(|m| require.caller.may_use_model(&m.uid, m.model_type.as_str()))
        .map(|m| {
            let mut entry = json!({ "id": m.uid, "object": "model", "created": m.created_ts, "owned_by": "xinference" });
            if let (Some(entry), Value::Object(desc)) = (entry.as_object_mut(), description(m)) {
                entry.extend(desc);
            }
            entry
        })
        .collect();
    HttpResponse::Ok().json(json!({ "object": "list", "data": data }))
}

#[derive(Deserialize)]
pub struct LaunchQuery {
    #[serde(default = "yes")]
    wait_ready: bool,
}

fn yes() -> bool {
    true
}

pub async fn launch(
    require: Require<ModelsStart>,
    state: web::Data<AppState>,
    query: web::Query<LaunchQuery>,
    body: web::Json<LaunchModelRequest>,
) -> Result<HttpResponse, SupervisorError> {
    let plan = state.cluster.plan(body.into_inner())?;
    tracing::info!(
        user = ?require.caller.username(),
        uid = %plan.uid,
        model = %plan.family.name,
        format = ?plan.spec.get("model_format"),
        quantization = ?plan.spec.get("quantization"),
        replica = plan.replica,
        "launch requested"
    );
    let uid = state.cluster.launch(plan, query.wait_ready).await?;
    Ok(HttpResponse::Ok().json(ModelUidResponse { model_uid: uid }))
}

pub async fn describe(
    require: Require<ModelsList>,
    state: web::Data<AppState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, SupervisorError> {
    let entry = ready(&state, &require.caller, &uid)?;
    Ok(HttpResponse::Ok().json(description(&entry)))
}

pub async fn terminate(
    require: Require<ModelsStop>,
    state: web::Data<AppState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, SupervisorError> {
    let entry = visible(&state, &require.caller, &uid)?;
    tracing::info!(user = ?require.caller.username(), uid = %entry.uid, "terminate requested");
    state.cluster.terminate(&entry).await;
    Ok(HttpResponse::Ok().json(Value::Null))
}

pub async fn progress(
    require: Require<ModelsRead>,
    state: web::Data<AppState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, SupervisorError> {
    let entry = visible(&state, &require.caller, &uid)?;
    Ok(HttpResponse::Ok().json(json!({ "progress": state.cluster.progress(&entry).await })))
}

pub async fn cancel(
    require: Require<ModelsStop>,
    state: web::Data<AppState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, SupervisorError> {
    let entry = visible(&state, &require.caller, &uid)?;
    state.cluster.cancel(&entry).await?;
    tracing::info!(user = ?require.caller.username(), uid = %entry.uid, "launch cancelled");
    Ok(HttpResponse::Ok().json(Value::Null))
}

#[derive(Deserialize)]
pub struct InstancesQuery {
    model_name: Option<String>,
    model_uid: Option<String>,
}

pub async fn instances(
    require: Require<ModelsList>,
    state: web::Data<AppState>,
    query: web::Query<InstancesQuery>,
) -> HttpResponse {
    let list: Vec<Value> = state
        .cluster
        .models()
        .all()
        .into_iter()
        .filter(|m| require.caller.may_use_model(&m.uid, m.model_type.as_str()))
        .filter(|m| query.model_name.as_deref().is_none_or(|n| n == m.model_name))
        .filter(|m| query.model_uid.as_deref().is_none_or(|u| u == m.uid))
        .map(|m| {
            let snapshot = m.snapshot();
            let replicas: Vec<Value> = m
                .replicas()
                .iter()
                .enumerate()
                .map(|(i, (replica_uid, worker))| {
                    json!({
                        "replica_id": i,
                        "replica_model_uid": replica_uid,
                        "worker_address": worker.address(),
                        "status": snapshot.status,
                        "created_ts": m.created_ts,
                        "error_message": snapshot.error,
                    })
                })
                .collect();
            json!({
                "model_name": m.model_name,
                "model_uid": m.uid,
                "model_version": m.model_name,
                "model_ability": snapshot.description.get("model_ability").cloned().unwrap_or(json!([])),
                "replica": m.replica_count(),
                "status": snapshot.status,
                "instance_created_ts": m.created_ts,
                "n_worker": 1,
                "error_message": snapshot.error,
                "replica_statuses": replicas,
            })
        })
        .collect();
    HttpResponse::Ok().json(list)
}
