//! Internal routes of cluster members: workers join, send heartbeats and leave. Guarded by
//! the cluster secret ([`ClusterCall`]), never by user credentials.

use actix_web::{web, HttpResponse};
use serde_json::json;
use xi_api::cluster::{Heartbeat, JoinRequest, LeaveRequest};

use crate::authz::ClusterCall;
use crate::cluster::membership;
use crate::error::SupervisorError;
use crate::state::AppState;

pub async fn join(
    _: ClusterCall,
    state: web::Data<AppState>,
    body: web::Json<JoinRequest>,
) -> Result<HttpResponse, SupervisorError> {
    let request = body.into_inner();
    if request.address.trim().is_empty() || !request.address.contains(':') {
        return Err(SupervisorError::BadRequest(format!(
            "worker address must be host:port, got {:?}",
            request.address
        )));
    }
    Ok(HttpResponse::Ok().json(membership::join(&state, request)))
}

pub async fn heartbeat(
    _: ClusterCall,
    state: web::Data<AppState>,
    body: web::Json<Heartbeat>,
) -> Result<HttpResponse, SupervisorError> {
    let beat = body.into_inner();
    if state.workers.heartbeat(&beat.address, beat.resources) {
        Ok(HttpResponse::Ok().json(json!({})))
    } else {
        // Unknown (the supervisor restarted) or declared dead: the worker joins again.
        Err(SupervisorError::NotFound(format!(
            "Worker {} is not in the cluster; join again",
            beat.address
        )))
    }
}

pub async fn leave(
    _: ClusterCall,
    state: web::Data<AppState>,
    body: web::Json<LeaveRequest>,
) -> HttpResponse {
    membership::leave(&state, &body.address);
    HttpResponse::Ok().json(json!({}))
}
