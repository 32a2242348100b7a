//! What the launcher binaries share: flags common to the servers, logging, signals and the
//! home folder. Each binary stays a page: parse flags, call the library.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tracing_subscriber::EnvFilter;
use xi_auth::ClusterSecret;
use xi_supervisor::limits::body;

mod oidc;
pub use oidc::OidcArgs;

/// Flags of every server binary (local, supervisor, worker).
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Log level: error, warn, info, debug or trace (or a tracing filter such as
    /// `xi_supervisor=debug`).
    #[arg(long, env = "XINFERENCE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Home folder for registrations, model cache and tokens [default: ~/.xinference].
    #[arg(long, env = "XINFERENCE_HOME")]
    pub home: Option<PathBuf>,
    /// File holding the cluster secret shared by the supervisor and its workers (beyond
    /// upstream: workers without it cannot join or be called).
    #[arg(long, env = "XINFERENCE_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
}

/// Flags of the binaries that serve the REST API (local and supervisor).
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// Auth config JSON file (users, permissions, api keys). Without it, auth is off.
    #[arg(long, env = "XINFERENCE_AUTH_CONFIG")]
    pub auth_config: Option<PathBuf>,
    /// Auth on without a config file: users, api keys and sessions live in the identity store
    /// alone; the first start creates `admin` with a random password printed once on stderr
    /// (upstream's `XINFERENCE_AUTH_ADVANCED=1`).
    #[arg(long = "auth", env = "XINFERENCE_AUTH_ADVANCED")]
    pub auth_advanced: bool,
    /// The identity store's database: `sqlite://PATH` or `postgres://USER:PASS@HOST/DB` (share
    /// one PostgreSQL database between supervisors) [default: SQLite at
    /// $XINFERENCE_HOME/identity.db].
    #[arg(long, env = "XINFERENCE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A reverse proxy whose X-Forwarded-For is believed for the client address of login
    /// throttling and the audit log (repeat it, or give a comma-separated list). Without it the
    /// header is ignored.
    #[arg(
        long = "trusted-proxy",
        env = "XINFERENCE_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// With --auth-config: keep only the config file's users and keys (no identity store, no
    /// refresh tokens, no admin API for users and keys).
    #[arg(
        long,
        env = "XINFERENCE_NO_IDENTITY_STORE",
        conflicts_with = "auth_advanced"
    )]
    pub no_identity_store: bool,
    /// Require `admin` for GET /metrics (public by default, like upstream).
    #[arg(long, env = "XINFERENCE_METRICS_REQUIRE_AUTH")]
    pub metrics_require_auth: bool,
    /// Require `models:list` for GET /openapi.json and GET /docs (public by default, like
    /// upstream's /docs).
    #[arg(long, env = "XINFERENCE_DOCS_REQUIRE_AUTH")]
    pub docs_require_auth: bool,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "XINFERENCE_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Failed logins allowed per username per minute before 429 (0: no limit).
    #[arg(long, env = "XINFERENCE_LOGIN_FAILURES_PER_USER", default_value_t = 5)]
    pub login_failures_per_user: usize,
    /// Failed logins allowed per client address per minute before 429 (0: no limit; behind a
    /// reverse proxy every client shares the proxy's address).
    #[arg(
        long,
        env = "XINFERENCE_LOGIN_FAILURES_PER_ADDRESS",
        default_value_t = 20
    )]
    pub login_failures_per_address: usize,
    /// Seconds between worker heartbeats (workers are told at join); a worker silent for 3
    /// intervals is declared dead.
    #[arg(long, env = "XINFERENCE_HEARTBEAT_INTERVAL", default_value_t = 2.0)]
    pub heartbeat_interval: f64,
    /// Seconds allowed for a whole request body, from its first read; slower bodies get 408
    /// and the connection is closed (0: no total limit).
    #[arg(
        long,
        env = "XINFERENCE_BODY_TIMEOUT",
        default_value_t = body::DEFAULT_BODY_TIMEOUT_SECS
    )]
    pub body_timeout: f64,
    /// After --body-min-rate-grace seconds, a request body must have averaged at least this
    /// many bytes per second, or it gets 408 and the connection is closed (0: no minimum).
    #[arg(
        long,
        env = "XINFERENCE_BODY_MIN_BYTES_PER_SEC",
        default_value_t = body::DEFAULT_BODY_MIN_BYTES_PER_SEC
    )]
    pub body_min_rate: u64,
    /// Seconds a request body may take before --body-min-rate applies.
    #[arg(
        long,
        env = "XINFERENCE_BODY_MIN_RATE_GRACE",
        default_value_t = body::DEFAULT_BODY_MIN_RATE_GRACE_SECS
    )]
    pub body_min_rate_grace: f64,
    /// Open connections one client address may hold without authenticating; beyond it its
    /// unauthenticated requests (`/token`, the UI, ...) get 429 and the connection is closed.
    /// Authenticated requests are never refused. Applies only with --auth-config (0: no
    /// limit; behind a reverse proxy every client shares the proxy's address).
    #[arg(
        long,
        env = "XINFERENCE_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = xi_supervisor::limits::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
    )]
    pub max_connections_per_address: usize,
    /// Seconds an idle keep-alive connection stays open (0: close after each response).
    #[arg(
        long,
        env = "XINFERENCE_KEEP_ALIVE",
        default_value_t = body::DEFAULT_KEEP_ALIVE_SECS
    )]
    pub keep_alive: f64,
    /// Connections accepted at once, all clients together; more wait in the kernel's backlog.
    /// Lowered to what the open-file limit allows.
    #[arg(
        long,
        env = "XINFERENCE_MAX_CONNECTIONS",
        default_value_t = body::DEFAULT_MAX_CONNECTIONS
    )]
    pub max_connections: usize,
    #[command(flatten)]
    pub oidc: OidcArgs,
}

/// Seconds from a flag: finite and within `0..=max`; 0 is `None` (the limit is off).
fn seconds(flag: &str, value: f64, max: f64) -> Result<Option<std::time::Duration>, String> {
    if !(value.is_finite() && (0.0..=max).contains(&value)) {
        return Err(format!(
            "{flag} must be between 0 and {max} seconds, got {value}"
        ));
    }
    Ok((value > 0.0).then(|| std::time::Duration::from_secs_f64(value)))
}

/// Flags of the binaries that run models (local and worker).
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Compute threads for model inference [default: one per CPU core]. Sets RAYON_NUM_THREADS.
    #[arg(long, env = "XINFERENCE_THREADS")]
    pub threads: Option<usize>,
    /// Requests that may wait per model replica; beyond it requests get 503 with Retry-After.
    #[arg(long, env = "XINFERENCE_MODEL_QUEUE_SIZE", default_value_t = 256)]
    pub model_queue_size: usize,
    /// Longest audio a speech-to-text request may carry, in seconds; longer is 413.
    #[arg(long, env = "XINFERENCE_MAX_AUDIO_SECONDS", default_value_t = xi_engine::audio::MAX_AUDIO_SECONDS)]
    pub max_audio_seconds: f64,
}

impl ModelArgs {
    /// The speech-to-text input limits, or why `--max-audio-seconds` is unusable.
    pub fn audio_limits(&self) -> Result<xi_engine::audio::AudioLimits, String> {
        let s = self.max_audio_seconds;
        if !(s.is_finite() && s > 0.0 && s <= 24.0 * 3600.0) {
            return Err(format!(
                "--max-audio-seconds must be a number of seconds in (0, 86400], got {s}"
            ));
        }
        Ok(xi_engine::audio::AudioLimits { max_seconds: s })
    }

    /// Call before any thread exists: candle and rayon read this when they size their pools.
    pub fn apply_threads(&self) {
        if let Some(threads) = self.threads {
            std::env::set_var("RAYON_NUM_THREADS", threads.max(1).to_string());
        }
    }
}

/// When this process is a chat template sandbox started by its worker
/// ([`xi_worker::TemplateSandbox`]): serves renders until the worker closes the pipe and
/// returns the exit status. `None` in a normal start. Call first thing in `main` of every
/// binary that serves models.
pub fn template_sandbox_child() -> Option<std::process::ExitCode> {
    let setting = std::env::var(xi_worker::TEMPLATE_SANDBOX_ENV).ok()?;
    Some(xi_worker::serve_template_sandbox(&setting))
}

/// The worker's chat template sandbox: this executable, started again as a sandbox child
/// (through `/proc/self/exe` where there is one, so an upgrade that replaces the file on disk
/// still starts this very binary).
pub fn template_sandbox() -> Result<xi_worker::TemplateSandbox, String> {
    let proc_exe = std::path::Path::new("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(xi_worker::TemplateSandbox::new(proc_exe.to_path_buf()));
    }
    std::env::current_exe()
        .map(xi_worker::TemplateSandbox::new)
        .map_err(|e| format!("cannot find this executable for the chat template sandbox: {e}"))
}

impl ApiArgs {
    /// The supervisor config these flags describe.
    pub fn supervisor_config(
        &self,
        home: PathBuf,
        cluster_secret: Option<ClusterSecret>,
    ) -> Result<xi_supervisor::SupervisorConfig, String> {
        if !(self.heartbeat_interval.is_finite()
            && (0.05..=600.0).contains(&self.heartbeat_interval))
        {
            return Err(format!(
                "--heartbeat-interval must be between 0.05 and 600 seconds, got {}",
                self.heartbeat_interval
            ));
        }
        let total = seconds("--body-timeout", self.body_timeout, 86_400.0)?;
        let grace = seconds("--body-min-rate-grace", self.body_min_rate_grace, 86_400.0)?;
        let keep_alive = seconds("--keep-alive", self.keep_alive, 3_600.0)?;
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".to_string());
        }
        let mut config = xi_supervisor::SupervisorConfig::new(home);
        config.body_limits = body::BodyLimits {
            total,
            min_bytes_per_sec: self.body_min_rate,
            grace: grace.unwrap_or_default(),
        };
        config.max_connections_per_address = self.max_connections_per_address;
        config.keep_alive = keep_alive;
        config.max_connections = self.max_connections;
        config.auth_config = self.auth_config.clone();
        config.auth_advanced = self.auth_advanced;
        config.identity_store = !self.no_identity_store;
        config.database_url = self.database_url.clone();
        config.trusted_proxies = self.trusted_proxies.clone();
        config.metrics_require_auth = self.metrics_require_auth;
        config.docs_require_auth = self.docs_require_auth;
        config.max_body_bytes = self.max_body_bytes;
        config.throttle.per_user = self.login_failures_per_user;
        config.throttle.per_address = self.login_failures_per_address;
        config.cluster_secret = cluster_secret;
        config.heartbeat_interval = std::time::Duration::from_secs_f64(self.heartbeat_interval);
        config.oidc = self.oidc.settings(self.auth_config.as_deref())?;
        Ok(config)
    }
}

impl CommonArgs {
    pub fn home(&self) -> Result<PathBuf, String> {
        match &self.home {
            Some(home) => Ok(home.clone()),
            None => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".xinference"))
                .ok_or_else(|| "HOME is not set; pass --home or set XINFERENCE_HOME".to_string()),
        }
    }

    /// The cluster secret given by `--cluster-secret-file` or `XINFERENCE_CLUSTER_SECRET`.
    pub fn given_secret(&self) -> Result<Option<ClusterSecret>, String> {
        let env = std::env::var("XINFERENCE_CLUSTER_SECRET").ok();
        ClusterSecret::given(self.cluster_secret_file.as_deref(), env.as_deref())
            .map(|given| given.map(|(secret, _)| secret))
            .map_err(|e| e.to_string())
    }
}

/// The process's exit status: success, or the error on stderr as `<name>: error: ...`.
pub fn exit_code(name: &str, result: Result<(), String>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{name}: error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Raises the soft open-file limit to the hard one (every connection is a file descriptor)
/// and logs the result. Call once, after [`init_logging`].
pub fn raise_open_file_limit() {
    match xi_supervisor::limits::raise_open_file_limit() {
        Ok((before, after)) if after > before => {
            tracing::info!(before, after, "raised the open-file limit");
        }
        Ok((_, now)) => tracing::debug!(open_file_limit = now, "open-file limit"),
        Err(e) => tracing::warn!("{e}"),
    }
}

pub fn init_logging(level: &str) {
    let level = match level {
        "warning" | "WARNING" => "warn",
        other => other,
    };
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Completes on SIGINT or SIGTERM. The handlers are installed by this call (inside the
/// runtime), not when the future is first polled, so no signal slips through before serving.
#[cfg(unix)]
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(not(unix))]
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Tells the user how workers get the supervisor's secret, when it came from the home folder
/// (the value itself is never printed).
pub fn announce_secret(source: &xi_auth::SecretSource) {
    match source {
        xi_auth::SecretSource::Generated(path) => println!(
            "generated a cluster secret in {0} (mode 0600); start workers with \
             --cluster-secret-file {0} (or XINFERENCE_CLUSTER_SECRET set to its content)",
            path.display()
        ),
        xi_auth::SecretSource::Saved(path) => println!(
            "cluster secret: {0}; start workers with --cluster-secret-file {0}",
            path.display()
        ),
        xi_auth::SecretSource::File(_) | xi_auth::SecretSource::Env => {}
    }
}

/// Serves the REST API on `listener` with `workers` (empty for a supervisor) until a signal or
/// `DELETE /v1/clusters`; prints `<name> listening on http://<address>` once serving.
pub fn serve_api(
    name: &str,
    supervisor: xi_supervisor::Supervisor,
    listener: std::net::TcpListener,
    workers: Vec<std::sync::Arc<dyn xi_api::worker::Worker>>,
) -> Result<(), String> {
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let running = supervisor
            .start(listener, workers, shutdown_signal())
            .await
            .map_err(|e| e.to_string())?;
        // Printed once requests and signals are handled: scripts may act on it at once.
        println!("{name} listening on http://{address}");
        running.wait().await.map_err(|e| e.to_string())
    })
}

/// `hash-password` of `xinference-local` and of the `xinference` CLI: prints an argon2id hash
/// of `given`, or of standard input's first line when no password was given.
pub fn hash_password(program: &str, given: Option<String>) -> ExitCode {
    let password = match given {
        Some(p) => p,
        None => {
            let mut input = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut input) {
                eprintln!("{program}: error: cannot read the password: {e}");
                return ExitCode::FAILURE;
            }
            input.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    if password.is_empty() {
        eprintln!("{program}: error: the password is empty");
        return ExitCode::FAILURE;
    }
    match xi_auth::password::hash_for_config(&password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `import-auth-config`: copies the users and api keys of `--auth-config` into the identity
/// store (`--database-url`, else SQLite under the home folder), all or nothing; users already
/// there are left alone. Then start with `--auth` instead of `--auth-config`.
pub fn import_auth_config(program: &str, api: &ApiArgs, home: PathBuf) -> ExitCode {
    let result = (|| -> Result<xi_identity::ImportReport, String> {
        let path = api
            .auth_config
            .as_ref()
            .ok_or("give the file to import with --auth-config")?;
        let settings = xi_auth::AuthSettings::load(path).map_err(|e| e.to_string())?;
        let url = api
            .database_url
            .clone()
            .unwrap_or_else(|| xi_identity::Store::sqlite_url(&home.join("identity.db")));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let store = xi_identity::Store::open(&url)
                .await
                .map_err(|e| e.to_string())?;
            let hashing =
                std::sync::Arc::new(xi_auth::HashPool::new(1).map_err(|e| e.to_string())?);
            let identity = xi_identity::Identity::open(
                store,
                None,
                xi_identity::IdentityOptions::default(),
                std::sync::Arc::new(xi_auth::SystemClock),
                hashing,
            )
            .await
            .map_err(|e| e.to_string())?;
            identity
                .import_config(&settings)
                .await
                .map_err(|e| e.to_string())
        })
    })();
    match result {
        Ok(report) => {
            println!(
                "imported {} users ({}) and {} api keys",
                report.users_created.len(),
                report.users_created.join(", "),
                report.keys_created
            );
            if !report.users_skipped.is_empty() {
                println!(
                    "left alone, already in the store: {}",
                    report.users_skipped.join(", ")
                );
            }
            println!("start the server with --auth (and without --auth-config) to use them");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: error: {e}");
            ExitCode::FAILURE
        }
    }
}
