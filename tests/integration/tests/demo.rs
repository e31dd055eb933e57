//! `gnomon demo` (the README's first command): simulated counters reach `/metrics` with no
//! external server, and the cluster API shows the one-member cluster.

use gnomon_testkit::{free_port, gnomon_binary, ChildProcess};
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test]
async fn demo_serves_simulated_counters_and_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (api, metrics) = (free_port(), free_port());
    let mut cmd = Command::new(gnomon_binary().unwrap());
    cmd.args([
        "demo",
        "--api",
        &format!("127.0.0.1:{api}"),
        "--metrics-listen",
        &format!("127.0.0.1:{metrics}"),
    ]);
    let mut demo = ChildProcess::spawn("demo", cmd, dir.path()).unwrap();
    let http = gnomon_testkit::http_client_builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut last = String::new();
    let counters = loop {
        if let Ok(response) = http
            .get(format!("http://127.0.0.1:{metrics}/metrics"))
            .send()
            .await
        {
            last = response.text().await.unwrap_or_default();
            let lines: Vec<&str> = last
                .lines()
                .filter(|l| l.starts_with("interfaces_interface_state_counters_in_octets{"))
                .collect();
            // The target status travels apart from the data: wait for both.
            if lines.len() >= 6 && last.contains("gnomon_target_up{target=\"device1\"} 1") {
                break lines.len();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no counters (or no gnomon_target_up 1 for device1) on /metrics:\n{last}\n{}",
            demo.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("{counters} in-octets series after {:?}", started.elapsed());

    let cluster: serde_json::Value = http
        .get(format!("http://127.0.0.1:{api}/api/v1/cluster"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cluster["leader"], "demo");
    assert_eq!(cluster["number-of-locked-targets"], 6);
    let targets: serde_json::Value = http
        .get(format!("http://127.0.0.1:{api}/api/v1/targets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(targets.as_object().map(|t| t.len()), Some(6));

    assert_eq!(
        demo.terminate(Duration::from_secs(10)),
        Some(0),
        "the demo exits cleanly on SIGTERM:\n{}",
        demo.log()
    );
}
