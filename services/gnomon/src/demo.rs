//! `gnomon demo`: the whole pipeline in one process with no external servers — simulated
//! devices → collector → in-process bus → exporter → Prometheus exposition — clustered
//! through in-process (memory) coordination.

use crate::node::{run_node, NodeDeps, Roles};
use anyhow::Context;
use gnomon_bus::MemoryBus;
use gnomon_config::{load_config_from_str, ConfigFormat};
use gnomon_coordination::{self as coordination, LockerConfig, LockerType};
use gnomon_simulator::{Simulator, SimulatorArgs};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Options of `gnomon demo`.
#[derive(clap::Args, Clone, Debug)]
pub struct DemoArgs {
    /// REST API address (targets, cluster, process metrics).
    #[arg(long, default_value = "127.0.0.1:7890")]
    pub api: String,
    /// Prometheus exposition address of the exporter.
    #[arg(long, default_value = "127.0.0.1:9804")]
    pub metrics_listen: String,
    /// Number of simulated devices.
    #[arg(long, default_value_t = 6)]
    pub devices: u32,
}

/// The demo's configuration in gnmic's format, for devices at `addresses`.
fn demo_config(args: &DemoArgs, addresses: &[std::net::SocketAddr]) -> String {
    let mut text = String::from("insecure: true\nencoding: json_ietf\ntargets:\n");
    for (i, address) in addresses.iter().enumerate() {
        text.push_str(&format!("  device{}:\n    address: {address}\n", i + 1));
    }
    text.push_str(&format!(
        r#"subscriptions:
  interfaces:
    paths: [/interfaces/interface/state/counters]
    stream-mode: sample
    sample-interval: 1s
    outputs: [bus]
  oper-status:
    paths: [/interfaces/interface/state/oper-status]
    stream-mode: on-change
    outputs: [bus]
api: "{api}"
clustering:
  cluster-name: demo
  instance-name: demo
  leader-wait-timer: 100ms
  targets-watch-timer: 5s
  locker: {{type: memory}}
outputs:
  bus: {{type: nats, subject-prefix: telemetry, format: proto}}
  prom: {{type: prometheus, listen: "{listen}", path: /metrics, strings-as-labels: true}}
inputs:
  from-bus: {{type: nats, subject: "telemetry.>", format: proto, outputs: [prom]}}
"#,
        api = args.api,
        listen = args.metrics_listen
    ));
    text
}

pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut simulator_args = SimulatorArgs::on_free_ports(args.devices.max(1));
    simulator_args.interfaces = 4;
    simulator_args.update_rate = Duration::from_secs(1);
    let simulator = Simulator::start(simulator_args)
        .await
        .context("starting the simulated devices")?;
    let config = load_config_from_str(
        &demo_config(&args, simulator.device_addresses()),
        ConfigFormat::Yaml,
    )
    .map_err(|e| anyhow::anyhow!("demo configuration: {e}"))?;
    let bus = Arc::new(MemoryBus::new());
    let coordination =
        coordination::connect(&LockerConfig::new(LockerType::Memory), "demo").await?;
    let deps = NodeDeps {
        bus: Some(bus),
        coordination: Some(coordination),
        reload: None,
    };
    let roles = Roles {
        collector: true,
        coordinator: true,
        exporter: true,
    };
    let node = tokio::spawn(run_node(config, roles, deps, shutdown.clone()));
    println!(
        "gnomon demo: {} simulated devices, collector, coordinator and exporter in one process",
        args.devices
    );
    println!(
        "  Prometheus metrics:  http://{}/metrics",
        args.metrics_listen
    );
    println!("  targets:             http://{}/api/v1/targets", args.api);
    println!("  cluster:             http://{}/api/v1/cluster", args.api);
    println!("  process metrics:     http://{}/metrics", args.api);
    println!("Press Ctrl-C to stop.");
    let result = node.await.context("demo task")?;
    simulator.stop().await;
    result
}
