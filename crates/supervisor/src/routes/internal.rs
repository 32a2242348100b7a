//! Internal routes of cluster members: workers join, send heartbeats and leave. Guarded by
//! the cluster secret ([`ClusterCall`]), never by user credentials.

use actix_web::{web, HttpResponse};
use serde_json::json;
use xi_api::cluster::{Heartbeat, JoinRequest, LeaveRequest};

use crate::authz::ClusterCall;
use crate::error::SupervisorError;
use crate::state::AppState;

#[utoipa::path(
    post,
    path = "/internal/v1/workers/join",
    tag = "internal",
    summary = "A worker joins the cluster",
    request_body = JoinRequest,
    responses(
        (status = 200, body = xi_api::cluster::JoinResponse),
        (status = 400, description = "A bad value, named in `detail`", body = xi_api::ErrorBody),
    )
)]
pub async fn join(
    _: ClusterCall,
    state: web::Data<AppState>,
    body: web::Json<JoinRequest>,
) -> Result<HttpResponse, SupervisorError> {
    let answer = state.cluster.join(body.into_inner())?;
    Ok(HttpResponse::Ok().json(answer))
}

#[utoipa::path(
    post,
    path = "/internal/v1/workers/heartbeat",
    tag = "internal",
    summary = "A worker's heartbeat",
    request_body = Heartbeat,
    responses(
        (status = 200, description = "Taken (`null`)", body = Option<Object>),
        (status = 404, description = "Not a member: join again", body = xi_api::ErrorBody),
    )
)]
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

#[utoipa::path(
    post,
    path = "/internal/v1/workers/leave",
    tag = "internal",
    summary = "A worker leaves the cluster",
    request_body = LeaveRequest,
    responses((status = 200, description = "Gone (`null`)", body = Option<Object>))
)]
pub async fn leave(
    _: ClusterCall,
    state: web::Data<AppState>,
    body: web::Json<LeaveRequest>,
) -> HttpResponse {
    state.cluster.leave(&body.address);
    HttpResponse::Ok().json(json!({}))
}
