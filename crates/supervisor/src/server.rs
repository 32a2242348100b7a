//! Building the state and serving it: [`Supervisor::new`] then [`Supervisor::run`].

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::KeepAlive;
use actix_web::middleware::{from_fn, ErrorHandlers};
use actix_web::{web, App, HttpServer};
use tokio::sync::Notify;
use xi_api::worker::Worker;
use xi_auth::{AuthService, ClusterSecret, HashPool, SecretSource, SystemClock};
use xi_identity::{Identity, Store};

use crate::authz;
use crate::config::SupervisorConfig;
use crate::domain::Cluster;
use crate::error::{self, SupervisorError};
use crate::limits::{self, ConnectionBook};
use crate::metrics::{self, Metrics};
use crate::registry::Registry;
use crate::routes;
use crate::state::AppState;

/// A supervisor whose config, auth and registry have been loaded, ready to serve.
pub struct Supervisor {
    config: SupervisorConfig,
    auth: Option<Arc<AuthService>>,
    registry: Registry,
    cluster_secret: ClusterSecret,
    secret_source: SecretSource,
}

impl Supervisor {
    /// Loads everything that can fail before a port is opened: the auth config (blocking:
    /// hashes plain-text passwords) and the registry. Call before binding, so a bad config
    /// exits with nothing listening.
    pub fn new(config: SupervisorConfig) -> Result<Supervisor, SupervisorError> {
        std::fs::create_dir_all(&config.home).map_err(|e| {
            SupervisorError::Startup(format!(
                "cannot create XINFERENCE_HOME {}: {e}",
                config.home.display()
            ))
        })?;
        let auth = match &config.auth_config {
            None => None,
            Some(path) => {
                let service = AuthService::from_file(path, config.throttle, Arc::new(SystemClock))?;
                for warning in service.warnings() {
                    tracing::warn!("{warning}");
                }
                Some(Arc::new(service))
            }
        };
        if config.oidc.is_some() {
            let auth_on = auth.is_some() || config.auth_advanced;
            if !auth_on || !config.identity_store {
                return Err(SupervisorError::Startup(
                    "single sign-on (OIDC) needs auth on with the identity store: add --auth or \
                     --auth-config, without --no-identity-store"
                        .into(),
                ));
            }
        }
        let registry = Registry::load(&config.home)?;
        let (cluster_secret, secret_source) = match config.cluster_secret.clone() {
            Some(secret) => (secret, SecretSource::Env),
            None => ClusterSecret::given_or_saved(None, None, &config.home)?,
        };
        Ok(Supervisor {
            config,
            auth,
            registry,
            cluster_secret,
            secret_source,
        })
    }

    /// Opens (creating and migrating it on first use) the identity store when auth is on and
    /// the store is not switched off. An empty store without a config file gets an `admin`
    /// whose random password is printed once on stderr and must be changed at first login.
    async fn open_identity(
        &self,
        hashing: Arc<HashPool>,
    ) -> Result<Option<Arc<Identity>>, SupervisorError> {
        let config = &self.config;
        let auth_on = self.auth.is_some() || config.auth_advanced;
        if !auth_on || !config.identity_store {
            return Ok(None);
        }
        let url = match &config.database_url {
            Some(url) => url.clone(),
            None => Store::sqlite_url(&config.home.join("identity.db")),
        };
        let startup = |e: xi_identity::IdentityError| {
            SupervisorError::Startup(format!("identity store: {e}"))
        };
        let store = Store::open(&url).await.map_err(startup)?;
        // One throttle policy for every login, config users' and the store's.
        let options = xi_identity::IdentityOptions {
            throttle: config.throttle,
            ..config.identity.clone()
        };
        let identity = Identity::open(
            store,
            self.auth.clone(),
            options,
            Arc::new(SystemClock),
            hashing,
        )
        .await
        .map_err(startup)?;
        if let Some(first) = identity.bootstrap().await.map_err(startup)? {
            tracing::warn!(username = %first.username, "created the first admin of the identity store; its password is printed on stderr once");
            eprintln!(
                "\n  First admin of the identity store: username {:?}, password {:?}\n  \
                 (shown once; it must be changed at the first login)\n",
                first.username, first.password
            );
        }
        tracing::info!(
            database = %redact_url(&url),
            with_config = identity.has_config(),
            "identity store open"
        );
        Ok(Some(identity))
    }

    /// Where the cluster secret came from (the launcher tells the user how workers get it).
    pub fn secret_source(&self) -> &SecretSource {
        &self.secret_source
    }

    /// Serves on `listener` with `workers` running the models, until `shutdown` completes or
    /// `DELETE /v1/clusters` is called; then stops gracefully (in-flight requests finish) and
    /// terminates every model.
    pub async fn run(
        self,
        listener: TcpListener,
        workers: Vec<Arc<dyn Worker>>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), SupervisorError> {
        self.start(listener, workers, shutdown).await?.wait().await
    }

    /// Starts serving and returns once requests and signals are handled (so a launcher can
    /// announce readiness); [`Running::wait`] then waits for the end.
    pub async fn start(
        self,
        listener: TcpListener,
        workers: Vec<Arc<dyn Worker>>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Running, SupervisorError> {
        let address = listener
            .local_addr()
            .map_err(|e| SupervisorError::Startup(format!("listener has no address: {e}")))?
            .to_string();
        let table = routes::route_table();
        let stop = Arc::new(Notify::new());
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(3))
            .tcp_nodelay(true)
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| SupervisorError::Startup(format!("cannot build the HTTP client: {e}")))?;
        let login_pool = Arc::new(HashPool::new(self.config.login_concurrency)?);
        let identity = self.open_identity(login_pool.clone()).await?;
        let sso = match self.config.oidc.clone() {
            None => None,
            Some(settings) => {
                for warning in &settings.warnings {
                    tracing::warn!("{warning}");
                }
                let names: Vec<String> =
                    settings.providers.iter().map(|p| p.name.clone()).collect();
                let sso = xi_oidc::Sso::new(settings, Arc::new(SystemClock))?;
                tracing::info!(providers = ?names, "single sign-on configured");
                Some(Arc::new(sso))
            }
        };
        let metrics = web::Data::new(Metrics::new().map_err(SupervisorError::internal)?);
        let openapi = serde_json::to_string(&routes::openapi::document(&table))
            .map_err(SupervisorError::internal)?;
        let openapi = web::Data::new(routes::openapi::OpenApiJson(openapi));
        let cluster = Arc::new(Cluster::new(
            self.registry,
            workers,
            self.config.heartbeat_interval,
            http,
            self.cluster_secret,
            metrics.cluster_events.clone(),
        ));
        let state = web::Data::new(AppState {
            public: routes::public_routes(&table, |switch| match switch {
                routes::Switch::Metrics => self.config.metrics_require_auth,
                routes::Switch::Docs => self.config.docs_require_auth,
            }),
            login_pool,
            metrics: metrics.clone(),
            cluster: cluster.clone(),
            stop_workers: std::sync::atomic::AtomicBool::new(false),
            auth: self.auth,
            identity,
            sso,
            sso_handoffs: Default::default(),
            address: address.clone(),
            started: Instant::now(),
            stop: stop.clone(),
            config: self.config,
        });

        #[cfg(unix)]
        spawn_reload_on_sighup(state.clone());
        cluster.spawn_monitor();

        let max_body = state.config.max_body_bytes;
        let body_limits = state.config.body_limits;
        let workers = state.config.http_workers;
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            let table = routes::route_table();
            App::new()
                .app_data(app_state.clone())
                .app_data(metrics.clone())
                .app_data(openapi.clone())
                .app_data(
                    // Like FastAPI, parse JSON whatever the content type says (curl -d sends
                    // form-urlencoded by default).
                    web::JsonConfig::default()
                        .limit(max_body)
                        .content_type_required(false)
                        .error_handler(error::json_error),
                )
                .app_data(web::PayloadConfig::new(max_body))
                .app_data(web::QueryConfig::default().error_handler(error::query_error))
                .app_data(web::PathConfig::default().error_handler(error::path_error))
                .app_data(body_limits)
                .configure(|cfg| routes::configure(&table, cfg))
                .default_service(web::to(routes::not_found))
                .wrap(from_fn(limits::refuse_crowded))
                .wrap(from_fn(authz::authenticate))
                .wrap(ErrorHandlers::new().default_handler(error::ensure_json_body))
                .wrap(from_fn(limits::body::deadline))
                .wrap(from_fn(metrics::observe))
        })
        .disable_signals()
        .shutdown_timeout(10)
        .client_request_timeout(limits::body::REQUEST_HEAD_TIMEOUT)
        .keep_alive(match state.config.keep_alive {
            Some(idle) => KeepAlive::Timeout(idle),
            None => KeepAlive::Disabled,
        });
        let threads = workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        server = server.workers(threads.max(1));
        let open_files = limits::open_file_limit();
        let max_connections = limits::usable_connections(state.config.max_connections, open_files);
        // actix counts per worker thread.
        server = server.max_connections(max_connections.div_ceil(threads.max(1)));
        // Counting is only needed when some requests are unauthenticated: with auth off every
        // route is open anyway.
        let per_address = state.config.max_connections_per_address;
        if per_address > 0 && state.auth_on() {
            let book = ConnectionBook::new(per_address);
            server =
                server.on_connect(move |conn, data| ConnectionBook::on_connect(&book, conn, data));
        }
        let server = server
            .listen(listener)
            .map_err(|e| SupervisorError::Startup(format!("cannot listen on {address}: {e}")))?
            .run();
        tracing::info!(
            %address,
            auth = state.auth_on(),
            identity_store = state.identity.is_some(),
            max_connections,
            open_files,
            per_address,
            "xinference-rs supervisor listening"
        );

        let handle = server.handle();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown => tracing::info!("shutdown signal received"),
                () = stop.notified() => tracing::info!("cluster stop requested over the API"),
            }
            handle.stop(true).await;
        });
        Ok(Running { server, state })
    }
}

/// A started supervisor.
pub struct Running {
    server: actix_web::dev::Server,
    state: web::Data<AppState>,
}

impl Running {
    /// Waits until the server has stopped, then terminates the models of the in-process
    /// worker. Remote workers keep theirs and join the next supervisor, unless the stop was
    /// `DELETE /v1/clusters`, which tells them to exit too.
    pub async fn wait(self) -> Result<(), SupervisorError> {
        self.server
            .await
            .map_err(|e| SupervisorError::internal(format!("server error: {e}")))?;
        let whole_cluster = self
            .state
            .stop_workers
            .load(std::sync::atomic::Ordering::SeqCst);
        self.state.cluster.shutdown(whole_cluster).await;
        if let Some(identity) = &self.state.identity {
            identity.flush_usage().await;
        }
        tracing::info!("supervisor stopped");
        Ok(())
    }
}

/// `SIGHUP` re-reads the auth config. A bad file keeps the old config and logs why; without
/// auth the signal is only logged.
#[cfg(unix)]
fn spawn_reload_on_sighup(state: web::Data<AppState>) {
    use tokio::signal::unix::{signal, SignalKind};

    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; auth config reload disabled");
            return;
        }
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            // Without --auth-config there is nothing to reload, but SIGHUP (log rotation) must
            // not kill the server either.
            let Some(auth) = state.auth.clone() else {
                tracing::info!("SIGHUP received; auth is off, nothing to reload");
                continue;
            };
            let result = tokio::task::spawn_blocking(move || auth.reload()).await;
            match result {
                Ok(Ok(warnings)) => {
                    for warning in warnings {
                        tracing::warn!("{warning}");
                    }
                    state.metrics.auth_reloads.with_label_values(&["ok"]).inc();
                    if let Some(identity) = &state.identity {
                        identity.config_reloaded();
                    }
                    tracing::info!("auth config reloaded");
                }
                Ok(Err(e)) => {
                    state
                        .metrics
                        .auth_reloads
                        .with_label_values(&["error"])
                        .inc();
                    tracing::error!(error = %e, "auth config reload failed; keeping the previous config");
                }
                Err(e) => tracing::error!(error = %e, "auth config reload task failed"),
            }
        }
    });
}

/// A database URL for logs: the password, if any, replaced.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{user}:***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}
