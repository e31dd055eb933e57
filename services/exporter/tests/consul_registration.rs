//! gnmic-style standalone registration: no clustering locker, the `service-registration`
//! block's `address` names Consul (here the Consul test double).

use gnomon_consul_double::{ConsulDouble, DoubleConfig};
use gnomon_coordination::{self as coordination, LockerConfig, LockerType};
use gnomon_exporter::{Exporter, ExporterDeps, ExporterSettings};
use gnomon_testkit::{eventually, NatsServer};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_in_consul_from_the_registration_block() {
    let consul = ConsulDouble::start_with(DoubleConfig {
        session_ttl_min: Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let nats = NatsServer::start().unwrap();
    let mut settings = ExporterSettings {
        instance_name: "c1".into(),
        cluster_name: "lab".into(),
        ..Default::default()
    };
    settings.inputs.insert(
        "in".into(),
        serde_yaml::from_str(&format!(
            "address: {}\nsubject: telemetry.>",
            nats.address()
        ))
        .unwrap(),
    );
    settings.outputs.insert(
        "prom".into(),
        serde_yaml::from_str(&format!(
            "listen: 127.0.0.1:0\nservice-registration:\n  address: {}\n  use-lock: true\n  tags: [lab-a]",
            consul.address()
        ))
        .unwrap(),
    );
    let exporter = Exporter::start(settings, ExporterDeps::default(), CancellationToken::new())
        .await
        .unwrap();
    let addr = exporter.listen_addr("prom").unwrap();
    eventually("registered in Consul", Duration::from_secs(10), || {
        let registered = exporter.is_registered("prom");
        async move { registered.then_some(()) }
    })
    .await
    .unwrap();

    let groups: serde_json::Value = eventually(
        "/sd to list the exporter",
        Duration::from_secs(10),
        || async move {
            let groups: serde_json::Value = gnomon_testkit::http_get(format!("http://{addr}/sd"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (groups.as_array()?.len() == 1).then_some(groups)
        },
    )
    .await
    .unwrap();
    assert_eq!(groups[0]["targets"], serde_json::json!([addr.to_string()]));
    assert_eq!(
        groups[0]["labels"]["__meta_gnomon_service_id"],
        "prometheus-prom-c1"
    );
    assert_eq!(
        groups[0]["labels"]["__meta_gnomon_tags"],
        ",lab-a,gnmic-instance=c1,gnmic-cluster=lab,"
    );

    let mut observer_config = LockerConfig::new(LockerType::Consul);
    observer_config.address = Some(consul.address().to_string());
    let observer = coordination::connect(&observer_config, "observer")
        .await
        .unwrap();
    assert_eq!(
        observer
            .holder("gnmic/lab/prometheus-output")
            .await
            .unwrap()
            .as_deref(),
        Some("prometheus-prom-c1")
    );

    // A graceful stop deregisters and frees the lock.
    exporter.stop().await;
    eventually("deregistered", Duration::from_secs(10), || {
        let observer = observer.clone();
        async move {
            let services = observer.services("prometheus-prom", &[]).await.ok()?;
            let holder = observer.holder("gnmic/lab/prometheus-output").await.ok()?;
            (services.is_empty() && holder.is_none()).then_some(())
        }
    })
    .await
    .unwrap();
    observer.shutdown().await;
}
