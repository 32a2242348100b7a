//! `xinference-local`: the supervisor and one in-process worker on one machine (other workers
//! may join it too), plus the `hash-password` helper.
//!
//! Thin on purpose: flags -> `SupervisorConfig` -> load (before binding, so a bad config
//! leaves nothing listening) -> bind -> an in-process [`LocalWorker`] (rendering chat templates
//! in sandbox children of this executable) -> [`Supervisor::run`] until SIGINT/SIGTERM.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use clap::{Parser, Subcommand};
use xi_api::worker::Worker;
use xi_launch::{
    exit_code, init_logging, raise_open_file_limit, serve_api, ApiArgs, CommonArgs, ModelArgs,
};
use xi_supervisor::Supervisor;
use xi_worker::{LocalWorker, WorkerConfig};

/// Serve LLM, embedding and rerank models behind an OpenAI-compatible API, on one machine.
#[derive(Parser, Debug)]
#[command(name = "xinference-local", version)]
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
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    models: ModelArgs,
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
    /// Copy the users and api keys of --auth-config into the identity store (--database-url,
    /// else $XINFERENCE_HOME/identity.db), all or nothing; then start with --auth.
    ImportAuthConfig,
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
    if let Some(code) = xi_launch::template_sandbox_child() {
        return code;
    }
    let cli = Cli::parse();
    match cli.command {
        Some(Command::HashPassword { password }) => {
            return xi_launch::hash_password("xinference-local", password)
        }
        Some(Command::ConvertGguf { gguf, out }) => return convert_gguf(&gguf, &out),
        Some(Command::ImportAuthConfig) => {
            return match cli.common.home() {
                Ok(home) => xi_launch::import_auth_config("xinference-local", &cli.api, home),
                Err(e) => {
                    eprintln!("xinference-local: error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {}
    }
    cli.models.apply_threads();
    init_logging(&cli.common.log_level);
    raise_open_file_limit();
    exit_code("xinference-local", serve(cli))
}

fn serve(cli: Cli) -> Result<(), String> {
    let home = cli.common.home()?;
    let config = cli
        .api
        .supervisor_config(home.clone(), cli.common.given_secret()?)?;
    let supervisor = Supervisor::new(config).map_err(|e| e.to_string())?;
    let listener = TcpListener::bind((cli.host.as_str(), cli.port))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", cli.host, cli.port))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;

    let mut worker_config = WorkerConfig::new(address.to_string(), &home);
    worker_config.queue_capacity = cli.models.model_queue_size.max(1);
    worker_config.audio_limits = cli.models.audio_limits()?;
    worker_config.template_sandbox = Some(xi_launch::template_sandbox()?);
    let worker: Arc<dyn Worker> = Arc::new(LocalWorker::new(worker_config));
    serve_api("xinference-local", supervisor, listener, vec![worker])
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
