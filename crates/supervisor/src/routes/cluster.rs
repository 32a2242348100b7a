//! Cluster routes: status, info, version, devices, workers, supervisor, stop, metrics.
//!
//! In local mode the one worker lives in this process, at the supervisor's own address.

use std::time::Duration;

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use xi_api::Permission;
use xi_auth::AuthError;

use crate::authz::{Admin, Caller, ModelsList, Require};
use crate::error::SupervisorError;
use crate::state::{unix_now, AppState};

/// Heartbeat misses tolerated before a worker is dead (upstream's field; constant in local mode).
const FAILURE_BUDGET: u32 = 5;

pub async fn status(state: web::Data<AppState>) -> HttpResponse {
    let worker = json!({
        "update_time": unix_now(),
        "failure_remaining_count": FAILURE_BUDGET,
        "status": { "cpu": state.system.cpu_status() },
    });
    HttpResponse::Ok().json(json!({
        "uptime": state.uptime_secs(),
        "workers": { state.address.clone(): worker },
    }))
}

#[derive(Deserialize)]
pub struct InfoQuery {
    #[serde(default)]
    detailed: bool,
}

pub async fn info(
    _: Require<Admin>,
    state: web::Data<AppState>,
    query: web::Query<InfoQuery>,
) -> HttpResponse {
    let host = state
        .address
        .rsplit_once(':')
        .map_or(state.address.as_str(), |(h, _)| h);
    let mut worker = json!({
        "node_type": "Worker",
        "ip_address": host,
        "gpu_count": 0,
        "gpu_vram_total": 0,
    });
    if query.detailed {
        let cpu = state.system.cpu_status();
        if let (Some(worker), Some(cpu)) = (worker.as_object_mut(), cpu.as_object()) {
            worker.insert("cpu_count".into(), cpu["total"].clone());
            worker.insert("cpu_utilization".into(), cpu["usage"].clone());
            worker.insert("mem_total".into(), cpu["memory_total"].clone());
            worker.insert("mem_available".into(), cpu["memory_available"].clone());
            worker.insert("mem_used".into(), cpu["memory_used"].clone());
        }
    }
    HttpResponse::Ok().json(json!([
        { "node_type": "Supervisor", "ip_address": host },
        worker,
    ]))
}

pub async fn version(_: Require<Admin>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "full-revisionid": Value::Null,
        "dirty": false,
        "error": Value::Null,
        "date": Value::Null,
    }))
}

/// Number of GPUs (the CPU build has none).
pub async fn devices(_: Require<ModelsList>) -> HttpResponse {
    HttpResponse::Ok().json(0)
}

pub async fn workers(_: Require<Admin>, state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!([{
        "work-ip": state.address,
        "models": state.models.replica_descriptions(),
    }]))
}

pub async fn supervisor(_: Require<Admin>, state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "supervisor_ip": state.address }))
}

/// Answers first, then stops the server (gracefully, so this response is delivered).
pub async fn stop_cluster(require: Require<Admin>, state: web::Data<AppState>) -> HttpResponse {
    tracing::warn!(user = ?require.caller.username(), "cluster stop requested");
    let stop = state.stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.notify_one();
    });
    HttpResponse::Ok().json(json!({ "result": true }))
}

pub async fn metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, SupervisorError> {
    if state.config.metrics_require_auth {
        let caller = req.extensions().get::<Caller>().cloned();
        match caller {
            Some(Caller::AuthOff) => {}
            Some(Caller::User(p)) if p.permissions.allows(Permission::Admin) => {}
            Some(Caller::User(_)) => {
                return Err(SupervisorError::Forbidden {
                    required: Permission::Admin,
                })
            }
            None => return Err(AuthError::NotAuthenticated.into()),
        }
    }
    state
        .metrics
        .running_models
        .set(state.models.all().len() as i64);
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render()))
}
