//! Draining a member from outside: what `gnomon drain` does, as a Kubernetes `preStop` hook
//! before a rolling restart, so a member's targets are collected elsewhere before it stops.
//!
//! The leader does the moving, with the handshake it uses for every move (the new owner holds
//! the lock before the old one lets go: no sample missed); this side only finds the leader
//! through the store, asks it, and waits until the store shows the member holding no more
//! than what could not move. Waiting on the store rather than on the leader's answer is what
//! makes the hook safe to end: once it returns, stopping the member costs nothing.

use crate::member_client::{encode_segment, MemberCall, MemberCallError, MemberClient};
use gnomon_coordination::{keys, Coordination, CoordinationError};
use std::time::{Duration, Instant};

/// How often the store is read while waiting for the moves.
const POLL: Duration = Duration::from_millis(200);

/// Why a drain did not complete.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("reading the coordination store")]
    Store(#[source] CoordinationError),
    #[error("no leader holds {key}: nobody can move the targets (is a coordinator running?)")]
    NoLeader { key: String },
    #[error("the leader {leader:?} has no registered API in {service:?}")]
    LeaderUnreachable { leader: String, service: String },
    #[error("asking the leader {leader:?} to drain {member:?}")]
    Request {
        leader: String,
        member: String,
        #[source]
        source: MemberCallError,
    },
    #[error("{member:?} still holds {held} target(s) after {waited:?} (e.g. {examples})")]
    Timeout {
        member: String,
        held: usize,
        waited: Duration,
        examples: String,
    },
}

/// What a completed drain did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drained {
    /// Targets the member held when asked.
    pub held_before: usize,
    /// Moves the leader planned (fewer than `held_before` when no other member can take some).
    pub moves: usize,
    /// Targets it still holds (those nobody else could take).
    pub held_after: usize,
}

/// Asks the leader of `cluster` to move `member`'s targets away, then waits (at most
/// `timeout`) until the store shows the planned moves done.
pub async fn drain_member(
    coordination: &dyn Coordination,
    client: &MemberClient,
    cluster: &str,
    member: &str,
    timeout: Duration,
) -> Result<Drained, DrainError> {
    let started = Instant::now();
    let held_before = held_by(coordination, cluster, member).await?.len();
    let leader_key = keys::leader(cluster);
    let leader = coordination
        .holder(&leader_key)
        .await
        .map_err(DrainError::Store)?
        .ok_or(DrainError::NoLeader { key: leader_key })?;
    let leader_api = crate::members::registered(coordination, cluster)
        .await
        .map_err(DrainError::Store)?
        .into_iter()
        .find(|m| m.name == leader)
        .map(|m| m.api)
        .ok_or_else(|| DrainError::LeaderUnreachable {
            leader: leader.clone(),
            service: keys::api_service_name(cluster),
        })?;
    let reply = client
        .send(MemberCall {
            method: reqwest::Method::POST,
            url: format!(
                "{leader_api}/api/v1/cluster/members/{}/drain",
                encode_segment(member)
            ),
            body: None,
            assignment: false,
        })
        .await
        .map_err(|source| DrainError::Request {
            leader: leader.clone(),
            member: member.to_string(),
            source,
        })?;
    let moves = serde_json::from_slice::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| v["moves"].as_u64())
        .unwrap_or(0) as usize;
    let expected = held_before.saturating_sub(moves);
    loop {
        let held = held_by(coordination, cluster, member).await?;
        if held.len() <= expected {
            return Ok(Drained {
                held_before,
                moves,
                held_after: held.len(),
            });
        }
        if started.elapsed() >= timeout {
            return Err(DrainError::Timeout {
                member: member.to_string(),
                held: held.len(),
                waited: started.elapsed(),
                examples: held.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The targets whose lock `member` holds, per the store.
async fn held_by(
    coordination: &dyn Coordination,
    cluster: &str,
    member: &str,
) -> Result<Vec<String>, DrainError> {
    Ok(coordination
        .list_locks(&keys::targets_prefix(cluster))
        .await
        .map_err(DrainError::Store)?
        .into_iter()
        .filter(|(_, lock)| lock.holder == member)
        .map(|(key, _)| keys::target_name_from_key(&key).to_string())
        .collect())
}
