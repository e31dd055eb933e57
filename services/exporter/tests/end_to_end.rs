//! The exporter against real servers: nats-server carries collector-style messages (headers
//! included), the exporter serves them, promtool checks the exposition, a real Prometheus
//! finds the registered exporter through `/sd` and scrapes it.

use bytes::Bytes;
use gnomon_bus::{Bus, BusMessage, MessageHeaders, NatsBus, NatsOptions};
use gnomon_config::nats_input::NatsInputConfig;
use gnomon_config::prometheus_output::PrometheusOutputConfig;
use gnomon_coordination::{
    Coordination, LockerConfig, LockerType, MemoryCoordination, MemoryStore,
};
use gnomon_exporter::{Exporter, ExporterDeps, ExporterSettings};
use gnomon_gnmi::path::parse_path;
use gnomon_gnmi::proto::gnmi::{
    subscribe_response, typed_value, Notification, SubscribeResponse, TypedValue, Update,
};
use gnomon_testkit::{eventually, NatsServer, PrometheusServer};
use prost::Message;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const PORT_STATS: &str = "port-stats";

fn input(yaml: &str) -> NatsInputConfig {
    serde_yaml::from_str(yaml).unwrap()
}

fn output(yaml: &str) -> PrometheusOutputConfig {
    serde_yaml::from_str(yaml).unwrap()
}

fn settings(
    instance: &str,
    nats: &NatsServer,
    input_extra: &str,
    output_extra: &str,
) -> ExporterSettings {
    let mut settings = ExporterSettings {
        instance_name: instance.to_string(),
        cluster_name: "lab".to_string(),
        ..Default::default()
    };
    settings.inputs.insert(
        "in".into(),
        input(&format!(
            "address: {}\nsubject: telemetry.>\n{input_extra}",
            nats.address()
        )),
    );
    settings.outputs.insert(
        "prom".into(),
        output(&format!("listen: 127.0.0.1:0\n{output_extra}")),
    );
    settings
}

async fn publisher(nats: &NatsServer) -> NatsBus {
    NatsBus::connect(&NatsOptions::new(nats.address()))
        .await
        .unwrap()
}

async fn publish(
    bus: &NatsBus,
    subject: &str,
    target: Option<&str>,
    token: u64,
    payload: impl Into<Bytes>,
) {
    let headers = MessageHeaders {
        target: target.map(str::to_string),
        subscription: Some(PORT_STATS.to_string()),
        fencing_token: Some(token),
        traceparent: None,
    };
    bus.publish(BusMessage {
        subject: subject.to_string(),
        headers,
        payload: payload.into(),
    })
    .await
    .unwrap();
    bus.flush().await.unwrap();
}

/// gnmic event JSON for one counter of one interface.
fn event_json(source: &str, interface: &str, octets: u64) -> String {
    format!(
        r#"[{{"name":"port-stats","timestamp":{ts},"tags":{{"interface_name":"{interface}","source":"{source}","subscription-name":"port-stats"}},"values":{{"/interfaces/interface/state/counters/in-octets":"{octets}","/interfaces/interface/state/oper-status":"UP"}}}}]"#,
        ts = 1_700_000_000_000_000_000u64
    )
}

fn proto_response(interface: &str, octets: u64) -> Vec<u8> {
    let update = Update {
        path: Some(parse_path("in-octets").unwrap()),
        val: Some(TypedValue {
            value: Some(typed_value::Value::UintVal(octets)),
        }),
        ..Default::default()
    };
    let notification = Notification {
        timestamp: 1_700_000_000_000_000_000,
        prefix: Some(
            parse_path(&format!(
                "/interfaces/interface[name={interface}]/state/counters"
            ))
            .unwrap(),
        ),
        update: vec![update],
        ..Default::default()
    };
    SubscribeResponse {
        response: Some(subscribe_response::Response::Update(notification)),
        ..Default::default()
    }
    .encode_to_vec()
}

async fn scrape_raw(
    addr: SocketAddr,
    gzip: bool,
) -> (reqwest::StatusCode, Option<String>, Vec<u8>) {
    let mut request = gnomon_testkit::http_client()
        .get(format!("http://{addr}/metrics"))
        .timeout(Duration::from_secs(10));
    if gzip {
        request = request.header("Accept-Encoding", "gzip");
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let encoding = response
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_string());
    (status, encoding, response.bytes().await.unwrap().to_vec())
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, _, body) = scrape_raw(addr, false).await;
    assert!(status.is_success(), "scrape status {status}");
    String::from_utf8(body).unwrap()
}

/// Sample lines of an exposition: series text → value.
fn samples(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.to_string())
        })
        .collect()
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed: {}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn wait_for_series(addr: SocketAddr, count: usize) -> String {
    eventually(
        &format!("{count} series"),
        // Generous: a loaded 2-core machine has taken over 10 s here.
        Duration::from_secs(30),
        || async move {
            let text = scrape(addr).await;
            (samples(&text).len() == count).then_some(text)
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_messages_become_gnmic_series() {
    let nats = NatsServer::start().unwrap();
    let mut settings = settings("e1", &nats, "", "");
    settings.inputs.insert(
        "proto-in".into(),
        input(&format!(
            "address: {}\nsubject: proto.>\nformat: proto",
            nats.address()
        )),
    );
    let exporter = Exporter::start(settings, ExporterDeps::default(), CancellationToken::new())
        .await
        .unwrap();
    let addr = exporter.listen_addr("prom").unwrap();
    let bus = publisher(&nats).await;

    // Event format with collector headers.
    publish(
        &bus,
        "telemetry.r1.port-stats",
        Some("r1"),
        1,
        event_json("r1", "ethernet-1/1", 100),
    )
    .await;
    publish(
        &bus,
        "telemetry.r1.port-stats",
        Some("r1"),
        1,
        event_json("r1", "ethernet-1/2", 200),
    )
    .await;
    // A newer value for the same series replaces it (never a duplicate).
    publish(
        &bus,
        "telemetry.r1.port-stats",
        Some("r1"),
        1,
        event_json("r1", "ethernet-1/1", 150),
    )
    .await;
    // Proto format: meta from the headers ...
    publish(
        &bus,
        "proto.r2.port-stats",
        Some("r2"),
        1,
        proto_response("e1", 42),
    )
    .await;
    // ... or, without headers, from the subject like gnmic.
    bus.publish(BusMessage {
        subject: "proto.10-0-0-3:57400.port-stats".into(),
        headers: MessageHeaders::default(),
        payload: proto_response("e9", 7).into(),
    })
    .await
    .unwrap();
    // The collector's per-target status.
    publish(
        &bus,
        "telemetry.r1.port-stats",
        Some("r1"),
        1,
        r#"[{"name":"gnomon_target_up","tags":{"target":"r1"},"values":{"gnomon_target_up":1}}]"#,
    )
    .await;
    bus.flush().await.unwrap();

    let text = wait_for_series(addr, 5).await;
    let metric = "interfaces_interface_state_counters_in_octets";
    let expected: BTreeMap<String, String> = [
        (format!(r#"{metric}{{interface_name="ethernet-1/1",source="r1",subscription_name="port-stats"}}"#), "150"),
        (format!(r#"{metric}{{interface_name="ethernet-1/2",source="r1",subscription_name="port-stats"}}"#), "200"),
        (format!(r#"{metric}{{interface_name="e1",source="r2",subscription_name="port-stats"}}"#), "42"),
        (format!(r#"{metric}{{interface_name="e9",source="10.0.0.3:57400",subscription_name="port-stats"}}"#), "7"),
        (r#"gnomon_target_up{target="r1"}"#.to_string(), "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    assert_eq!(samples(&text), expected, "{text}");
    assert_eq!(
        text.matches(&format!("# TYPE {metric} untyped\n")).count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches(&format!("# HELP {metric} gNMIc generated metric\n"))
            .count(),
        1
    );
    promtool_check(&text);

    // gzip when asked, same content.
    let (status, encoding, body) = scrape_raw(addr, true).await;
    assert!(status.is_success());
    assert_eq!(encoding.as_deref(), Some("gzip"));
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    assert_eq!(samples(&unzipped), expected);

    // Without a registration, /sd lists this exporter.
    let sd: serde_json::Value = gnomon_testkit::http_get(format!("http://{addr}/sd"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        sd,
        serde_json::json!([{"targets": [addr.to_string()], "labels": {}}])
    );
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_stale_messages_are_counted_and_skipped() {
    let nats = NatsServer::start().unwrap();
    let exporter = Exporter::start(
        settings("e1", &nats, "", ""),
        ExporterDeps::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let addr = exporter.listen_addr("prom").unwrap();
    let stats = exporter.stats();
    let bus = publisher(&nats).await;

    publish(
        &bus,
        "telemetry.r1.s",
        Some("r1"),
        5,
        event_json("r1", "e1", 10),
    )
    .await;
    publish(&bus, "telemetry.r1.s", Some("r1"), 5, "{not json").await;
    publish(
        &bus,
        "telemetry.r1.s",
        Some("r1"),
        5,
        r#"[{"tags":{"a":1}}]"#,
    )
    .await;
    publish(&bus, "telemetry.r1.s", Some("r1"), 5, "42").await;
    // A collector that lost r1 (older token) must not overwrite the new owner's data.
    publish(
        &bus,
        "telemetry.r1.s",
        Some("r1"),
        4,
        event_json("r1", "e1", 999),
    )
    .await;
    publish(
        &bus,
        "telemetry.r1.s",
        Some("r1"),
        4,
        event_json("r1", "e2", 999),
    )
    .await;
    // The current owner keeps going.
    publish(
        &bus,
        "telemetry.r1.s",
        Some("r1"),
        6,
        event_json("r1", "e1", 11),
    )
    .await;

    let text = eventually(
        "the owner's update",
        Duration::from_secs(10),
        || async move {
            let text = scrape(addr).await;
            text.contains("} 11\n").then_some(text)
        },
    )
    .await
    .unwrap();
    assert_eq!(samples(&text).len(), 1, "{text}");
    assert!(!text.contains("999"), "{text}");
    assert_eq!(stats.malformed_total(), 3);
    assert_eq!(stats.stale_dropped_total(), 2);
    promtool_check(&text);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_queue_splits_the_stream_default_fans_out() {
    let nats = NatsServer::start().unwrap();
    let start = |instance: &'static str, extra: &'static str| {
        let settings = settings(instance, &nats, extra, "");
        async move {
            Exporter::start(settings, ExporterDeps::default(), CancellationToken::new())
                .await
                .unwrap()
        }
    };
    let a = start("a", "queue: exporters").await;
    let b = start("b", "queue: exporters").await;
    let everything = start("c", "").await;
    let bus = publisher(&nats).await;
    const SERIES: usize = 200;
    for i in 0..SERIES {
        publish(
            &bus,
            &format!("telemetry.r{i}.port-stats"),
            Some(&format!("r{i}")),
            1,
            event_json(&format!("r{i}"), "e1", i as u64),
        )
        .await;
    }
    let full = wait_for_series(everything.listen_addr("prom").unwrap(), SERIES).await;
    let (addr_a, addr_b) = (
        a.listen_addr("prom").unwrap(),
        b.listen_addr("prom").unwrap(),
    );
    let (part_a, part_b) = eventually(
        "the queue members to hold all series together",
        Duration::from_secs(10),
        || async move {
            let (part_a, part_b) = (
                samples(&scrape(addr_a).await),
                samples(&scrape(addr_b).await),
            );
            (part_a.len() + part_b.len() == SERIES).then_some((part_a, part_b))
        },
    )
    .await
    .unwrap();
    assert!(
        !part_a.is_empty() && !part_b.is_empty(),
        "both queue members get a share: {} / {}",
        part_a.len(),
        part_b.len()
    );
    assert!(
        part_a.keys().all(|k| !part_b.contains_key(k)),
        "no series in both"
    );
    let mut union = part_a;
    union.extend(part_b);
    assert_eq!(union, samples(&full));
    for exporter in [a, b, everything] {
        exporter.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_expire_after_expiration() {
    let nats = NatsServer::start().unwrap();
    let exporter = Exporter::start(
        settings("e1", &nats, "", "expiration: 1s"),
        ExporterDeps::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let addr = exporter.listen_addr("prom").unwrap();
    let bus = publisher(&nats).await;
    publish(
        &bus,
        "telemetry.r1.s",
        Some("r1"),
        1,
        event_json("r1", "e1", 1),
    )
    .await;
    publish(
        &bus,
        "telemetry.r1.s",
        Some("r1"),
        1,
        r#"[{"name":"gnomon_target_up","tags":{"target":"r1"},"values":{"gnomon_target_up":1}}]"#,
    )
    .await;
    wait_for_series(addr, 2).await;
    // The data series goes after 1 s without updates; the target status stays.
    let text = eventually("expiry", Duration::from_secs(5), || async move {
        let text = scrape(addr).await;
        (samples(&text).len() == 1).then_some(text)
    })
    .await
    .unwrap();
    assert!(text.contains("gnomon_target_up{target=\"r1\"} 1"), "{text}");
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_started_before_nats_catches_up() {
    let mut nats = NatsServer::start().unwrap();
    nats.stop();
    let exporter = Exporter::start(
        settings("e1", &nats, "connect-time-wait: 200ms", ""),
        ExporterDeps::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let addr = exporter.listen_addr("prom").unwrap();
    // Serving (empty) while NATS is down.
    assert_eq!(scrape(addr).await, "");
    nats.restart().unwrap();
    let bus = publisher(&nats).await;
    let bus = &bus;
    eventually(
        "data after NATS came up",
        Duration::from_secs(10),
        || async move {
            publish(
                bus,
                "telemetry.r1.s",
                Some("r1"),
                1,
                event_json("r1", "e1", 5),
            )
            .await;
            (samples(&scrape(addr).await).len() == 1).then_some(())
        },
    )
    .await
    .unwrap();
    exporter.stop().await;
}

fn memory_coordination(store: &MemoryStore, instance: &str) -> MemoryCoordination {
    let mut locker = LockerConfig::new(LockerType::Memory);
    locker.session_ttl = Duration::from_secs(2);
    locker.delay = Duration::ZERO;
    locker.retry_timer = Duration::from_millis(200);
    MemoryCoordination::with_store(store.clone(), &locker, instance)
}

async fn sd_targets(addr: SocketAddr) -> Vec<String> {
    let groups: serde_json::Value = gnomon_testkit::http_get(format!("http://{addr}/sd"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut targets: Vec<String> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| {
            g["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
        })
        .collect();
    targets.sort();
    targets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_lock_registers_one_exporter_and_fails_over() {
    let nats = NatsServer::start().unwrap();
    let store = MemoryStore::new();
    let registration = "service-registration:\n  use-lock: true\n  check-interval: 2s";
    let mut exporters = Vec::new();
    let mut coordinations = Vec::new();
    for instance in ["x1", "x2"] {
        let coordination = memory_coordination(&store, instance);
        let deps = ExporterDeps {
            coordination: Some(Arc::new(coordination.clone())),
            bus: None,
        };
        let exporter = Exporter::start(
            settings(instance, &nats, "", registration),
            deps,
            CancellationToken::new(),
        )
        .await
        .unwrap();
        exporters.push(exporter);
        coordinations.push(coordination);
    }
    let holder = eventually("one exporter registered", Duration::from_secs(10), || {
        let registered: Vec<usize> = (0..2)
            .filter(|&i| exporters[i].is_registered("prom"))
            .collect();
        async move { (registered.len() == 1).then(|| registered[0]) }
    })
    .await
    .unwrap();
    let other = 1 - holder;
    let holder_addr = exporters[holder].listen_addr("prom").unwrap();
    let other_addr = exporters[other].listen_addr("prom").unwrap();
    // Both exporters' /sd list exactly the registered one.
    let listed = eventually(
        "/sd lists the holder",
        Duration::from_secs(5),
        || async move {
            let (a, b) = (sd_targets(holder_addr).await, sd_targets(other_addr).await);
            (a == vec![holder_addr.to_string()] && a == b).then_some(a)
        },
    )
    .await
    .unwrap();
    assert_eq!(listed.len(), 1);
    let services = coordinations[other]
        .services("prometheus-prom", &[])
        .await
        .unwrap();
    assert_eq!(services.len(), 1);
    assert!(
        services[0].tags.contains(&"gnmic-cluster=lab".to_string()),
        "{:?}",
        services[0].tags
    );

    // Crash the holder: no graceful deregistration, its session just stops renewing.
    coordinations[holder].disconnect();
    let crashed = exporters.remove(holder);
    crashed.abort();
    let survivor = exporters.pop().unwrap();
    let killed_at = Instant::now();
    // Session TTL (2 s) + 2 s.
    eventually("the survivor to take over", Duration::from_secs(4), || {
        let registered = survivor.is_registered("prom");
        async move { registered.then_some(()) }
    })
    .await
    .unwrap();
    let took = killed_at.elapsed();
    let survivor_addr = survivor.listen_addr("prom").unwrap();
    eventually(
        "/sd lists only the survivor",
        Duration::from_secs(5),
        || async move {
            (sd_targets(survivor_addr).await == vec![survivor_addr.to_string()]).then_some(())
        },
    )
    .await
    .unwrap();
    eprintln!("failover took {took:?}");
    survivor.stop().await;
    // A graceful stop deregisters.
    let remaining = coordinations[other]
        .services("prometheus-prom", &[])
        .await
        .unwrap_or_default();
    assert!(remaining.is_empty(), "{remaining:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_registered_exporter_through_http_sd() {
    let nats = NatsServer::start().unwrap();
    let store = MemoryStore::new();
    let coordination = memory_coordination(&store, "p1");
    let deps = ExporterDeps {
        coordination: Some(Arc::new(coordination)),
        bus: None,
    };
    let exporter = Exporter::start(
        settings("p1", &nats, "", "service-registration:\n  use-lock: true"),
        deps,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let addr = exporter.listen_addr("prom").unwrap();
    eventually("registered", Duration::from_secs(10), || {
        let registered = exporter.is_registered("prom");
        async move { registered.then_some(()) }
    })
    .await
    .unwrap();
    // Data is believed only from the holder of the target's lock in the cluster's store.
    let collector = memory_coordination(&store, "collector");
    let lock = collector
        .acquire(&gnomon_coordination::keys::target("lab", "r1"), "collector")
        .await
        .unwrap()
        .unwrap();
    let bus = publisher(&nats).await;
    // Published again until the exporter has seen the lock (the first message may race it).
    eventually(
        "the series from the lock holder",
        Duration::from_secs(10),
        || async {
            publish(
                &bus,
                "telemetry.r1.port-stats",
                Some("r1"),
                lock.fencing_token(),
                event_json("r1", "ethernet-1/1", 123456),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            (samples(&scrape(addr).await).len() == 1).then_some(())
        },
    )
    .await
    .unwrap();

    let prometheus = PrometheusServer::start(&format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: gnomon\n    http_sd_configs:\n      - url: http://{addr}/sd\n        refresh_interval: 1s\n"
    ))
    .unwrap();
    let query = format!(
        "{}/api/v1/query?query=interfaces_interface_state_counters_in_octets%7Bsource%3D%22r1%22%7D",
        prometheus.url()
    );
    let value = eventually(
        "Prometheus to return the counter",
        Duration::from_secs(30),
        || {
            let query = query.clone();
            async move {
                let body: serde_json::Value = gnomon_testkit::http_get(&query)
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let result = body["data"]["result"].as_array()?.first()?.clone();
                Some((
                    result["value"][1].as_str()?.to_string(),
                    result["metric"].clone(),
                ))
            }
        },
    )
    .await;
    let value =
        match value {
            Ok(value) => value,
            Err(error) => {
                let targets =
                    match gnomon_testkit::http_get(format!("{}/api/v1/targets", prometheus.url()))
                        .await
                    {
                        Ok(response) => response.text().await.unwrap_or_default(),
                        Err(e) => e.to_string(),
                    };
                panic!(
                    "{error}\nPrometheus targets: {targets}\nPrometheus log:\n{}",
                    prometheus.log()
                );
            }
        };
    assert_eq!(value.0, "123456");
    assert_eq!(value.1["interface_name"], "ethernet-1/1");
    assert_eq!(value.1["instance"], addr.to_string());
    exporter.stop().await;
}
