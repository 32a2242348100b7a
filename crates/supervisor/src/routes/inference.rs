//! OpenAI-shaped inference routes. Each resolves `model` (a uid) first: unknown uids are 404.

use actix_web::{web, HttpResponse};
use serde_json::Value;

use crate::authz::{ModelsRead, Require};
use crate::error::SupervisorError;
use crate::state::AppState;

/// The running model a request names, or the error the client should see.
fn resolve(state: &AppState, body: &Value) -> Result<(), SupervisorError> {
    let uid = body.get("model").and_then(Value::as_str).ok_or_else(|| {
        SupervisorError::Unprocessable("Field required: model (the model uid)".into())
    })?;
    let _model = state.models.get(uid).ok_or_else(|| {
        SupervisorError::NotFound(format!("Model not found in the model list, uid: {uid}"))
    })?;
    Err(SupervisorError::Unavailable {
        detail: format!("Model {uid} is not ready"),
        retry_after: Some(5),
    })
}

pub async fn chat(
    _: Require<ModelsRead>,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, SupervisorError> {
    resolve(&state, &body).map(|()| HttpResponse::Ok().finish())
}

pub async fn completions(
    _: Require<ModelsRead>,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, SupervisorError> {
    resolve(&state, &body).map(|()| HttpResponse::Ok().finish())
}

pub async fn embeddings(
    _: Require<ModelsRead>,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, SupervisorError> {
    resolve(&state, &body).map(|()| HttpResponse::Ok().finish())
}

pub async fn rerank(
    _: Require<ModelsRead>,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, SupervisorError> {
    resolve(&state, &body).map(|()| HttpResponse::Ok().finish())
}
