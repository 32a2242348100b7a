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
    /// Single sign-on; `None` when no provider is configured.
    pub sso: Option<Arc<xi_oidc::Sso>>,
    /// Finished single sign-on logins waiting for their one-time code to be exchanged.
    pub sso_handoffs: xi_oidc::Handoffs<crate::routes::sso::Handoff>,
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
/// (built from the route table by `routes::public_routes`). Every request asks, so paths
/// without parameters are one hash lookup, and only the few patterns are matched.
pub struct PublicRoutes {
    /// Paths without parameters and their public methods (the table's paths, not the caller's:
    /// a fast hasher is safe here).
    exact: foldhash::HashMap<String, Vec<Method>>,
    /// Bit `n` set: some exact path is `n` bytes long (bit 127: 127 or more), so most
    /// requests are told apart without hashing their path.
    exact_lengths: u128,
    /// Patterns (`/ui/{file}`) with their literal start, compared before the matcher runs.
    patterns: Vec<(Method, String, ResourceDef)>,
}

impl PublicRoutes {
    pub fn new(routes: Vec<(Method, ResourceDef)>) -> Self {
        let mut exact: foldhash::HashMap<String, Vec<Method>> = Default::default();
        let mut patterns = Vec::new();
        let mut exact_lengths = 0;
        for (method, def) in routes {
            let literal = def.pattern().unwrap_or_default().to_string();
            match literal.split_once('{') {
                None => {
                    exact_lengths |= length_bit(literal.len());
                    exact.entry(literal).or_default().push(method);
                }
                Some((prefix, _)) => patterns.push((method, prefix.to_string(), def)),
            }
        }
        PublicRoutes {
            exact,
            exact_lengths,
            patterns,
        }
    }

    /// Whether a request is public, matching patterns as the router does (`/ui/{file}` matches
    /// `/ui/app.js` but not `/ui/a/b`; `/ui` is not `/ui/`), so the two cannot disagree.
    pub fn contains(&self, method: &Method, path: &str) -> bool {
        if self.exact_lengths & length_bit(path.len()) != 0
            && self.exact.get(path).is_some_and(|m| m.contains(method))
        {
            return true;
        }
        self.patterns.iter().any(|(m, prefix, def)| {
            m == method && path.starts_with(prefix.as_str()) && def.is_match(path)
        })
    }
}

/// The bit of `PublicRoutes::exact_lengths` for a path of `len` bytes.
fn length_bit(len: usize) -> u128 {
    1 << len.min(127)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> PublicRoutes {
        PublicRoutes::new(vec![
            (Method::GET, ResourceDef::new("/")),
            (Method::GET, ResourceDef::new("/ui")),
            (Method::GET, ResourceDef::new("/ui/{file}")),
            (Method::POST, ResourceDef::new("/token")),
            (Method::POST, ResourceDef::new("/v1/auth/refresh")),
            (
                Method::GET,
                ResourceDef::new(format!("/{}", "x".repeat(200))),
            ),
        ])
    }

    #[test]
    fn public_routes_match_as_the_router_does() {
        let public = routes();
        for (method, path) in [
            (Method::GET, "/"),
            (Method::GET, "/ui"),
            (Method::GET, "/ui/app.js"),
            (Method::POST, "/token"),
            (Method::POST, "/v1/auth/refresh"),
        ] {
            assert!(public.contains(&method, path), "{method} {path}");
        }
        let long = format!("/{}", "x".repeat(200));
        assert!(public.contains(&Method::GET, &long));
        for (method, path) in [
            (Method::GET, "/token"),
            (Method::POST, "/ui"),
            (Method::GET, "/ui/a/b"),
            (Method::GET, "/v1/models"),
            (Method::GET, "/tokens"),
            (Method::POST, "/v1/auth/refresh/"),
            (Method::GET, "//"),
        ] {
            assert!(!public.contains(&method, path), "{method} {path}");
        }
        let longer = format!("/{}", "x".repeat(201));
        assert!(
            !public.contains(&Method::GET, &longer),
            "the same length bit, not the path"
        );
    }
}
