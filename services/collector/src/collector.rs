//! The collector: the configuration it knows, the outputs, and the targets it runs.
//! A coordinator drives it through [`CollectorHandle::start_target`] /
//! [`CollectorHandle::stop_target`]; standalone, every configured target is started.

use crate::connection::OpenSockets;
use crate::outputs::{OutputError, OutputHealthView, Outputs};
use crate::state::{StatusView, TargetStatus};
use crate::target::{Ownership, RunSpec, SubscriptionPlan, TargetRun, SOCKET_CLOSE_GRACE};
use crate::target_metrics::TargetSample;
use crate::target_up::{TargetUpReporter, TargetUpState, REPORT_INTERVAL};
use gnomon_bus::Bus;
use gnomon_config::{ConfigError, GnomonConfig, SubscriptionConfig, TargetConfig};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a stopping target may take before its task is aborted.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why a collector operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("target {0:?} not found")]
    UnknownTarget(String),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("the collector is shut down")]
    ShutDown,
}

/// Shared pieces a host process may hand in (`gnomon demo`, tests).
#[derive(Clone, Default)]
pub struct CollectorDeps {
    /// A bus every `type: nats` output publishes on instead of connecting to NATS
    /// (subjects, format and headers unchanged).
    pub bus: Option<Arc<dyn Bus>>,
    /// How often each target's `gnomon_target_up` is published again; 10 s when `None`.
    pub target_up_interval: Option<Duration>,
}

struct RunningTarget {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    status: Arc<TargetStatus>,
    /// What the run collects with; sending a new spec changes a running target in place.
    spec: tokio::sync::watch::Sender<Arc<RunSpec>>,
    fencing_token: Option<u64>,
    /// Whether a coordinator granted the target (it may then move to another member).
    owned_by_lock: bool,
    up_reporter: Option<TargetUpReporter>,
    /// The run's sockets: a stop waits for them to close before the lock is given back.
    sockets: Arc<OpenSockets>,
}

/// What to publish about a target once it is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FinalReport {
    /// Nothing: it was replaced, or it moves to another member that reports it.
    Nothing,
    /// Down (not clustered: nobody else will collect it).
    Down,
    /// Deleted: the exporter drops its series.
    Deleted,
}

struct Inner {
    config: RwLock<GnomonConfig>,
    outputs: Mutex<Option<Outputs>>,
    running: Mutex<HashMap<String, RunningTarget>>,
    target_up_interval: Duration,
    /// Updates received by targets no longer running here, so the member's total only grows.
    retired_updates: AtomicU64,
}

impl gnomon_telemetry::ExpositionSource for Inner {
    fn render(&self, out: &mut String) {
        let mut targets: Vec<TargetSample> = lock(&self.running)
            .iter()
            .map(|(name, running)| TargetSample {
                name: name.clone(),
                status: running.status.clone(),
            })
            .collect();
        targets.sort_by(|a, b| a.name.cmp(&b.name));
        crate::target_metrics::render(&targets, out);
    }
}

/// A runtime target as the API shows it (gnmic's shape plus gnomon's state).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TargetView {
    pub config: TargetConfig,
    pub subscriptions: BTreeMap<String, SubscriptionConfig>,
    #[serde(flatten)]
    pub status: StatusView,
    pub fencing_token: u64,
}

/// Cheap to clone; all clones drive the same collector.
#[derive(Clone)]
pub struct CollectorHandle {
    inner: Arc<Inner>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl CollectorHandle {
    /// Starts the outputs of `config` (no target yet). Needs a tokio runtime.
    pub fn new(config: GnomonConfig) -> Result<Self, OutputError> {
        Self::with_deps(config, CollectorDeps::default())
    }

    /// Like [`CollectorHandle::new`], with pieces handed in by the host process.
    pub fn with_deps(config: GnomonConfig, deps: CollectorDeps) -> Result<Self, OutputError> {
        // The recorder must exist before any metric handle is created.
        let _ = gnomon_telemetry::metrics_handle();
        crate::outputs::describe_metrics();
        let outputs =
            Outputs::start_with_processors(&config.outputs, &config.processors, deps.bus)?;
        let inner = Arc::new(Inner {
            config: RwLock::new(config),
            outputs: Mutex::new(Some(outputs)),
            running: Mutex::new(HashMap::new()),
            retired_updates: AtomicU64::new(0),
            target_up_interval: deps.target_up_interval.unwrap_or(REPORT_INTERVAL),
        });
        let weak = Arc::downgrade(&inner);
        gnomon_telemetry::register_exposition_source(weak);
        Ok(Self { inner })
    }

    fn config(&self) -> std::sync::RwLockReadGuard<'_, GnomonConfig> {
        match self.inner.config.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn config_mut(&self) -> std::sync::RwLockWriteGuard<'_, GnomonConfig> {
        match self.inner.config.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A copy of the current configuration (targets include posted ones).
    pub fn config_snapshot(&self) -> GnomonConfig {
        self.config().clone()
    }

    /// Parses a posted target (JSON, durations as ns or strings) against the globals.
    pub fn parse_target(&self, body: &serde_json::Value) -> Result<TargetConfig, ConfigError> {
        self.config().target_from_json(body)
    }

    /// The outputs' processor chains (a SIGHUP rebuilds them from new definitions).
    pub fn processor_chains(&self) -> Option<gnomon_processors::ChainSet> {
        lock(&self.inner.outputs)
            .as_ref()
            .map(|outputs| outputs.chains().clone())
    }

    /// Parses a subscription posted as JSON or read from the cluster store.
    pub fn parse_subscription(
        &self,
        body: &serde_json::Value,
    ) -> Result<SubscriptionConfig, ConfigError> {
        self.config().subscription_from_json(body)
    }

    /// Adds a target configuration if none of that name exists (gnmic: no update).
    /// Returns whether it was added.
    pub fn add_target_config(&self, target: TargetConfig) -> Result<bool, ConfigError> {
        let mut config = self.config_mut();
        config.check_target_references(&target, "")?;
        if config.targets.contains_key(&target.name) {
            return Ok(false);
        }
        config.targets.insert(target.name.clone(), target);
        Ok(true)
    }

    /// A known target configuration.
    pub fn target_config(&self, name: &str) -> Option<TargetConfig> {
        self.config().targets.get(name).cloned()
    }

    /// Every known target configuration.
    pub fn target_configs(&self) -> BTreeMap<String, TargetConfig> {
        self.config().targets.clone()
    }

    /// Starts (or restarts) the configured target `name`. With `ownership`, published
    /// messages carry its fencing token and the target stops when the lock is lost.
    pub fn start_target(
        &self,
        name: &str,
        ownership: Option<Ownership>,
    ) -> Result<(), CollectorError> {
        let target = self
            .target_config(name)
            .ok_or_else(|| CollectorError::UnknownTarget(name.to_string()))?;
        self.start(target, ownership)
    }

    /// Adds or replaces `target`'s configuration and starts it.
    pub fn start_target_config(
        &self,
        target: TargetConfig,
        ownership: Option<Ownership>,
    ) -> Result<(), CollectorError> {
        {
            let mut config = self.config_mut();
            config.check_target_references(&target, "")?;
            config.targets.insert(target.name.clone(), target.clone());
        }
        self.start(target, ownership)
    }

    /// The subscriptions of `target` with the outputs each feeds.
    fn plans_for(
        &self,
        target: &TargetConfig,
    ) -> Result<(Vec<SubscriptionPlan>, usize), CollectorError> {
        let subscriptions = self.config().subscriptions_for(target);
        let outputs = lock(&self.inner.outputs);
        let Some(outputs) = outputs.as_ref() else {
            return Err(CollectorError::ShutDown);
        };
        let plans = subscriptions
            .into_iter()
            .map(|subscription| {
                let names = if subscription.outputs.is_empty() {
                    &target.outputs
                } else {
                    &subscription.outputs
                };
                let outputs = outputs.select(names);
                SubscriptionPlan {
                    config: subscription,
                    outputs,
                }
            })
            .collect();
        Ok((plans, outputs.slot_count()))
    }

    fn start(
        &self,
        target: TargetConfig,
        ownership: Option<Ownership>,
    ) -> Result<(), CollectorError> {
        let (plans, slots) = self.plans_for(&target)?;
        if plans.is_empty() {
            tracing::warn!(target = %target.name, "target has no subscriptions; nothing to collect until some are added");
        }
        let status = Arc::new(TargetStatus::new());
        let cancel = CancellationToken::new();
        let fencing_token = ownership.as_ref().map(|o| o.fencing_token);
        let owned_by_lock = ownership.is_some();
        let up_reporter = TargetUpReporter::new(
            &target.name,
            fencing_token,
            plans.iter().flat_map(|plan| plan.outputs.iter().cloned()),
            self.inner.target_up_interval,
        );
        let (spec, spec_rx) = tokio::sync::watch::channel(Arc::new(RunSpec {
            config: target.clone(),
            plans,
        }));
        let sockets = Arc::new(OpenSockets::default());
        let mut running = lock(&self.inner.running);
        let run = TargetRun {
            name: target.name.clone(),
            spec: spec_rx,
            status: status.clone(),
            ownership,
            output_slots: slots,
            up_reporter: up_reporter.clone(),
            sockets: sockets.clone(),
            replaces: running.get(&target.name).map(|r| r.sockets.clone()),
        };
        let task = tokio::spawn(run.run(cancel.clone()));
        let previous = running.insert(
            target.name.clone(),
            RunningTarget {
                cancel,
                task,
                status,
                spec,
                fencing_token,
                owned_by_lock,
                up_reporter,
                sockets,
            },
        );
        drop(running);
        if let Some(previous) = previous {
            self.retire(&previous);
            previous.cancel.cancel();
            tokio::spawn(finish(previous, FinalReport::Nothing));
        }
        Ok(())
    }

    /// Hands every running target its current config and subscriptions; a target whose
    /// spec did not change is not touched (its streams keep running).
    fn refresh_running(&self) {
        let targets = self.config().targets.clone();
        let running: Vec<(String, Arc<RunSpec>)> = lock(&self.inner.running)
            .iter()
            .map(|(name, running)| (name.clone(), running.spec.borrow().clone()))
            .collect();
        for (name, current) in running {
            let config = targets
                .get(&name)
                .cloned()
                .unwrap_or_else(|| current.config.clone());
            let Ok((plans, _)) = self.plans_for(&config) else {
                return;
            };
            let next = RunSpec { config, plans };
            if next.config == current.config && same_plans(&next.plans, &current.plans) {
                continue;
            }
            tracing::info!(target = %name, subscriptions = ?next.plans.iter().map(|p| p.config.name.as_str()).collect::<Vec<_>>(), "applying a configuration change to a running target");
            if let Some(running) = lock(&self.inner.running).get(&name) {
                running.spec.send_replace(Arc::new(next));
            }
        }
    }

    /// Adds or replaces a subscription; running targets that use it follow at once.
    pub fn put_subscription(&self, subscription: SubscriptionConfig) -> Result<(), ConfigError> {
        {
            let mut config = self.config_mut();
            for output in &subscription.outputs {
                if !config.outputs.contains_key(output) {
                    return Err(ConfigError::Message(format!(
                        "subscription {:?}: output {output:?} does not exist",
                        subscription.name
                    )));
                }
            }
            if config.subscriptions.get(&subscription.name) == Some(&subscription) {
                return Ok(());
            }
            config
                .subscriptions
                .insert(subscription.name.clone(), subscription);
        }
        self.refresh_running();
        Ok(())
    }

    /// Removes a subscription; returns whether it existed. Its streams close; the targets'
    /// other subscriptions keep running.
    pub fn delete_subscription(&self, name: &str) -> bool {
        let existed = self.config_mut().subscriptions.remove(name).is_some();
        if existed {
            self.refresh_running();
        }
        existed
    }

    /// Replaces every subscription (the cluster store's set).
    pub fn replace_subscriptions(&self, subscriptions: BTreeMap<String, SubscriptionConfig>) {
        {
            let mut config = self.config_mut();
            if config.subscriptions == subscriptions {
                return;
            }
            config.subscriptions = subscriptions;
        }
        self.refresh_running();
    }

    /// The subscriptions known now.
    pub fn subscriptions(&self) -> BTreeMap<String, SubscriptionConfig> {
        self.config().subscriptions.clone()
    }

    /// Sets which subscriptions target `name` uses (gnmic's PATCH): every name must exist.
    pub fn set_target_subscriptions(
        &self,
        name: &str,
        subscriptions: Vec<String>,
    ) -> Result<(), CollectorError> {
        {
            let mut config = self.config_mut();
            if let Some(missing) = subscriptions
                .iter()
                .find(|s| !config.subscriptions.contains_key(*s))
            {
                return Err(CollectorError::Config(ConfigError::Message(format!(
                    "subscription {missing} does not exist"
                ))));
            }
            let Some(target) = config.targets.get_mut(name) else {
                return Err(CollectorError::UnknownTarget(name.to_string()));
            };
            target.subscriptions = subscriptions;
        }
        self.refresh_running();
        Ok(())
    }

    /// Replaces a known target's configuration (the cluster store changed it); a running
    /// target follows in place: a change of subscriptions or outputs only resubscribes
    /// what changed, a change of its connection settings reconnects it once.
    pub fn update_target_config(&self, target: TargetConfig) -> Result<bool, ConfigError> {
        {
            let mut config = self.config_mut();
            config.check_target_references(&target, "")?;
            match config.targets.get(&target.name) {
                Some(known) if *known == target => return Ok(false),
                None => return Ok(false),
                Some(_) => {}
            }
            config.targets.insert(target.name.clone(), target);
        }
        self.refresh_running();
        Ok(true)
    }

    /// Stops target `name`. Returns false if it was not running. Not clustered, the
    /// target is then reported down on the bus; a clustered one is left for its next owner.
    pub async fn stop_target(&self, name: &str) -> bool {
        self.stop(name, false).await
    }

    /// Stops target `name` and forgets its configuration (gnmic's DELETE); its
    /// `gnomon_target_up` series is deleted on the bus.
    pub async fn delete_target(&self, name: &str) -> bool {
        let known = self.config_mut().targets.remove(name).is_some();
        let running = self.stop(name, true).await;
        known || running
    }

    async fn stop(&self, name: &str, deleted: bool) -> bool {
        let Some(running) = lock(&self.inner.running).remove(name) else {
            return false;
        };
        self.retire(&running);
        let report = if deleted {
            FinalReport::Deleted
        } else if running.owned_by_lock {
            FinalReport::Nothing
        } else {
            FinalReport::Down
        };
        running.cancel.cancel();
        finish(running, report).await;
        true
    }

    /// Keeps the updates of a target leaving the running table in the member's total.
    fn retire(&self, running: &RunningTarget) {
        let updates = running.status.updates.load(Ordering::Relaxed);
        self.inner
            .retired_updates
            .fetch_add(updates, Ordering::Relaxed);
    }

    /// Updates (leaf values) received from targets since the collector started.
    pub fn updates_received_total(&self) -> u64 {
        let running: u64 = lock(&self.inner.running)
            .values()
            .map(|r| r.status.updates.load(Ordering::Relaxed))
            .sum();
        self.inner.retired_updates.load(Ordering::Relaxed) + running
    }

    /// Updates the outputs delivered since they started (summed over outputs).
    pub fn updates_delivered_total(&self) -> u64 {
        lock(&self.inner.outputs)
            .as_ref()
            .map_or(0, Outputs::delivered_total)
    }

    /// Every output's health (none after shutdown).
    pub fn output_health(&self) -> Vec<OutputHealthView> {
        lock(&self.inner.outputs)
            .as_ref()
            .map(Outputs::health)
            .unwrap_or_default()
    }

    /// Names of the running targets.
    pub fn running_targets(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.inner.running).keys().cloned().collect();
        names.sort();
        names
    }

    /// One running target.
    pub fn target(&self, name: &str) -> Option<TargetView> {
        lock(&self.inner.running).get(name).map(view)
    }

    /// Every running target by name.
    pub fn targets(&self) -> BTreeMap<String, TargetView> {
        lock(&self.inner.running)
            .iter()
            .map(|(name, running)| (name.clone(), view(running)))
            .collect()
    }

    /// Stops every target (reporting the unclustered ones down), then lets the outputs
    /// send what is queued.
    pub async fn shutdown(&self) {
        let all: Vec<RunningTarget> = lock(&self.inner.running).drain().map(|(_, r)| r).collect();
        for running in &all {
            running.cancel.cancel();
        }
        futures::future::join_all(all.into_iter().map(|running| {
            let report = if running.owned_by_lock {
                FinalReport::Nothing
            } else {
                FinalReport::Down
            };
            finish(running, report)
        }))
        .await;
        let outputs = lock(&self.inner.outputs).take();
        if let Some(outputs) = outputs {
            outputs.close(STOP_GRACE).await;
        }
    }
}

/// Whether two subscription lists open the same streams.
fn same_plans(a: &[SubscriptionPlan], b: &[SubscriptionPlan]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.same_stream(b))
}

fn view(running: &RunningTarget) -> TargetView {
    let spec = running.spec.borrow().clone();
    TargetView {
        config: spec.config.clone(),
        subscriptions: spec
            .plans
            .iter()
            .map(|p| (p.config.name.clone(), p.config.clone()))
            .collect(),
        status: running.status.view(),
        fencing_token: running.fencing_token.unwrap_or(0),
    }
}

/// Waits for a cancelled target to end, then publishes `report` (after the run's own
/// reports, so the final one is last).
async fn finish(running: RunningTarget, report: FinalReport) {
    let abort = running.task.abort_handle();
    if tokio::time::timeout(STOP_GRACE, running.task)
        .await
        .is_err()
    {
        tracing::warn!(target = %running.spec.borrow().config.name, "target did not stop in time; aborted");
        abort.abort();
    }
    // An aborted run drops its client, which kills the socket; either way the lock is given
    // back only once the device's stream is gone (or the grace is over).
    if !running.sockets.wait_closed(SOCKET_CLOSE_GRACE).await {
        tracing::warn!(target = %running.spec.borrow().config.name, "the target's connection did not close in time");
    }
    running.status.set(crate::state::TargetState::Stopped, None);
    if let Some(reporter) = &running.up_reporter {
        match report {
            FinalReport::Nothing => {}
            FinalReport::Down => reporter.report(TargetUpState::Down).await,
            FinalReport::Deleted => reporter.report(TargetUpState::Deleted).await,
        }
    }
}
