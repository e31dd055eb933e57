//! The collector as a cluster member: it registers its API for the leader to find, and for
//! every target the leader assigns it takes the target's lock before subscribing, stops the
//! subscription the moment the lock is lost, and releases every lock on shutdown so the
//! targets move at once.
//!
//! Health-driven failover ([`ClusterMember::give_up`] / [`ClusterMember::take_targets_again`],
//! driven by [`crate::output_failover`]): a member whose outputs all fail registers again
//! with [`keys::UNHEALTHY_TAG`], releases every target lock and refuses new claims, so the
//! leader places its targets on healthy members; once recovered it registers without the
//! tag and the leader's rebalance gives it targets again.

use crate::collector::CollectorHandle;
use crate::member_stats::StatsBoard;
use crate::target::Ownership;
use gnomon_coordination::member_stats::MemberStats;
use gnomon_coordination::{keys, Coordination, ServiceHandle, ServiceRegistration};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// TTL of the API registration's health check (gnmic uses 5 s).
pub const API_CHECK_TTL: Duration = Duration::from_secs(5);

/// The live registration and what it was made from, to register again with other tags.
struct Registered {
    handle: ServiceHandle,
    address: MemberAddress,
}

/// Why a claim was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("this member's outputs are failing: it has given its targets up (clustering.output-failure-timeout) and takes none until they recover")]
    OutputsFailing,
}

struct Claim {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

struct Inner {
    collector: CollectorHandle,
    coordination: Arc<dyn Coordination>,
    cluster: String,
    instance: String,
    claims: Mutex<HashMap<String, Claim>>,
    registration: tokio::sync::Mutex<Option<Registered>>,
    /// Set while the member has given its targets up (outputs failing): claims are refused.
    unhealthy: AtomicBool,
    /// The member's latest figures, for the API.
    stats: StatsBoard,
    /// Target locks held right now (gnmic's `gnmic_cluster_number_of_locked_targets`).
    held: AtomicUsize,
}

/// gnmic's per-instance count of the target locks it holds.
const LOCKED_TARGETS: &str = "gnmic_cluster_number_of_locked_targets";

impl Inner {
    fn count_held(&self, change: isize) {
        let held = if change >= 0 {
            self.held.fetch_add(change as usize, Ordering::AcqRel) + change as usize
        } else {
            self.held.fetch_sub(change.unsigned_abs(), Ordering::AcqRel) - change.unsigned_abs()
        };
        metrics::gauge!(LOCKED_TARGETS).set(held as f64);
    }
}

/// The clustered side of a collector.
#[derive(Clone)]
pub struct ClusterMember {
    inner: Arc<Inner>,
}

/// Where and how this member's API is reachable.
#[derive(Clone, Debug)]
pub struct MemberAddress {
    pub address: String,
    pub port: u16,
    /// `https` when the API serves TLS.
    pub protocol: &'static str,
    /// `clustering.tags`, appended after gnmic's three registration tags.
    pub tags: Vec<String>,
}

impl ClusterMember {
    pub fn new(
        collector: CollectorHandle,
        coordination: Arc<dyn Coordination>,
        cluster: &str,
        instance: &str,
    ) -> Self {
        metrics::describe_gauge!(
            LOCKED_TARGETS,
            "Number of target locks this instance holds."
        );
        metrics::gauge!(LOCKED_TARGETS).set(0.0);
        Self {
            inner: Arc::new(Inner {
                collector,
                coordination,
                cluster: cluster.to_string(),
                instance: instance.to_string(),
                claims: Mutex::new(HashMap::new()),
                registration: tokio::sync::Mutex::new(None),
                unhealthy: AtomicBool::new(false),
                stats: StatsBoard::new(instance),
                held: AtomicUsize::new(0),
            }),
        }
    }

    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    pub fn collector(&self) -> &CollectorHandle {
        &self.inner.collector
    }

    /// Registers the API as `<cluster>-gnmic-api` with gnmic's tags, in gnmic's order
    /// (plus [`keys::UNHEALTHY_TAG`] while the member has given its targets up).
    pub async fn register(&self, address: &MemberAddress) -> anyhow::Result<()> {
        let mut registration = self.inner.registration.lock().await;
        self.register_locked(&mut registration, address, self.is_unhealthy())
            .await
    }

    /// Registers `address` (as unhealthy or not), replacing a registration in `slot`.
    async fn register_locked(
        &self,
        slot: &mut Option<Registered>,
        address: &MemberAddress,
        unhealthy: bool,
    ) -> anyhow::Result<()> {
        if let Some(previous) = slot.take() {
            // Same ID: the old one goes first, else its removal would delete the new one.
            if let Err(e) = previous.handle.deregister().await {
                tracing::warn!(error = %e, "removing the previous API registration failed");
            }
        }
        let mut tags = vec![
            format!("cluster-name={}", self.inner.cluster),
            format!("instance-name={}", self.inner.instance),
            format!("__protocol={}", address.protocol),
        ];
        tags.extend(address.tags.iter().cloned());
        if unhealthy {
            tags.push(keys::UNHEALTHY_TAG.to_string());
        }
        let handle = self
            .inner
            .coordination
            .register_service(ServiceRegistration {
                name: keys::api_service_name(&self.inner.cluster),
                id: keys::api_service_id(&self.inner.instance),
                address: address.address.clone(),
                port: address.port,
                tags,
                ttl: API_CHECK_TTL,
            })
            .await?;
        *slot = Some(Registered {
            handle,
            address: address.clone(),
        });
        Ok(())
    }

    /// Registers again as unhealthy or not, when registered.
    async fn reregister(&self, unhealthy: bool) -> anyhow::Result<()> {
        let mut registration = self.inner.registration.lock().await;
        let Some(address) = registration.as_ref().map(|r| r.address.clone()) else {
            return Ok(());
        };
        self.register_locked(&mut registration, &address, unhealthy)
            .await
    }

    /// Whether the member has given its targets up (its outputs fail).
    pub fn is_unhealthy(&self) -> bool {
        self.inner.unhealthy.load(Ordering::Acquire)
    }

    /// The latest figures (refreshed by [`crate::output_failover::run`]).
    pub fn stats(&self) -> MemberStats {
        self.inner.stats.get()
    }

    pub(crate) fn stats_board(&self) -> &StatsBoard {
        &self.inner.stats
    }

    /// Target locks held right now.
    pub fn held(&self) -> usize {
        self.inner.held.load(Ordering::Acquire)
    }

    /// Every output fails: refuse new claims, register as unhealthy (the leader stops placing
    /// here), then stop every target and release its lock, so the leader moves them to
    /// healthy members at once. Returns how many targets were given up.
    #[tracing::instrument(name = "give_up_targets", skip(self), fields(instance = %self.inner.instance))]
    pub async fn give_up(&self) -> usize {
        {
            let _claims = self.claims();
            self.inner.unhealthy.store(true, Ordering::Release);
        }
        if let Err(e) = self.reregister(true).await {
            tracing::warn!(error = %e, "registering as unhealthy failed; releasing the targets anyway");
        }
        let released = self.release_all().await;
        tracing::warn!(
            released,
            "every output is failing: targets given up for healthy members"
        );
        released
    }

    /// Outputs recovered: register as healthy again, so the leader places targets here
    /// (at its next rebalance).
    #[tracing::instrument(name = "take_targets_again", skip(self), fields(instance = %self.inner.instance))]
    pub async fn take_targets_again(&self) -> anyhow::Result<()> {
        // Claims are accepted before the registration says healthy: the leader may act on
        // the new registration before this call returns.
        self.inner.unhealthy.store(false, Ordering::Release);
        if let Err(e) = self.reregister(false).await {
            self.inner.unhealthy.store(true, Ordering::Release);
            return Err(e);
        }
        tracing::info!("outputs healthy again: registered as healthy, taking targets");
        Ok(())
    }

    /// Stops every claim and releases its lock; returns how many there were.
    async fn release_all(&self) -> usize {
        let claims: Vec<Claim> = self.claims().drain().map(|(_, c)| c).collect();
        let count = claims.len();
        for claim in &claims {
            claim.cancel.cancel();
        }
        for claim in claims {
            let _ = claim.task.await;
        }
        count
    }

    /// Claims target `name` (its config must be known to the collector): waits for the
    /// lock in the background, then collects with the lock's fencing token until the lock
    /// is lost or the claim is dropped. A new claim replaces an earlier one. Refused while
    /// the member has given its targets up.
    pub fn claim(&self, name: &str) -> Result<(), ClaimError> {
        // Checked under the claims lock, which `give_up` takes to set the flag: a claim is
        // either refused or inserted before `give_up` drains the claims, never left behind.
        let mut claims = self.claims();
        if self.is_unhealthy() {
            return Err(ClaimError::OutputsFailing);
        }
        let cancel = CancellationToken::new();
        let inner = self.inner.clone();
        let target = name.to_string();
        let token = cancel.clone();
        let span =
            tracing::info_span!("target_claim", target = %target, instance = %inner.instance);
        let task = tokio::spawn(
            async move { hold_and_collect(inner, target, token).await }.instrument(span),
        );
        let previous = claims.insert(name.to_string(), Claim { cancel, task });
        if let Some(previous) = previous {
            previous.cancel.cancel();
        }
        Ok(())
    }

    /// Drops the claim on `name`: stops collecting and releases the lock at once.
    /// Returns whether there was a claim.
    pub async fn unclaim(&self, name: &str) -> bool {
        let claim = self.claims().remove(name);
        match claim {
            Some(claim) => {
                claim.cancel.cancel();
                let _ = claim.task.await;
                true
            }
            None => false,
        }
    }

    /// Targets claimed (held or waited for).
    pub fn claimed(&self) -> Vec<String> {
        let mut names: Vec<String> = self.claims().keys().cloned().collect();
        names.sort();
        names
    }

    /// Graceful exit: release every lock and deregister, so the leader moves the targets at once.
    pub async fn shutdown(&self) {
        self.release_all().await;
        if let Some(registered) = self.inner.registration.lock().await.take() {
            if let Err(e) = registered.handle.deregister().await {
                tracing::warn!(error = %e, "deregistering the API failed");
            }
        }
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, Claim>> {
        self.inner
            .claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

async fn hold_and_collect(inner: Arc<Inner>, target: String, cancel: CancellationToken) {
    let key = keys::target(&inner.cluster, &target);
    let guard = match inner
        .coordination
        .acquire_blocking(&key, &inner.instance, &cancel)
        .await
    {
        Ok(Some(guard)) => guard,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take the target lock");
            return;
        }
    };
    inner.count_held(1);
    held_until_released(&inner, &target, guard, &cancel).await;
    inner.count_held(-1);
}

/// Collects `target` under `guard` until the lock is lost or the claim is cancelled.
async fn held_until_released(
    inner: &Inner,
    target: &str,
    guard: gnomon_coordination::LockGuard,
    cancel: &CancellationToken,
) {
    let ownership = Ownership {
        fencing_token: guard.fencing_token(),
        lost: guard.lost_token(),
    };
    if let Err(e) = inner.collector.start_target(target, Some(ownership)) {
        tracing::warn!(error = %e, "cannot start the target; giving its lock back");
        let _ = guard.release().await;
        return;
    }
    tokio::select! {
        _ = guard.lost() => {
            tracing::warn!(fencing_token = guard.fencing_token(), "target lock lost: stopping the subscription");
            inner.collector.stop_target(target).await;
        }
        _ = cancel.cancelled() => {
            inner.collector.stop_target(target).await;
            if let Err(e) = guard.release().await {
                tracing::warn!(error = %e, "releasing the target lock failed");
            }
        }
    }
}
