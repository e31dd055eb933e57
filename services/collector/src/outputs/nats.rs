//! gnmic's `nats` output: core NATS publishes, one connection per worker, subject
//! `subject` or `<subject-prefix>.<source>.<subscription>`, payload `event` JSON or the
//! SubscribeResponse bytes (`proto`, forwarded as received). Every message carries the
//! target / subscription / fencing-token headers. Target up/down reports go to
//! `subject_for(target, "gnomon_target_up")` with that subscription header, always as
//! event JSON (what the exporter expects; see [`gnomon_bus::contract`]). A host process may hand in a shared bus
//! (`gnomon demo`, tests); the workers then publish on it instead of connecting.

use super::TargetUpReport;
use super::{dropped_counter, Collected, OutputItem, OutputProbe, OutputSender};
use bytes::Bytes;
use gnomon_bus::contract::{self, SubjectScheme, TARGET_STATUS};
use gnomon_bus::{Bus, BusMessage, MessageHeaders, NatsBus, NatsOptions, NatsTls};
use gnomon_common::log::Throttle;
use gnomon_common::retry::Backoff;
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

/// gnmic's subject for a message of `target` / `subscription` on this output.
pub fn subject_for(config: &NatsOutputConfig, target: &str, subscription: &str) -> String {
    let scheme = match &config.subject_prefix {
        Some(prefix) => SubjectScheme::Prefixed(prefix),
        None => SubjectScheme::Fixed(&config.subject),
    };
    contract::subject_for(scheme, target, subscription)
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

/// Starts the workers of output `name` (slot `index` in stream subject caches), publishing
/// on `shared_bus` when given, else each on its own NATS connection.
pub fn start(
    index: usize,
    name: &str,
    config: &NatsOutputConfig,
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
    /// The output's event processors (event format only).
    chain: Option<Arc<Mutex<Chain>>>,
    sent: metrics::Counter,
    bytes: metrics::Counter,
    publish_errors: metrics::Counter,
    not_connected: metrics::Counter,
    /// The output's health: this worker's connection, and the updates it delivered.
    probe: Arc<OutputProbe>,
}

impl Worker {
    fn new(
        slot: usize,
        output: &str,
        index: usize,
        config: Arc<NatsOutputConfig>,
        chain: Option<Arc<Mutex<Chain>>>,
        probe: Arc<OutputProbe>,
    ) -> Self {
        let labels = [("output", output.to_string())];
        Self {
            slot,
            output: output.to_string(),
            index,
            config,
            chain,
            sent: metrics::counter!("gnomon_output_messages_total", &labels),
            bytes: metrics::counter!("gnomon_output_bytes_total", &labels),
            publish_errors: dropped_counter(output, "publish_error"),
            not_connected: dropped_counter(output, "not_connected"),
            probe,
        }
    }

    /// Connects (retrying every connect-time-wait until stopped). While unconnected,
    /// queued messages are dropped and counted so the queue keeps moving.
    async fn connect(
        &self,
        receiver: &mut mpsc::Receiver<OutputItem>,
        stop: &CancellationToken,
    ) -> Option<Arc<dyn Bus>> {
        let options = options(&self.config, self.index);
        // gnmic's `connect-time-wait` between attempts (never below the backoff's floor, so
        // a zero cannot spin), one log line per 30 s.
        let mut pause = Backoff::new(self.config.connect_time_wait, self.config.connect_time_wait);
        let mut errors = Throttle::new(Duration::from_secs(30));
        loop {
            match NatsBus::connect(&options).await {
                Ok(bus) => {
                    tracing::info!(output = %self.output, worker = self.index, address = %self.config.address, "connected to NATS");
                    return Some(Arc::new(bus));
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

    async fn run(
        self,
        mut receiver: mpsc::Receiver<OutputItem>,
        shared_bus: Option<Arc<dyn Bus>>,
        stop: CancellationToken,
    ) {
        let bus = match shared_bus {
            Some(bus) => bus,
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
        if let Err(error) = bus.flush().await {
            tracing::warn!(output = %self.output, %error, "final NATS flush failed");
        }
    }

    async fn publish(&self, bus: &dyn Bus, item: &OutputItem) {
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

    async fn publish_target_up(&self, bus: &dyn Bus, report: &TargetUpReport) {
        let headers = MessageHeaders {
            target: Some(report.target().to_string()),
            subscription: Some(TARGET_STATUS.to_string()),
            fencing_token: report.fencing_token(),
            traceparent: None,
        };
        let subject = subject_for(&self.config, report.target(), TARGET_STATUS);
        self.send(bus, &subject, headers, report.payload().clone())
            .await;
    }

    /// Publishes one response; `traceparent` (if any) goes on its first message only.
    /// Returns whether every message of it reached the transport.
    async fn publish_response(
        &self,
        bus: &dyn Bus,
        item: &Collected,
        mut traceparent: Option<String>,
    ) -> bool {
        let stream = &item.stream;
        let subject = stream.subject(self.slot, || {
            subject_for(&self.config, &stream.target, &stream.subscription)
        });
        let mut headers = || MessageHeaders {
            target: Some(stream.target.clone()),
            subscription: Some(stream.subscription.clone()),
            fencing_token: stream.fencing_token,
            traceparent: traceparent.take(),
        };
        match self.config.format {
            NatsFormat::Proto => {
                self.send(bus, subject, headers(), item.response.bytes.clone())
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
                        delivered &= self.send(bus, subject, headers(), payload).await;
                    }
                } else if self.config.split_events {
                    for event in &events {
                        delivered &= self
                            .send(bus, subject, headers(), Bytes::from(event_to_json(event)))
                            .await;
                    }
                } else {
                    delivered = self
                        .send(
                            bus,
                            subject,
                            headers(),
                            Bytes::from(events_to_json(&events)),
                        )
                        .await;
                }
                delivered
            }
        }
    }

    /// Publishes one message; returns whether it reached the transport.
    async fn send(
        &self,
        bus: &dyn Bus,
        subject: &str,
        headers: MessageHeaders,
        payload: Bytes,
    ) -> bool {
        let size = payload.len() as u64;
        let message = BusMessage {
            subject: subject.to_string(),
            headers,
            payload,
        };
        match bus.publish(message).await {
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
}
