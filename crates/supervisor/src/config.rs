//! Supervisor configuration, built once by the launcher (flags > env) and passed explicitly.

use std::path::PathBuf;

use xi_auth::ThrottlePolicy;

/// Everything the supervisor needs to start. No field is read from the environment below this.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The `--auth-config` file; `None` turns auth off (every route open).
    pub auth_config: Option<PathBuf>,
    /// `$XINFERENCE_HOME`: registrations, model cache, tokens.
    pub home: PathBuf,
    /// Require `admin` for `GET /metrics` (it is public by default, like upstream).
    pub metrics_require_auth: bool,
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// HTTP worker threads; `None` = one per CPU core.
    pub http_workers: Option<usize>,
    /// Failed-login limits.
    pub throttle: ThrottlePolicy,
    /// Password checks that may run at once; the rest wait (or get 503 when many wait).
    pub login_concurrency: usize,
}

impl SupervisorConfig {
    /// Defaults for everything but the home folder.
    pub fn new(home: PathBuf) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            auth_config: None,
            home,
            metrics_require_auth: false,
            max_body_bytes: 16 * 1024 * 1024,
            http_workers: None,
            throttle: ThrottlePolicy::default(),
            // Leave at least one core to the request threads during a login storm.
            login_concurrency: (cores / 2).max(1),
        }
    }
}
