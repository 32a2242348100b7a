//! [`run_node`]: a cluster worker process: the internal HTTP API, membership in the
//! supervisor's cluster, and a clean exit (leave, stop the models) on a signal or on the
//! supervisor's `DELETE /v1/clusters`.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::web;
use tokio::sync::Notify;
use xi_auth::ClusterSecret;

use crate::error::NodeError;
use crate::local::{LocalWorker, WorkerConfig};
use crate::membership::Membership;
use crate::server::{self, NodeState};

pub struct NodeConfig {
    /// The supervisor's base URL (`http://host:9997`).
    pub supervisor: String,
    pub secret: ClusterSecret,
    /// `address` is what the supervisor calls us at (`host:port`).
    pub worker: WorkerConfig,
}

/// Serves on `listener` and stays in the cluster until `shutdown` completes, the supervisor
/// stops the cluster, or the supervisor refuses our secret (an error).
pub async fn run_node(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let worker = Arc::new(LocalWorker::new(config.worker));
    let stop = Arc::new(Notify::new());
    let state = web::Data::new(NodeState {
        worker: worker.clone(),
        secret: config.secret.clone(),
        shutdown: stop.clone(),
    });
    let server = server::serve(state, listener)
        .map_err(|e| NodeError::Startup(format!("cannot serve: {e}")))?;
    let handle = server.handle();
    let serving = tokio::spawn(server);
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .build()
        .map_err(|e| NodeError::Startup(format!("cannot build the HTTP client: {e}")))?;
    let membership = Membership {
        worker: worker.clone(),
        supervisor: config.supervisor,
        secret: config.secret,
        http,
    };
    let result = tokio::select! {
        result = membership.run() => result,
        () = shutdown => {
            tracing::info!("shutdown signal received");
            Ok(())
        }
        () = stop.notified() => Ok(()),
    };
    if result.is_ok() {
        membership.leave().await;
    }
    handle.stop(true).await;
    let _ = serving.await;
    worker.stop_all().await;
    tracing::info!("worker stopped");
    result
}
