//! The model lifecycle: list, launch, describe, terminate, progress, cancel, instances.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use xi_api::models::LaunchModelRequest;

use crate::authz::{ModelsList, ModelsRead, ModelsStart, ModelsStop, Require};
use crate::error::SupervisorError;
use crate::lifecycle::{plan_launch, RunningModel};
use crate::state::AppState;

fn not_found(uid: &str) -> SupervisorError {
    SupervisorError::BadRequest(format!("Model not found in the model list, uid: {uid}"))
}

fn description(model: &RunningModel) -> Value {
    let mut body = model.description.clone();
    body.insert("replica".into(), json!(model.replica));
    Value::Object(body)
}

pub async fn list(_: Require<ModelsList>, state: web::Data<AppState>) -> HttpResponse {
    let data: Vec<Value> = state
        .models
        .all()
        .iter()
        .map(|m| {
            let mut entry =
                json!({ "id": m.uid, "object": "model", "created": 0, "owned_by": "xinference" });
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
    #[allow(dead_code)] // read once an engine can run the plan
    wait_ready: bool,
}

fn yes() -> bool {
    true
}

pub async fn launch(
    require: Require<ModelsStart>,
    state: web::Data<AppState>,
    _query: web::Query<LaunchQuery>,
    body: web::Json<LaunchModelRequest>,
) -> Result<HttpResponse, SupervisorError> {
    let plan = plan_launch(body.into_inner(), &state.registry, &state.models)?;
    tracing::info!(
        user = ?require.caller.username(),
        uid = %plan.uid,
        model = %plan.family.name,
        format = ?plan.spec.get("model_format"),
        quantization = ?plan.spec.get("quantization"),
        replica = plan.replica,
        "launch requested"
    );
    Err(SupervisorError::Unavailable {
        detail: format!(
            "No engine available to run {} models: this build of xinference-rs does not include the candle engine yet",
            plan.model_type
        ),
        retry_after: None,
    })
}

pub async fn describe(
    _: Require<ModelsList>,
    state: web::Data<AppState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, SupervisorError> {
    let model = state.models.get(&uid).ok_or_else(|| not_found(&uid))?;
    Ok(HttpResponse::Ok().json(description(&model)))
}

pub async fn terminate(
    _: Require<ModelsStop>,
    state: web::Data<AppState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, SupervisorError> {
    let _model = state.models.get(&uid).ok_or_else(|| not_found(&uid))?;
    Err(SupervisorError::internal(
        "no engine holds running models in this build",
    ))
}

pub async fn progress(
    _: Require<ModelsRead>,
    state: web::Data<AppState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, SupervisorError> {
    let model = state.models.get(&uid).ok_or_else(|| not_found(&uid))?;
    let progress = match model.status {
        xi_api::models::LaunchStatus::Ready => 1.0,
        _ => 0.0,
    };
    Ok(HttpResponse::Ok().json(json!({ "progress": progress })))
}

pub async fn cancel(
    _: Require<ModelsStop>,
    state: web::Data<AppState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, SupervisorError> {
    let _model = state.models.get(&uid).ok_or_else(|| not_found(&uid))?;
    Err(SupervisorError::internal(
        "no engine holds running models in this build",
    ))
}

#[derive(Deserialize)]
pub struct InstancesQuery {
    model_name: Option<String>,
    model_uid: Option<String>,
}

pub async fn instances(
    _: Require<ModelsList>,
    state: web::Data<AppState>,
    query: web::Query<InstancesQuery>,
) -> HttpResponse {
    let list: Vec<Value> = state
        .models
        .all()
        .into_iter()
        .filter(|m| {
            query
                .model_name
                .as_deref()
                .is_none_or(|n| n == m.model_name)
        })
        .filter(|m| query.model_uid.as_deref().is_none_or(|u| u == m.uid))
        .map(|m| {
            json!({
                "model_name": m.model_name,
                "model_uid": m.uid,
                "model_ability": m.description.get("model_ability").cloned().unwrap_or(json!([])),
                "replica": m.replica,
                "status": m.status,
                "n_worker": 1,
            })
        })
        .collect();
    HttpResponse::Ok().json(list)
}
