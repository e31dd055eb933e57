//! Exporter benchmarks (issue 6): scrape time at 1 M series against
//! metrics-exporter-prometheus rendering the same series, memory per series, and CPU per
//! ingested update.
//!
//! Series shape (as in the reference measurement): 10 counter names × 1000 sources × 100
//! interfaces, labels `interface_name`, `source`, `subscription_name`. Data enters through
//! the real ingest path: gnmic event JSON (one event per update, 10 updates per message)
//! handed to the NATS input's message handler with collector headers.

use crate::report;
use bytes::Bytes;
use gnomon_bus::{BusMessage, MessageHeaders};
use gnomon_config::nats_input::NatsInputConfig;
use gnomon_exporter::input::NatsInput;
use gnomon_exporter::processing::SharedChain;
use gnomon_exporter::Fencing;
use gnomon_exporter::{ExporterStats, PrometheusOutput};
use std::sync::Arc;
use std::time::Instant;

const COUNTERS: [&str; 10] = [
    "in-octets",
    "out-octets",
    "in-unicast-pkts",
    "out-unicast-pkts",
    "in-broadcast-pkts",
    "out-broadcast-pkts",
    "in-multicast-pkts",
    "out-multicast-pkts",
    "in-errors",
    "out-errors",
];
const SOURCES: usize = 1000;
const INTERFACES: usize = 100;
const TS: u64 = 1_700_000_000_000_000_000;

/// One gnmic event-format message: one notification of `interface` on `source` with an
/// update per counter, each becoming its own event.
fn message(source: usize, interface: usize, round: u64) -> BusMessage {
    message_with_status(source, interface, round, false)
}

/// [`message`], with one more update (`oper-status: UP`) when `with_status`.
fn message_with_status(
    source: usize,
    interface: usize,
    round: u64,
    with_status: bool,
) -> BusMessage {
    let mut json = String::with_capacity(3000);
    json.push('[');
    let tags = format!(
        r#""tags":{{"interface_name":"ethernet-1/{interface}","source":"router-{source}.lab:57400","subscription-name":"port-stats"}}"#
    );
    for (i, counter) in COUNTERS.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        let value = round * 1_000_003 + (source * INTERFACES + interface) as u64 * 7 + i as u64;
        json.push_str(&format!(
            r#"{{"name":"port-stats","timestamp":{ts},{tags},"values":{{"/interfaces/interface/state/counters/{counter}":"{value}"}}}}"#,
            ts = TS + round
        ));
    }
    if with_status {
        json.push_str(&format!(
            r#",{{"name":"port-stats","timestamp":{ts},{tags},"values":{{"{OPER_STATUS}":"UP"}}}}"#,
            ts = TS + round
        ));
    }
    json.push(']');
    collector_message(source, Bytes::from(json))
}

/// A message as a collector publishes it for `router-<source>` (subject, headers, fencing
/// token 1).
fn collector_message(source: usize, payload: Bytes) -> BusMessage {
    BusMessage {
        subject: format!("telemetry.router-{source}.port-stats"),
        headers: MessageHeaders {
            target: Some(format!("router-{source}")),
            subscription: Some("port-stats".into()),
            fencing_token: Some(1),
            traceparent: None,
        },
        payload,
    }
}

fn exporter_input(output: Arc<PrometheusOutput>) -> NatsInput {
    exporter_input_with(output, None)
}

/// The input with `chain` as its `event-processors`.
fn exporter_input_with(output: Arc<PrometheusOutput>, chain: Option<SharedChain>) -> NatsInput {
    NatsInput {
        name: "bench".into(),
        config: NatsInputConfig::default(),
        queue: "bench".into(),
        client_name: "bench".into(),
        outputs: vec![output],
        fencing: Arc::new(Fencing::default()),
        stats: Arc::new(ExporterStats::default()),
        chain,
        gnmi_cache: None,
        shard: None,
    }
}

/// The value event-value-tag turns into a label in `scrape_1m_series_value_tag_s`.
const OPER_STATUS: &str = "/interfaces/interface/state/oper-status";

fn new_output() -> Arc<PrometheusOutput> {
    // Series must survive the whole run; the scrape still walks them for expiry.
    let config =
        serde_json::from_value(serde_json::json!({"expiration": "1h"})).expect("static config");
    Arc::new(PrometheusOutput::new("bench", config))
}

/// Loads `sources` × 100 × 10 series through the ingest path.
fn load(input: &NatsInput, sources: usize, round: u64) {
    for source in 0..sources {
        for interface in 0..INTERFACES {
            input.process(&message(source, interface, round));
        }
    }
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// `scrape_1m_series_s` (ours) and `scrape_1m_series_crate_s` (metrics-exporter-prometheus)
/// on the same 1 M series.
pub fn scrape_1m_series() -> anyhow::Result<()> {
    let output = new_output();
    let input = exporter_input(output.clone());
    load(&input, SOURCES, 1);
    let series = output.series_count();
    anyhow::ensure!(
        series == SOURCES * INTERFACES * COUNTERS.len(),
        "expected 1M series, have {series}"
    );

    let mut plain = Vec::new();
    let mut body_len = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let (body, _) = gnomon_exporter::http::render_body(&output, false)?;
        plain.push(started.elapsed().as_secs_f64());
        body_len = body.len();
    }
    let mut gzip = Vec::new();
    let mut gzip_len = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let (body, _) = gnomon_exporter::http::render_body(&output, true)?;
        gzip.push(started.elapsed().as_secs_f64());
        gzip_len = body.len();
    }
    let ours = median(plain);
    drop(input);
    drop(output);
    report("scrape_1m_series_s", ours, "s");
    report("scrape_1m_series_gzip_s", median(gzip), "s");
    report("scrape_1m_series_body_bytes", body_len as f64, "bytes");
    report("scrape_1m_series_gzip_body_bytes", gzip_len as f64, "bytes");

    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        for source in 0..SOURCES {
            let source_label = format!("router-{source}.lab:57400");
            for interface in 0..INTERFACES {
                let interface_label = format!("ethernet-1/{interface}");
                for (i, counter) in COUNTERS.iter().enumerate() {
                    let name = format!(
                        "interfaces_interface_state_counters_{}",
                        counter.replace('-', "_")
                    );
                    metrics::gauge!(
                        name,
                        "interface_name" => interface_label.clone(),
                        "source" => source_label.clone(),
                        "subscription_name" => "port-stats"
                    )
                    .set(((source * INTERFACES + interface) * 7 + i) as f64);
                }
            }
        }
    });
    let mut crate_times = Vec::new();
    let mut crate_len = 0;
    for _ in 0..2 {
        let started = Instant::now();
        let body = handle.render();
        crate_times.push(started.elapsed().as_secs_f64());
        crate_len = body.len();
    }
    let theirs = crate_times.iter().copied().fold(f64::INFINITY, f64::min);
    report("scrape_1m_series_crate_s", theirs, "s");
    report(
        "scrape_1m_series_crate_body_bytes",
        crate_len as f64,
        "bytes",
    );
    report("scrape_1m_series_speedup", theirs / ours, "x");
    Ok(())
}

/// Sources of the sharded benchmark: 10 000 × 100 interfaces × 10 counters = 10 M series.
const SHARDED_SOURCES: usize = 10_000;
const SHARDED_SHARDS: u32 = 4;

/// `sharded_scrape_10m_series_s`: 10 M series over 4 shards, each shard an output fed by a
/// sharded input holding its shard (the shards are separate processes in a deployment, one
/// process here). Every message goes to every shard's input, whose shard check keeps only
/// its own targets (a deployment's subjects would not even deliver the others). The result
/// is the slowest shard's scrape (render, median of 3); `sharded_bytes_per_series` is the
/// resident memory growth over all shards divided by the 10 M series.
pub fn sharded_scrape_10m_series() -> anyhow::Result<()> {
    let before = resident_bytes();
    let (_, targets) = tokio::sync::watch::channel(Arc::new(std::collections::BTreeSet::new()));
    let shards: Vec<(Arc<PrometheusOutput>, NatsInput)> = (0..SHARDED_SHARDS)
        .map(|shard| {
            let output = new_output();
            let mut input = exporter_input(output.clone());
            input.shard = Some(gnomon_exporter::input::InputShard {
                state: gnomon_exporter::shard::ShardState::fixed(SHARDED_SHARDS, shard),
                subjects: gnomon_exporter::shard::ShardSubjects::from_input_subject("telemetry.>")
                    .map_err(anyhow::Error::msg)?,
                targets: targets.clone(),
            });
            Ok((output, input))
        })
        .collect::<anyhow::Result<_>>()?;
    for source in 0..SHARDED_SOURCES {
        for interface in 0..INTERFACES {
            let message = message(source, interface, 1);
            for (_, input) in &shards {
                input.process(&message);
            }
        }
    }
    let after = resident_bytes();
    let counts: Vec<usize> = shards.iter().map(|(o, _)| o.series_count()).collect();
    let series: usize = counts.iter().sum();
    anyhow::ensure!(
        series == SHARDED_SOURCES * INTERFACES * COUNTERS.len(),
        "expected 10 M series over the shards, have {series} ({counts:?})"
    );
    let mut slowest: f64 = 0.0;
    for (shard, (output, _)) in shards.iter().enumerate() {
        let mut times = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let (body, _) = gnomon_exporter::http::render_body(output, false)?;
            times.push(started.elapsed().as_secs_f64());
            drop(body);
        }
        let time = median(times);
        eprintln!(
            "shard {shard}: {} series, scrape {time:.3} s",
            output.series_count()
        );
        slowest = slowest.max(time);
    }
    report("sharded_scrape_10m_series_s", slowest, "s");
    report(
        "sharded_bytes_per_series",
        after.saturating_sub(before) as f64 / series as f64,
        "bytes",
    );
    let heap: usize = shards.iter().map(|(o, _)| o.heap_bytes()).sum();
    report(
        "sharded_heap_bytes_per_series",
        heap as f64 / series as f64,
        "bytes",
    );
    Ok(())
}

/// `exporter_bytes_per_series`: resident memory growth per series at 1 M series; and the
/// output's heap per series after the first round and after the second (which learns
/// every message's shape).
pub fn bytes_per_series() -> anyhow::Result<()> {
    let before = resident_bytes();
    let output = new_output();
    let input = exporter_input(output.clone());
    load(&input, SOURCES, 1);
    let after = resident_bytes();
    let series = output.series_count() as f64;
    report(
        "exporter_bytes_per_series",
        (after.saturating_sub(before)) as f64 / series,
        "bytes",
    );
    report(
        "exporter_heap_bytes_per_series",
        output.heap_bytes() as f64 / series,
        "bytes",
    );
    // A second sighting of each message learns its shape: the steady state's heap.
    load(&input, SOURCES, 2);
    report(
        "exporter_heap_bytes_per_series_learnt",
        output.heap_bytes() as f64 / series,
        "bytes",
    );
    Ok(())
}

/// `exporter_cpu_us_per_update`: thread CPU time per sample update of existing series,
/// from the NATS message (JSON decode, fencing, naming, store) — 100 k series, median of
/// [`UPDATE_ROUNDS`] rounds.
pub fn cpu_us_per_update() -> anyhow::Result<()> {
    let messages = update_messages();
    let plain = UpdateBench::new(None, &messages[0])?;
    let rounds: Vec<f64> = (0..UPDATE_ROUNDS)
        .map(|r| plain.round_us(&messages[1 + r % (messages.len() - 1)]))
        .collect();
    plain.check()?;
    report("exporter_cpu_us_per_update", median(rounds), "us");
    report(
        "exporter_cpu_us_per_update_json_decode_part",
        decode_us(&messages[1..]),
        "us",
    );
    report("exporter_cpu_us_per_insert", plain.insert_us, "us");
    Ok(())
}

/// `processors_ns_per_event`: the six-processor chain of issue 15 (event-strings path-base,
/// event-delete, event-add-tag, event-convert, event-drop and event-to-tag; the last two
/// match nothing) on records, thread CPU time per event; then the same chain applied to
/// gnmic events (conversion to records and back included).
pub fn processors_ns_per_event() -> anyhow::Result<()> {
    let ns = gnomon_processors::bench_chain_ns_per_event(2_000_000);
    report("processors_ns_per_event", ns, "ns");
    report(
        "processors_ns_per_event_with_event_conversion",
        gnomon_processors::bench::bench_chain_with_event_conversion_ns_per_event(1_000_000),
        "ns",
    );
    Ok(())
}

/// `exporter_cpu_us_per_update_with_processors`: [`cpu_us_per_update`] with the
/// six-processor chain on the exporter's input (so every message is converted to records,
/// processed and ingested from them). The input without processors is measured in the
/// same run, a round of each in turn, so that a noisy machine weighs on both alike; each
/// figure is the median of its rounds.
pub fn cpu_us_per_update_with_processors() -> anyhow::Result<()> {
    let messages = update_messages();
    let procs = gnomon_processors::bench::bench_processors();
    let chain = procs.chain(&gnomon_processors::bench::BENCH_CHAIN)?;
    let plain = UpdateBench::new(None, &messages[0])?;
    let processed = UpdateBench::new(SharedChain::new(chain), &messages[0])?;
    let mut plain_rounds = Vec::new();
    let mut processed_rounds = Vec::new();
    for r in 0..UPDATE_ROUNDS {
        let round = &messages[1 + r % (messages.len() - 1)];
        plain_rounds.push(plain.round_us(round));
        processed_rounds.push(processed.round_us(round));
    }
    plain.check()?;
    processed.check()?;
    report(
        "exporter_cpu_us_per_update_with_processors",
        median(processed_rounds),
        "us",
    );
    report("exporter_cpu_us_per_update", median(plain_rounds), "us");
    report(
        "exporter_cpu_us_per_insert_with_processors",
        processed.insert_us,
        "us",
    );
    Ok(())
}

/// `exporter_cpu_us_per_update_proto`: [`cpu_us_per_update`] for the collector's default
/// format — one `gnmi.SubscribeResponse` per message (prefix with the interface's key, ten
/// `uint_val` counters), as gnmic's proto NATS input reads it — next to the same run's prost
/// decode of those messages alone (`_prost_decode_part`). Also `_device_wide`: the same
/// series in one notification per device (no prefix, every update path keyed by its
/// interface: the shape the simulator and many devices send, and `e2e_latency_p99_ms`'s).
pub fn cpu_us_per_update_proto() -> anyhow::Result<()> {
    let per_interface: Vec<Vec<BusMessage>> = (0..4u64)
        .map(|round| {
            (0..100)
                .flat_map(|s| (0..INTERFACES).map(move |i| proto_message(s, i..i + 1, round)))
                .collect()
        })
        .collect();
    let device_wide: Vec<Vec<BusMessage>> = (0..4u64)
        .map(|round| {
            (0..100)
                .map(|s| proto_message(s, 0..INTERFACES, round))
                .collect()
        })
        .collect();
    let (per_update, per_interface_heap) = proto_rounds_us(&per_interface)?;
    let (device_wide_per_update, device_wide_heap) = proto_rounds_us(&device_wide)?;
    let decode = (0..5)
        .map(|_| {
            let started = thread_cpu_seconds();
            let mut updates = 0usize;
            for message in per_interface[1..].iter().flatten() {
                use prost::Message as _;
                updates +=
                    gnomon_gnmi::proto::gnmi::SubscribeResponse::decode(message.payload.as_ref())
                        .map_or(0, |r| match r.response {
                            Some(
                                gnomon_gnmi::proto::gnmi::subscribe_response::Response::Update(n),
                            ) => n.update.len(),
                            _ => 0,
                        });
            }
            (thread_cpu_seconds() - started) * 1e6 / updates.max(1) as f64
        })
        .fold(f64::INFINITY, f64::min);
    report("exporter_cpu_us_per_update_proto", per_update, "us");
    report(
        "exporter_cpu_us_per_update_proto_prost_decode_part",
        decode,
        "us",
    );
    report(
        "exporter_cpu_us_per_update_proto_device_wide",
        device_wide_per_update,
        "us",
    );
    // What the output holds per series after the rounds: the exposition and the shapes
    // learnt from the messages.
    report(
        "exporter_heap_bytes_per_series_proto",
        per_interface_heap,
        "bytes",
    );
    report(
        "exporter_heap_bytes_per_series_proto_device_wide",
        device_wide_heap,
        "bytes",
    );
    Ok(())
}

/// The median µs of thread CPU time per update of a proto input over rounds of `messages`
/// after the first (which inserts the series), and the output's heap bytes per series
/// after them.
fn proto_rounds_us(messages: &[Vec<BusMessage>]) -> anyhow::Result<(f64, f64)> {
    let output = new_output();
    let mut input = exporter_input(output.clone());
    input.config.format = gnomon_config::nats_input::NatsInputFormat::Proto;
    for message in &messages[0] {
        input.process(message);
    }
    let inserted = output.series_count();
    anyhow::ensure!(
        inserted == 100 * INTERFACES * COUNTERS.len(),
        "the first round inserted {inserted} series"
    );
    let rounds: Vec<f64> = (0..UPDATE_ROUNDS)
        .map(|r| {
            let started = thread_cpu_seconds();
            for message in &messages[1 + r % (messages.len() - 1)] {
                input.process(message);
            }
            (thread_cpu_seconds() - started) * 1e6 / inserted as f64
        })
        .collect();
    anyhow::ensure!(
        output.series_count() == inserted,
        "updates must not add series"
    );
    let heap_per_series = output.heap_bytes() as f64 / inserted as f64;
    Ok((median(rounds), heap_per_series))
}

/// One proto message: the counters of `interfaces` on `source`, one update per counter. A
/// single interface goes under the prefix `/interfaces/interface[name=…]/state/counters`;
/// several have no prefix and the interface's key on every update path.
fn proto_message(source: usize, interfaces: std::ops::Range<usize>, round: u64) -> BusMessage {
    use gnomon_gnmi::proto::gnmi::{
        subscribe_response, typed_value, Notification, Path, PathElem, SubscribeResponse,
        TypedValue, Update,
    };
    use prost::Message as _;
    let elem = |name: &str, keys: &[(&str, String)]| PathElem {
        name: name.to_string(),
        key: keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    };
    let counters_of = |interface: usize| {
        vec![
            elem("interfaces", &[]),
            elem("interface", &[("name", format!("ethernet-1/{interface}"))]),
            elem("state", &[]),
            elem("counters", &[]),
        ]
    };
    let under_prefix = interfaces.len() == 1;
    let prefix = under_prefix.then(|| Path {
        elem: counters_of(interfaces.start),
        ..Default::default()
    });
    let update = interfaces
        .flat_map(|interface| COUNTERS.iter().enumerate().map(move |c| (interface, c)))
        .map(|(interface, (i, counter))| {
            let mut elems = if under_prefix {
                Vec::new()
            } else {
                counters_of(interface)
            };
            elems.push(elem(counter, &[]));
            Update {
                path: Some(Path {
                    elem: elems,
                    ..Default::default()
                }),
                val: Some(TypedValue {
                    value: Some(typed_value::Value::UintVal(
                        round * 1_000_003 + (source * INTERFACES + interface) as u64 * 7 + i as u64,
                    )),
                }),
                ..Default::default()
            }
        })
        .collect();
    let response = SubscribeResponse {
        response: Some(subscribe_response::Response::Update(Notification {
            timestamp: (TS + round) as i64,
            prefix,
            update,
            ..Default::default()
        })),
        ..Default::default()
    };
    collector_message(source, Bytes::from(response.encode_to_vec()))
}

/// Rounds of updates measured per input (each round updates all 100 k series once).
const UPDATE_ROUNDS: usize = 9;

/// Four rounds of messages over 100 sources: the first inserts, the others update.
fn update_messages() -> Vec<Vec<BusMessage>> {
    const BENCH_SOURCES: usize = 100;
    (0..4)
        .map(|round| {
            (0..BENCH_SOURCES)
                .flat_map(|s| (0..INTERFACES).map(move |i| message(s, i, round)))
                .collect()
        })
        .collect()
}

/// An input (with `chain` as its processors) and its output, with one round inserted.
struct UpdateBench {
    output: Arc<PrometheusOutput>,
    input: NatsInput,
    inserted: usize,
    /// µs of thread CPU time per inserted series.
    insert_us: f64,
}

impl UpdateBench {
    fn new(chain: Option<SharedChain>, insert: &[BusMessage]) -> anyhow::Result<Self> {
        let output = new_output();
        let input = exporter_input_with(output.clone(), chain);
        let started = thread_cpu_seconds();
        for message in insert {
            input.process(message);
        }
        let inserted = output.series_count();
        anyhow::ensure!(inserted > 0, "the first round inserted no series");
        let insert_us = (thread_cpu_seconds() - started) * 1e6 / inserted as f64;
        Ok(Self {
            output,
            input,
            inserted,
            insert_us,
        })
    }

    /// µs of thread CPU time per update over one round of `messages`.
    fn round_us(&self, messages: &[BusMessage]) -> f64 {
        let started = thread_cpu_seconds();
        for message in messages {
            self.input.process(message);
        }
        (thread_cpu_seconds() - started) * 1e6 / self.inserted as f64
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.output.series_count() == self.inserted,
            "updates must not add series"
        );
        Ok(())
    }
}

/// The JSON decode alone (µs per event, the fastest of 5 passes), for attribution.
fn decode_us(rounds: &[Vec<BusMessage>]) -> f64 {
    (0..5)
        .map(|_| {
            let started = thread_cpu_seconds();
            let mut decoded = 0usize;
            for round in rounds {
                for message in round {
                    decoded += gnomon_exporter::wire::decode_events(&message.payload)
                        .map(|e| e.len())
                        .unwrap_or(0);
                }
            }
            (thread_cpu_seconds() - started) * 1e6 / decoded.max(1) as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// `scrape_1m_series_value_tag_s`: scrape time of 1 M series loaded through an input with
/// event-value-tag (each message carries an `oper-status` value that becomes the
/// `oper_status` label of its ten counters, as gnmic's documentation example does).
/// Processing happens at ingest, so the scrape is that of 1 M (slightly longer) series; the
/// same run's `scrape_1m_series_s` (no processors) is printed next to it.
pub fn scrape_1m_series_value_tag() -> anyhow::Result<()> {
    let plain = scrape_median(None)?;
    let procs = gnomon_processors::Processors::from_config(&serde_json::json!({
        "oper-status": {"event-value-tag": {
            "value-name": OPER_STATUS, "tag-name": "oper-status", "consume": true
        }}
    }))?;
    let tagged = scrape_median(SharedChain::new(procs.chain(&["oper-status"])?))?;
    report("scrape_1m_series_value_tag_s", tagged, "s");
    report("scrape_1m_series_s", plain, "s");
    Ok(())
}

/// Loads 1 M series through an input with `chain` (and, with a chain, the `oper-status`
/// update in every message) and returns the median of 5 scrapes (seconds).
fn scrape_median(chain: Option<SharedChain>) -> anyhow::Result<f64> {
    let with_status = chain.is_some();
    let output = new_output();
    let input = exporter_input_with(output.clone(), chain);
    for source in 0..SOURCES {
        for interface in 0..INTERFACES {
            input.process(&message_with_status(source, interface, 1, with_status));
        }
    }
    let series = output.series_count();
    anyhow::ensure!(
        series == SOURCES * INTERFACES * COUNTERS.len(),
        "expected 1M series, have {series}"
    );
    let mut times = Vec::new();
    let mut body = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        body = gnomon_exporter::http::render_body(&output, false)?.0;
        times.push(started.elapsed().as_secs_f64());
    }
    if with_status {
        let text = String::from_utf8_lossy(&body);
        anyhow::ensure!(
            text.contains("oper_status=\"UP\""),
            "event-value-tag did not label the series"
        );
    }
    Ok(median(times))
}
