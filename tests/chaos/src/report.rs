//! What a chaos run measured, the goals it is judged by, and the `RESULT` lines it prints.

use crate::observer::{BusRecord, DoubleSubscription, StaleMessage};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A silence of one target on NATS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub target: String,
    pub from: Instant,
    pub length: Duration,
}

/// One SIGKILL (or freeze): who, when, and the targets it held with their fencing tokens at that moment.
#[derive(Clone, Debug)]
pub struct KillRecord {
    pub at: Instant,
    pub member: String,
    /// Whether the member was the coordinator leader (its failover includes an election).
    pub was_leader: bool,
    /// `SIGKILL`, or `SIGSTOP` for a freeze.
    pub signal: &'static str,
    pub orphans: Vec<(String, u64)>,
}

impl KillRecord {
    /// Failover time of this kill: until every orphaned target had a data message with a
    /// higher fencing token than before the kill (a new owner). `None` when some target never
    /// did; `Some(ZERO)` when the member held nothing.
    pub fn failover(&self, bus: &BusRecord) -> Option<Duration> {
        let mut worst = Duration::ZERO;
        for (target, token) in &self.orphans {
            let back = bus
                .arrivals
                .get(target)?
                .iter()
                .find(|a| a.at > self.at && a.fencing_token > *token)?;
            worst = worst.max(back.at - self.at);
        }
        Some(worst)
    }
}

/// Everything the observer measured.
#[derive(Debug)]
pub struct ChaosReport {
    /// Start of the disturbed phase (offsets in the report are from here).
    pub start: Instant,
    pub disturbed: Duration,
    pub devices: usize,
    pub session_ttl: Duration,
    pub two_subscriber: Duration,
    /// Two-subscriber time where the extra subscriber was a frozen process (not a goal: a
    /// frozen process cannot close its streams; fencing covers what it sends on waking).
    pub two_subscriber_frozen: Duration,
    pub double_subscriptions: Vec<DoubleSubscription>,
    pub stats_polls: u64,
    pub failed_stats_polls: u64,
    pub stale_on_bus: Vec<StaleMessage>,
    /// Per exporter, its stale-dropped counter at the end (`None`: could not be read).
    pub stale_dropped: Vec<(String, Option<u64>)>,
    pub exporter_messages: Vec<(String, u64)>,
    pub bus_messages: u64,
    pub longest_gap: Option<Gap>,
    pub gap_at_nats_restart: Option<Gap>,
    pub gap_at_etcd_restart: Option<Gap>,
    pub gap_at_kills: Option<Gap>,
    /// How long the restart calls took (server down → accepting connections again).
    pub nats_outage: Option<Duration>,
    pub etcd_outage: Option<Duration>,
    pub kills: Vec<KillRecord>,
    pub failover: Vec<Option<Duration>>,
    pub panics: Vec<String>,
    pub problems: Vec<String>,
    /// Average cores used by the simulator, members and exporters while disturbed.
    pub cpu_cores: f64,
    pub log_dir: Option<PathBuf>,
}

impl ChaosReport {
    /// The longest silence a target may have: session TTL + 2 s (issue 8).
    pub fn failover_bound(&self) -> Duration {
        self.session_ttl + Duration::from_secs(2)
    }

    /// Stale messages an exporter let through: for each exporter, the stale messages the
    /// observer saw on the bus minus the ones that exporter counted as dropped (each exporter
    /// receives every message); the worst exporter counts. An unreadable counter counts as
    /// nothing dropped.
    pub fn stale_accepted(&self) -> u64 {
        let on_bus = self.stale_on_bus.len() as u64;
        self.stale_dropped
            .iter()
            .map(|(_, dropped)| on_bus.saturating_sub(dropped.unwrap_or(0)))
            .max()
            .unwrap_or(on_bus)
    }

    fn longest_gap_length(&self) -> Duration {
        self.longest_gap
            .as_ref()
            .map(|g| g.length)
            .unwrap_or_default()
    }

    /// The goals of issue 8 this run missed (empty: all met).
    pub fn missed_goals(&self) -> Vec<String> {
        self.missed_goals_with_gap_bound(self.failover_bound())
    }

    /// The goals with `gap_bound` as the longest silence allowed. The release-build run
    /// (`scripts/chaos`) holds the failover bound; the test suite's smoke runs debug builds
    /// on a loaded CI machine, where the bound is a speed goal (benchmarks own those) and
    /// only a silence several times longer means something is broken.
    pub fn missed_goals_with_gap_bound(&self, gap_bound: Duration) -> Vec<String> {
        let mut missed = Vec::new();
        if !self.two_subscriber.is_zero() {
            missed.push(format!(
                "a target had two subscribers for {:.1}s in total",
                self.two_subscriber.as_secs_f64()
            ));
        }
        if self.stale_accepted() > 0 {
            missed.push(format!(
                "{} stale messages accepted by an exporter",
                self.stale_accepted()
            ));
        }
        if self.longest_gap_length() > gap_bound {
            missed.push(format!(
                "longest gap {:.1}s exceeds the bound {:.1}s",
                self.longest_gap_length().as_secs_f64(),
                gap_bound.as_secs_f64()
            ));
        }
        if !self.panics.is_empty() {
            missed.push(format!("{} panics in the logs", self.panics.len()));
        }
        let lost = self.failover.iter().filter(|f| f.is_none()).count();
        if lost > 0 {
            missed.push(format!("{lost} kills whose targets never got a new owner"));
        }
        if self.count("SIGKILL") == 0 && self.disturbed > Duration::from_secs(60) {
            missed.push("no member was killed".to_string());
        }
        missed.extend(self.problems.iter().cloned());
        missed
    }

    /// The `RESULT <name> <value> <unit>` lines.
    pub fn result_lines(&self) -> Vec<String> {
        let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
        let failover_max = self.failover.iter().flatten().max().copied();
        vec![
            format!(
                "RESULT chaos_two_subscriber_s {:.1} s",
                self.two_subscriber.as_secs_f64()
            ),
            format!(
                "RESULT chaos_two_subscriber_frozen_s {:.1} s",
                self.two_subscriber_frozen.as_secs_f64()
            ),
            format!(
                "RESULT chaos_stale_accepted {} messages",
                self.stale_accepted()
            ),
            format!(
                "RESULT chaos_stale_on_bus {} messages",
                self.stale_on_bus.len()
            ),
            format!(
                "RESULT chaos_longest_gap_s {:.1} s",
                self.longest_gap_length().as_secs_f64()
            ),
            format!(
                "RESULT chaos_gap_nats_restart_s {:.1} s",
                secs(self.gap_at_nats_restart.as_ref().map(|g| g.length))
            ),
            format!(
                "RESULT chaos_gap_etcd_restart_s {:.1} s",
                secs(self.gap_at_etcd_restart.as_ref().map(|g| g.length))
            ),
            format!(
                "RESULT chaos_gap_kill_s {:.1} s",
                secs(self.gap_at_kills.as_ref().map(|g| g.length))
            ),
            format!("RESULT chaos_failover_max_s {:.1} s", secs(failover_max)),
            format!("RESULT chaos_panics {} count", self.panics.len()),
            format!("RESULT chaos_kills {} count", self.count("SIGKILL")),
            format!("RESULT chaos_pauses {} count", self.count("SIGSTOP")),
            format!("RESULT chaos_problems {} count", self.problems.len()),
            format!("RESULT chaos_cpu_cores {:.2} cores", self.cpu_cores),
        ]
    }

    /// Disturbances sent with `signal`.
    pub fn count(&self, signal: &str) -> usize {
        self.kills.iter().filter(|k| k.signal == signal).count()
    }

    /// Offset of `at` from the start of the disturbed phase, in seconds (negative: setup).
    fn offset(&self, at: Instant) -> f64 {
        if at >= self.start {
            (at - self.start).as_secs_f64()
        } else {
            -(self.start - at).as_secs_f64()
        }
    }

    fn describe_gap(&self, gap: &Option<Gap>) -> String {
        match gap {
            Some(g) => format!(
                "{:.2}s on {} from {:+.1}s",
                g.length.as_secs_f64(),
                g.target,
                self.offset(g.from)
            ),
            None => "none".to_string(),
        }
    }

    /// Human-readable details behind the RESULT lines.
    pub fn details(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "disturbed {:.0}s, {} devices, session-ttl {:?} (failover bound {:?}), {} stats polls ({} failed), {} bus messages",
                self.disturbed.as_secs_f64(),
                self.devices,
                self.session_ttl,
                self.failover_bound(),
                self.stats_polls,
                self.failed_stats_polls,
                self.bus_messages
            ),
            format!("longest gap: {}", self.describe_gap(&self.longest_gap)),
            format!(
                "around the nats-server restart (down {:?}): {}",
                self.nats_outage,
                self.describe_gap(&self.gap_at_nats_restart)
            ),
            format!(
                "around the etcd restart (down {:?}): {}",
                self.etcd_outage,
                self.describe_gap(&self.gap_at_etcd_restart)
            ),
            format!("around kills: {}", self.describe_gap(&self.gap_at_kills)),
        ];
        for (kill, failover) in self.kills.iter().zip(&self.failover) {
            lines.push(format!(
                "{} at {:+.1}s: {}{} holding {} targets; failover {}",
                kill.signal,
                self.offset(kill.at),
                kill.member,
                if kill.was_leader { " (leader)" } else { "" },
                kill.orphans.len(),
                failover.map_or("never".to_string(), |f| format!("{:.2}s", f.as_secs_f64()))
            ));
        }
        for (exporter, dropped) in &self.stale_dropped {
            let messages = self
                .exporter_messages
                .iter()
                .find(|(e, _)| e == exporter)
                .map(|(_, m)| *m);
            lines.push(format!(
                "exporter {exporter}: stale dropped {dropped:?}, messages {messages:?}"
            ));
        }
        for stale in self.stale_on_bus.iter().take(10) {
            lines.push(format!(
                "stale on bus at {:+.1}s: {} token {} < {}",
                self.offset(stale.at),
                stale.target,
                stale.fencing_token,
                stale.highest_seen
            ));
        }
        // Stretches with two live subscribers first: they are the ones that miss the goal.
        let mut doubles: Vec<&DoubleSubscription> = self.double_subscriptions.iter().collect();
        doubles.sort_by_key(|d| (d.frozen, d.first_seen));
        for double in doubles.into_iter().take(10) {
            lines.push(format!(
                "two subscribers{} on {} from {:+.1}s to {:+.1}s (max {}, peers {:?} {:?})",
                if double.frozen { " (one frozen)" } else { "" },
                double.device,
                self.offset(double.first_seen),
                self.offset(double.last_seen),
                double.most_subscriptions,
                double.peers,
                double.peer_processes
            ));
        }
        for panic in self.panics.iter().take(10) {
            lines.push(format!("panic: {panic}"));
        }
        for problem in &self.problems {
            lines.push(format!("problem: {problem}"));
        }
        if let Some(dir) = &self.log_dir {
            lines.push(format!("logs kept in {}", dir.display()));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::Arrival;

    fn report(stale_on_bus: usize, dropped: Vec<Option<u64>>) -> ChaosReport {
        let now = Instant::now();
        ChaosReport {
            start: now,
            disturbed: Duration::from_secs(120),
            devices: 1,
            session_ttl: Duration::from_secs(2),
            two_subscriber: Duration::ZERO,
            two_subscriber_frozen: Duration::ZERO,
            double_subscriptions: vec![],
            stats_polls: 1,
            failed_stats_polls: 0,
            stale_on_bus: (0..stale_on_bus)
                .map(|_| StaleMessage {
                    at: now,
                    target: "t0".into(),
                    fencing_token: 1,
                    highest_seen: 2,
                })
                .collect(),
            stale_dropped: dropped
                .into_iter()
                .enumerate()
                .map(|(i, d)| (format!("e{i}"), d))
                .collect(),
            exporter_messages: vec![],
            bus_messages: 0,
            longest_gap: None,
            gap_at_nats_restart: None,
            gap_at_etcd_restart: None,
            gap_at_kills: None,
            nats_outage: None,
            etcd_outage: None,
            kills: vec![KillRecord {
                at: now,
                member: "g1".into(),
                was_leader: false,
                signal: "SIGKILL",
                orphans: vec![],
            }],
            failover: vec![Some(Duration::ZERO)],
            panics: vec![],
            problems: vec![],
            cpu_cores: 0.5,
            log_dir: None,
        }
    }

    #[test]
    fn stale_accepted_is_what_the_worst_exporter_did_not_drop() {
        assert_eq!(report(0, vec![Some(0), Some(0)]).stale_accepted(), 0);
        assert_eq!(report(3, vec![Some(3), Some(1)]).stale_accepted(), 2);
        assert_eq!(report(3, vec![Some(3), None]).stale_accepted(), 3);
        assert!(report(0, vec![Some(0)]).missed_goals().is_empty());
        assert_eq!(report(2, vec![Some(2), Some(1)]).missed_goals().len(), 1);
    }

    #[test]
    fn a_gap_beyond_ttl_plus_two_seconds_misses_the_goal() {
        let mut r = report(0, vec![Some(0)]);
        r.longest_gap = Some(Gap {
            target: "t1".into(),
            from: r.start,
            length: Duration::from_millis(4100),
        });
        assert_eq!(r.missed_goals().len(), 1);
        r.longest_gap.as_mut().unwrap().length = Duration::from_millis(3900);
        assert!(r.missed_goals().is_empty());
        assert!(r
            .result_lines()
            .contains(&"RESULT chaos_longest_gap_s 3.9 s".to_string()));
    }

    #[test]
    fn failover_waits_for_a_higher_token_after_the_kill() {
        let t0 = Instant::now();
        let mut bus = BusRecord::default();
        let arrivals = [(1, 5), (3, 5), (4, 9)].map(|(s, token)| Arrival {
            at: t0 + Duration::from_secs(s),
            fencing_token: token,
        });
        bus.arrivals.insert("t0".into(), arrivals.to_vec());
        let kill = KillRecord {
            at: t0 + Duration::from_secs(2),
            member: "g1".into(),
            was_leader: false,
            signal: "SIGKILL",
            orphans: vec![("t0".into(), 5)],
        };
        assert_eq!(kill.failover(&bus), Some(Duration::from_secs(2)));
        let never = KillRecord {
            orphans: vec![("t0".into(), 9)],
            ..kill
        };
        assert_eq!(never.failover(&bus), None);
    }
}
