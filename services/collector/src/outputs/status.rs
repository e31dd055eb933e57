//! One target-status report as the outputs carry it: built once (payload, route) and shared
//! by every output that publishes it. When to send one is the target-up reporter's
//! business; this module only knows the message.

use bytes::Bytes;
use gnomon_bus::contract::{target_status_payload, TargetStatus};
use std::time::{SystemTime, UNIX_EPOCH};

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
    pub fn new(target: &str, fencing_token: Option<u64>, state: TargetStatus) -> Self {
        Self::at(target, fencing_token, state, unix_now_ns())
    }

    fn at(
        target: &str,
        fencing_token: Option<u64>,
        state: TargetStatus,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_carry_the_contract_payload() {
        let report = TargetUpReport::at("r1", Some(7), TargetStatus::Down, 5);
        assert_eq!(
            report.payload(),
            &target_status_payload("r1", TargetStatus::Down, 5)
        );
        assert_eq!(report.fencing_token(), Some(7));
    }

    #[test]
    fn a_fresh_report_is_stamped_with_the_current_time() {
        let before = unix_now_ns();
        let report = TargetUpReport::new("r1", None, TargetStatus::Up);
        let json: serde_json::Value = serde_json::from_slice(report.payload()).unwrap();
        let stamped = json[0]["timestamp"].as_i64().unwrap();
        assert!(stamped >= before && stamped <= unix_now_ns());
        assert_eq!(report.target(), "r1");
    }
}
