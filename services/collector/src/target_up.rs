//! `gnomon_target_up` on the bus ([`gnomon_bus::contract`]): whether a target's gNMI stream is alive, published to
//! the NATS outputs its subscriptions feed so exporters can serve it next to the data.
//!
//! A report goes out when the state changes (streaming ⇒ 1, failed / completed ⇒ 0) and
//! every [`REPORT_INTERVAL`] so an exporter started later learns it. A stopped target is
//! reported down only when no other member can take it over (not clustered); a clustered
//! target that is stopped has moved, and its new owner reports it.

use crate::outputs::OutputSender;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use gnomon_bus::contract::target_status_payload;
pub use gnomon_bus::contract::TargetStatus as TargetUpState;

/// How often the current state is published again.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// One report, built once and shared by every output that publishes it.
#[derive(Debug)]
pub struct TargetUpReport {
    target: String,
    fencing_token: Option<u64>,
    payload: Bytes,
    route: usize,
}

fn unix_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl TargetUpReport {
    /// A report stamped now.
    pub fn new(target: &str, fencing_token: Option<u64>, state: TargetUpState) -> Self {
        Self::at(target, fencing_token, state, unix_now_ns())
    }

    fn at(
        target: &str,
        fencing_token: Option<u64>,
        state: TargetUpState,
        timestamp_ns: i64,
    ) -> Self {
        let payload = target_status_payload(target, state, timestamp_ns);
        let route = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            target.hash(&mut hasher);
            hasher.finish() as usize
        };
        Self {
            target: target.to_string(),
            fencing_token,
            payload,
            route,
        }
    }

    /// The target reported on.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Fencing token of the target lock held when reporting (`None` when not clustered).
    pub fn fencing_token(&self) -> Option<u64> {
        self.fencing_token
    }

    /// The event-format JSON payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Spreads targets over an output's workers.
    pub(crate) fn route(&self) -> usize {
        self.route
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_carry_the_contract_payload() {
        let report = TargetUpReport::at("r1", Some(7), TargetUpState::Down, 5);
        assert_eq!(
            report.payload(),
            &target_status_payload("r1", TargetUpState::Down, 5)
        );
        assert_eq!(report.fencing_token(), Some(7));
    }

    #[test]
    fn a_fresh_report_is_stamped_with_the_current_time() {
        let before = unix_now_ns();
        let report = TargetUpReport::new("r1", None, TargetUpState::Up);
        let json: serde_json::Value = serde_json::from_slice(report.payload()).unwrap();
        let stamped = json[0]["timestamp"].as_i64().unwrap();
        assert!(stamped >= before && stamped <= unix_now_ns());
        assert_eq!(report.target(), "r1");
    }
}
