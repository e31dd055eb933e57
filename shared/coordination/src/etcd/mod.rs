//! etcd v3 backend, through gnomon's own client (`gnomon-etcd`).
//!
//! * [`client`]: the connection (timeouts, TLS, credentials) and what its errors mean.
//! * [`session`]: one lease per instance, kept alive; the holder-side loss signal.
//! * [`lock`]: locks with fencing tokens (txn on `create_revision`), and the lock-delay
//!   emulation under `__gnomon/` (etcd has none).
//! * [`watch`]: prefix watches that resync (list, diff, watch again) after any break.
//! * [`services`]: service records under the session's lease, registered again after a loss.
//!
//! Each module only uses the ones listed before it; this one puts them together behind
//! [`Coordination`].

/// Puts per txn in [`Coordination::create_many`]: etcd's default `--max-txn-ops`.
const TXN_PUTS: usize = 128;

/// Txns [`Coordination::create_many`] tries per chunk while its keys change under it.
const CREATE_ATTEMPTS: usize = 8;

mod client;
mod lock;
mod services;
mod session;
mod watch;

use self::client::{text, Etcd};
use self::lock::Locks;
use self::session::Sessions;
use crate::LockInfo;
use crate::{
    acquire_once, acquire_until, check_key, keys, kv_services, Attempt, Coordination,
    CoordinationError, LockAttempts, LockGuard, LockerConfig, Result, ServiceHandle,
    ServiceInstance, ServiceRegistration, ServiceWatch, WatchEvents,
};
use async_trait::async_trait;
use gnomon_etcd::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Keys gnomon keeps for itself (lock-delay emulation); callers may not use them.
pub use crate::keys::INTERNAL_PREFIX;

struct Inner {
    etcd: Etcd,
    sessions: Arc<Sessions>,
    locks: Locks,
    instance: String,
    retry: Duration,
}

/// The etcd backend; cheap to clone.
#[derive(Clone)]
pub struct EtcdCoordination {
    inner: Arc<Inner>,
}

impl EtcdCoordination {
    /// Prepares the connection to the configured endpoints. With `username` / `password` it
    /// logs in, so a wrong password (or no etcd answering within `request-timeout`) fails here;
    /// without, the first call connects.
    pub async fn connect(cfg: &LockerConfig, instance: &str) -> Result<Self> {
        let etcd = Etcd::connect(cfg).await?;
        let sessions = Arc::new(Sessions::new(etcd.clone(), cfg, instance));
        let locks = Locks::new(etcd.clone(), sessions.clone(), cfg.effective_delay());
        Ok(Self {
            inner: Arc::new(Inner {
                etcd,
                sessions,
                locks,
                instance: instance.to_string(),
                retry: cfg.retry_timer,
            }),
        })
    }

    /// The lease currently used as this instance's session, if any.
    pub async fn current_lease(&self) -> Option<i64> {
        self.inner.sessions.lease().await
    }

    fn etcd(&self) -> &Etcd {
        &self.inner.etcd
    }

    /// [`Coordination::create_many`] for at most [`TXN_PUTS`] entries. Each failed txn
    /// removes the keys it found; one that found none (they were deleted meanwhile) is
    /// retried, a bounded number of times.
    async fn create_chunk(&self, chunk: &[(String, String)]) -> Result<usize> {
        let mut missing: Vec<&(String, String)> = chunk.iter().collect();
        for attempt in 0..=CREATE_ATTEMPTS {
            if missing.is_empty() {
                return Ok(0);
            }
            if attempt == CREATE_ATTEMPTS {
                break;
            }
            let txn =
                Txn::new()
                    .when(missing.iter().map(|(key, _)| {
                        Compare::create_revision(key.as_str(), CompareOp::Equal, 0)
                    }))
                    .and_then(
                        missing
                            .iter()
                            .map(|(key, value)| TxnOp::put(key.as_str(), value.as_str(), None)),
                    )
                    .or_else(missing.iter().map(|(key, _)| {
                        TxnOp::get(key.as_str(), Some(GetOptions::new().with_keys_only()))
                    }));
            let answer = self.etcd().call(self.etcd().client().txn(txn)).await?;
            if answer.succeeded {
                return Ok(missing.len());
            }
            let existing = client::found_keys(answer.responses);
            missing.retain(|(key, _)| !existing.contains(key.as_bytes()));
        }
        Err(CoordinationError::backend(format!(
            "writing {} absent keys: they kept appearing and disappearing over {CREATE_ATTEMPTS} attempts",
            missing.len()
        )))
    }
}

#[async_trait]
impl LockAttempts for EtcdCoordination {
    async fn attempt(&self, key: &str, value: &str) -> Result<Attempt> {
        check_key(key)?;
        self.inner.locks.attempt(key, value).await
    }

    async fn wait_change(&self, key: &str, since: u64, max_wait: Duration) {
        self.inner.locks.wait_change(key, since, max_wait).await
    }

    fn retry_timer(&self) -> Duration {
        self.inner.retry
    }

    fn instance(&self) -> &str {
        &self.inner.instance
    }
}

#[async_trait]
impl Coordination for EtcdCoordination {
    fn backend(&self) -> &'static str {
        "etcd"
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
        let answer = self
            .etcd()
            .call(self.etcd().client().get(key, None))
            .await?;
        Ok(answer
            .kvs
            .first()
            .filter(|kv| kv.lease != 0)
            .map(|kv| text(&kv.value)))
    }

    async fn list(&self, prefix: &str) -> Result<BTreeMap<String, String>> {
        let (entries, _) = self.etcd().range(prefix).await?;
        Ok(entries
            .into_iter()
            .filter(|(_, (_, lease))| *lease != 0)
            .map(|(k, (v, _))| (k, v))
            .collect())
    }

    async fn list_locks(&self, prefix: &str) -> Result<BTreeMap<String, LockInfo>> {
        self.etcd().range_locks(prefix).await
    }

    async fn watch_prefix(&self, prefix: &str) -> Result<WatchEvents> {
        watch::watch_prefix(self.etcd(), prefix, self.inner.retry).await
    }

    #[tracing::instrument(skip(self, registration), fields(backend = "etcd", name = %registration.name, id = %registration.id))]
    async fn register_service(&self, registration: ServiceRegistration) -> Result<ServiceHandle> {
        services::register(
            self.etcd(),
            &self.inner.sessions,
            self.inner.retry,
            &registration,
        )
        .await
    }

    async fn services(&self, name: &str, tags: &[String]) -> Result<Vec<ServiceInstance>> {
        Ok(kv_services::healthy(
            &self.get_prefix(&keys::services_prefix(name)).await?,
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
        let answer = self
            .etcd()
            .call(self.etcd().client().get(key, None))
            .await?;
        Ok(answer.kvs.first().map(|kv| text(&kv.value)))
    }

    async fn get_prefix(&self, prefix: &str) -> Result<BTreeMap<String, String>> {
        let (entries, _) = self.etcd().range(prefix).await?;
        Ok(entries.into_iter().map(|(k, (v, _))| (k, v)).collect())
    }

    async fn put(&self, key: &str, value: &str) -> Result<()> {
        check_key(key)?;
        self.etcd()
            .call(self.etcd().client().put(key, value, None))
            .await
            .map(|_| ())
    }

    /// Per [`TXN_PUTS`] entries (etcd refuses larger txns by default), one txn that writes
    /// them if none exists; when some do, the failed txn names them (keys only) and the next
    /// writes the rest. A racing seeder's chunk thus costs one read-only txn, no writes.
    async fn create_many(&self, entries: &[(String, String)]) -> Result<usize> {
        for (key, _) in entries {
            check_key(key)?;
        }
        let mut written = 0;
        for chunk in entries.chunks(TXN_PUTS) {
            written += self.create_chunk(chunk).await?;
        }
        Ok(written)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.etcd()
            .call(self.etcd().client().delete(key, None))
            .await
            .map(|_| ())
    }

    async fn shutdown(&self) {
        self.etcd().shutdown.cancel();
        self.inner.sessions.end().await;
    }
}
