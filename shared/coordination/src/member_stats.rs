//! What a member reports about itself to the coordinator's `GET /api/v1/cluster`: targets it
//! holds, updates per second in and out, and its outputs' health. Served by each collector
//! at [`MEMBER_STATS_PATH`] and read by the coordinator over the member API it already
//! calls (see the coordinator's `member_client`), so the figures cost no store writes.

use serde::{Deserialize, Serialize};

/// The member API route serving [`MemberStats`].
pub const MEMBER_STATS_PATH: &str = "/api/v1/cluster/member/stats";

/// Where a member stands in health-driven failover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputHealth {
    /// At least one output delivers; the member takes targets.
    Healthy,
    /// Every output fails, for less than `output-failure-timeout` so far: targets kept.
    Failing,
    /// Every output failed for `output-failure-timeout`: targets given up, none taken.
    Unhealthy,
    /// Outputs deliver again; the member takes targets once they have for
    /// `output-failure-timeout` (hysteresis).
    Recovering,
}

/// One output's health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputStatus {
    pub name: String,
    pub healthy: bool,
}

/// A member's own figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MemberStats {
    /// Instance name.
    pub name: String,
    /// Target locks it holds.
    pub targets_held: usize,
    /// Updates (leaf values) received from targets per second, over the last few seconds.
    pub updates_in_per_second: f64,
    /// Updates its outputs delivered per second (summed over outputs), same window.
    pub updates_out_per_second: f64,
    pub output_health: OutputHealth,
    pub outputs: Vec<OutputStatus>,
}
