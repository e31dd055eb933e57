//! `e2e_latency_p99_ms` (issue 19): how old a sample is when the exporter has stored it —
//! the device's notification timestamp to the end of the exporter's ingest, through a
//! `gnomon collector` process and a real nats-server, at about 500 k updates/s.
//!
//! 1000 simulated devices (a separate `gnomon simulator` process) with 63 interfaces × 8
//! counters each, sampled every second: ~504 k updates/s in one notification per device per
//! second, stamped by the device when it is sent. The exporter side runs in this process:
//! the NATS input's message handler (fencing, decode, the Prometheus output's store) on
//! every message of `telemetry.>`, as the exporter's input loop calls it; a message's
//! latency is the wall clock after the handler returns minus the notification's timestamp
//! (one clock: everything is on this machine). Also reported: the update rate reached.
//! The first 15 s are not measured: they hold the subscriptions' start and the creation of
//! half a million series (1.7 µs each, a backlog of seconds on two cores), not the steady
//! state the goal is about. Goal: p99 ≤ 10 ms.

use crate::report;
use anyhow::Context;
use futures::StreamExt;
use gnomon_bus::{Bus, NatsBus, NatsOptions};
use gnomon_config::nats_input::NatsInputConfig;
use gnomon_exporter::input::NatsInput;
use gnomon_exporter::{ExporterStats, Fencing, PrometheusOutput};
use gnomon_testkit::{spawn_gnomon, start_simulator, ChildProcess, NatsServer, SimulatorSpec};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DEVICES: usize = 1000;
const INTERFACES: usize = 63;
const WARM_UP: Duration = Duration::from_secs(15);
const MEASURE: Duration = Duration::from_secs(10);

fn unix_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Starts the simulator and returns it with its device addresses.
async fn simulator(dir: &std::path::Path) -> anyhow::Result<(ChildProcess, Vec<String>)> {
    let spec = SimulatorSpec::new(DEVICES, INTERFACES)
        .update_rate("1s")
        .args(["--flap-period", "0s"]);
    let simulator = start_simulator(dir, "simulator", &spec, Duration::from_secs(60)).await?;
    Ok((simulator.process, simulator.devices))
}

fn exporter_input() -> anyhow::Result<NatsInput> {
    let config: NatsInputConfig =
        serde_json::from_value(serde_json::json!({"format": "proto"})).context("input config")?;
    let output_config =
        serde_json::from_value(serde_json::json!({"expiration": "1h"})).context("output config")?;
    Ok(NatsInput {
        name: "latency".into(),
        config,
        queue: "latency".into(),
        client_name: "latency".into(),
        outputs: vec![Arc::new(PrometheusOutput::new("latency", output_config))],
        fencing: Arc::new(Fencing::default()),
        stats: Arc::new(ExporterStats::default()),
        chain: None,
        gnmi_cache: None,
        shard: None,
    })
}

/// The notification timestamp of a proto message, read from the wire without decoding the
/// rest (the handler has decoded it already; a second full decode would slow the consumer).
fn notification_timestamp(mut payload: &[u8]) -> Option<i64> {
    use prost::encoding::{decode_key, decode_varint, WireType};
    // SubscribeResponse.update (field 1) holds the Notification.
    while !payload.is_empty() {
        let (field, wire) = decode_key(&mut payload).ok()?;
        if wire != WireType::LengthDelimited {
            prost::encoding::skip_field(wire, field, &mut payload, Default::default()).ok()?;
            continue;
        }
        let len = usize::try_from(decode_varint(&mut payload).ok()?).ok()?;
        let (body, rest) = payload.split_at_checked(len)?;
        if field != 1 {
            payload = rest;
            continue;
        }
        let mut notification = body;
        // Notification.timestamp is field 1, a varint.
        while !notification.is_empty() {
            let (field, wire) = decode_key(&mut notification).ok()?;
            if field == 1 && wire == WireType::Varint {
                return Some(decode_varint(&mut notification).ok()? as i64);
            }
            prost::encoding::skip_field(wire, field, &mut notification, Default::default()).ok()?;
        }
        return None;
    }
    None
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn e2e_latency_p99_ms() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let nats = NatsServer::start()?;
        let (simulator, devices) = simulator(dir.path()).await?;
        let targets: String = devices
            .iter()
            .enumerate()
            .map(|(i, address)| format!("  t{i}:\n    address: {address}\n"))
            .collect();
        let config = format!(
            "insecure: true\nencoding: proto\ntargets:\n{targets}subscriptions:\n  counters:\n    paths: [\"/interfaces/interface/state/counters\"]\n    stream-mode: sample\n    sample-interval: 1s\noutputs:\n  nats:\n    type: nats\n    address: {}\n    subject-prefix: telemetry\n    format: proto\n",
            nats.address()
        );
        let collector = spawn_gnomon(dir.path(), "collector", "collector", &config)?;
        let bus = NatsBus::connect(&NatsOptions::new(nats.url())).await?;
        let mut subscription = bus.subscribe("telemetry.>", None).await?;
        let input = exporter_input()?;

        let mut latencies_ms = Vec::with_capacity(20_000);
        // Until the message reached this process's handler: the collector and NATS part.
        let mut received_ms = Vec::with_capacity(20_000);
        // The handler's own time per message.
        let mut handler_ms = Vec::with_capacity(20_000);
        let mut updates_before = 0;
        let started = Instant::now();
        let mut measuring_since = None;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), subscription.next()).await;
            let Ok(Some(message)) = next else {
                anyhow::bail!(
                    "no message for 10 s\n{}\n{}",
                    collector.log(),
                    simulator.log()
                );
            };
            let received = unix_now_ns();
            input.process(&message);
            let ingested = unix_now_ns();
            let Some(timestamp) = notification_timestamp(&message.payload) else {
                continue;
            };
            if started.elapsed() < WARM_UP {
                continue;
            }
            let since = *measuring_since.get_or_insert_with(|| {
                updates_before = input.stats.updates_total();
                Instant::now()
            });
            if since.elapsed() >= MEASURE {
                break;
            }
            latencies_ms.push((ingested - timestamp) as f64 / 1e6);
            received_ms.push((received - timestamp) as f64 / 1e6);
            handler_ms.push((ingested - received) as f64 / 1e6);
        }
        let updates = input.stats.updates_total() - updates_before;
        let rate = updates as f64 / MEASURE.as_secs_f64();
        latencies_ms.sort_by(|a, b| a.total_cmp(b));
        let p50 = percentile(&latencies_ms, 50.0);
        let p99 = percentile(&latencies_ms, 99.0);
        let max = latencies_ms.last().copied().unwrap_or(f64::NAN);
        received_ms.sort_by(|a, b| a.total_cmp(b));
        handler_ms.sort_by(|a, b| a.total_cmp(b));
        eprintln!(
            "until the handler: p50 {:.2} ms, p99 {:.2} ms; in the handler: p50 {:.2} ms, p99 {:.2} ms",
            percentile(&received_ms, 50.0),
            percentile(&received_ms, 99.0),
            percentile(&handler_ms, 50.0),
            percentile(&handler_ms, 99.0)
        );
        eprintln!(
            "{} messages, {updates} updates in {MEASURE:?} ({rate:.0} updates/s); latency p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
            latencies_ms.len()
        );
        report("e2e_latency_p99_ms", p99, "ms");
        report("e2e_latency_p50_ms", p50, "ms");
        report("e2e_updates_per_s", rate, "updates/s");
        anyhow::ensure!(
            rate > 0.8 * (DEVICES * INTERFACES * 8) as f64,
            "only {rate:.0} updates/s reached: the pipeline did not keep up, so the latency above is a backlog's"
        );
        drop(collector);
        drop(simulator);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::notification_timestamp;
    use gnomon_gnmi::proto::gnmi::{subscribe_response::Response, Notification, SubscribeResponse};
    use prost::Message;

    #[test]
    fn the_timestamp_is_read_from_the_wire() {
        let update = SubscribeResponse {
            response: Some(Response::Update(Notification {
                timestamp: 1_700_000_000_123_456_789,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(
            notification_timestamp(&update.encode_to_vec()),
            Some(1_700_000_000_123_456_789)
        );
        let sync = SubscribeResponse {
            response: Some(Response::SyncResponse(true)),
            ..Default::default()
        };
        assert_eq!(notification_timestamp(&sync.encode_to_vec()), None);
        assert_eq!(notification_timestamp(&[0x0a, 0x05, 0x08]), None);
    }
}
