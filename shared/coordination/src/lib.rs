//! Cluster coordination: locks with fencing tokens, service registration and discovery,
//! prefix watches and plain KV, behind one interface with etcd, Consul, Kubernetes and
//! in-process backends.
//!
//! Semantics shared by every backend:
//! * Each [`Coordination`] instance owns one **session** (etcd lease, Consul session, memory
//!   session) renewed in the background. Every lock it holds and every service it registers
//!   lives as long as that session: when the process dies, they vanish after the session TTL.
//! * [`LockGuard::lost`] fires as soon as the holder *knows* its session may be gone: when the
//!   store says so, or when `last successful renewal (send time) + TTL` has passed. The store
//!   never expires a session earlier than that, so the old holder stops believing before anyone
//!   else can acquire.
//! * **Fencing token:** a number that strictly grows with every new holder of a key.
//!   etcd: the revision of the acquiring txn (= the key's create_revision, cluster-wide
//!   monotonic; keys taken in one txn share it). Consul: the key's `ModifyIndex` read right after a successful acquire while
//!   the session still holds it (the Raft index is global and monotonic; `LockIndex` is not
//!   used because it restarts at 1 when a `Behavior=delete` key is deleted). Kubernetes: the
//!   Lease collection's `resourceVersion` (etcd's revision) read by the acquiring LIST and
//!   written into the Lease by the acquiring write (`leaseTransitions` is not used: it
//!   restarts at 0 when a released Lease is created again; see [`k8s`]). Memory: a
//!   store-wide revision counter.
//! * **Lock-delay** (`delay`): after a holder's session dies (expiry, invalidation, crash) its
//!   keys cannot be acquired for `delay`; a graceful [`LockGuard::release`] frees the key at once.
//!   Consul enforces it server-side; etcd emulates it (see [`etcd`]); Kubernetes contenders
//!   wait `renewTime + leaseDuration + delay` (see [`k8s`]); memory enforces it exactly.

pub mod assignments;
pub mod config_store;
pub mod consul;
pub mod etcd;
pub mod k8s;
pub mod keys;
mod kv_services;
pub mod member_stats;
pub mod memory;
mod retry_loop;
pub mod target_store;

pub use gnomon_common::duration;

pub use config_store::SubscriptionStore;
pub use gnomon_config::locker::{LockerConfig, LockerType, TlsConfig};
pub use memory::{MemoryCoordination, MemoryStore};
pub use target_store::TargetStore;

/// HTTP header the leader sets on its assignment calls to members, so a member does not
/// write a config the leader pushes back into the cluster's target store.
pub const ASSIGNMENT_HEADER: &str = "gnomon-assignment";
/// Re-exported: `acquire_blocking` takes one.
pub use tokio_util::sync::CancellationToken;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A boxed error cause, kept as a [`CoordinationError`]'s `source`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the coordination layer.
///
/// Every message is complete on its own — the store, the call, why it failed and, for
/// refusals and configuration problems, what to check — because callers log `%error`.
/// [`source`](std::error::Error::source) keeps the cause (a `gnomon_etcd::Error`, a
/// `reqwest::Error`, a timeout, ...) for callers that inspect it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinationError {
    /// The configuration cannot work: a bad address, an unreadable TLS file, a TTL the store
    /// refuses. Not transient.
    #[error("invalid coordination configuration: {reason}")]
    Config {
        reason: String,
        #[source]
        source: Option<BoxError>,
    },
    /// A key the backends cannot store. Not transient.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    /// The store did not answer (in time), or answered that it cannot serve now. Transient.
    #[error("coordination store unavailable: {reason}")]
    Unavailable {
        reason: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The store answered with an error none of the other variants covers. Treated as
    /// transient.
    #[error("coordination store error: {reason}")]
    Backend {
        reason: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The session is gone (expired or invalidated); the next call opens a new one. Transient.
    #[error("coordination session lost: {reason}")]
    SessionLost {
        reason: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The store refused the credential: a wrong etcd password, an etcd user whose roles do
    /// not cover the keys, a Consul ACL token that is unknown or lacks rights. **Not
    /// transient**: repeating the call cannot succeed until an operator fixes `credential`,
    /// so nothing retries it in a tight loop.
    #[error("coordination store refused the credential: {reason}; check {credential}")]
    CredentialRefused {
        credential: Credential,
        reason: String,
        #[source]
        source: Option<BoxError>,
    },
}

/// A credential a store refused, named as it is configured: what an operator must check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// etcd's user name and password (`clustering.locker.username` / `password`): wrong, or
    /// missing while etcd has authentication on.
    EtcdPassword,
    /// The roles granted to the etcd user (`user`, when one is configured): it logged in but
    /// may not touch the keys.
    EtcdRole { user: Option<String> },
    /// The Consul ACL token: `clustering.locker.token`, or an output's
    /// `service-registration.token` when the exporter registers itself.
    ConsulToken,
    /// HTTP basic auth in front of Consul: `username` / `password` of the same blocks.
    ConsulBasicAuth,
    /// The Kubernetes credentials (401): the pod's ServiceAccount token, or the user of the
    /// kubeconfig (`clustering.locker.kubeconfig`, `KUBECONFIG`).
    KubernetesToken,
    /// What the Kubernetes API refused (403): RBAC does not let the ServiceAccount `verb`
    /// `resource` in `namespace`.
    KubernetesRbac {
        namespace: String,
        verb: String,
        resource: String,
    },
}

impl std::fmt::Display for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const PREFIXES: &str = "it needs read-write on the gnmic/ and gnmic-services/ \
                                prefixes, and on __gnomon/ with a lock-delay";
        match self {
            Credential::EtcdPassword => f.write_str(
                "clustering.locker.username and password (the etcd user and its password)",
            ),
            Credential::EtcdRole { user: Some(user) } => write!(
                f,
                "the roles granted to etcd user {:?} (clustering.locker.username): {PREFIXES}",
                gnomon_common::log::Escaped(user)
            ),
            Credential::EtcdRole { user: None } => write!(
                f,
                "the roles of the etcd user (clustering.locker.username): {PREFIXES}"
            ),
            Credential::ConsulToken => f.write_str(
                "the Consul ACL token: clustering.locker.token, or the output's \
                 service-registration.token when the exporter registers itself (it needs write \
                 access to the keys, sessions and services gnomon uses)",
            ),
            Credential::ConsulBasicAuth => f.write_str(
                "the username and password sent to Consul as HTTP basic auth: \
                 clustering.locker.username / password, or the output's service-registration \
                 username / password",
            ),
            Credential::KubernetesToken => f.write_str(
                "the Kubernetes credentials: the pod's ServiceAccount token, or the user of the \
                 kubeconfig (clustering.locker.kubeconfig, KUBECONFIG); it is unknown or expired",
            ),
            Credential::KubernetesRbac {
                namespace,
                verb,
                resource,
            } => write!(
                f,
                "the RBAC Role bound to gnomon's ServiceAccount in namespace {namespace:?}: it may \
                 not {verb} {resource}; grant get, list, watch, create, update and delete on \
                 leases (coordination.k8s.io) and get, list and watch on endpointslices \
                 (discovery.k8s.io) in that namespace (see compose/k8s/rbac.yaml)"
            ),
        }
    }
}

impl CoordinationError {
    pub(crate) fn config(reason: impl Into<String>) -> Self {
        CoordinationError::Config {
            reason: reason.into(),
            source: None,
        }
    }

    pub(crate) fn unavailable(reason: impl Into<String>) -> Self {
        CoordinationError::Unavailable {
            reason: reason.into(),
            source: None,
        }
    }

    pub(crate) fn backend(reason: impl Into<String>) -> Self {
        CoordinationError::Backend {
            reason: reason.into(),
            source: None,
        }
    }

    pub(crate) fn session_lost(reason: impl Into<String>) -> Self {
        CoordinationError::SessionLost {
            reason: reason.into(),
            source: None,
        }
    }

    pub(crate) fn refused(credential: Credential, reason: impl Into<String>) -> Self {
        CoordinationError::CredentialRefused {
            credential,
            reason: reason.into(),
            source: None,
        }
    }

    /// The same error with `cause` as its [`source`](std::error::Error::source).
    pub(crate) fn caused_by(mut self, cause: impl Into<BoxError>) -> Self {
        match &mut self {
            CoordinationError::Config { source, .. }
            | CoordinationError::Unavailable { source, .. }
            | CoordinationError::Backend { source, .. }
            | CoordinationError::SessionLost { source, .. }
            | CoordinationError::CredentialRefused { source, .. } => *source = Some(cause.into()),
            CoordinationError::InvalidKey { .. } => {}
        }
        self
    }

    /// Whether retrying the same call later can succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CoordinationError::Unavailable { .. }
                | CoordinationError::Backend { .. }
                | CoordinationError::SessionLost { .. }
        )
    }

    /// The credential to check, when the store refused it.
    pub fn credential(&self) -> Option<&Credential> {
        match self {
            CoordinationError::CredentialRefused { credential, .. } => Some(credential),
            _ => None,
        }
    }
}

pub type Result<T, E = CoordinationError> = std::result::Result<T, E>;

/// A change under a watched prefix. Keys are the caller's (unescaped) keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put { key: String, value: String },
    Delete { key: String },
}

impl WatchEvent {
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put { key, .. } | WatchEvent::Delete { key } => key,
        }
    }
}

/// Stream of [`WatchEvent`]s. It starts with a `Put` for every key present when the watch
/// began, then delivers changes in order. After a reconnect or compaction it re-lists the
/// prefix and emits the differences, so consumers always converge on the store's content.
/// It ends only when the backend shuts down.
pub type WatchEvents = BoxStream<'static, WatchEvent>;

/// Stream of the full current list of healthy instances, first the current list, then a new
/// list whenever it may have changed (a slow consumer only sees the latest list).
pub type ServiceWatch = BoxStream<'static, Vec<ServiceInstance>>;

/// A held lock as readers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// The holder's value (its instance name).
    pub holder: String,
    /// The fencing token the holder was granted.
    pub fencing_token: u64,
}

/// A service to register (gnmic's `ServiceRegistration`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRegistration {
    pub name: String,
    pub id: String,
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    /// TTL of the health check (Consul). etcd and memory tie liveness to the session TTL.
    pub ttl: Duration,
}

/// A healthy registered instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstance {
    pub id: String,
    pub name: String,
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
}

impl ServiceInstance {
    /// `address:port` (gnmic's `Service.Address`).
    pub fn host_port(&self) -> String {
        if self.address.contains(':') && !self.address.starts_with('[') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }

    /// Whether every tag in `wanted` is present (gnmic's tag filter).
    pub fn has_tags(&self, wanted: &[String]) -> bool {
        wanted.iter().all(|t| self.tags.contains(t))
    }
}

/// The coordination interface every gnomon service uses, as `Arc<dyn Coordination>`.
#[async_trait]
pub trait Coordination: Send + Sync {
    /// `etcd`, `consul`, `k8s` or `memory`.
    fn backend(&self) -> &'static str;

    /// Tries once to take `key` with `value` (normally the instance name).
    /// `None` when another session holds it or it is inside its lock-delay window.
    async fn acquire(&self, key: &str, value: &str) -> Result<Option<LockGuard>>;

    /// Retries until acquired (`Some`) or `cancel` fires (`None`). Retries on every change of
    /// the key and at least every `retry-timer`; transient store errors are logged and retried
    /// with backoff (up to `retry-timer`). Any other error ends the call: a refused credential
    /// ([`CoordinationError::CredentialRefused`]) is logged once at error level and returned
    /// at once, never retried.
    async fn acquire_blocking(
        &self,
        key: &str,
        value: &str,
        cancel: &CancellationToken,
    ) -> Result<Option<LockGuard>>;

    /// Value of the current holder of lock `key`, if anyone holds it.
    async fn holder(&self, key: &str) -> Result<Option<String>>;

    /// Whether anyone holds lock `key`.
    async fn is_locked(&self, key: &str) -> Result<bool> {
        Ok(self.holder(key).await?.is_some())
    }

    /// Every held lock under `prefix`: key → holder value (gnmic's `List`).
    async fn list(&self, prefix: &str) -> Result<BTreeMap<String, String>>;

    /// Every held lock under `prefix` with its holder and the fencing token its holder was
    /// granted (the token [`LockGuard::fencing_token`] returned): what lets a reader believe
    /// only the current holder's data.
    async fn list_locks(&self, prefix: &str) -> Result<BTreeMap<String, LockInfo>>;

    /// Watches every key under `prefix` (locks and plain keys).
    async fn watch_prefix(&self, prefix: &str) -> Result<WatchEvents>;

    /// Registers a service kept alive in the background for as long as the returned handle
    /// (and this process) lives. A registration's tags are fixed: to change them, deregister
    /// through the handle and register again with the same ID (readers may see the instance
    /// absent in between; a member marking itself unhealthy with [`keys::UNHEALTHY_TAG`]
    /// relies on nothing more).
    async fn register_service(&self, registration: ServiceRegistration) -> Result<ServiceHandle>;

    /// Healthy instances of `name` carrying every tag in `tags`.
    async fn services(&self, name: &str, tags: &[String]) -> Result<Vec<ServiceInstance>>;

    /// Healthy instances of `name` carrying every tag in `tags`, as they change.
    async fn watch_services(&self, name: &str, tags: &[String]) -> Result<ServiceWatch>;

    /// Plain KV read.
    async fn get(&self, key: &str) -> Result<Option<String>>;

    /// Plain KV read of every key under `prefix`.
    async fn get_prefix(&self, prefix: &str) -> Result<BTreeMap<String, String>>;

    /// Plain KV write (not tied to the session; ignores locks).
    async fn put(&self, key: &str, value: &str) -> Result<()>;

    /// Writes those of `entries` whose key does not exist (plain KV, as [`Coordination::put`])
    /// and never overwrites one, in as few requests as the store allows: members started
    /// together each seed the same file of 10 000 targets, and every write is an event for
    /// every watcher. Every key is checked first (a refused key writes nothing); not atomic
    /// beyond that: a store failure may leave some written. Returns how many were written.
    ///
    /// This default reads each key before writing it, so two callers racing on one key may
    /// both write it (with the same value when they seed the same file); stores with
    /// conditional multi-key writes (etcd) write each key once.
    async fn create_many(&self, entries: &[(String, String)]) -> Result<usize> {
        for (key, _) in entries {
            check_key(key)?;
        }
        let mut written = 0;
        for (key, value) in entries {
            if self.get(key).await?.is_none() {
                self.put(key, value).await?;
                written += 1;
            }
        }
        Ok(written)
    }

    /// Plain KV delete (ignores locks).
    async fn delete(&self, key: &str) -> Result<()>;

    /// Ends the session (best effort): locks still held are freed by the store (lock-delay
    /// applies to them; release guards first to avoid it), services disappear, background
    /// tasks stop.
    async fn shutdown(&self);
}

/// Connects the backend `cfg.kind` for instance `instance`.
pub async fn connect(cfg: &LockerConfig, instance: &str) -> Result<Arc<dyn Coordination>> {
    cfg.validate()
        .map_err(|e| CoordinationError::config(e.to_string()).caused_by(e))?;
    if instance.is_empty() {
        return Err(CoordinationError::config("instance name is empty"));
    }
    Ok(match cfg.kind {
        LockerType::Etcd => Arc::new(etcd::EtcdCoordination::connect(cfg, instance).await?),
        LockerType::Consul => Arc::new(consul::ConsulCoordination::connect(cfg, instance).await?),
        LockerType::K8s => Arc::new(k8s::K8sCoordination::connect(cfg, instance).await?),
        LockerType::Memory => {
            let store = MemoryStore::named(cfg.address.as_deref().unwrap_or("default"));
            Arc::new(MemoryCoordination::with_store(store, cfg, instance))
        }
    })
}

/// Backend side of a [`LockGuard`]: gives the key back.
#[async_trait]
pub(crate) trait LockRelease: Send + Sync + 'static {
    async fn release_lock(&self, key: &str, fencing_token: u64) -> Result<()>;
}

/// Proof of holding a lock. Keep it while acting as the holder; watch [`LockGuard::lost`].
/// Dropping it releases the lock in the background (best effort); prefer
/// [`LockGuard::release`] to learn the outcome.
pub struct LockGuard {
    key: String,
    value: String,
    fencing_token: u64,
    lost: CancellationToken,
    releaser: Option<Arc<dyn LockRelease>>,
}

impl LockGuard {
    pub(crate) fn new(
        key: &str,
        value: &str,
        fencing_token: u64,
        lost: CancellationToken,
        releaser: Arc<dyn LockRelease>,
    ) -> Self {
        tracing::info!(key, fencing_token, "lock acquired");
        Self {
            key: key.to_string(),
            value: value.to_string(),
            fencing_token,
            lost,
            releaser: Some(releaser),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    /// Grows strictly with every new holder of this key (see the module docs per backend).
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// Whether the lock is known (or must be assumed) lost.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Completes when the lock is lost (or released).
    pub async fn lost(&self) {
        self.lost.cancelled().await
    }

    /// A token that is cancelled when the lock is lost or released; hand it to the work the
    /// lock protects.
    pub fn lost_token(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Frees the key at once (no lock-delay).
    pub async fn release(mut self) -> Result<()> {
        let releaser = self.releaser.take();
        self.lost.cancel();
        match releaser {
            Some(releaser) => {
                use tracing::Instrument;
                let span = tracing::info_span!("lock_release", key = %self.key, fencing_token = self.fencing_token);
                let result = releaser
                    .release_lock(&self.key, self.fencing_token)
                    .instrument(span)
                    .await;
                match &result {
                    Ok(()) => {
                        tracing::info!(key = %self.key, fencing_token = self.fencing_token, "lock released")
                    }
                    Err(e) => tracing::warn!(key = %self.key, error = %e, "lock release failed"),
                }
                result
            }
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.key)
            .field("value", &self.value)
            .field("fencing_token", &self.fencing_token)
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.lost.cancel();
        if let Some(releaser) = self.releaser.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let key = std::mem::take(&mut self.key);
                let token = self.fencing_token;
                runtime.spawn(async move {
                    if let Err(e) = releaser.release_lock(&key, token).await {
                        tracing::warn!(key, error = %e, "background release of dropped lock failed");
                    }
                });
            }
        }
    }
}

/// Backend side of a [`ServiceHandle`].
#[async_trait]
pub(crate) trait ServiceDeregister: Send + Sync + 'static {
    async fn deregister_service(&self, id: &str) -> Result<()>;
}

/// A registration kept alive in the background. Dropping it deregisters in the background.
pub struct ServiceHandle {
    id: String,
    keeper: CancellationToken,
    deregister: Option<Arc<dyn ServiceDeregister>>,
}

impl ServiceHandle {
    pub(crate) fn new(
        id: &str,
        keeper: CancellationToken,
        deregister: Arc<dyn ServiceDeregister>,
    ) -> Self {
        Self {
            id: id.to_string(),
            keeper,
            deregister: Some(deregister),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops the keep-alive and removes the registration.
    pub async fn deregister(mut self) -> Result<()> {
        self.keeper.cancel();
        match self.deregister.take() {
            Some(d) => d.deregister_service(&self.id).await,
            None => Ok(()),
        }
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        self.keeper.cancel();
        if let Some(d) = self.deregister.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let id = std::mem::take(&mut self.id);
                runtime.spawn(async move {
                    if let Err(e) = d.deregister_service(&id).await {
                        tracing::warn!(id, error = %e, "background deregistration failed");
                    }
                });
            }
        }
    }
}

/// Outcome of one acquire attempt, with what the blocking loop needs to wait efficiently.
pub(crate) enum Attempt {
    Acquired(LockGuard),
    /// Held or in lock-delay; `since` is the store position (revision / index) observed.
    Busy {
        since: u64,
    },
}

/// Backends implement this; [`acquire_once`] and [`acquire_until`] build
/// [`Coordination::acquire`] and [`Coordination::acquire_blocking`] from it.
#[async_trait]
pub(crate) trait LockAttempts: Send + Sync {
    async fn attempt(&self, key: &str, value: &str) -> Result<Attempt>;
    /// Returns when `key` may have changed after `since`, or after `max_wait`.
    async fn wait_change(&self, key: &str, since: u64, max_wait: Duration);
    fn retry_timer(&self) -> Duration;
    /// The member name this session was opened for (a field of the lock spans).
    fn instance(&self) -> &str;
}

/// [`Coordination::acquire`]: one attempt; `None` while another session holds the key.
#[tracing::instrument(
    name = "acquire",
    skip(backend),
    fields(backend = backend.backend(), instance = %backend.instance())
)]
pub(crate) async fn acquire_once<B: LockAttempts + Coordination + ?Sized>(
    backend: &B,
    key: &str,
    value: &str,
) -> Result<Option<LockGuard>> {
    Ok(match backend.attempt(key, value).await? {
        Attempt::Acquired(guard) => Some(guard),
        Attempt::Busy { .. } => None,
    })
}

/// [`Coordination::acquire_blocking`]: attempts until acquired, cancelled or a
/// non-transient error, waiting for the key to change between attempts and backing off
/// (up to `retry-timer`) after transient errors.
#[tracing::instrument(
    name = "acquire_blocking",
    skip(backend, cancel),
    fields(backend = backend.backend(), instance = %backend.instance())
)]
pub(crate) async fn acquire_until<B: LockAttempts + Coordination + ?Sized>(
    backend: &B,
    key: &str,
    value: &str,
    cancel: &CancellationToken,
) -> Result<Option<LockGuard>> {
    let retry_timer = backend.retry_timer();
    let mut retry = retry_loop::RetryLoop::new("lock attempt", retry_timer);
    loop {
        if cancel.is_cancelled() {
            return Ok(None);
        }
        // An attempt is never abandoned half-way: a dropped acquire whose write already
        // reached the store would leave a lock that nobody holds a guard for. Attempts are
        // bounded by the store's request timeout; a lock won after cancellation is given back.
        let attempt = backend.attempt(key, value).await;
        if cancel.is_cancelled() {
            if let Ok(Attempt::Acquired(guard)) = attempt {
                if let Err(e) = guard.release().await {
                    tracing::warn!(key, error = %e, "releasing a lock won after cancellation failed");
                }
            }
            return Ok(None);
        }
        match attempt {
            Ok(Attempt::Acquired(guard)) => return Ok(Some(guard)),
            Ok(Attempt::Busy { since }) => {
                retry.succeeded();
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(None),
                    _ = backend.wait_change(key, since, retry_timer) => {}
                }
            }
            Err(e) if e.is_transient() => {
                let wait = retry.failed(&e);
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => {
                if e.credential().is_some() {
                    tracing::error!(key, error = %e, "lock refused; not retrying until the credential is fixed");
                }
                return Err(e);
            }
        }
    }
}

pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(CoordinationError::InvalidKey {
            key: key.to_string(),
            reason: "empty".into(),
        });
    }
    if keys::is_internal(key) {
        return Err(CoordinationError::InvalidKey {
            key: key.to_string(),
            reason: format!("the {} prefix is reserved", keys::INTERNAL_PREFIX),
        });
    }
    Ok(())
}
