//! The collector in one process with its consumers: NATS outputs publishing on an
//! injected in-memory bus (as `gnomon demo` runs), and `gnomon_target_up` reaching an
//! in-process exporter's scrape.

use futures::StreamExt;
use gnomon_bus::contract::TARGET_STATUS as TARGET_UP;
use gnomon_bus::{Bus, BusMessage, MemoryBus};
use gnomon_collector::{CollectorDeps, CollectorHandle, Ownership, TargetState};
use gnomon_config::{load_config_with_env, ConfigFormat, GnomonConfig};
use gnomon_exporter::{Exporter, ExporterDeps, ExporterSettings};
use gnomon_gnmi::proto::gnmi::{subscribe_response::Response, SubscribeResponse};
use gnomon_simulator::{Simulator, SimulatorArgs};
use gnomon_testkit::{eventually, free_port};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn load(yaml: &str) -> GnomonConfig {
    load_config_with_env(yaml, ConfigFormat::Yaml, &[])
        .unwrap_or_else(|e| panic!("config: {e}\n{yaml}"))
}

async fn simulator() -> Simulator {
    let mut args = SimulatorArgs::on_free_ports(1);
    args.update_rate = Duration::from_millis(100);
    Simulator::start(args).await.expect("simulator starts")
}

/// A collector config for one target `dev` whose NATS output points at a port where no
/// server listens: anything received came through the injected bus.
fn config(device: std::net::SocketAddr, extra: &str) -> GnomonConfig {
    let nowhere = free_port();
    load(&format!(
        r#"
insecure: true
targets:
  dev:
    address: {device}
    retry-timer: 1s
    timeout: 1s
subscriptions:
  counters:
    paths: ["/interfaces/interface/state/counters"]
    stream-mode: sample
    sample-interval: 200ms
outputs:
  bus:
    type: nats
    address: 127.0.0.1:{nowhere}
    subject-prefix: telemetry
    format: proto
{extra}"#
    ))
}

/// Forwards every message on `subject` into a channel.
async fn collect(bus: &MemoryBus, subject: &str) -> mpsc::Receiver<BusMessage> {
    let mut subscription = bus.subscribe(subject, None).await.unwrap();
    let (tx, rx) = mpsc::channel(100_000);
    tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            if tx.try_send(message).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for the next message matching `wanted`.
async fn next_matching(
    rx: &mut mpsc::Receiver<BusMessage>,
    what: &str,
    wanted: impl Fn(&BusMessage) -> bool,
) -> BusMessage {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let message = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("bus closed while waiting for {what}"));
        if wanted(&message) {
            return message;
        }
    }
}

fn is_target_up(message: &BusMessage) -> bool {
    message.headers.subscription.as_deref() == Some(TARGET_UP)
}

/// The `gnomon_target_up` value of a report, checking the event shape on the way.
fn target_up_value(message: &BusMessage) -> Option<i64> {
    let events: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    let event = &events[0];
    assert_eq!(event["name"], TARGET_UP, "{events}");
    assert_eq!(event["tags"]["target"], "dev", "{events}");
    assert!(event["timestamp"].as_i64().unwrap() > 0, "{events}");
    event["values"][TARGET_UP].as_i64()
}

/// Everything published on `bus` so far: a marker is published after it and the
/// messages are read up to the marker (one subscriber receives in publish order).
async fn drain(bus: &MemoryBus, rx: &mut mpsc::Receiver<BusMessage>) -> Vec<BusMessage> {
    const MARKER: &str = "telemetry.test-end";
    bus.publish(BusMessage {
        subject: MARKER.to_string(),
        headers: Default::default(),
        payload: Default::default(),
    })
    .await
    .unwrap();
    let mut messages = Vec::new();
    loop {
        let message = next_matching(rx, "the end marker", |_| true).await;
        if message.subject == MARKER {
            return messages;
        }
        messages.push(message);
    }
}

fn deps(bus: &MemoryBus) -> CollectorDeps {
    CollectorDeps {
        bus: Some(Arc::new(bus.clone())),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outputs_publish_on_an_injected_bus_with_headers_and_target_status() {
    let sim = simulator().await;
    let bus = MemoryBus::new();
    let mut rx = collect(&bus, "telemetry.>").await;
    let collector =
        CollectorHandle::with_deps(config(sim.device_addresses()[0], ""), deps(&bus)).unwrap();
    collector.start_target("dev", None).unwrap();

    let (mut data, mut up) = (None, None);
    while data.is_none() || up.is_none() {
        let message = next_matching(&mut rx, "data and a target report", |_| true).await;
        let slot = if is_target_up(&message) {
            &mut up
        } else {
            &mut data
        };
        slot.get_or_insert(message);
    }
    let (data, up) = (data.unwrap(), up.unwrap());
    assert_eq!(data.subject, "telemetry.dev.counters");
    assert_eq!(data.headers.target.as_deref(), Some("dev"));
    assert_eq!(data.headers.subscription.as_deref(), Some("counters"));
    assert_eq!(data.headers.fencing_token, None);
    let response = SubscribeResponse::decode(data.payload).expect("proto payload");
    assert!(
        matches!(
            response.response,
            Some(Response::Update(_)) | Some(Response::SyncResponse(_))
        ),
        "{response:?}"
    );

    assert_eq!(up.subject, "telemetry.dev.gnomon_target_up");
    assert_eq!(up.headers.target.as_deref(), Some("dev"));
    assert_eq!(up.headers.fencing_token, None);
    assert_eq!(target_up_value(&up), Some(1));

    // Not clustered: stopping the target reports it down, after everything else it sent.
    assert!(collector.stop_target("dev").await);
    collector.shutdown().await;
    let last_report = drain(&bus, &mut rx)
        .await
        .into_iter()
        .filter(is_target_up)
        .last()
        .expect("a report after the stop");
    assert_eq!(target_up_value(&last_report), Some(0));
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_target_deletes_its_status_series() {
    let sim = simulator().await;
    let bus = MemoryBus::new();
    let mut rx = collect(&bus, "telemetry.>").await;
    let collector =
        CollectorHandle::with_deps(config(sim.device_addresses()[0], ""), deps(&bus)).unwrap();
    collector.start_target("dev", None).unwrap();
    let up = next_matching(&mut rx, "target up", is_target_up).await;
    assert_eq!(target_up_value(&up), Some(1));

    assert!(collector.delete_target("dev").await);
    collector.shutdown().await;
    let last_report = drain(&bus, &mut rx)
        .await
        .into_iter()
        .filter(is_target_up)
        .last()
        .expect("a report after the delete");
    let events: serde_json::Value = serde_json::from_slice(&last_report.payload).unwrap();
    assert_eq!(events[0]["deletes"], serde_json::json!([TARGET_UP]));
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clustered_target_that_moves_away_is_not_reported_down() {
    let sim = simulator().await;
    let bus = MemoryBus::new();
    let mut rx = collect(&bus, "telemetry.>").await;
    let collector =
        CollectorHandle::with_deps(config(sim.device_addresses()[0], ""), deps(&bus)).unwrap();
    let lost = CancellationToken::new();
    collector
        .start_target(
            "dev",
            Some(Ownership {
                fencing_token: 9,
                lost: lost.clone(),
            }),
        )
        .unwrap();
    let up = next_matching(&mut rx, "target up", is_target_up).await;
    assert_eq!(up.headers.fencing_token, Some(9));
    assert_eq!(target_up_value(&up), Some(1));

    lost.cancel();
    eventually("stopped", Duration::from_secs(5), || async {
        collector
            .target("dev")
            .filter(|t| t.status.state == TargetState::Stopped)
    })
    .await
    .unwrap();
    assert!(collector.stop_target("dev").await);
    // Shutdown sends everything queued: whatever was reported is in `rx` now.
    collector.shutdown().await;
    for report in drain(&bus, &mut rx)
        .await
        .iter()
        .filter(|m| is_target_up(m))
    {
        assert_eq!(report.headers.fencing_token, Some(9));
        assert_eq!(target_up_value(report), Some(1), "no down report");
    }
    sim.stop().await;
}

async fn scrape(addr: std::net::SocketAddr) -> Option<String> {
    let response = gnomon_testkit::http_client()
        .get(format!("http://{addr}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    response.text().await.ok()
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporter_started_later_serves_target_up_and_sees_it_drop() {
    let sim = simulator().await;
    let bus = MemoryBus::new();
    // One gnmic-style config for both sides: the collector skips the Prometheus output,
    // the exporter takes the NATS input and the Prometheus output.
    let config = config(
        sim.device_addresses()[0],
        r#"  prom:
    type: prometheus
    listen: 127.0.0.1:0
inputs:
  in:
    type: nats
    address: 127.0.0.1:4222
    subject: telemetry.>
    format: proto
    outputs: [prom]
"#,
    );
    let collector = CollectorHandle::with_deps(
        config.clone(),
        CollectorDeps {
            bus: Some(Arc::new(bus.clone())),
            target_up_interval: Some(Duration::from_millis(300)),
        },
    )
    .unwrap();
    collector.start_target("dev", None).unwrap();
    eventually("streaming", Duration::from_secs(15), || async {
        collector
            .target("dev")
            .filter(|t| t.status.state == TargetState::Streaming)
    })
    .await
    .unwrap();

    // The exporter subscribes after the up report was published: it learns the state
    // from the periodic report.
    let shutdown = CancellationToken::new();
    let exporter = Exporter::start(
        ExporterSettings::from_config(&config).unwrap(),
        ExporterDeps {
            bus: Some(Arc::new(bus.clone())),
            coordination: None,
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let addr = exporter.listen_addr("prom").unwrap();
    let series = "gnomon_target_up{target=\"dev\"}";
    // The status report and the next sample may reach the exporter in either order: wait
    // for both.
    eventually(
        "target up and data series in the scrape",
        Duration::from_secs(15),
        || async {
            let text = scrape(addr).await?;
            let data = text
                .lines()
                .any(|l| !l.starts_with('#') && l.contains("in_octets"));
            (sample(&text, series) == Some(1.0) && data).then_some(())
        },
    )
    .await
    .unwrap();

    sim.stop().await;
    eventually(
        "target down in the scrape",
        Duration::from_secs(15),
        || async {
            let text = scrape(addr).await?;
            (sample(&text, series) == Some(0.0)).then_some(())
        },
    )
    .await
    .unwrap();
    collector.shutdown().await;
    shutdown.cancel();
}

/// The device's (active streams, client addresses) as the simulator counts them.
fn device_streams(sim: &Simulator) -> (usize, Vec<String>) {
    let stats = sim.stats();
    let device = stats.targets.values().next().cloned().unwrap_or_else(|| {
        panic!("the simulator reports no device");
    });
    (device.subscriptions, device.peers.into_iter().collect())
}

async fn wait_streams(
    sim: &Simulator,
    what: &str,
    wanted: impl Fn(usize, &[String]) -> bool,
) -> Vec<String> {
    eventually(what, Duration::from_secs(15), || {
        let (streams, peers) = device_streams(sim);
        let ok = wanted(streams, &peers);
        async move { ok.then_some(peers) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: the device shows {:?}", device_streams(sim)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_target_follows_subscription_changes_on_the_same_connection() {
    let sim = simulator().await;
    let bus = MemoryBus::new();
    let mut rx = collect(&bus, "telemetry.>").await;
    let collector =
        CollectorHandle::with_deps(config(sim.device_addresses()[0], ""), deps(&bus)).unwrap();
    collector.start_target("dev", None).unwrap();
    let peers = wait_streams(&sim, "one stream", |n, p| n == 1 && p.len() == 1).await;

    // A subscription added at runtime: one more stream on the same connection.
    let added = collector
        .parse_subscription(&serde_json::json!({
            "name": "more",
            "paths": ["/interfaces/interface/state/counters"],
            "stream-mode": "sample",
            "sample-interval": "300ms",
        }))
        .unwrap();
    collector.put_subscription(added).unwrap();
    wait_streams(&sim, "two streams, one connection", |n, p| {
        n == 2 && p == peers.as_slice()
    })
    .await;
    next_matching(&mut rx, "data of the added subscription", |m| {
        m.subject == "telemetry.dev.more"
    })
    .await;

    // Removing one closes only its stream.
    assert!(collector.delete_subscription("counters"));
    assert!(!collector.delete_subscription("counters"));
    wait_streams(&sim, "one stream, same connection", |n, p| {
        n == 1 && p == peers.as_slice()
    })
    .await;
    assert_eq!(
        collector
            .target("dev")
            .unwrap()
            .subscriptions
            .keys()
            .collect::<Vec<_>>(),
        ["more"]
    );

    // A target pinned to a subscription that does not exist is refused, naming it.
    let error = collector
        .set_target_subscriptions("dev", vec!["nope".into()])
        .unwrap_err()
        .to_string();
    assert!(error.contains("nope"), "{error}");

    // A change of the target's own settings reconnects it once.
    let mut changed = collector.target_config("dev").unwrap();
    changed.timeout = Duration::from_secs(2);
    assert!(collector.update_target_config(changed).unwrap());
    wait_streams(&sim, "one stream on a new connection", |n, p| {
        n == 1 && p.len() == 1 && p != peers.as_slice()
    })
    .await;
    collector.shutdown().await;
    sim.stop().await;
}
