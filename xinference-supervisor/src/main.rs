//! `xinference-supervisor`: the head of a cluster. It serves the REST API (auth, registry,
//! placement) and forwards inference to the `xinference-worker`s that join it.
//!
//! Thin on purpose: flags -> `SupervisorConfig` -> load (before binding, so a bad config
//! leaves nothing listening) -> bind -> serve until SIGINT/SIGTERM or `DELETE /v1/clusters`.

use std::net::TcpListener;
use std::process::ExitCode;

use clap::Parser;
use xi_launch::{
    announce_secret, exit_code, init_logging, raise_open_file_limit, serve_api, ApiArgs, CommonArgs,
};
use xi_supervisor::Supervisor;

/// Cluster head: REST API, web UI, auth, model registry and placement; workers run the models.
#[derive(Parser, Debug)]
#[command(name = "xinference-supervisor", version)]
struct Cli {
    /// Address to listen on (workers and clients reach the supervisor here).
    #[arg(short = 'H', long, env = "XINFERENCE_HOST", default_value = "0.0.0.0")]
    host: String,
    /// Port to listen on (0 picks a free one; the chosen address is printed).
    #[arg(short, long, env = "XINFERENCE_PORT", default_value_t = 9997)]
    port: u16,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Copy the users and api keys of --auth-config into the identity store (--database-url,
    /// else $XINFERENCE_HOME/identity.db), all or nothing; then start with --auth.
    ImportAuthConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::ImportAuthConfig) = cli.command {
        return match cli.common.home() {
            Ok(home) => xi_launch::import_auth_config("xinference-supervisor", &cli.api, home),
            Err(e) => {
                eprintln!("xinference-supervisor: error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    init_logging(&cli.common.log_level);
    raise_open_file_limit();
    exit_code("xinference-supervisor", serve(cli))
}

fn serve(cli: Cli) -> Result<(), String> {
    let home = cli.common.home()?;
    let config = cli
        .api
        .supervisor_config(home, cli.common.given_secret()?)?;
    let supervisor = Supervisor::new(config).map_err(|e| e.to_string())?;
    let listener = TcpListener::bind((cli.host.as_str(), cli.port))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", cli.host, cli.port))?;
    announce_secret(supervisor.secret_source());
    serve_api("xinference-supervisor", supervisor, listener, Vec::new())
}
