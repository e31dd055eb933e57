//! gnmic's assignment handshake, as the leader runs it for one target: push the config to
//! the member, start the target there, wait until the member holds the target's lock; after
//! `target-assignment-timeout`, unassign. A move starts the new owner first and stops the old
//! one, so the lock changes hands at once. The push and the start go together, batched with
//! other handshakes' for the same member ([`MemberStarts`]). The member client's concurrency
//! limit bounds the calls; waiting for a lock costs a watch receiver and holds nothing.

use crate::member_starts::{MemberStarts, StartError};
use bytes::Bytes;
use std::time::Duration;
use tokio::sync::watch;

/// Why an assignment failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AssignmentError {
    #[error("the member refused")]
    Refused(#[source] StartError),
    #[error("no lock within {0:?}")]
    NoLock(Duration),
    #[error("the member left the cluster")]
    MemberLeft,
}

/// Outcome of one assignment handshake.
pub(crate) enum Assignment {
    Placed,
    /// The member refused or did not take the lock in time.
    Failed {
        member: String,
        reason: AssignmentError,
    },
}

/// The calls of one assignment.
pub(crate) struct Handshake {
    /// Starts go batched through it; stops through its client.
    pub starts: MemberStarts,
    /// The target's lock holder as the leader sees it.
    pub owner: watch::Receiver<Option<String>>,
    pub timeout: Duration,
}

impl Handshake {
    /// gnmic's handshake: push the config, start the target, wait for the member's lock;
    /// after the assignment timeout, unassign.
    pub async fn assign(
        mut self,
        api: &str,
        target: &str,
        member: &str,
        config: Bytes,
    ) -> Assignment {
        if let Err(e) = self.start(api, target, config).await {
            return Assignment::Failed {
                member: member.into(),
                reason: AssignmentError::Refused(e),
            };
        }
        if self.wait_for_owner(member).await {
            return Assignment::Placed;
        }
        if let Err(e) = self.starts.client().stop_target(api, target).await {
            tracing::warn!(error = %e, "unassigning after the timeout failed");
        }
        Assignment::Failed {
            member: member.into(),
            reason: AssignmentError::NoLock(self.timeout),
        }
    }

    /// Starts the target on the new member before stopping it on the old one.
    pub async fn hand_over(
        mut self,
        from_api: &str,
        to_api: &str,
        target: &str,
        to: &str,
        config: Bytes,
    ) -> Assignment {
        if let Err(e) = self.start(to_api, target, config).await {
            return Assignment::Failed {
                member: to.into(),
                reason: AssignmentError::Refused(e),
            };
        }
        if let Err(e) = self.starts.client().stop_target(from_api, target).await {
            tracing::warn!(error = %e, "stopping the old owner failed; waiting for its lock to expire");
        }
        if self.wait_for_owner(to).await {
            return Assignment::Placed;
        }
        let _ = self.starts.client().stop_target(to_api, target).await;
        Assignment::Failed {
            member: to.into(),
            reason: AssignmentError::NoLock(self.timeout),
        }
    }

    async fn start(&self, api: &str, target: &str, config: Bytes) -> Result<(), StartError> {
        self.starts.start(api, target, config).await
    }

    async fn wait_for_owner(&mut self, member: &str) -> bool {
        let owned = |holder: &Option<String>| holder.as_deref() == Some(member);
        tokio::time::timeout(self.timeout, self.owner.wait_for(owned))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}
