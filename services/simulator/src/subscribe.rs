//! Subscribe: turns a SubscriptionList into a plan (which leaves, when to send them) and
//! runs it as one task per stream — ONCE, POLL, STREAM (SAMPLE / ON_CHANGE /
//! TARGET_DEFINED, heartbeats, suppress_redundant, updates_only) and the load-mode firehose.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gnomon_gnmi::proto::gnmi::{
    subscribe_request, subscribe_response, subscription_list, Notification, Path, SubscribeRequest,
    SubscribeResponse, SubscriptionList, SubscriptionMode, Update,
};
use tokio::sync::mpsc;
use tokio::time::sleep_until;
use tonic::{Status, Streaming};
use tracing::{debug, info_span, Instrument};

use crate::context::DeviceContext;
use crate::encoding::WireEncoding;
use crate::model::{Device, LeafValue, Moment};
use crate::selection::{select, Framing};
use crate::stats::StreamGuard;
use crate::wire::{NotificationWriter, OutgoingResponse};

/// Sample interval used when a request leaves it at 0 (as gnmi_cli does).
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Shortest sample or heartbeat interval accepted outside load mode.
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Responses buffered per stream before the producer waits for the client.
const STREAM_BUFFER: usize = 32;

/// What the client wants: one subscription of the list, resolved.
#[derive(Debug)]
struct SubscriptionPlan {
    leaves: Vec<usize>,
    /// Update paths for `leaves`, relative to the echoed prefix (built once).
    paths: Vec<Path>,
    trigger: Trigger,
    heartbeat: Option<Duration>,
    suppress_redundant: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    Sample(Duration),
    OnChange,
}

/// A validated SubscriptionList.
#[derive(Debug)]
pub struct StreamPlan {
    mode: subscription_list::Mode,
    encoding: WireEncoding,
    updates_only: bool,
    framing: Framing,
    subscriptions: Vec<SubscriptionPlan>,
}

fn interval(nanos: u64, what: &str) -> Result<Option<Duration>, Status> {
    if nanos == 0 {
        return Ok(None);
    }
    let interval = Duration::from_nanos(nanos);
    if interval < MIN_INTERVAL {
        return Err(Status::invalid_argument(format!(
            "{what} {nanos}ns is below the minimum of {}ms",
            MIN_INTERVAL.as_millis()
        )));
    }
    Ok(Some(interval))
}

impl StreamPlan {
    /// Validates the list against the device tree. Errors carry the gRPC code to answer with.
    pub fn new(device: &Device, list: &SubscriptionList) -> Result<StreamPlan, Status> {
        let mode = subscription_list::Mode::try_from(list.mode).map_err(|_| {
            Status::invalid_argument(format!("unknown subscription list mode {}", list.mode))
        })?;
        let encoding = WireEncoding::from_request(list.encoding)?;
        if list.subscription.is_empty() {
            return Err(Status::invalid_argument(
                "the subscription list has no subscriptions",
            ));
        }
        let framing = Framing::for_prefix(list.prefix.as_ref());
        let table = &device.table;
        let mut subscriptions = Vec::new();
        for subscription in &list.subscription {
            let path = subscription.path.clone().unwrap_or_default();
            let selection = select(table, list.prefix.as_ref(), &path)?;
            let sub_mode = SubscriptionMode::try_from(subscription.mode).map_err(|_| {
                Status::invalid_argument(format!("unknown subscription mode {}", subscription.mode))
            })?;
            let sample = interval(subscription.sample_interval, "sample_interval")?
                .unwrap_or(DEFAULT_SAMPLE_INTERVAL);
            let heartbeat = interval(subscription.heartbeat_interval, "heartbeat_interval")?;
            // A plain SAMPLE sends everything anyway; heartbeats matter only when something
            // may be held back (ON_CHANGE, suppress_redundant).
            let heartbeat_for = |trigger: Trigger| match trigger {
                Trigger::Sample(_) if !subscription.suppress_redundant => None,
                _ => heartbeat,
            };
            // TARGET_DEFINED: state leaves on change, counters and gauges sampled.
            let groups: Vec<(Trigger, Vec<usize>)> = match sub_mode {
                SubscriptionMode::Sample => vec![(Trigger::Sample(sample), selection.leaves)],
                SubscriptionMode::OnChange => vec![(Trigger::OnChange, selection.leaves)],
                SubscriptionMode::TargetDefined => {
                    let (state, sampled): (Vec<usize>, Vec<usize>) = selection
                        .leaves
                        .into_iter()
                        .partition(|&leaf| table.leaves[leaf].source.is_state());
                    vec![
                        (Trigger::OnChange, state),
                        (Trigger::Sample(sample), sampled),
                    ]
                }
            };
            for (trigger, leaves) in groups {
                if leaves.is_empty() {
                    continue;
                }
                let paths = leaves
                    .iter()
                    .map(|&leaf| framing.relative(&table.leaves[leaf].path))
                    .collect();
                subscriptions.push(SubscriptionPlan {
                    leaves,
                    paths,
                    trigger,
                    heartbeat: heartbeat_for(trigger),
                    suppress_redundant: subscription.suppress_redundant,
                });
            }
        }
        Ok(StreamPlan {
            mode,
            encoding,
            updates_only: list.updates_only,
            framing,
            subscriptions,
        })
    }
}

type Outbound = mpsc::Sender<Result<OutgoingResponse, Status>>;

/// Nanoseconds since the Unix epoch; never 0 (pygnmi cannot parse a 0 timestamp).
pub(crate) fn timestamp_now() -> i64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(1);
    i64::try_from(nanos).unwrap_or(i64::MAX).max(1)
}

fn sync_response() -> SubscribeResponse {
    SubscribeResponse {
        response: Some(subscribe_response::Response::SyncResponse(true)),
        extension: Vec::new(),
    }
}

/// One running Subscribe stream.
pub struct SubscribeStream {
    context: Arc<DeviceContext>,
    plan: StreamPlan,
    inbound: Streaming<SubscribeRequest>,
    outbound: Outbound,
    /// Keeps the stream counted in `/stats` for as long as this task runs.
    _guard: StreamGuard,
}

impl SubscribeStream {
    /// Starts the stream's task; returns the receiving end tonic sends to the client.
    pub fn spawn(
        context: Arc<DeviceContext>,
        plan: StreamPlan,
        inbound: Streaming<SubscribeRequest>,
        guard: StreamGuard,
        peer: String,
    ) -> mpsc::Receiver<Result<OutgoingResponse, Status>> {
        let (outbound, receiver) = mpsc::channel(STREAM_BUFFER);
        let span = info_span!(
            "subscribe",
            device = %context.device.hostname,
            peer = %peer,
            mode = plan.mode.as_str_name(),
            load = context.load.is_some()
        );
        let stream = SubscribeStream {
            context,
            plan,
            inbound,
            outbound,
            _guard: guard,
        };
        tokio::spawn(
            async move {
                debug!("subscription started");
                stream.run().await;
                debug!("subscription ended");
            }
            .instrument(span),
        );
        receiver
    }

    async fn run(mut self) {
        match self.plan.mode {
            subscription_list::Mode::Once => {
                if !self.plan.updates_only && !self.send_snapshot().await {
                    return;
                }
                self.send(Ok(sync_response())).await;
            }
            subscription_list::Mode::Poll => self.run_poll().await,
            subscription_list::Mode::Stream => self.run_stream().await,
        }
    }

    /// Sends one response; false when the client is gone or the simulator stops.
    async fn send(&self, item: Result<SubscribeResponse, Status>) -> bool {
        let item = item.map(OutgoingResponse::Message);
        tokio::select! {
            sent = self.outbound.send(item) => sent.is_ok(),
            _ = self.context.shutdown.cancelled() => false,
        }
    }

    /// Sends a response already encoded (see [`NotificationWriter`]).
    async fn send_encoded(&self, response: bytes::Bytes) -> bool {
        tokio::select! {
            sent = self.outbound.send(Ok(OutgoingResponse::Encoded(response))) => sent.is_ok(),
            _ = self.context.shutdown.cancelled() => false,
        }
    }

    fn notification(&self, updates: Vec<Update>) -> SubscribeResponse {
        SubscribeResponse {
            response: Some(subscribe_response::Response::Update(Notification {
                timestamp: timestamp_now(),
                prefix: self.plan.framing.prefix.clone(),
                update: updates,
                ..Default::default()
            })),
            extension: Vec::new(),
        }
    }

    fn update(&self, path: &Path, value: &LeafValue) -> Update {
        Update {
            path: Some(path.clone()),
            val: Some(self.plan.encoding.leaf(value)),
            ..Default::default()
        }
    }

    /// Every subscribed leaf once, one notification per subscription.
    async fn send_snapshot(&self) -> bool {
        let moment = self.context.device.now();
        for subscription in &self.plan.subscriptions {
            let updates = subscription
                .leaves
                .iter()
                .zip(&subscription.paths)
                .map(|(&leaf, path)| self.update(path, &self.context.device.value(leaf, moment)))
                .collect();
            if !self.send(Ok(self.notification(updates))).await {
                return false;
            }
        }
        true
    }

    /// POLL: snapshot + sync now, then again for every Poll message.
    async fn run_poll(&mut self) {
        if !self.plan.updates_only && !self.send_snapshot().await {
            return;
        }
        if !self.send(Ok(sync_response())).await {
            return;
        }
        loop {
            let request = tokio::select! {
                request = self.inbound.message() => request,
                _ = self.outbound.closed() => return,
                _ = self.context.shutdown.cancelled() => return,
            };
            match request {
                Ok(Some(SubscribeRequest {
                    request: Some(subscribe_request::Request::Poll(_)),
                    ..
                })) => {
                    if !self.send_snapshot().await || !self.send(Ok(sync_response())).await {
                        return;
                    }
                }
                Ok(Some(_)) => {
                    self.send(Err(Status::invalid_argument(
                        "a POLL subscription only accepts Poll messages after its SubscriptionList",
                    )))
                    .await;
                    return;
                }
                // The client closed its side or went away: the poll session is over.
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// STREAM: initial snapshot and sync, then samples / changes / heartbeats until the
    /// client leaves; in load mode, the firehose.
    async fn run_stream(&mut self) {
        let started = Instant::now();
        let moment = self.context.device.now();
        // What each subscription last sent, per leaf (for ON_CHANGE and suppress_redundant).
        let mut last_sent: Vec<Vec<Option<LeafValue>>> = Vec::new();
        for subscription in &self.plan.subscriptions {
            let values: Vec<LeafValue> = subscription
                .leaves
                .iter()
                .map(|&leaf| self.context.device.value(leaf, moment))
                .collect();
            if !self.plan.updates_only {
                let updates = subscription
                    .paths
                    .iter()
                    .zip(&values)
                    .map(|(path, value)| self.update(path, value))
                    .collect();
                if !self.send(Ok(self.notification(updates))).await {
                    return;
                }
            }
            last_sent.push(values.into_iter().map(Some).collect());
        }
        if !self.send(Ok(sync_response())).await {
            return;
        }
        if let Some(load) = self.context.load {
            self.run_firehose(load.updates_per_notification, moment)
                .await;
            return;
        }

        let mut next_sample: Vec<Option<Instant>> = self
            .plan
            .subscriptions
            .iter()
            .map(|s| match s.trigger {
                Trigger::Sample(every) => Some(started + every),
                Trigger::OnChange => None,
            })
            .collect();
        let mut next_heartbeat: Vec<Option<Instant>> = self
            .plan
            .subscriptions
            .iter()
            .map(|s| s.heartbeat.map(|every| started + every))
            .collect();
        let has_on_change = self
            .plan
            .subscriptions
            .iter()
            .any(|s| s.trigger == Trigger::OnChange);
        let mut inbound_open = true;
        // Samples are written straight to protobuf from each leaf's cached path bytes: a
        // thousand devices sampling 500 counters each cost the simulator far less than
        // cloning and encoding message trees, and the machine it shares with gnomon in
        // benchmarks stays free for gnomon.
        let path_fields: Vec<Vec<Vec<u8>>> = self
            .plan
            .subscriptions
            .iter()
            .map(|s| s.paths.iter().map(NotificationWriter::path_field).collect())
            .collect();
        let mut writer = NotificationWriter::new(self.plan.framing.prefix.as_ref());

        loop {
            let now = Instant::now();
            let moment = self.context.device.clock.moment_at(now);
            for index in 0..self.plan.subscriptions.len() {
                let subscription = &self.plan.subscriptions[index];
                let heartbeat_due = next_heartbeat[index].is_some_and(|due| now >= due);
                let due = match next_sample[index] {
                    Some(sample_at) => now >= sample_at,
                    None => true,
                };
                if !due && !heartbeat_due {
                    continue;
                }
                let send_all = heartbeat_due
                    || matches!(subscription.trigger, Trigger::Sample(_))
                        && !subscription.suppress_redundant;
                writer.begin(timestamp_now());
                let mut updates = 0;
                for (position, &leaf) in subscription.leaves.iter().enumerate() {
                    let value = self.context.device.value(leaf, moment);
                    let changed = last_sent[index][position].as_ref() != Some(&value);
                    if send_all || changed {
                        let path_field = &path_fields[index][position];
                        writer.push(path_field, &self.plan.encoding.leaf(&value));
                        updates += 1;
                        last_sent[index][position] = Some(value);
                    }
                }
                if let (Trigger::Sample(every), Some(sample_at)) =
                    (subscription.trigger, next_sample[index])
                {
                    if due {
                        // Keep the cadence; if we fell a whole interval behind, restart it.
                        let next = sample_at + every;
                        next_sample[index] = Some(if next <= now { now + every } else { next });
                    }
                }
                if heartbeat_due {
                    if let Some(every) = subscription.heartbeat {
                        next_heartbeat[index] = Some(now + every);
                    }
                }
                if updates > 0 && !self.send_encoded(writer.finish()).await {
                    return;
                }
            }

            let now = Instant::now();
            let mut wake = now + Duration::from_secs(3600);
            for due in next_sample.iter().chain(&next_heartbeat).flatten() {
                wake = wake.min(*due);
            }
            if has_on_change {
                wake = wake.min(self.context.device.clock.next_change_after(now));
            }
            tokio::select! {
                _ = sleep_until(wake.into()) => {}
                _ = self.outbound.closed() => return,
                _ = self.context.shutdown.cancelled() => return,
                request = self.inbound.message(), if inbound_open => match request {
                    Ok(Some(_)) => {
                        self.send(Err(Status::invalid_argument(
                            "a STREAM subscription takes no further requests after its SubscriptionList",
                        )))
                        .await;
                        return;
                    }
                    // Half-close: the client keeps receiving.
                    Ok(None) => inbound_open = false,
                    Err(_) => return,
                },
            }
        }
    }

    /// Load mode: batches of `per_notification` fresh updates, cycling over every
    /// subscribed leaf, written straight to protobuf from cached path bytes and sent as
    /// fast as the client takes them.
    async fn run_firehose(&mut self, per_notification: usize, start: Moment) {
        let entries: Vec<(usize, Vec<u8>)> = self
            .plan
            .subscriptions
            .iter()
            .flat_map(|s| s.leaves.iter().copied().zip(s.paths.iter()))
            .map(|(leaf, path)| (leaf, NotificationWriter::path_field(path)))
            .collect();
        if entries.is_empty() {
            return;
        }
        let batch = per_notification.clamp(1, entries.len());
        let device = &self.context.device;
        let encoding = self.plan.encoding;
        let mut writer = NotificationWriter::new(self.plan.framing.prefix.as_ref());
        let mut moment = start;
        let mut cursor = 0;
        let mut inbound_open = true;
        loop {
            writer.begin(timestamp_now());
            for _ in 0..batch {
                let (leaf, path_field) = &entries[cursor];
                writer.push(path_field, &encoding.leaf(&device.value(*leaf, moment)));
                cursor += 1;
                if cursor == entries.len() {
                    cursor = 0;
                    moment.tick += 1;
                }
            }
            let response = OutgoingResponse::Encoded(writer.finish());
            tokio::select! {
                sent = self.outbound.send(Ok(response)) => if sent.is_err() { return },
                _ = self.context.shutdown.cancelled() => return,
                request = self.inbound.message(), if inbound_open => match request {
                    // The batch being sent is dropped; the stream ends.
                    Ok(Some(_)) | Err(_) => return,
                    Ok(None) => inbound_open = false,
                },
            }
        }
    }
}
