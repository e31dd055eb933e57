//! One target's life: dial, open every subscription, push responses to the outputs,
//! and on failure wait (exponential backoff with jitter) and start over. Stops when
//! cancelled or when the target lock is lost.

use crate::client::{dial, TargetClient};
use crate::codec::ResponseKind;
use crate::connection::OpenSockets;
use crate::outputs::{Collected, OutputSender, StreamInfo};
use crate::request::{poll_request, subscribe_request};
use crate::state::{SubscriptionCounters, TargetState, TargetStatus};
use crate::target_up::TargetUpReporter;
use gnomon_common::retry::Backoff;
use gnomon_config::{SubscriptionConfig, SubscriptionMode, TargetConfig};
use gnomon_gnmi::event::EventMeta;
use gnomon_gnmi::proto::gnmi::SubscribeRequest;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long a stopping target waits for its connection's socket to close, and how long a
/// run replacing another waits for the other's sockets before dialing.
pub const SOCKET_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The first reconnect delay (or `retry-timer`, when that is smaller); later ones double up
/// to `retry-timer`.
const FIRST_RECONNECT_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// Ownership of a target granted by a coordinator: the lock's fencing token, and a
/// token cancelled when the lock is lost.
#[derive(Clone, Debug)]
pub struct Ownership {
    pub fencing_token: u64,
    pub lost: CancellationToken,
}

/// One subscription of a target with the outputs it feeds.
#[derive(Clone)]
pub struct SubscriptionPlan {
    pub config: SubscriptionConfig,
    pub outputs: Vec<OutputSender>,
}

impl SubscriptionPlan {
    /// Whether a stream opened for `self` serves `other` unchanged (same request, same
    /// outputs), so a runtime change can leave it running.
    pub fn same_stream(&self, other: &SubscriptionPlan) -> bool {
        self.config == other.config
            && self.outputs.len() == other.outputs.len()
            && self
                .outputs
                .iter()
                .zip(&other.outputs)
                .all(|(a, b)| a.name() == b.name())
    }
}

/// What a target runs with right now: its config and its subscriptions. It can change while
/// the target runs (runtime configuration, SIGHUP): streams that stay the same keep running,
/// changed or removed ones are closed and new ones opened on the same connection; a change
/// of the target's own connection settings reconnects once.
pub struct RunSpec {
    pub config: TargetConfig,
    pub plans: Vec<SubscriptionPlan>,
}

impl RunSpec {
    /// Whether `other` can keep this spec's connection (only subscriptions or outputs differ).
    fn same_connection(&self, other: &RunSpec) -> bool {
        let mut a = self.config.clone();
        let mut b = other.config.clone();
        for config in [&mut a, &mut b] {
            config.subscriptions.clear();
            config.outputs.clear();
        }
        a == b
    }
}

/// Everything a target run needs.
pub struct TargetRun {
    pub name: String,
    pub spec: watch::Receiver<Arc<RunSpec>>,
    pub status: Arc<TargetStatus>,
    pub ownership: Option<Ownership>,
    /// Slots for per-output caches in each stream.
    pub output_slots: usize,
    /// Publishes `gnomon_target_up` while the target runs (when an output carries it).
    pub up_reporter: Option<TargetUpReporter>,
    /// The sockets this run opens, counted so that whoever stops it can wait for them.
    pub sockets: Arc<OpenSockets>,
    /// The sockets of the run this one replaces: waited for (bounded) before the first
    /// dial, so the device never sees the new stream while the old one is open.
    pub replaces: Option<Arc<OpenSockets>>,
}

/// How one subscription stream (or a round of them) ended without error.
enum StreamEnd {
    /// ONCE finished.
    Completed,
    /// Stopped from our side.
    Cancelled,
    /// The target's connection settings changed: dial again with the new ones.
    Reconfigured,
}

/// `UNAUTHENTICATED: wrong username or password` from a gRPC status.
pub fn describe_status(status: &tonic::Status) -> String {
    let code = format!("{:?}", status.code());
    let mut name = String::new();
    for (i, c) in code.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    if status.message().is_empty() {
        name
    } else {
        format!("{name}: {}", status.message())
    }
}

impl TargetRun {
    /// Runs until `cancel` fires or the ownership is lost, in a `target` span opened at the
    /// call (not at the first poll), so it is a child of the caller's span (a target claim)
    /// even when spawned.
    pub fn run(self, cancel: CancellationToken) -> impl std::future::Future<Output = ()> {
        let span = tracing::info_span!("target", target = %self.name);
        self.run_in_span(cancel).instrument(span)
    }

    async fn run_in_span(self, cancel: CancellationToken) {
        let stop = match &self.ownership {
            Some(ownership) => {
                let combined = cancel.child_token();
                let lost = ownership.lost.clone();
                let trigger = combined.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = lost.cancelled() => trigger.cancel(),
                        _ = trigger.cancelled() => {}
                    }
                });
                combined
            }
            None => cancel.clone(),
        };
        match &self.up_reporter {
            Some(reporter) => {
                let up = self.status.watch_up();
                futures::future::join(self.collect(&stop), reporter.run(up, stop.clone())).await;
            }
            None => self.collect(&stop).await,
        }
        let lost = self
            .ownership
            .as_ref()
            .is_some_and(|o| o.lost.is_cancelled())
            && !cancel.is_cancelled();
        self.status.set(
            TargetState::Stopped,
            lost.then(|| "target lock lost".to_string()),
        );
        tracing::info!(lock_lost = lost, "target stopped");
    }

    /// Dials and subscribes, retrying with backoff, until `stop` fires.
    async fn collect(&self, stop: &CancellationToken) {
        if let Some(previous) = &self.replaces {
            if !previous.wait_closed(SOCKET_CLOSE_GRACE).await {
                tracing::warn!("the replaced run's connection is still open; dialing anyway");
            }
        }
        let mut spec_rx = self.spec.clone();
        let mut backoff = Backoff::new(FIRST_RECONNECT_DELAY, spec_rx.borrow().config.retry_timer);
        loop {
            let spec = spec_rx.borrow_and_update().clone();
            self.status.set(TargetState::Connecting, None);
            // Boxed: dialing (TCP, TLS, HTTP/2 handshakes) is the largest state of this
            // loop, and only transient; inline, every target's task would keep its ~7 KB.
            let client = tokio::select! {
                _ = stop.cancelled() => break,
                result = Box::pin(dial(&spec.config, &self.sockets)) => result,
            };
            let error = match client {
                Err(error) => error.to_string(),
                Ok(client) => match self
                    .run_and_close(client, &spec, &mut spec_rx, stop, &mut backoff)
                    .await
                {
                    Ok(StreamEnd::Cancelled) => break,
                    Ok(StreamEnd::Reconfigured) => {
                        tracing::info!("target settings changed: reconnecting");
                        backoff = Backoff::new(
                            FIRST_RECONNECT_DELAY,
                            spec_rx.borrow().config.retry_timer,
                        );
                        continue;
                    }
                    Ok(StreamEnd::Completed) => {
                        self.status.set(TargetState::Completed, None);
                        // Done until stopped, or until its subscriptions change.
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            changed = spec_rx.changed() => {
                                if changed.is_err() {
                                    stop.cancelled().await;
                                    break;
                                }
                                continue;
                            }
                        }
                    }
                    Err(error) => error,
                },
            };
            self.status.errors.fetch_add(1, Ordering::Relaxed);
            self.status.set(TargetState::Failed, Some(error.clone()));
            let delay = backoff.next_delay();
            tracing::warn!(%error, retry_in = ?delay, "target failed");
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Runs the subscriptions over `client`, then closes its connection and waits (briefly)
    /// for the socket to close, so a stopped target's device has seen the end of its streams
    /// before the caller gives the target's lock back.
    async fn run_and_close(
        &self,
        client: TargetClient,
        spec: &Arc<RunSpec>,
        spec_rx: &mut watch::Receiver<Arc<RunSpec>>,
        stop: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<StreamEnd, String> {
        let outcome = self
            .run_subscriptions(&client, spec, spec_rx, stop, backoff)
            .await;
        if !client.close(SOCKET_CLOSE_GRACE).await {
            tracing::debug!("the target's connection did not close within the grace period");
        }
        outcome
    }

    /// Opens `plan`'s stream over `client` into `streams`, tagged with `generation` so its
    /// end can be told from the end of a stream that replaced it.
    fn open_stream(
        &self,
        client: &TargetClient,
        config: &TargetConfig,
        plan: &SubscriptionPlan,
        cancel: CancellationToken,
        generation: u64,
        streams: &mut JoinSet<StreamEnded>,
    ) -> Result<(), String> {
        let fencing_token = self.ownership.as_ref().map(|o| o.fencing_token);
        let request = subscribe_request(&plan.config, config).map_err(|e| e.to_string())?;
        let span = tracing::info_span!("subscribe", subscription = %plan.config.name, mode = ?plan.config.mode);
        let meta = EventMeta {
            source: config.name.clone(),
            subscription_name: plan.config.name.clone(),
            subscription_target: plan.config.target.clone(),
            extra_tags: config.event_tags.clone(),
        };
        let stream = SubscriptionStream {
            client: client.clone(),
            request,
            config: plan.config.clone(),
            outputs: plan.outputs.clone(),
            info: Arc::new(
                StreamInfo::new(meta, fencing_token, self.output_slots)
                    .with_traceparent(gnomon_telemetry::traceparent_of(&span)),
            ),
            counters: self.status.subscription(&plan.config.name),
            status: self.status.clone(),
            cancel,
        };
        let name = plan.config.name.clone();
        streams.spawn(
            async move {
                let outcome = stream.run().await;
                match &outcome {
                    Ok((StreamEnd::Completed, _)) => {
                        tracing::info!(reason = "completed", "subscription ended")
                    }
                    Ok((StreamEnd::Cancelled | StreamEnd::Reconfigured, _)) => {
                        tracing::info!(reason = "stopped", "subscription ended")
                    }
                    Err((error, _)) => tracing::info!(reason = %error, "subscription ended"),
                }
                StreamEnded {
                    name,
                    generation,
                    outcome,
                }
            }
            .instrument(span),
        );
        Ok(())
    }

    /// Opens every subscription and follows changes to them; returns when all ended (ONCE),
    /// when stopped, when the target's settings changed, or at the first failure (the
    /// others are then cancelled too).
    async fn run_subscriptions(
        &self,
        client: &TargetClient,
        spec: &Arc<RunSpec>,
        spec_rx: &mut watch::Receiver<Arc<RunSpec>>,
        stop: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<StreamEnd, String> {
        let round = stop.child_token();
        let mut streams = OpenStreams {
            set: JoinSet::new(),
            open: HashMap::new(),
            generation: 0,
        };
        let mut current = spec.clone();
        for plan in &current.plans {
            streams.open(self, client, &current.config, plan, &round)?;
        }
        let mut healthy = false;
        // The first failure wins: the siblings it cancels end as "cancelled", which must not
        // hide it (a target whose first stream failed would otherwise stop silently while
        // still shown as streaming).
        let mut first_error: Option<String> = None;
        let mut reconfigured = false;
        let mut following = true;
        loop {
            tokio::select! {
                joined = streams.set.join_next() => {
                    let Some(joined) = joined else { break };
                    let outcome = match joined {
                        // A stream closed because its subscription changed or went away
                        // ended as expected.
                        Ok(ended) if !streams.is_current(&ended) => continue,
                        Ok(ended) => {
                            streams.open.remove(&ended.name);
                            ended.outcome
                        }
                        Err(e) => Err((format!("subscription task failed: {e}"), false)),
                    };
                    match outcome {
                        Ok((_, got_data)) => healthy |= got_data,
                        Err((error, got_data)) => {
                            healthy |= got_data;
                            first_error.get_or_insert(error);
                            round.cancel();
                        }
                    }
                }
                changed = spec_rx.changed(), if following && !round.is_cancelled() => {
                    if changed.is_err() {
                        following = false;
                        continue;
                    }
                    let next = spec_rx.borrow_and_update().clone();
                    if !current.same_connection(&next) {
                        reconfigured = true;
                        round.cancel();
                        continue;
                    }
                    streams.follow(self, client, &next, &round)?;
                    current = next;
                }
            }
        }
        if healthy {
            backoff.reset();
        }
        if stop.is_cancelled() {
            return Ok(StreamEnd::Cancelled);
        }
        match first_error {
            Some(error) => Err(error),
            None if reconfigured => Ok(StreamEnd::Reconfigured),
            // Every stream ended on its own (ONCE): the target is done.
            None => Ok(StreamEnd::Completed),
        }
    }
}

/// A stream's end, as its task returns it.
struct StreamEnded {
    name: String,
    generation: u64,
    outcome: Result<(StreamEnd, bool), (String, bool)>,
}

/// The streams of one connection, by subscription name.
struct OpenStreams {
    set: JoinSet<StreamEnded>,
    /// Each running stream's plan, its own cancel token and its generation.
    open: HashMap<String, (SubscriptionPlan, CancellationToken, u64)>,
    generation: u64,
}

impl OpenStreams {
    fn open(
        &mut self,
        run: &TargetRun,
        client: &TargetClient,
        config: &TargetConfig,
        plan: &SubscriptionPlan,
        round: &CancellationToken,
    ) -> Result<(), String> {
        self.generation += 1;
        let cancel = round.child_token();
        run.open_stream(
            client,
            config,
            plan,
            cancel.clone(),
            self.generation,
            &mut self.set,
        )?;
        self.open.insert(
            plan.config.name.clone(),
            (plan.clone(), cancel, self.generation),
        );
        Ok(())
    }

    fn is_current(&self, ended: &StreamEnded) -> bool {
        self.open
            .get(&ended.name)
            .is_some_and(|(_, _, generation)| *generation == ended.generation)
    }

    /// Applies a change of subscriptions: closes the streams whose subscription went away
    /// or changed, opens the new and changed ones; the others keep running untouched.
    fn follow(
        &mut self,
        run: &TargetRun,
        client: &TargetClient,
        next: &RunSpec,
        round: &CancellationToken,
    ) -> Result<(), String> {
        let wanted: HashMap<&str, &SubscriptionPlan> = next
            .plans
            .iter()
            .map(|plan| (plan.config.name.as_str(), plan))
            .collect();
        let closing: Vec<String> = self
            .open
            .iter()
            .filter(|(name, (plan, _, _))| {
                wanted
                    .get(name.as_str())
                    .is_none_or(|want| !plan.same_stream(want))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in closing {
            if let Some((_, cancel, _)) = self.open.remove(&name) {
                tracing::info!(subscription = %name, "subscription changed or removed: closing its stream");
                cancel.cancel();
            }
        }
        for plan in &next.plans {
            if !self.open.contains_key(&plan.config.name) {
                tracing::info!(subscription = %plan.config.name, "subscription added or changed: opening its stream");
                self.open(run, client, &next.config, plan, round)?;
            }
        }
        Ok(())
    }
}

struct SubscriptionStream {
    client: TargetClient,
    request: SubscribeRequest,
    config: SubscriptionConfig,
    outputs: Vec<OutputSender>,
    info: Arc<StreamInfo>,
    status: Arc<TargetStatus>,
    counters: Arc<SubscriptionCounters>,
    cancel: CancellationToken,
}

impl SubscriptionStream {
    /// Returns how it ended and whether any response arrived (for the backoff reset).
    async fn run(self) -> Result<(StreamEnd, bool), (String, bool)> {
        let outcome = self.stream().await;
        if outcome.is_err() {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    async fn stream(&self) -> Result<(StreamEnd, bool), (String, bool)> {
        // The request side stays open for the stream's life (some targets end the
        // stream when the client half-closes); POLL sends its polls through it. Boxed: the
        // channel allocates its first block of 32 slots up front, 6 KB of requests inline
        // for every stream of every target against 256 B of pointers.
        let (requests, request_stream) = mpsc::channel::<Box<SubscribeRequest>>(4);
        if requests.send(Box::new(self.request.clone())).await.is_err() {
            return Err(("request channel closed".into(), false));
        }
        let opened = tokio::select! {
            _ = self.cancel.cancelled() => return Ok((StreamEnd::Cancelled, false)),
            opened = Box::pin(self.client.subscribe(
                tokio_stream::wrappers::ReceiverStream::new(request_stream).map(|request| *request),
            )) => opened,
        };
        let mut responses = opened.map_err(|status| {
            (
                format!(
                    "subscription {:?}: {}",
                    self.config.name,
                    describe_status(&status)
                ),
                false,
            )
        })?;
        self.status.set(TargetState::Streaming, None);
        tracing::info!(target = %self.info.target, subscription = %self.config.name, "subscribed");
        let polling = self.config.mode == SubscriptionMode::Poll;
        let once = self.config.mode == SubscriptionMode::Once;
        let mut poll_timer = tokio::time::interval(self.config.effective_poll_interval());
        poll_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll_timer.reset();
        let mut got_data = false;
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Ok((StreamEnd::Cancelled, got_data)),
                _ = poll_timer.tick(), if polling => {
                    // splice-gnmi answers polls without a sync_response: never wait for one.
                    if requests.send(Box::new(poll_request())).await.is_err() {
                        return Err(("poll request channel closed".into(), got_data));
                    }
                }
                message = responses.message() => match message {
                    Ok(Some(response)) => {
                        got_data = true;
                        self.counters.received.fetch_add(1, Ordering::Relaxed);
                        self.status.responses.fetch_add(1, Ordering::Relaxed);
                        let kind = response.kind;
                        match kind {
                            ResponseKind::Notification { updates, .. } => {
                                self.status.updates.fetch_add(u64::from(updates), Ordering::Relaxed);
                            }
                            ResponseKind::Error => {
                                self.status.errors.fetch_add(1, Ordering::Relaxed);
                            }
                            ResponseKind::Sync | ResponseKind::Other => {}
                        }
                        let item = Arc::new(Collected { stream: self.info.clone(), response });
                        for output in &self.outputs {
                            output.write(&item).await;
                        }
                        if once && kind == ResponseKind::Sync {
                            return Ok((StreamEnd::Completed, got_data));
                        }
                    }
                    Ok(None) if once => return Ok((StreamEnd::Completed, got_data)),
                    Ok(None) => {
                        return Err((format!("subscription {:?}: stream closed by the target", self.config.name), got_data))
                    }
                    Err(status) => {
                        return Err((format!("subscription {:?}: {}", self.config.name, describe_status(&status)), got_data))
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_read_like_grpc_names() {
        let status = tonic::Status::unauthenticated("wrong username or password");
        assert_eq!(
            describe_status(&status),
            "UNAUTHENTICATED: wrong username or password"
        );
        assert_eq!(
            describe_status(&tonic::Status::invalid_argument("")),
            "INVALID_ARGUMENT"
        );
    }
}
