//! Whether an output delivers right now, and how many updates it delivered: what the
//! member's health-driven failover and the cluster API's per-member figures read.
//!
//! An output reports through its [`OutputProbe`]. A NATS or JetStream output gives each
//! worker's publisher to its probe once connected; the output is healthy while at least one
//! of them delivers (NATS: connection up; JetStream: connection up and nothing waiting for a
//! retry) (read from the client when asked: nothing is polled, nothing costs per message
//! besides one relaxed add per published response). An output that reports nothing (the
//! file output; any output until it is wired to a probe) counts as healthy: failover only
//! acts when *every* output is failing, and an output that cannot tell must not trigger it.

use gnomon_bus::Publish;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// One worker's connection, once it has one.
type WorkerSlot = Mutex<Option<Arc<dyn Publish>>>;

/// How one output reports its health.
enum Reporting {
    /// The output cannot tell: counted as healthy.
    Silent,
    /// One slot per worker.
    Workers(Box<[WorkerSlot]>),
}

/// One output's health and delivery count, shared by its workers and the readers.
pub struct OutputProbe {
    name: String,
    reporting: Reporting,
    delivered_updates: AtomicU64,
}

/// An output's health as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutputHealthView {
    pub name: String,
    pub healthy: bool,
}

impl OutputProbe {
    /// A probe for an output that does not report (always healthy).
    pub fn silent(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_string(),
            reporting: Reporting::Silent,
            delivered_updates: AtomicU64::new(0),
        })
    }

    /// A probe for an output with `workers` connections, none connected yet.
    pub fn with_workers(name: &str, workers: usize) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_string(),
            reporting: Reporting::Workers((0..workers).map(|_| Mutex::new(None)).collect()),
            delivered_updates: AtomicU64::new(0),
        })
    }

    /// Worker `worker` publishes on `bus` from now on.
    pub fn connected(&self, worker: usize, bus: Arc<dyn Publish>) {
        if let Reporting::Workers(slots) = &self.reporting {
            if let Some(slot) = slots.get(worker) {
                *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(bus);
            }
        }
    }

    /// Counts updates (leaf values) that reached the transport.
    pub fn delivered(&self, updates: u64) {
        self.delivered_updates.fetch_add(updates, Ordering::Relaxed);
    }

    /// Whether the output delivers right now.
    pub fn healthy(&self) -> bool {
        match &self.reporting {
            Reporting::Silent => true,
            Reporting::Workers(slots) => slots.iter().any(|slot| {
                slot.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .is_some_and(|bus| bus.delivers())
            }),
        }
    }

    /// Updates delivered since the output started.
    pub fn delivered_total(&self) -> u64 {
        self.delivered_updates.load(Ordering::Relaxed)
    }

    pub fn view(&self) -> OutputHealthView {
        OutputHealthView {
            name: self.name.clone(),
            healthy: self.healthy(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_output_is_healthy_once_one_worker_is_connected() {
        let probe = OutputProbe::with_workers("n", 2);
        assert!(!probe.healthy(), "nothing connected yet");
        probe.connected(1, Arc::new(gnomon_bus::MemoryBus::new()));
        assert!(probe.healthy());
        // A worker index out of range is ignored, not a panic.
        probe.connected(7, Arc::new(gnomon_bus::MemoryBus::new()));
        assert_eq!(
            probe.view(),
            OutputHealthView {
                name: "n".into(),
                healthy: true
            }
        );
    }

    #[test]
    fn a_silent_output_counts_as_healthy_and_deliveries_add_up() {
        let probe = OutputProbe::silent("f");
        assert!(probe.healthy());
        probe.delivered(3);
        probe.delivered(4);
        assert_eq!(probe.delivered_total(), 7);
    }
}
