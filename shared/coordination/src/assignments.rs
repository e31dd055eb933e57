//! Many targets assigned to a member in one call: what the leader's handshakes for one member
//! send while an earlier call to it is in flight. gnmic's handshake pushes a config and then
//! starts the target, two HTTP calls per target; at 10 000 targets those calls were the
//! larger part of the leader's and the members' work. The per-target calls stay (gnmic's API);
//! this is gnomon's own route, served by every clustered collector.
//!
//! The request is a JSON array of [`Assignment`]s; the answer says, in the same order, which
//! the member refused and why. A refusal of one target does not fail the others.

use serde::{Deserialize, Serialize};

/// The member API route taking a batch of assignments (`POST`).
pub const ASSIGNMENTS_PATH: &str = "/api/v1/cluster/member/assignments";

/// One target to collect.
#[derive(Clone, Debug, Deserialize)]
pub struct Assignment {
    /// The target's config, as `POST /api/v1/config/targets` takes it.
    pub config: serde_json::Value,
    /// The W3C trace context of the leader's placement span, so the member's claim joins its
    /// trace as the per-target calls did (their `traceparent` header).
    #[serde(default)]
    pub traceparent: Option<String>,
}

/// Encodes assignments from configs already serialized as JSON (as the leader keeps them),
/// without parsing them again.
pub fn encode_assignments<'a>(
    assignments: impl IntoIterator<Item = (&'a [u8], Option<&'a str>)>,
) -> Vec<u8> {
    let mut body = Vec::new();
    body.push(b'[');
    for (n, (config, traceparent)) in assignments.into_iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"config\":");
        body.extend_from_slice(config);
        if let Some(traceparent) = traceparent {
            body.extend_from_slice(b",\"traceparent\":");
            // A String always serializes.
            body.extend(serde_json::to_vec(traceparent).unwrap_or_default());
        }
        body.push(b'}');
    }
    body.push(b']');
    body
}

/// The member's answer: for each assignment, in order, `None` when it took the target and
/// the reason when it refused it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentsReply {
    pub refused: Vec<Option<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_assignments_decode_with_their_configs_and_trace_contexts() {
        let first =
            serde_json::to_vec(&serde_json::json!({"name": "t1", "address": "a:1"})).unwrap();
        let second = br#"{"name":"t\"2","address":"b:2"}"#;
        let body = encode_assignments([
            (
                first.as_slice(),
                Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ),
            (second.as_slice(), None),
        ]);
        let decoded: Vec<Assignment> = serde_json::from_slice(&body).unwrap();
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0].config["name"], "t1");
        assert_eq!(
            decoded[0].traceparent.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(decoded[1].config["name"], "t\"2");
        assert_eq!(decoded[1].traceparent, None);
        let empty: Vec<Assignment> = serde_json::from_slice(&encode_assignments([])).unwrap();
        assert!(empty.is_empty());
    }
}
