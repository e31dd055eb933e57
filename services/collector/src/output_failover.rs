//! Health-driven failover: a member whose outputs have *all* been failing for
//! `clustering.output-failure-timeout` gives its targets up (see
//! [`ClusterMember::give_up`]); it takes targets again once its outputs have been healthy
//! continuously for the same timeout. The second window is the hysteresis: an output that
//! flaps faster than the timeout completes neither window, so the member neither drops nor
//! re-takes its targets on every blip. A member still reaching the coordination store but
//! not NATS would otherwise keep its targets while their data is lost.
//!
//! The same loop samples the member's counters for [`MemberStats`]: rates over the last
//! [`RATE_WINDOW`], so a reader gets a figure without keeping state.

use crate::cluster_member::ClusterMember;
use gnomon_coordination::member_stats::{MemberStats, OutputHealth, OutputStatus};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const ACCEPTS_TARGETS: &str = "gnomon_cluster_member_accepts_targets";
const GIVE_UPS: &str = "gnomon_cluster_member_output_failovers_total";

/// Rates are averaged over this window.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// What the tracker decided on one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    GiveUp,
    TakeAgain,
}

/// The failover state machine, fed with "are all outputs failing" observations.
#[derive(Debug)]
pub struct HealthTracker {
    timeout: Duration,
    /// Whether the member has given its targets up.
    unhealthy: bool,
    /// Since when the current condition holds (all failing while healthy; some output
    /// healthy while unhealthy).
    since: Option<Instant>,
}

impl HealthTracker {
    /// `timeout` zero: failover off (never gives up).
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            unhealthy: false,
            since: None,
        }
    }

    /// Feeds one observation taken at `now`; returns the transition it completes.
    pub fn observe(&mut self, all_failing: bool, now: Instant) -> Option<Transition> {
        if self.timeout.is_zero() {
            return None;
        }
        // The condition that moves the member out of its current state.
        let leaving = if self.unhealthy {
            !all_failing
        } else {
            all_failing
        };
        if !leaving {
            self.since = None;
            return None;
        }
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) < self.timeout {
            return None;
        }
        self.since = None;
        self.unhealthy = !self.unhealthy;
        Some(if self.unhealthy {
            Transition::GiveUp
        } else {
            Transition::TakeAgain
        })
    }

    /// Taking targets again failed: back to unhealthy, for another full healthy window.
    pub fn stay_unhealthy(&mut self) {
        self.unhealthy = true;
        self.since = None;
    }

    /// Where the member stands, for the API.
    pub fn health(&self) -> OutputHealth {
        match (self.unhealthy, self.since.is_some()) {
            (false, false) => OutputHealth::Healthy,
            (false, true) => OutputHealth::Failing,
            (true, false) => OutputHealth::Unhealthy,
            (true, true) => OutputHealth::Recovering,
        }
    }
}

/// Counter samples over [`RATE_WINDOW`], oldest first.
#[derive(Debug, Default)]
struct Samples(VecDeque<(Instant, u64, u64)>);

impl Samples {
    fn push(&mut self, at: Instant, received: u64, delivered: u64) {
        self.0.push_back((at, received, delivered));
        while self
            .0
            .front()
            .is_some_and(|(first, ..)| at.duration_since(*first) > RATE_WINDOW)
        {
            self.0.pop_front();
        }
    }

    /// (in, out) per second between the oldest and newest sample (zero with fewer than two).
    fn rates(&self) -> (f64, f64) {
        let (Some(first), Some(last)) = (self.0.front(), self.0.back()) else {
            return (0.0, 0.0);
        };
        let seconds = last.0.duration_since(first.0).as_secs_f64();
        if seconds <= 0.0 {
            return (0.0, 0.0);
        }
        let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / seconds;
        (rate(first.1, last.1), rate(first.2, last.2))
    }
}

/// How often outputs are looked at: often enough that failover happens within a small
/// fraction of the timeout past it.
fn tick_for(timeout: Duration) -> Duration {
    if timeout.is_zero() {
        Duration::from_secs(1)
    } else {
        (timeout / 8).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }
}

/// Watches the outputs of `member`'s collector until `stop`, giving targets up and taking
/// them again by the rule above, and keeps the member's [`MemberStats`] current.
pub async fn run(member: ClusterMember, timeout: Duration, stop: CancellationToken) {
    metrics::describe_gauge!(
        ACCEPTS_TARGETS,
        "1 while this member takes targets, 0 while it has given them up because every output fails."
    );
    metrics::describe_counter!(
        GIVE_UPS,
        "Times this member gave its targets up because every output had failed for output-failure-timeout."
    );
    let accepts = metrics::gauge!(ACCEPTS_TARGETS);
    let give_ups = metrics::counter!(GIVE_UPS);
    accepts.set(1.0);
    let mut tracker = HealthTracker::new(timeout);
    let mut samples = Samples::default();
    let mut tick = tokio::time::interval(tick_for(timeout));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let collector = member.collector();
        let outputs = collector.output_health();
        let all_failing = !outputs.is_empty() && outputs.iter().all(|o| !o.healthy);
        let now = Instant::now();
        match tracker.observe(all_failing, now) {
            Some(Transition::GiveUp) => {
                give_ups.increment(1);
                accepts.set(0.0);
                member.give_up().await;
            }
            Some(Transition::TakeAgain) => match member.take_targets_again().await {
                Ok(()) => accepts.set(1.0),
                Err(e) => {
                    tracing::warn!(error = %e, "registering as healthy again failed; trying again after another healthy window");
                    tracker.stay_unhealthy();
                }
            },
            None => {}
        }
        samples.push(
            now,
            collector.updates_received_total(),
            collector.updates_delivered_total(),
        );
        let (updates_in, updates_out) = samples.rates();
        member.stats_board().set(MemberStats {
            name: member.instance().to_string(),
            targets_held: member.held(),
            updates_in_per_second: updates_in,
            updates_out_per_second: updates_out,
            output_health: tracker.health(),
            outputs: outputs
                .into_iter()
                .map(|o| OutputStatus {
                    name: o.name,
                    healthy: o.healthy,
                })
                .collect(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn gives_up_only_after_every_output_failed_for_the_whole_timeout() {
        let t0 = Instant::now();
        let mut tracker = HealthTracker::new(Duration::from_secs(2));
        assert_eq!(tracker.observe(true, at(t0, 0)), None);
        assert_eq!(tracker.health(), OutputHealth::Failing);
        // A healthy moment restarts the window.
        assert_eq!(tracker.observe(false, at(t0, 1500)), None);
        assert_eq!(tracker.health(), OutputHealth::Healthy);
        assert_eq!(tracker.observe(true, at(t0, 1600)), None);
        assert_eq!(tracker.observe(true, at(t0, 3500)), None);
        assert_eq!(
            tracker.observe(true, at(t0, 3600)),
            Some(Transition::GiveUp)
        );
        assert_eq!(tracker.health(), OutputHealth::Unhealthy);
        // Still failing: nothing more to do.
        assert_eq!(tracker.observe(true, at(t0, 9000)), None);
    }

    #[test]
    fn takes_targets_again_only_after_healthy_for_the_whole_timeout() {
        let t0 = Instant::now();
        let mut tracker = HealthTracker::new(Duration::from_secs(2));
        tracker.observe(true, at(t0, 0));
        assert_eq!(
            tracker.observe(true, at(t0, 2000)),
            Some(Transition::GiveUp)
        );
        // Flapping faster than the timeout never takes targets again.
        for step in 0..10 {
            let base = 2000 + step * 1000;
            assert_eq!(tracker.observe(false, at(t0, base + 100)), None);
            assert_eq!(tracker.health(), OutputHealth::Recovering);
            assert_eq!(tracker.observe(true, at(t0, base + 900)), None);
            assert_eq!(tracker.health(), OutputHealth::Unhealthy);
        }
        assert_eq!(tracker.observe(false, at(t0, 20_000)), None);
        assert_eq!(
            tracker.observe(false, at(t0, 22_000)),
            Some(Transition::TakeAgain)
        );
        assert_eq!(tracker.health(), OutputHealth::Healthy);
    }

    #[test]
    fn a_zero_timeout_turns_failover_off() {
        let t0 = Instant::now();
        let mut tracker = HealthTracker::new(Duration::ZERO);
        assert_eq!(tracker.observe(true, at(t0, 0)), None);
        assert_eq!(tracker.observe(true, at(t0, 3_600_000)), None);
        assert_eq!(tracker.health(), OutputHealth::Healthy);
    }

    #[test]
    fn rates_cover_the_window_and_forget_older_samples() {
        let t0 = Instant::now();
        let mut samples = Samples::default();
        assert_eq!(samples.rates(), (0.0, 0.0));
        samples.push(at(t0, 0), 0, 0);
        samples.push(at(t0, 2000), 100, 40);
        assert_eq!(samples.rates(), (50.0, 20.0));
        // 20 s later the first samples are out of the window.
        samples.push(at(t0, 20_000), 1000, 40);
        samples.push(at(t0, 22_000), 1200, 60);
        assert_eq!(samples.rates(), (100.0, 10.0));
    }
}
