//! gnmic's most common file: one instance, no `clustering` block, a NATS output feeding a
//! NATS input that feeds a Prometheus output (gnmic's single-instance examples). Under
//! `gnomon all` and under gnmic's own verb `gnomon subscribe`, it serves the simulator's
//! counters, and promtool accepts the scrape.

use gnomon_testkit::{
    eventually, free_port, gnomon_binary, promtool_check, start_simulator, ChildProcess,
    NatsServer, SimulatorSpec,
};
use std::process::Command;
use std::time::Duration;

async fn serves_counters_under(verb: &str) {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start().unwrap();
    let http = gnomon_testkit::http_client_builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let spec = SimulatorSpec::new(1, 2);
    let timeout = Duration::from_secs(20);
    let sim_a = start_simulator(dir.path(), "sim-a", &spec, timeout)
        .await
        .unwrap();
    let sim_b = start_simulator(dir.path(), "sim-b", &spec, timeout)
        .await
        .unwrap();
    let (device_a, device_b) = (sim_a.ports()[0], sim_b.ports()[0]);

    let listen = format!("127.0.0.1:{}", free_port());
    let config = format!(
        r#"
username: admin
password: admin
insecure: true
encoding: json_ietf
targets:
  leaf1:
    address: 127.0.0.1:{device_a}
  leaf2:
    address: 127.0.0.1:{device_b}
subscriptions:
  port_stats:
    paths:
      - /interfaces/interface/state/counters
    stream-mode: sample
    sample-interval: 1s
outputs:
  nats-output:
    type: nats
    address: {nats}
    subject-prefix: telemetry
    format: event
  prom-output:
    type: prometheus
    listen: "{listen}"
inputs:
  nats-input:
    type: nats
    address: {nats}
    subject: telemetry.>
    format: event
    outputs:
      - prom-output
"#,
        nats = nats.address()
    );
    let path = dir.path().join("gnmic.yaml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(gnomon_binary().unwrap());
    cmd.args([verb, "--config"]).arg(&path);
    let gnomon = ChildProcess::spawn(verb, cmd, dir.path()).unwrap();
    let scrape = eventually(
        "both targets' counters",
        Duration::from_secs(30),
        || async {
            let text = http
                .get(format!("http://{listen}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            ["leaf1", "leaf2"]
                .iter()
                .all(|t| {
                    text.lines().any(|l| {
                        l.starts_with("interfaces_interface_state_counters_in_octets{")
                            && l.contains(&format!("source=\"{t}\""))
                    })
                })
                .then_some(text)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gnomon.log()));
    promtool_check(&scrape).unwrap();
    // Not clustered, so nothing was elected or locked.
    assert!(!gnomon.log().contains("leading"), "{}", gnomon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gnmic_single_instance_file_runs_under_all() {
    serves_counters_under("all").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gnmic_single_instance_file_runs_under_subscribe() {
    serves_counters_under("subscribe").await;
}
