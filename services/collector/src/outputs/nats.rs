//! gnmic's `nats` and `jetstream` outputs: one connection per worker, subject `subject` or
//! `<subject-prefix>.<source>.<subscription>` (NATS) or `<stream>.…` per `subject-format`
//! (JetStream), payload `event` JSON or the SubscribeResponse bytes (`proto`, forwarded as
//! received). Every message carries the target / subscription / fencing-token headers, on
//! both transports: the exporter checks them with the same code. Target up/down reports go
//! to the subject of the pseudo-subscription `gnomon_target_up` with that subscription
//! header, always as event JSON (what the exporter expects; see [`gnomon_bus::contract`]).
//!
//! The two transports differ only in what a worker publishes through ([`Publish`]): core
//! NATS hands the message to the connection; JetStream waits for the server's ack within a
//! bounded window and retries unacknowledged messages from a bounded buffer
//! ([`gnomon_bus::jetstream`]), counting what it drops (`reason="not_acknowledged"`).
//! A host process may hand in a shared bus (`gnomon demo`, tests); the workers then publish
//! on it instead of connecting (a JetStream output then has no storage, same subjects).

use super::TargetUpReport;
use super::{dropped_counter, Collected, OutputItem, OutputProbe, OutputSender};
use bytes::Bytes;
use gnomon_bus::contract::{self, SubjectScheme, TARGET_STATUS};
use gnomon_bus::jetstream::{
    JetStreamPublisher, PublisherOptions, StreamRetention, StreamSetup, StreamSpec, StreamStorage,
};
use gnomon_bus::{
    Bus, BusMessage, Envelope, MessageHeaders, NatsBus, NatsOptions, NatsTls, Publish,
};
use gnomon_common::log::Throttle;
use gnomon_common::retry::Backoff;
use gnomon_config::jetstream::{self as js_config, JetStreamOutputConfig, JetStreamSubjectFormat};
use gnomon_config::{NatsFormat, NatsOutputConfig};
use gnomon_gnmi::event::{event_to_json, events_to_json, response_to_events};
use gnomon_processors::{Chain, LiveChain, Record};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Messages taken from the queue per wake-up.
const BATCH: usize = 256;

/// JetStream publishes awaiting their ack, per worker.
const ACK_WINDOW: usize = 1024;
/// How long a JetStream ack is waited for.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// gnmic's subject for a message of `target` / `subscription` on this output.
pub fn subject_for(config: &NatsOutputConfig, target: &str, subscription: &str) -> String {
    Subjects::of_nats(config).subject(target, subscription)
}

/// How a worker names subjects (owned form of [`SubjectScheme`]).
#[derive(Clone, Debug)]
enum Subjects {
    Fixed(String),
    /// `<prefix>.<target>.<subscription>`.
    Prefixed(String),
    /// `<prefix>.<subscription>.<target>` (JetStream `subscription.target`).
    SubscriptionFirst(String),
}

impl Subjects {
    fn of_nats(config: &NatsOutputConfig) -> Self {
        match &config.subject_prefix {
            Some(prefix) => Self::Prefixed(prefix.clone()),
            None => Self::Fixed(config.subject.clone()),
        }
    }

    fn of_jetstream(config: &JetStreamOutputConfig) -> Self {
        match config.subject_format {
            JetStreamSubjectFormat::Static => Self::Fixed(config.static_subject()),
            JetStreamSubjectFormat::TargetSubscription => Self::Prefixed(config.stream.clone()),
            JetStreamSubjectFormat::SubscriptionTarget => {
                Self::SubscriptionFirst(config.stream.clone())
            }
        }
    }

    fn subject(&self, target: &str, subscription: &str) -> String {
        match self {
            Self::Fixed(subject) => contract::subject_for(SubjectScheme::Fixed(subject), "", ""),
            Self::Prefixed(prefix) => {
                contract::subject_for(SubjectScheme::Prefixed(prefix), target, subscription)
            }
            // The contract's prefixed form with the two parts swapped.
            Self::SubscriptionFirst(prefix) => {
                let mut subject = prefix.replace(' ', "_");
                let target = target.replace('.', "-").replace(' ', "_");
                for part in [subscription.replace(' ', "_"), target] {
                    if !part.is_empty() {
                        subject.push('.');
                        subject.push_str(&part);
                    }
                }
                subject
            }
        }
    }
}

/// What a worker publishes through.
#[derive(Clone)]
enum Transport {
    Nats,
    JetStream(Arc<JetStreamOutputConfig>),
}

fn jetstream_setup(config: &JetStreamOutputConfig) -> StreamSetup {
    match &config.stream_setup {
        js_config::StreamSetup::Assume => StreamSetup::Assume,
        js_config::StreamSetup::UseExisting => StreamSetup::Existing,
        js_config::StreamSetup::Create(create) => StreamSetup::Create(StreamSpec {
            description: create.description.clone(),
            subjects: create.subjects.clone(),
            storage: match create.storage {
                js_config::StreamStorage::Memory => StreamStorage::Memory,
                js_config::StreamStorage::File => StreamStorage::File,
            },
            retention: match create.retention_policy {
                js_config::StreamRetention::Limits => StreamRetention::Limits,
                js_config::StreamRetention::Workqueue => StreamRetention::WorkQueue,
            },
            max_msgs: create.max_msgs,
            max_bytes: create.max_bytes,
            max_age: create.max_age,
            max_msg_size: create.max_msg_size,
        }),
    }
}

fn options(config: &NatsOutputConfig, worker: usize) -> NatsOptions {
    let mut options = NatsOptions::new(config.address.clone());
    options.name = Some(format!("{}-{worker}", config.name));
    options.username = config.username.clone();
    options.password = config.password.as_ref().map(|p| p.expose().to_string());
    options.token = config.token.as_ref().map(|t| t.expose().to_string());
    options.credentials_file = config.credentials_file.clone();
    options.tls = config.tls.as_ref().map(|tls| NatsTls {
        ca_file: tls.ca_file.clone().map(Into::into),
        cert_file: tls.cert_file.clone().map(Into::into),
        key_file: tls.key_file.clone().map(Into::into),
    });
    options.connect_timeout = Duration::from_secs(5);
    options
}

/// Starts the workers of NATS output `name` (slot `index` in stream subject caches),
/// publishing on `shared_bus` when given, else each on its own NATS connection.
pub fn start(
    index: usize,
    name: &str,
    config: &NatsOutputConfig,
    chain: Option<LiveChain>,
    shared_bus: Option<Arc<dyn Bus>>,
    stop: CancellationToken,
) -> (OutputSender, Vec<JoinHandle<()>>) {
    let subjects = Subjects::of_nats(config);
    start_workers(
        index,
        name,
        config,
        (Transport::Nats, subjects),
        chain,
        shared_bus,
        stop,
    )
}

/// Starts the workers of JetStream output `name`, as [`start`].
pub fn start_jetstream(
    index: usize,
    name: &str,
    config: &JetStreamOutputConfig,
    chain: Option<LiveChain>,
    shared_bus: Option<Arc<dyn Bus>>,
    stop: CancellationToken,
) -> (OutputSender, Vec<JoinHandle<()>>) {
    let subjects = Subjects::of_jetstream(config);
    let transport = Transport::JetStream(Arc::new(config.clone()));
    start_workers(
        index,
        name,
        &config.nats,
        (transport, subjects),
        chain,
        shared_bus,
        stop,
    )
}

fn start_workers(
    index: usize,
    name: &str,
    config: &NatsOutputConfig,
    (transport, subjects): (Transport, Subjects),
    chain: Option<LiveChain>,
    shared_bus: Option<Arc<dyn Bus>>,
    stop: CancellationToken,
) -> (OutputSender, Vec<JoinHandle<()>>) {
    // One chain per output, shared by its workers; only the event format uses it.
    let chain = chain.filter(|_| config.format == NatsFormat::Event);
    if config.tls.as_ref().is_some_and(|t| t.skip_verify) {
        tracing::warn!(output = %name, "tls.skip-verify is not supported for NATS; the server certificate is verified");
    }
    let per_worker = (config.buffer_size / config.num_workers).max(1);
    let probe = OutputProbe::with_workers(name, config.num_workers);
    let config = Arc::new(config.clone());
    let mut senders = Vec::with_capacity(config.num_workers);
    let mut handles = Vec::with_capacity(config.num_workers);
    for worker in 0..config.num_workers {
        let (sender, receiver) = mpsc::channel(per_worker);
        senders.push(sender);
        let worker_state = Worker::new(
            index,
            name,
            worker,
            config.clone(),
            (transport.clone(), subjects.clone()),
            chain.clone(),
            probe.clone(),
        );
        handles.push(tokio::spawn(worker_state.run(
            receiver,
            shared_bus.clone(),
            stop.clone(),
        )));
    }
    (
        OutputSender::new(name, senders, true, config.write_timeout).with_probe(probe),
        handles,
    )
}

struct Worker {
    slot: usize,
    output: String,
    index: usize,
    config: Arc<NatsOutputConfig>,
    transport: Transport,
    subjects: Subjects,
    /// The output's event processors (event format only).
    chain: Option<Arc<Mutex<Chain>>>,
    sent: metrics::Counter,
    bytes: metrics::Counter,
    publish_errors: metrics::Counter,
    not_connected: metrics::Counter,
    not_acknowledged: metrics::Counter,
    /// The output's health: this worker's connection, and the updates it delivered.
    probe: Arc<OutputProbe>,
}

impl Worker {
    fn new(
        slot: usize,
        output: &str,
        index: usize,
        config: Arc<NatsOutputConfig>,
        (transport, subjects): (Transport, Subjects),
        chain: Option<Arc<Mutex<Chain>>>,
        probe: Arc<OutputProbe>,
    ) -> Self {
        let labels = [("output", output.to_string())];
        Self {
            slot,
            output: output.to_string(),
            index,
            config,
            transport,
            subjects,
            chain,
            sent: metrics::counter!("gnomon_output_messages_total", &labels),
            bytes: metrics::counter!("gnomon_output_bytes_total", &labels),
            publish_errors: dropped_counter(output, "publish_error"),
            not_connected: dropped_counter(output, "not_connected"),
            not_acknowledged: dropped_counter(output, "not_acknowledged"),
            probe,
        }
    }

    /// Connects (retrying every connect-time-wait until stopped). While unconnected,
    /// queued messages are dropped and counted so the queue keeps moving.
    async fn connect(
        &self,
        receiver: &mut mpsc::Receiver<OutputItem>,
        stop: &CancellationToken,
    ) -> Option<Arc<dyn Publish>> {
        let options = options(&self.config, self.index);
        // gnmic's `connect-time-wait` between attempts (never below the backoff's floor, so
        // a zero cannot spin), one log line per 30 s.
        let mut pause = Backoff::new(self.config.connect_time_wait, self.config.connect_time_wait);
        let mut errors = Throttle::new(Duration::from_secs(30));
        loop {
            match self.open(&options).await {
                Ok(publisher) => {
                    tracing::info!(output = %self.output, worker = self.index, address = %self.config.address, "connected to NATS");
                    return Some(publisher);
                }
                Err(error) => {
                    if let Some(suppressed) = errors.allow() {
                        tracing::warn!(output = %self.output, worker = self.index, %error, suppressed, "NATS connection failed; retrying");
                    }
                }
            }
            let wait = tokio::time::sleep(pause.next_delay());
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = &mut wait => break,
                    item = receiver.recv() => match item {
                        Some(_) => self.not_connected.increment(1),
                        None => return None,
                    },
                }
            }
        }
    }

    /// Connects once; a JetStream worker also makes sure of its stream.
    async fn open(&self, options: &NatsOptions) -> Result<Arc<dyn Publish>, gnomon_bus::BusError> {
        let bus = NatsBus::connect(options).await?;
        match &self.transport {
            Transport::Nats => Ok(Arc::new(bus)),
            Transport::JetStream(config) => {
                let publisher = JetStreamPublisher::new(
                    &bus,
                    PublisherOptions {
                        stream: config.stream.clone(),
                        setup: jetstream_setup(config),
                        window: ACK_WINDOW,
                        retry_capacity: self.config.buffer_size.max(ACK_WINDOW),
                        ack_timeout: ACK_TIMEOUT,
                        retry_wait: self.config.connect_time_wait,
                        id_prefix: format!(
                            "{}-{}-{}",
                            self.config.name,
                            self.index,
                            unique_suffix()
                        ),
                    },
                    self.not_acknowledged.clone(),
                )
                .await?;
                Ok(Arc::new(publisher))
            }
        }
    }

    async fn run(
        self,
        mut receiver: mpsc::Receiver<OutputItem>,
        shared_bus: Option<Arc<dyn Bus>>,
        stop: CancellationToken,
    ) {
        let bus: Arc<dyn Publish> = match shared_bus {
            Some(bus) => Arc::new(bus),
            None => match self.connect(&mut receiver, &stop).await {
                Some(bus) => bus,
                None => return,
            },
        };
        self.probe.connected(self.index, bus.clone());
        let bus = bus.as_ref();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let received = tokio::select! {
                biased;
                n = receiver.recv_many(&mut batch, BATCH) => n,
                _ = stop.cancelled() => {
                    // Send what is already queued, then finish.
                    while let Ok(item) = receiver.try_recv() {
                        batch.push(item);
                    }
                    for item in batch.drain(..) {
                        self.publish(bus, &item).await;
                    }
                    break;
                }
            };
            if received == 0 {
                break;
            }
            for item in batch.drain(..) {
                self.publish(bus, &item).await;
            }
        }
        if let Err(error) = bus.settle().await {
            tracing::warn!(output = %self.output, %error, "final NATS flush failed");
        }
    }

    async fn publish(&self, bus: &dyn Publish, item: &OutputItem) {
        match item {
            OutputItem::Response(collected) => {
                let delivered = match collected.stream.first_traceparent(self.slot) {
                    None => self.publish_response(bus, collected, None).await,
                    Some(parent) => {
                        // A stream's first message: publish it in a span continuing the
                        // subscription's trace, and hand that span's context to the consumer.
                        let span = tracing::info_span!(
                            "bus_publish",
                            output = %self.output,
                            target = %collected.stream.target,
                            subscription = %collected.stream.subscription
                        );
                        gnomon_telemetry::adopt_traceparent(&span, parent);
                        let traceparent = gnomon_telemetry::traceparent_of(&span);
                        self.publish_response(bus, collected, traceparent)
                            .instrument(span)
                            .await
                    }
                };
                if delivered {
                    if let crate::codec::ResponseKind::Notification { updates, .. } =
                        collected.response.kind
                    {
                        self.probe.delivered(u64::from(updates));
                    }
                }
            }
            OutputItem::TargetUp(report) => self.publish_target_up(bus, report).await,
        }
    }

    async fn publish_target_up(&self, bus: &dyn Publish, report: &TargetUpReport) {
        let headers = MessageHeaders {
            target: Some(report.target().to_string()),
            subscription: Some(TARGET_STATUS.to_string()),
            fencing_token: report.fencing_token(),
            traceparent: None,
        };
        let message = BusMessage {
            subject: self.subjects.subject(report.target(), TARGET_STATUS),
            headers,
            payload: report.payload().clone(),
        };
        self.send(bus, message).await;
    }

    /// Publishes one response; `traceparent` (if any) goes on its first message only.
    /// Returns whether every message of it reached the transport.
    async fn publish_response(
        &self,
        bus: &dyn Publish,
        item: &Collected,
        mut traceparent: Option<String>,
    ) -> bool {
        let stream = &item.stream;
        let envelope = stream.envelope(self.slot, || {
            self.subjects.subject(&stream.target, &stream.subscription)
        });
        let envelope = &*envelope;
        match self.config.format {
            NatsFormat::Proto => {
                self.send_in(bus, envelope, traceparent, item.response.bytes.clone())
                    .await
            }
            NatsFormat::Event => {
                let Some(response) = item.response.decoded() else {
                    return false;
                };
                let events = response_to_events(response, &stream.meta);
                if events.is_empty() {
                    return false;
                }
                let mut delivered = true;
                if let Some(chain) = &self.chain {
                    let payloads = processed_payloads(chain, events, self.config.split_events);
                    if payloads.is_empty() {
                        return false;
                    }
                    for payload in payloads {
                        delivered &= self
                            .send_in(bus, envelope, traceparent.take(), payload)
                            .await;
                    }
                } else if self.config.split_events {
                    for event in &events {
                        let payload = Bytes::from(event_to_json(event));
                        delivered &= self
                            .send_in(bus, envelope, traceparent.take(), payload)
                            .await;
                    }
                } else {
                    let payload = Bytes::from(events_to_json(&events));
                    delivered = self.send_in(bus, envelope, traceparent, payload).await;
                }
                delivered
            }
        }
    }

    /// Publishes one message; returns whether it reached the transport.
    async fn send(&self, bus: &dyn Publish, message: BusMessage) -> bool {
        let size = message.payload.len() as u64;
        let sent = bus.send(message).await;
        self.count(sent, size)
    }

    /// Publishes `payload` in a stream's envelope, with the stream's trace context if it
    /// is the stream's first message; returns whether it reached the transport.
    async fn send_in(
        &self,
        bus: &dyn Publish,
        envelope: &Envelope,
        traceparent: Option<String>,
        payload: Bytes,
    ) -> bool {
        if let Some(traceparent) = traceparent {
            let mut message = envelope.message(payload);
            message.headers.traceparent = Some(traceparent);
            return self.send(bus, message).await;
        }
        let size = payload.len() as u64;
        let sent = bus.send_in(envelope, payload).await;
        self.count(sent, size)
    }

    /// Counts a publish of `size` bytes; whether it reached the transport.
    fn count(&self, sent: Result<(), gnomon_bus::BusError>, size: u64) -> bool {
        match sent {
            Ok(()) => {
                self.sent.increment(1);
                self.bytes.increment(size);
                true
            }
            Err(error) => {
                self.publish_errors.increment(1);
                tracing::debug!(output = %self.output, %error, "NATS publish failed; message dropped");
                false
            }
        }
    }
}

/// Distinguishes this process's `Nats-Msg-Id`s from those of a previous run of the same
/// output (JetStream drops a repeated id within its duplicate window).
fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}-{nanos:x}", std::process::id())
}

/// The events of one response through the output's processors, as JSON payloads (one per
/// event with `split-events`); none when the processors dropped every event (gnmic
/// publishes nothing then). The chain is locked only while it runs.
fn processed_payloads(
    chain: &Mutex<Chain>,
    events: Vec<gnomon_gnmi::event::Event>,
    split_events: bool,
) -> Vec<Bytes> {
    let mut records: Vec<Record> = events.into_iter().map(Record::from).collect();
    chain
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .apply_records(&mut records);
    if records.is_empty() {
        Vec::new()
    } else if split_events {
        records.iter().map(json_bytes).collect()
    } else {
        vec![json_bytes(&records)]
    }
}

/// gnmic's event JSON of a record or a batch (cannot fail for string-keyed maps; logged if
/// it ever does).
fn json_bytes<T: serde::Serialize + ?Sized>(value: &T) -> Bytes {
    match serde_json::to_vec(value) {
        Ok(bytes) => Bytes::from(bytes),
        Err(error) => {
            tracing::error!(%error, "encoding events as JSON failed");
            Bytes::from_static(b"[]")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gnomon_config::{load_config_with_env, ConfigFormat, OutputConfig};

    fn nats_config(yaml: &str) -> NatsOutputConfig {
        let config = load_config_with_env(yaml, ConfigFormat::Yaml, &[]).unwrap();
        match config.outputs.into_values().next() {
            Some(OutputConfig::Nats(c)) => c,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn subjects_follow_gnmic() {
        let prefixed =
            nats_config("outputs:\n  n:\n    type: nats\n    subject-prefix: telemetry\n");
        assert_eq!(
            subject_for(&prefixed, "172.17.0.100:57400", "port-stats"),
            "telemetry.172-17-0-100:57400.port-stats"
        );
        assert_eq!(
            subject_for(&prefixed, "my router", "a sub"),
            "telemetry.my_router.a_sub"
        );
        let single = nats_config("outputs:\n  n:\n    type: nats\n");
        assert_eq!(subject_for(&single, "10.0.0.1:57400", "s"), "telemetry");
    }

    fn jetstream_subjects(extra: &str) -> Subjects {
        let yaml = format!("outputs:\n  js:\n    type: jetstream\n    stream: tele\n{extra}");
        let config = load_config_with_env(&yaml, ConfigFormat::Yaml, &[]).unwrap();
        match config.outputs.into_values().next() {
            Some(OutputConfig::Jetstream(c)) => Subjects::of_jetstream(&c),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn jetstream_subjects_start_with_the_stream() {
        let target = "10.0.0.1:57400";
        assert_eq!(
            jetstream_subjects("").subject(target, "port stats"),
            "tele.telemetry"
        );
        assert_eq!(
            jetstream_subjects("    subject: s1\n").subject(target, "x"),
            "tele.s1"
        );
        assert_eq!(
            jetstream_subjects("    subject-format: target.subscription\n")
                .subject(target, "port stats"),
            "tele.10-0-0-1:57400.port_stats"
        );
        assert_eq!(
            jetstream_subjects("    subject-format: subscription.target\n")
                .subject(target, "port stats"),
            "tele.port_stats.10-0-0-1:57400"
        );
    }
}
