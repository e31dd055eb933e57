//! Sharded exporters in one process (in-memory store and bus, so the assertions are about
//! the sharding, not the servers): each target's series on exactly one shard holder, the
//! union on all of them, `/sd` naming the shards, a spare taking over a crashed holder's
//! shard, targets added later subscribed by their shard's holder, and the settings a
//! sharded output refuses.

use gnomon_bus::{Bus, BusMessage, MemoryBus, MessageHeaders};
use gnomon_config::nats_input::NatsInputConfig;
use gnomon_config::prometheus_output::PrometheusOutputConfig;
use gnomon_coordination::{
    keys, Coordination, LockerConfig, LockerType, MemoryCoordination, MemoryStore, TargetStore,
};
use gnomon_exporter::shard::shard_of;
use gnomon_exporter::{Exporter, ExporterDeps, ExporterSettings};
use gnomon_testkit::eventually;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const SHARDS: u32 = 2;
const TTL: Duration = Duration::from_secs(2);

fn memory_coordination(store: &MemoryStore, instance: &str) -> MemoryCoordination {
    let mut locker = LockerConfig::new(LockerType::Memory);
    locker.session_ttl = TTL;
    locker.delay = Duration::ZERO;
    locker.retry_timer = Duration::from_millis(200);
    MemoryCoordination::with_store(store.clone(), &locker, instance)
}

fn settings(instance: &str, input_extra: &str, registration: &str) -> ExporterSettings {
    let mut settings = ExporterSettings {
        instance_name: instance.to_string(),
        cluster_name: "lab".to_string(),
        ..Default::default()
    };
    let input: NatsInputConfig =
        serde_yaml::from_str(&format!("subject: telemetry.>\n{input_extra}")).unwrap();
    settings.inputs.insert("in".into(), input);
    let output: PrometheusOutputConfig = serde_yaml::from_str(&format!(
        "listen: 127.0.0.1:0\nservice-registration:\n{registration}"
    ))
    .unwrap();
    settings.outputs.insert("prom".into(), output);
    settings
}

const SHARDED: &str = "  use-lock: true\n  shards: 2\n";

/// The `source` labels in an exposition.
fn sources(text: &[u8]) -> BTreeSet<String> {
    let text = String::from_utf8_lossy(text);
    text.split("source=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

/// A collector stand-in: holds the target locks and publishes every target's counter (the
/// publishing round's number) every 100 ms with its fencing token, as collectors do.
struct Collector {
    stop: CancellationToken,
}

impl Collector {
    async fn start(
        store: &MemoryStore,
        bus: Arc<MemoryBus>,
        targets: Arc<std::sync::Mutex<Vec<String>>>,
    ) -> (Self, Arc<MemoryCoordination>) {
        let coordination = Arc::new(memory_coordination(store, "collector"));
        let stop = CancellationToken::new();
        let publishing = stop.clone();
        let locks_of = coordination.clone();
        tokio::spawn(async move {
            let mut tokens: BTreeMap<String, u64> = BTreeMap::new();
            let mut guards = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut round = 0u64;
            loop {
                tokio::select! {
                    _ = publishing.cancelled() => return,
                    _ = tick.tick() => {}
                }
                round += 1;
                let names = targets.lock().unwrap().clone();
                for target in names {
                    if !tokens.contains_key(&target) {
                        let guard = locks_of
                            .acquire(&keys::target("lab", &target), "collector")
                            .await
                            .unwrap()
                            .unwrap();
                        tokens.insert(target.clone(), guard.fencing_token());
                        guards.push(guard);
                    }
                    let payload = format!(
                        r#"[{{"name":"stats","timestamp":1700000000000000000,"tags":{{"source":"{target}","subscription-name":"stats"}},"values":{{"in-octets":"{round}"}}}}]"#
                    );
                    bus.publish(BusMessage {
                        subject: format!("telemetry.{target}.stats"),
                        headers: MessageHeaders {
                            target: Some(target.clone()),
                            subscription: Some("stats".into()),
                            fencing_token: tokens.get(&target).copied(),
                            traceparent: None,
                        },
                        payload: payload.into(),
                    })
                    .await
                    .unwrap();
                }
            }
        });
        (Self { stop }, coordination)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Per exporter: the sources it serves.
fn served(exporters: &[Option<Exporter>]) -> Vec<BTreeSet<String>> {
    exporters
        .iter()
        .map(|e| match e {
            Some(e) => sources(&e.output("prom").unwrap().render()),
            None => BTreeSet::new(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_target_is_served_by_its_shard_holder_and_a_spare_takes_over() {
    let store = MemoryStore::new();
    let bus = Arc::new(MemoryBus::new());
    let names: Vec<String> = (0..40).map(|i| format!("dev{i}")).collect();
    let admin: Arc<dyn Coordination> = Arc::new(memory_coordination(&store, "admin"));
    let target_store = TargetStore::new(admin.clone(), "lab");
    for name in &names {
        target_store
            .put(&serde_json::json!({"name": name, "address": "127.0.0.1:1"}))
            .await
            .unwrap();
    }
    let published = Arc::new(std::sync::Mutex::new(names.clone()));
    let (_collector, _) = Collector::start(&store, bus.clone(), published.clone()).await;

    let mut exporters = Vec::new();
    let mut coordinations = Vec::new();
    for instance in ["x1", "x2", "x3"] {
        let coordination = Arc::new(memory_coordination(&store, instance));
        let deps = ExporterDeps {
            coordination: Some(coordination.clone()),
            bus: Some(bus.clone()),
        };
        let exporter = Exporter::start(
            settings(instance, "", SHARDED),
            deps,
            CancellationToken::new(),
        )
        .await
        .unwrap();
        exporters.push(Some(exporter));
        coordinations.push(coordination);
    }
    let expected = |shard: u32| -> BTreeSet<String> {
        names
            .iter()
            .filter(|n| shard_of(n, SHARDS) == shard)
            .cloned()
            .collect()
    };
    assert!(!expected(0).is_empty() && !expected(1).is_empty());

    // Two holders of distinct shards, one spare; each holder serves exactly its shard.
    let holders = eventually(
        "both shards served, each completely",
        Duration::from_secs(20),
        || {
            let held: Vec<Option<u32>> = exporters
                .iter()
                .map(|e| e.as_ref().unwrap().held_shard("prom"))
                .collect();
            let served = served(&exporters);
            let ok = held.iter().filter(|h| h.is_none()).count() == 1
                && (0..3).all(|i| match held[i] {
                    Some(shard) => served[i] == expected(shard),
                    None => served[i].is_empty(),
                });
            async move { ok.then_some(held) }
        },
    )
    .await
    .unwrap();
    let mut shards: Vec<u32> = holders.iter().flatten().copied().collect();
    shards.sort();
    assert_eq!(shards, [0, 1]);
    let union: BTreeSet<String> = served(&exporters).into_iter().flatten().collect();
    assert_eq!(union, names.iter().cloned().collect::<BTreeSet<_>>());
    let spare = holders.iter().position(Option::is_none).unwrap();

    // /sd (asked of the spare) lists both holders with their shard.
    let spare_addr = exporters[spare]
        .as_ref()
        .unwrap()
        .listen_addr("prom")
        .unwrap();
    let listed = eventually(
        "/sd lists both shards",
        Duration::from_secs(10),
        || async move {
            let groups: serde_json::Value =
                gnomon_testkit::http_get(format!("http://{spare_addr}/sd"))
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
            let mut shards: Vec<String> = groups
                .as_array()?
                .iter()
                .filter_map(|g| {
                    g["labels"]["__meta_gnomon_shard"]
                        .as_str()
                        .map(str::to_string)
                })
                .collect();
            shards.sort();
            (shards == ["0", "1"]).then_some(groups)
        },
    )
    .await
    .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(
        listed.to_string().contains(",shard="),
        "the tag is listed too: {listed}"
    );

    // A target added later is subscribed by its shard's holder only.
    let late = "late-device".to_string();
    target_store
        .put(&serde_json::json!({"name": late}))
        .await
        .unwrap();
    published.lock().unwrap().push(late.clone());
    let late_holder = holders
        .iter()
        .position(|h| *h == Some(shard_of(&late, SHARDS)))
        .unwrap();
    eventually("the late target served", Duration::from_secs(10), || {
        let served = served(&exporters);
        let ok = served[late_holder].contains(&late)
            && served.iter().filter(|s| s.contains(&late)).count() == 1;
        async move { ok.then_some(()) }
    })
    .await
    .unwrap();

    // Crash shard 0's holder (no release, no deregistration): the spare takes shard 0.
    let victim = holders.iter().position(|h| *h == Some(0)).unwrap();
    coordinations[victim].disconnect();
    exporters[victim].take().unwrap().abort();
    let killed_at = Instant::now();
    let mut shard0 = expected(0);
    if shard_of(&late, SHARDS) == 0 {
        shard0.insert(late.clone());
    }
    eventually("the spare serves shard 0", Duration::from_secs(20), || {
        let spare = exporters[spare].as_ref().unwrap();
        let ok = spare.held_shard("prom") == Some(0)
            && sources(&spare.output("prom").unwrap().render()) == shard0;
        async move { ok.then_some(()) }
    })
    .await
    .unwrap();
    let took = killed_at.elapsed();
    eprintln!(
        "takeover of shard 0 took {took:?} (session TTL {TTL:?} + 2 s = {:?})",
        TTL + Duration::from_secs(2)
    );
    // Subscribed per shard: no exporter was even handed another shard's messages.
    for exporter in exporters.iter().flatten() {
        assert_eq!(exporter.stats().dropped_total(), 0);
        assert!(exporter.stats().messages_total() > 0);
    }
    for exporter in exporters.into_iter().flatten() {
        exporter.stop().await;
    }
}

#[tokio::test]
async fn a_sharded_output_refuses_what_it_cannot_shard() {
    let error = |settings: ExporterSettings| settings.validate().unwrap_err().to_string();
    let jetstream = {
        let mut s = settings("x", "", SHARDED);
        let input = s.inputs.get_mut("in").unwrap();
        input.jetstream = Some(gnomon_config::jetstream::JetStreamConsume {
            stream: "telemetry".into(),
            subjects: vec!["telemetry.>".into()],
            deliver_policy: Default::default(),
            subject_format: Default::default(),
            fetch_batch_size: 10,
            max_ack_pending: 10,
        });
        s
    };
    assert!(error(jetstream).starts_with("inputs.in.type"));
    let fixed = settings("x", "", SHARDED);
    let mut fixed_subject = fixed.clone();
    fixed_subject.inputs.get_mut("in").unwrap().subject = "telemetry".into();
    assert!(error(fixed_subject).starts_with("inputs.in.subject"));
    let mut two_outputs = fixed.clone();
    let other: PrometheusOutputConfig = serde_yaml::from_str("listen: 127.0.0.1:0").unwrap();
    two_outputs.outputs.insert("other".into(), other);
    assert!(error(two_outputs.clone()).starts_with("inputs.in.outputs"));
    two_outputs.inputs.get_mut("in").unwrap().outputs = vec!["prom".into()];
    two_outputs.validate().unwrap();
    let mut both_sharded = fixed.clone();
    both_sharded
        .outputs
        .insert("second".into(), fixed.outputs["prom"].clone());
    assert!(error(both_sharded).contains(".service-registration.shards"));

    // Without a cluster store there are no shard locks to hold.
    let standalone = Exporter::start(
        settings("x", "", SHARDED),
        ExporterDeps {
            coordination: None,
            bus: Some(Arc::new(MemoryBus::new())),
        },
        CancellationToken::new(),
    )
    .await;
    let message = match standalone {
        Ok(_) => panic!("a sharded output started without a cluster store"),
        Err(e) => e.to_string(),
    };
    assert!(
        message.starts_with("outputs.prom.service-registration.shards"),
        "{message}"
    );
}

/// The value of `source`'s series in an exposition.
fn value_of(text: &[u8], source: &str) -> Option<f64> {
    let text = String::from_utf8_lossy(text);
    let needle = format!("source=\"{source}\"");
    text.lines()
        .find(|l| !l.starts_with('#') && l.contains(&needle))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_target_is_unsubscribed_after_its_grace() {
    let store = MemoryStore::new();
    let bus = Arc::new(MemoryBus::new());
    let names: Vec<String> = (0..20).map(|i| format!("dev{i}")).collect();
    let admin: Arc<dyn Coordination> = Arc::new(memory_coordination(&store, "admin"));
    let target_store = TargetStore::new(admin.clone(), "lab");
    for name in &names {
        target_store
            .put(&serde_json::json!({"name": name}))
            .await
            .unwrap();
    }
    let published = Arc::new(std::sync::Mutex::new(names.clone()));
    let (_collector, _) = Collector::start(&store, bus.clone(), published).await;
    let exporter = Exporter::start(
        settings("x1", "", SHARDED),
        ExporterDeps {
            coordination: Some(Arc::new(memory_coordination(&store, "x1"))),
            bus: Some(bus.clone()),
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let output = exporter.output("prom").unwrap();
    let shard = eventually("a shard held", Duration::from_secs(10), || {
        let held = exporter.held_shard("prom");
        async move { held }
    })
    .await
    .unwrap();
    let mine: Vec<&String> = names
        .iter()
        .filter(|n| shard_of(n, SHARDS) == shard)
        .collect();
    assert!(mine.len() >= 2, "{mine:?}");
    let (removed, kept) = (mine[0].clone(), mine[1].clone());
    eventually("both served", Duration::from_secs(10), || {
        let text = output.render();
        let ok = value_of(&text, &removed).is_some() && value_of(&text, &kept).is_some();
        async move { ok.then_some(()) }
    })
    .await
    .unwrap();

    // Deleted from the cluster while its collector still publishes: the subscription closes
    // after the grace, so its series falls behind the kept target's (2 s of rounds).
    let deleted_at = Instant::now();
    target_store.delete(&removed).await.unwrap();
    eventually(
        "the removed target no longer received",
        Duration::from_secs(30),
        || {
            let text = output.render();
            let gap = value_of(&text, &kept).unwrap_or(0.0)
                - value_of(&text, &removed).unwrap_or(f64::MAX);
            async move { (gap >= 20.0).then_some(()) }
        },
    )
    .await
    .unwrap();
    assert!(
        deleted_at.elapsed() >= gnomon_exporter::input::REMOVED_TARGET_GRACE,
        "closed before its grace"
    );
    exporter.stop().await;
}
