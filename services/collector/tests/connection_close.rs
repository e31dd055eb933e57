//! What a device sees when the collector stops or replaces a target's run: the old
//! connection is closed before stop returns, and a replacing run dials only once the old
//! connection is closed — never two connections of ours at once.
//!
//! Its own test binary on purpose: it counts the host's client sockets to the device
//! (/proc/net/tcp), and a test in the same process spawning a child (nats-server, Python)
//! duplicates every open descriptor into the child until it execs, which keeps a socket
//! we have closed open for that moment. Nothing here spawns a process.

use gnomon_collector::CollectorHandle;
use gnomon_config::{load_config_with_env, ConfigFormat, GnomonConfig};
use gnomon_simulator::{Simulator, SimulatorArgs};
use gnomon_testkit::eventually;
use std::net::SocketAddr;
use std::time::Duration;

fn load(yaml: &str) -> GnomonConfig {
    load_config_with_env(yaml, ConfigFormat::Yaml, &[])
        .unwrap_or_else(|e| panic!("config: {e}\n{yaml}"))
}

/// Established client connections on this host to `peer` (from /proc/net/tcp: state 01).
fn established_to(peer: SocketAddr) -> usize {
    let port = format!("{:04X}", peer.port());
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3
                && fields[2].ends_with(&format!(":{port}"))
                && fields[2].starts_with("0100007F")
                && fields[3] == "01"
        })
        .count()
}

/// One in-process device whose counters change every 100 ms, and a collector configured
/// for it (target `dev`: a sampled and an on-change subscription), not started.
async fn device_and_collector() -> (Simulator, SocketAddr, CollectorHandle) {
    let mut args = SimulatorArgs::on_free_ports(1);
    args.update_rate = Duration::from_millis(100);
    let sim = Simulator::start(args).await.expect("simulator starts");
    let device = sim.device_addresses()[0];
    let yaml = format!(
        r#"
insecure: true
targets:
  dev:
    address: {device}
subscriptions:
  counters:
    paths: ["/interfaces/interface/state/counters"]
    stream-mode: sample
    sample-interval: 100ms
  status:
    paths: ["/interfaces/interface/state/oper-status"]
    stream-mode: on-change
"#
    );
    let collector = CollectorHandle::new(load(&yaml)).unwrap();
    (sim, device, collector)
}

/// The chaos run's two-subscriber moment: a member stopped a target and released its lock
/// while its socket to the device was still open, so the next owner could subscribe before
/// the device saw the old stream end. Stopping now returns only after the socket is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_target_has_closed_its_connection_when_stop_returns() {
    let (sim, device, collector) = device_and_collector().await;
    for round in 0..5 {
        collector.start_target("dev", None).unwrap();
        eventually("both streams open", Duration::from_secs(10), || async {
            let stats = sim.stats();
            (stats.targets.get(&device.to_string())?.subscriptions == 2).then_some(())
        })
        .await
        .unwrap();
        assert_eq!(established_to(device), 1, "round {round}");
        assert!(collector.stop_target("dev").await);
        assert_eq!(
            established_to(device),
            0,
            "round {round}: the connection was still open when stop returned"
        );
    }
    collector.shutdown().await;
    sim.stop().await;
}

/// A target started again while it runs (a repeated claim or start) replaces its run: the
/// new run dials only once the old run's connection is closed, so the device never holds
/// two of our connections at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_run_dials_only_after_the_old_connection_closed() {
    use gnomon_collector::TargetState;
    let (sim, device, collector) = device_and_collector().await;
    collector.start_target("dev", None).unwrap();
    let mut most = 0;
    for round in 0..5 {
        eventually("the stream open", Duration::from_secs(10), || async {
            (established_to(device) == 1).then_some(())
        })
        .await
        .unwrap();
        collector.start_target("dev", None).unwrap();
        // Sample the client sockets until the new run is connected.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let open = established_to(device);
            most = most.max(open);
            let streaming = collector
                .target("dev")
                .is_some_and(|t| t.status.state == TargetState::Streaming);
            if open == 1 && streaming {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: not connected again"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(most, 1, "the device saw two of our connections at once");
    collector.shutdown().await;
    sim.stop().await;
}
