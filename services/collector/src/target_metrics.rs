//! The per-target series of a collector's `/metrics`, rendered at scrape time from the
//! targets running here: gnmic's instance metrics (`gnmic_target_up`,
//! `gnmic_target_connection_state`, the subscribe counters), so gnmic dashboards and alerts
//! keep working, and gnomon's per-target counters.
//!
//! Why not the metrics recorder: it cannot forget a series. A target that moves to another
//! member would leave its last value here forever (a stale `up 0` that dashboards count
//! twice). Rendering from the live table means a series exists exactly while this process
//! runs the target. The cluster-wide `gnomon_target_up` is the exporter's, from the bus.
//! Cost: one pass over the running targets per scrape, nothing per update.

use crate::state::TargetState;
use gnomon_telemetry::escape_label_value;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::state::{SubscriptionCounters, TargetStatus};

/// What one running target contributes.
pub(crate) struct TargetSample {
    pub name: String,
    pub status: Arc<TargetStatus>,
}

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const UP: Family = Family {
    name: "gnmic_target_up",
    kind: "gauge",
    help: "Has value 1 if the gNMI connection to the target is established; otherwise, 0.",
};
const CONNECTION_STATE: Family = Family {
    name: "gnmic_target_connection_state",
    kind: "gauge",
    help: "The current gRPC connection state to the target: 0 (UNKNOWN), 1 (IDLE), 2 (CONNECTING), 3 (READY), 4 (TRANSIENT_FAILURE) or 5 (SHUTDOWN).",
};
const RECEIVED: Family = Family {
    name: "gnmic_subscribe_number_of_received_subscribe_response_messages_total",
    kind: "counter",
    help: "Total number of received subscribe response messages.",
};
const FAILED: Family = Family {
    name: "gnmic_subscribe_number_of_failed_subscribe_request_messages_total",
    kind: "counter",
    help: "Total number of failed subscribe requests.",
};
const RESPONSES: Family = Family {
    name: "gnomon_target_responses_total",
    kind: "counter",
    help: "SubscribeResponses received from the target while it runs on this collector.",
};
const UPDATES: Family = Family {
    name: "gnomon_target_updates_total",
    kind: "counter",
    help: "Updates (leaf values) received from the target while it runs on this collector.",
};
const ERRORS: Family = Family {
    name: "gnomon_target_errors_total",
    kind: "counter",
    help: "Failed attempts and error responses of the target while it runs on this collector.",
};

fn header(out: &mut String, family: &Family) {
    let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
    let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
}

fn sample(out: &mut String, family: &Family, labels: &[(&str, &str)], value: u64) {
    out.push_str(family.name);
    out.push('{');
    for (i, (name, label_value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_label_value(label_value, out);
        out.push('"');
    }
    let _ = writeln!(out, "}} {value}");
}

/// Appends every family for `targets` (sorted by name for stable output). Families with no
/// sample are left out entirely.
pub(crate) fn render(targets: &[TargetSample], out: &mut String) {
    if targets.is_empty() {
        return;
    }
    let states: Vec<TargetState> = targets.iter().map(|t| t.status.state()).collect();
    header(out, &UP);
    for (target, state) in targets.iter().zip(&states) {
        let up = matches!(state, TargetState::Streaming | TargetState::Completed);
        sample(out, &UP, &[("name", &target.name)], u64::from(up));
    }
    header(out, &CONNECTION_STATE);
    for (target, state) in targets.iter().zip(&states) {
        let value = u64::from(state.connection_state());
        sample(out, &CONNECTION_STATE, &[("name", &target.name)], value);
    }
    let subscriptions: Vec<(&str, String, Arc<SubscriptionCounters>)> = targets
        .iter()
        .flat_map(|t| {
            t.status
                .subscriptions()
                .into_iter()
                .map(move |(name, counters)| (t.name.as_str(), name, counters))
        })
        .collect();
    for (family, read) in [
        (
            &RECEIVED,
            (|c: &SubscriptionCounters| c.received.load(Ordering::Relaxed))
                as fn(&SubscriptionCounters) -> u64,
        ),
        (&FAILED, |c: &SubscriptionCounters| {
            c.failed.load(Ordering::Relaxed)
        }),
    ] {
        if subscriptions.is_empty() {
            break;
        }
        header(out, family);
        for (source, subscription, counters) in &subscriptions {
            let labels = [("source", *source), ("subscription", subscription.as_str())];
            sample(out, family, &labels, read(counters));
        }
    }
    for (family, read) in [
        (
            &RESPONSES,
            (|s: &TargetStatus| s.responses.load(Ordering::Relaxed)) as fn(&TargetStatus) -> u64,
        ),
        (&UPDATES, |s: &TargetStatus| {
            s.updates.load(Ordering::Relaxed)
        }),
        (&ERRORS, |s: &TargetStatus| s.errors.load(Ordering::Relaxed)),
    ] {
        header(out, family);
        for target in targets {
            sample(
                out,
                family,
                &[("target", &target.name)],
                read(&target.status),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_gnmic_families_with_escaped_labels() {
        let streaming = Arc::new(TargetStatus::new());
        streaming.set(TargetState::Streaming, None);
        streaming
            .subscription("sub1")
            .received
            .store(5, Ordering::Relaxed);
        streaming
            .subscription("sub1")
            .failed
            .store(1, Ordering::Relaxed);
        streaming.updates.store(40, Ordering::Relaxed);
        let failing = Arc::new(TargetStatus::new());
        failing.set(TargetState::Failed, Some("refused".into()));
        let targets = vec![
            TargetSample {
                name: "r1".into(),
                status: streaming,
            },
            TargetSample {
                name: "odd\"name\\".into(),
                status: failing,
            },
        ];
        let mut out = String::new();
        render(&targets, &mut out);
        assert!(out.contains("gnmic_target_up{name=\"r1\"} 1\n"), "{out}");
        assert!(
            out.contains("gnmic_target_up{name=\"odd\\\"name\\\\\"} 0\n"),
            "{out}"
        );
        assert!(out.contains("gnmic_target_connection_state{name=\"r1\"} 3\n"));
        assert!(out.contains(
            "gnmic_subscribe_number_of_received_subscribe_response_messages_total{source=\"r1\",subscription=\"sub1\"} 5\n"
        ));
        assert!(out.contains(
            "gnmic_subscribe_number_of_failed_subscribe_request_messages_total{source=\"r1\",subscription=\"sub1\"} 1\n"
        ));
        assert!(out.contains("gnomon_target_updates_total{target=\"r1\"} 40\n"));
        // Every family has HELP and TYPE exactly once.
        for family in [
            UP,
            CONNECTION_STATE,
            RECEIVED,
            FAILED,
            RESPONSES,
            UPDATES,
            ERRORS,
        ] {
            assert_eq!(out.matches(&format!("# HELP {} ", family.name)).count(), 1);
            assert_eq!(out.matches(&format!("# TYPE {} ", family.name)).count(), 1);
        }
        let mut empty = String::new();
        render(&[], &mut empty);
        assert!(empty.is_empty());
    }
}
