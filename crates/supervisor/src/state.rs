//! Shared state of a running supervisor, handed to handlers as `web::Data<AppState>`.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use xi_auth::{AuthService, ClusterSecret};

use crate::cluster::WorkerSet;
use crate::config::SupervisorConfig;
use crate::lifecycle::ModelTable;
use crate::login_pool::LoginPool;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::routes::PublicRoutes;

pub struct AppState {
    pub config: SupervisorConfig,
    /// `None` when auth is off.
    pub auth: Option<Arc<AuthService>>,
    pub registry: Registry,
    pub models: ModelTable,
    /// Workers that run models: the in-process worker (local mode) and the workers that
    /// joined.
    pub workers: WorkerSet,
    /// Shared with the workers; every internal call carries it.
    pub cluster_secret: ClusterSecret,
    /// Pooled connections to the workers.
    pub http: reqwest::Client,
    pub metrics: Metrics,
    pub public: PublicRoutes,
    /// Password checks run here, off the request threads and at low priority.
    pub login_pool: LoginPool,
    /// The address we serve on, `host:port`, as reported by `/v1/supervisor` and `/status`.
    pub address: String,
    pub started: Instant,
    /// Wakes the server loop for `DELETE /v1/clusters`.
    pub stop: Arc<Notify>,
    /// Set by `DELETE /v1/clusters`: the workers exit too.
    pub stop_workers: std::sync::atomic::AtomicBool,
}

impl AppState {
    pub fn uptime_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// Seconds since the Unix epoch, as a float (upstream's `update_time`).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
