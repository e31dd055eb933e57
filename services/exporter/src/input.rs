//! gnmic's NATS input: `num-workers` subscriptions (each its own connection) to `subject` in
//! queue group `queue`, each feeding a bounded buffer drained by a decoder that writes into
//! the selected Prometheus outputs.
//!
//! gnmic's JetStream input is the same input reading a durable pull consumer instead of a
//! queue subscription (the consumer's name is in `queue`: both name the group that shares
//! the stream): each worker fetches `fetch-batch-size` messages at a time, and a message is
//! acknowledged only once it has been processed, so an exporter that dies mid-batch is
//! served the unacknowledged messages again when it comes back, and one that was down
//! resumes where its consumer stopped.
//!
//! Sharded ([`crate::shard`]): an input feeding a sharded output subscribes, per worker, to
//! the subjects of the held shard's targets only, following the shard held and the
//! cluster's targets; every message is checked against the shard held before it is decoded
//! (a subject shared by two target names, or a message in flight across a handover, is
//! dropped and counted as `other_shard`).
//!
//! Fencing ([`crate::fencing`]): collectors stamp each message with the fencing token of
//! their target lock; a message the judge does not attribute to the lock's current holder is
//! dropped and counted, before it is decoded. The JetStream path carries the same headers
//! and goes through the same [`NatsInput::process`].

use crate::fencing::{Fencing, Verdict};
use crate::gnmi_cache::{notification_of_event, typed_of_number, GnmiCache};
use crate::naming::SampleValue;
use crate::output::{IngestCounts, PrometheusOutput, TARGET_UP};
use crate::processing::{records_of_message, Batching, SharedChain};
use crate::shard::{ShardState, ShardSubjects};
use crate::stats::ExporterStats;
use crate::wire::{decode_events, decode_response, meta_from_subject, WireEvent};
use futures::StreamExt;
use gnomon_bus::jetstream::{ConsumerOptions, DeliverPolicy, Delivery, JetStreamConsumer};
use gnomon_bus::{Bus, BusMessage, BusSubscription, NatsBus, NatsOptions, NatsTls};
use gnomon_common::log::{Escaped, Throttle};
use gnomon_common::retry::Backoff;
use gnomon_config::gotemplate::GoTemplate;
use gnomon_config::jetstream::{self as js_config, InputSubjectFormat, JetStreamConsume};
use gnomon_config::nats_input::{NatsInputConfig, NatsInputFormat};
use gnomon_config::prometheus_output::split_host_port;
use gnomon_gnmi::event::{plain_events, plain_events_from_wire, response_to_events, PlainEvents};
use gnomon_gnmi::event::{Event, EventMeta};
use gnomon_gnmi::proto::gnmi::{subscribe_response, typed_value, TypedValue};
use gnomon_processors::{Record, Str};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// One worker's subscriptions of a sharded input: one per target of the held shard.
struct ShardSubscriptions {
    bus: Arc<dyn Bus>,
    shard: InputShard,
    held: watch::Receiver<Option<u32>>,
    queue: String,
    /// Open subscriptions by target.
    open: tokio_stream::StreamMap<String, BusSubscription>,
    /// Targets removed from the cluster whose subscription closes at the instant given.
    leaving: BTreeMap<String, tokio::time::Instant>,
    /// The shard the open subscriptions belong to.
    serving: Option<u32>,
    /// Set when a subscription failed: reconcile again then.
    retry_at: Option<tokio::time::Instant>,
    errors: Throttle,
}

impl ShardSubscriptions {
    fn new(bus: Arc<dyn Bus>, shard: InputShard, queue: String) -> Self {
        Self {
            bus,
            held: shard.state.subscribe(),
            shard,
            queue,
            open: tokio_stream::StreamMap::new(),
            leaving: BTreeMap::new(),
            serving: None,
            retry_at: None,
            errors: Throttle::new(Duration::from_secs(30)),
        }
    }

    /// Opens the subscriptions of the held shard's targets and closes the others (a target
    /// removed from the cluster after [`REMOVED_TARGET_GRACE`]; all at once on a shard change).
    async fn reconcile(&mut self, input: &str) {
        let held = *self.held.borrow_and_update();
        let targets = self.shard.targets.borrow_and_update().clone();
        let now = tokio::time::Instant::now();
        if held != self.serving {
            let closed = self.open.len();
            self.open = tokio_stream::StreamMap::new();
            self.leaving.clear();
            self.serving = held;
            tracing::info!(input, shard = ?held, closed, "shard changed; subscriptions follow");
        }
        let Some(shard) = held else {
            return;
        };
        let shards = self.shard.state.shards();
        let wanted = |t: &String| targets.contains(t) && crate::shard::shard_of(t, shards) == shard;
        let gone: Vec<String> = self.open.keys().filter(|t| !wanted(t)).cloned().collect();
        for target in gone {
            let until = *self
                .leaving
                .entry(target.clone())
                .or_insert(now + REMOVED_TARGET_GRACE);
            if until <= now {
                self.open.remove(&target);
                self.leaving.remove(&target);
            }
        }
        self.leaving
            .retain(|t, _| !wanted(t) && self.open.contains_key(t));
        self.retry_at = None;
        let mut opened = 0usize;
        for target in targets.iter().filter(|t| wanted(t)) {
            if self.open.contains_key(target) {
                continue;
            }
            let Some(subject) = self.shard.subjects.for_target(target) else {
                if let Some(suppressed) = self.errors.allow() {
                    tracing::warn!(input, target = %Escaped(target), suppressed, "target name cannot be a NATS subject token; its data is not subscribed");
                }
                continue;
            };
            let subscribed = tokio::time::timeout(
                SUBSCRIBE_TIMEOUT,
                self.bus.subscribe(&subject, Some(&self.queue)),
            )
            .await
            .unwrap_or_else(|_| {
                Err(gnomon_bus::BusError::Subscribe {
                    subject: subject.clone(),
                    reason: format!("no answer within {SUBSCRIBE_TIMEOUT:?}"),
                })
            });
            match subscribed {
                Ok(subscription) => {
                    self.open.insert(target.clone(), subscription);
                    opened += 1;
                }
                Err(e) => {
                    if let Some(suppressed) = self.errors.allow() {
                        tracing::warn!(input, subject = %subject, error = %e, suppressed, "shard subscription failed; retrying");
                    }
                    self.retry_at = Some(now + Duration::from_secs(1));
                }
            }
        }
        if opened > 0 {
            tracing::debug!(
                input,
                shard,
                opened,
                open = self.open.len(),
                "shard subscriptions opened"
            );
        }
    }

    /// Waits for the next message of any open subscription, or for something to
    /// reconcile: the shard held, the targets, a removed target's grace ending, a failed
    /// subscription's retry.
    async fn next_event(&mut self) -> ShardEvent {
        let deadline = self.leaving.values().copied().chain(self.retry_at).min();
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let open = &mut self.open;
        let message = async {
            if open.is_empty() {
                std::future::pending::<()>().await;
            }
            match open.next().await {
                Some((_, message)) => message,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            message = message => ShardEvent::Message(message),
            changed = self.held.changed() => match changed {
                Ok(()) => ShardEvent::Reconcile,
                Err(_) => ShardEvent::Closed,
            },
            changed = self.shard.targets.changed() => match changed {
                Ok(()) => ShardEvent::Reconcile,
                Err(_) => ShardEvent::Closed,
            },
            _ = timer => ShardEvent::Reconcile,
        }
    }
}

/// What a sharded worker does next.
enum ShardEvent {
    Message(BusMessage),
    Reconcile,
    /// The shard state or the target list is gone (shutting down).
    Closed,
}

/// Whether a target-status event says the target is down (every value 0).
fn reports_down(event: &WireEvent<'_>) -> bool {
    !event.values.is_empty() && event.values.iter().all(|(_, v)| v.to_f64() == Some(0.0))
}

/// How long a worker waits for room in its buffer before dropping a message.
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one JetStream fetch waits for its batch to fill.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// How long JetStream waits for an ack before delivering a message again.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// How long a removed target's subscription stays open, so the collector's last word on
/// it (the target-status delete) still arrives.
pub const REMOVED_TARGET_GRACE: Duration = Duration::from_secs(5);

/// How long one per-target subscription of a sharded input may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What an input feeding a sharded output subscribes to.
#[derive(Clone)]
pub struct InputShard {
    /// The shard held now.
    pub state: ShardState,
    /// The per-target subjects, from the input's `subject`.
    pub subjects: ShardSubjects,
    /// The cluster's target names.
    pub targets: watch::Receiver<Arc<BTreeSet<String>>>,
}

/// Where an input's subscriptions come from.
#[derive(Clone)]
pub enum BusSource {
    /// Connect to NATS with the input's own settings (one connection per worker).
    Nats,
    /// Use an existing bus (in-process bus of `gnomon all`, or tests).
    Shared(Arc<dyn Bus>),
}

/// Everything one input needs to run.
pub struct NatsInput {
    pub name: String,
    pub config: NatsInputConfig,
    pub queue: String,
    pub client_name: String,
    pub outputs: Vec<Arc<PrometheusOutput>>,
    pub fencing: Arc<Fencing>,
    pub stats: Arc<ExporterStats>,
    /// The input's `event-processors` (`None`: none configured; see [`SharedChain::new`]).
    pub chain: Option<SharedChain>,
    /// The gNMI server's cache, fed with every accepted notification before processors.
    pub gnmi_cache: Option<Arc<GnmiCache>>,
    /// Set when the input feeds a sharded output: subscribe to the held shard only.
    pub shard: Option<InputShard>,
}

impl NatsInput {
    fn nats_options(&self, worker: usize) -> NatsOptions {
        let config = &self.config;
        let mut options = NatsOptions::new(config.address.clone());
        options.name = Some(format!("{}-{worker}", self.client_name));
        let given = |secret: &Option<gnomon_config::Secret>| {
            secret
                .as_ref()
                .map(|s| s.expose().to_string())
                .filter(|s| !s.is_empty())
        };
        if !config.username.is_empty() {
            options.username = Some(config.username.clone());
            options.password = given(&config.password);
        }
        options.token = given(&config.token);
        options.credentials_file = config.credentials_file.clone();
        options.tls = config.tls.as_ref().map(|tls| NatsTls {
            ca_file: tls.ca_file.clone().map(Into::into),
            cert_file: tls.cert_file.clone().map(Into::into),
            key_file: tls.key_file.clone().map(Into::into),
        });
        options
    }

    /// Starts every worker in `tasks`, running until `shutdown`. Workers whose NATS is
    /// reachable are subscribed when this returns (messages published afterwards arrive);
    /// the others keep retrying every `connect-time-wait` in the background. JetStream
    /// workers bind their durable consumer in the background (the stream keeps what is
    /// published meanwhile).
    pub async fn start(
        self: Arc<Self>,
        source: BusSource,
        tasks: &mut JoinSet<()>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        for worker in 0..self.config.effective_num_workers() {
            let (sender, receiver) = mpsc::channel::<Delivery>(self.config.effective_buffer_size());
            match (&self.config.jetstream, &source) {
                (None, _) if self.shard.is_some() => {
                    self.clone()
                        .start_sharded(&source, worker, sender, tasks, shutdown.clone());
                }
                (Some(jetstream), BusSource::Nats) => {
                    self.clone().start_fetching(
                        jetstream.clone(),
                        worker,
                        sender,
                        tasks,
                        shutdown.clone(),
                    );
                }
                _ => {
                    self.clone()
                        .start_subscribed(&source, worker, sender, tasks, shutdown.clone())
                        .await;
                }
            }
            let processor = self.clone();
            let stop = shutdown.clone();
            tasks.spawn(async move {
                let mut receiver = receiver;
                loop {
                    let message = tokio::select! {
                        _ = stop.cancelled() => break,
                        message = receiver.recv() => message,
                    };
                    let Some(delivery) = message else { break };
                    let message = &delivery.message;
                    match message.headers.traceparent.as_deref() {
                        // Only a stream's first message carries one, and only when the
                        // publisher traces: continue its trace for this message.
                        Some(parent) if gnomon_telemetry::trace_propagation_enabled() => {
                            let span = tracing::info_span!(
                                "bus_consume",
                                input = %processor.name,
                                subject = %message.subject
                            );
                            gnomon_telemetry::adopt_traceparent(&span, parent);
                            span.in_scope(|| processor.process(message));
                        }
                        _ => processor.process(message),
                    }
                    // Only now: a message processed is one a restarted exporter need not see.
                    delivery.ack().await;
                }
            });
        }
        Ok(())
    }

    /// Core NATS (or the shared bus): subscribe now when reachable, else keep retrying in
    /// the background; received messages go to `sender`.
    async fn start_subscribed(
        self: Arc<Self>,
        source: &BusSource,
        worker: usize,
        sender: mpsc::Sender<Delivery>,
        tasks: &mut JoinSet<()>,
        stop: CancellationToken,
    ) {
        // Subscribe now when NATS is reachable, so messages published after `start`
        // returns are received; otherwise keep retrying in the background.
        let ready = match self.subscribe_once(source, worker).await {
            Ok(ready) => Some(ready),
            Err(e) => {
                tracing::warn!(input = %self.name, worker, error = %e, "NATS subscription failed; retrying in the background");
                None
            }
        };
        let source = source.clone();
        let span = tracing::info_span!("nats_input_reader", input = %self.name, worker);
        let reader = self;
        tasks.spawn(
            async move {
                let ready = match ready {
                    Some(ready) => Some(ready),
                    None => reader.subscribe_retrying(&source, worker, &stop).await,
                };
                // Keep the bus (connection) alive as long as the subscription is read.
                let Some((_bus, mut subscription)) = ready else {
                    return;
                };
                loop {
                    let message = tokio::select! {
                        _ = stop.cancelled() => break,
                        message = subscription.next() => message,
                    };
                    let Some(message) = message else {
                        tracing::warn!(input = %reader.name, "subscription ended");
                        break;
                    };
                    reader.stats.message();
                    if !reader
                        .enqueue(&sender, Delivery::unacknowledged(message))
                        .await
                    {
                        break;
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Sharded: one task per worker keeping a subscription per target of the held shard
    /// (on one connection), following the shard held and the cluster's targets.
    fn start_sharded(
        self: Arc<Self>,
        source: &BusSource,
        worker: usize,
        sender: mpsc::Sender<Delivery>,
        tasks: &mut JoinSet<()>,
        stop: CancellationToken,
    ) {
        let source = source.clone();
        let span = tracing::info_span!("nats_input_shard_reader", input = %self.name, worker);
        let reader = self;
        tasks.spawn(
            async move {
                let Some(shard) = reader.shard.clone() else {
                    return;
                };
                let wait = reader.config.effective_connect_time_wait();
                let mut pause = Backoff::new(wait, wait);
                let mut errors = Throttle::new(Duration::from_secs(30));
                let bus = loop {
                    match reader.connect(&source, worker).await {
                        Ok(bus) => break bus,
                        Err(e) => {
                            if let Some(suppressed) = errors.allow() {
                                tracing::warn!(input = %reader.name, worker, error = %e, suppressed, "NATS connection failed; retrying");
                            }
                        }
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(pause.next_delay()) => {}
                    }
                };
                let mut subscriptions = ShardSubscriptions::new(bus, shard, reader.queue.clone());
                subscriptions.reconcile(&reader.name).await;
                loop {
                    let event = tokio::select! {
                        _ = stop.cancelled() => break,
                        event = subscriptions.next_event() => event,
                    };
                    match event {
                        ShardEvent::Message(message) => {
                            reader.stats.message();
                            if !reader.enqueue(&sender, Delivery::unacknowledged(message)).await {
                                break;
                            }
                        }
                        ShardEvent::Reconcile => subscriptions.reconcile(&reader.name).await,
                        ShardEvent::Closed => break,
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Hands a message to the processor; false once the processor is gone.
    async fn enqueue(&self, sender: &mpsc::Sender<Delivery>, delivery: Delivery) -> bool {
        match sender.send_timeout(delivery, ENQUEUE_TIMEOUT).await {
            Ok(()) => true,
            // Not acknowledged: JetStream delivers it again after its ack wait.
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                self.stats.dropped("buffer_full");
                true
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
        }
    }

    /// The durable consumer's options for this input.
    fn consumer_options(&self, jetstream: &JetStreamConsume) -> ConsumerOptions {
        ConsumerOptions {
            stream: jetstream.stream.clone(),
            durable: self.queue.clone(),
            subjects: jetstream.subjects.clone(),
            deliver_policy: match jetstream.deliver_policy {
                js_config::DeliverPolicy::All => DeliverPolicy::All,
                js_config::DeliverPolicy::Last => DeliverPolicy::Last,
                js_config::DeliverPolicy::New => DeliverPolicy::New,
                js_config::DeliverPolicy::LastPerSubject => DeliverPolicy::LastPerSubject,
            },
            max_ack_pending: jetstream.max_ack_pending,
            ack_wait: ACK_WAIT,
        }
    }

    /// JetStream: one task per worker binding the durable consumer (retrying every
    /// `connect-time-wait`), then fetching batches into `sender` until `stop`.
    fn start_fetching(
        self: Arc<Self>,
        jetstream: JetStreamConsume,
        worker: usize,
        sender: mpsc::Sender<Delivery>,
        tasks: &mut JoinSet<()>,
        stop: CancellationToken,
    ) {
        let span = tracing::info_span!("jetstream_input_reader", input = %self.name, worker, stream = %jetstream.stream, durable = %self.queue);
        let reader = self;
        tasks.spawn(
            async move {
                let options = reader.consumer_options(&jetstream);
                let wait = reader.config.effective_connect_time_wait();
                let mut pause = Backoff::new(wait, wait);
                let mut errors = Throttle::new(Duration::from_secs(30));
                let mut first = true;
                'connect: loop {
                    if !first {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(pause.next_delay()) => {}
                        }
                    }
                    first = false;
                    let bound = async {
                        let bus = NatsBus::connect(&reader.nats_options(worker)).await?;
                        let consumer = JetStreamConsumer::bind(&bus, &options).await?;
                        Ok::<_, gnomon_bus::BusError>((bus, consumer))
                    };
                    let (_bus, consumer) = tokio::select! {
                        _ = stop.cancelled() => return,
                        bound = bound => match bound {
                            Ok(bound) => bound,
                            Err(e) => {
                                if let Some(suppressed) = errors.allow() {
                                    tracing::warn!(input = %reader.name, worker, error = %e, suppressed, "JetStream consumer not bound; retrying");
                                }
                                continue 'connect;
                            }
                        },
                    };
                    tracing::info!(input = %reader.name, worker, stream = %options.stream, durable = %options.durable, "JetStream consumer bound");
                    loop {
                        let fetched = tokio::select! {
                            _ = stop.cancelled() => return,
                            fetched = consumer.fetch(jetstream.fetch_batch_size, FETCH_WAIT) => fetched,
                        };
                        match fetched {
                            Ok(batch) => {
                                for delivery in batch {
                                    reader.stats.message();
                                    if !reader.enqueue(&sender, delivery).await {
                                        return;
                                    }
                                }
                            }
                            Err(e) => {
                                if let Some(suppressed) = errors.allow() {
                                    tracing::warn!(input = %reader.name, worker, error = %e, suppressed, "JetStream fetch failed; binding again");
                                }
                                continue 'connect;
                            }
                        }
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Worker `worker`'s bus: the shared one, or a new NATS connection.
    async fn connect(&self, source: &BusSource, worker: usize) -> anyhow::Result<Arc<dyn Bus>> {
        Ok(match source {
            BusSource::Shared(bus) => bus.clone(),
            BusSource::Nats => Arc::new(NatsBus::connect(&self.nats_options(worker)).await?),
        })
    }

    /// One attempt to connect (unless the bus is shared) and subscribe worker `worker`.
    async fn subscribe_once(
        &self,
        source: &BusSource,
        worker: usize,
    ) -> anyhow::Result<(Arc<dyn Bus>, BusSubscription)> {
        let bus = self.connect(source, worker).await?;
        // A JetStream input on a shared (in-process) bus: no storage there, the stream's
        // subjects are read directly.
        let subject = match &self.config.jetstream {
            Some(jetstream) => match jetstream.subjects.as_slice() {
                [one] => one.clone(),
                _ => format!("{}.>", jetstream.stream),
            },
            None => self.config.subject.clone(),
        };
        let subscription = bus.subscribe(&subject, Some(&self.queue)).await?;
        tracing::info!(input = %self.name, subject = %subject, queue = %self.queue, worker, "subscribed");
        Ok((bus, subscription))
    }

    /// Retries [`Self::subscribe_once`] every `connect-time-wait` until it works or `shutdown`.
    async fn subscribe_retrying(
        &self,
        source: &BusSource,
        worker: usize,
        shutdown: &CancellationToken,
    ) -> Option<(Arc<dyn Bus>, BusSubscription)> {
        let wait = self.config.effective_connect_time_wait();
        let mut pause = Backoff::new(wait, wait);
        let mut errors = Throttle::new(Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(pause.next_delay()) => {}
            }
            match self.subscribe_once(source, worker).await {
                Ok(ready) => return Some(ready),
                Err(e) => {
                    if let Some(suppressed) = errors.allow() {
                        tracing::warn!(input = %self.name, worker, error = %e, suppressed, "NATS subscription failed; retrying")
                    }
                }
            }
        }
    }

    /// Checks the message's fencing token, decodes it and hands its events to the outputs.
    pub fn process(&self, message: &BusMessage) {
        if message.payload.is_empty() {
            return;
        }
        // A message without a target header cannot prove its owner and is dropped by the
        // fencing judge below (sharding needs the cluster store, so fencing follows it).
        if let (Some(shard), Some(target)) = (&self.shard, message.headers.target.as_deref()) {
            if !shard.state.accepts(target) {
                self.stats.dropped("other_shard");
                return;
            }
        }
        let token = message.headers.fencing_token;
        let target = message.headers.target.as_deref();
        let verdict = match target {
            Some(target) if message.headers.is_target_status() => {
                self.fencing.judge_status(target, token)
            }
            Some(target) => self.fencing.judge(target, token),
            None if self.fencing.requires_owner() => Verdict::Unconfirmed,
            None => Verdict::Accept,
        };
        match verdict {
            Verdict::Accept => {}
            Verdict::Stale => {
                tracing::debug!(input = %self.name, target = %Escaped(target.unwrap_or_default()), ?token, "stale fencing token");
                self.stats.stale();
                return;
            }
            Verdict::Unconfirmed => {
                tracing::debug!(input = %self.name, target = %Escaped(target.unwrap_or_default()), ?token, "fencing token not confirmed by the store");
                self.stats.unconfirmed();
                return;
            }
            Verdict::LastWord => {
                self.deliver_last_word(message);
                return;
            }
        }
        let decoded =
            if self.config.format == NatsInputFormat::Event || message.headers.is_target_status() {
                self.decode_event_message(message)
            } else {
                self.decode_proto_message(message)
            };
        if decoded {
            if let Some(target) = target {
                self.fencing.record(target, token);
            }
        }
    }

    /// Event-format payload; returns whether it decoded.
    fn decode_event_message(&self, message: &BusMessage) -> bool {
        match decode_events(&message.payload) {
            Ok(events) => {
                if !message.headers.is_target_status() {
                    self.cache_events(message, &events);
                }
                match &self.chain {
                    // The collector's target status is gnomon's, not telemetry.
                    Some(chain) if !message.headers.is_target_status() => {
                        let mut records = records_of_message(&message.payload, &events);
                        chain.apply(&mut records, Batching::Message);
                        self.deliver_records(records, Batching::PerEvent);
                    }
                    _ => self.deliver(&events),
                }
                true
            }
            Err(e) => {
                self.malformed(message, &e);
                false
            }
        }
    }

    /// Proto payload (a SubscribeResponse); returns whether it decoded.
    fn decode_proto_message(&self, message: &BusMessage) -> bool {
        let meta = match (&message.headers.target, &message.headers.subscription) {
            (Some(target), subscription) => {
                EventMeta::new(target.clone(), subscription.clone().unwrap_or_default())
            }
            (None, _) => match &self.config.jetstream {
                Some(jetstream) => jetstream_meta(
                    &message.subject,
                    &jetstream.stream,
                    jetstream.subject_format,
                ),
                None => meta_from_subject(&message.subject),
            },
        };
        let plain_path = self.takes_plain_events();
        if plain_path && self.gnmi_cache.is_none() {
            if let Some(plain) = plain_events_from_wire(&message.payload, &meta) {
                if self.deliver_plain(&plain) {
                    return true;
                }
            }
        }
        match decode_response(&message.payload) {
            Ok(response) => {
                self.cache_response(message, &meta, &response);
                if let Some(subscribe_response::Response::Update(notification)) = &response.response
                {
                    let plain = plain_path
                        .then(|| plain_events(notification, &meta))
                        .flatten();
                    if plain.is_some_and(|plain| self.deliver_plain(&plain)) {
                        return true;
                    }
                }
                let events = response_to_events(&response, &meta);
                if let Some(chain) = &self.chain {
                    let mut records: Vec<Record> = events.into_iter().map(Record::from).collect();
                    chain.apply(&mut records, Batching::Message);
                    self.deliver_targeted_records(records, self.outputs.iter());
                    return true;
                }
                if self.outputs.iter().any(|o| o.has_processors()) {
                    let records: Vec<Record> = events.iter().map(Record::from).collect();
                    let processing = self.outputs.iter().filter(|o| o.has_processors());
                    self.deliver_targeted_records(records, processing);
                }
                let views: Vec<WireEvent<'_>> = events.iter().map(WireEvent::borrowed).collect();
                for output in self.outputs.iter().filter(|o| !o.has_processors()) {
                    match add_target_mode(output) {
                        None => self.deliver_to(output, &views),
                        Some(mode) => {
                            let mut targeted = events.clone();
                            for event in &mut targeted {
                                apply_add_target(event, &mode);
                            }
                            let targeted_views: Vec<WireEvent<'_>> =
                                targeted.iter().map(WireEvent::borrowed).collect();
                            self.deliver_to(output, &targeted_views);
                        }
                    }
                }
                true
            }
            Err(e) => {
                self.malformed(message, &e);
                false
            }
        }
    }

    /// Whether the outputs take plain events (see [`plain_events`]) as they are: no
    /// processors anywhere and no `add-target`.
    fn takes_plain_events(&self) -> bool {
        self.chain.is_none()
            && !self
                .outputs
                .iter()
                .any(|o| o.has_processors() || add_target_mode(o).is_some())
    }

    /// Delivers a notification in the shape most telemetry has (scalars, no deletes) to
    /// the outputs without building a map per event; `false` when the general path must
    /// take it (gnomon's own target status).
    fn deliver_plain(&self, plain: &PlainEvents<'_>) -> bool {
        if plain.name == TARGET_UP {
            return false;
        }
        let samples: Vec<(&str, SampleValue<'_>)> = plain
            .entries()
            .iter()
            .map(|entry| (plain.key(entry), SampleValue::from(entry.value)))
            .collect();
        for output in &self.outputs {
            let counts = output.ingest_plain(plain, &samples);
            self.count(output, counts);
        }
        true
    }

    /// Feeds the gNMI cache with a proto message's notification, under the message's
    /// target (else the notification's prefix target, else the source).
    fn cache_response(
        &self,
        message: &BusMessage,
        meta: &EventMeta,
        response: &gnomon_gnmi::proto::gnmi::SubscribeResponse,
    ) {
        let (Some(cache), Some(subscribe_response::Response::Update(notification))) =
            (&self.gnmi_cache, &response.response)
        else {
            return;
        };
        let prefix_target = notification
            .prefix
            .as_ref()
            .map(|p| p.target.as_str())
            .filter(|t| !t.is_empty());
        let target = message
            .headers
            .target
            .as_deref()
            .or(prefix_target)
            .unwrap_or(meta.source.as_str());
        let refused = cache.ingest(target, notification);
        if refused > 0 {
            metrics::counter!(crate::stats::GNMI_CACHE_DROPPED).increment(refused);
        }
    }

    /// Feeds the gNMI cache with an event message's events, each rebuilt as a notification.
    fn cache_events(&self, message: &BusMessage, events: &[WireEvent<'_>]) {
        let Some(cache) = &self.gnmi_cache else {
            return;
        };
        for event in events {
            let Some(target) = message
                .headers
                .target
                .as_deref()
                .or_else(|| event.tag("source"))
            else {
                continue;
            };
            let values = event.values.iter().filter_map(|(path, value)| {
                let typed = match value {
                    SampleValue::Number(n) => typed_of_number(*n),
                    SampleValue::Bool(b) => TypedValue {
                        value: Some(typed_value::Value::BoolVal(*b)),
                    },
                    SampleValue::Text(t) => TypedValue {
                        value: Some(typed_value::Value::StringVal(t.to_string())),
                    },
                    SampleValue::Other => return None,
                };
                Some((path.to_string(), typed))
            });
            let notification = notification_of_event(
                event.timestamp,
                &event.tags,
                values,
                event.deletes.iter().map(|d| d.to_string()),
            );
            let refused = cache.ingest(target, &notification);
            if refused > 0 {
                metrics::counter!(crate::stats::GNMI_CACHE_DROPPED).increment(refused);
            }
        }
    }

    /// The final status of a holder that has released the lock: only what deletes the
    /// target's up series or reports it down is applied (see [`crate::fencing`]).
    fn deliver_last_word(&self, message: &BusMessage) {
        match decode_events(&message.payload) {
            Ok(events) => {
                let down: Vec<WireEvent<'_>> = events
                    .into_iter()
                    .filter(|e| e.name == TARGET_UP && (!e.deletes.is_empty() || reports_down(e)))
                    .collect();
                if down.is_empty() {
                    self.stats.unconfirmed();
                } else {
                    self.deliver(&down);
                }
            }
            Err(e) => self.malformed(message, &e),
        }
    }

    fn malformed(&self, message: &BusMessage, error: &crate::wire::DecodeError) {
        tracing::debug!(input = %self.name, subject = %message.subject, error = %error, "malformed message skipped");
        self.stats.malformed(error.reason());
    }

    fn deliver(&self, events: &[WireEvent<'_>]) {
        for output in &self.outputs {
            self.deliver_to(output, events);
        }
    }

    fn deliver_to(&self, output: &PrometheusOutput, events: &[WireEvent<'_>]) {
        let counts = output.ingest(events);
        self.count(output, counts);
    }

    /// Processed events to every output (each gets its own copy but the last).
    fn deliver_records(&self, records: Vec<Record>, batching: Batching) {
        if records.is_empty() {
            return;
        }
        let Some((last, others)) = self.outputs.split_last() else {
            return;
        };
        for output in others {
            let counts = output.ingest_records(records.clone(), batching);
            self.count(output, counts);
        }
        let counts = last.ingest_records(records, batching);
        self.count(last, counts);
    }

    /// Proto-message records to `outputs`, each with its `add-target` applied (gnmic applies
    /// it before the output's processors).
    fn deliver_targeted_records<'o>(
        &self,
        records: Vec<Record>,
        outputs: impl Iterator<Item = &'o Arc<PrometheusOutput>>,
    ) {
        if records.is_empty() {
            return;
        }
        for output in outputs {
            let mut batch = records.clone();
            if let Some(mode) = add_target_mode(output) {
                for record in &mut batch {
                    apply_add_target_record(record, &mode);
                }
            }
            let counts = output.ingest_records(batch, Batching::Message);
            self.count(output, counts);
        }
    }

    fn count(&self, output: &PrometheusOutput, counts: IngestCounts) {
        if counts.stored > 0 {
            self.stats.updates(output.updates_counter(), counts.stored);
        }
        if counts.inserted > 0 {
            metrics::gauge!(crate::stats::SERIES, "output" => output.name().to_string())
                .set(output.series_count() as f64);
        }
    }
}

/// Source and subscription of a header-less proto message from a JetStream subject, per
/// the input's `subject-format` (the leading stream name, as gnmic's output writes it, is
/// skipped).
fn jetstream_meta(subject: &str, stream: &str, format: InputSubjectFormat) -> EventMeta {
    let mut tokens = subject.split('.').peekable();
    if tokens.peek() == Some(&stream) {
        tokens.next();
    }
    let mut next = || tokens.next().unwrap_or_default().to_string();
    match format {
        InputSubjectFormat::Static => EventMeta::new(String::new(), String::new()),
        InputSubjectFormat::SubscriptionTarget => {
            let subscription = next();
            EventMeta::new(next(), subscription)
        }
        InputSubjectFormat::TargetSubscription => {
            let source = next();
            EventMeta::new(source, next())
        }
    }
}

/// gnmic's `add-target` of the Prometheus output, with its `target-template` (`None`: the
/// default), applied to proto messages only (as gnmic applies it in its proto `Write` path).
#[derive(Clone, Copy, Debug)]
enum AddTarget<'o> {
    Overwrite(Option<&'o GoTemplate>),
    IfNotPresent(Option<&'o GoTemplate>),
}

/// A plain value as the general path reads it (through JSON: integers as floats, strings
/// as text).
fn add_target_mode(output: &PrometheusOutput) -> Option<AddTarget<'_>> {
    let template = output.target_template();
    match output.config().add_target.as_deref() {
        Some("overwrite") => Some(AddTarget::Overwrite(template)),
        Some("if-not-present") => Some(AddTarget::IfNotPresent(template)),
        _ => None,
    }
}

impl AddTarget<'_> {
    /// The `target` tag for an event with `tags`, or `None` to leave the event as it is:
    /// `if-not-present` and a target already there, an empty result, or a template that
    /// fails (logged; gnmic leaves the message unchanged too).
    fn target<'t>(&self, tags: impl Iterator<Item = (&'t str, &'t str)> + Clone) -> Option<String> {
        let template = match self {
            Self::IfNotPresent(_) if tags.clone().any(|(k, _)| k == "target") => return None,
            Self::Overwrite(template) | Self::IfNotPresent(template) => template,
        };
        let value = match template {
            // gnmic's default template, without rendering one.
            None => match tags
                .clone()
                .find(|(k, v)| *k == "subscription-target" && !v.is_empty())
            {
                Some((_, subscription_target)) => subscription_target.to_string(),
                None => {
                    let source = tags.clone().find(|(k, _)| *k == "source").map(|(_, v)| v);
                    split_host_port(source.unwrap_or_default()).0.to_string()
                }
            },
            // gnmic renders its templates over the message's metadata; the event's tags
            // carry it (source, subscription-name, subscription-target…).
            Some(template) => {
                let data: serde_json::Map<String, serde_json::Value> = tags
                    .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
                    .collect();
                match template.render(&serde_json::Value::Object(data)) {
                    Ok(text) => text,
                    Err(error) => {
                        tracing::debug!(template = template.source(), %error, "target-template failed");
                        return None;
                    }
                }
            }
        };
        (!value.is_empty()).then_some(value)
    }
}

/// [`apply_add_target`] on a record.
fn apply_add_target_record(record: &mut Record, mode: &AddTarget<'_>) {
    let target = mode.target(record.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Some(target) = target {
        record.tags.insert("target", Str::from(target));
    }
}

/// Sets the `target` tag as gnmic's `add-target` does, from the output's `target-template`
/// (default: the subscription's `subscription-target` if set, else the `source` without its
/// port).
fn apply_add_target(event: &mut Event, mode: &AddTarget<'_>) {
    let target = mode.target(event.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Some(target) = target {
        event.tags.insert("target".to_string(), target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jetstream_subjects_name_source_and_subscription_per_subject_format() {
        let meta = |subject: &str, format| {
            let meta = jetstream_meta(subject, "tele", format);
            (meta.source, meta.subscription_name)
        };
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            meta("tele.r1.port-stats", InputSubjectFormat::TargetSubscription),
            pair("r1", "port-stats")
        );
        assert_eq!(
            meta("tele.port-stats.r1", InputSubjectFormat::SubscriptionTarget),
            pair("r1", "port-stats")
        );
        assert_eq!(
            meta("r1.port-stats", InputSubjectFormat::TargetSubscription),
            pair("r1", "port-stats")
        );
        assert_eq!(
            meta("tele.r1.port-stats", InputSubjectFormat::Static),
            pair("", "")
        );
        assert_eq!(
            meta("tele", InputSubjectFormat::TargetSubscription),
            pair("", "")
        );
    }

    #[test]
    fn add_target_uses_the_default_template() {
        let mut event = Event::default();
        event.tags.insert("source".into(), "10.0.0.1:57400".into());
        event.tags.insert("target".into(), "from-prefix".into());
        let mut kept = event.clone();
        apply_add_target(&mut kept, &AddTarget::IfNotPresent(None));
        assert_eq!(kept.tags["target"], "from-prefix");
        apply_add_target(&mut event, &AddTarget::Overwrite(None));
        assert_eq!(event.tags["target"], "10.0.0.1");
        event
            .tags
            .insert("subscription-target".into(), "sub-t".into());
        apply_add_target(&mut event, &AddTarget::Overwrite(None));
        assert_eq!(event.tags["target"], "sub-t");
    }

    #[test]
    fn add_target_renders_a_custom_template_over_the_tags() {
        let template = GoTemplate::parse(
            "{{ index . \"subscription-name\" }}@{{ index . \"source\" | host }}",
        )
        .unwrap();
        let mut event = Event::default();
        event.tags.insert("source".into(), "r1.lab:57400".into());
        event
            .tags
            .insert("subscription-name".into(), "ports".into());
        apply_add_target(&mut event, &AddTarget::Overwrite(Some(&template)));
        assert_eq!(event.tags["target"], "ports@r1.lab");
        let mut record = Record::from(event.clone());
        record.tags.insert("target", Str::from("kept"));
        apply_add_target_record(&mut record, &AddTarget::IfNotPresent(Some(&template)));
        assert_eq!(record.tag("target"), Some("kept"));
        // A template that renders nothing leaves the event alone.
        let empty = GoTemplate::parse("{{ if .nothing }}x{{ end }}").unwrap();
        apply_add_target(&mut event, &AddTarget::Overwrite(Some(&empty)));
        assert_eq!(event.tags["target"], "ports@r1.lab");
    }

    fn proto_message(values: &[(&str, u64)]) -> BusMessage {
        use gnomon_gnmi::proto::gnmi::{
            subscribe_response, typed_value, Notification, Path, PathElem, SubscribeResponse,
            TypedValue, Update,
        };
        let elem = |name: &str| PathElem {
            name: name.to_string(),
            ..Default::default()
        };
        let response = SubscribeResponse {
            response: Some(subscribe_response::Response::Update(Notification {
                timestamp: 1_700_000_000_000_000_000,
                update: values
                    .iter()
                    .map(|(name, value)| Update {
                        path: Some(Path {
                            elem: vec![elem("counters"), elem(name)],
                            ..Default::default()
                        }),
                        val: Some(TypedValue {
                            value: Some(typed_value::Value::UintVal(*value)),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })),
            ..Default::default()
        };
        BusMessage {
            subject: "telemetry.10-0-0-1:57400.s".into(),
            headers: gnomon_bus::MessageHeaders {
                target: Some("10.0.0.1:57400".into()),
                subscription: Some("s".into()),
                fencing_token: Some(1),
                traceparent: None,
            },
            payload: prost::Message::encode_to_vec(&response).into(),
        }
    }

    #[test]
    fn a_sharded_input_keeps_only_its_shards_targets() {
        let output = Arc::new(PrometheusOutput::new("p", Default::default()));
        let mut input = input_with(None, vec![output.clone()]);
        input.config.format = NatsInputFormat::Event;
        let mine = crate::shard::shard_of("r1", 2);
        let other = (0..100)
            .map(|i| format!("r{i}"))
            .find(|t| crate::shard::shard_of(t, 2) != mine)
            .unwrap();
        let (_keep, targets) = watch::channel(Arc::new(BTreeSet::new()));
        input.shard = Some(InputShard {
            state: ShardState::fixed(2, mine),
            subjects: ShardSubjects::from_input_subject("telemetry.>").unwrap(),
            targets,
        });
        let message = |target: &str| BusMessage {
            subject: format!("telemetry.{target}.s"),
            headers: gnomon_bus::MessageHeaders {
                target: Some(target.to_string()),
                subscription: Some("s".into()),
                fencing_token: None,
                traceparent: None,
            },
            payload: bytes::Bytes::from(format!(
                r#"[{{"name":"s","timestamp":1,"tags":{{"source":"{target}"}},"values":{{"v":1}}}}]"#
            )),
        };
        input.process(&message("r1"));
        input.process(&message(&other));
        let text = String::from_utf8(output.render()).unwrap();
        assert!(text.contains("source=\"r1\""), "{text}");
        assert!(!text.contains(&format!("source=\"{other}\"")), "{text}");
        assert_eq!(input.stats.dropped_total(), 1);
    }

    fn input_with(chain: Option<SharedChain>, outputs: Vec<Arc<PrometheusOutput>>) -> NatsInput {
        let config: NatsInputConfig = serde_yaml::from_str("format: proto").unwrap();
        NatsInput {
            name: "in".into(),
            config,
            queue: "in".into(),
            client_name: "in".into(),
            outputs,
            fencing: Arc::new(Fencing::default()),
            stats: Arc::new(ExporterStats::default()),
            chain,
            gnmi_cache: None,
            shard: None,
        }
    }

    #[test]
    fn plain_notifications_give_what_the_general_path_gives() {
        use gnomon_gnmi::path::parse_path;
        use gnomon_gnmi::proto::gnmi::{
            subscribe_response, typed_value::Value as V, Notification, SubscribeResponse,
            TypedValue, Update,
        };
        let update = |path: &str, value: V| Update {
            path: Some(parse_path(path).unwrap()),
            val: Some(TypedValue { value: Some(value) }),
            ..Default::default()
        };
        let mut prefix = parse_path("/interfaces/interface[name=e1]/state").unwrap();
        prefix.target = "leaf1".into();
        let response = SubscribeResponse {
            response: Some(subscribe_response::Response::Update(Notification {
                timestamp: 1_700_000_000_000_000_000,
                prefix: Some(prefix),
                update: vec![
                    update("counters/in-octets", V::UintVal(u64::MAX)),
                    update("mtu", V::IntVal(-9000)),
                    update("enabled", V::BoolVal(true)),
                    update("oper-status", V::StringVal("UP".into())),
                    update("counters/out-octets", V::StringVal("12.5".into())),
                ],
                ..Default::default()
            })),
            ..Default::default()
        };
        let mut message = proto_message(&[]);
        message.payload = prost::Message::encode_to_vec(&response).into();
        let noop = gnomon_processors::Processors::from_config(&serde_json::json!({
            "noop": {"event-delete": {"value-names": ["^nothing$"]}}
        }))
        .unwrap();
        for yaml in ["{}", "strings-as-labels: true"] {
            let output = || {
                Arc::new(PrometheusOutput::new(
                    "p",
                    serde_yaml::from_str(yaml).unwrap(),
                ))
            };
            let (fast, general) = (output(), output());
            input_with(None, vec![fast.clone()]).process(&message);
            // An output with processors next to it sends the plain one the general way.
            let processed = Arc::new(
                PrometheusOutput::new("q", serde_yaml::from_str(yaml).unwrap())
                    .with_chain(noop.chain(&["noop"]).unwrap()),
            );
            input_with(None, vec![general.clone(), processed]).process(&message);
            let (fast, general) = (fast.render(), general.render());
            assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&general)
            );
            assert!(
                String::from_utf8_lossy(&fast).contains("interface_name=\"e1\""),
                "{}",
                String::from_utf8_lossy(&fast)
            );
        }
    }

    #[test]
    fn proto_messages_go_through_the_input_then_add_target_then_each_output() {
        let procs = gnomon_processors::Processors::from_config(&serde_json::json!({
            "short": {"event-strings": {"value-names": [".*"],
                "transforms": [{"path-base": {"apply-on": "name"}}]}},
            "no-discards": {"event-delete": {"value-names": ["discards$"]}},
            "site": {"event-add-tag": {"value-names": [".*"], "add": {"site": "lab"}}}
        }))
        .unwrap();
        let output = |yaml: &str, chain: &[&str]| {
            Arc::new(
                PrometheusOutput::new("p", serde_yaml::from_str(yaml).unwrap())
                    .with_chain(procs.chain(chain).unwrap()),
            )
        };
        let with_site = output("add-target: overwrite", &["site", "no-discards"]);
        let plain = output("{}", &[]);
        let message = proto_message(&[("in-octets", 7), ("in-discards", 1)]);
        let text = |o: &PrometheusOutput| String::from_utf8(o.render()).unwrap();

        // Outputs' processors only; the plain output keeps its zero-copy path.
        input_with(None, vec![with_site.clone(), plain.clone()]).process(&message);
        assert!(
            text(&with_site).contains(
                "\ncounters_in_octets{site=\"lab\",source=\"10.0.0.1:57400\",subscription_name=\"s\",target=\"10.0.0.1\"} 7\n"
            ),
            "{}",
            text(&with_site)
        );
        assert!(!text(&with_site).contains("discards"));
        assert!(text(&plain).contains(
            "\ncounters_in_discards{source=\"10.0.0.1:57400\",subscription_name=\"s\"} 1\n"
        ));

        // The input's processors come first, for every output.
        let shortened = output("{}", &[]);
        input_with(
            SharedChain::new(procs.chain(&["short"]).unwrap()),
            vec![shortened.clone()],
        )
        .process(&message);
        assert!(
            text(&shortened)
                .contains("\nin_octets{source=\"10.0.0.1:57400\",subscription_name=\"s\"} 7\n"),
            "{}",
            text(&shortened)
        );
    }
}

#[cfg(test)]
mod plain_path_tests {
    use super::*;
    use gnomon_bus::MessageHeaders;
    use gnomon_gnmi::proto::gnmi::{Notification, Path, PathElem, SubscribeResponse, Update};
    use prost::Message as _;

    fn input(format: NatsInputFormat, output: Arc<PrometheusOutput>) -> NatsInput {
        NatsInput {
            name: "test".into(),
            config: NatsInputConfig {
                format,
                ..Default::default()
            },
            queue: "test".into(),
            client_name: "test".into(),
            outputs: vec![output],
            fencing: Arc::new(Fencing::default()),
            stats: Arc::new(ExporterStats::default()),
            chain: None,
            gnmi_cache: None,
            shard: None,
        }
    }

    fn message(payload: Vec<u8>) -> BusMessage {
        BusMessage {
            subject: "telemetry.r1.sub".into(),
            headers: MessageHeaders {
                target: Some("r1".into()),
                subscription: Some("sub".into()),
                fencing_token: Some(1),
                traceparent: None,
            },
            payload: payload.into(),
        }
    }

    fn elem(name: &str, key: &[(&str, &str)]) -> PathElem {
        PathElem {
            name: name.into(),
            key: key
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn update(elems: Vec<PathElem>, value: typed_value::Value) -> Update {
        Update {
            path: Some(Path {
                elem: elems,
                ..Default::default()
            }),
            val: Some(TypedValue { value: Some(value) }),
            ..Default::default()
        }
    }

    /// Runs of values under one interface, values of another in between, a string value
    /// among numbers and a keyless update: the plain path stores what the events do.
    #[test]
    fn plain_runs_store_what_one_event_per_value_stores() {
        use typed_value::Value as V;
        let counters = |name: &str| {
            vec![
                elem("interfaces", &[]),
                elem("interface", &[("name", name)]),
                elem("state", &[]),
                elem("counters", &[]),
            ]
        };
        let with = |mut elems: Vec<PathElem>, leaf: &str| {
            elems.push(elem(leaf, &[]));
            elems
        };
        let notification = Notification {
            timestamp: 1_700_000_000_000_000_000,
            prefix: Some(Path {
                elem: vec![elem("system", &[("id", "a")])],
                ..Default::default()
            }),
            update: vec![
                update(with(counters("e1"), "in-octets"), V::UintVal(10)),
                update(
                    with(counters("e1"), "description"),
                    V::StringVal("up".into()),
                ),
                update(with(counters("e1"), "out-octets"), V::IntVal(-3)),
                update(with(counters("e2"), "in-octets"), V::UintVal(20)),
                update(vec![elem("uptime", &[])], V::IntVal(7)),
                update(with(counters("e1"), "errors"), V::BoolVal(true)),
            ],
            ..Default::default()
        };
        let response = SubscribeResponse {
            response: Some(subscribe_response::Response::Update(notification.clone())),
            ..Default::default()
        };
        let meta = EventMeta::new("r1".to_string(), "sub".to_string());
        let events = gnomon_gnmi::event::notification_to_events(&notification, &meta);
        let json = gnomon_gnmi::event::events_to_json(&events);
        for strings_as_labels in [false, true] {
            let config = serde_json::json!({"strings-as-labels": strings_as_labels});
            let output = |name: &str| {
                let config = serde_json::from_value(config.clone()).expect("output config");
                Arc::new(PrometheusOutput::new(name, config))
            };
            let (plain, evented) = (output("plain"), output("events"));
            input(NatsInputFormat::Proto, plain.clone())
                .process(&message(response.encode_to_vec()));
            input(NatsInputFormat::Event, evented.clone()).process(&message(json.clone()));
            let rendered = String::from_utf8(plain.render()).expect("utf-8");
            assert_eq!(
                rendered,
                String::from_utf8(evented.render()).expect("utf-8")
            );
            assert!(
                rendered.contains("interface_name=\"e2\""),
                "strings-as-labels {strings_as_labels}: {rendered}"
            );
        }
    }
}
