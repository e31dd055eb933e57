//! Consul backend.
//!
//! * Session: one per instance, `Behavior=delete`, `TTL=session-ttl`, `LockDelay=delay` (always
//!   sent explicitly, as a string), renewed every `renew-period` (default ttl/2, retried every
//!   second after errors). The holder considers it lost on a renew 404, or at
//!   `send time of the last successful renew + TTL` (Consul never invalidates before the TTL;
//!   it actually waits 2×TTL), then destroys it (best effort) and creates a new one on demand.
//! * Acquire: `PUT kv/<key>?acquire=<session>`; `false` = held or inside lock-delay; a 500
//!   `invalid session` starts a new session and retries once. Fencing token: the key's
//!   `ModifyIndex` read right after the acquire while our session still holds it.
//! * Release: `DELETE kv/<key>?cas=<ModifyIndex>` after checking our session holds it —
//!   a delete is not an invalidation, so no lock-delay applies, and the CAS never removes a
//!   later holder's key.
//! * Keys are escaped per segment (`keys::escape_key`) so any target name is a valid key on
//!   Consul ≥ 1.21.5; every key returned is unescaped.
//! * Services: agent registration with one TTL check `service:<id>` (initially passing), marked
//!   passing every ttl/2, registered again if the agent forgot it; discovery through
//!   `health/service/<name>?passing&tag=…` blocking queries.
//! * Errors: a 403 (ACL token refused) is [`CoordinationError::CredentialRefused`] and is never
//!   repeated by the client; calls return it, and the background loops (renewal, watches, TTL
//!   checks) log it at error level once per interval and back off (see `retry_loop`).

mod client;

use crate::LockInfo;
pub(crate) use client::{BlockingIndex, RateLimiter};
use client::{ConsulClient, KvWrite, MAX_BLOCKING_WAIT};

use super::keys::{escape_key, unescape_key};
use super::memory::diff;
use super::retry_loop::RetryLoop;
use super::{
    acquire_once, acquire_until, check_key, Attempt, Coordination, CoordinationError, LockAttempts,
    LockGuard, LockRelease, LockerConfig, Result, ServiceDeregister, ServiceHandle,
    ServiceInstance, ServiceRegistration, ServiceWatch, WatchEvents,
};
use async_trait::async_trait;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

const WATCH_BUFFER: usize = 256;

struct ConsulSession {
    id: String,
    lost: CancellationToken,
}

struct ConsulInner {
    client: ConsulClient,
    instance: String,
    ttl: Duration,
    delay: Duration,
    retry: Duration,
    renew_period: Duration,
    session: tokio::sync::Mutex<Option<Arc<ConsulSession>>>,
    /// Keys this instance holds, with their guards' loss tokens (Consul lets a session
    /// re-acquire its own key; a second guard for the same key must not exist).
    held: Mutex<HashMap<String, CancellationToken>>,
    /// Service IDs registered by this instance, deregistered at shutdown.
    services: Mutex<HashSet<String>>,
    shutdown: CancellationToken,
}

/// The Consul backend; cheap to clone.
#[derive(Clone)]
pub struct ConsulCoordination {
    inner: Arc<ConsulInner>,
}

impl ConsulCoordination {
    /// Builds the client; the first session is created on first use.
    pub async fn connect(cfg: &LockerConfig, instance: &str) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(ConsulInner {
                client: ConsulClient::new(cfg)?,
                instance: instance.to_string(),
                ttl: cfg.session_ttl,
                delay: cfg.effective_delay(),
                retry: cfg.retry_timer,
                renew_period: cfg.effective_renew_period(2),
                session: tokio::sync::Mutex::new(None),
                held: Mutex::new(HashMap::new()),
                services: Mutex::new(HashSet::new()),
                shutdown: CancellationToken::new(),
            }),
        })
    }

    fn client(&self) -> &ConsulClient {
        &self.inner.client
    }

    /// [`LockAttempts::attempt`] once the key is reserved for it.
    async fn attempt_reserved(&self, key: &str, value: &str) -> Result<Attempt> {
        let escaped = escape_key(key);
        for _ in 0..2 {
            let session = self.session().await?;
            match self
                .client()
                .kv_put(&escaped, value, KvWrite::Acquire(&session.id))
                .await
            {
                Err(error @ CoordinationError::SessionLost { .. }) => {
                    tracing::warn!(%error, "consul session invalid; creating a new one");
                    session.lost.cancel();
                    continue;
                }
                Err(e) => return Err(e),
                Ok(false) => return Ok(Attempt::Busy { since: 0 }),
                Ok(true) => {}
            }
            let lost = session.lost.child_token();
            self.held().insert(key.to_string(), lost.clone());
            let release = Arc::new(ConsulRelease {
                coordination: self.clone(),
                session: session.id.clone(),
            });
            return match self.client().kv_get(&escaped, None).await {
                Ok((Some(entry), _)) if entry.session.as_deref() == Some(session.id.as_str()) => {
                    Ok(Attempt::Acquired(LockGuard::new(
                        key,
                        value,
                        entry.modify_index,
                        lost,
                        release,
                    )))
                }
                Ok((_, index)) => {
                    self.held().remove(key);
                    Ok(Attempt::Busy { since: index })
                }
                Err(e) => {
                    // We hold it but cannot read the token: give it back rather than hold blind.
                    let _ = release.release_lock(key, 0).await;
                    Err(e)
                }
            };
        }
        Ok(Attempt::Busy { since: 0 })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.inner.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn session(&self) -> Result<Arc<ConsulSession>> {
        let mut slot = self.inner.session.lock().await;
        if let Some(session) = slot.as_ref() {
            if !session.lost.is_cancelled() {
                return Ok(session.clone());
            }
        }
        if self.inner.shutdown.is_cancelled() {
            return Err(CoordinationError::unavailable("consul backend shut down"));
        }
        let sent = Instant::now();
        let id = self
            .client()
            .session_create(
                &format!("gnomon-{}", self.inner.instance),
                self.inner.ttl,
                self.inner.delay,
            )
            .await?;
        tracing::info!(instance = %self.inner.instance, session = %id, "consul session created");
        let session = Arc::new(ConsulSession {
            id: id.clone(),
            lost: CancellationToken::new(),
        });
        let span = tracing::info_span!("consul_session", session = %id);
        tokio::spawn(
            renew_session(self.clone(), session.clone(), sent + self.inner.ttl).instrument(span),
        );
        *slot = Some(session.clone());
        Ok(session)
    }

    async fn list_entries(&self, prefix: &str) -> Result<Vec<client::KvEntry>> {
        Ok(self.client().kv_list(&escape_key(prefix), None).await?.0)
    }

    /// Keeps a TTL-checked registration passing; registers again when the agent forgot it.
    /// A call in flight is finished, never dropped, and nothing is sent once `stop` fired;
    /// `_done` closes when the loop has returned, so a deregistration that waits for it
    /// cannot be followed by this loop's re-registration of the old definition (which would
    /// replace a newer registration of the same ID, e.g. one with other tags).
    async fn keep_service(
        &self,
        registration: ServiceRegistration,
        stop: CancellationToken,
        _done: tokio::sync::oneshot::Sender<()>,
    ) {
        let check_id = ConsulClient::check_id(&registration.id);
        let period = (registration.ttl / 2).max(Duration::from_millis(100));
        let mut retry = RetryLoop::new("consul service check", period);
        let mut wait = period;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let result = match self.client().check_pass(&check_id).await {
                Ok(true) => Ok(()),
                Ok(false) if stop.is_cancelled() => return,
                Ok(false) => {
                    tracing::warn!(id = %registration.id, "consul forgot the service check; registering again");
                    self.client().service_register(&registration).await
                }
                Err(e) => Err(e),
            };
            wait = match result {
                Ok(()) => {
                    retry.succeeded();
                    period
                }
                Err(e) => retry.failed(&e),
            };
        }
    }
}

/// Renews the session; fires `session.lost` on a 404 or when the holder-side deadline passes.
async fn renew_session(me: ConsulCoordination, session: Arc<ConsulSession>, mut deadline: Instant) {
    let mut wait = me.inner.renew_period;
    // After a failure, renew again sooner (within a second), even while the token is refused:
    // the session is lost at its deadline anyway.
    let soon = me.inner.renew_period.min(Duration::from_secs(1));
    let mut retry = RetryLoop::new("consul session renewal", soon).refusals_wait_at_most(soon);
    let reason = loop {
        tokio::select! {
            _ = me.inner.shutdown.cancelled() => {
                session.lost.cancel();
                let _ = me.client().session_destroy(&session.id).await;
                return;
            }
            _ = tokio::time::sleep_until(deadline.into()) => break "no renewal succeeded within the TTL",
            _ = tokio::time::sleep(wait) => {}
        }
        let sent = Instant::now();
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => break "no renewal succeeded within the TTL",
            result = me.client().session_renew(&session.id) => match result {
                Ok(Some(server_ttl)) => {
                    let ttl = if server_ttl.is_zero() { me.inner.ttl } else { server_ttl };
                    deadline = sent + ttl;
                    wait = if ttl > me.inner.ttl { ttl / 2 } else { me.inner.renew_period };
                    retry.succeeded();
                }
                Ok(None) => break "consul invalidated the session",
                Err(e) => wait = retry.failed(&e),
            }
        }
    };
    session.lost.cancel();
    tracing::warn!(instance = %me.inner.instance, session = %session.id, reason, "consul session lost; every lock of this instance is lost");
    // Destroy the session as soon as Consul answers, so its locks are free at once after an
    // outage instead of after another TTL (destroying a gone session succeeds too).
    let mut retry = RetryLoop::new("destroying the lost consul session", me.inner.retry);
    loop {
        let wait = match me.client().session_destroy(&session.id).await {
            Ok(()) => break,
            Err(error @ CoordinationError::Unavailable { .. }) => retry.failed(&error),
            Err(error) => {
                tracing::warn!(session = %session.id, %error, "cannot destroy the lost session; Consul invalidates it after its TTL");
                break;
            }
        };
        tokio::select! {
            _ = me.inner.shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

struct ConsulRelease {
    coordination: ConsulCoordination,
    session: String,
}

#[async_trait]
impl LockRelease for ConsulRelease {
    async fn release_lock(&self, key: &str, _fencing_token: u64) -> Result<()> {
        let me = &self.coordination;
        let escaped = escape_key(key);
        let result = async {
            for _ in 0..3 {
                let (entry, _) = me.client().kv_get(&escaped, None).await?;
                match entry {
                    Some(entry) if entry.session.as_deref() == Some(self.session.as_str()) => {
                        if me
                            .client()
                            .kv_delete(&escaped, Some(entry.modify_index))
                            .await?
                        {
                            return Ok(());
                        }
                    }
                    _ => return Ok(()),
                }
            }
            Err(CoordinationError::backend(format!(
                "consul release of {key:?}: the key kept changing"
            )))
        }
        .await;
        // Forget the key unless a newer guard (whose token is live) took it since.
        let mut held = me.held();
        if held.get(key).is_some_and(|lost| lost.is_cancelled()) {
            held.remove(key);
        }
        result
    }
}

/// A key this instance is attempting: other attempts at it are refused meanwhile. Dropped
/// without [`Reservation::keep`] (the attempt failed, or was cancelled), it frees the key.
struct Reservation<'a> {
    coordination: &'a ConsulCoordination,
    key: &'a str,
    kept: bool,
}

impl<'a> Reservation<'a> {
    /// `None` when a live guard of this instance holds `key` or an attempt at it is running.
    fn take(coordination: &'a ConsulCoordination, key: &'a str) -> Option<Self> {
        let mut held = coordination.held();
        if held.get(key).is_some_and(|lost| !lost.is_cancelled()) {
            return None;
        }
        held.insert(key.to_string(), CancellationToken::new());
        Some(Self {
            coordination,
            key,
            kept: false,
        })
    }

    /// The attempt took the lock: its guard's entry stays.
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.coordination.held().remove(self.key);
        }
    }
}

#[async_trait]
impl LockAttempts for ConsulCoordination {
    async fn attempt(&self, key: &str, value: &str) -> Result<Attempt> {
        check_key(key)?;
        // Consul grants a session a key it already holds again: one attempt per key at a
        // time, and none while a live guard of this instance holds it.
        let Some(reservation) = Reservation::take(self, key) else {
            return Ok(Attempt::Busy { since: 0 });
        };
        let outcome = self.attempt_reserved(key, value).await;
        if matches!(outcome, Ok(Attempt::Acquired(_))) {
            reservation.keep();
        }
        outcome
    }

    async fn wait_change(&self, key: &str, since: u64, max_wait: Duration) {
        let escaped = escape_key(key);
        let wait = async {
            let mut index = since;
            if index == 0 {
                match self.client().kv_get(&escaped, None).await {
                    Ok((_, i)) => index = i.max(1),
                    Err(_) => return std::future::pending::<()>().await,
                }
            }
            if self
                .client()
                .kv_get(&escaped, Some((index, max_wait)))
                .await
                .is_err()
            {
                std::future::pending::<()>().await
            }
        };
        let _ = tokio::time::timeout(max_wait, wait).await;
    }

    fn retry_timer(&self) -> Duration {
        self.inner.retry
    }

    fn instance(&self) -> &str {
        &self.inner.instance
    }
}

struct ConsulDeregister {
    coordination: ConsulCoordination,
    /// Closes when the registration's keep-alive loop has returned.
    keeper_done: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

#[async_trait]
impl ServiceDeregister for ConsulDeregister {
    async fn deregister_service(&self, id: &str) -> Result<()> {
        // The handle stopped the keep-alive; its call in flight (at most one, bounded by the
        // client's timeout) lands before the deregistration does.
        if let Some(done) = self.keeper_done.lock().await.take() {
            let _closed = done.await;
        }
        self.coordination
            .inner
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.coordination.client().service_deregister(id).await
    }
}

#[async_trait]
impl Coordination for ConsulCoordination {
    fn backend(&self) -> &'static str {
        "consul"
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
        let (entry, _) = self.client().kv_get(&escape_key(key), None).await?;
        Ok(entry.filter(|e| e.session.is_some()).map(|e| e.value))
    }

    async fn list(&self, prefix: &str) -> Result<BTreeMap<String, String>> {
        Ok(self
            .list_entries(prefix)
            .await?
            .into_iter()
            .filter(|e| e.session.is_some())
            .map(|e| (unescape_key(&e.key), e.value))
            .collect())
    }

    async fn list_locks(&self, prefix: &str) -> Result<BTreeMap<String, LockInfo>> {
        Ok(self
            .list_entries(prefix)
            .await?
            .into_iter()
            .filter(|e| e.session.is_some())
            .map(|e| {
                (
                    unescape_key(&e.key),
                    LockInfo {
                        holder: e.value,
                        fencing_token: e.modify_index,
                    },
                )
            })
            .collect())
    }

    async fn watch_prefix(&self, prefix: &str) -> Result<WatchEvents> {
        let escaped = escape_key(prefix);
        let (first, first_index) = self.client().kv_list(&escaped, None).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let me = self.clone();
        tokio::spawn(async move {
            let to_map = |entries: Vec<client::KvEntry>| -> BTreeMap<String, String> {
                entries
                    .into_iter()
                    .map(|e| (unescape_key(&e.key), e.value))
                    .collect()
            };
            let mut known = BTreeMap::new();
            let mut index = BlockingIndex::default();
            let mut limiter = RateLimiter::new(2, Duration::from_millis(200));
            let mut retry = RetryLoop::new("consul watch", me.inner.retry);
            let mut pending = Some((first, first_index));
            loop {
                let (entries, returned) = match pending.take() {
                    Some(answer) => answer,
                    None => {
                        limiter.take().await;
                        let block = Some((index.current(), MAX_BLOCKING_WAIT));
                        let answer = tokio::select! {
                            _ = me.inner.shutdown.cancelled() => return,
                            _ = tx.closed() => return,
                            answer = me.client().kv_list(&escaped, block) => answer,
                        };
                        match answer {
                            Ok(answer) => {
                                retry.succeeded();
                                answer
                            }
                            Err(e) => {
                                let wait = retry.failed(&e);
                                tokio::select! {
                                    _ = me.inner.shutdown.cancelled() => return,
                                    _ = tx.closed() => return,
                                    _ = tokio::time::sleep(wait) => continue,
                                }
                            }
                        }
                    }
                };
                if !index.advance(returned) {
                    continue;
                }
                let current = to_map(entries);
                for event in diff(&known, &current) {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                known = current;
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }

    #[tracing::instrument(skip(self, registration), fields(backend = "consul", name = %registration.name, id = %registration.id))]
    async fn register_service(&self, registration: ServiceRegistration) -> Result<ServiceHandle> {
        if registration.ttl.is_zero() {
            return Err(CoordinationError::config(format!(
                "service {:?} needs a positive check TTL",
                registration.id
            )));
        }
        self.client().service_register(&registration).await?;
        self.inner
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(registration.id.clone());
        let keeper = CancellationToken::new();
        let me = self.clone();
        let stop = keeper.clone();
        let id = registration.id.clone();
        let (done, keeper_done) = tokio::sync::oneshot::channel();
        tokio::spawn(async move { me.keep_service(registration, stop, done).await });
        Ok(ServiceHandle::new(
            &id,
            keeper,
            Arc::new(ConsulDeregister {
                coordination: self.clone(),
                keeper_done: tokio::sync::Mutex::new(Some(keeper_done)),
            }),
        ))
    }

    async fn services(&self, name: &str, tags: &[String]) -> Result<Vec<ServiceInstance>> {
        Ok(self.client().health_service(name, tags, None).await?.0)
    }

    async fn watch_services(&self, name: &str, tags: &[String]) -> Result<ServiceWatch> {
        let (first, first_index) = self.client().health_service(name, tags, None).await?;
        let (tx, rx) = tokio::sync::watch::channel(first);
        let me = self.clone();
        let (name, tags) = (name.to_string(), tags.to_vec());
        tokio::spawn(async move {
            let mut index = BlockingIndex::default();
            index.advance(first_index);
            let mut limiter = RateLimiter::new(2, Duration::from_millis(500));
            let mut retry = RetryLoop::new("consul service watch", me.inner.retry);
            loop {
                limiter.take().await;
                let block = Some((index.current(), MAX_BLOCKING_WAIT));
                let answer = tokio::select! {
                    _ = me.inner.shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    answer = me.client().health_service(&name, &tags, block) => answer,
                };
                match answer {
                    Ok((list, returned)) => {
                        retry.succeeded();
                        if index.advance(returned) {
                            tx.send_if_modified(|current| {
                                let changed = *current != list;
                                if changed {
                                    *current = list;
                                }
                                changed
                            });
                        }
                    }
                    Err(e) => {
                        let wait = retry.failed(&e);
                        tokio::select! {
                            _ = me.inner.shutdown.cancelled() => return,
                            _ = tx.closed() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
        });
        Ok(tokio_stream::wrappers::WatchStream::new(rx).boxed())
    }

    async fn get(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .client()
            .kv_get(&escape_key(key), None)
            .await?
            .0
            .map(|e| e.value))
    }

    async fn get_prefix(&self, prefix: &str) -> Result<BTreeMap<String, String>> {
        Ok(self
            .list_entries(prefix)
            .await?
            .into_iter()
            .map(|e| (unescape_key(&e.key), e.value))
            .collect())
    }

    async fn put(&self, key: &str, value: &str) -> Result<()> {
        check_key(key)?;
        if self
            .client()
            .kv_put(&escape_key(key), value, KvWrite::Plain)
            .await?
        {
            Ok(())
        } else {
            Err(CoordinationError::backend(format!(
                "consul refused to write {key:?}"
            )))
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client()
            .kv_delete(&escape_key(key), None)
            .await
            .map(|_| ())
    }

    async fn shutdown(&self) {
        let services: Vec<String> = self
            .inner
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for id in services {
            let _ = self.client().service_deregister(&id).await;
        }
        self.inner.shutdown.cancel();
        let session = self.inner.session.lock().await.take();
        if let Some(session) = session {
            session.lost.cancel();
            let _ = self.client().session_destroy(&session.id).await;
        }
    }
}
