//! The worker's HTTP API for its supervisor (`/internal/v1/...`). Every call must carry the
//! cluster secret; without it the answer is 401 and nothing else, so nobody bypasses the
//! supervisor's auth by calling a worker directly.
//!
//! Errors are [`WorkerError`] bodies (`{"kind", "message"}`) so the supervisor maps them
//! exactly as for the in-process worker. Generations stream as newline-delimited JSON
//! [`GenerateEvent`]s; a closed connection drops the stream, which stops the generation.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, Next};
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpResponse, HttpServer};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::Notify;
use xi_api::audio::TranscribeRequest;
use xi_api::cluster::CLUSTER_SECRET_HEADER;
use xi_api::worker::{
    EmbedRequest, GenerateRequest, ReplicaSpec, RerankRequest, Worker, WorkerError, WorkerErrorKind,
};
use xi_auth::ClusterSecret;

use crate::local::LocalWorker;

use xi_http as body_limits;

/// Largest internal request body (the supervisor has checked the client's already).
const MAX_BODY: usize = 64 * 1024 * 1024;

pub struct NodeState {
    pub worker: Arc<LocalWorker>,
    pub secret: ClusterSecret,
    /// Notified by `POST /internal/v1/shutdown` (`DELETE /v1/clusters` on the supervisor).
    pub shutdown: Arc<Notify>,
}

/// The status of a kind, from the one table ([`WorkerErrorKind::status`]).
fn status_of(kind: WorkerErrorKind) -> StatusCode {
    StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The supervisor reads the body back into the same [`WorkerError`]; internal messages go to
/// it whole (it logs them and answers its client a generic 500).
fn failure(e: WorkerError) -> HttpResponse {
    if e.kind == WorkerErrorKind::Internal {
        tracing::error!(error = %e.message, "internal error answered to the supervisor");
    }
    HttpResponse::build(status_of(e.kind)).json(e)
}

fn reply<T: serde::Serialize>(result: Result<T, WorkerError>) -> HttpResponse {
    match result {
        Ok(value) => HttpResponse::Ok().json(value),
        Err(e) => failure(e),
    }
}

/// Refuses every request without the cluster secret, before routing.
async fn require_secret(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let presented = req
        .headers()
        .get(CLUSTER_SECRET_HEADER)
        .and_then(|v| v.to_str().ok());
    let ok = match (req.app_data::<web::Data<NodeState>>(), presented) {
        (Some(state), Some(secret)) => state.secret.matches(secret),
        _ => false,
    };
    if !ok {
        let peer = req
            .peer_addr()
            .map_or_else(|| "?".to_string(), |a| a.to_string());
        tracing::warn!(%peer, path = %req.path(), "refused a call without the right cluster secret");
        let response = HttpResponse::Unauthorized()
            .json(json!({ "detail": "Missing or wrong cluster secret" }));
        return Ok(req.into_response(response).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

async fn launch(state: web::Data<NodeState>, spec: web::Json<ReplicaSpec>) -> HttpResponse {
    reply(state.worker.launch(spec.into_inner()).await)
}

async fn running(state: web::Data<NodeState>) -> HttpResponse {
    HttpResponse::Ok().json(state.worker.running())
}

async fn terminate(state: web::Data<NodeState>, uid: web::Path<String>) -> HttpResponse {
    reply(
        state
            .worker
            .terminate(uid.into_inner())
            .await
            .map(|()| json!({})),
    )
}

async fn progress(state: web::Data<NodeState>, uid: web::Path<String>) -> HttpResponse {
    let uid = uid.into_inner();
    match state.worker.progress(uid.clone()).await {
        Some(p) => HttpResponse::Ok().json(p),
        None => failure(WorkerError::new(
            WorkerErrorKind::NotFound,
            format!("Model not found in the model list, uid: {uid}"),
        )),
    }
}

async fn embed(
    state: web::Data<NodeState>,
    uid: web::Path<String>,
    request: web::Json<EmbedRequest>,
) -> HttpResponse {
    reply(
        state
            .worker
            .embed(uid.into_inner(), request.into_inner())
            .await,
    )
}

async fn rerank(
    state: web::Data<NodeState>,
    uid: web::Path<String>,
    request: web::Json<RerankRequest>,
) -> HttpResponse {
    reply(
        state
            .worker
            .rerank(uid.into_inner(), request.into_inner())
            .await,
    )
}

async fn generate(
    state: web::Data<NodeState>,
    uid: web::Path<String>,
    request: web::Json<GenerateRequest>,
) -> HttpResponse {
    match state
        .worker
        .generate(uid.into_inner(), request.into_inner())
        .await
    {
        Err(e) => failure(e),
        Ok(events) => ndjson(events),
    }
}

async fn transcribe(
    state: web::Data<NodeState>,
    uid: web::Path<String>,
    request: web::Json<TranscribeRequest>,
) -> HttpResponse {
    match state
        .worker
        .transcribe(uid.into_inner(), request.into_inner())
        .await
    {
        Err(e) => failure(e),
        Ok(events) => ndjson(events),
    }
}

async fn shutdown(state: web::Data<NodeState>) -> HttpResponse {
    tracing::warn!("the supervisor asked this worker to exit (cluster stop)");
    state.shutdown.notify_one();
    HttpResponse::Ok().json(json!({}))
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({ "detail": "Not Found" }))
}

fn bad_body(
    err: actix_web::error::JsonPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    let e = WorkerError::new(
        WorkerErrorKind::InvalidInput,
        format!("invalid request body: {err}"),
    );
    actix_web::error::InternalError::from_response(err, failure(e)).into()
}

/// Serves the internal API on `listener` until the returned server is stopped.
pub fn serve(
    state: web::Data<NodeState>,
    listener: std::net::TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            // The supervisor streams bodies at network speed; these defaults only cut a
            // stalled or hostile caller.
            .app_data(body_limits::BodyLimits::default())
            .app_data(
                web::JsonConfig::default()
                    .limit(MAX_BODY)
                    .error_handler(bad_body),
            )
            .service(
                web::scope("/internal/v1")
                    .route("/replicas", web::post().to(launch))
                    .route("/replicas", web::get().to(running))
                    .route("/replicas/{uid}", web::delete().to(terminate))
                    .route("/replicas/{uid}/progress", web::get().to(progress))
                    .route("/replicas/{uid}/embed", web::post().to(embed))
                    .route("/replicas/{uid}/rerank", web::post().to(rerank))
                    .route("/replicas/{uid}/generate", web::post().to(generate))
                    .route("/replicas/{uid}/transcribe", web::post().to(transcribe))
                    .route("/shutdown", web::post().to(shutdown)),
            )
            .default_service(web::to(not_found))
            .wrap(from_fn(require_secret))
            // Outermost, so a refused call's unread body closes the connection too.
            .wrap(from_fn(body_limits::deadline))
    })
    .disable_signals()
    .shutdown_timeout(5)
    .client_request_timeout(body_limits::REQUEST_HEAD_TIMEOUT)
    .keep_alive(Duration::from_secs_f64(
        body_limits::DEFAULT_KEEP_ALIVE_SECS,
    ))
    .workers(threads)
    // actix counts per worker thread.
    .max_connections(body_limits::DEFAULT_MAX_CONNECTIONS.div_ceil(threads))
    .listen(listener)?
    .run();
    Ok(server)
}

/// A stream of events as NDJSON, one JSON object per line.
fn ndjson<T: serde::Serialize + 'static>(
    events: impl futures_util::Stream<Item = T> + 'static,
) -> HttpResponse {
    let lines = events.map(|event| {
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, actix_web::Error>(Bytes::from(line))
    });
    HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_real_status_from_the_table() {
        for kind in WorkerErrorKind::ALL {
            let status = status_of(kind);
            assert_eq!(status.as_u16(), kind.status(), "{kind:?}");
            assert_eq!(
                status.is_server_error(),
                !matches!(
                    kind,
                    WorkerErrorKind::InvalidModel
                        | WorkerErrorKind::InvalidInput
                        | WorkerErrorKind::TooLarge
                        | WorkerErrorKind::NotFound
                        | WorkerErrorKind::Cancelled
                ),
                "{kind:?}"
            );
        }
        assert_eq!(status_of(WorkerErrorKind::Cancelled).as_u16(), 499);
    }

    #[test]
    fn an_answer_without_a_worker_error_body_is_internal_unless_the_secret_was_refused() {
        assert_eq!(
            WorkerErrorKind::from_status(401),
            WorkerErrorKind::Unreachable
        );
        for status in [400, 404, 408, 413, 500, 502] {
            assert_eq!(
                WorkerErrorKind::from_status(status),
                WorkerErrorKind::Internal
            );
        }
    }
}
