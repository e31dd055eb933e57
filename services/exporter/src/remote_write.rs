//! gnmic's `prometheus_write` output: Prometheus remote write 1.0 (a snappy-compressed
//! `prometheus.WriteRequest` protobuf POSTed to `url`).
//!
//! Why this shape: ingest must never wait for the backend. The input hands events to a
//! [`PrometheusOutput`](crate::output::PrometheusOutput) in remote-write mode, which names
//! series exactly as the scrape output does (the same `naming::SeriesBuilder`, the same
//! processor chain and add-target) and pushes each sample into a [`WriteBuffer`]: a mutex
//! around a queue bounded by `buffer-size`. When it is full the sample is dropped and
//! counted (`gnomon_remote_write_dropped_samples_total{output,reason="buffer_full"}`, one
//! warning per minute); the input never blocks. One writer task per output drains the
//! buffer every `interval`, or as soon as `max-time-series-per-write` samples wait, into
//! requests of at most that many series, and sends them through a tower stack: a timeout
//! on each attempt inside a retry with backoff (`gnomon_common::retry`) on 5xx, 429,
//! timeouts and connection errors, up to `max-retries`; other 4xx are refusals, never
//! repeated. A batch that still fails is dropped and counted (`reason="send_failed"` or
//! `"refused"`) — while the backend is down the buffer fills and new samples are dropped
//! at the door, so memory stays bounded and what resumes first is the newest data.
//!
//! What it costs: a buffered sample is 24 bytes (series id, value, time) and no
//! allocation once its series is known — one hash of the series text and one lock per
//! sample. Each series is known once: its text and its labels already encoded as protobuf
//! (~250 bytes for gNMI series). Idle series stay known up to `buffer-size` or 100 000
//! series, whichever is larger (or twice those with waiting samples), and are forgotten
//! past that. The writer takes a batch under the lock (the samples and a reference to each
//! series' labels) and encodes it after: samples of one series are grouped into one
//! `TimeSeries`, sorted by time, one sample per timestamp (Prometheus refuses the whole
//! request for a duplicate timestamp with another value), written straight into the
//! request bytes. Labels are sorted by name, as remote write requires, so `__name__` comes
//! first unless a label sorts before it (names starting with an upper-case letter or `_0`).
//!
//! `metadata.include` sends one `MetricMetadata` per metric name seen (type unknown, help
//! `gNMIc generated metric`, as the scrape output's `untyped`) every `metadata.interval`, in
//! requests of `metadata.max-entries-per-write`; at most [`MAX_METADATA_NAMES`] names are
//! remembered.

use crate::stats;
use bytes::Bytes;
use foldhash::fast::FixedState;
use gnomon_common::log::Throttle;
use gnomon_common::retry::{Backoff, RetryClassify, RetryPolicy};
use gnomon_common::tls::ClientTlsOptions;
use gnomon_config::prometheus_write_output::PrometheusWriteOutputConfig;
use gnomon_config::Secret;
use hashbrown::HashTable;
use prost::Message;
use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

/// Metric names remembered for `metadata.include`.
pub const MAX_METADATA_NAMES: usize = 100_000;
/// Help text of the metadata entries (the scrape output's).
const METADATA_HELP: &str = crate::exposition::TELEMETRY_HELP;

/// The messages of `prometheus/prompb/{remote,types}.proto` remote write 1.0 needs.
pub mod proto {
    /// `prometheus.WriteRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
        #[prost(message, repeated, tag = "3")]
        pub metadata: Vec<MetricMetadata>,
    }

    /// `prometheus.TimeSeries` (samples only).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    /// `prometheus.Label`.
    #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `prometheus.Sample`: value and Unix milliseconds.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    /// `prometheus.MetricMetadata`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricMetadata {
        /// `MetricType`: 0 unknown, 1 counter, 2 gauge, …
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(string, tag = "2")]
        pub metric_family_name: String,
        #[prost(string, tag = "4")]
        pub help: String,
        #[prost(string, tag = "5")]
        pub unit: String,
    }
}

use proto::{MetricMetadata, WriteRequest};

/// The request body: protobuf, snappy block format.
pub fn encode(request: &WriteRequest) -> Vec<u8> {
    let raw = request.encode_to_vec();
    // Compressing a byte slice into a fresh vector cannot fail but for sizes beyond 4 GiB,
    // which a batch of at most 100 000 series never reaches.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

/// Decodes a body made by [`encode`] (tests, and a receiver's view of it).
pub fn decode(body: &[u8]) -> Result<WriteRequest, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("snappy: {e}"))?;
    WriteRequest::decode(raw.as_slice()).map_err(|e| format!("protobuf: {e}"))
}

/// A series the buffer has seen: its key, its labels already encoded, and how many of its
/// samples wait. Kept while idle (up to a bound) so that a series' next sample costs a
/// lookup, not the labels again.
struct KnownSeries {
    /// The series text (`name{labels}`), the identity.
    key: Box<[u8]>,
    hash: u64,
    /// The `TimeSeries.labels` fields, encoded once.
    labels: Arc<[u8]>,
    /// Samples of this series in `pending`.
    waiting: u32,
    /// Scratch of [`WriteBuffer::take_batch`]: its position in the batch being taken.
    batch_slot: u32,
    /// The newest millisecond of this series taken in an earlier batch (`i64::MIN` before
    /// the first): a later sample at that millisecond with another value is refused by
    /// every backend.
    newest_taken_ms: i64,
}

const NOT_IN_BATCH: u32 = u32::MAX;

/// One sample waiting to be written.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    series: u32,
    value: f64,
    timestamp_ms: i64,
}

/// A request body ready to send (snappy-compressed `WriteRequest`).
#[derive(Debug)]
pub struct Batch {
    pub body: Vec<u8>,
    /// Samples taken off the buffer for it (duplicates of a timestamp included).
    pub samples: u64,
    /// Series in it.
    pub series: usize,
}

/// Counts kept in atomics so tests and callers read them without a recorder.
#[derive(Debug, Default)]
pub struct WriteCounts {
    /// Samples accepted by the backend.
    pub written: AtomicU64,
    /// Samples dropped because the buffer was full.
    pub dropped_buffer_full: AtomicU64,
    /// Samples dropped because their request failed after the retries.
    pub dropped_send_failed: AtomicU64,
    /// Samples dropped because the backend refused them (4xx other than 429).
    pub dropped_refused: AtomicU64,
    /// Samples dropped because a sample of their series at the same millisecond was
    /// already taken for writing (the backend would refuse the whole request).
    pub dropped_duplicate_timestamp: AtomicU64,
    /// Requests that succeeded.
    pub requests_ok: AtomicU64,
    /// Metadata entries accepted.
    pub metadata_written: AtomicU64,
}

struct BufferState {
    /// Oldest first; a deque so taking a batch off the front costs the batch, not the
    /// whole buffer.
    pending: VecDeque<Waiting>,
    /// Known series by id; `None` marks a free id (listed in `free`).
    series: Vec<Option<KnownSeries>>,
    free: Vec<u32>,
    /// Ids of `series` by the hash of their key.
    index: HashTable<u32>,
    /// Idle series are forgotten when this many are known (see [`WriteBuffer::forget_idle`]).
    sweep_at: usize,
    /// The least `sweep_at` gets: `buffer-size` or [`IDLE_SERIES_KEPT`], the larger.
    sweep_floor: usize,
    names: BTreeSet<String>,
    full_warning: Throttle,
}

/// The bounded buffer between ingest and the writer.
pub struct WriteBuffer {
    output: String,
    capacity: usize,
    batch: usize,
    keep_names: bool,
    hasher: FixedState,
    state: Mutex<BufferState>,
    batch_ready: Notify,
    counts: WriteCounts,
    dropped_full: metrics::Counter,
    dropped_duplicate_timestamp: metrics::Counter,
}

/// Idle series kept at least (a fleet's worth: their next samples cost no allocation).
const IDLE_SERIES_KEPT: usize = 100_000;

impl WriteBuffer {
    pub fn new(output: &str, config: &PrometheusWriteOutputConfig) -> Self {
        let capacity = config.buffer_size.max(1);
        Self {
            output: output.to_string(),
            capacity,
            batch: config.max_time_series_per_write.max(1),
            keep_names: config.metadata.include,
            hasher: FixedState::default(),
            state: Mutex::new(BufferState {
                pending: VecDeque::new(),
                series: Vec::new(),
                free: Vec::new(),
                index: HashTable::new(),
                sweep_at: IDLE_SERIES_KEPT.max(capacity),
                sweep_floor: IDLE_SERIES_KEPT.max(capacity),
                names: BTreeSet::new(),
                full_warning: Throttle::new(Duration::from_secs(60)),
            }),
            batch_ready: Notify::new(),
            counts: WriteCounts::default(),
            dropped_full: dropped_counter(output, "buffer_full"),
            dropped_duplicate_timestamp: dropped_counter(output, "duplicate_timestamp"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BufferState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one sample; `false` (dropped and counted) when the buffer is full. Never waits
    /// for the writer. `labels` excludes `__name__` (read only for a series not seen
    /// before); `timestamp_ns` 0 means now.
    pub fn push<'l>(
        &self,
        key: &[u8],
        name: &str,
        labels: impl Iterator<Item = (&'l str, &'l str)>,
        value: f64,
        timestamp_ns: i64,
    ) -> bool {
        let timestamp_ms = if timestamp_ns == 0 {
            unix_now_ms()
        } else {
            timestamp_ns.div_euclid(1_000_000)
        };
        let hash = self.hasher.hash_one(key);
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.pending.len() >= self.capacity {
            self.counts
                .dropped_buffer_full
                .fetch_add(1, Ordering::Relaxed);
            self.dropped_full.increment(1);
            if let Some(suppressed) = state.full_warning.allow() {
                tracing::warn!(
                    output = %self.output,
                    buffer_size = self.capacity,
                    suppressed,
                    "remote write buffer full: samples are dropped until the backend takes writes again"
                );
            }
            return false;
        }
        let known = state.index.find(hash, |&id| {
            state.series[id as usize]
                .as_ref()
                .is_some_and(|s| &*s.key == key)
        });
        let id = match known {
            Some(&id) => id,
            None => {
                if self.keep_names && state.names.len() < MAX_METADATA_NAMES {
                    state.names.insert(name.to_string());
                }
                let series = KnownSeries {
                    key: key.into(),
                    hash,
                    labels: encode_labels(name, labels).into(),
                    waiting: 0,
                    batch_slot: NOT_IN_BATCH,
                    newest_taken_ms: i64::MIN,
                };
                state.insert(series)
            }
        };
        if let Some(series) = state.series[id as usize].as_mut() {
            series.waiting += 1;
        }
        state.pending.push_back(Waiting {
            series: id,
            value,
            timestamp_ms,
        });
        if state.pending.len() == self.batch {
            self.batch_ready.notify_one();
        }
        true
    }

    /// Samples waiting.
    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Series known (waiting or idle), for tests of the bound.
    pub fn known_series(&self) -> usize {
        let state = self.lock();
        state.series.len() - state.free.len()
    }

    /// The output's counts.
    pub fn counts(&self) -> &WriteCounts {
        &self.counts
    }

    /// Takes the oldest samples of at most `batch` distinct series, as one request body
    /// (what the writer sends next). The lock is held only to take them; grouping,
    /// encoding and compression happen after.
    ///
    /// Prometheus (and Mimir, Thanos) refuses a whole request when one sample has the
    /// millisecond of its series' newest with another value ("duplicate sample for
    /// timestamp": two updates of a value within one millisecond), losing every other
    /// series in it. Within a batch the last sample of a millisecond wins (see
    /// [`encode_series`]); a sample at the newest millisecond of its series taken in an
    /// earlier batch is dropped here and counted (`reason="duplicate_timestamp"`). Older
    /// samples are sent: whether they are accepted is the backend's out-of-order setting.
    pub fn take_batch(&self) -> Option<Batch> {
        // Each round takes at least one sample, so this ends.
        let (labels, samples) = loop {
            let (labels, samples) = self.take_samples()?;
            if !samples.is_empty() {
                break (labels, samples);
            }
        };
        let sample_count = samples.len() as u64;
        let (raw, series) = encode_series(&labels, samples);
        // Compressing a byte slice into a fresh vector cannot fail but for sizes beyond
        // 4 GiB, which a batch of at most 100 000 series never reaches.
        let body = snap::raw::Encoder::new()
            .compress_vec(&raw)
            .unwrap_or_default();
        Some(Batch {
            body,
            samples: sample_count,
            series,
        })
    }

    /// Under the lock: the encoded labels of the next batch's series and its samples
    /// `(series' batch position, ms, value)`, duplicate timestamps already dropped; `None`
    /// when nothing waits.
    #[allow(clippy::type_complexity)]
    fn take_samples(&self) -> Option<(Vec<Arc<[u8]>>, Vec<(u32, i64, f64)>)> {
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.pending.is_empty() {
            return None;
        }
        let mut labels: Vec<Arc<[u8]>> = Vec::new();
        let mut order: Vec<u32> = Vec::new();
        let mut taken = 0;
        for waiting in &state.pending {
            // A series with waiting samples is never forgotten; were it missing, its
            // sample is taken and skipped.
            let Some(series) = state.series[waiting.series as usize].as_mut() else {
                taken += 1;
                continue;
            };
            if series.batch_slot == NOT_IN_BATCH {
                if order.len() == self.batch {
                    break;
                }
                series.batch_slot = order.len() as u32;
                order.push(waiting.series);
                labels.push(series.labels.clone());
            }
            taken += 1;
        }
        let mut samples: Vec<(u32, i64, f64)> = Vec::with_capacity(taken);
        let mut duplicates = 0;
        for waiting in state.pending.drain(..taken) {
            if let Some(series) = state.series[waiting.series as usize].as_mut() {
                series.waiting -= 1;
                if waiting.timestamp_ms == series.newest_taken_ms {
                    duplicates += 1;
                    continue;
                }
                samples.push((series.batch_slot, waiting.timestamp_ms, waiting.value));
            }
        }
        for &(slot, timestamp_ms, _) in &samples {
            if let Some(series) = state.series[order[slot as usize] as usize].as_mut() {
                series.newest_taken_ms = series.newest_taken_ms.max(timestamp_ms);
            }
        }
        for id in order {
            if let Some(series) = state.series[id as usize].as_mut() {
                series.batch_slot = NOT_IN_BATCH;
            }
        }
        drop(guard);
        if duplicates > 0 {
            self.counts
                .dropped_duplicate_timestamp
                .fetch_add(duplicates, Ordering::Relaxed);
            self.dropped_duplicate_timestamp.increment(duplicates);
        }
        Some((labels, samples))
    }

    fn metadata(&self) -> Vec<MetricMetadata> {
        self.lock()
            .names
            .iter()
            .map(|name| MetricMetadata {
                r#type: 0,
                metric_family_name: name.clone(),
                help: METADATA_HELP.into(),
                unit: String::new(),
            })
            .collect()
    }
}

impl BufferState {
    /// Adds a series not known yet; returns its id.
    fn insert(&mut self, series: KnownSeries) -> u32 {
        if self.series.len() - self.free.len() >= self.sweep_at {
            self.forget_idle();
        }
        let hash = series.hash;
        let id = match self.free.pop() {
            Some(id) => {
                self.series[id as usize] = Some(series);
                id
            }
            None => {
                self.series.push(Some(series));
                (self.series.len() - 1) as u32
            }
        };
        let Self { index, series, .. } = self;
        index.insert_unique(hash, id, |&id| {
            series[id as usize].as_ref().map_or(0, |s| s.hash)
        });
        id
    }

    /// Forgets every series with no waiting sample. The next sweep comes when twice as
    /// many series as remain are known (at least the floor), so sweeps cost O(1) per
    /// insert, and the series kept are at most the floor or twice those with waiting
    /// samples (at most `buffer-size`), the larger.
    fn forget_idle(&mut self) {
        for id in 0..self.series.len() {
            let idle = self.series[id].as_ref().is_some_and(|s| s.waiting == 0);
            if idle {
                if let Some(series) = self.series[id].take() {
                    if let Ok(entry) = self.index.find_entry(series.hash, |&e| e as usize == id) {
                        entry.remove();
                    }
                    self.free.push(id as u32);
                }
            }
        }
        let known = self.series.len() - self.free.len();
        self.sweep_at = self.sweep_floor.max(known * 2);
    }
}

/// The `TimeSeries.labels` fields of a series: `__name__` and `labels`, sorted by name as
/// remote write requires.
fn encode_labels<'l>(name: &str, labels: impl Iterator<Item = (&'l str, &'l str)>) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
    let field_len = |text: &str| 1 + encoded_len_varint(text.len() as u64) + text.len();
    let mut all: Vec<(&str, &str)> = Vec::with_capacity(8);
    all.push(("__name__", name));
    all.extend(labels.map(|(n, v)| (n as &str, v as &str)));
    all.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::with_capacity(all.iter().map(|(n, v)| n.len() + v.len() + 8).sum());
    for (name, value) in all {
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint((field_len(name) + field_len(value)) as u64, &mut out);
        for (tag, text) in [(1, name), (2, value)] {
            encode_key(tag, WireType::LengthDelimited, &mut out);
            encode_varint(text.len() as u64, &mut out);
            out.extend_from_slice(text.as_bytes());
        }
    }
    out
}

/// A `WriteRequest` of the series whose encoded labels are `labels` (batch order) and the
/// samples `(series' batch position, ms, value)`: each series' samples sorted by time, one
/// per timestamp (the last pushed); series without samples are left out. Also returns how
/// many series it holds.
fn encode_series(labels: &[Arc<[u8]>], mut samples: Vec<(u32, i64, f64)>) -> (Vec<u8>, usize) {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
    // Stable: among equal timestamps of a series the last pushed stays last.
    samples.sort_by_key(|&(slot, timestamp, _)| (slot, timestamp));
    samples.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0 && later.1 == earlier.1;
        if same {
            earlier.2 = later.2;
        }
        same
    });
    let sample_len = |timestamp: i64| 1 + 8 + 1 + encoded_len_varint(timestamp as u64);
    let mut out =
        Vec::with_capacity(labels.iter().map(|l| l.len() + 6).sum::<usize>() + samples.len() * 24);
    let mut rest = samples.as_slice();
    let mut series = 0;
    for (slot, series_labels) in labels.iter().enumerate() {
        let run = rest.iter().take_while(|s| s.0 as usize == slot).count();
        if run == 0 {
            continue;
        }
        series += 1;
        let (own, next) = rest.split_at(run);
        rest = next;
        let body_len = series_labels.len()
            + own
                .iter()
                .map(|&(_, t, _)| {
                    let len = sample_len(t);
                    1 + encoded_len_varint(len as u64) + len
                })
                .sum::<usize>();
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(body_len as u64, &mut out);
        out.extend_from_slice(series_labels);
        for &(_, timestamp, value) in own {
            encode_key(2, WireType::LengthDelimited, &mut out);
            encode_varint(sample_len(timestamp) as u64, &mut out);
            encode_key(1, WireType::SixtyFourBit, &mut out);
            out.extend_from_slice(&value.to_le_bytes());
            encode_key(2, WireType::Varint, &mut out);
            encode_varint(timestamp as u64, &mut out);
        }
    }
    (out, series)
}

fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn dropped_counter(output: &str, reason: &'static str) -> metrics::Counter {
    metrics::counter!(stats::REMOTE_WRITE_DROPPED, "output" => output.to_string(), "reason" => reason)
}

// ---- the HTTP client ----

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    #[error("POST {url}")]
    Transport {
        url: String,
        #[source]
        source: BoxError,
    },
    #[error("POST {url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("outputs.{output}.{key}: {message}")]
    Setup {
        output: String,
        key: &'static str,
        message: String,
    },
}

impl RemoteWriteError {
    /// A refusal (4xx other than 429): repeating the request cannot help.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Status { status, .. } if is_refusal(*status))
    }
}

fn is_refusal(status: u16) -> bool {
    (400..500).contains(&status) && status != 429
}

/// A reply: status and the start of the body.
#[derive(Clone, Debug)]
pub struct WriteReply {
    pub status: u16,
    pub body: Bytes,
}

#[derive(Clone)]
enum Auth {
    Basic { username: String, password: Secret },
    Header(Secret),
}

/// reqwest as a tower service: one POST of an encoded body.
#[derive(Clone)]
struct HttpService {
    client: reqwest::Client,
    url: String,
    headers: reqwest::header::HeaderMap,
    auth: Option<Auth>,
}

impl Service<Bytes> for HttpService {
    type Response = WriteReply;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<WriteReply, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, body: Bytes) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let mut request = this
                .client
                .post(&this.url)
                .headers(this.headers.clone())
                .header(reqwest::header::CONTENT_ENCODING, "snappy")
                .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .header(reqwest::header::USER_AGENT, "gnomon")
                .body(body);
            match &this.auth {
                Some(Auth::Basic { username, password }) => {
                    request = request.basic_auth(username, Some(password.expose()));
                }
                Some(Auth::Header(value)) => {
                    let mut header = reqwest::header::HeaderValue::from_str(value.expose())?;
                    header.set_sensitive(true);
                    request = request.header(reqwest::header::AUTHORIZATION, header);
                }
                None => {}
            }
            let response = request.send().await?;
            let status = response.status().as_u16();
            let body = response.bytes().await?;
            Ok(WriteReply { status, body })
        })
    }
}

/// Which attempts are repeated: transport errors and timeouts, 5xx and 429. A write is
/// safe to repeat: the same samples again are accepted or ignored as duplicates.
#[derive(Clone)]
struct TransientWriteFailures;

impl RetryClassify<Bytes, WriteReply, BoxError> for TransientWriteFailures {
    fn should_retry(&self, _body: &Bytes, result: &Result<WriteReply, BoxError>) -> bool {
        match result {
            Ok(reply) => reply.status >= 500 || reply.status == 429,
            Err(_) => true,
        }
    }
}

/// The remote write client: timeout per attempt, retries with backoff.
#[derive(Clone)]
pub struct RemoteWriteClient {
    url: String,
    service: BoxCloneSyncService<Bytes, WriteReply, BoxError>,
}

/// First delay between attempts (gnmic: 100 ms), doubling up to [`RETRY_MAX_DELAY`].
pub const RETRY_FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest delay between attempts.
pub const RETRY_MAX_DELAY: Duration = Duration::from_secs(5);

impl RemoteWriteClient {
    pub fn new(
        output: &str,
        config: &PrometheusWriteOutputConfig,
    ) -> Result<Self, RemoteWriteError> {
        let setup = |key: &'static str, message: String| RemoteWriteError::Setup {
            output: output.to_string(),
            key,
            message,
        };
        let tls = config.tls.clone().unwrap_or_default();
        let tls = ClientTlsOptions {
            ca_file: tls.ca_file.map(Into::into),
            cert_file: tls.cert_file.map(Into::into),
            key_file: tls.key_file.map(Into::into),
            skip_verify: tls.skip_verify,
        };
        let tls = gnomon_common::tls::client_config(&tls, &[b"http/1.1"])
            .map_err(|e| setup("tls", e.to_string()))?;
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| setup("url", format!("cannot build the HTTP client: {e}")))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &config.headers {
            let header_name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| setup("headers", format!("{name}: {e}")))?;
            let header_value = reqwest::header::HeaderValue::from_str(value).map_err(|e| {
                setup(
                    "headers",
                    format!("{name}: the value is not a valid header value ({e})"),
                )
            })?;
            headers.insert(header_name, header_value);
        }
        let auth = match (&config.authentication, &config.authorization) {
            (Some(basic), _) => Some(Auth::Basic {
                username: basic.username.clone(),
                password: basic.password.clone(),
            }),
            (None, Some(authz)) => {
                let value = format!("{} {}", authz.kind, authz.credentials.expose());
                if reqwest::header::HeaderValue::from_str(&value).is_err() {
                    return Err(setup(
                        "authorization",
                        "type and credentials do not form a valid header value (check authorization.credentials)".into(),
                    ));
                }
                Some(Auth::Header(Secret::new(value)))
            }
            (None, None) => None,
        };
        Ok(Self::with_service(
            &config.url,
            config.max_retries,
            config.timeout,
            HttpService {
                client,
                url: config.url.clone(),
                headers,
                auth,
            },
        ))
    }

    /// The stack around any service (tests put a scripted service under it).
    fn with_service<S>(url: &str, retries: u32, timeout: Duration, inner: S) -> Self
    where
        S: Service<Bytes, Response = WriteReply, Error = BoxError> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        let service = ServiceBuilder::new()
            .retry(RetryPolicy::new(
                TransientWriteFailures,
                retries,
                Backoff::new(RETRY_FIRST_DELAY, RETRY_MAX_DELAY),
            ))
            .timeout(timeout)
            .service(inner);
        Self {
            url: url.to_string(),
            service: BoxCloneSyncService::new(service),
        }
    }

    /// Sends one encoded body; any status outside 2xx is an error.
    pub async fn write(&self, body: Bytes) -> Result<(), RemoteWriteError> {
        let reply = self.service.clone().oneshot(body).await.map_err(|source| {
            RemoteWriteError::Transport {
                url: self.url.clone(),
                source,
            }
        })?;
        if !(200..300).contains(&reply.status) {
            return Err(RemoteWriteError::Status {
                url: self.url.clone(),
                status: reply.status,
                body: String::from_utf8_lossy(&reply.body)
                    .chars()
                    .take(300)
                    .collect(),
            });
        }
        Ok(())
    }
}

// ---- the writer ----

/// Drains `buffer` into `client` every `interval` or when a batch is ready, until
/// `shutdown`; then writes what is left once (bounded by the client's timeouts).
pub async fn run_writer(
    buffer: Arc<WriteBuffer>,
    client: RemoteWriteClient,
    config: PrometheusWriteOutputConfig,
    shutdown: CancellationToken,
) {
    let output = buffer.output.clone();
    let labels = [("output", output.clone())];
    let written = metrics::counter!(stats::REMOTE_WRITE_SAMPLES, &labels);
    let failed = metrics::counter!(stats::REMOTE_WRITE_FAILED_REQUESTS, &labels);
    let dropped_failed = dropped_counter(&output, "send_failed");
    let dropped_refused = dropped_counter(&output, "refused");
    let mut failure_log = Throttle::new(Duration::from_secs(30));
    let mut timer = tokio::time::interval(config.interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut metadata_timer = tokio::time::interval(config.metadata.interval);
    metadata_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        let mut send_metadata = false;
        if !stopping {
            tokio::select! {
                _ = shutdown.cancelled() => stopping = true,
                _ = timer.tick() => {}
                _ = buffer.batch_ready.notified() => {}
                _ = metadata_timer.tick(), if config.metadata.include => send_metadata = true,
            }
        }
        if send_metadata {
            for chunk in buffer
                .metadata()
                .chunks(config.metadata.max_entries_per_write.max(1))
            {
                let request = WriteRequest {
                    timeseries: Vec::new(),
                    metadata: chunk.to_vec(),
                };
                match client.write(Bytes::from(encode(&request))).await {
                    Ok(()) => {
                        buffer
                            .counts
                            .metadata_written
                            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                    Err(error) => {
                        failed.increment(1);
                        if let Some(suppressed) = failure_log.allow() {
                            tracing::warn!(output = %output, error = %gnomon_common::error_text::error_chain(&error), suppressed, "remote write of metadata failed");
                        }
                    }
                }
            }
            continue;
        }
        // Write what waits, batch by batch; a new tick or batch starts another round.
        while let Some(Batch {
            body,
            samples,
            series,
        }) = buffer.take_batch()
        {
            match client.write(Bytes::from(body)).await {
                Ok(()) => {
                    written.increment(samples);
                    buffer.counts.written.fetch_add(samples, Ordering::Relaxed);
                    buffer.counts.requests_ok.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(output = %output, series, samples, "remote write sent");
                }
                Err(error) => {
                    failed.increment(1);
                    let (counter, count) = if error.is_refusal() {
                        (&dropped_refused, &buffer.counts.dropped_refused)
                    } else {
                        (&dropped_failed, &buffer.counts.dropped_send_failed)
                    };
                    counter.increment(samples);
                    count.fetch_add(samples, Ordering::Relaxed);
                    if let Some(suppressed) = failure_log.allow() {
                        tracing::warn!(
                            output = %output,
                            error = %gnomon_common::error_text::error_chain(&error),
                            samples,
                            suppressed,
                            "remote write failed; the batch is dropped"
                        );
                    }
                    if stopping {
                        return;
                    }
                    // Let the next tick retry with newer data instead of hammering a
                    // backend that just failed every attempt.
                    break;
                }
            }
            if !stopping && shutdown.is_cancelled() {
                stopping = true;
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn config(yaml: &str) -> PrometheusWriteOutputConfig {
        let value: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        let section = gnomon_config::Section::from_value("outputs.rw", &value).unwrap();
        PrometheusWriteOutputConfig::from_section(&section).unwrap()
    }

    /// What a receiver saw of one request.
    #[derive(Clone, Debug, Default)]
    struct Seen {
        headers: Vec<(String, String)>,
        series: usize,
        /// Metric family names of the request's metadata entries.
        metadata: Vec<String>,
    }

    /// An HTTPS remote-write receiver requiring a client certificate of `pki`'s CA; it
    /// records each request's headers and decoded series count.
    async fn receiver(
        pki: &gnomon_testkit::TestPki,
    ) -> (String, Arc<std::sync::Mutex<Vec<Seen>>>, CancellationToken) {
        let seen: Arc<std::sync::Mutex<Vec<Seen>>> = Arc::default();
        let recorded = seen.clone();
        let app = axum::Router::new().route(
            "/push",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let recorded = recorded.clone();
                    async move {
                        let request = decode(&body).unwrap_or_default();
                        let series = request.timeseries.len();
                        let metadata = request
                            .metadata
                            .iter()
                            .map(|m| m.metric_family_name.clone())
                            .collect();
                        let headers = headers
                            .iter()
                            .map(|(k, v)| {
                                (k.to_string(), v.to_str().unwrap_or_default().to_string())
                            })
                            .collect();
                        recorded.lock().unwrap().push(Seen {
                            headers,
                            series,
                            metadata,
                        });
                        axum::http::StatusCode::NO_CONTENT
                    }
                },
            ),
        );
        let server = pki.issue("receiver").unwrap();
        let tls = gnomon_api_server::tls_config(
            "receiver",
            &gnomon_common::tls::ServerTlsOptions {
                cert_file: Some(server.cert_file),
                key_file: Some(server.key_file),
                ca_file: Some(pki.ca_file().to_path_buf()),
                client_auth: Some(gnomon_common::tls::ClientAuth::RequireVerify),
            },
        )
        .unwrap();
        let listener = gnomon_api_server::Listener::bind("receiver", "127.0.0.1:0")
            .await
            .unwrap();
        let url = format!("https://127.0.0.1:{}/push", listener.local_addr().port());
        let stop = CancellationToken::new();
        listener.spawn(app, Some(tls), Default::default(), stop.clone());
        (url, seen, stop)
    }

    fn one_series() -> Bytes {
        let buffer = WriteBuffer::new("rw", &config("url: http://x/push"));
        buffer.push(
            b"m{a=\"1\"}",
            "m",
            [("a", "1")].into_iter(),
            1.0,
            1_700_000_000_000_000_000,
        );
        Bytes::from(buffer.take_batch().unwrap().body)
    }

    #[tokio::test]
    async fn writes_go_over_mutual_tls_with_gnmics_auth_and_headers() {
        gnomon_testkit::install_crypto_provider();
        let pki = gnomon_testkit::TestPki::new("rw").unwrap();
        let (url, seen, stop) = receiver(&pki).await;
        let client_cert = pki.issue("gnomon").unwrap();
        let tls = format!(
            "tls:\n  ca-file: {}\n  cert-file: {}\n  key-file: {}\n",
            pki.ca_file().display(),
            client_cert.cert_file.display(),
            client_cert.key_file.display()
        );
        let basic = config(&format!(
            "url: {url}\nheaders: {{X-Scope-OrgID: tenant-a}}\nauthentication: {{username: rw, password: s3cret}}\n{tls}"
        ));
        RemoteWriteClient::new("rw", &basic)
            .unwrap()
            .write(one_series())
            .await
            .unwrap();
        let bearer = config(&format!(
            "url: {url}\nauthorization: {{credentials: tok-9}}\n{tls}"
        ));
        RemoteWriteClient::new("rw", &bearer)
            .unwrap()
            .write(one_series())
            .await
            .unwrap();
        // Without a client certificate the receiver refuses the connection.
        let anonymous = config(&format!(
            "url: {url}\ntls:\n  ca-file: {}\n",
            pki.ca_file().display()
        ));
        let refused = RemoteWriteClient::new("rw", &anonymous)
            .unwrap()
            .write(one_series())
            .await;
        assert!(
            matches!(refused, Err(RemoteWriteError::Transport { .. })),
            "{refused:?}"
        );
        stop.cancel();

        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        let header = |i: usize, name: &str| {
            seen[i]
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        for (i, request) in seen.iter().enumerate() {
            assert_eq!(request.series, 1);
            assert_eq!(header(i, "content-encoding").as_deref(), Some("snappy"));
            assert_eq!(
                header(i, "content-type").as_deref(),
                Some("application/x-protobuf")
            );
            assert_eq!(
                header(i, "x-prometheus-remote-write-version").as_deref(),
                Some("0.1.0")
            );
        }
        // rw:s3cret in base64.
        assert_eq!(
            header(0, "authorization").as_deref(),
            Some("Basic cnc6czNjcmV0")
        );
        assert_eq!(header(0, "x-scope-orgid").as_deref(), Some("tenant-a"));
        assert_eq!(header(1, "authorization").as_deref(), Some("Bearer tok-9"));
    }

    #[tokio::test]
    async fn metadata_of_every_metric_name_is_sent_in_chunks() {
        gnomon_testkit::install_crypto_provider();
        let pki = gnomon_testkit::TestPki::new("rw-meta").unwrap();
        let (url, seen, stop) = receiver(&pki).await;
        let client_cert = pki.issue("gnomon").unwrap();
        let config = config(&format!(
            "url: {url}\ninterval: 50ms\nmetadata: {{include: true, interval: 50ms, max-entries-per-write: 2}}\ntls:\n  ca-file: {}\n  cert-file: {}\n  key-file: {}\n",
            pki.ca_file().display(),
            client_cert.cert_file.display(),
            client_cert.key_file.display()
        ));
        let buffer = Arc::new(WriteBuffer::new("rw", &config));
        for name in ["m_a", "m_b", "m_c"] {
            buffer.push(
                format!("{name}{{a=\"1\"}}").as_bytes(),
                name,
                [("a", "1")].into_iter(),
                1.0,
                1_700_000_000_000_000_000,
            );
        }
        let client = RemoteWriteClient::new("rw", &config).unwrap();
        let writer_stop = CancellationToken::new();
        let writer = tokio::spawn(run_writer(
            buffer.clone(),
            client,
            config.clone(),
            writer_stop.clone(),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let names = loop {
            let requests = seen.lock().unwrap().clone();
            let mut names: Vec<String> = requests
                .iter()
                .filter(|r| !r.metadata.is_empty())
                .flat_map(|r| r.metadata.clone())
                .collect();
            names.sort();
            names.dedup();
            if names.len() == 3 {
                assert!(
                    requests.iter().all(|r| r.metadata.len() <= 2),
                    "{requests:?}"
                );
                break names;
            }
            assert!(tokio::time::Instant::now() < deadline, "{requests:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(names, ["m_a", "m_b", "m_c"]);
        writer_stop.cancel();
        writer.await.unwrap();
        stop.cancel();
    }

    #[test]
    fn a_batch_round_trips_through_snappy_and_protobuf() {
        let buffer = WriteBuffer::new(
            "rw",
            &config("url: http://x/push\nmax-time-series-per-write: 10"),
        );
        let labels = [("source", "r1"), ("interface_name", "e1")];
        assert!(buffer.push(b"in{a}", "in", labels.into_iter(), 5.0, 2_000_000_000));
        assert!(buffer.push(b"in{a}", "in", labels.into_iter(), 7.0, 1_000_000_000));
        assert!(buffer.push(b"in{a}", "in", labels.into_iter(), 8.0, 2_000_000_000));
        assert!(buffer.push(b"out{a}", "out", labels.into_iter(), 1.5, 1_000_000_000));
        let batch = buffer.take_batch().unwrap();
        assert_eq!((batch.samples, batch.series), (4, 2));
        let decoded = decode(&batch.body).unwrap();
        // What prost makes of the same request: the hand-written encoding is the same bytes.
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&batch.body)
            .unwrap();
        assert_eq!(decoded.encode_to_vec(), raw);
        assert_eq!(decoded.timeseries.len(), 2);
        let names: Vec<(&str, &str)> = decoded.timeseries[0]
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("__name__", "in"),
                ("interface_name", "e1"),
                ("source", "r1")
            ]
        );
        // Sorted by time, one sample per timestamp (the last pushed), milliseconds.
        let samples: Vec<(i64, f64)> = decoded.timeseries[0]
            .samples
            .iter()
            .map(|s| (s.timestamp, s.value))
            .collect();
        assert_eq!(samples, [(1000, 7.0), (2000, 8.0)]);
        assert_eq!(decoded.timeseries[1].labels[0].value, "out");
        assert_eq!(decoded.timeseries[1].samples[0].value, 1.5);
        assert!(buffer.take_batch().is_none());
    }

    #[test]
    fn a_sample_at_its_series_newest_written_millisecond_is_dropped_not_sent() {
        let buffer = WriteBuffer::new(
            "rw",
            &config("url: http://x/push\nmax-time-series-per-write: 10"),
        );
        let push = |key: &str, value: f64, ms: i64| {
            assert!(buffer.push(
                key.as_bytes(),
                key,
                std::iter::empty(),
                value,
                ms * 1_000_000
            ));
        };
        push("a", 41.0, 5);
        push("b", 1.0, 5);
        assert_eq!(buffer.take_batch().unwrap().samples, 2);
        // The same millisecond with another value (an update within 1 ms) is dropped, so the
        // other series of the batch are not lost to Prometheus' refusal of the whole
        // request; an earlier one (late data) goes, for a backend accepting out-of-order
        // samples to take.
        push("a", 42.0, 5);
        push("a", 40.0, 4);
        push("a", 43.0, 6);
        push("b", 2.0, 6);
        let batch = buffer.take_batch().unwrap();
        assert_eq!((batch.samples, batch.series), (3, 2));
        let decoded = decode(&batch.body).unwrap();
        let sent: Vec<(&str, i64, f64)> = decoded
            .timeseries
            .iter()
            .flat_map(|t| {
                t.samples
                    .iter()
                    .map(|s| (t.labels[0].value.as_str(), s.timestamp, s.value))
            })
            .collect();
        assert_eq!(sent, [("a", 4, 40.0), ("a", 6, 43.0), ("b", 6, 2.0)]);
        assert_eq!(
            buffer
                .counts()
                .dropped_duplicate_timestamp
                .load(Ordering::Relaxed),
            1
        );
        // A batch of nothing but such samples is not sent at all.
        push("a", 44.0, 6);
        assert!(buffer.take_batch().is_none());
        assert_eq!(
            buffer
                .counts()
                .dropped_duplicate_timestamp
                .load(Ordering::Relaxed),
            2
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn batches_hold_at_most_max_series_and_a_full_buffer_drops_and_counts() {
        let buffer = WriteBuffer::new(
            "rw",
            &config("url: http://x/push\nmax-time-series-per-write: 2\nbuffer-size: 3"),
        );
        for (i, key) in ["a", "b", "c", "d"].iter().enumerate() {
            let kept = buffer.push(key.as_bytes(), key, std::iter::empty(), i as f64, 0);
            assert_eq!(kept, i < 3, "{key}");
        }
        assert_eq!(
            buffer.counts().dropped_buffer_full.load(Ordering::Relaxed),
            1
        );
        let first = decode(&buffer.take_batch().unwrap().body).unwrap();
        assert_eq!(first.timeseries.len(), 2);
        let second = buffer.take_batch().unwrap();
        assert_eq!((second.series, second.samples), (1, 1));
        let second = decode(&second.body).unwrap();
        assert!(
            second.timeseries[0].samples[0].timestamp > 1_600_000_000_000,
            "0 means now"
        );
    }

    #[test]
    fn idle_series_are_forgotten_past_the_bound_and_come_back_intact() {
        let buffer = WriteBuffer::new(
            "rw",
            &config("url: http://x/push\nmax-time-series-per-write: 10\nbuffer-size: 10"),
        );
        let total = IDLE_SERIES_KEPT * 5 / 2;
        let mut most = 0;
        for i in 0..total {
            let key = format!("m{{i=\"{i}\"}}");
            let value = i.to_string();
            assert!(buffer.push(
                key.as_bytes(),
                "m",
                [("i", value.as_str())].into_iter(),
                1.0,
                0
            ));
            if buffer.len() == 10 {
                assert_eq!(buffer.take_batch().unwrap().series, 10);
            }
            most = most.max(buffer.known_series());
        }
        assert!(most <= IDLE_SERIES_KEPT, "{most} series kept");
        // Series 0 was forgotten long ago: pushed again, its labels are encoded afresh.
        while buffer.take_batch().is_some() {}
        assert!(buffer.push(b"m{i=\"0\"}", "m", [("i", "0")].into_iter(), 2.0, 0));
        let request = decode(&buffer.take_batch().unwrap().body).unwrap();
        let labels: Vec<(&str, &str)> = request.timeseries[0]
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(labels, [("__name__", "m"), ("i", "0")]);
        assert_eq!(request.timeseries[0].samples[0].value, 2.0);
    }

    /// Answers with the scripted statuses in turn (then 200), counting calls; a status of 0
    /// never answers.
    #[derive(Clone)]
    struct Scripted {
        statuses: Arc<Mutex<Vec<u16>>>,
        calls: Arc<AtomicU32>,
    }

    impl Scripted {
        fn new(statuses: &[u16]) -> Self {
            Self {
                statuses: Arc::new(Mutex::new(statuses.iter().rev().copied().collect())),
                calls: Arc::default(),
            }
        }
    }

    impl Service<Bytes> for Scripted {
        type Response = WriteReply;
        type Error = BoxError;
        type Future = Pin<Box<dyn Future<Output = Result<WriteReply, BoxError>> + Send>>;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _body: Bytes) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let status = self.statuses.lock().unwrap().pop().unwrap_or(200);
            Box::pin(async move {
                if status == 0 {
                    std::future::pending::<()>().await;
                }
                Ok(WriteReply {
                    status,
                    body: Bytes::from_static(b"scripted"),
                })
            })
        }
    }

    fn client(script: &Scripted, retries: u32, timeout: Duration) -> RemoteWriteClient {
        RemoteWriteClient::with_service("http://rw.test/push", retries, timeout, script.clone())
    }

    #[tokio::test]
    async fn a_503_is_retried_then_succeeds() {
        let script = Scripted::new(&[503, 429]);
        client(&script, 3, Duration::from_secs(5))
            .write(Bytes::new())
            .await
            .unwrap();
        assert_eq!(script.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn retries_stop_at_max_retries() {
        let script = Scripted::new(&[503, 503, 503, 503]);
        let err = client(&script, 2, Duration::from_secs(5))
            .write(Bytes::new())
            .await
            .unwrap_err();
        assert_eq!(script.calls.load(Ordering::SeqCst), 3);
        assert_eq!(
            err.to_string(),
            "POST http://rw.test/push: HTTP 503: scripted"
        );
        assert!(!err.is_refusal());
    }

    #[tokio::test]
    async fn a_400_is_not_retried() {
        let script = Scripted::new(&[400]);
        let err = client(&script, 5, Duration::from_secs(5))
            .write(Bytes::new())
            .await
            .unwrap_err();
        assert_eq!(script.calls.load(Ordering::SeqCst), 1);
        assert!(err.is_refusal(), "{err}");
    }

    #[tokio::test]
    async fn a_backend_that_never_answers_times_out_each_attempt() {
        let script = Scripted::new(&[0, 0]);
        let started = std::time::Instant::now();
        let result = client(&script, 1, Duration::from_millis(200))
            .write(Bytes::new())
            .await;
        let err = result.unwrap_err();
        assert_eq!(
            script.calls.load(Ordering::SeqCst),
            2,
            "timed-out attempts are retried"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(
            gnomon_common::error_text::error_chain(&err).contains("timed out")
                || gnomon_common::error_text::error_chain(&err).contains("elapsed"),
            "{}",
            gnomon_common::error_text::error_chain(&err)
        );
    }

    #[tokio::test]
    async fn a_down_backend_never_blocks_pushes() {
        // Every write hangs until its timeout: pushes still return at once and overflow is
        // counted.
        let cfg = config("url: http://x/push\nbuffer-size: 5\nmax-time-series-per-write: 1\ninterval: 10ms\ntimeout: 10s");
        let buffer = Arc::new(WriteBuffer::new("rw", &cfg));
        let script = Scripted::new(&[0; 100]);
        let stop = CancellationToken::new();
        let writer = tokio::spawn(run_writer(
            buffer.clone(),
            client(&script, 0, Duration::from_secs(10)),
            cfg,
            stop.clone(),
        ));
        let started = std::time::Instant::now();
        for i in 0..1000 {
            let key = format!("s{i}");
            buffer.push(key.as_bytes(), &key, std::iter::empty(), 1.0, 0);
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(buffer.counts().dropped_buffer_full.load(Ordering::Relaxed) >= 994);
        stop.cancel();
        writer.abort();
    }
}
