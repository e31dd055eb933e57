//! `gnomon`: one binary, a subcommand per service, `all`, and `demo`.

mod demo;

/// mimalloc gives freed memory back to the system (glibc's malloc keeps what a burst of
/// connections or targets once needed), and is faster for the many small allocations of
/// the data path. `main` turns transparent huge pages off (mimalloc asks for them on its
/// arenas) in every process but an exporter's: a collector's memory is many small
/// per-target buffers, and each first touch of a huge page zeroes 2 MiB, again after memory
/// is given back — a fifth of all CPU while placing 10 000 targets (place_10k_targets_s
/// 10.8–11.8 s with them, 7.0–7.8 s without; 94 → 72 KB per target). An exporter's hot
/// path walks a few large tables, where huge pages save TLB misses: exporter_cpu_us_per_update
/// was 15–35 % higher without them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
mod local_discovery;
mod node;
mod reload;

use clap::{Parser, Subcommand};
use gnomon_config::{load_config, GnomonConfig};
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
    Simulator(Box<gnomon_simulator::SimulatorArgs>),
    /// Subscribe to gNMI targets and publish to the outputs (clustered with a `clustering` block).
    Collector(ConfigArg),
    /// Campaign for leadership and place targets on the collectors.
    Coordinator(ConfigArg),
    /// Read NATS and serve Prometheus metrics.
    Exporter(ConfigArg),
    /// Collector, coordinator and exporter in one process (without a `clustering` block: one
    /// instance subscribing to every target, with its inputs and outputs, as gnmic does).
    All(ConfigArg),
    /// gnmic's verb: the same as `all`.
    Subscribe(ConfigArg),
    /// Everything in one process with simulated devices and no external servers.
    Demo(demo::DemoArgs),
    /// Ask the leader to move this member's targets to the others and wait until they have
    /// (a Kubernetes preStop hook: a rolling restart then misses no sample).
    Drain(DrainArgs),
}

/// `gnomon drain`: the member is the config's `clustering.instance-name`.
#[derive(clap::Args, Clone, Debug)]
struct DrainArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Longest wait for the moves (then exit 1 naming what is still held).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
}

impl Command {
    fn service_name(&self) -> &'static str {
        match self {
            Command::Simulator(_) => "gnomon-simulator",
            Command::Collector(_) => "gnomon-collector",
            Command::Coordinator(_) => "gnomon-coordinator",
            Command::Exporter(_) => "gnomon-exporter",
            Command::All(_) | Command::Subscribe(_) => "gnomon",
            Command::Demo(_) => "gnomon-demo",
            Command::Drain(_) => "gnomon-drain",
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

/// Loads the configuration on a blocking thread, racing SIGINT/SIGTERM (`shutdown`): a
/// signal during the load stops the process at once (the load itself is bounded too:
/// document size and alias expansion).
async fn load_interruptibly(
    args: &ConfigArg,
    shutdown: &CancellationToken,
) -> Result<GnomonConfig, String> {
    let path = args.config.clone();
    let loading = tokio::task::spawn_blocking(move || load_config(path.as_deref()));
    tokio::select! {
        // The error is one line naming the key, the value and what was expected.
        loaded = loading => match loaded {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(format!("loading the configuration failed: {e}")),
        },
        _ = shutdown.cancelled() => {
            eprintln!("gnomon: interrupted while loading the configuration");
            // The blocking load may still run; do not wait for it.
            std::process::exit(130);
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let huge_pages = match cli.command {
        Command::Exporter(_) => Ok(()),
        _ => rustix::thread::disable_transparent_huge_pages(true),
    };
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    // The configuration is read before logging starts: its `debug` and `log-format` keys
    // shape the logs. Its warnings are logged once logging runs.
    let config = match &cli.command {
        Command::Collector(args)
        | Command::Coordinator(args)
        | Command::Exporter(args)
        | Command::All(args)
        | Command::Subscribe(args)
        | Command::Drain(DrainArgs { config: args, .. }) => {
            match load_interruptibly(args, &shutdown).await {
                Ok(config) => Some(config),
                Err(e) => {
                    eprintln!("gnomon: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Command::Simulator(_) | Command::Demo(_) => None,
    };
    let globals = config.as_ref().map(|c| &c.globals);
    if globals.is_some_and(|g| g.debug) && std::env::var_os("RUST_LOG").is_none() {
        // gnmic's `debug: true`: debug logs unless RUST_LOG says otherwise. Set before the
        // subscriber reads it, while no other code reads the environment.
        std::env::set_var("RUST_LOG", "debug");
    }
    let json_logs =
        cli.log_json || globals.is_some_and(|g| g.log_format.as_deref() == Some("json"));
    let _telemetry = match init_tracing(&TracingOptions {
        service_name: cli.command.service_name().to_string(),
        service_instance_id: config
            .as_ref()
            .and_then(|c| c.clustering.as_ref())
            .map(|c| c.instance_name.clone()),
        otlp_endpoint: None,
        json_logs,
    }) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("gnomon: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = huge_pages {
        tracing::debug!(%error, "transparent huge pages stay on for this process");
    }
    if let Some(config) = &config {
        for warning in &config.warnings {
            warning.log();
        }
        tracing::debug!(
            targets = config.targets.len(),
            subscriptions = config.subscriptions.len(),
            outputs = config.outputs.len(),
            inputs = config.inputs.len(),
            clustered = config.clustering.is_some(),
            "configuration loaded"
        );
    }
    // Install the metrics recorder before any service registers its counters.
    let _ = gnomon_telemetry::metrics_handle();
    let only = |collector, coordinator, exporter| Roles {
        collector,
        coordinator,
        exporter,
    };
    let config_path = match &cli.command {
        Command::Collector(args)
        | Command::Coordinator(args)
        | Command::Exporter(args)
        | Command::All(args)
        | Command::Subscribe(args) => Some(args.config.clone()),
        _ => None,
    };
    let reload: Option<reload::ConfigSource> = config_path.map(|path| {
        let source: reload::ConfigSource =
            std::sync::Arc::new(move || load_config(path.as_deref()).map_err(|e| e.to_string()));
        source
    });
    let run = |config: Option<GnomonConfig>, roles: Roles, shutdown: CancellationToken| async move {
        let deps = NodeDeps {
            reload,
            ..NodeDeps::default()
        };
        match config {
            Some(config) => run_node(config, roles, deps, shutdown).await,
            None => Err(anyhow::anyhow!("no configuration loaded")),
        }
    };
    let result = match cli.command {
        Command::Simulator(args) => gnomon_simulator::run(*args, shutdown).await,
        Command::Collector(_) => run(config, only(true, false, false), shutdown).await,
        Command::Coordinator(_) => run(config, only(false, true, false), shutdown).await,
        Command::Exporter(_) => run(config, only(false, false, true), shutdown).await,
        Command::All(_) | Command::Subscribe(_) => {
            run(config, only(true, true, true), shutdown).await
        }
        Command::Demo(args) => demo::run(args, shutdown).await,
        Command::Drain(args) => match config {
            Some(config) => node::drain(&config, args.timeout).await,
            None => Err(anyhow::anyhow!("no configuration loaded")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gnomon: {e:#}");
            ExitCode::FAILURE
        }
    }
}
