//! Health-driven failover inside one collector: a real nats-server stopped and started
//! again decides the NATS output's health; the member gives its target up, refuses claims
//! and marks its registration, then takes targets again (memory coordination).

use gnomon_collector::cluster_member::{ClaimError, ClusterMember, MemberAddress};
use gnomon_collector::CollectorHandle;
use gnomon_config::{load_config_with_env, ConfigFormat};
use gnomon_coordination::member_stats::OutputHealth;
use gnomon_coordination::{keys, Coordination, MemoryCoordination};
use gnomon_simulator::{Simulator, SimulatorArgs};
use gnomon_testkit::{eventually, NatsServer};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(1);

/// The member's registration tags, as the leader reads them.
async fn registered_tags(coordination: &dyn Coordination) -> Option<Vec<String>> {
    let services = coordination
        .services(&keys::api_service_name("c1"), &[])
        .await
        .ok()?;
    services.into_iter().next().map(|s| s.tags)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_gives_its_targets_up_while_nats_is_gone_and_takes_them_again() {
    let mut nats = NatsServer::start().unwrap();
    let mut args = SimulatorArgs::on_free_ports(1);
    args.update_rate = Duration::from_millis(100);
    let sim = Simulator::start(args).await.unwrap();
    let device = sim.device_addresses()[0];
    let yaml = format!(
        "insecure: true\ntargets:\n  t1:\n    address: {device}\nsubscriptions:\n  counters:\n    \
         paths: [/interfaces/interface/state/counters]\n    stream-mode: sample\n    sample-interval: 200ms\n\
         outputs:\n  nats-out:\n    type: nats\n    address: {}\n    format: proto\n",
        nats.address()
    );
    let config = load_config_with_env(&yaml, ConfigFormat::Yaml, &[]).unwrap();
    let collector = CollectorHandle::new(config).unwrap();
    let coordination = Arc::new(MemoryCoordination::new("m1"));
    let member = ClusterMember::new(collector.clone(), coordination.clone(), "c1", "m1");
    member
        .register(&MemberAddress {
            address: "127.0.0.1".into(),
            port: 7890,
            protocol: "http",
            tags: vec!["site=a".into()],
        })
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let failover = tokio::spawn(gnomon_collector::output_failover::run(
        member.clone(),
        TIMEOUT,
        stop.clone(),
    ));

    member.claim("t1").unwrap();
    let stats = eventually(
        "t1 collected and delivered",
        Duration::from_secs(15),
        || async {
            let stats = member.stats();
            (stats.targets_held == 1
                && stats.updates_in_per_second > 0.0
                && stats.updates_out_per_second > 0.0
                && stats.output_health == OutputHealth::Healthy)
                .then_some(stats)
        },
    )
    .await
    .unwrap();
    assert_eq!(stats.name, "m1");
    assert_eq!(stats.outputs.len(), 1);
    assert!(stats.outputs[0].healthy);
    assert!(collector.updates_delivered_total() > 0);

    // NATS goes away: the output fails, then after TIMEOUT the member gives t1 up.
    nats.stop();
    eventually(
        "the output reported failing",
        Duration::from_secs(10),
        || async {
            collector
                .output_health()
                .iter()
                .all(|o| !o.healthy)
                .then_some(())
        },
    )
    .await
    .unwrap();
    eventually("t1 given up", Duration::from_secs(10), || async {
        (member.is_unhealthy()
            && member.held() == 0
            && collector.running_targets().is_empty()
            && member.stats().output_health == OutputHealth::Unhealthy)
            .then_some(())
    })
    .await
    .unwrap();
    assert!(member.claimed().is_empty());
    let metrics = gnomon_telemetry::render_metrics();
    assert!(
        metrics.contains("gnomon_cluster_member_accepts_targets 0")
            && metrics.contains("gnomon_cluster_member_output_failovers_total 1"),
        "{metrics}"
    );
    assert_eq!(member.claim("t1"), Err(ClaimError::OutputsFailing));
    let tags = registered_tags(coordination.as_ref()).await.unwrap();
    assert_eq!(
        tags,
        [
            "cluster-name=c1",
            "instance-name=m1",
            "__protocol=http",
            "site=a",
            keys::UNHEALTHY_TAG
        ]
    );
    assert!(coordination
        .list(&format!("{}/", keys::targets_prefix("c1")))
        .await
        .unwrap()
        .is_empty());

    // NATS is back: once the output has been healthy for TIMEOUT, the member registers as
    // healthy and accepts claims again.
    nats.restart().unwrap();
    eventually("registered as healthy", Duration::from_secs(20), || async {
        let tags = registered_tags(coordination.as_ref()).await?;
        (!member.is_unhealthy() && !tags.iter().any(|t| t == keys::UNHEALTHY_TAG)).then_some(())
    })
    .await
    .unwrap();
    let metrics = gnomon_telemetry::render_metrics();
    assert!(
        metrics.contains("gnomon_cluster_member_accepts_targets 1"),
        "{metrics}"
    );
    member.claim("t1").unwrap();
    eventually("t1 held again", Duration::from_secs(10), || async {
        (member.held() == 1).then_some(())
    })
    .await
    .unwrap();

    stop.cancel();
    failover.await.unwrap();
    member.shutdown().await;
    collector.shutdown().await;
    sim.stop().await;
}
