//! Cluster routes: status, info, version, devices, workers, supervisor, stop, metrics.
//!
//! In local mode the one worker lives in this process, at the supervisor's own address; in a
//! cluster, the workers are those that joined (see `cluster`).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::authz::{Admin, ModelsList, Require, RequireUnlessPublic};
use crate::cluster::MemberView;
use crate::state::AppState;

/// Upstream's `cpu` block (and `gpu-<i>` blocks) of a worker's status.
fn status_blocks(view: &MemberView) -> Value {
    let r = &view.resources;
    let mut blocks = json!({
        "cpu": {
            "usage": r.cpu_usage,
            "total": r.cpu_count,
            "memory_used": r.memory_used,
            "memory_available": r.memory_available,
            "memory_total": r.memory_total,
        }
    });
    if let Some(map) = blocks.as_object_mut() {
        for gpu in &r.gpus {
            let free = gpu.memory_total.saturating_sub(gpu.memory_used);
            map.insert(
                format!("gpu-{}", gpu.index),
                json!({
                    "name": gpu.name,
                    "mem_total": gpu.memory_total,
                    "mem_free": free,
                    "mem_used": gpu.memory_used,
                    "mem_usage": gpu.memory_used as f64 / gpu.memory_total.max(1) as f64,
                }),
            );
        }
    }
    blocks
}

/// Supervisor uptime and every worker's last heartbeat. Beyond upstream: dead workers stay
/// listed (`alive: false`) until they join again.
#[utoipa::path(
    get,
    path = "/status",
    tag = "cluster",
    summary = "Supervisor uptime and the workers' heartbeats",
    responses(
        (status = 200, description = "Uptime and each worker's last heartbeat", body = Object),
    )
)]
pub async fn status(state: web::Data<AppState>) -> HttpResponse {
    let mut workers = serde_json::Map::new();
    let views = state.cluster.workers().views();
    state
        .metrics
        .live_workers
        .set(views.iter().filter(|v| v.alive).count() as i64);
    for view in views {
        workers.insert(
            view.address.clone(),
            json!({
                "update_time": view.last_seen_unix,
                "failure_remaining_count": view.failure_remaining,
                "alive": view.alive,
                "status": status_blocks(&view),
            }),
        );
    }
    HttpResponse::Ok().json(json!({
        "uptime": state.uptime_secs(),
        "workers": workers,
    }))
}

fn host_of(address: &str) -> &str {
    address.rsplit_once(':').map_or(address, |(h, _)| h)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InfoQuery {
    #[serde(default)]
    detailed: bool,
}

#[utoipa::path(
    get,
    path = "/v1/cluster/info",
    tag = "cluster",
    summary = "The cluster's nodes",
    params(InfoQuery),
    responses(
        (status = 200, description = "The supervisor and each worker", body = Vec<Object>),
    )
)]
pub async fn info(
    _: Require<Admin>,
    state: web::Data<AppState>,
    query: web::Query<InfoQuery>,
) -> HttpResponse {
    let mut nodes =
        vec![json!({ "node_type": "Supervisor", "ip_address": host_of(&state.address) })];
    for view in state.cluster.workers().views() {
        let r = &view.resources;
        let mut worker = json!({
            "node_type": "Worker",
            "ip_address": host_of(&view.address),
            "address": view.address,
            "alive": view.alive,
            "last_heartbeat": view.last_seen_unix,
            "gpu_count": r.gpus.len(),
            "gpu_vram_total": r.gpus.iter().map(|g| g.memory_total).sum::<u64>(),
        });
        if query.detailed {
            if let Some(map) = worker.as_object_mut() {
                map.insert("cpu_count".into(), json!(r.cpu_count));
                map.insert("cpu_utilization".into(), json!(r.cpu_usage));
                map.insert("mem_total".into(), json!(r.memory_total));
                map.insert("mem_available".into(), json!(r.memory_available));
                map.insert("mem_used".into(), json!(r.memory_used));
                map.insert("gpus".into(), json!(r.gpus));
            }
        }
        nodes.push(worker);
    }
    HttpResponse::Ok().json(nodes)
}

#[utoipa::path(
    get,
    path = "/v1/cluster/version",
    tag = "cluster",
    summary = "The server's version",
    responses((status = 200, description = "The server's version", body = Object))
)]
pub async fn version(_: Require<Admin>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "full-revisionid": Value::Null,
        "dirty": false,
        "error": Value::Null,
        "date": Value::Null,
    }))
}

/// Number of GPUs over the live workers.
#[utoipa::path(
    get,
    path = "/v1/cluster/devices",
    tag = "cluster",
    summary = "The number of GPUs in the cluster",
    responses(
        (status = 200, description = "The number of GPUs of the live workers", body = u64),
    )
)]
pub async fn devices(_: Require<ModelsList>, state: web::Data<AppState>) -> HttpResponse {
    let count: usize = state
        .cluster
        .workers()
        .views()
        .iter()
        .filter(|v| v.alive)
        .map(|v| v.resources.gpus.len())
        .sum();
    HttpResponse::Ok().json(count)
}

/// Each worker with the replicas it serves. Beyond upstream: `alive` and `last_heartbeat`.
#[utoipa::path(
    get,
    path = "/v1/workers",
    tag = "cluster",
    summary = "The workers and what they serve",
    responses(
        (status = 200, description = "Each worker with the replicas it serves", body = Vec<Object>),
    )
)]
pub async fn workers(_: Require<Admin>, state: web::Data<AppState>) -> HttpResponse {
    let list: Vec<Value> = state
        .cluster
        .workers()
        .views()
        .into_iter()
        .map(|view| {
            json!({
                "work-ip": view.address,
                "alive": view.alive,
                "last_heartbeat": view.last_seen_unix,
                "models": state.cluster.models().replica_descriptions(&view.address),
            })
        })
        .collect();
    HttpResponse::Ok().json(list)
}

#[utoipa::path(
    get,
    path = "/v1/supervisor",
    tag = "cluster",
    summary = "The supervisor's address",
    responses(
        (status = 200, description = "The supervisor's address", body = Object),
    )
)]
pub async fn supervisor(_: Require<Admin>, state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "supervisor_ip": state.address }))
}

/// Answers first, then stops the server (gracefully, so this response is delivered).
#[utoipa::path(
    delete,
    path = "/v1/clusters",
    tag = "cluster",
    summary = "Stop the server",
    responses(
        (status = 200, description = "`{\"result\": true}`; the server stops after answering", body = Object),
    )
)]
pub async fn stop_cluster(require: Require<Admin>, state: web::Data<AppState>) -> HttpResponse {
    tracing::warn!(user = ?require.caller.username(), "cluster stop requested");
    state
        .stop_workers
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let stop = state.stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.notify_one();
    });
    HttpResponse::Ok().json(json!({ "result": true }))
}

/// Prometheus text. Public, or `admin` with `--metrics-require-auth` (the route table's
/// `PublicOrRequires` row; the middleware and the extractor enforce it).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "cluster",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain; version=0.0.4"),
    )
)]
pub async fn metrics(_: RequireUnlessPublic<Admin>, state: web::Data<AppState>) -> HttpResponse {
    state
        .metrics
        .running_models
        .set(state.cluster.models().all().len() as i64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
