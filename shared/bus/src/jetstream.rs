//! JetStream on top of the NATS connection: an acknowledged publisher for the collectors
//! and a durable pull consumer for the exporters (gnmic's `jetstream` output and input).
//!
//! Why this shape: the messages, subjects and headers are exactly those of core NATS
//! ([`crate::contract`]), so the exporter's fencing check is the same code on both paths —
//! JetStream only adds storage between the two sides. What it adds is the ack:
//!
//! * [`JetStreamPublisher`] keeps at most `window` publishes waiting for the server's ack;
//!   a full window waits for its oldest. A publish that is not acknowledged (server down,
//!   ack timeout, no stream) goes to a bounded retry buffer and is published again, with
//!   the same `Nats-Msg-Id`, once `retry_wait` has passed (the oldest alone first, as a
//!   probe) — the stream's duplicate window drops a copy whose first attempt did land. Past
//!   the buffer's bound the oldest message is dropped and counted (the caller's counter):
//!   memory stays bounded during an outage. The count is of messages gnomon gave up on; a
//!   few of them may still reach the stream from the connection's own reconnect buffer.
//! * [`JetStreamConsumer`] fetches batches from a durable consumer with explicit acks; a
//!   [`Delivery`] is acknowledged only after the exporter has processed it, so an exporter
//!   killed mid-batch gets the unacknowledged messages again when it comes back.
//!
//! What it costs: one boxed ack future and one header (`Nats-Msg-Id`) per message; the ack
//! round trips overlap inside the window.

use super::{validate_subject, BusError, BusMessage, NatsBus, Publish};
use crate::nats::{decode_headers, encode_headers};
use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::StreamExt;
use std::collections::VecDeque;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How the stream is made sure of before publishing (gnmic's `create-stream` /
/// `use-existing-stream`).
#[derive(Clone, Debug, PartialEq)]
pub enum StreamSetup {
    /// Publish without looking: the stream must exist (or the publishes are not acked).
    Assume,
    /// The stream must exist; checked at connect.
    Existing,
    /// Created with this configuration when missing (an existing stream is kept as is).
    Create(StreamSpec),
}

/// Storage of a created stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamStorage {
    Memory,
    File,
}

/// Retention of a created stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamRetention {
    Limits,
    WorkQueue,
}

/// A stream to create (gnmic's `create-stream` block).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamSpec {
    pub description: String,
    pub subjects: Vec<String>,
    pub storage: StreamStorage,
    pub retention: StreamRetention,
    /// 0: unlimited (each of the four limits).
    pub max_msgs: i64,
    pub max_bytes: i64,
    pub max_age: Duration,
    pub max_msg_size: i32,
}

/// Publisher settings.
#[derive(Clone, Debug)]
pub struct PublisherOptions {
    pub stream: String,
    pub setup: StreamSetup,
    /// Publishes awaiting their ack, at most.
    pub window: usize,
    /// Unacknowledged messages kept for another attempt, at most.
    pub retry_capacity: usize,
    /// How long an ack is waited for.
    pub ack_timeout: Duration,
    /// Pause before unacknowledged messages are published again.
    pub retry_wait: Duration,
    /// Prefix of the `Nats-Msg-Id` of every message (unique per publisher).
    pub id_prefix: String,
}

/// One message not yet acknowledged.
struct Pending {
    id: String,
    message: BusMessage,
}

/// The ack of one publish: the message back when it was not acknowledged.
type AckWait = BoxFuture<'static, Result<(), (Pending, String)>>;

struct State {
    in_flight: VecDeque<AckWait>,
    retry: VecDeque<Pending>,
    retry_at: Option<Instant>,
    next_id: u64,
}

/// An acknowledged JetStream publisher (see the module documentation).
pub struct JetStreamPublisher {
    client: async_nats::Client,
    context: jetstream::Context,
    /// Messages in the retry buffer, as of the last send or settle (read by `delivers`).
    kept: AtomicUsize,
    options: PublisherOptions,
    state: tokio::sync::Mutex<State>,
    dropped: metrics::Counter,
}

impl JetStreamPublisher {
    /// Publishes through `bus`'s connection; makes sure of the stream per `options.setup`.
    /// Messages dropped past the retry bound count on `dropped`.
    #[tracing::instrument(name = "jetstream.publisher", skip_all, fields(stream = %options.stream))]
    pub async fn new(
        bus: &NatsBus,
        options: PublisherOptions,
        dropped: metrics::Counter,
    ) -> Result<Self, BusError> {
        let context = jetstream::ContextBuilder::new()
            .timeout(options.ack_timeout)
            // The window, plus the retry probe (sent while the window may be full).
            .max_ack_inflight(options.window.max(1) + 1)
            .backpressure_on_inflight(true)
            .build(bus.client().clone());
        setup_stream(&context, &options.stream, &options.setup).await?;
        Ok(Self {
            client: bus.client().clone(),
            kept: AtomicUsize::new(0),
            context,
            state: tokio::sync::Mutex::new(State {
                in_flight: VecDeque::with_capacity(options.window),
                retry: VecDeque::new(),
                retry_at: None,
                next_id: 0,
            }),
            options,
            dropped,
        })
    }

    fn start(&self, pending: Pending) -> BoxFuture<'static, Result<AckWait, (Pending, String)>> {
        let context = self.context.clone();
        Box::pin(async move {
            let mut headers = match encode_headers(pending.message.headers.clone()) {
                Ok(headers) => headers,
                Err(reason) => return Err((pending, reason)),
            };
            headers.insert(async_nats::header::NATS_MESSAGE_ID, pending.id.as_str());
            let publishing = context
                .publish_with_headers(
                    pending.message.subject.clone(),
                    headers,
                    pending.message.payload.clone(),
                )
                .await;
            match publishing {
                Ok(ack) => {
                    let wait: AckWait = Box::pin(async move {
                        match ack.into_future().await {
                            Ok(_) => Ok(()),
                            Err(e) => Err((pending, e.to_string())),
                        }
                    });
                    Ok(wait)
                }
                Err(e) => Err((pending, e.to_string())),
            }
        })
    }

    /// Keeps a message that was not acknowledged for another attempt (dropping the oldest
    /// past the bound).
    fn keep(&self, state: &mut State, pending: Pending, reason: &str) {
        tracing::debug!(subject = %pending.message.subject, reason, "JetStream publish not acknowledged; kept for retry");
        if state.retry.is_empty() {
            state.retry_at = Some(Instant::now() + self.options.retry_wait);
        }
        state.retry.push_back(pending);
        while state.retry.len() > self.options.retry_capacity {
            state.retry.pop_front();
            self.dropped.increment(1);
        }
    }

    /// Waits for the oldest ack in flight.
    async fn settle_oldest(&self, state: &mut State) {
        if let Some(wait) = state.in_flight.pop_front() {
            if let Err((pending, reason)) = wait.await {
                self.keep(state, pending, &reason);
            }
        }
    }

    /// Publishes `pending` into the window (waiting for room first).
    async fn launch(&self, state: &mut State, pending: Pending) {
        while state.in_flight.len() >= self.options.window.max(1) {
            self.settle_oldest(state).await;
        }
        match self.start(pending).await {
            Ok(wait) => state.in_flight.push_back(wait),
            Err((pending, reason)) => self.keep(state, pending, &reason),
        }
    }

    /// Publishes the retry buffer again once its pause has passed (or when `force`). The
    /// oldest message goes first, alone: while JetStream is still away a round costs one
    /// ack timeout, not one per kept message, and the round ends there until the next pause.
    async fn retry(&self, state: &mut State, force: bool) {
        let due = state.retry_at.is_some_and(|at| Instant::now() >= at);
        if state.retry.is_empty() || !(due || force) {
            return;
        }
        state.retry_at = None;
        let Some(probe) = state.retry.pop_front() else {
            return;
        };
        let failed = match self.start(probe).await {
            Ok(wait) => wait.await.err(),
            Err(failed) => Some(failed),
        };
        if let Some((probe, reason)) = failed {
            tracing::debug!(stream = %self.options.stream, reason, kept = state.retry.len() + 1, "JetStream still not acknowledging; retrying later");
            state.retry.push_front(probe);
            state.retry_at = Some(Instant::now() + self.options.retry_wait);
            return;
        }
        let again: Vec<Pending> = state.retry.drain(..).collect();
        for pending in again {
            self.launch(state, pending).await;
        }
    }

    /// Messages waiting for a retry (tests, diagnostics).
    pub async fn retrying(&self) -> usize {
        self.state.lock().await.retry.len()
    }
}

#[async_trait]
impl Publish for JetStreamPublisher {
    async fn send(&self, message: BusMessage) -> Result<(), BusError> {
        validate_subject(&message.subject, false)?;
        let mut state = self.state.lock().await;
        self.retry(&mut state, false).await;
        let id = format!("{}-{}", self.options.id_prefix, state.next_id);
        state.next_id += 1;
        self.launch(&mut state, Pending { id, message }).await;
        self.kept.store(state.retry.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Waits for every ack in flight and gives the unacknowledged one more attempt; what
    /// is still not acknowledged then is dropped and counted.
    async fn settle(&self) -> Result<(), BusError> {
        let mut state = self.state.lock().await;
        while !state.in_flight.is_empty() {
            self.settle_oldest(&mut state).await;
        }
        self.retry(&mut state, true).await;
        while !state.in_flight.is_empty() {
            self.settle_oldest(&mut state).await;
        }
        let lost = state.retry.len();
        state.retry.clear();
        self.kept.store(0, Ordering::Relaxed);
        if lost > 0 {
            self.dropped.increment(lost as u64);
            return Err(BusError::Publish {
                subject: self.options.stream.clone(),
                reason: format!("{lost} messages were not acknowledged by JetStream"),
            });
        }
        Ok(())
    }

    fn delivers(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
            && self.kept.load(Ordering::Relaxed) == 0
    }
}

fn stream_config(name: &str, spec: &StreamSpec) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        description: Some(spec.description.clone()).filter(|d| !d.is_empty()),
        subjects: spec.subjects.clone(),
        storage: match spec.storage {
            StreamStorage::Memory => stream::StorageType::Memory,
            StreamStorage::File => stream::StorageType::File,
        },
        retention: match spec.retention {
            StreamRetention::Limits => stream::RetentionPolicy::Limits,
            StreamRetention::WorkQueue => stream::RetentionPolicy::WorkQueue,
        },
        max_messages: if spec.max_msgs > 0 { spec.max_msgs } else { -1 },
        max_bytes: if spec.max_bytes > 0 {
            spec.max_bytes
        } else {
            -1
        },
        max_age: spec.max_age,
        max_message_size: if spec.max_msg_size > 0 {
            spec.max_msg_size
        } else {
            -1
        },
        ..Default::default()
    }
}

async fn setup_stream(
    context: &jetstream::Context,
    name: &str,
    setup: &StreamSetup,
) -> Result<(), BusError> {
    let failed = |reason: String| BusError::Stream {
        stream: name.to_string(),
        reason,
    };
    match setup {
        StreamSetup::Assume => Ok(()),
        StreamSetup::Existing => context
            .get_stream(name)
            .await
            .map(|_| ())
            .map_err(|e| failed(format!("use-existing-stream: {e}"))),
        StreamSetup::Create(spec) => {
            match context.get_stream(name).await {
                Ok(_) => return Ok(()),
                Err(e)
                    if matches!(
                        e.kind(),
                        jetstream::context::GetStreamErrorKind::JetStream(_)
                    ) =>
                {
                    // Not found (or another JetStream refusal): try to create it below.
                }
                Err(e) => return Err(failed(e.to_string())),
            }
            context
                .create_stream(stream_config(name, spec))
                .await
                .map(|_| ())
                .map_err(|e| failed(format!("create-stream: {e}")))
        }
    }
}

/// gnmic's `deliver-policy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeliverPolicy {
    #[default]
    All,
    Last,
    New,
    LastPerSubject,
}

/// Consumer settings.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    pub stream: String,
    /// Durable consumer name: the exporter's position in the stream survives restarts.
    pub durable: String,
    /// Subject filters (empty: the whole stream).
    pub subjects: Vec<String>,
    pub deliver_policy: DeliverPolicy,
    pub max_ack_pending: i64,
    /// How long the server waits for an ack before delivering again.
    pub ack_wait: Duration,
}

/// A durable pull consumer (see the module documentation).
pub struct JetStreamConsumer {
    consumer: consumer::PullConsumer,
}

/// One message from a [`JetStreamConsumer`]; acknowledge it once processed.
pub struct Delivery {
    pub message: BusMessage,
    acker: Option<jetstream::message::Acker>,
}

impl Delivery {
    /// A message of a transport without acks (core NATS, the in-process bus).
    pub fn unacknowledged(message: BusMessage) -> Self {
        Self {
            message,
            acker: None,
        }
    }

    /// Acknowledges the message (nothing for transports without acks). A failed ack only
    /// means the server delivers the message again after its ack wait.
    pub async fn ack(&self) {
        if let Some(acker) = &self.acker {
            if let Err(error) = acker.ack().await {
                tracing::debug!(subject = %self.message.subject, %error, "JetStream ack failed; the message will be delivered again");
            }
        }
    }
}

impl JetStreamConsumer {
    /// Binds to (creating when missing) the durable consumer on `options.stream`.
    #[tracing::instrument(name = "jetstream.consumer", skip_all, fields(stream = %options.stream, durable = %options.durable))]
    pub async fn bind(bus: &NatsBus, options: &ConsumerOptions) -> Result<Self, BusError> {
        let context = jetstream::new(bus.client().clone());
        let failed = |reason: String| BusError::Stream {
            stream: options.stream.clone(),
            reason,
        };
        let stream = context
            .get_stream(&options.stream)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let (filter_subject, filter_subjects) = match options.subjects.as_slice() {
            [] => (String::new(), Vec::new()),
            [one] => (one.clone(), Vec::new()),
            many => (String::new(), many.to_vec()),
        };
        let config = consumer::pull::Config {
            durable_name: Some(options.durable.clone()),
            deliver_policy: match options.deliver_policy {
                DeliverPolicy::All => consumer::DeliverPolicy::All,
                DeliverPolicy::Last => consumer::DeliverPolicy::Last,
                DeliverPolicy::New => consumer::DeliverPolicy::New,
                DeliverPolicy::LastPerSubject => consumer::DeliverPolicy::LastPerSubject,
            },
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: options.ack_wait,
            max_ack_pending: options.max_ack_pending,
            filter_subject,
            filter_subjects,
            ..Default::default()
        };
        let consumer = stream
            .get_or_create_consumer(&options.durable, config)
            .await
            .map_err(|e| failed(format!("consumer {:?}: {e}", options.durable)))?;
        Ok(Self { consumer })
    }

    /// Up to `batch` messages, waiting at most `wait` for the first ones.
    pub async fn fetch(&self, batch: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        let failed = |reason: String| BusError::Subscribe {
            subject: self.consumer.cached_info().stream_name.clone(),
            reason,
        };
        let mut messages = self
            .consumer
            .batch()
            .max_messages(batch.max(1))
            .expires(wait)
            .messages()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let mut out = Vec::with_capacity(batch);
        while let Some(next) = messages.next().await {
            let (message, acker) = next.map_err(|e| failed(e.to_string()))?.split();
            out.push(Delivery {
                message: BusMessage {
                    subject: message.subject.to_string(),
                    headers: decode_headers(message.headers.as_ref()),
                    payload: message.payload,
                },
                acker: Some(acker),
            });
        }
        Ok(out)
    }
}
