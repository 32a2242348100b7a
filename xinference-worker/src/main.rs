//! `xinference-worker`: runs models for a supervisor. It joins the supervisor at `--endpoint`
//! with the cluster secret, reports its CPU, memory and replicas, sends heartbeats, and serves
//! the supervisor's internal calls on `--host:--worker-port`.
//!
//! Thin on purpose: flags -> bind -> `xi_worker::run_node` until SIGINT/SIGTERM.

use std::net::{IpAddr, TcpListener, UdpSocket};
use std::process::ExitCode;

use clap::Parser;
use xi_launch::{
    exit_code, init_logging, raise_open_file_limit, shutdown_signal, CommonArgs, ModelArgs,
};
use xi_worker::{run_node, NodeConfig, WorkerConfig};

/// Runs LLM, embedding and rerank models for an xinference-supervisor.
#[derive(Parser, Debug)]
#[command(name = "xinference-worker", version)]
struct Cli {
    /// The supervisor's REST endpoint.
    #[arg(
        short = 'e',
        long,
        env = "XINFERENCE_ENDPOINT",
        default_value = "http://127.0.0.1:9997"
    )]
    endpoint: String,
    /// Address to listen on, and to be reached at by the supervisor. With 0.0.0.0 the worker
    /// advertises the address it uses to reach the supervisor.
    #[arg(
        short = 'H',
        long,
        env = "XINFERENCE_WORKER_HOST",
        default_value = "0.0.0.0"
    )]
    host: String,
    /// Port of the worker's internal API [default: a free port].
    #[arg(long, env = "XINFERENCE_WORKER_PORT", default_value_t = 0)]
    worker_port: u16,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    models: ModelArgs,
}

fn main() -> ExitCode {
    if let Some(code) = xi_launch::template_sandbox_child() {
        return code;
    }
    let cli = Cli::parse();
    cli.models.apply_threads();
    init_logging(&cli.common.log_level);
    raise_open_file_limit();
    exit_code("xinference-worker", serve(cli))
}

fn serve(cli: Cli) -> Result<(), String> {
    let home = cli.common.home()?;
    let secret = cli.common.given_secret()?.ok_or_else(|| {
        "no cluster secret: pass --cluster-secret-file PATH (the supervisor prints where its \
         secret is) or set XINFERENCE_CLUSTER_SECRET"
            .to_string()
    })?;
    let listener = TcpListener::bind((cli.host.as_str(), cli.worker_port))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", cli.host, cli.worker_port))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let host = if bound.ip().is_unspecified() {
        route_to(&cli.endpoint)?
    } else {
        bound.ip()
    };
    let address = std::net::SocketAddr::new(host, bound.port()).to_string();
    let mut worker = WorkerConfig::new(address.clone(), &home);
    worker.queue_capacity = cli.models.model_queue_size.max(1);
    worker.audio_limits = cli.models.audio_limits()?;
    worker.template_sandbox = Some(xi_launch::template_sandbox()?);
    let config = NodeConfig {
        supervisor: cli.endpoint.trim_end_matches('/').to_string(),
        secret,
        worker,
    };
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let shutdown = shutdown_signal();
        println!("xinference-worker listening on http://{address}");
        run_node(config, listener, shutdown)
            .await
            .map_err(|e| e.to_string())
    })
}

/// The local IP this host uses to reach the supervisor (no packet is sent).
fn route_to(endpoint: &str) -> Result<IpAddr, String> {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let target = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    socket
        .connect(&target)
        .and_then(|()| socket.local_addr())
        .map(|a| a.ip())
        .map_err(|e| {
            format!(
                "cannot tell which address reaches {endpoint} ({e}); pass -H with this host's IP"
            )
        })
}
