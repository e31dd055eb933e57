//! `remote_write_samples_per_s` (issue 17): samples per second a `prometheus_write` output
//! delivers into a local remote-write receiver.
//!
//! The output's buffer is fed as its ingest feeds it (one push per sample: series key, name,
//! labels), 100 000 series × 20 rounds of fresh timestamps = 2 M samples, the feeder keeping
//! under the buffer's bound so nothing is dropped; the output's writer (the real one: batches
//! of `max-time-series-per-write`, snappy + protobuf, reqwest through the tower stack) posts
//! to an HTTP receiver in this process that decompresses every request and counts its samples
//! by walking the protobuf framing (a real backend runs elsewhere; a full decode here would
//! take the writer's CPU on this 2-core machine).
//! The figure is samples the receiver counted divided by the time from the first push to the
//! last sample counted. gnmic's defaults except `buffer-size` (its maximum, 1 000 000) and
//! `interval` (10 ms: with a full batch the writer does not wait for the interval anyway).
//! Goal ≥ 1 M samples/s.

use crate::report;
use anyhow::Context;
use gnomon_config::prometheus_write_output::PrometheusWriteOutputConfig;
use gnomon_exporter::remote_write::{run_writer, RemoteWriteClient, WriteBuffer};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const SERIES: usize = 100_000;
const ROUNDS: usize = 20;

/// The samples of a remote-write body (snappy, then WriteRequest: timeseries = field 1, in
/// each TimeSeries samples = field 2), counted without building the messages.
fn samples_in(body: &[u8]) -> Option<u64> {
    use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
    let raw = snap::raw::Decoder::new().decompress_vec(body).ok()?;
    let mut request = raw.as_slice();
    let mut samples = 0;
    while !request.is_empty() {
        let (field, wire) = decode_key(&mut request).ok()?;
        if field != 1 || wire != WireType::LengthDelimited {
            skip_field(wire, field, &mut request, DecodeContext::default()).ok()?;
            continue;
        }
        let len = usize::try_from(decode_varint(&mut request).ok()?).ok()?;
        let (mut series, rest) = request.split_at_checked(len)?;
        request = rest;
        while !series.is_empty() {
            let (field, wire) = decode_key(&mut series).ok()?;
            if field == 2 {
                samples += 1;
            }
            skip_field(wire, field, &mut series, DecodeContext::default()).ok()?;
        }
    }
    Some(samples)
}

/// Starts the receiver; returns its URL and the sample counter.
async fn receiver(stop: CancellationToken) -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let samples = Arc::new(AtomicU64::new(0));
    let counted = samples.clone();
    let app = axum::Router::new().route(
        "/push",
        axum::routing::post(move |body: axum::body::Bytes| {
            let counted = counted.clone();
            async move {
                match samples_in(&body) {
                    Some(n) => {
                        counted.fetch_add(n, Ordering::Relaxed);
                        axum::http::StatusCode::NO_CONTENT
                    }
                    None => axum::http::StatusCode::BAD_REQUEST,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/push", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok((url, samples))
}

fn config(url: &str) -> anyhow::Result<PrometheusWriteOutputConfig> {
    let value = serde_json::json!({
        "url": url,
        "buffer-size": 1_000_000,
        "interval": "10ms",
    });
    let section = gnomon_config::Section::from_value("outputs.bench", &value)?;
    PrometheusWriteOutputConfig::from_section(&section).context("bench remote write config")
}

pub fn samples_per_s() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let stop = CancellationToken::new();
    let (url, received) = runtime.block_on(receiver(stop.clone()))?;
    let config = config(&url)?;
    let buffer = Arc::new(WriteBuffer::new("bench", &config));
    let client = RemoteWriteClient::new("bench", &config)?;
    let writer = runtime.spawn(run_writer(
        buffer.clone(),
        client,
        config.clone(),
        stop.clone(),
    ));
    let series: Vec<(String, String)> = (0..SERIES)
        .map(|i| {
            let name = format!("interfaces_interface_state_counters_c{}", i % 10);
            let key = format!(
                "{name}{{interface_name=\"ethernet-1/{}\",source=\"router-{}\"}}",
                i / 10 % 100,
                i / 1000
            );
            (name, key)
        })
        .collect();
    let labels: Vec<[(String, String); 2]> = (0..SERIES)
        .map(|i| {
            [
                (
                    "interface_name".to_string(),
                    format!("ethernet-1/{}", i / 10 % 100),
                ),
                ("source".to_string(), format!("router-{}", i / 1000)),
            ]
        })
        .collect();
    let total = (SERIES * ROUNDS) as u64;
    let high_water = config.buffer_size / 2;
    let started = Instant::now();
    for round in 0..ROUNDS {
        let timestamp = 1_700_000_000_000_000_000 + round as i64 * 1_000_000_000;
        for ((name, key), labels) in series.iter().zip(&labels) {
            while buffer.len() >= high_water {
                std::thread::sleep(Duration::from_micros(200));
            }
            let labels = labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            anyhow::ensure!(
                buffer.push(key.as_bytes(), name, labels, round as f64, timestamp),
                "the buffer dropped a sample"
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.load(Ordering::Relaxed) < total {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the receiver counted {} of {total} samples",
            received.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let counts = buffer.counts();
    let dropped = counts.dropped_buffer_full.load(Ordering::Relaxed)
        + counts.dropped_send_failed.load(Ordering::Relaxed)
        + counts.dropped_refused.load(Ordering::Relaxed);
    eprintln!(
        "{total} samples in {elapsed:.2} s, {} requests, {dropped} dropped (max-time-series-per-write {})",
        counts.requests_ok.load(Ordering::Relaxed),
        config.max_time_series_per_write
    );
    anyhow::ensure!(dropped == 0, "{dropped} samples dropped");
    stop.cancel();
    runtime.block_on(writer)?;
    report(
        "remote_write_samples_per_s",
        total as f64 / elapsed,
        "samples/s",
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::samples_in;
    use gnomon_exporter::remote_write::WriteBuffer;

    #[test]
    fn the_receiver_counts_what_the_writer_encodes() {
        let config = super::config("http://x/push").unwrap();
        let buffer = WriteBuffer::new("t", &config);
        for (key, ts) in [("a", 1), ("a", 2), ("b", 1)] {
            buffer.push(
                key.as_bytes(),
                "m",
                [("k", key)].into_iter(),
                1.0,
                ts * 1_000_000_000,
            );
        }
        let mut total = 0;
        while let Some(batch) = buffer.take_batch() {
            // Two samples of "a", one of "b": none share a timestamp, so none is folded.
            assert_eq!(samples_in(&batch.body), Some(batch.samples));
            total += batch.samples;
        }
        assert_eq!(total, 3);
        assert_eq!(samples_in(b"not snappy"), None);
    }
}
