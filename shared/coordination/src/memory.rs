//! In-process backend. A [`MemoryStore`] is shared by several [`MemoryCoordination`] instances
//! (cluster members in one process); each instance has a TTL session renewed in the background,
//! exactly like the network backends, so expiry, lock-delay and loss signals behave the same.
//! [`MemoryCoordination::disconnect`] simulates a crash or lost connectivity (renewals stop,
//! calls fail; the session expires after its TTL).

use super::{
    acquire_once, acquire_until, check_key, keys, kv_services, Attempt, Coordination,
    CoordinationError, LockAttempts, LockGuard, LockRelease, LockerConfig, Result,
    ServiceDeregister, ServiceHandle, ServiceInstance, ServiceRegistration, ServiceWatch,
    WatchEvent, WatchEvents,
};
use crate::LockInfo;
use async_trait::async_trait;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const REAP_INTERVAL: Duration = Duration::from_millis(25);
const WATCH_BUFFER: usize = 256;

struct Entry {
    value: String,
    session: Option<u64>,
    create_revision: u64,
}

struct SessionRecord {
    ttl: Duration,
    delay: Duration,
    deadline: Instant,
    lost: CancellationToken,
}

#[derive(Default)]
struct StoreState {
    revision: u64,
    next_session: u64,
    entries: BTreeMap<String, Entry>,
    sessions: HashMap<u64, SessionRecord>,
    lock_delays: HashMap<String, Instant>,
}

struct StoreInner {
    state: Mutex<StoreState>,
    revision: watch::Sender<u64>,
    reaper_started: AtomicBool,
}

/// An in-process KV store with sessions; clone it to share between instances.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<StoreInner>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(StoreInner {
                state: Mutex::new(StoreState::default()),
                revision: watch::channel(0).0,
                reaper_started: AtomicBool::new(false),
            }),
        }
    }

    /// The process-wide store called `name` (what `type: memory` with `address: name` uses).
    pub fn named(name: &str) -> Self {
        static STORES: OnceLock<Mutex<HashMap<String, MemoryStore>>> = OnceLock::new();
        let stores = STORES.get_or_init(Default::default);
        let mut stores = stores.lock().unwrap_or_else(|e| e.into_inner());
        stores.entry(name.to_string()).or_default().clone()
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut StoreState) -> T) -> T {
        let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = state.revision;
        let out = f(&mut state);
        if state.revision != before {
            self.inner.revision.send_replace(state.revision);
        }
        out
    }

    fn ensure_reaper(&self) {
        if self.inner.reaper_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak: Weak<StoreInner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REAP_INTERVAL).await;
                let Some(inner) = weak.upgrade() else { break };
                let store = MemoryStore { inner };
                let now = Instant::now();
                store.with_state(|state| {
                    let expired: Vec<u64> = state
                        .sessions
                        .iter()
                        .filter(|(_, s)| s.deadline <= now)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in expired {
                        tracing::debug!(session = id, "memory session expired");
                        end_session(state, id, true);
                    }
                    state.lock_delays.retain(|_, until| *until > now);
                });
            }
        });
    }

    fn create_session(&self, ttl: Duration, delay: Duration) -> (u64, CancellationToken) {
        self.ensure_reaper();
        self.with_state(|state| {
            state.next_session += 1;
            let id = state.next_session;
            let lost = CancellationToken::new();
            state.sessions.insert(
                id,
                SessionRecord {
                    ttl,
                    delay,
                    deadline: Instant::now() + ttl,
                    lost: lost.clone(),
                },
            );
            (id, lost)
        })
    }

    fn renew(&self, session: u64) -> bool {
        self.with_state(|state| match state.sessions.get_mut(&session) {
            Some(record) => {
                record.deadline = Instant::now() + record.ttl;
                true
            }
            None => false,
        })
    }

    fn snapshot(&self, prefix: &str) -> BTreeMap<String, String> {
        self.with_state(|state| {
            state
                .entries
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, e)| (k.clone(), e.value.clone()))
                .collect()
        })
    }

    fn current_revision(&self) -> u64 {
        *self.inner.revision.borrow()
    }
}

/// Ends a session: deletes its keys (Behavior=delete), optionally starting their lock-delay.
fn end_session(state: &mut StoreState, id: u64, apply_delay: bool) {
    let Some(record) = state.sessions.remove(&id) else {
        return;
    };
    let held: Vec<String> = state
        .entries
        .iter()
        .filter(|(_, e)| e.session == Some(id))
        .map(|(k, _)| k.clone())
        .collect();
    let until = Instant::now() + record.delay;
    for key in held {
        state.entries.remove(&key);
        if apply_delay && !record.delay.is_zero() {
            state.lock_delays.insert(key, until);
        }
    }
    state.revision += 1;
    record.lost.cancel();
}

struct MemSession {
    id: u64,
    lost: CancellationToken,
}

struct MemInner {
    store: MemoryStore,
    instance: String,
    ttl: Duration,
    delay: Duration,
    retry: Duration,
    renew_period: Duration,
    session: tokio::sync::Mutex<Option<Arc<MemSession>>>,
    shutdown: CancellationToken,
    disconnected: AtomicBool,
}

/// One cluster member's view of a [`MemoryStore`].
#[derive(Clone)]
pub struct MemoryCoordination {
    inner: Arc<MemInner>,
}

impl MemoryCoordination {
    /// A member of a fresh private store, with default locker settings.
    pub fn new(instance: &str) -> Self {
        Self::with_store(
            MemoryStore::new(),
            &LockerConfig::new(super::LockerType::Memory),
            instance,
        )
    }

    /// A member of `store` using `cfg`'s TTL, delay, retry-timer and renew-period.
    pub fn with_store(store: MemoryStore, cfg: &LockerConfig, instance: &str) -> Self {
        Self {
            inner: Arc::new(MemInner {
                store,
                instance: instance.to_string(),
                ttl: cfg.session_ttl,
                delay: cfg.effective_delay(),
                retry: cfg.retry_timer,
                renew_period: cfg.effective_renew_period(3),
                session: tokio::sync::Mutex::new(None),
                shutdown: CancellationToken::new(),
                disconnected: AtomicBool::new(false),
            }),
        }
    }

    /// The shared store.
    pub fn store(&self) -> &MemoryStore {
        &self.inner.store
    }

    /// Simulates a SIGKILL or network loss of this member: renewals stop and every call
    /// fails; the store expires the session after its TTL (deleting its locks and services,
    /// applying lock-delay) and the member's guards then report the loss.
    pub fn disconnect(&self) {
        self.inner.disconnected.store(true, Ordering::SeqCst);
    }

    fn reachable(&self) -> Result<()> {
        if self.inner.disconnected.load(Ordering::SeqCst) {
            Err(CoordinationError::unavailable(format!(
                "memory store unreachable from {}",
                self.inner.instance
            )))
        } else {
            Ok(())
        }
    }

    async fn session(&self) -> Result<Arc<MemSession>> {
        self.reachable()?;
        let mut slot = self.inner.session.lock().await;
        if let Some(session) = slot.as_ref() {
            if !session.lost.is_cancelled() {
                return Ok(session.clone());
            }
        }
        let (id, lost) = self
            .inner
            .store
            .create_session(self.inner.ttl, self.inner.delay);
        let session = Arc::new(MemSession {
            id,
            lost: lost.clone(),
        });
        *slot = Some(session.clone());
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = me.inner.shutdown.cancelled() => break,
                    _ = lost.cancelled() => break,
                    _ = tokio::time::sleep(me.inner.renew_period) => {}
                }
                if me.inner.disconnected.load(Ordering::SeqCst) {
                    continue;
                }
                if !me.inner.store.renew(id) {
                    lost.cancel();
                    break;
                }
            }
        });
        tracing::debug!(instance = %self.inner.instance, session = id, "memory session created");
        Ok(session)
    }
}

#[async_trait]
impl LockRelease for MemoryCoordination {
    async fn release_lock(&self, key: &str, fencing_token: u64) -> Result<()> {
        self.reachable()?;
        self.inner.store.with_state(|state| {
            if state
                .entries
                .get(key)
                .is_some_and(|e| e.create_revision == fencing_token)
            {
                state.entries.remove(key);
                state.revision += 1;
            }
        });
        Ok(())
    }
}

#[async_trait]
impl LockAttempts for MemoryCoordination {
    async fn attempt(&self, key: &str, value: &str) -> Result<Attempt> {
        check_key(key)?;
        let session = self.session().await?;
        let now = Instant::now();
        let outcome = self.inner.store.with_state(|state| {
            if !state.sessions.contains_key(&session.id) {
                return Err(CoordinationError::session_lost("memory session expired"));
            }
            let delayed = state.lock_delays.get(key).is_some_and(|until| *until > now);
            if state.entries.contains_key(key) || delayed {
                return Ok(Err(state.revision));
            }
            state.revision += 1;
            let revision = state.revision;
            state.entries.insert(
                key.to_string(),
                Entry {
                    value: value.to_string(),
                    session: Some(session.id),
                    create_revision: revision,
                },
            );
            Ok(Ok(revision))
        })?;
        Ok(match outcome {
            Ok(token) => Attempt::Acquired(LockGuard::new(
                key,
                value,
                token,
                session.lost.child_token(),
                Arc::new(self.clone()),
            )),
            Err(since) => Attempt::Busy { since },
        })
    }

    async fn wait_change(&self, _key: &str, since: u64, max_wait: Duration) {
        let mut rx = self.inner.store.inner.revision.subscribe();
        let _ = tokio::time::timeout(max_wait, rx.wait_for(|rev| *rev > since)).await;
    }

    fn retry_timer(&self) -> Duration {
        self.inner.retry
    }

    fn instance(&self) -> &str {
        &self.inner.instance
    }
}

#[async_trait]
impl Coordination for MemoryCoordination {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn acquire(&self, key: &str, value: &str) -> Result<Option<LockGuard>> {
        acquire_once(self, key, value).await
    }

    async fn acquire_blocking(
        &self,
        key: &str,
        value: &str,
        cancel: &CancellationToken,
    ) -> Result<Option<LockGuard>> {
        acquire_until(self, key, value, cancel).await
    }

    async fn holder(&self, key: &str) -> Result<Option<String>> {
        self.reachable()?;
        Ok(self.inner.store.with_state(|state| {
            state
                .entries
                .get(key)
                .filter(|e| e.session.is_some())
                .map(|e| e.value.clone())
        }))
    }

    async fn list(&self, prefix: &str) -> Result<BTreeMap<String, String>> {
        self.reachable()?;
        Ok(self.inner.store.with_state(|state| {
            state
                .entries
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .filter(|(_, e)| e.session.is_some())
                .map(|(k, e)| (k.clone(), e.value.clone()))
                .collect()
        }))
    }

    async fn list_locks(&self, prefix: &str) -> Result<BTreeMap<String, LockInfo>> {
        self.reachable()?;
        Ok(self.inner.store.with_state(|state| {
            state
                .entries
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .filter(|(_, e)| e.session.is_some())
                .map(|(k, e)| {
                    (
                        k.clone(),
                        LockInfo {
                            holder: e.value.clone(),
                            fencing_token: e.create_revision,
                        },
                    )
                })
                .collect()
        }))
    }

    async fn watch_prefix(&self, prefix: &str) -> Result<WatchEvents> {
        self.reachable()?;
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let store = self.inner.store.clone();
        let shutdown = self.inner.shutdown.clone();
        let prefix = prefix.to_string();
        let mut revisions = store.inner.revision.subscribe();
        tokio::spawn(async move {
            let mut known: BTreeMap<String, String> = BTreeMap::new();
            loop {
                revisions.borrow_and_update();
                let current = store.snapshot(&prefix);
                for event in diff(&known, &current) {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                known = current;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    changed = revisions.changed() => if changed.is_err() { return },
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }

    async fn register_service(&self, registration: ServiceRegistration) -> Result<ServiceHandle> {
        let session = self.session().await?;
        let key = keys::service(&registration.name, &registration.id);
        let value = kv_services::encode(&registration);
        let put = |session_id: u64| {
            self.inner.store.with_state(|state| {
                state.revision += 1;
                let revision = state.revision;
                state.entries.insert(
                    key.clone(),
                    Entry {
                        value: value.clone(),
                        session: Some(session_id),
                        create_revision: revision,
                    },
                );
            })
        };
        put(session.id);
        let keeper = CancellationToken::new();
        let me = self.clone();
        let stop = keeper.clone();
        let (key_bg, value_bg) = (key.clone(), value.clone());
        tokio::spawn(async move {
            let mut session = session;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = me.inner.shutdown.cancelled() => break,
                    _ = session.lost.cancelled() => {}
                }
                // The session died: register again under a new one once reachable.
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(me.inner.retry) => {}
                    }
                    if let Ok(next) = me.session().await {
                        session = next;
                        break;
                    }
                }
                me.inner.store.with_state(|state| {
                    state.revision += 1;
                    let revision = state.revision;
                    state.entries.insert(
                        key_bg.clone(),
                        Entry {
                            value: value_bg.clone(),
                            session: Some(session.id),
                            create_revision: revision,
                        },
                    );
                });
            }
        });
        let deregister = Arc::new(MemoryDeregister {
            coordination: self.clone(),
            key,
        });
        Ok(ServiceHandle::new(&registration.id, keeper, deregister))
    }

    async fn services(&self, name: &str, tags: &[String]) -> Result<Vec<ServiceInstance>> {
        self.reachable()?;
        Ok(kv_services::healthy(
            &self.inner.store.snapshot(&keys::services_prefix(name)),
            tags,
        ))
    }

    async fn watch_services(&self, name: &str, tags: &[String]) -> Result<ServiceWatch> {
        let prefix = keys::services_prefix(name);
        let initial = self.get_prefix(&prefix).await?;
        let events = self.watch_prefix(&prefix).await?;
        Ok(kv_services::watch_from_events(
            initial,
            events,
            tags.to_vec(),
        ))
    }

    async fn get(&self, key: &str) -> Result<Option<String>> {
        self.reachable()?;
        Ok(self
            .inner
            .store
            .with_state(|state| state.entries.get(key).map(|e| e.value.clone())))
    }

    async fn get_prefix(&self, prefix: &str) -> Result<BTreeMap<String, String>> {
        self.reachable()?;
        Ok(self.inner.store.snapshot(prefix))
    }

    async fn put(&self, key: &str, value: &str) -> Result<()> {
        check_key(key)?;
        self.reachable()?;
        self.inner.store.with_state(|state| {
            state.revision += 1;
            let revision = state.revision;
            match state.entries.get_mut(key) {
                Some(entry) => entry.value = value.to_string(),
                None => {
                    state.entries.insert(
                        key.to_string(),
                        Entry {
                            value: value.to_string(),
                            session: None,
                            create_revision: revision,
                        },
                    );
                }
            }
        });
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.reachable()?;
        self.inner.store.with_state(|state| {
            if state.entries.remove(key).is_some() {
                state.revision += 1;
            }
        });
        Ok(())
    }

    async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let session = self.inner.session.lock().await.take();
        if let Some(session) = session {
            if !self.inner.disconnected.load(Ordering::SeqCst) {
                self.inner
                    .store
                    .with_state(|state| end_session(state, session.id, true));
            }
        }
    }
}

struct MemoryDeregister {
    coordination: MemoryCoordination,
    key: String,
}

#[async_trait]
impl ServiceDeregister for MemoryDeregister {
    async fn deregister_service(&self, _id: &str) -> Result<()> {
        self.coordination.delete(&self.key).await
    }
}

/// Events turning `old` into `new`.
pub(crate) fn diff(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<WatchEvent> {
    let mut events = Vec::new();
    for key in old.keys().filter(|k| !new.contains_key(*k)) {
        events.push(WatchEvent::Delete { key: key.clone() });
    }
    for (key, value) in new {
        if old.get(key) != Some(value) {
            events.push(WatchEvent::Put {
                key: key.clone(),
                value: value.clone(),
            });
        }
    }
    events
}

impl MemoryStore {
    /// Revision counter (grows with every write); for tests.
    pub fn revision(&self) -> u64 {
        self.current_revision()
    }
}
