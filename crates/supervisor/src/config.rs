//! Supervisor configuration, built once by the launcher (flags > env) and passed explicitly.

use std::path::PathBuf;
use std::time::Duration;

use xi_auth::{ClusterSecret, ThrottlePolicy};

use xi_http::{BodyLimits, DEFAULT_KEEP_ALIVE_SECS, DEFAULT_MAX_CONNECTIONS};

/// Default `--max-connections-per-address`: connections one client address may hold open
/// before its unauthenticated requests get 429. A browser opens 6 per host; 32 leaves room
/// for a few users behind one NAT while 300 slow connections from one host are refused.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 32;

/// Everything the supervisor needs to start. No field is read from the environment below this.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The `--auth-config` file. Without it and without `auth_advanced`, auth is off (every
    /// route open).
    pub auth_config: Option<PathBuf>,
    /// `--auth`: auth on with the identity store alone (no config file): the first start
    /// creates an `admin` with a random password, printed once.
    pub auth_advanced: bool,
    /// Keep users, keys and sessions in the identity store (on by default whenever auth is
    /// on; off leaves only the config file's principals, as before the store existed).
    pub identity_store: bool,
    /// The identity store's database: `sqlite://...` or `postgres://...`; `None`: SQLite at
    /// `$XINFERENCE_HOME/identity.db`.
    pub database_url: Option<String>,
    /// Single sign-on providers (OpenID Connect); `None`: password logins only. Needs the
    /// identity store (SSO users live there).
    pub oidc: Option<xi_oidc::OidcSettings>,
    /// How the identity store behaves (token lifetimes, cache, poll interval, retention).
    pub identity: xi_identity::IdentityOptions,
    /// Reverse proxies whose `X-Forwarded-For` is believed: a request from one of them is
    /// throttled and audited under the client address it forwards. Empty: the socket's address
    /// always (the header is ignored).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// `$XINFERENCE_HOME`: registrations, model cache, tokens.
    pub home: PathBuf,
    /// Require `admin` for `GET /metrics` (it is public by default, like upstream).
    pub metrics_require_auth: bool,
    /// Require `models:list` for `GET /openapi.json` and `GET /docs` (public by default, like
    /// upstream's `/docs`).
    pub docs_require_auth: bool,
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// HTTP worker threads; `None` = one per CPU core.
    pub http_workers: Option<usize>,
    /// Failed-login limits.
    pub throttle: ThrottlePolicy,
    /// Password checks that may run at once; the rest wait (or get 503 when many wait).
    pub login_concurrency: usize,
    /// The cluster secret workers must present; `None`: the one saved under `home`, created
    /// on first start.
    pub cluster_secret: Option<ClusterSecret>,
    /// How often workers send heartbeats (they are told at join); a worker silent for 3
    /// intervals is dead.
    pub heartbeat_interval: Duration,
    /// How slow a request body may be before 408 and a closed connection.
    pub body_limits: BodyLimits,
    /// Open unauthenticated connections one client address may hold before its
    /// unauthenticated requests get 429; 0: no limit. Not applied while auth is off.
    pub max_connections_per_address: usize,
    /// How long an idle keep-alive connection stays open; `None`: no keep-alive.
    pub keep_alive: Option<Duration>,
    /// Connections accepted at once, all clients together (lowered to what the open-file
    /// limit allows); the rest wait in the kernel's backlog.
    pub max_connections: usize,
}

impl SupervisorConfig {
    /// Defaults for everything but the home folder.
    pub fn new(home: PathBuf) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            auth_config: None,
            auth_advanced: false,
            identity_store: true,
            database_url: None,
            oidc: None,
            identity: xi_identity::IdentityOptions::default(),
            trusted_proxies: Vec::new(),
            home,
            metrics_require_auth: false,
            docs_require_auth: false,
            max_body_bytes: 16 * 1024 * 1024,
            http_workers: None,
            throttle: ThrottlePolicy::default(),
            // Leave at least one core to the request threads during a login storm.
            login_concurrency: (cores / 2).max(1),
            cluster_secret: None,
            heartbeat_interval: Duration::from_secs(2),
            body_limits: BodyLimits::default(),
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            keep_alive: Some(Duration::from_secs_f64(DEFAULT_KEEP_ALIVE_SECS)),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}
