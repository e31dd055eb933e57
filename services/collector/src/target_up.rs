//! `gnomon_target_up` on the bus ([`gnomon_bus::contract`]): whether a target's gNMI stream is alive, published to
//! the NATS outputs its subscriptions feed so exporters can serve it next to the data.
//!
//! A report goes out when the state changes (streaming ⇒ 1, failed / completed ⇒ 0) and
//! every [`REPORT_INTERVAL`] so an exporter started later learns it. A stopped target is
//! reported down only when no other member can take it over (not clustered); a clustered
//! target that is stopped has moved, and its new owner reports it.

use crate::outputs::{OutputSender, TargetUpReport};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub use gnomon_bus::contract::TargetStatus as TargetUpState;

/// How often the current state is published again.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Publishes one target's state to the outputs that carry it.
#[derive(Clone, Debug)]
pub struct TargetUpReporter {
    target: String,
    fencing_token: Option<u64>,
    outputs: Vec<OutputSender>,
    interval: Duration,
}

impl TargetUpReporter {
    /// A reporter over the outputs among `outputs` that carry target status (each once);
    /// `None` when there is none.
    pub fn new(
        target: &str,
        fencing_token: Option<u64>,
        outputs: impl IntoIterator<Item = OutputSender>,
        interval: Duration,
    ) -> Option<Self> {
        let mut carrying: Vec<OutputSender> = Vec::new();
        for output in outputs {
            if output.carries_target_up() && carrying.iter().all(|o| o.name() != output.name()) {
                carrying.push(output);
            }
        }
        (!carrying.is_empty()).then(|| Self {
            target: target.to_string(),
            fencing_token,
            outputs: carrying,
            interval,
        })
    }

    /// Queues one report on every output.
    pub async fn report(&self, state: TargetUpState) {
        let report = Arc::new(TargetUpReport::new(&self.target, self.fencing_token, state));
        tracing::debug!(target = %self.target, ?state, "reporting target status");
        for output in &self.outputs {
            output.report_target_up(&report).await;
        }
    }

    /// Reports every change of `up` (`None` until the first attempt ends) and the current
    /// value every interval, until `stop` fires.
    pub async fn run(&self, mut up: watch::Receiver<Option<bool>>, stop: CancellationToken) {
        let mut last: Option<bool> = None;
        let mut ticker = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let current = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                changed = up.changed() => {
                    if changed.is_err() {
                        // The status is gone: the run is ending.
                        return;
                    }
                    match *up.borrow_and_update() {
                        Some(value) if last != Some(value) => value,
                        _ => continue,
                    }
                }
                _ = ticker.tick() => up.borrow().unwrap_or(false),
            };
            let state = if current {
                TargetUpState::Up
            } else {
                TargetUpState::Down
            };
            self.report(state).await;
            last = Some(current);
            ticker.reset();
        }
    }
}
