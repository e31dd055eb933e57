//! The coordinator's settings: gnmic's `clustering` keys (without gnmic's raised floors, so
//! short timers work) plus gnomon's rebalance threshold.

use crate::member_client::MemberClientOptions;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct CoordinatorSettings {
    pub cluster_name: String,
    pub instance_name: String,
    /// Full refresh of the member list even without watch events.
    pub services_watch_timer: Duration,
    /// Full reconcile of every target even without watch events (the safety net).
    pub targets_watch_timer: Duration,
    /// How long a member has to take a target's lock after being assigned it.
    pub target_assignment_timeout: Duration,
    /// Pause after winning the election before placing targets, so members can register.
    pub leader_wait_timer: Duration,
    /// Rebalance automatically when a member joins and the most and least loaded members
    /// differ by at least this many targets; `None` disables it.
    pub rebalance_threshold: Option<usize>,
    /// Limits of the calls to members' REST APIs.
    pub member_client: MemberClientOptions,
    /// The target loader the leader runs, if one is configured.
    pub discovery: Option<crate::discovery::Discovery>,
}

impl CoordinatorSettings {
    /// gnmic's defaults for `cluster` and `instance`.
    pub fn new(cluster: &str, instance: &str) -> Self {
        Self {
            cluster_name: cluster.to_string(),
            instance_name: instance.to_string(),
            services_watch_timer: Duration::from_secs(60),
            targets_watch_timer: Duration::from_secs(20),
            target_assignment_timeout: Duration::from_secs(10),
            leader_wait_timer: Duration::from_secs(5),
            rebalance_threshold: Some(2),
            member_client: MemberClientOptions::default(),
            discovery: None,
        }
    }
}
