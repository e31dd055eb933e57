//! A single instance (no `clustering`) runs its `loader` itself: what the loader finds is
//! added to and started on the local collector, changed targets are updated in place, and
//! targets that left the source are stopped and deleted — gnmic's single-instance loader.

use async_trait::async_trait;
use gnomon_collector::CollectorHandle;
use gnomon_coordinator::discovery::Discovery;
use gnomon_loaders::{Diff, Sink, SinkError, WatchOptions};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Runs the loader into `collector` until `shutdown`.
pub async fn run(discovery: Discovery, collector: CollectorHandle, shutdown: CancellationToken) {
    let (loader, actions) = match discovery.parts() {
        Ok(parts) => parts,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "the target loader cannot start");
            return;
        }
    };
    gnomon_loaders::run(
        loader,
        actions,
        Arc::new(CollectorSink { collector }),
        WatchOptions::from_config(&discovery.loader),
        shutdown,
    )
    .await;
}

struct CollectorSink {
    collector: CollectorHandle,
}

#[async_trait]
impl Sink for CollectorSink {
    async fn apply(&self, diff: Diff) -> Result<(), SinkError> {
        for name in &diff.removed {
            self.collector.delete_target(name).await;
        }
        for (name, target) in &diff.changed {
            self.collector
                .update_target_config(target.clone())
                .map_err(|e| format!("target {name:?}: {e}"))?;
        }
        for (name, target) in &diff.added {
            self.collector
                .start_target_config(target.clone(), None)
                .map_err(|e| format!("target {name:?}: {e}"))?;
        }
        Ok(())
    }
}
