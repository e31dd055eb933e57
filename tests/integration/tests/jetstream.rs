//! Issue 17 (part 1) on real processes: gnmic's `jetstream` output and input over a real
//! `nats-server` with JetStream.
//!
//! * An exporter SIGKILLed for 10 s and started again resumes from its durable consumer:
//!   every 1 s sample the simulator produced meanwhile reaches Prometheus (through the
//!   exporter's remote write), with no gap per device.
//! * nats-server killed and started again with a file-backed stream: no message the
//!   publisher had handed over is lost (acknowledged ones are stored; the others are
//!   published again under the same `Nats-Msg-Id`).
//! * The fencing headers travel through JetStream unchanged.

use futures::StreamExt;
use gnomon_bus::jetstream::{
    ConsumerOptions, DeliverPolicy, JetStreamConsumer, JetStreamPublisher, PublisherOptions,
    StreamRetention, StreamSetup, StreamSpec, StreamStorage,
};
use gnomon_bus::{BusMessage, MessageHeaders, NatsBus, NatsOptions, Publish};
use gnomon_testkit::{
    eventually, spawn_gnomon, start_simulator, NatsServer, PrometheusServer, SimulatorSpec,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Raw samples `(timestamp s, value)` of `metric` over the last `range` seconds, per source.
async fn raw_samples(
    http: &reqwest::Client,
    prometheus: &PrometheusServer,
    metric: &str,
    range: u64,
) -> Option<BTreeMap<String, Vec<(f64, f64)>>> {
    let result = prometheus
        .query(http, &format!("{metric}[{range}s]"))
        .await?;
    let mut out = BTreeMap::new();
    for series in &result {
        let source = series["metric"]["source"].as_str()?.to_string();
        let samples = series["values"]
            .as_array()?
            .iter()
            .filter_map(|pair| Some((pair[0].as_f64()?, pair[1].as_str()?.parse::<f64>().ok()?)))
            .collect();
        out.insert(source, samples);
    }
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporter_killed_for_10s_resumes_from_its_durable_consumer_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start_jetstream().unwrap();
    // Redelivered messages may reach Prometheus after newer ones: accept them.
    let prometheus = PrometheusServer::start_with(
        "global: {}\nstorage:\n  tsdb:\n    out_of_order_time_window: 30m\n",
        &["--web.enable-remote-write-receiver"],
        None,
    )
    .unwrap();
    let http = gnomon_testkit::http_client_builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let simulator = start_simulator(
        dir.path(),
        "simulator",
        &SimulatorSpec::new(2, 1),
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
        "subscriptions:\n  counters:\n    paths: [/interfaces/interface/state/counters]\n    stream-mode: sample\n    sample-interval: 1s\n\
         outputs:\n  js-out:\n    type: jetstream\n    address: \"{}\"\n    stream: telemetry\n    subject-format: target.subscription\n    format: proto\n    create-stream:\n      storage: file\n      max-age: 1h\n",
        nats.address()
    ));
    let _collector = spawn_gnomon(dir.path(), "collector", "collector", &collector_config).unwrap();

    let exporter_config = format!(
        "instance-name: e1\noutputs:\n  rw:\n    type: prometheus_write\n    url: {}/api/v1/write\n    interval: 1s\n\
         inputs:\n  js-in:\n    type: jetstream\n    address: \"{}\"\n    stream: telemetry\n    subjects: [\"telemetry.>\"]\n    format: proto\n    outputs: [rw]\n",
        prometheus.url(),
        nats.address()
    );
    let mut exporter = spawn_gnomon(dir.path(), "exporter", "exporter", &exporter_config).unwrap();

    let metric = "interfaces_interface_state_counters_in_octets";
    // Both devices' samples flow before the kill.
    eventually(
        "samples of both devices in Prometheus",
        Duration::from_secs(60),
        || async {
            let samples = raw_samples(&http, &prometheus, metric, 60).await?;
            (samples.len() == 2 && samples.values().all(|s| s.len() >= 3)).then_some(())
        },
    )
    .await
    .unwrap();

    let killed_at = unix_now();
    exporter.kill();
    // The scenario: the exporter stays down for 10 s while the collector keeps publishing.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let restarted_at = unix_now();
    let _exporter =
        spawn_gnomon(dir.path(), "exporter-again", "exporter", &exporter_config).unwrap();

    let until = restarted_at + 5.0;
    let samples = eventually(
        "samples from after the restart for both devices",
        Duration::from_secs(60),
        || async {
            let samples = raw_samples(&http, &prometheus, metric, 120).await?;
            (samples.len() == 2 && samples.values().all(|s| s.iter().any(|(t, _)| *t >= until)))
                .then_some(samples)
        },
    )
    .await
    .unwrap();

    for (source, series) in &samples {
        let window: Vec<(f64, f64)> = series
            .iter()
            .copied()
            .filter(|(t, _)| *t >= killed_at && *t <= until)
            .collect();
        assert!(
            window.first().is_some_and(|(t, _)| *t <= killed_at + 1.5),
            "{source}: no sample within 1.5 s after the kill: {window:?}"
        );
        assert!(
            window.last().is_some_and(|(t, _)| *t >= until - 1.5),
            "{source}: samples stop before the end of the window: {window:?}"
        );
        for pair in window.windows(2) {
            let ((t0, v0), (t1, v1)) = (pair[0], pair[1]);
            assert!(
                t1 - t0 <= 1.5,
                "{source}: gap of {:.3} s between samples at {t0} and {t1} (killed at {killed_at}, restarted at {restarted_at})",
                t1 - t0
            );
            // The simulator's in-octets grow every tick: each sample is a new tick.
            assert!(
                v1 > v0,
                "{source}: counter did not grow from {v0} at {t0} to {v1} at {t1}"
            );
        }
        let pause = until - killed_at;
        assert!(
            window.len() as f64 >= pause - 2.0,
            "{source}: {} samples over {pause:.1} s",
            window.len()
        );
    }
}

fn stream_spec(subjects: &[&str]) -> StreamSetup {
    StreamSetup::Create(StreamSpec {
        description: "test".into(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        storage: StreamStorage::File,
        retention: StreamRetention::Limits,
        max_msgs: 0,
        max_bytes: 0,
        max_age: Duration::ZERO,
        max_msg_size: 0,
    })
}

fn publisher_options(stream: &str, subjects: &[&str]) -> PublisherOptions {
    PublisherOptions {
        stream: stream.into(),
        setup: stream_spec(subjects),
        window: 64,
        retry_capacity: 10_000,
        ack_timeout: Duration::from_secs(2),
        retry_wait: Duration::from_millis(200),
        id_prefix: "test".into(),
    }
}

/// Every message of the stream from the start (stops after `idle` without new ones).
async fn read_all(bus: &NatsBus, stream: &str, durable: &str) -> Vec<BusMessage> {
    let consumer = JetStreamConsumer::bind(
        bus,
        &ConsumerOptions {
            stream: stream.into(),
            durable: durable.into(),
            subjects: Vec::new(),
            deliver_policy: DeliverPolicy::All,
            max_ack_pending: 10_000,
            ack_wait: Duration::from_secs(30),
        },
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    loop {
        let batch = consumer.fetch(500, Duration::from_secs(1)).await.unwrap();
        if batch.is_empty() {
            return out;
        }
        for delivery in batch {
            delivery.ack().await;
            out.push(delivery.message);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restart_with_file_storage_loses_no_acknowledged_message() {
    let mut nats = NatsServer::start_jetstream().unwrap();
    let bus = NatsBus::connect(&NatsOptions::new(nats.address()))
        .await
        .unwrap();
    let publisher = JetStreamPublisher::new(
        &bus,
        publisher_options("durable", &["durable.>"]),
        metrics::Counter::noop(),
    )
    .await
    .unwrap();
    const TOTAL: u64 = 3000;
    let message = |seq: u64| BusMessage {
        subject: "durable.seq".into(),
        headers: MessageHeaders::default(),
        payload: seq.to_string().into(),
    };
    for seq in 0..TOTAL {
        if seq == TOTAL / 2 {
            // Everything so far is acknowledged, hence stored on disk.
            publisher.settle().await.unwrap();
            nats.restart().unwrap();
        }
        publisher.send(message(seq)).await.unwrap();
    }
    // The messages sent while the server was down were kept and published again.
    publisher
        .settle()
        .await
        .expect("every message acknowledged in the end");

    let reader = NatsBus::connect(&NatsOptions::new(nats.address()))
        .await
        .unwrap();
    let stored = read_all(&reader, "durable", "check").await;
    let seqs: Vec<u64> = stored
        .iter()
        .map(|m| std::str::from_utf8(&m.payload).unwrap().parse().unwrap())
        .collect();
    let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
    let missing: Vec<u64> = (0..TOTAL).filter(|s| !distinct.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "{} messages lost, e.g. {:?}; server log: {}",
        missing.len(),
        &missing[..missing.len().min(10)],
        nats.log()
    );
    println!(
        "{} messages stored for {TOTAL} sent ({} duplicates)",
        seqs.len(),
        seqs.len() - distinct.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_headers_travel_through_jetstream_unchanged() {
    let nats = NatsServer::start_jetstream().unwrap();
    let bus = NatsBus::connect(&NatsOptions::new(nats.address()))
        .await
        .unwrap();
    let publisher = JetStreamPublisher::new(
        &bus,
        publisher_options("fenced", &["fenced.>"]),
        metrics::Counter::noop(),
    )
    .await
    .unwrap();
    let headers = MessageHeaders {
        target: Some("10.0.0.1:57400".into()),
        subscription: Some("port stats".into()),
        fencing_token: Some(42),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
    };
    publisher
        .send(BusMessage {
            subject: "fenced.r1.s".into(),
            headers: headers.clone(),
            payload: "[]".into(),
        })
        .await
        .unwrap();
    publisher.settle().await.unwrap();
    let stored = read_all(&bus, "fenced", "reader").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].headers, headers);
    assert_eq!(stored[0].subject, "fenced.r1.s");

    // A core-NATS subscriber on the stream's subjects sees the same headers (the stream
    // does not replace the bus contract).
    let mut live = gnomon_bus::Bus::subscribe(&bus, "fenced.>", None)
        .await
        .unwrap();
    publisher
        .send(BusMessage {
            subject: "fenced.r1.s".into(),
            headers: headers.clone(),
            payload: "[]".into(),
        })
        .await
        .unwrap();
    publisher.settle().await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), live.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.headers, headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_jetstream_is_down_the_publisher_keeps_a_bounded_buffer_and_counts_drops() {
    let mut nats = NatsServer::start_jetstream().unwrap();
    let bus = NatsBus::connect(&NatsOptions::new(nats.address()))
        .await
        .unwrap();
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    const BOUND: usize = 10;
    let publisher = JetStreamPublisher::new(
        &bus,
        PublisherOptions {
            window: 4,
            retry_capacity: BOUND,
            ack_timeout: Duration::from_millis(300),
            retry_wait: Duration::from_millis(500),
            ..publisher_options("outage", &["outage.>"])
        },
        metrics::Counter::from_arc(dropped.clone()),
    )
    .await
    .unwrap();
    let message = |seq: u64| BusMessage {
        subject: "outage.seq".into(),
        headers: MessageHeaders::default(),
        payload: seq.to_string().into(),
    };
    publisher.send(message(0)).await.unwrap();
    publisher.settle().await.unwrap();

    // The server is gone: unacknowledged messages wait in the bounded buffer, the oldest
    // beyond it are dropped and counted.
    nats.stop();
    const SENT: u64 = 40;
    for seq in 1..=SENT {
        publisher.send(message(seq)).await.unwrap();
        assert!(publisher.retrying().await <= BOUND);
    }
    let counted = dropped.load(std::sync::atomic::Ordering::Relaxed);
    assert!(counted > 0, "nothing counted as dropped during the outage");

    // Back again: what was kept is published again; every message is stored or counted.
    nats.restart().unwrap();
    eventually(
        "the retry buffer to drain",
        Duration::from_secs(30),
        || async {
            publisher.send(message(SENT + 1)).await.ok()?;
            (publisher.retrying().await == 0).then_some(())
        },
    )
    .await
    .unwrap();
    let _ = publisher.settle().await;
    let counted = dropped.load(std::sync::atomic::Ordering::Relaxed);
    let reader = NatsBus::connect(&NatsOptions::new(nats.address()))
        .await
        .unwrap();
    let stored: BTreeSet<u64> = read_all(&reader, "outage", "check")
        .await
        .iter()
        .map(|m| std::str::from_utf8(&m.payload).unwrap().parse().unwrap())
        .filter(|seq| (1..=SENT).contains(seq))
        .collect();
    assert!(
        stored.len() as u64 + counted >= SENT,
        "{} of {SENT} stored and {counted} counted as dropped: some vanished uncounted",
        stored.len()
    );
    assert!(
        !stored.is_empty(),
        "nothing kept through the outage was published again"
    );
    println!(
        "outage: {} of {SENT} stored, {counted} counted as dropped",
        stored.len()
    );
}
