//! Outputs: where collected responses go. Each output has bounded per-worker queues; a
//! writer waits at most the output's write-timeout for space, then drops and counts
//! (`gnomon_output_dropped_total{output,reason}`). Responses are shared (`Arc`) between
//! outputs and decoded at most once.
//!
//! gnmic's event processors: an output's `event-processors` run on the events of each
//! response in the `event` format (NATS, file), one chain per output shared by its workers
//! (state per output, as gnmic). The NATS `proto` format forwards the bytes received, and
//! target status reports are gnomon's own: neither goes through processors (gnmic applies
//! processors only when it builds events).

mod file;
mod health;
mod nats;
mod rotation;
mod status;

pub use health::{OutputHealthView, OutputProbe};
pub use status::TargetUpReport;

pub use nats::subject_for as nats_subject;

use crate::codec::RawResponse;
use gnomon_bus::{Bus, Envelope, MessageHeaders};
use gnomon_config::OutputConfig;
use gnomon_gnmi::event::EventMeta;
use gnomon_processors::{ChainSet, LiveChain, Processors};
use metrics::Counter;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc::{self, error::SendTimeoutError, error::TrySendError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Where a response came from; shared by every response of one subscription stream.
#[derive(Debug)]
pub struct StreamInfo {
    pub target: String,
    pub subscription: String,
    /// Fencing token of the target lock (`None` when not clustered).
    pub fencing_token: Option<u64>,
    pub meta: EventMeta,
    /// Spreads streams over an output's workers (keeps one stream's order).
    route: usize,
    /// Subject and headers per output index, prepared on first use (a NATS output's
    /// messages of this stream all share them).
    envelopes: Vec<OnceLock<Envelope>>,
    /// Trace context of the subscription, when propagation is on.
    trace: Option<StreamTrace>,
}

/// The subscription span's `traceparent`, handed to each output once: only a stream's first
/// published message carries it, so tracing adds no per-message cost.
#[derive(Debug)]
struct StreamTrace {
    traceparent: String,
    handed_out: Vec<std::sync::atomic::AtomicBool>,
}

impl StreamInfo {
    pub fn new(meta: EventMeta, fencing_token: Option<u64>, output_count: usize) -> Self {
        let route = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            meta.source.hash(&mut hasher);
            meta.subscription_name.hash(&mut hasher);
            hasher.finish() as usize
        };
        Self {
            target: meta.source.clone(),
            subscription: meta.subscription_name.clone(),
            fencing_token,
            meta,
            route,
            envelopes: (0..output_count).map(|_| OnceLock::new()).collect(),
            trace: None,
        }
    }

    /// Attaches the subscription span's `traceparent` (`None`: propagation off).
    pub fn with_traceparent(mut self, traceparent: Option<String>) -> Self {
        self.trace = traceparent.map(|traceparent| StreamTrace {
            traceparent,
            handed_out: (0..self.envelopes.len())
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
        });
        self
    }

    /// The subscription's `traceparent` the first time output `output_index` asks, then `None`.
    pub fn first_traceparent(&self, output_index: usize) -> Option<&str> {
        let trace = self.trace.as_ref()?;
        let flag = trace.handed_out.get(output_index)?;
        (!flag.swap(true, std::sync::atomic::Ordering::Relaxed)).then_some(&*trace.traceparent)
    }

    /// This stream's subject (`make` writes it) and headers for output `output_index`.
    fn envelope(&self, output_index: usize, make: impl FnOnce() -> String) -> Cow<'_, Envelope> {
        let envelope = |subject| {
            Envelope::new(
                subject,
                MessageHeaders {
                    target: Some(self.target.clone()),
                    subscription: Some(self.subscription.clone()),
                    fencing_token: self.fencing_token,
                    traceparent: None,
                },
            )
        };
        match self.envelopes.get(output_index) {
            Some(cell) => Cow::Borrowed(cell.get_or_init(|| envelope(make()))),
            // Only if outputs were added after the stream started; never in practice.
            None => Cow::Owned(envelope(make())),
        }
    }
}

/// One collected response on its way to the outputs.
#[derive(Debug)]
pub struct Collected {
    pub stream: Arc<StreamInfo>,
    pub response: RawResponse,
}

/// What an output worker receives: collected data, or a target's up/down report
/// (only NATS outputs carry those).
#[derive(Clone, Debug)]
pub enum OutputItem {
    Response(Arc<Collected>),
    TargetUp(Arc<TargetUpReport>),
}

/// The writing end of one output.
#[derive(Clone)]
pub struct OutputSender {
    name: Arc<str>,
    workers: Arc<[mpsc::Sender<OutputItem>]>,
    /// Whether `gnomon_target_up` reports go to this output (NATS outputs).
    carries_target_up: bool,
    write_timeout: Duration,
    dropped_full: Counter,
    dropped_closed: Counter,
    /// Health and deliveries (see [`health`]); silent unless the output wires one.
    probe: Arc<OutputProbe>,
}

impl std::fmt::Debug for OutputSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputSender")
            .field("name", &self.name)
            .field("workers", &self.workers.len())
            .finish()
    }
}

/// Gives every output metric its `# HELP` text (call once the recorder is installed).
pub fn describe_metrics() {
    metrics::describe_counter!(
        "gnomon_output_messages_total",
        "Messages an output published or wrote."
    );
    metrics::describe_counter!(
        "gnomon_output_bytes_total",
        metrics::Unit::Bytes,
        "Payload bytes an output published."
    );
    metrics::describe_counter!(
        "gnomon_output_file_rotations_total",
        "Times a file output started a new file (gnmic's rotation.max-size)."
    );
    metrics::describe_counter!(
        "gnomon_output_dropped_total",
        "Messages an output dropped, by reason (queue full, write timeout, publish error, not acknowledged by JetStream)."
    );
}

/// `gnomon_output_dropped_total{output,reason}`.
pub(crate) fn dropped_counter(output: &str, reason: &'static str) -> Counter {
    metrics::counter!("gnomon_output_dropped_total", "output" => output.to_string(), "reason" => reason)
}

impl OutputSender {
    fn new(
        name: &str,
        workers: Vec<mpsc::Sender<OutputItem>>,
        carries_target_up: bool,
        write_timeout: Duration,
    ) -> Self {
        Self {
            name: name.into(),
            workers: workers.into(),
            carries_target_up,
            write_timeout,
            dropped_full: dropped_counter(name, "buffer_full"),
            dropped_closed: dropped_counter(name, "closed"),
            probe: OutputProbe::silent(name),
        }
    }

    /// The same sender reporting through `probe`.
    fn with_probe(mut self, probe: Arc<OutputProbe>) -> Self {
        self.probe = probe;
        self
    }

    /// The output's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this output publishes `gnomon_target_up` reports.
    pub fn carries_target_up(&self) -> bool {
        self.carries_target_up
    }

    /// Queues `item`; waits up to the write-timeout for space, then drops it.
    pub async fn write(&self, item: &Arc<Collected>) {
        self.enqueue(item.stream.route, OutputItem::Response(item.clone()))
            .await;
    }

    /// Queues a target's up/down report when this output carries them (else does nothing).
    pub async fn report_target_up(&self, report: &Arc<TargetUpReport>) {
        if self.carries_target_up {
            self.enqueue(report.route(), OutputItem::TargetUp(report.clone()))
                .await;
        }
    }

    async fn enqueue(&self, route: usize, item: OutputItem) {
        let worker = &self.workers[route % self.workers.len()];
        match worker.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(item)) => {
                match worker.send_timeout(item, self.write_timeout).await {
                    Ok(()) => {}
                    Err(SendTimeoutError::Timeout(_)) => self.dropped_full.increment(1),
                    Err(SendTimeoutError::Closed(_)) => self.dropped_closed.increment(1),
                }
            }
            Err(TrySendError::Closed(_)) => self.dropped_closed.increment(1),
        }
    }
}

/// Every running output.
pub struct Outputs {
    senders: BTreeMap<String, OutputSender>,
    /// The outputs' processor chains, for a SIGHUP to rebuild.
    chains: ChainSet,
    slots: usize,
    workers: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

/// Why outputs could not start.
#[derive(Debug, thiserror::Error)]
#[error("output {output}: {reason}")]
pub struct OutputError {
    pub output: String,
    pub reason: String,
}

/// The chain of output `name`'s `event-processors` list (none for an empty list: nothing
/// to pay), registered in `chains` so a SIGHUP can rebuild it.
fn chain_of(
    processors: &Processors,
    chains: &ChainSet,
    name: &str,
    list: &[String],
) -> Result<Option<LiveChain>, OutputError> {
    let owner = format!("outputs.{name}");
    let chain = processors
        .chain_for(&owner, list)
        .map_err(|e| OutputError {
            output: name.to_string(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Ok(None);
    }
    let chain = Arc::new(std::sync::Mutex::new(chain));
    chains.register(&owner, list, &chain);
    Ok(Some(chain))
}

/// Compiles the raw `processors` section for these outputs; an error names the processor,
/// the key and the value, and the outputs listing it.
fn compile_processors(
    configs: &BTreeMap<String, OutputConfig>,
    raw: &serde_json::Value,
) -> Result<Processors, OutputError> {
    let users: Vec<(String, Vec<String>)> = configs
        .iter()
        .filter_map(|(name, config)| match config {
            OutputConfig::Nats(c) => Some((name.clone(), c.event_processors.clone())),
            OutputConfig::Jetstream(c) => Some((name.clone(), c.nats.event_processors.clone())),
            OutputConfig::File(c) => Some((name.clone(), c.event_processors.clone())),
            OutputConfig::Prometheus(_) | OutputConfig::PrometheusWrite(_) => None,
        })
        .collect();
    let keyed: Vec<(String, Vec<String>)> = users
        .iter()
        .map(|(name, list)| (format!("outputs.{name}"), list.clone()))
        .collect();
    Processors::from_config_for(raw, &keyed).map_err(|e| {
        let listing: Vec<&str> = match e.processor().map(str::to_lowercase) {
            Some(bad) => users
                .iter()
                .filter(|(_, list)| list.iter().any(|n| n.to_lowercase() == bad))
                .map(|(name, _)| name.as_str())
                .collect(),
            None => Vec::new(),
        };
        OutputError {
            output: if listing.is_empty() {
                "(processors section)".to_string()
            } else {
                listing.join(", ")
            },
            reason: e.to_string(),
        }
    })
}

impl Outputs {
    /// Starts a worker set per output, without processors (an output listing
    /// `event-processors` is refused). See [`Outputs::start_with_processors`].
    pub fn start(
        configs: &BTreeMap<String, OutputConfig>,
        shared_bus: Option<Arc<dyn Bus>>,
    ) -> Result<Self, OutputError> {
        Self::start_with_processors(configs, &serde_json::Value::Null, shared_bus)
    }

    /// Starts a worker set per output. The Prometheus output is the exporter's and is
    /// skipped here. With `shared_bus`, NATS outputs publish on it instead of connecting.
    /// `processors` is the raw `processors` section, compiled here once; each output
    /// listing `event-processors` gets its own chain.
    pub fn start_with_processors(
        configs: &BTreeMap<String, OutputConfig>,
        processors: &serde_json::Value,
        shared_bus: Option<Arc<dyn Bus>>,
    ) -> Result<Self, OutputError> {
        let processors = compile_processors(configs, processors)?;
        let chains = ChainSet::default();
        let stop = CancellationToken::new();
        let mut senders = BTreeMap::new();
        let mut workers = Vec::new();
        for (index, (name, config)) in configs.iter().enumerate() {
            match config {
                OutputConfig::Nats(nats_config) => {
                    let chain =
                        chain_of(&processors, &chains, name, &nats_config.event_processors)?;
                    if chain.is_some() && nats_config.format == gnomon_config::NatsFormat::Proto {
                        tracing::info!(output = %name, "event-processors apply to the event format only; the proto format forwards responses as received (as gnmic)");
                    }
                    let (sender, handles) = nats::start(
                        index,
                        name,
                        nats_config,
                        chain,
                        shared_bus.clone(),
                        stop.clone(),
                    );
                    senders.insert(name.clone(), sender);
                    workers.extend(handles);
                }
                OutputConfig::Jetstream(js_config) => {
                    let chain =
                        chain_of(&processors, &chains, name, &js_config.nats.event_processors)?;
                    if chain.is_some() && js_config.nats.format == gnomon_config::NatsFormat::Proto
                    {
                        tracing::info!(output = %name, "event-processors apply to the event format only; the proto format forwards responses as received (as gnmic)");
                    }
                    let (sender, handles) = nats::start_jetstream(
                        index,
                        name,
                        js_config,
                        chain,
                        shared_bus.clone(),
                        stop.clone(),
                    );
                    senders.insert(name.clone(), sender);
                    workers.extend(handles);
                }
                OutputConfig::File(file_config) => {
                    let chain =
                        chain_of(&processors, &chains, name, &file_config.event_processors)?;
                    let (sender, handle) = file::start(name, file_config, chain, stop.clone())?;
                    senders.insert(name.clone(), sender);
                    workers.push(handle);
                }
                OutputConfig::Prometheus(_) | OutputConfig::PrometheusWrite(_) => {
                    tracing::info!(output = %name, output_type = config.type_name(), "this output is run by the exporter, not the collector");
                }
            }
        }
        Ok(Self {
            senders,
            chains,
            slots: configs.len(),
            workers,
            stop,
        })
    }

    /// The outputs' live processor chains.
    pub fn chains(&self) -> &ChainSet {
        &self.chains
    }

    /// Number of slots a [`StreamInfo`] needs (one per configured output).
    pub fn slot_count(&self) -> usize {
        self.slots
    }

    /// The outputs named by `names` (all when empty); unknown names are skipped.
    pub fn select(&self, names: &[String]) -> Vec<OutputSender> {
        if names.is_empty() {
            self.senders.values().cloned().collect()
        } else {
            names
                .iter()
                .filter_map(|n| self.senders.get(n).cloned())
                .collect()
        }
    }

    /// Every output's health, by name.
    pub fn health(&self) -> Vec<OutputHealthView> {
        self.senders.values().map(|s| s.probe.view()).collect()
    }

    /// Updates every output delivered so far, summed.
    pub fn delivered_total(&self) -> u64 {
        self.senders
            .values()
            .map(|s| s.probe.delivered_total())
            .sum()
    }

    /// Whether an output of that name runs here.
    pub fn contains(&self, name: &str) -> bool {
        self.senders.contains_key(name)
    }

    /// Stops accepting, lets workers send what is queued (bounded wait), and flushes.
    pub async fn close(mut self, grace: Duration) {
        self.senders.clear();
        self.stop.cancel();
        let all = futures::future::join_all(self.workers.drain(..));
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("outputs did not finish within {grace:?}; queued messages dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gnomon_gnmi::proto::gnmi::SubscribeResponse;

    #[tokio::test]
    async fn a_full_queue_drops_after_the_write_timeout_and_counts() {
        let handle = gnomon_telemetry::metrics_handle();
        let (sender, mut receiver) = mpsc::channel(1);
        let output = OutputSender::new("drop-test", vec![sender], false, Duration::from_millis(20));
        let info = Arc::new(StreamInfo::new(EventMeta::new("t", "s"), None, 1));
        let item = Arc::new(Collected {
            stream: info,
            response: RawResponse::from_message(&SubscribeResponse::default()),
        });
        for _ in 0..3 {
            output.write(&item).await;
        }
        let rendered = handle.render();
        assert!(
            rendered.contains(
                "gnomon_output_dropped_total{output=\"drop-test\",reason=\"buffer_full\"} 2"
            ),
            "{rendered}"
        );
        assert!(receiver.try_recv().is_ok(), "the first item was queued");
        drop(receiver);
        output.write(&item).await;
        assert!(handle
            .render()
            .contains("gnomon_output_dropped_total{output=\"drop-test\",reason=\"closed\"} 1"));
    }

    fn notification(values: &[(&str, u64)]) -> SubscribeResponse {
        use gnomon_gnmi::proto::gnmi::{
            subscribe_response, typed_value, Notification, Path, PathElem, TypedValue, Update,
        };
        let update = |(name, value): &(&str, u64)| Update {
            path: Some(Path {
                elem: ["interfaces", "interface", "state", "counters", name]
                    .iter()
                    .map(|n| PathElem {
                        name: n.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            val: Some(TypedValue {
                value: Some(typed_value::Value::UintVal(*value)),
            }),
            ..Default::default()
        };
        SubscribeResponse {
            response: Some(subscribe_response::Response::Update(Notification {
                timestamp: 5,
                update: values.iter().map(update).collect(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_file_output_applies_its_processors_to_each_response() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.json");
        let config = gnomon_config::load_config_with_env(
            &format!(
                "processors:\n  short: {{event-strings: {{value-names: ['.*'], transforms: [{{path-base: {{apply-on: name}}}}]}}}}\n  \
                 no-discards: {{event-delete: {{value-names: ['discards$']}}}}\n\
                 outputs:\n  f: {{type: file, filename: {path:?}, event-processors: [short, no-discards]}}\n  \
                 plain: {{type: file, filename: {plain:?}}}\n",
                plain = dir.path().join("plain.json")
            ),
            gnomon_config::ConfigFormat::Yaml,
            &[],
        )
        .unwrap();
        let outputs =
            Outputs::start_with_processors(&config.outputs, &config.processors, None).unwrap();
        let info = Arc::new(StreamInfo::new(EventMeta::new("r1", "s"), None, 2));
        let item = Arc::new(Collected {
            stream: info,
            response: RawResponse::from_message(&notification(&[
                ("in-octets", 7),
                ("in-discards", 1),
            ])),
        });
        for output in outputs.select(&[]) {
            output.write(&item).await;
        }
        outputs.close(Duration::from_secs(5)).await;
        let processed = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            processed,
            "{\"name\":\"s\",\"timestamp\":5,\"tags\":{\"source\":\"r1\",\"subscription-name\":\"s\"},\"values\":{\"in-octets\":7}}\n\
             {\"name\":\"s\",\"timestamp\":5,\"tags\":{\"source\":\"r1\",\"subscription-name\":\"s\"}}\n"
        );
        let plain = std::fs::read_to_string(dir.path().join("plain.json")).unwrap();
        assert!(
            plain.contains("\"/interfaces/interface/state/counters/in-discards\":1"),
            "{plain}"
        );
    }
}
