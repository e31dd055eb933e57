//! Kubernetes backend (`clustering.locker.type: k8s`): the Kubernetes API is the store.
//!
//! * **Keys → Leases.** Every key, lock or plain, is one `coordination.k8s.io/v1` Lease in
//!   the locker's namespace, named by a reversible escaping of the key into a DNS-1123
//!   subdomain ([`names`]; keys that cannot be escaped within 253 characters get a hashed
//!   name), with the key and value in gnmic's `original-key` / `original-value` annotations
//!   and the label `gnomon.io/store=v1` that listings and watches select on ([`lease`]).
//!   One kind of object for both means a prefix watch is one watch, in the API server's
//!   order, like etcd's (the leader watches target locks and target configs together), a
//!   key is one object whichever way it is written, and the Role needs no write access to
//!   ConfigMaps (where the configuration lives). Values are limited by the API's 256 KiB of
//!   annotations per object.
//! * **Locks.** A lock is a Lease with `holderIdentity` (`<instance>-<random>`: one per
//!   process, so a restarted pod with the same name does not inherit its predecessor's
//!   locks). Acquire reads the Lease and its collection's `resourceVersion` in one LIST
//!   (`fieldSelector=metadata.name=…`), then creates it, or takes over a free one with a PUT
//!   carrying the `resourceVersion` it read: a 409 means someone else won. Renewals are
//!   PUTs with the same precondition every `renew-period` (gnmic: lease-duration / 2).
//!   **Expiry, one rule everywhere:** the holder believes it holds the lock until the send
//!   time of its last acknowledged write + lease-duration (minus 1 ms, for the microseconds
//!   `renewTime` keeps); a reader counts it held while `renewTime + leaseDurationSeconds` lies
//!   ahead on its own clock; a contender takes it over only once `renewTime +
//!   leaseDurationSeconds + lock-delay` has passed. `renewTime` is written after the send time
//!   was taken, so with clocks in sync (the usual NTP bound) the old holder has stopped
//!   before anyone can take over; `delay` (default 0, as gnmic's k8s locker has none) is the
//!   margin for clock skew between nodes. A release deletes the Lease (with its
//!   `resourceVersion` as precondition, so a later holder's Lease is never deleted), so the
//!   key is free at once.
//! * **Fencing token:** the `resourceVersion` of the Lease collection read by the acquiring
//!   LIST, plus one (never 0, and at most the version of the acquiring write), written into the Lease's `gnomon.io/fencing-token` annotation by the acquiring
//!   write itself. It strictly grows per new holder: on an etcd-backed API server a
//!   `resourceVersion` is etcd's cluster-wide revision (numeric; comparable since the API
//!   made that official); the previous holder's token was read before its own acquiring
//!   write, and that write (and any release or expiry we act on) is at or before what our
//!   LIST returns, so ours is larger; two contenders reading the same version cannot both
//!   write (409). It survives deletion of the Lease (a release) because it is not the
//!   Lease's own counter — `leaseTransitions` (kept, for kubectl) restarts at 0 when a
//!   Lease is deleted and recreated, so it cannot be the token. Any reader of the Lease sees
//!   the holder's token in the same object as the holder, so a listing of locks can return
//!   it.
//! * **Services.** As in gnmic, the members are the pods behind the headless Service named
//!   like the service (`<cluster>-gnmic-api`): the ready endpoints of its EndpointSlices
//!   (`kubernetes.io/service-name=…`; not ready, not serving or terminating endpoints are
//!   left out). gnmic registers nothing and gives each pod only the tag
//!   `instance-name=<pod>`; gnomon also writes each registration as a Lease held by the
//!   registering process (`gnmic-services/<name>/<id>`, like etcd's records), so a pod's
//!   entry carries the registered ID, `cluster-name`, `__protocol` and `clustering.tags` —
//!   placement and the API scheme then work as on Consul and etcd. A ready endpoint without a
//!   registration gets gnmic's ID `<pod>-api` and the tags `cluster-name`, `instance-name`,
//!   `__protocol=http`. Endpoint addresses and ports win over registered ones (they are what
//!   the cluster routes to). When the Service has no EndpointSlice at all (no Service, e.g.
//!   outside a cluster), the live registrations are the members.
//! * **Watches:** LIST, then WATCH from the list's `resourceVersion` (no bookmarks asked
//!   for; re-opened from the last version seen when the server ends it; a `410 Gone` lists
//!   again and emits the differences). Lock expiry is no event in Kubernetes: the watcher
//!   emits the `Delete` itself when `renewTime + leaseDurationSeconds` passes on its clock.
//! * **Errors:** 401 → [`Credential::KubernetesToken`], 403 → [`Credential::KubernetesRbac`]
//!   naming the verb, resource and namespace; never retried by the client; background loops
//!   back off (see `retry_loop`).
//! * **Shutdown** ends the "session": every lock still held is marked expired now (renewTime
//!   set one lease-duration back), so lock-delay applies to it as when a session dies; a
//!   graceful [`LockGuard::release`] deletes the Lease instead.
//!
//! [`Credential::KubernetesToken`]: crate::Credential::KubernetesToken
//! [`Credential::KubernetesRbac`]: crate::Credential::KubernetesRbac

mod client;
pub(crate) mod lease;
pub(crate) mod names;
mod services;
mod watch;

use client::{Failure, K8sClient};
use lease::{Claim, Record, STORE_SELECTOR};

use super::retry_loop::RetryLoop;
use super::{
    acquire_once, acquire_until, check_key, keys, kv_services, Attempt, Coordination,
    CoordinationError, LockAttempts, LockGuard, LockRelease, LockerConfig, Result,
    ServiceDeregister, ServiceHandle, ServiceInstance, ServiceRegistration, ServiceWatch,
    WatchEvents,
};
use crate::LockInfo;
use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::Lease;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The holder stops believing this much before `send time + lease-duration` (covers the
/// microseconds `renewTime` is cut to).
const HOLDER_MARGIN: Duration = Duration::from_millis(1);

/// A Lease this process holds (a lock or a service registration).
struct Held {
    key: String,
    name: String,
    token: u64,
    duration: Duration,
    /// The Lease as last written or read; the mutex also orders renewals and the release.
    lease: tokio::sync::Mutex<Lease>,
    lost: CancellationToken,
    /// Stops the renewals (release, deregistration).
    stop: CancellationToken,
}

struct Inner {
    client: K8sClient,
    instance: String,
    /// `holderIdentity` of every Lease this process holds.
    identity: String,
    ttl: Duration,
    delay: Duration,
    retry: Duration,
    renew_period: Duration,
    held: Mutex<HashMap<String, Arc<Held>>>,
    shutdown: CancellationToken,
}

/// The Kubernetes backend; cheap to clone.
#[derive(Clone)]
pub struct K8sCoordination {
    inner: Arc<Inner>,
}

/// Why a renewal did not go through.
enum Renewal {
    /// The Lease is someone else's now, or gone.
    Lost(String),
    Failed(CoordinationError),
}

fn random_suffix() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl K8sCoordination {
    /// Builds the client from the kubeconfig or the pod's ServiceAccount; nothing is sent yet.
    pub async fn connect(cfg: &LockerConfig, instance: &str) -> Result<Self> {
        let client = K8sClient::new(cfg).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                instance: instance.to_string(),
                identity: format!("{instance}-{}", random_suffix()),
                ttl: cfg.session_ttl,
                delay: cfg.effective_delay(),
                retry: cfg.retry_timer,
                renew_period: cfg.effective_renew_period(2),
                held: Mutex::new(HashMap::new()),
                shutdown: CancellationToken::new(),
            }),
        })
    }

    /// The namespace of the Leases and of the headless Service.
    pub fn namespace(&self) -> &str {
        self.inner.client.namespace()
    }

    fn client(&self) -> &K8sClient {
        &self.inner.client
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Held>>> {
        self.inner.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_ours(&self, lease: &Lease, token: u64) -> bool {
        Record::parse(lease)
            .and_then(|r| r.holder)
            .is_some_and(|h| h.identity == self.inner.identity && h.token == token)
    }

    /// The Lease named for `key` and the collection's `resourceVersion`, in one LIST.
    async fn read_with_version(&self, name: &str) -> Result<(Option<Lease>, u64)> {
        let (items, version) = self
            .client()
            .list_leases("", Some(format!("metadata.name={name}")))
            .await
            .map_err(|f| f.into_error("reading a lease"))?;
        let number = lease::version_number(&version).ok_or_else(|| {
            CoordinationError::backend(format!(
                "the Kubernetes API answered resourceVersion {version:?}, not a number: the k8s \
                 locker derives fencing tokens from etcd-backed resourceVersions"
            ))
        })?;
        let lease = items
            .into_iter()
            .find(|l| l.metadata.name.as_deref() == Some(name));
        // + 1: never 0 (a message without a token counts as 0), and still at most the version
        // of our own acquiring write, so the next holder's token is larger.
        Ok((lease, number + 1))
    }

    fn foreign(&self, name: &str) -> CoordinationError {
        CoordinationError::backend(format!(
            "Lease {name:?} in namespace {:?} exists but was not written by gnomon (no \
             gnomon.io/store label or original-key annotation for this name); delete it or use \
             another namespace",
            self.namespace()
        ))
    }

    /// Writes `lease` held by us: created when `create`, else replaced at its version. On an
    /// ambiguous failure, reads back whether the write took effect.
    async fn write_claim(&self, lease: Lease, create: bool, token: u64) -> Result<Option<Lease>> {
        let name = lease.metadata.name.clone().unwrap_or_default();
        let written = if create {
            self.client().create_lease(lease).await
        } else {
            self.client().replace_lease(lease).await
        };
        match written {
            Ok(stored) => Ok(Some(stored)),
            Err(Failure::Conflict | Failure::NotFound) => Ok(None),
            Err(Failure::Store(error)) if error.is_transient() => {
                // The write may have been applied: adopt it rather than hold a Lease blind.
                match self.client().get_lease(&name).await {
                    Ok(Some(current)) if self.is_ours(&current, token) => Ok(Some(current)),
                    _ => Err(error),
                }
            }
            Err(failure) => Err(failure.into_error("writing a lease")),
        }
    }

    /// Starts renewing `stored` (just written by us) and records it as held.
    fn hold(
        &self,
        key: &str,
        stored: Lease,
        token: u64,
        duration: Duration,
        sent: Instant,
    ) -> Arc<Held> {
        let held = Arc::new(Held {
            key: key.to_string(),
            name: stored.metadata.name.clone().unwrap_or_default(),
            token,
            duration,
            lease: tokio::sync::Mutex::new(stored),
            lost: CancellationToken::new(),
            stop: CancellationToken::new(),
        });
        self.held().insert(key.to_string(), held.clone());
        let period = if duration == self.inner.ttl {
            self.inner.renew_period
        } else {
            duration / 3
        };
        let deadline = sent + duration - HOLDER_MARGIN;
        let span = tracing::info_span!("k8s_lease", lease = %held.name);
        tokio::spawn(renew(self.clone(), held.clone(), deadline, period).instrument(span));
        held
    }

    /// One renewal of `held`: a PUT at the last version; after a 409, again at the current
    /// version if the Lease is still ours.
    async fn renew_once(&self, held: &Held) -> std::result::Result<(), Renewal> {
        let mut lease = held.lease.lock().await;
        if held.stop.is_cancelled() {
            return Ok(());
        }
        for _ in 0..3 {
            let mut next = lease.clone();
            if let Some(spec) = next.spec.as_mut() {
                spec.renew_time = Some(lease::micro_time(SystemTime::now()));
            }
            match self.client().replace_lease(next).await {
                Ok(stored) => {
                    *lease = stored;
                    return Ok(());
                }
                Err(Failure::Conflict) => match self.client().get_lease(&held.name).await {
                    Ok(Some(current)) if self.is_ours(&current, held.token) => *lease = current,
                    Ok(_) => return Err(Renewal::Lost("another holder took the Lease".into())),
                    Err(failure) => {
                        return Err(Renewal::Failed(failure.into_error("re-reading a lease")))
                    }
                },
                Err(Failure::NotFound) => {
                    return Err(Renewal::Lost("the Lease was deleted".into()))
                }
                Err(failure) => {
                    return Err(Renewal::Failed(failure.into_error("renewing a lease")))
                }
            }
        }
        Err(Renewal::Failed(CoordinationError::backend(format!(
            "renewing Lease {:?}: it kept changing",
            held.name
        ))))
    }

    /// Deletes `held`'s Lease if it is still ours (renewals stopped first).
    async fn delete_held(&self, held: &Held) -> Result<()> {
        held.stop.cancel();
        held.lost.cancel();
        let mut lease = held.lease.lock().await;
        for _ in 0..3 {
            let version = lease.metadata.resource_version.clone();
            match self.client().delete_lease(&held.name, version).await {
                Ok(()) | Err(Failure::NotFound) => return Ok(()),
                Err(Failure::Conflict) => match self.client().get_lease(&held.name).await {
                    Ok(Some(current)) if self.is_ours(&current, held.token) => *lease = current,
                    Ok(_) => return Ok(()),
                    Err(failure) => return Err(failure.into_error("re-reading a lease")),
                },
                Err(failure) => return Err(failure.into_error("deleting a lease")),
            }
        }
        Err(CoordinationError::backend(format!(
            "deleting Lease {:?}: it kept changing",
            held.name
        )))
    }

    /// Forgets `held` unless a newer holding of the same key replaced it.
    fn forget(&self, held: &Arc<Held>) {
        let mut map = self.held();
        if map.get(&held.key).is_some_and(|h| Arc::ptr_eq(h, held)) {
            map.remove(&held.key);
        }
    }

    /// Takes `key` for a registration whoever holds it (a registration replaces an older one
    /// with the same ID, as on Consul).
    async fn claim_registration(
        &self,
        key: &str,
        value: &str,
        duration: Duration,
    ) -> Result<Arc<Held>> {
        let name = names::object_name(key);
        for _ in 0..5 {
            let (existing, token) = self.read_with_version(&name).await?;
            let create = existing.is_none();
            let mut lease = match existing {
                Some(lease) if Record::parse(&lease).is_none() => return Err(self.foreign(&name)),
                Some(lease) => lease,
                None => lease::new_lease(key, value),
            };
            let sent = Instant::now();
            lease::claim(
                &mut lease,
                &Claim {
                    identity: &self.inner.identity,
                    value,
                    duration,
                    delay: Duration::ZERO,
                    token,
                    now: SystemTime::now(),
                },
            );
            if let Some(stored) = self.write_claim(lease, create, token).await? {
                return Ok(self.hold(key, stored, token, duration, sent));
            }
        }
        Err(CoordinationError::backend(format!(
            "registering {key:?}: the Lease kept changing"
        )))
    }

    /// Keeps a registration: registers again (after `retry-timer`) whenever it is lost.
    async fn keep_registration(
        self,
        key: String,
        value: String,
        duration: Duration,
        mut held: Arc<Held>,
        stop: CancellationToken,
    ) {
        let mut retry = RetryLoop::new("kubernetes service registration", self.inner.retry);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.inner.shutdown.cancelled() => return,
                _ = held.lost.cancelled() => {}
            }
            tracing::warn!(key = %key, "service registration lost; registering again");
            loop {
                let wait = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.inner.shutdown.cancelled() => return,
                    claimed = self.claim_registration(&key, &value, duration) => match claimed {
                        Ok(next) => {
                            retry.succeeded();
                            held = next;
                            break;
                        }
                        Err(error) => retry.failed(&error),
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        self.forget(&held);
        if let Err(error) = self.delete_held(&held).await {
            tracing::warn!(key = %key, %error, "deregistration failed; the registration expires with its Lease");
        }
    }

    /// Registrations of service `name` that are live: its members when it has no
    /// EndpointSlices.
    async fn registrations(&self, name: &str) -> Result<Vec<ServiceInstance>> {
        Ok(kv_services::healthy(
            &self.get_prefix(&keys::services_prefix(name)).await?,
            &[],
        ))
    }
}

/// Renews `held` every `period` until it is released or lost.
async fn renew(me: K8sCoordination, held: Arc<Held>, mut deadline: Instant, period: Duration) {
    let soon = period.min(Duration::from_secs(1));
    let mut retry = RetryLoop::new("kubernetes lease renewal", soon).refusals_wait_at_most(soon);
    let mut wait = period;
    let reason = loop {
        tokio::select! {
            _ = held.stop.cancelled() => return,
            _ = me.inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(deadline.into()) => break "no renewal succeeded within the lease duration".to_string(),
            _ = tokio::time::sleep(wait) => {}
        }
        let sent = Instant::now();
        let outcome = tokio::select! {
            _ = held.stop.cancelled() => return,
            _ = tokio::time::sleep_until(deadline.into()) => break "no renewal succeeded within the lease duration".to_string(),
            outcome = me.renew_once(&held) => outcome,
        };
        match outcome {
            Ok(()) => {
                deadline = sent + held.duration - HOLDER_MARGIN;
                wait = period;
                retry.succeeded();
            }
            Err(Renewal::Lost(reason)) => break reason,
            Err(Renewal::Failed(error)) => wait = retry.failed(&error),
        }
    };
    held.lost.cancel();
    me.forget(&held);
    tracing::warn!(instance = %me.inner.instance, key = %held.key, reason = %reason, "kubernetes lease lost");
}

struct K8sRelease {
    coordination: K8sCoordination,
    held: Arc<Held>,
}

#[async_trait]
impl LockRelease for K8sRelease {
    async fn release_lock(&self, _key: &str, _fencing_token: u64) -> Result<()> {
        let me = &self.coordination;
        me.forget(&self.held);
        me.delete_held(&self.held).await
    }
}

#[async_trait]
impl LockAttempts for K8sCoordination {
    async fn attempt(&self, key: &str, value: &str) -> Result<Attempt> {
        check_key(key)?;
        if self.held().get(key).is_some_and(|h| !h.lost.is_cancelled()) {
            return Ok(Attempt::Busy { since: 0 });
        }
        let name = names::object_name(key);
        let (existing, token) = self.read_with_version(&name).await?;
        // The send time comes first: renewTime (written below) is never earlier.
        let sent = Instant::now();
        let now = SystemTime::now();
        let create = existing.is_none();
        let mut lease = match existing {
            None => lease::new_lease(key, value),
            Some(lease) => {
                let record = Record::parse(&lease).ok_or_else(|| self.foreign(&name))?;
                let since = lease::version_number(&record.resource_version).unwrap_or(0);
                match record.free_at() {
                    // A plain key is never acquirable (as on etcd and memory).
                    None => return Ok(Attempt::Busy { since }),
                    Some(free_at) if free_at > now => return Ok(Attempt::Busy { since }),
                    Some(_) => lease,
                }
            }
        };
        lease::claim(
            &mut lease,
            &Claim {
                identity: &self.inner.identity,
                value,
                duration: self.inner.ttl,
                delay: self.inner.delay,
                token,
                now,
            },
        );
        let Some(stored) = self.write_claim(lease, create, token).await? else {
            return Ok(Attempt::Busy { since: 0 });
        };
        let held = self.hold(key, stored, token, self.inner.ttl, sent);
        let release = Arc::new(K8sRelease {
            coordination: self.clone(),
            held: held.clone(),
        });
        Ok(Attempt::Acquired(LockGuard::new(
            key,
            value,
            token,
            held.lost.clone(),
            release,
        )))
    }

    /// Waits for an event on the key's Lease, or until a held lock becomes free by expiry
    /// (which no event announces).
    async fn wait_change(&self, key: &str, _since: u64, max_wait: Duration) {
        let name = names::object_name(key);
        let wait = async {
            let lease = match self.client().get_lease(&name).await {
                Ok(Some(lease)) => lease,
                Ok(None) => return,
                Err(_) => return std::future::pending::<()>().await,
            };
            let version = lease.metadata.resource_version.clone().unwrap_or_default();
            let free_in = Record::parse(&lease)
                .and_then(|r| r.free_at())
                .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default())
                .unwrap_or(max_wait);
            let seconds = u32::try_from(max_wait.as_secs().max(1)).unwrap_or(u32::MAX);
            let watch = async {
                match self
                    .client()
                    .watch_leases("", Some(format!("metadata.name={name}")), &version, seconds)
                    .await
                {
                    Ok(mut events) => {
                        events.next().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(free_in) => {}
                _ = watch => {}
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

struct K8sDeregister {
    keeper: CancellationToken,
    done: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[async_trait]
impl ServiceDeregister for K8sDeregister {
    async fn deregister_service(&self, _id: &str) -> Result<()> {
        self.keeper.cancel();
        if let Some(task) = self.done.lock().await.take() {
            let _ = task.await;
        }
        Ok(())
    }
}

#[async_trait]
impl Coordination for K8sCoordination {
    fn backend(&self) -> &'static str {
        "k8s"
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
        let name = names::object_name(key);
        let lease = self
            .client()
            .get_lease(&name)
            .await
            .map_err(|f| f.into_error("reading a lease"))?;
        let now = SystemTime::now();
        Ok(lease
            .as_ref()
            .and_then(Record::parse)
            .filter(|r| r.key == key && r.locked(now))
            .map(|r| r.value))
    }

    async fn list(&self, prefix: &str) -> Result<BTreeMap<String, String>> {
        let now = SystemTime::now();
        Ok(self
            .records(prefix)
            .await?
            .into_iter()
            .filter(|r| r.locked(now))
            .map(|r| (r.key, r.value))
            .collect())
    }

    async fn list_locks(&self, prefix: &str) -> Result<BTreeMap<String, LockInfo>> {
        let now = SystemTime::now();
        Ok(self
            .records(prefix)
            .await?
            .into_iter()
            .filter(|r| r.locked(now))
            .filter_map(|r| {
                let token = r.holder.as_ref()?.token;
                Some((
                    r.key,
                    LockInfo {
                        holder: r.value,
                        fencing_token: token,
                    },
                ))
            })
            .collect())
    }

    async fn watch_prefix(&self, prefix: &str) -> Result<WatchEvents> {
        watch::watch_prefix(self.clone(), prefix.to_string()).await
    }

    #[tracing::instrument(skip(self, registration), fields(backend = "k8s", name = %registration.name, id = %registration.id))]
    async fn register_service(&self, registration: ServiceRegistration) -> Result<ServiceHandle> {
        let key = keys::service(&registration.name, &registration.id);
        check_key(&key)?;
        let value = kv_services::encode(&registration);
        // Whole seconds, rounded up: the Lease must not expire before the check TTL.
        let seconds = registration.ttl.as_secs() + u64::from(registration.ttl.subsec_nanos() > 0);
        let duration = Duration::from_secs(seconds.max(1));
        let held = self.claim_registration(&key, &value, duration).await?;
        let keeper = CancellationToken::new();
        let task = tokio::spawn(self.clone().keep_registration(
            key,
            value,
            duration,
            held,
            keeper.clone(),
        ));
        Ok(ServiceHandle::new(
            &registration.id,
            keeper.clone(),
            Arc::new(K8sDeregister {
                keeper,
                done: tokio::sync::Mutex::new(Some(task)),
            }),
        ))
    }

    async fn services(&self, name: &str, tags: &[String]) -> Result<Vec<ServiceInstance>> {
        let slices = services::slices(self, name).await?;
        let registrations = self.registrations(name).await?;
        Ok(services::members(name, &slices, registrations, tags))
    }

    async fn watch_services(&self, name: &str, tags: &[String]) -> Result<ServiceWatch> {
        services::watch(self.clone(), name.to_string(), tags.to_vec()).await
    }

    async fn get(&self, key: &str) -> Result<Option<String>> {
        let lease = self
            .client()
            .get_lease(&names::object_name(key))
            .await
            .map_err(|f| f.into_error("reading a lease"))?;
        let now = SystemTime::now();
        Ok(lease
            .as_ref()
            .and_then(Record::parse)
            .filter(|r| r.key == key && r.present(now))
            .map(|r| r.value))
    }

    async fn get_prefix(&self, prefix: &str) -> Result<BTreeMap<String, String>> {
        let now = SystemTime::now();
        Ok(self
            .records(prefix)
            .await?
            .into_iter()
            .filter(|r| r.present(now))
            .map(|r| (r.key, r.value))
            .collect())
    }

    async fn put(&self, key: &str, value: &str) -> Result<()> {
        check_key(key)?;
        let name = names::object_name(key);
        for _ in 0..5 {
            let existing = self
                .client()
                .get_lease(&name)
                .await
                .map_err(|f| f.into_error("reading a lease"))?;
            let written = match existing {
                None => {
                    self.client()
                        .create_lease(lease::new_lease(key, value))
                        .await
                }
                Some(mut lease) => {
                    let record = Record::parse(&lease).ok_or_else(|| self.foreign(&name))?;
                    if record.locked(SystemTime::now()) {
                        // Ignores the lock, keeps the holder (as Consul and memory do).
                        lease::set_annotation(&mut lease, lease::VALUE_ANNOTATION, value);
                    } else {
                        lease::make_plain(&mut lease, value);
                    }
                    self.client().replace_lease(lease).await
                }
            };
            match written {
                Ok(_) => return Ok(()),
                Err(Failure::Conflict | Failure::NotFound) => continue,
                Err(failure) => return Err(failure.into_error("writing a lease")),
            }
        }
        Err(CoordinationError::backend(format!(
            "writing {key:?}: Lease {name:?} kept changing"
        )))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self
            .client()
            .delete_lease(&names::object_name(key), None)
            .await
        {
            Ok(()) | Err(Failure::NotFound) => Ok(()),
            Err(failure) => Err(failure.into_error("deleting a lease")),
        }
    }

    async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let held: Vec<Arc<Held>> = self.held().drain().map(|(_, h)| h).collect();
        let ends = held.into_iter().map(|held| {
            let me = self.clone();
            async move {
                held.stop.cancel();
                held.lost.cancel();
                if held.key.starts_with("gnmic-services/") {
                    let _ = me.delete_held(&held).await;
                    return;
                }
                // The session ends: the lock counts as expired now, lock-delay from now.
                let mut lease = held.lease.lock().await;
                let mut expired = lease.clone();
                if let Some(spec) = expired.spec.as_mut() {
                    spec.renew_time = Some(lease::micro_time(
                        SystemTime::now()
                            .checked_sub(held.duration)
                            .unwrap_or(SystemTime::UNIX_EPOCH),
                    ));
                }
                if let Ok(stored) = me.client().replace_lease(expired).await {
                    *lease = stored;
                }
            }
        });
        futures::future::join_all(ends).await;
    }
}

impl K8sCoordination {
    /// Our records whose key starts with `prefix`.
    async fn records(&self, prefix: &str) -> Result<Vec<Record>> {
        let (items, _) = self
            .client()
            .list_leases(STORE_SELECTOR, None)
            .await
            .map_err(|f| f.into_error("listing leases"))?;
        Ok(items
            .iter()
            .filter_map(Record::parse)
            .filter(|r| r.key.starts_with(prefix))
            .collect())
    }
}
