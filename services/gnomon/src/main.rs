//! `gnomon`: one binary, a subcommand per service.

use clap::{Parser, Subcommand};
use gnomon_shared::telemetry::{init_tracing, TracingOptions};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "gnomon", version, about = "Clustered, highly available gNMI telemetry collection")]
struct Cli {
    /// Log as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve many simulated gNMI devices from one process.
    Simulator(gnomon_simulator::SimulatorArgs),
}

/// Cancels `shutdown` on SIGINT or SIGTERM, so every service stops cleanly (releasing its
/// locks and registrations) before the process exits.
fn cancel_on_signals(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let service = match &cli.command {
        Command::Simulator(_) => "gnomon-simulator",
    };
    let _telemetry = match init_tracing(&TracingOptions {
        service_name: service.to_string(),
        otlp_endpoint: None,
        json_logs: cli.log_json,
    }) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("gnomon: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let result = match cli.command {
        Command::Simulator(args) => gnomon_simulator::run(args, shutdown).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gnomon: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
