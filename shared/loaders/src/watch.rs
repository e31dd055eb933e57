//! Running a loader: wait `start-delay`, then read, diff against the last applied set, run
//! the actions, hand the diff to the [`Sink`], wait for the next change or interval, repeat.
//!
//! Failures never look like "no targets": a failed read keeps the last set and reports the
//! error (logged once per distinct text, counted every time); a target whose on-add actions
//! fail is not added and one whose on-delete actions fail is not removed, so both are tried
//! again at the next read; a diff the sink refuses is computed again at the next read. A
//! changed target (any field differs) is reported in `changed`; for actions it counts as a
//! removal then an addition, as in gnmic.

use crate::actions::ActionRunner;
use crate::Loader;
use gnomon_config::loader::LoaderConfig;
use gnomon_config::TargetConfig;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What changed between two reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Diff {
    /// New targets, by name.
    pub added: BTreeMap<String, TargetConfig>,
    /// Names of targets that are gone.
    pub removed: Vec<String>,
    /// Targets whose configuration changed, with the new configuration.
    pub changed: BTreeMap<String, TargetConfig>,
}

impl Diff {
    /// The changes from `old` to `new`.
    pub fn between(
        old: &BTreeMap<String, TargetConfig>,
        new: &BTreeMap<String, TargetConfig>,
    ) -> Self {
        let mut diff = Diff::default();
        for (name, target) in new {
            match old.get(name) {
                None => {
                    diff.added.insert(name.clone(), target.clone());
                }
                Some(before) if before != target => {
                    diff.changed.insert(name.clone(), target.clone());
                }
                Some(_) => {}
            }
        }
        diff.removed = old
            .keys()
            .filter(|n| !new.contains_key(*n))
            .cloned()
            .collect();
        diff
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// `set` with this diff applied.
    fn apply_to(&self, set: &mut BTreeMap<String, TargetConfig>) {
        for name in &self.removed {
            set.remove(name);
        }
        for (name, target) in self.added.iter().chain(&self.changed) {
            set.insert(name.clone(), target.clone());
        }
    }
}

/// Why a sink refused a diff.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Where changes go (the collector's targets, the cluster store, a test channel).
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// Applies `diff`; an error leaves the targets as they were, and the same changes are
    /// offered again after the next read.
    async fn apply(&self, diff: Diff) -> Result<(), SinkError>;

    /// The targets this loader applied before (a new leader's loader continues from what
    /// the previous one put into the cluster store), so the first read's diff holds only
    /// real changes: nothing is re-added, and what left the source meanwhile is removed.
    async fn applied_before(&self) -> BTreeMap<String, TargetConfig> {
        BTreeMap::new()
    }
}

/// How a loader is run.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    pub type_name: &'static str,
    pub interval: Duration,
    pub start_delay: Duration,
    pub actions_timeout: Duration,
    pub enable_metrics: bool,
    pub debug: bool,
}

impl WatchOptions {
    pub fn from_config(config: &LoaderConfig) -> Self {
        Self {
            type_name: config.type_name(),
            interval: config.interval,
            start_delay: config.start_delay,
            actions_timeout: config.actions_timeout,
            enable_metrics: config.enable_metrics,
            debug: config.debug,
        }
    }
}

const TARGETS: &str = "gnomon_loader_targets";
const LOAD_ERRORS: &str = "gnomon_loader_load_errors_total";
const LAST_SUCCESS: &str = "gnomon_loader_last_success_timestamp_seconds";
const ACTION_ERRORS: &str = "gnomon_loader_action_errors_total";
const APPLY_ERRORS: &str = "gnomon_loader_apply_errors_total";

/// HELP text of the loader metrics (recorded only with `enable-metrics`).
pub fn describe_metrics() {
    metrics::describe_gauge!(TARGETS, "Targets the loader currently provides.");
    metrics::describe_counter!(LOAD_ERRORS, "Reads of the loader's source that failed.");
    metrics::describe_gauge!(
        LAST_SUCCESS,
        "Unix time in seconds of the last successful read of the loader's source."
    );
    metrics::describe_counter!(
        ACTION_ERRORS,
        "on-add/on-delete actions that failed, by action."
    );
    metrics::describe_counter!(APPLY_ERRORS, "Diffs the loader's sink refused.");
}

/// Runs `loader` until `shutdown`: reads, diffs, runs `actions`, applies to `sink`.
pub async fn run(
    mut loader: Box<dyn Loader>,
    actions: Option<ActionRunner>,
    sink: Arc<dyn Sink>,
    options: WatchOptions,
    shutdown: CancellationToken,
) {
    if options.enable_metrics {
        describe_metrics();
    }
    let loader_type = options.type_name;
    tokio::select! {
        () = shutdown.cancelled() => return,
        () = tokio::time::sleep(options.start_delay) => {}
    }
    let mut applied: BTreeMap<String, TargetConfig> = tokio::select! {
        () = shutdown.cancelled() => return,
        applied = sink.applied_before() => applied,
    };
    let mut last_error: Option<String> = None;
    loop {
        let span = tracing::info_span!("loader_load", loader = loader_type);
        let read = tokio::select! {
            () = shutdown.cancelled() => return,
            read = loader.load().instrument(span.clone()) => read,
        };
        match read {
            Err(error) => {
                let text = error.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(loader = loader_type, error = %text, "loader read failed; keeping the last targets");
                    last_error = Some(text);
                }
                if options.enable_metrics {
                    metrics::counter!(LOAD_ERRORS, "loader" => loader_type).increment(1);
                }
            }
            Ok(found) => {
                if last_error.take().is_some() {
                    tracing::info!(loader = loader_type, "loader read succeeds again");
                }
                if options.enable_metrics {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs_f64();
                    metrics::gauge!(LAST_SUCCESS, "loader" => loader_type).set(now);
                }
                let diff = Diff::between(&applied, &found);
                let diff = match &actions {
                    Some(actions) if !diff.is_empty() => {
                        let filtered = run_actions(actions, diff, &found, &options);
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            diff = filtered => diff,
                        }
                    }
                    _ => diff,
                };
                if !diff.is_empty() {
                    let summary = (diff.added.len(), diff.removed.len(), diff.changed.len());
                    match sink.apply(diff.clone()).instrument(span).await {
                        Ok(()) => {
                            diff.apply_to(&mut applied);
                            let message = "loader targets changed";
                            if options.debug {
                                tracing::info!(
                                    loader = loader_type,
                                    added = summary.0,
                                    removed = summary.1,
                                    changed = summary.2,
                                    total = applied.len(),
                                    "{message}"
                                );
                            } else {
                                tracing::debug!(
                                    loader = loader_type,
                                    added = summary.0,
                                    removed = summary.1,
                                    changed = summary.2,
                                    total = applied.len(),
                                    "{message}"
                                );
                            }
                        }
                        Err(error) => {
                            tracing::warn!(loader = loader_type, error = %error, "the loader's changes were not applied; retrying after the next read");
                            if options.enable_metrics {
                                metrics::counter!(APPLY_ERRORS, "loader" => loader_type)
                                    .increment(1);
                            }
                        }
                    }
                }
                if options.enable_metrics {
                    metrics::gauge!(TARGETS, "loader" => loader_type).set(applied.len() as f64);
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = loader.wait_for_change(options.interval) => {}
        }
    }
}

/// Runs on-delete for removed and changed targets and on-add for added and changed ones,
/// within `actions_timeout` as a whole; drops from the diff what failed or did not finish.
async fn run_actions(
    actions: &ActionRunner,
    diff: Diff,
    found: &BTreeMap<String, TargetConfig>,
    options: &WatchOptions,
) -> Diff {
    let deadline = tokio::time::Instant::now() + options.actions_timeout;
    let mut kept = Diff::default();
    let failed = |error: &crate::ActionError, target: &str| {
        tracing::warn!(loader = options.type_name, target, error = %error, "loader action failed");
        if options.enable_metrics {
            let action = match error {
                crate::ActionError::Request { action, .. }
                | crate::ActionError::Status { action, .. }
                | crate::ActionError::Setup { action, .. } => action.clone(),
            };
            metrics::counter!(ACTION_ERRORS, "loader" => options.type_name, "action" => action)
                .increment(1);
        }
    };
    for name in diff.removed {
        match tokio::time::timeout_at(deadline, actions.on_delete(&name)).await {
            Ok(Ok(())) => kept.removed.push(name),
            Ok(Err(error)) => failed(&error, &name),
            Err(_) => {
                tracing::warn!(loader = options.type_name, target = %name, "actions-timeout reached; the target is kept for now")
            }
        }
    }
    for (name, target) in diff.changed {
        let done = tokio::time::timeout_at(deadline, async {
            actions.on_delete(&name).await?;
            actions.on_add(&name, found).await
        })
        .await;
        match done {
            Ok(Ok(())) => {
                kept.changed.insert(name, target);
            }
            Ok(Err(error)) => failed(&error, &name),
            Err(_) => {
                tracing::warn!(loader = options.type_name, target = %name, "actions-timeout reached; the change waits for the next read")
            }
        }
    }
    for (name, target) in diff.added {
        match tokio::time::timeout_at(deadline, actions.on_add(&name, found)).await {
            Ok(Ok(())) => {
                kept.added.insert(name, target);
            }
            Ok(Err(error)) => failed(&error, &name),
            Err(_) => {
                tracing::warn!(loader = options.type_name, target = %name, "actions-timeout reached; the target waits for the next read")
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use gnomon_config::GlobalConfig;

    fn target(name: &str, address: &str) -> TargetConfig {
        TargetConfig::new(name, address, &GlobalConfig::default())
    }

    #[test]
    fn diff_reports_added_removed_and_changed() {
        let old = BTreeMap::from([
            ("a".to_string(), target("a", "10.0.0.1")),
            ("b".to_string(), target("b", "10.0.0.2")),
            ("c".to_string(), target("c", "10.0.0.3")),
        ]);
        let new = BTreeMap::from([
            ("a".to_string(), target("a", "10.0.0.1")),
            ("b".to_string(), target("b", "10.0.0.9")),
            ("d".to_string(), target("d", "10.0.0.4")),
        ]);
        let diff = Diff::between(&old, &new);
        assert_eq!(diff.added.keys().collect::<Vec<_>>(), ["d"]);
        assert_eq!(diff.removed, ["c"]);
        assert_eq!(diff.changed["b"].address, "10.0.0.9:57400");
        let mut applied = old.clone();
        diff.apply_to(&mut applied);
        assert_eq!(applied, new);
        assert!(Diff::between(&new, &new).is_empty());
    }
}
