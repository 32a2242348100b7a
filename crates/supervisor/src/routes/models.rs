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

#[utoipa::path(
    get,
    path = "/v1/models",
    operation_id = "list_models",
    tag = "models",
    summary = "List the running models",
    responses(
        (status = 200, description = "The running models (OpenAI's list shape with upstream's fields)", body = Object),
    )
)]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LaunchQuery {
    #[serde(default = "yes")]
    wait_ready: bool,
}

fn yes() -> bool {
    true
}

#[utoipa::path(
    post,
    path = "/v1/models",
    tag = "models",
    summary = "Launch a model",
    params(LaunchQuery),
    request_body = LaunchModelRequest,
    responses(
        (status = 200, body = ModelUidResponse),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
        (status = 422, description = "A body of the wrong shape", body = xi_api::ErrorBody),
        (status = 503, description = "No worker can take it", body = xi_api::ErrorBody),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/models/{model_uid}",
    tag = "models",
    summary = "Describe a running model",
    params(("model_uid" = String, Path, description = "The model's uid")),
    responses(
        (status = 200, description = "The model's description", body = Object),
        (status = 404, description = "No such model (or not one the caller may use)", body = xi_api::ErrorBody),
        (status = 503, description = "The model is still loading (`Retry-After`)", body = xi_api::ErrorBody),
    )
)]
pub async fn describe(
    require: Require<ModelsList>,
    state: web::Data<AppState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, SupervisorError> {
    let entry = ready(&state, &require.caller, &uid)?;
    Ok(HttpResponse::Ok().json(description(&entry)))
}

#[utoipa::path(
    delete,
    path = "/v1/models/{model_uid}",
    tag = "models",
    summary = "Terminate a model",
    params(("model_uid" = String, Path, description = "The model's uid")),
    responses(
        (status = 200, description = "Terminated (`null`)", body = Option<Object>),
        (status = 404, description = "No such model (or not one the caller may use)", body = xi_api::ErrorBody),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/models/{model_uid}/progress",
    tag = "models",
    summary = "A launch's progress",
    params(("model_uid" = String, Path, description = "The model's uid")),
    responses(
        (status = 200, description = "`{\"progress\": 0..1}` of a launch", body = Object),
        (status = 404, description = "No such model (or not one the caller may use)", body = xi_api::ErrorBody),
    )
)]
pub async fn progress(
    require: Require<ModelsRead>,
    state: web::Data<AppState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, SupervisorError> {
    let entry = visible(&state, &require.caller, &uid)?;
    Ok(HttpResponse::Ok().json(json!({ "progress": state.cluster.progress(&entry).await })))
}

#[utoipa::path(
    post,
    path = "/v1/models/{model_uid}/cancel",
    tag = "models",
    summary = "Cancel a launch in progress",
    params(("model_uid" = String, Path, description = "The model's uid")),
    responses(
        (status = 200, description = "Cancelled (`null`)", body = Option<Object>),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
        (status = 404, description = "No such model (or not one the caller may use)", body = xi_api::ErrorBody),
    )
)]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstancesQuery {
    model_name: Option<String>,
    model_uid: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/models/instances",
    tag = "models",
    summary = "Model instances and their replicas",
    params(InstancesQuery),
    responses(
        (status = 200, description = "Every model instance with its replicas and status", body = Vec<Object>),
    )
)]
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
