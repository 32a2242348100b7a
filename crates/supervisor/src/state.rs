//! Shared state of the HTTP layer, handed to handlers as `web::Data<AppState>`: the
//! [`Cluster`] handle the routes call, and what only HTTP needs (auth, the public routes,
//! metrics, the login pool, the server's address and stop signal).

use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::ResourceDef;
use actix_web::http::Method;
use actix_web::web;
use tokio::sync::Notify;
use xi_auth::{AuthService, HashPool};
use xi_identity::Identity;

use crate::config::SupervisorConfig;
use crate::domain::Cluster;
use crate::metrics::Metrics;

pub struct AppState {
    pub config: SupervisorConfig,
    /// The models, the workers and the registry: every route about them calls this.
    pub cluster: Arc<Cluster>,
    /// The config file's principals; `None` without `--auth-config`.
    pub auth: Option<Arc<AuthService>>,
    /// The identity store (users, keys, sessions); `None` when auth is off or the store is
    /// switched off. When present it authenticates every request (config principals too).
    pub identity: Option<Arc<Identity>>,
    /// Also registered on its own, for the request-log middleware.
    pub metrics: web::Data<Metrics>,
    pub public: PublicRoutes,
    /// Password checks run here, off the request threads and at low priority.
    pub login_pool: Arc<HashPool>,
    /// The address we serve on, `host:port`, as reported by `/v1/supervisor` and `/status`.
    pub address: String,
    pub started: Instant,
    /// Wakes the server loop for `DELETE /v1/clusters`.
    pub stop: Arc<Notify>,
    /// Set by `DELETE /v1/clusters`: the workers exit too.
    pub stop_workers: std::sync::atomic::AtomicBool,
}

impl AppState {
    /// Whether requests must authenticate.
    pub fn auth_on(&self) -> bool {
        self.auth.is_some() || self.identity.is_some()
    }

    pub fn uptime_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// The `(method, path pattern)` pairs the middleware lets through without user credentials
/// (built from the route table by `routes::public_routes`).
pub struct PublicRoutes(Vec<(Method, String, ResourceDef)>);

impl PublicRoutes {
    pub fn new(routes: Vec<(Method, ResourceDef)>) -> Self {
        let routes = routes
            .into_iter()
            .map(|(method, def)| {
                let literal = def.pattern().unwrap_or_default();
                let prefix = literal.split('{').next().unwrap_or_default().to_string();
                (method, prefix, def)
            })
            .collect();
        PublicRoutes(routes)
    }

    /// Whether a request is public, matching patterns as the router does (`/ui/{file}` matches
    /// `/ui/app.js` but not `/ui/a/b`), so the two cannot disagree. Every request asks, so a
    /// pattern's literal start is compared before its matcher runs.
    pub fn contains(&self, method: &Method, path: &str) -> bool {
        self.0.iter().any(|(m, prefix, def)| {
            m == method && path.starts_with(prefix.as_str()) && def.is_match(path)
        })
    }
}
