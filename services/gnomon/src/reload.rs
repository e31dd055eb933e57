//! SIGHUP: read the configuration file again and apply what changed in its targets and
//! subscriptions, the same way a REST call would — into the cluster store when clustered
//! (every member follows it; the leader places new targets), straight into the collector
//! otherwise — and in its processor definitions (every chain of this process is rebuilt;
//! each member applies its own file). A running target is touched only when what it
//! collects with changed. Changes to other sections need a restart and are named in a
//! warning; a file that no longer loads is reported and the running configuration kept.

use gnomon_collector::CollectorHandle;
use gnomon_config::{GnomonConfig, SubscriptionConfig, TargetConfig};
use gnomon_coordination::{SubscriptionStore, TargetStore};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Reads the configuration file again (on a blocking thread).
pub type ConfigSource = Arc<dyn Fn() -> Result<GnomonConfig, String> + Send + Sync>;

/// Where changes go.
pub struct Appliers {
    pub destination: Destination,
    /// The processor chains of this process's outputs and inputs.
    pub processor_chains: Vec<gnomon_processors::ChainSet>,
}

/// Where targets and subscriptions from the file go.
pub enum Destination {
    /// Clustered: the cluster store, which every member follows.
    Cluster {
        targets: TargetStore,
        subscriptions: SubscriptionStore,
    },
    /// A single instance: this process's collector.
    Collector(CollectorHandle),
    /// A process without a collector or a store (an exporter alone): nothing to apply.
    Nowhere,
}

impl Destination {
    async fn put_subscription(&self, subscription: &SubscriptionConfig) -> Result<(), String> {
        match self {
            Self::Cluster { subscriptions, .. } => subscriptions
                .put_subscription(subscription)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Self::Collector(collector) => collector
                .put_subscription(subscription.clone())
                .map_err(|e| e.to_string()),
            Self::Nowhere => Ok(()),
        }
    }

    /// Stores `target`; `known` says whether the running configuration had it.
    async fn put_target(&self, target: &TargetConfig, known: bool) -> Result<(), String> {
        match self {
            Self::Cluster { targets, .. } => targets
                .put(&target.to_wire_json())
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Self::Collector(collector) if known => collector
                .update_target_config(target.clone())
                .map(drop)
                .map_err(|e| e.to_string()),
            Self::Collector(collector) => {
                collector
                    .add_target_config(target.clone())
                    .map_err(|e| e.to_string())?;
                collector
                    .start_target(&target.name, None)
                    .map_err(|e| e.to_string())
            }
            Self::Nowhere => Ok(()),
        }
    }

    async fn delete_target(&self, name: &str) -> Result<(), String> {
        match self {
            Self::Cluster { targets, .. } => targets
                .delete(name)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Self::Collector(collector) => {
                collector.delete_target(name).await;
                Ok(())
            }
            Self::Nowhere => Ok(()),
        }
    }

    async fn delete_subscription(&self, name: &str) -> Result<(), String> {
        match self {
            Self::Cluster { subscriptions, .. } => subscriptions
                .delete(name)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Self::Collector(collector) => {
                collector.delete_subscription(name);
                Ok(())
            }
            Self::Nowhere => Ok(()),
        }
    }
}

/// Applies the file's changes on every SIGHUP until `shutdown`.
pub async fn on_sighup(
    source: ConfigSource,
    mut current: GnomonConfig,
    appliers: Appliers,
    shutdown: CancellationToken,
) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGHUP; the configuration file is read only at start");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            received = hangups.recv() => if received.is_none() { return },
        }
        let read = source.clone();
        let loaded = match tokio::task::spawn_blocking(move || read()).await {
            Ok(loaded) => loaded,
            Err(error) => Err(format!("reading the configuration failed: {error}")),
        };
        let next = match loaded {
            Ok(next) => next,
            Err(error) => {
                tracing::error!(%error, "SIGHUP: the configuration file does not load; keeping the running configuration");
                continue;
            }
        };
        for warning in &next.warnings {
            warning.log();
        }
        let changes = apply(&current, &next, &appliers).await;
        tracing::info!(
            applied = changes.applied,
            failed = changes.failed,
            "SIGHUP: configuration file applied"
        );
        current = next;
    }
}

/// What one reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub applied: usize,
    pub failed: usize,
}

impl Changes {
    fn record(&mut self, what: &str, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.applied += 1;
                tracing::info!(name = %gnomon_common::log::Escaped(name), "SIGHUP: {what}");
            }
            Err(error) => {
                self.failed += 1;
                tracing::error!(name = %gnomon_common::log::Escaped(name), %error, "SIGHUP: {what} failed");
            }
        }
    }
}

/// Applies the differences between `old` and `new`: subscriptions added or changed first
/// (targets may name them), then targets added, changed and removed, then subscriptions
/// removed.
pub async fn apply(old: &GnomonConfig, new: &GnomonConfig, to: &Appliers) -> Changes {
    let mut changes = Changes::default();
    warn_about_restart_only_sections(old, new);
    if old.processors != new.processors {
        for chains in &to.processor_chains {
            let result = chains
                .reload(&new.processors)
                .map(|rebuilt| tracing::info!(rebuilt, "SIGHUP: processor chains rebuilt"))
                .map_err(|e| e.to_string());
            changes.record("processors applied", "processors", result);
        }
    }
    let to = &to.destination;
    for (name, subscription) in &new.subscriptions {
        if old.subscriptions.get(name) != Some(subscription) {
            let result = to.put_subscription(subscription).await;
            changes.record("subscription stored", name, result);
        }
    }
    for (name, target) in &new.targets {
        let previous = old.targets.get(name);
        if previous != Some(target) {
            let result = to.put_target(target, previous.is_some()).await;
            changes.record("target stored", name, result);
        }
    }
    for name in old.targets.keys().filter(|n| !new.targets.contains_key(*n)) {
        let result = to.delete_target(name).await;
        changes.record("target removed", name, result);
    }
    let removed = old.subscriptions.keys();
    for name in removed.filter(|n| !new.subscriptions.contains_key(*n)) {
        let result = to.delete_subscription(name).await;
        changes.record("subscription removed", name, result);
    }
    changes
}

/// Names every changed section SIGHUP does not apply.
fn warn_about_restart_only_sections(old: &GnomonConfig, new: &GnomonConfig) {
    let section = |name: &'static str, same: bool| (!same).then_some(name);
    let changed: Vec<&str> = [
        section("outputs", old.outputs == new.outputs),
        section("inputs", old.inputs == new.inputs),
        section("clustering", old.clustering == new.clustering),
        section("api-server", old.api == new.api),
        section("global settings", old.globals == new.globals),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !changed.is_empty() {
        tracing::warn!(
            sections = ?changed,
            "SIGHUP applies targets, subscriptions and processors; these changed sections need a restart and are not applied"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gnomon_config::{load_config_with_env, ConfigFormat};
    use std::time::Duration;

    fn config(devices: &[std::net::SocketAddr], subscriptions: &str, nowhere: u16) -> GnomonConfig {
        let mut text = String::from("insecure: true\ntargets:\n");
        for (i, device) in devices.iter().enumerate() {
            text.push_str(&format!("  dev{i}:\n    address: {device}\n"));
        }
        text.push_str(&format!(
            "subscriptions:\n{subscriptions}outputs:\n  bus:\n    type: nats\n    address: 127.0.0.1:{nowhere}\n"
        ));
        load_config_with_env(&text, ConfigFormat::Yaml, &[]).unwrap()
    }

    const COUNTERS: &str = "  counters:\n    paths: [/interfaces/interface/state/counters]\n    stream-mode: sample\n    sample-interval: 1s\n";
    const MORE: &str = "  more:\n    paths: [/interfaces/interface/state/counters]\n    stream-mode: sample\n    sample-interval: 2s\n";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_single_instance_applies_the_files_targets_and_subscriptions() {
        let mut args = gnomon_simulator::SimulatorArgs::on_free_ports(2);
        args.update_rate = Duration::from_millis(200);
        let sim = gnomon_simulator::Simulator::start(args).await.unwrap();
        let devices = sim.device_addresses().to_vec();
        let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let old = config(&devices[..1], COUNTERS, nowhere);
        let collector = CollectorHandle::new(old.clone()).unwrap();
        collector.start_target("dev0", None).unwrap();
        let appliers = Appliers {
            destination: Destination::Collector(collector.clone()),
            processor_chains: Vec::new(),
        };

        // A subscription and a target added: both applied, dev0 keeps running.
        let new = config(&devices, &format!("{COUNTERS}{MORE}"), nowhere);
        let changes = apply(&old, &new, &appliers).await;
        assert_eq!(
            changes,
            Changes {
                applied: 2,
                failed: 0
            }
        );
        assert_eq!(collector.running_targets(), ["dev0", "dev1"]);
        let dev0 = collector.target("dev0").unwrap();
        assert_eq!(
            dev0.subscriptions.keys().collect::<Vec<_>>(),
            ["counters", "more"]
        );

        // Back: dev1 goes away, `more` too.
        let changes = apply(&new, &old, &appliers).await;
        assert_eq!(
            changes,
            Changes {
                applied: 2,
                failed: 0
            }
        );
        assert_eq!(collector.running_targets(), ["dev0"]);
        assert!(!collector.subscriptions().contains_key("more"));
        collector.shutdown().await;
        sim.stop().await;
    }
}
