//! `xinference-local`: the supervisor and one in-process worker on one machine.
//!
//! Thin on purpose: flags -> [`SupervisorConfig`] -> load (before binding, so a bad config
//! leaves nothing listening) -> bind -> an in-process [`LocalWorker`] -> [`Supervisor::run`]
//! until SIGINT/SIGTERM.

use std::io::{IsTerminal, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use xi_api::worker::Worker;
use xi_supervisor::{Supervisor, SupervisorConfig};
use xi_worker::{LocalWorker, WorkerConfig};

/// Serve LLM, embedding and rerank models behind an OpenAI-compatible API, on one machine.
#[derive(Parser, Debug)]
#[command(name = "xinference-local", version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(
        short = 'H',
        long,
        env = "XINFERENCE_HOST",
        default_value = "127.0.0.1"
    )]
    host: String,
    /// Port to listen on (0 picks a free one; the chosen address is printed).
    #[arg(short, long, env = "XINFERENCE_PORT", default_value_t = 9997)]
    port: u16,
    /// Auth config JSON file (users, permissions, api keys). Without it, auth is off.
    #[arg(long, env = "XINFERENCE_AUTH_CONFIG")]
    auth_config: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace (or a tracing filter such as
    /// `xi_supervisor=debug`).
    #[arg(long, env = "XINFERENCE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Home folder for registrations, model cache and tokens [default: ~/.xinference].
    #[arg(long, env = "XINFERENCE_HOME")]
    home: Option<PathBuf>,
    /// Require `admin` for GET /metrics (public by default, like upstream).
    #[arg(long, env = "XINFERENCE_METRICS_REQUIRE_AUTH")]
    metrics_require_auth: bool,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "XINFERENCE_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Compute threads for model inference [default: one per CPU core]. Sets RAYON_NUM_THREADS.
    #[arg(long, env = "XINFERENCE_THREADS")]
    threads: Option<usize>,
    /// Requests that may wait per model replica; beyond it requests get 503 with Retry-After.
    #[arg(long, env = "XINFERENCE_MODEL_QUEUE_SIZE", default_value_t = 256)]
    model_queue_size: usize,
    /// Failed logins allowed per username per minute before 429 (0: no limit).
    #[arg(long, env = "XINFERENCE_LOGIN_FAILURES_PER_USER", default_value_t = 5)]
    login_failures_per_user: usize,
    /// Failed logins allowed per client address per minute before 429 (0: no limit; behind a
    /// reverse proxy every client shares the proxy's address).
    #[arg(
        long,
        env = "XINFERENCE_LOGIN_FAILURES_PER_ADDRESS",
        default_value_t = 20
    )]
    login_failures_per_address: usize,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print an argon2id hash of a password, for the `password` field of the auth config.
    /// Reads the password from standard input when --password is not given.
    HashPassword {
        /// The password (prefer standard input: flags end up in shell history).
        #[arg(long)]
        password: Option<String>,
    },
    /// Convert a GGUF LLM (llama, mistral, qwen2, qwen3) into a Hugging Face folder:
    /// config.json, tokenizer.json, tokenizer_config.json, generation_config.json and
    /// model.safetensors with f32 weights. The folder loads with `model_format: "pytorch"`
    /// here and with Hugging Face transformers.
    ConvertGguf {
        /// The .gguf file.
        gguf: PathBuf,
        /// The folder to create (must not exist, or be empty).
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::HashPassword { password }) => return hash_password(password),
        Some(Command::ConvertGguf { gguf, out }) => return convert_gguf(&gguf, &out),
        None => {}
    }
    if let Some(threads) = cli.threads {
        // candle and rayon read this when they first size their pools; no thread exists yet.
        std::env::set_var("RAYON_NUM_THREADS", threads.max(1).to_string());
    }
    init_logging(&cli.log_level);
    match serve(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xinference-local: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(cli: Cli) -> Result<(), String> {
    let home = match cli.home {
        Some(home) => home,
        None => default_home()?,
    };
    let mut config = SupervisorConfig::new(home.clone());
    config.auth_config = cli.auth_config;
    config.metrics_require_auth = cli.metrics_require_auth;
    config.max_body_bytes = cli.max_body_bytes;
    config.throttle.per_user = cli.login_failures_per_user;
    config.throttle.per_address = cli.login_failures_per_address;

    let supervisor = Supervisor::new(config).map_err(|e| e.to_string())?;
    let listener = TcpListener::bind((cli.host.as_str(), cli.port))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", cli.host, cli.port))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;

    let mut worker_config = WorkerConfig::new(address.to_string(), &home);
    worker_config.queue_capacity = cli.model_queue_size.max(1);
    let worker: Arc<dyn Worker> = Arc::new(LocalWorker::new(worker_config));

    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let shutdown = shutdown_signal();
        let running = supervisor
            .start(listener, vec![worker], shutdown)
            .await
            .map_err(|e| e.to_string())?;
        // Printed once requests and signals are handled: scripts may act on it at once.
        println!("xinference-local listening on http://{address}");
        running.wait().await.map_err(|e| e.to_string())
    })
}

fn default_home() -> Result<PathBuf, String> {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".xinference"))
        .ok_or_else(|| "HOME is not set; pass --home or set XINFERENCE_HOME".to_string())
}

fn init_logging(level: &str) {
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
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
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
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn hash_password(password: Option<String>) -> ExitCode {
    let password = match password {
        Some(p) => p,
        None => {
            let mut input = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut input) {
                eprintln!("xinference-local: error: cannot read the password: {e}");
                return ExitCode::FAILURE;
            }
            input.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    if password.is_empty() {
        eprintln!("xinference-local: error: the password is empty");
        return ExitCode::FAILURE;
    }
    match xi_auth::password::hash_for_config(&password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xinference-local: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn convert_gguf(gguf: &std::path::Path, out: &std::path::Path) -> ExitCode {
    match xi_engine::llm::convert::gguf_to_safetensors(gguf, out) {
        Ok(done) => {
            println!(
                "wrote {} ({} {} tensors, {:.1} MiB of f32 weights)",
                out.display(),
                done.config.arch.name(),
                done.tensors,
                done.bytes as f64 / (1024.0 * 1024.0)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xinference-local: error: {e}");
            ExitCode::FAILURE
        }
    }
}
