//! Internal routes of cluster members: workers join, send heartbeats and leave. Guarded by
//! the cluster secret ([`ClusterCall`]), never by user credentials.

use actix_web::{web, HttpResponse};
use serde_json::json;
use xi_api::cluster::{Heartbeat, JoinRequest, LeaveRequest};

use crate::authz::ClusterCall;
use crate::error::SupervisorError;
use crate::state::AppState;

pub async fn join(
    _: ClusterCall,
    state: web::Data<AppState>,
    body: web::Json<JoinRequest>,
) -> Result<HttpResponse, SupervisorError> {
    let answer = state.cluster.join(body.into_inner())?;
    Ok(HttpResponse::Ok().json(answer))
}

pub async fn heartbeat(
    _: ClusterCall,
    state: web::Data<AppState>,
    body: web::Json<Heartbeat>,
) -> Result<HttpResponse, SupervisorError> {
    let beat = body.into_inner();
    // Unknown (the supervisor restarted) or declared dead: 404, and the worker joins again.
    state.cluster.heartbeat(&beat.address, beat.resources)?;
    Ok(HttpResponse::Ok().json(json!({})))
}

pub async fn leave(
    _: ClusterCall,
    state: web::Data<AppState>,
    body: web::Json<LeaveRequest>,
) -> HttpResponse {
    state.cluster.leave(&body.address);
    HttpResponse::Ok().json(json!({}))
}
