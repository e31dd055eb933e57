//! Issue 6 end to end on real processes: simulator → `gnomon collector` → nats-server →
//! two `gnomon exporter`s sharing the Prometheus use-lock in etcd → a real Prometheus that
//! finds the registered exporter through http_sd. Then the lock holder is SIGKILLed.

use gnomon_testkit::{
    free_port, gnomon_binary, start_simulator, wait_for_tcp, ChildProcess, EtcdServer, NatsServer,
    PrometheusServer, SimulatorSpec,
};
use std::process::Command;
use std::time::{Duration, Instant};

struct Exporter {
    process: ChildProcess,
    listen: String,
}

fn spawn_gnomon(
    dir: &std::path::Path,
    name: &str,
    service: &str,
    config: &str,
    api_port: u16,
) -> ChildProcess {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(gnomon_binary().unwrap());
    cmd.args([service, "--config"])
        .arg(&path)
        .env("GNMIC_API", format!("127.0.0.1:{api_port}"));
    ChildProcess::spawn(name, cmd, dir).unwrap()
}

async fn sd_targets(http: &reqwest::Client, exporter: &Exporter) -> Option<Vec<String>> {
    let body: serde_json::Value = http
        .get(format!("http://{}/sd", exporter.listen))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(
        body.as_array()?
            .iter()
            .flat_map(|group| group["targets"].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_to_prometheus_through_the_registered_exporter() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdServer::start().unwrap();
    let nats = NatsServer::start().unwrap();
    let http = gnomon_testkit::http_client_builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();

    let simulator = start_simulator(
        dir.path(),
        "simulator",
        &SimulatorSpec::new(2, 2),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let devices = simulator.devices.clone();

    let mut collector_config = String::from("insecure: true\nencoding: proto\ntargets:\n");
    for (i, device) in devices.iter().enumerate() {
        collector_config.push_str(&format!("  dev{i}:\n    address: {device}\n"));
    }
    collector_config.push_str(&format!(
        "subscriptions:\n  counters:\n    paths: [/interfaces/interface/state/counters]\n    stream-mode: sample\n    sample-interval: 1s\noutputs:\n  nats-out: {{type: nats, address: \"{}\", subject-prefix: telemetry, format: proto}}\n",
        nats.address()
    ));
    let _collector = spawn_gnomon(
        dir.path(),
        "collector",
        "collector",
        &collector_config,
        free_port(),
    );

    let mut exporters = Vec::new();
    for name in ["e1", "e2"] {
        let listen = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "clustering:\n  cluster-name: e2e\n  instance-name: {name}\n  locker: {{type: etcd, address: \"{}\", session-ttl: 2s, delay: 0s}}\noutputs:\n  prom:\n    type: prometheus\n    listen: \"{listen}\"\n    service-registration: {{name: gnomon-prometheus, use-lock: true}}\ninputs:\n  nats-in: {{type: nats, address: \"{}\", subject: \"telemetry.>\", format: proto, outputs: [prom]}}\n",
            etcd.address(),
            nats.address()
        );
        let process = spawn_gnomon(dir.path(), name, "exporter", &config, free_port());
        wait_for_tcp(&listen, Duration::from_secs(20)).unwrap();
        exporters.push(Exporter { process, listen });
    }

    // Exactly one exporter is registered; both list it on /sd.
    let started = Instant::now();
    let registered = loop {
        let lists = [
            sd_targets(&http, &exporters[0]).await,
            sd_targets(&http, &exporters[1]).await,
        ];
        if let [Some(a), Some(b)] = &lists {
            if a.len() == 1 && a == b {
                break a[0].clone();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no single registered exporter: {lists:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let holder = exporters
        .iter()
        .position(|e| e.listen == registered)
        .expect("the registered exporter is one of ours");

    let prometheus = PrometheusServer::start(&format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: gnomon\n    honor_labels: true\n    http_sd_configs:\n      - url: http://{}/sd\n        refresh_interval: 1s\n      - url: http://{}/sd\n        refresh_interval: 1s\n",
        exporters[0].listen, exporters[1].listen
    ))
    .unwrap();
    let query = |q: &'static str| prometheus.query(&http, q);
    let started = Instant::now();
    let samples = loop {
        if let Some(result) = query("interfaces_interface_state_counters_in_octets").await {
            if result.len() >= 4 {
                break result;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "Prometheus has no simulator counters"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for sample in &samples {
        let value: f64 = sample["value"][1].as_str().unwrap().parse().unwrap();
        assert!(value > 0.0, "{sample}");
        assert_eq!(
            sample["metric"]["instance"],
            registered.as_str(),
            "scraped the registered exporter"
        );
    }

    // promtool accepts the exposition.
    let scrape = http
        .get(format!("http://{registered}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    gnomon_testkit::promtool_check(&scrape).unwrap();

    // SIGKILL the lock holder: the other exporter registers within TTL + 2 s.
    exporters[holder].process.kill();
    let survivor = &exporters[1 - holder];
    let killed = Instant::now();
    loop {
        if sd_targets(&http, survivor)
            .await
            .is_some_and(|t| t == vec![survivor.listen.clone()])
        {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "the survivor did not register"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "survivor registered {:?} after the holder was killed",
        killed.elapsed()
    );
}
