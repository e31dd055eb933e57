//! The contract between collectors and exporters, in one place: what a message on the bus
//! says and how the two sides read it.
//!
//! * **Subjects** follow gnmic's NATS output: one fixed `subject`, or
//!   `<subject-prefix>.<source>.<subscription>` with `.` in the source written `-` and spaces
//!   `_` ([`subject_for`]); a reader without headers recovers source and subscription from
//!   such a subject ([`source_from_subject`]).
//! * **Headers** ([`MessageHeaders`]): the target (gnmic's `source`), the subscription, the
//!   **fencing token** of the target lock the publisher held (absent when not clustered), and
//!   the W3C `traceparent` of the publishing span.
//! * **Target status**: whether a target's gNMI stream is alive travels as a gnmic event
//!   named [`TARGET_STATUS`] on the subject of a pseudo-subscription of the same name
//!   ([`target_status_payload`]), so exporters serve `gnomon_target_up` next to the data and
//!   remove it when the target is deleted.
//!
//! Why headers and not payload fields: the exporter checks the fencing token before it
//! spends anything on decoding, and gnmic's payload formats stay unchanged for gnmic readers.

use bytes::Bytes;

/// Header naming the target a message was collected from.
pub const HEADER_TARGET: &str = "Gnomon-Target";
/// Header naming the subscription a message belongs to.
pub const HEADER_SUBSCRIPTION: &str = "Gnomon-Subscription";
/// Header with the fencing token of the target lock held when the message was published.
pub const HEADER_FENCING_TOKEN: &str = "Gnomon-Fencing-Token";
/// W3C trace context header, carried so a consume span joins the publish trace.
pub const HEADER_TRACEPARENT: &str = "traceparent";

/// Name of the target-status event, its value, its pseudo-subscription and the gauge the
/// exporter serves.
pub const TARGET_STATUS: &str = "gnomon_target_up";

/// Metadata carried with every message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageHeaders {
    /// Target name (the `source` of gnmic's events).
    pub target: Option<String>,
    /// Subscription name ([`TARGET_STATUS`] for status reports).
    pub subscription: Option<String>,
    /// Fencing token of the publisher's target lock; `None` when not clustered (or when
    /// the header was not a number: such a message cannot prove its owner).
    pub fencing_token: Option<u64>,
    /// W3C `traceparent` of the publishing span, when tracing is on.
    pub traceparent: Option<String>,
}

impl MessageHeaders {
    /// Whether the message is a target-status report.
    pub fn is_target_status(&self) -> bool {
        self.subscription.as_deref() == Some(TARGET_STATUS)
    }
}

/// Formats a fencing token for [`HEADER_FENCING_TOKEN`].
pub fn format_fencing_token(token: u64) -> String {
    token.to_string()
}

/// Reads a [`HEADER_FENCING_TOKEN`] value: a decimal number, nothing else.
pub fn parse_fencing_token(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// How a publisher names subjects (gnmic's NATS output keys).
#[derive(Clone, Copy, Debug)]
pub enum SubjectScheme<'a> {
    /// `subject`: every message on one subject.
    Fixed(&'a str),
    /// `subject-prefix`: `<prefix>.<source>.<subscription>`.
    Prefixed(&'a str),
}

/// gnmic's subject for a message of `target` / `subscription`.
pub fn subject_for(scheme: SubjectScheme<'_>, target: &str, subscription: &str) -> String {
    match scheme {
        SubjectScheme::Fixed(subject) => subject.to_string(),
        SubjectScheme::Prefixed(prefix) => {
            let mut subject = prefix.replace(' ', "_");
            let source = target.replace('.', "-").replace(' ', "_");
            if !source.is_empty() {
                subject.push('.');
                subject.push_str(&source);
            }
            let subscription = subscription.replace(' ', "_");
            if !subscription.is_empty() {
                subject.push('.');
                subject.push_str(&subscription);
            }
            subject
        }
    }
}

/// gnmic's fallback for messages without headers: split the subject into at most 3 parts on
/// `.`; part 2 with `-` → `.` is the source, part 3 the subscription.
pub fn source_from_subject(subject: &str) -> (String, String) {
    let mut parts = subject.splitn(3, '.');
    let _prefix = parts.next();
    let source = parts
        .next()
        .map(|s| s.replace('-', "."))
        .unwrap_or_default();
    let subscription = parts.next().unwrap_or_default().to_string();
    (source, subscription)
}

/// What a status report says about a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetStatus {
    /// `gnomon_target_up` 1: its stream is alive.
    Up,
    /// `gnomon_target_up` 0.
    Down,
    /// The target was deleted: the exporter removes the series.
    Deleted,
}

/// The event-format payload of a status report (gnmic's event JSON):
/// `[{"name":"gnomon_target_up","timestamp":<ns>,"tags":{"target":"r1"},"values":{"gnomon_target_up":1}}]`,
/// or `"deletes":["gnomon_target_up"]` for [`TargetStatus::Deleted`].
pub fn target_status_payload(target: &str, status: TargetStatus, timestamp_ns: i64) -> Bytes {
    let mut event = serde_json::json!({
        "name": TARGET_STATUS,
        "timestamp": timestamp_ns,
        "tags": { "target": target },
    });
    match status {
        TargetStatus::Up => event["values"] = serde_json::json!({ TARGET_STATUS: 1 }),
        TargetStatus::Down => event["values"] = serde_json::json!({ TARGET_STATUS: 0 }),
        TargetStatus::Deleted => event["deletes"] = serde_json::json!([TARGET_STATUS]),
    }
    Bytes::from(serde_json::Value::Array(vec![event]).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_gnmic() {
        let prefixed = SubjectScheme::Prefixed("telemetry");
        assert_eq!(
            subject_for(prefixed, "172.17.0.100:57400", "port-stats"),
            "telemetry.172-17-0-100:57400.port-stats"
        );
        assert_eq!(
            subject_for(prefixed, "my router", "a sub"),
            "telemetry.my_router.a_sub"
        );
        assert_eq!(
            subject_for(SubjectScheme::Fixed("telemetry"), "10.0.0.1:57400", "s"),
            "telemetry"
        );
        assert_eq!(
            source_from_subject("telemetry.172-17-0-100:57400.port-stats"),
            ("172.17.0.100:57400".to_string(), "port-stats".to_string())
        );
        assert_eq!(
            source_from_subject("telemetry"),
            (String::new(), String::new())
        );
    }

    #[test]
    fn fencing_tokens_are_plain_decimal_numbers() {
        assert_eq!(parse_fencing_token(&format_fencing_token(42)), Some(42));
        assert_eq!(parse_fencing_token("0"), Some(0));
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1e3",
            "0x10",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_fencing_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn status_payloads_are_the_event_json_the_exporter_reads() {
        let json = |status| -> serde_json::Value {
            serde_json::from_slice(&target_status_payload(
                "r1",
                status,
                1_700_000_000_000_000_000,
            ))
            .unwrap()
        };
        assert_eq!(
            json(TargetStatus::Up),
            serde_json::json!([{
                "name": "gnomon_target_up",
                "timestamp": 1_700_000_000_000_000_000_i64,
                "tags": {"target": "r1"},
                "values": {"gnomon_target_up": 1}
            }])
        );
        assert_eq!(json(TargetStatus::Down)[0]["values"]["gnomon_target_up"], 0);
        let deleted = json(TargetStatus::Deleted);
        assert_eq!(
            deleted[0]["deletes"],
            serde_json::json!(["gnomon_target_up"])
        );
        assert!(deleted[0].get("values").is_none());
    }
}
