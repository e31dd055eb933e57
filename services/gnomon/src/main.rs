//! `gnomon`: one binary, a subcommand per service, `all`, and `demo`.

mod demo;
mod node;

use clap::{Parser, Subcommand};
use gnomon_config::load_config;
use gnomon_telemetry::{init_tracing, TracingOptions};
use node::{run_node, NodeDeps, Roles};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "gnomon",
    version,
    about = "Clustered, highly available gNMI telemetry collection"
)]
struct Cli {
    /// Log as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

/// The configuration file (gnmic's format); without it gnmic's `.gnmic.{yaml,yml,json,toml}`
/// locations are searched.
#[derive(clap::Args, Clone, Debug)]
struct ConfigArg {
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve many simulated gNMI devices from one process.
    Simulator(gnomon_simulator::SimulatorArgs),
    /// Subscribe to gNMI targets and publish to the outputs (clustered with a `clustering` block).
    Collector(ConfigArg),
    /// Campaign for leadership and place targets on the collectors.
    Coordinator(ConfigArg),
    /// Read NATS and serve Prometheus metrics.
    Exporter(ConfigArg),
    /// Collector, coordinator and exporter in one process.
    All(ConfigArg),
    /// Everything in one process with simulated devices and no external servers.
    Demo(demo::DemoArgs),
}

impl Command {
    fn service_name(&self) -> &'static str {
        match self {
            Command::Simulator(_) => "gnomon-simulator",
            Command::Collector(_) => "gnomon-collector",
            Command::Coordinator(_) => "gnomon-coordinator",
            Command::Exporter(_) => "gnomon-exporter",
            Command::All(_) => "gnomon",
            Command::Demo(_) => "gnomon-demo",
        }
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM, so every service stops cleanly (releasing its
/// locks and registrations) before the process exits.
fn cancel_on_signals(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(e) => {
                    tracing::error!("cannot listen for SIGTERM: {e}");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        shutdown.cancel();
    });
}

async fn run_config(
    args: ConfigArg,
    roles: Roles,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // The error is one line naming the key, the value and what was expected.
    let config = load_config(args.config.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    run_node(config, roles, NodeDeps::default(), shutdown).await
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = match init_tracing(&TracingOptions {
        service_name: cli.command.service_name().to_string(),
        otlp_endpoint: None,
        json_logs: cli.log_json,
    }) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("gnomon: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // Install the metrics recorder before any service registers its counters.
    let _ = gnomon_telemetry::metrics_handle();
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let only = |collector, coordinator, exporter| Roles {
        collector,
        coordinator,
        exporter,
    };
    let result = match cli.command {
        Command::Simulator(args) => gnomon_simulator::run(args, shutdown).await,
        Command::Collector(args) => run_config(args, only(true, false, false), shutdown).await,
        Command::Coordinator(args) => run_config(args, only(false, true, false), shutdown).await,
        Command::Exporter(args) => run_config(args, only(false, false, true), shutdown).await,
        Command::All(args) => run_config(args, only(true, true, true), shutdown).await,
        Command::Demo(args) => demo::run(args, shutdown).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gnomon: {e:#}");
            ExitCode::FAILURE
        }
    }
}
