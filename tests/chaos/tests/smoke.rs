//! The chaos run's two-minute smoke: the real cluster (etcd, nats-server, the simulator, three
//! `gnomon all` members, two exporters) is disturbed for two minutes — a member SIGKILLed every
//! 20 s and restarted, nats-server and etcd restarted once — and must keep issue 8's safety
//! goals: no target ever has two subscribers, no exporter accepts stale data, no process
//! panics, and every target is collected again afterwards. Silence is bounded loosely here —
//! three times the failover bound (session-ttl + 2 s): these are debug builds sharing two
//! cores with the whole cluster, so the strict bound is a speed goal, held by the release
//! build's `scripts/chaos` run and `RESULT failover_p99_s`; a silence past the loose bound
//! means a target was lost, not slow. The run prints its gap and failover figures.

use gnomon_chaos::{run, ChaosConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_minutes_of_chaos_keep_the_safety_goals() {
    let config = ChaosConfig {
        duration: Duration::from_secs(120),
        devices: 300,
        ..ChaosConfig::default()
    };
    let report = run(&config).await.unwrap();
    for line in report.details().iter().chain(&report.result_lines()) {
        println!("{line}");
    }
    assert_eq!(report.kills.len(), 5, "a member is killed every 20 s");
    assert!(report.nats_outage.is_some() && report.etcd_outage.is_some());
    let missed = report.missed_goals_with_gap_bound(report.failover_bound() * 3);
    assert!(
        missed.is_empty(),
        "missed goals: {missed:#?}\n{}",
        report.details().join("\n")
    );
}
