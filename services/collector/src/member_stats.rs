//! The member's latest own figures ([`MemberStats`]): written by the failover loop
//! ([`crate::output_failover`]), read by the member API for the coordinator's
//! `GET /api/v1/cluster`.

use gnomon_coordination::member_stats::{MemberStats, OutputHealth};
use std::sync::{Arc, Mutex, PoisonError};

/// The latest figures, shared with the API.
#[derive(Clone)]
pub struct StatsBoard {
    latest: Arc<Mutex<MemberStats>>,
}

impl StatsBoard {
    pub fn new(name: &str) -> Self {
        Self {
            latest: Arc::new(Mutex::new(MemberStats {
                name: name.to_string(),
                targets_held: 0,
                updates_in_per_second: 0.0,
                updates_out_per_second: 0.0,
                output_health: OutputHealth::Healthy,
                outputs: Vec::new(),
            })),
        }
    }

    pub fn get(&self) -> MemberStats {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, stats: MemberStats) {
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = stats;
    }
}
