//! Sharded exporters (`service-registration.shards: N`, gnomon extension): the cluster's
//! targets are split into N shards and each shard is served by one exporter, so a
//! cluster's series need not fit one process and one scrape.
//!
//! * A target's shard is [`shard_of`]: the 64-bit FNV-1a hash of its name's UTF-8 bytes,
//!   modulo N. FNV-1a is fixed by its definition (no seed, no platform or version
//!   dependence), so every exporter and every gnomon version agree on it; changing it would
//!   be a breaking change.
//! * Shard i is held through the lock `gnmic/<cluster>/prometheus-output/<i>` ([`lock_key`];
//!   N = 1 keeps gnmic's `gnmic/<cluster>/prometheus-output`). An exporter holds at most one
//!   shard; one holding none is a spare waiting on every shard's lock at once (the store's
//!   blocking acquire, woken by the key's change and at least every `retry-timer`), so it
//!   takes over a dead holder's shard as soon as the holder's session expires (session
//!   TTL + lock-delay).
//! * The holder registers its output with the tag `shard=<i>` ([`shard_tag`]), which `/sd`
//!   also exposes as `__meta_gnomon_shard`, and subscribes on NATS only to the subjects of
//!   its shard's targets (`<prefix>.<target>.>`, see [`ShardSubjects`]), so other shards'
//!   data never reaches it. The cluster's target list comes from the target store
//!   ([`follow_targets`]).
//! * Losing the lock (session expired, store unreachable past the TTL) stops the shard at
//!   once: the registration is dropped, the subscriptions closed and the output's series
//!   cleared, since the next holder serves them now.
//!
//! Cost: per spare, one blocking acquire per shard (a watch on the key, an attempt per
//! change or `retry-timer`); per holder, one NATS subscription per target of the shard per
//! input worker.

use crate::output::PrometheusOutput;
use crate::registration::{ErrorRetry, Registrar};
use futures::StreamExt;
use gnomon_bus::contract::{subject_for, SubjectScheme};
use gnomon_common::retry::Backoff;
use gnomon_coordination::{keys, Coordination, ServiceRegistration, TargetStore, WatchEvent};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Pause before waiting on the shard locks again after every wait ended without a lock.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// The prefix of the registration tag naming the shard (`shard=<i>`).
pub const SHARD_TAG_PREFIX: &str = "shard=";

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// The shard (0..shards) of `target`: FNV-1a 64 of its name modulo `shards`.
pub fn shard_of(target: &str, shards: u32) -> u32 {
    (fnv1a64(target.as_bytes()) % u64::from(shards.max(1))) as u32
}

/// The lock of shard `shard` of `shards`; one shard is gnmic's `use-lock` key itself.
pub fn lock_key(cluster: &str, shard: u32, shards: u32) -> String {
    let key = keys::prometheus_output(cluster);
    if shards <= 1 {
        key
    } else {
        format!("{key}/{shard}")
    }
}

/// The registration tag of shard `shard`.
pub fn shard_tag(shard: u32) -> String {
    format!("{SHARD_TAG_PREFIX}{shard}")
}

/// The shard a registration's tags name, if any.
pub fn shard_from_tags(tags: &[String]) -> Option<&str> {
    tags.iter().find_map(|t| t.strip_prefix(SHARD_TAG_PREFIX))
}

/// Which shard this exporter serves now; shared by the lock holder (writer), the inputs
/// (subscriptions, and the per-message check) and the exporter's accessors.
#[derive(Clone)]
pub struct ShardState {
    shards: u32,
    /// The held shard, or `u32::MAX` while a spare (read per message, so an atomic).
    held: Arc<AtomicU32>,
    changes: watch::Sender<Option<u32>>,
}

impl ShardState {
    pub fn new(shards: u32) -> Self {
        Self {
            shards: shards.max(1),
            held: Arc::new(AtomicU32::new(u32::MAX)),
            changes: watch::Sender::new(None),
        }
    }

    /// A state holding `shard` for good: an input fed directly (benchmarks, tests).
    pub fn fixed(shards: u32, shard: u32) -> Self {
        let state = Self::new(shards);
        state.set(Some(shard));
        state
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The shard held, `None` while a spare.
    pub fn held(&self) -> Option<u32> {
        Some(self.held.load(Ordering::Acquire)).filter(|&s| s != u32::MAX)
    }

    fn set(&self, shard: Option<u32>) {
        self.held
            .store(shard.unwrap_or(u32::MAX), Ordering::Release);
        self.changes.send_replace(shard);
    }

    /// Follows the held shard.
    pub fn subscribe(&self) -> watch::Receiver<Option<u32>> {
        self.changes.subscribe()
    }

    /// Whether `target`'s data belongs to the shard held now.
    pub fn accepts(&self, target: &str) -> bool {
        self.held() == Some(shard_of(target, self.shards))
    }
}

/// The NATS subjects of one target, from the input's `<prefix>.>` subject.
#[derive(Clone, Debug)]
pub struct ShardSubjects {
    prefix: String,
}

impl ShardSubjects {
    /// Reads the input's subject; a sharded input needs `<prefix>.>` (the collectors'
    /// `subject-prefix` form), since the per-target subjects are derived from it.
    pub fn from_input_subject(subject: &str) -> Result<Self, String> {
        let prefix = subject.strip_suffix(".>");
        match prefix {
            Some(prefix)
                if !prefix.is_empty()
                    && !prefix
                        .split('.')
                        .any(|t| t.is_empty() || t == "*" || t == ">") =>
            {
                Ok(Self {
                    prefix: prefix.to_string(),
                })
            }
            _ => Err(format!(
                "is {subject:?}; a sharded output needs `<prefix>.>` (collectors publishing with \
                 subject-prefix), from which the subjects of the shard's targets are derived"
            )),
        }
    }

    /// `<prefix>.<target>.>` with the target written as the collectors write it; `None`
    /// when the name would make a wildcard or an empty token.
    pub fn for_target(&self, target: &str) -> Option<String> {
        let base = subject_for(SubjectScheme::Prefixed(&self.prefix), target, "");
        let token = base.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        if token.is_empty() || token.contains(['*', '>', '.']) {
            return None;
        }
        Some(format!("{base}.>"))
    }
}

/// Keeps `targets` equal to the cluster's target names (the target store) until
/// `shutdown`: a full read, then the store's watch; read again after a watch ends.
pub async fn follow_targets(
    store: TargetStore,
    targets: watch::Sender<Arc<BTreeSet<String>>>,
    shutdown: CancellationToken,
) {
    crate::follow::until_cancelled(
        &shutdown,
        "following the cluster's targets failed; the shard keeps the targets it knows",
        |backoff| {
            let (store, targets) = (store.clone(), targets.clone());
            Box::pin(async move { follow_targets_once(&store, &targets, backoff).await })
        },
    )
    .await;
}

async fn follow_targets_once(
    store: &TargetStore,
    targets: &watch::Sender<Arc<BTreeSet<String>>>,
    backoff: &mut Backoff,
) -> Result<(), gnomon_coordination::CoordinationError> {
    let mut events = store.watch().await?;
    let listed: BTreeSet<String> = store.list().await?.into_keys().collect();
    tracing::debug!(targets = listed.len(), "cluster targets read");
    targets.send_replace(Arc::new(listed));
    backoff.reset();
    while let Some(event) = events.next().await {
        let Some(name) = store.name_of(event.key()) else {
            continue;
        };
        let name = name.to_string();
        targets.send_if_modified(|current| {
            let present = current.contains(&name);
            match &event {
                WatchEvent::Put { .. } if !present => {
                    Arc::make_mut(current).insert(name);
                    true
                }
                WatchEvent::Delete { .. } if present => {
                    Arc::make_mut(current).remove(&name);
                    true
                }
                _ => false,
            }
        });
    }
    Ok(())
}

/// Holds one shard at a time for a sharded output: takes a free shard lock, registers
/// with the shard's tag while holding it, and gives the shard up when the lock is lost.
pub struct ShardHolder {
    pub coordination: Arc<dyn Coordination>,
    pub cluster: String,
    /// The registration without the shard tag.
    pub service: ServiceRegistration,
    pub state: ShardState,
    /// True while registered (the output's flag).
    pub registered: Arc<AtomicBool>,
    /// The output whose series are dropped when the shard is given up.
    pub output: Arc<PrometheusOutput>,
}

impl ShardHolder {
    /// Runs until `shutdown`, then deregisters and releases the held lock.
    pub async fn run(self, shutdown: CancellationToken) {
        let span = tracing::info_span!("shard_holder", service = %self.service.name, id = %self.service.id, shards = self.state.shards());
        let held_gauge =
            metrics::gauge!(crate::stats::SHARD_HELD, "output" => self.output.name().to_string());
        held_gauge.set(-1.0);
        async move {
            loop {
                let Some((shard, guard)) = self.acquire_any(&shutdown).await else {
                    return;
                };
                tracing::info!(shard, key = %guard.key(), "shard lock acquired; serving the shard");
                self.state.set(Some(shard));
                held_gauge.set(f64::from(shard));
                let mut service = self.service.clone();
                service.tags.push(shard_tag(shard));
                let registrar = Registrar {
                    what: "Prometheus output shard",
                    coordination: self.coordination.clone(),
                    service,
                    use_lock: true,
                    lock_key: guard.key().to_string(),
                    registered: self.registered.clone(),
                };
                let lost = guard.lost_token();
                let stop = CancellationToken::new();
                let handle = tokio::select! {
                    _ = shutdown.cancelled() => None,
                    _ = lost.cancelled() => None,
                    handle = registrar.register(&stop) => handle,
                };
                if handle.is_some() {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = lost.cancelled() => {}
                    }
                }
                if lost.is_cancelled() {
                    tracing::warn!(shard, "shard lock lost; no longer serving the shard");
                }
                self.state.set(None);
                held_gauge.set(-1.0);
                let dropped = self.output.clear();
                tracing::info!(
                    shard,
                    series = dropped,
                    "shard given up; its series dropped"
                );
                if let Some(handle) = handle {
                    registrar.deregister(handle).await;
                }
                if shutdown.is_cancelled() {
                    if let Err(e) = guard.release().await {
                        tracing::warn!(shard, error = %e, "shard lock release failed");
                    }
                    return;
                }
                drop(guard);
            }
        }
        .instrument(span)
        .await
    }

    /// Waits on every shard's lock at once (the store's blocking acquire: it retries when
    /// the key changes, so a lock is taken as soon as it is freed or expires) until one is
    /// won (`Some`) or `shutdown` (`None`). A second lock won in the same instant is given
    /// back at once.
    async fn acquire_any(
        &self,
        shutdown: &CancellationToken,
    ) -> Option<(u32, gnomon_coordination::LockGuard)> {
        let shards = self.state.shards();
        let mut retry = ErrorRetry::new();
        loop {
            let cancel = shutdown.child_token();
            let mut attempts = tokio::task::JoinSet::new();
            for shard in 0..shards {
                let coordination = self.coordination.clone();
                let key = lock_key(&self.cluster, shard, shards);
                let value = self.service.id.clone();
                let cancel = cancel.clone();
                attempts.spawn(async move {
                    let result = coordination.acquire_blocking(&key, &value, &cancel).await;
                    (shard, result)
                });
            }
            let mut held = None;
            let mut failed = None;
            while let Some(joined) = attempts.join_next().await {
                let Ok((shard, result)) = joined else {
                    continue;
                };
                match result {
                    Ok(Some(guard)) if held.is_none() => {
                        held = Some((shard, guard));
                        cancel.cancel();
                    }
                    Ok(Some(extra)) => {
                        if let Err(e) = extra.release().await {
                            tracing::warn!(shard, error = %e, "releasing a second shard lock failed");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        failed = Some(e);
                        cancel.cancel();
                    }
                }
            }
            if let Some((shard, guard)) = held {
                if !shutdown.is_cancelled() {
                    return Some((shard, guard));
                }
                if let Err(e) = guard.release().await {
                    tracing::warn!(shard, error = %e, "shard lock release failed");
                }
                return None;
            }
            let delay = match failed {
                Some(e) => retry.failed(&e, "acquiring a shard lock failed"),
                None => RETRY_INTERVAL,
            };
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_its_published_vectors() {
        // Reference values of the FNV-1a 64-bit definition: the hash may never change.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("router1", 1), 0);
        assert_eq!(shard_of("a", 2), (0xaf63_dc4c_8601_ec8c_u64 % 2) as u32);
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[shard_of(&format!("device-{i}"), 4) as usize] += 1;
        }
        for count in counts {
            assert!((800..1200).contains(&count), "uneven: {counts:?}");
        }
        assert_eq!(shard_of("x", 0), 0, "0 shards is treated as 1");
    }

    #[test]
    fn lock_keys_keep_the_single_lock_for_one_shard() {
        assert_eq!(lock_key("c1", 0, 1), "gnmic/c1/prometheus-output");
        assert_eq!(lock_key("c1", 3, 4), "gnmic/c1/prometheus-output/3");
        assert_eq!(shard_tag(2), "shard=2");
        assert_eq!(shard_from_tags(&["a".into(), "shard=2".into()]), Some("2"));
        assert_eq!(shard_from_tags(&["a".into()]), None);
    }

    #[test]
    fn target_subjects_follow_the_collectors_scheme() {
        let subjects = ShardSubjects::from_input_subject("telemetry.>").unwrap();
        assert_eq!(
            subjects.for_target("10.0.0.1:57400").as_deref(),
            Some("telemetry.10-0-0-1:57400.>")
        );
        assert_eq!(
            subjects.for_target("my router").as_deref(),
            Some("telemetry.my_router.>")
        );
        assert_eq!(subjects.for_target("bad*"), None);
        assert_eq!(subjects.for_target(""), None);
        for bad in ["telemetry", "telemetry.*", ">", "a.*.>", "a..>", ".>"] {
            assert!(ShardSubjects::from_input_subject(bad).is_err(), "{bad}");
        }
        assert!(ShardSubjects::from_input_subject("a.b.>").is_ok());
    }

    #[test]
    fn state_accepts_only_the_held_shard() {
        let state = ShardState::new(2);
        let changes = state.subscribe();
        assert_eq!(state.held(), None);
        assert!(!state.accepts("r1"));
        let mine = shard_of("r1", 2);
        state.set(Some(mine));
        assert!(state.accepts("r1"));
        let other = (0..100)
            .map(|i| format!("t{i}"))
            .find(|t| shard_of(t, 2) != mine)
            .unwrap();
        assert!(!state.accepts(&other));
        assert_eq!(*changes.borrow(), Some(mine));
        state.set(None);
        assert!(!state.accepts("r1"));
    }
}
