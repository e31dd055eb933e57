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

/// An exporter whose only input is a memory bus and whose `gnmi-server` block is `yaml`
/// (parsed as gnmic's configuration file is).
async fn gnmi_exporter(instance: &str, yaml: &str) -> Exporter {
    let config =
        gnomon_config::load_config_from_str(yaml, gnomon_config::ConfigFormat::Yaml).unwrap();
    let mut settings = ExporterSettings {
        instance_name: instance.into(),
        cluster_name: "lab".into(),
        gnmi_server: config.gnmi_server.clone(),
        ..Default::default()
    };
    settings.inputs.insert(
        "in".into(),
        serde_yaml::from_str("format: proto\nsubject: telemetry.>").unwrap(),
    );
    let deps = ExporterDeps {
        bus: Some(std::sync::Arc::new(gnomon_bus::MemoryBus::new())),
        ..Default::default()
    };
    Exporter::start(settings, deps, CancellationToken::new())
        .await
        .unwrap()
}

async fn consul_observer(consul: &ConsulDouble) -> std::sync::Arc<dyn coordination::Coordination> {
    let mut config = LockerConfig::new(LockerType::Consul);
    config.address = Some(consul.address().to_string());
    coordination::connect(&config, "observer").await.unwrap()
}

/// The instances of `lab-gnmi-server` as (id, port, tags), once there are `n`.
async fn gnmi_services(
    observer: &std::sync::Arc<dyn coordination::Coordination>,
    n: usize,
) -> Vec<(String, u16, Vec<String>)> {
    eventually(
        &format!("{n} lab-gnmi-server instances"),
        Duration::from_secs(20),
        || async move {
            let mut found: Vec<_> = observer
                .services("lab-gnmi-server", &[])
                .await
                .ok()?
                .into_iter()
                .map(|s| (s.id, s.port, s.tags))
                .collect();
            found.sort();
            (found.len() == n).then_some(found)
        },
    )
    .await
    .unwrap()
}

/// gnmic's `gnmi-server.service-registration` with gnomon's `use-lock`: of two exporters
/// only the holder of `gnmic/lab/gnmi-server` is registered (as `<cluster>-gnmi-server`
/// with gnmic's tags and its gNMI port); when it stops, the other takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gnmi_server_is_registered_by_the_lock_holder_only() {
    let consul = ConsulDouble::start_with(DoubleConfig {
        session_ttl_min: Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let yaml = format!(
        "gnmi-server:\n  address: 127.0.0.1:0\n  service-registration:\n    address: {}\n    use-lock: true\n    tags: [east]\n",
        consul.address()
    );
    let first = gnmi_exporter("e1", &yaml).await;
    let second = gnmi_exporter("e2", &yaml).await;
    let observer = consul_observer(&consul).await;

    let registered = gnmi_services(&observer, 1).await;
    let (holder, spare) = if first.is_gnmi_server_registered() {
        (first, second)
    } else {
        (second, first)
    };
    assert!(!spare.is_gnmi_server_registered());
    let holder_name = if registered[0].0.ends_with("e1") {
        "e1"
    } else {
        "e2"
    };
    assert_eq!(registered[0].0, format!("lab-gnmi-server-{holder_name}"));
    assert_eq!(registered[0].1, holder.gnmi_server_addr().unwrap().port());
    assert_eq!(
        registered[0].2,
        [
            "east".to_string(),
            format!("gnmic-instance={holder_name}"),
            "gnmic-cluster=lab".to_string()
        ]
    );
    assert_eq!(
        observer
            .holder("gnmic/lab/gnmi-server")
            .await
            .unwrap()
            .as_deref(),
        Some(registered[0].0.as_str())
    );

    holder.stop().await;
    eventually("the spare to register", Duration::from_secs(20), || {
        let registered = spare.is_gnmi_server_registered();
        async move { registered.then_some(()) }
    })
    .await
    .unwrap();
    let after = gnmi_services(&observer, 1).await;
    assert_ne!(after[0].0, registered[0].0);
    assert_eq!(after[0].1, spare.gnmi_server_addr().unwrap().port());

    spare.stop().await;
    gnmi_services(&observer, 0).await;
    observer.shutdown().await;
}

/// Without `use-lock` every exporter's gNMI server is registered (gnmic's behaviour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_use_lock_every_gnmi_server_is_registered() {
    let consul = ConsulDouble::start().await.unwrap();
    let yaml = format!(
        "gnmi-server:\n  address: 127.0.0.1:0\n  service-registration:\n    address: {}\n    name: telemetry-gnmi\n",
        consul.address()
    );
    let first = gnmi_exporter("e1", &yaml).await;
    let second = gnmi_exporter("e2", &yaml).await;
    let observer = consul_observer(&consul).await;
    let found = eventually(
        "two telemetry-gnmi instances",
        Duration::from_secs(20),
        || {
            let observer = observer.clone();
            async move {
                let mut ids: Vec<String> = observer
                    .services("telemetry-gnmi", &[])
                    .await
                    .ok()?
                    .into_iter()
                    .map(|s| s.id)
                    .collect();
                ids.sort();
                (ids.len() == 2).then_some(ids)
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(found, ["telemetry-gnmi-e1", "telemetry-gnmi-e2"]);
    first.stop().await;
    second.stop().await;
    observer.shutdown().await;
}

/// Sharded outputs with Consul as the cluster store: each holder is a Consul service
/// instance tagged `shard=<i>` (what Consul SD users relabel on), one per shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_holders_register_in_consul_with_their_shard_tag() {
    let consul = ConsulDouble::start_with(DoubleConfig {
        session_ttl_min: Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let bus = std::sync::Arc::new(gnomon_bus::MemoryBus::new());
    let mut exporters = Vec::new();
    for instance in ["s1", "s2", "s3"] {
        let mut locker = LockerConfig::new(LockerType::Consul);
        locker.address = Some(consul.address().to_string());
        locker.session_ttl = Duration::from_secs(2);
        locker.delay = Duration::ZERO;
        let mut settings = ExporterSettings {
            instance_name: instance.into(),
            cluster_name: "lab".into(),
            locker: Some(locker),
            ..Default::default()
        };
        settings.inputs.insert(
            "in".into(),
            serde_yaml::from_str("subject: telemetry.>").unwrap(),
        );
        settings.outputs.insert(
            "prom".into(),
            serde_yaml::from_str(
                "listen: 127.0.0.1:0\nservice-registration:\n  name: sharded\n  use-lock: true\n  shards: 2",
            )
            .unwrap(),
        );
        let deps = ExporterDeps {
            bus: Some(bus.clone()),
            ..Default::default()
        };
        exporters.push(
            Exporter::start(settings, deps, CancellationToken::new())
                .await
                .unwrap(),
        );
    }
    let observer = consul_observer(&consul).await;
    let tags = eventually(
        "two shard holders in Consul",
        Duration::from_secs(20),
        || {
            let observer = observer.clone();
            async move {
                let services = observer.services("sharded", &[]).await.ok()?;
                let mut shards: Vec<String> = services
                    .iter()
                    .flat_map(|s| s.tags.iter().filter(|t| t.starts_with("shard=")).cloned())
                    .collect();
                shards.sort();
                (services.len() == 2 && shards == ["shard=0", "shard=1"]).then_some(services)
            }
        },
    )
    .await
    .unwrap();
    let held: Vec<Option<u32>> = exporters.iter().map(|e| e.held_shard("prom")).collect();
    assert_eq!(held.iter().filter(|h| h.is_none()).count(), 1, "{held:?}");
    for service in &tags {
        assert!(
            service.tags.contains(&"gnmic-cluster=lab".to_string()),
            "{service:?}"
        );
    }
    for exporter in exporters {
        exporter.stop().await;
    }
    observer.shutdown().await;
}
