//! etcd v3 backend.
//!
//! * Session: one lease per instance (`session-ttl`, whole seconds; etcd raises TTLs below its
//!   minimum, ~2s), kept alive every `renew-period` (default ttl/3). The holder considers the
//!   session lost at `send time of the last acknowledged keep-alive + granted TTL`, or at once
//!   when etcd reports the lease gone; it then revokes the old lease (best effort) and the next
//!   call grants a new one.
//! * Acquire: one txn `create_revision(key) == 0` → `put(key, value, lease)`. The fencing token
//!   is that txn's revision (= the key's create_revision; cluster-wide monotonic).
//! * Release: txn `create_revision(key) == token` → delete (never deletes a later holder's key).
//! * Lock-delay emulation (only when `delay > 0`; etcd has none): the acquire txn also writes
//!   `__gnomon/lock-tenure/<key>` = lease id (no lease) and requires both it and
//!   `__gnomon/lock-delay/<key>` to be absent. A graceful release deletes the tenure with the key.
//!   When an acquirer finds the key gone but a tenure whose lease is dead (crash or expiry), it
//!   swaps the tenure for `__gnomon/lock-delay/<key>` under a fresh lease of TTL = delay (whole
//!   seconds, at least etcd's minimum TTL); acquires fail until that lease expires. The delay
//!   therefore starts when the first contender notices the loss, never earlier than the expiry.
//! * Services: `gnmic-services/<name>/<id>` = JSON record under the instance lease (see
//!   `kv_services`); re-registered automatically when the session is replaced.
//! * Watches: ordered events from a revision; on disconnect or compaction, re-list and emit the
//!   differences, then watch again from the listed revision + 1.

use super::{
    acquire_once, acquire_until, check_key, keys, kv_services, memory::diff, Attempt, Coordination,
    CoordinationError, LockAttempts, LockGuard, LockRelease, LockerConfig, Result,
    ServiceDeregister, ServiceHandle, ServiceInstance, ServiceRegistration, ServiceWatch,
    WatchEvent, WatchEvents,
};
use async_trait::async_trait;
use gnomon_etcd::{
    Client, Compare, CompareOp, ConnectOptions, ErrorKind, EventType, GetOptions,
    LeaseKeepAliveStream, LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Keys gnomon keeps for itself (lock-delay emulation); callers may not use them.
pub const INTERNAL_PREFIX: &str = "__gnomon/";
const WATCH_BUFFER: usize = 256;
const RESYNC_BACKOFF: Duration = Duration::from_millis(250);

fn tenure_key(key: &str) -> String {
    format!("{INTERNAL_PREFIX}lock-tenure/{key}")
}

fn delay_key(key: &str) -> String {
    format!("{INTERNAL_PREFIX}lock-delay/{key}")
}

fn is_internal(key: &str) -> bool {
    key.starts_with(INTERNAL_PREFIX)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Added to TLS failures, and to connection failures when TLS is on: an untrusted server
/// certificate is reported by rustls, but a refused (or missing) client certificate only
/// shows as a closed connection.
const TLS_HINT: &str = "(TLS is on: check clustering.locker tls.ca-file, the CA that signed \
etcd's certificate, and tls.cert-file / tls.key-file when etcd requires client certificates)";

/// How to read a connection failure: until etcd has answered once, it most likely means a
/// configuration problem (address, TLS), afterwards an outage.
#[derive(Clone, Copy)]
struct Link {
    tls: bool,
    answered: bool,
}

/// Maps a client error; connection failures before etcd ever answered get a configuration
/// hint ([`TLS_HINT`] when TLS is on).
fn map_error(error: gnomon_etcd::Error, link: Link) -> CoordinationError {
    let unproven = !link.answered && !error.reached_etcd();
    let hint = match error.kind() {
        ErrorKind::Tls => format!(" {TLS_HINT}"),
        ErrorKind::Unavailable if unproven && link.tls => format!(" {TLS_HINT}"),
        ErrorKind::Unavailable if unproven => {
            " (no answer from etcd: check the address, and clustering.locker tls if etcd serves TLS)"
                .to_string()
        }
        ErrorKind::AuthenticationFailed
            if error
                .etcd_message()
                .is_some_and(|m| m.contains("user name is empty")) =>
        {
            " (etcd has authentication on: set clustering.locker username and password)".to_string()
        }
        _ => String::new(),
    };
    match error.kind() {
        ErrorKind::LeaseNotFound => CoordinationError::SessionLost(error.to_string()),
        ErrorKind::Unavailable
        | ErrorKind::Timeout
        | ErrorKind::TooManyRequests
        | ErrorKind::InvalidAuthToken
        | ErrorKind::Tls => CoordinationError::Unavailable(format!("{error}{hint}")),
        ErrorKind::Config => CoordinationError::Config(error.to_string()),
        _ => CoordinationError::Backend(format!("{error}{hint}")),
    }
}

struct EtcdSession {
    lease: i64,
    lost: CancellationToken,
}

struct EtcdInner {
    client: Client,
    instance: String,
    ttl_secs: i64,
    renew_period: Duration,
    delay: Duration,
    retry: Duration,
    /// Whether the connection uses TLS (for hints in connection errors).
    tls: bool,
    /// Whether etcd has answered a call yet (connection errors before that get hints).
    answered: std::sync::atomic::AtomicBool,
    session: tokio::sync::Mutex<Option<Arc<EtcdSession>>>,
    shutdown: CancellationToken,
}

impl EtcdInner {
    fn link(&self) -> Link {
        Link {
            tls: self.tls,
            answered: self.answered.load(Ordering::Relaxed),
        }
    }
}

/// The etcd backend; cheap to clone.
#[derive(Clone)]
pub struct EtcdCoordination {
    inner: Arc<EtcdInner>,
}

fn tls_options(tls: &super::TlsConfig) -> Result<TlsOptions> {
    if tls.skip_verify {
        return Err(CoordinationError::Config(
            "tls.skip-verify is not supported by the etcd backend; set tls.ca-file instead".into(),
        ));
    }
    let read = |field: &str, path: &str| {
        std::fs::read(path).map_err(|e| {
            CoordinationError::Config(format!("cannot read locker tls.{field} {path:?}: {e}"))
        })
    };
    // Like gnmic: without ca-file the system's trusted CAs verify etcd's certificate.
    let mut options = TlsOptions::new();
    if let Some(ca) = &tls.ca_file {
        options = options.with_ca_pem(read("ca-file", ca)?);
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            options = options.with_identity_pem(read("cert-file", cert)?, read("key-file", key)?);
        }
        (None, None) => {}
        _ => {
            return Err(CoordinationError::Config(
                "locker tls.cert-file and tls.key-file must be set together".into(),
            ))
        }
    }
    Ok(options)
}

impl EtcdCoordination {
    /// Connects to the configured endpoints. Fails if none answers within `request-timeout`.
    pub async fn connect(cfg: &LockerConfig, instance: &str) -> Result<Self> {
        // Every call (and the opening of every stream) is bounded by request-timeout. HTTP/2
        // keep-alive stays at the client's defaults (a ping every 10 s while a call or stream
        // is open): etcd closes connections that ping more often than every 5 s.
        let mut options = ConnectOptions::new()
            .with_connect_timeout(cfg.request_timeout)
            .with_timeout(cfg.request_timeout);
        if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
            // The client logs in now and again whenever etcd rejects its (expired) token.
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &cfg.tls {
            options = options.with_tls(tls_options(tls)?);
        }
        let client = Client::connect(cfg.etcd_endpoints(), options)
            .await
            .map_err(|e| {
                let link = Link {
                    tls: cfg.tls.is_some(),
                    answered: false,
                };
                map_error(e, link)
            })?;
        let ttl_secs = cfg.session_ttl.as_secs_f64().ceil().max(1.0) as i64;
        Ok(Self {
            inner: Arc::new(EtcdInner {
                client,
                instance: instance.to_string(),
                ttl_secs,
                renew_period: cfg.effective_renew_period(3),
                delay: cfg.effective_delay(),
                retry: cfg.retry_timer,
                tls: cfg.tls.is_some(),
                answered: std::sync::atomic::AtomicBool::new(false),
                session: tokio::sync::Mutex::new(None),
                shutdown: CancellationToken::new(),
            }),
        })
    }

    /// The lease currently used as this instance's session, if any.
    pub async fn current_lease(&self) -> Option<i64> {
        self.inner
            .session
            .lock()
            .await
            .as_ref()
            .filter(|s| !s.lost.is_cancelled())
            .map(|s| s.lease)
    }

    /// Runs one client call (bounded by the client's request timeout) and maps its error.
    async fn call<T>(&self, call: impl Future<Output = gnomon_etcd::Result<T>>) -> Result<T> {
        match call.await {
            Ok(value) => {
                self.inner.answered.store(true, Ordering::Relaxed);
                Ok(value)
            }
            Err(e) => Err(self.error(e)),
        }
    }

    fn error(&self, error: gnomon_etcd::Error) -> CoordinationError {
        map_error(error, self.inner.link())
    }

    fn client(&self) -> &Client {
        &self.inner.client
    }

    async fn session(&self) -> Result<Arc<EtcdSession>> {
        let mut slot = self.inner.session.lock().await;
        if let Some(session) = slot.as_ref() {
            if !session.lost.is_cancelled() {
                return Ok(session.clone());
            }
        }
        if self.inner.shutdown.is_cancelled() {
            return Err(CoordinationError::Unavailable(
                "etcd backend shut down".into(),
            ));
        }
        let sent = Instant::now();
        let grant = self
            .call(self.client().lease_grant(self.inner.ttl_secs, 0))
            .await?;
        let granted = Duration::from_secs(grant.ttl.max(1) as u64);
        let session = Arc::new(EtcdSession {
            lease: grant.id,
            lost: CancellationToken::new(),
        });
        tracing::info!(instance = %self.inner.instance, lease = grant.id, ttl = ?granted, "etcd session started");
        let span = tracing::info_span!("etcd_session", lease = grant.id);
        tokio::spawn(
            keep_session_alive(self.clone(), session.clone(), sent + granted).instrument(span),
        );
        *slot = Some(session.clone());
        Ok(session)
    }

    async fn lease_alive(&self, lease: i64) -> Result<bool> {
        let answer = self
            .call(self.client().lease_time_to_live(lease, false))
            .await?;
        Ok(answer.ttl > 0)
    }

    /// Swaps a dead holder's tenure record for a lock-delay marker (see the module docs).
    async fn start_lock_delay(&self, key: &str, tenure_revision: i64) -> Result<()> {
        let secs = self.inner.delay.as_secs_f64().ceil().max(1.0) as i64;
        let lease = self.call(self.client().lease_grant(secs, 0)).await?.id;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                tenure_key(key),
                CompareOp::Equal,
                tenure_revision,
            )])
            .and_then([
                TxnOp::delete(tenure_key(key), None),
                TxnOp::put(
                    delay_key(key),
                    "",
                    Some(PutOptions::new().with_lease(lease)),
                ),
            ]);
        let started = self.call(self.client().txn(txn)).await?.succeeded;
        if started {
            tracing::info!(key, delay = ?self.inner.delay, "holder died; lock-delay started");
        } else {
            let _ = self.call(self.client().lease_revoke(lease)).await;
        }
        Ok(())
    }

    async fn range(&self, prefix: &str) -> Result<(BTreeMap<String, (String, i64)>, i64)> {
        let answer = self
            .call(
                self.client()
                    .get(prefix, Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let entries = answer
            .kvs
            .iter()
            .filter(|kv| !is_internal(&text(&kv.key)))
            .map(|kv| (text(&kv.key), (text(&kv.value), kv.lease)))
            .collect();
        Ok((entries, answer.revision))
    }

    async fn put_service(&self, key: &str, value: &str, lease: i64) -> Result<()> {
        self.call(
            self.client()
                .put(key, value, Some(PutOptions::new().with_lease(lease))),
        )
        .await
        .map(|_| ())
    }
}

/// Renews the lease until shutdown or loss; fires `session.lost` at the holder-side deadline.
async fn keep_session_alive(
    me: EtcdCoordination,
    session: Arc<EtcdSession>,
    mut deadline: Instant,
) {
    let period = me.inner.renew_period;
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let reason = loop {
        tokio::select! {
            _ = me.inner.shutdown.cancelled() => {
                let _ = me.call(me.client().lease_revoke(session.lease)).await;
                session.lost.cancel();
                return;
            }
            _ = tokio::time::sleep_until(deadline.into()) => break "no keep-alive acknowledged within the TTL",
            _ = tokio::time::sleep(period) => {}
        }
        // Opening the stream is bounded by the client's request timeout; an answer that never
        // comes on an open stream is caught by the deadline.
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => break "no keep-alive acknowledged within the TTL",
            result = renew_once(&me, session.lease, &mut stream) => match result {
                Ok(Some(next_deadline)) => deadline = next_deadline,
                Ok(None) => break "etcd reports the lease expired",
                Err(e) => {
                    tracing::debug!(error = %e, "etcd keep-alive failed");
                    stream = None;
                }
            }
        }
    };
    session.lost.cancel();
    tracing::warn!(instance = %me.inner.instance, lease = session.lease, reason, "etcd session lost; every lock of this instance is lost");
    // Free the old lease's keys as soon as etcd answers. This matters after an outage: a
    // restarted etcd restores the lease with a fresh TTL, so without the revoke its locks
    // would block everyone (this instance included) for another TTL.
    loop {
        match me.call(me.client().lease_revoke(session.lease)).await {
            Err(CoordinationError::Unavailable(_)) => {}
            Ok(_) => {
                tracing::info!(lease = session.lease, "lost session's lease revoked");
                break;
            }
            Err(CoordinationError::SessionLost(_)) => break,
            Err(error) => {
                tracing::warn!(lease = session.lease, %error, "cannot revoke the lost session's lease; etcd expires it after its TTL");
                break;
            }
        }
        tokio::select! {
            _ = me.inner.shutdown.cancelled() => break,
            _ = tokio::time::sleep(me.inner.retry) => {}
        }
    }
}

/// One keep-alive round trip; `Some(new deadline)` or `None` when the lease is gone.
async fn renew_once(
    me: &EtcdCoordination,
    lease: i64,
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> Result<Option<Instant>> {
    if stream.is_none() {
        // Opening renews the lease once, and fails with "lease not found" when it is gone.
        match me.call(me.client().lease_keep_alive(lease)).await {
            Ok(opened) => *stream = Some(opened),
            Err(CoordinationError::SessionLost(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    let Some((keeper, answers)) = stream.as_mut() else {
        return Err(CoordinationError::Unavailable(
            "keep-alive stream missing".into(),
        ));
    };
    let sent = Instant::now();
    keeper.keep_alive().await.map_err(|e| me.error(e))?;
    match answers.message().await.map_err(|e| me.error(e))? {
        Some(answer) if answer.ttl > 0 => Ok(Some(sent + Duration::from_secs(answer.ttl as u64))),
        Some(_) => Ok(None),
        None => Err(CoordinationError::Unavailable(
            "etcd closed the keep-alive stream".into(),
        )),
    }
}

#[async_trait]
impl LockRelease for EtcdCoordination {
    async fn release_lock(&self, key: &str, fencing_token: u64) -> Result<()> {
        let mut ops = vec![TxnOp::delete(key, None)];
        if !self.inner.delay.is_zero() {
            ops.push(TxnOp::delete(tenure_key(key), None));
        }
        let txn = Txn::new()
            .when([Compare::create_revision(
                key,
                CompareOp::Equal,
                fencing_token as i64,
            )])
            .and_then(ops);
        self.call(self.client().txn(txn)).await.map(|_| ())
    }
}

#[async_trait]
impl LockAttempts for EtcdCoordination {
    async fn attempt(&self, key: &str, value: &str) -> Result<Attempt> {
        check_key(key)?;
        let with_delay = !self.inner.delay.is_zero();
        for _ in 0..3 {
            let session = self.session().await?;
            let mut compares = vec![Compare::create_revision(key, CompareOp::Equal, 0)];
            let mut puts = vec![TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(session.lease)),
            )];
            let mut gets = vec![TxnOp::get(key, None)];
            if with_delay {
                compares.push(Compare::create_revision(
                    tenure_key(key),
                    CompareOp::Equal,
                    0,
                ));
                compares.push(Compare::create_revision(
                    delay_key(key),
                    CompareOp::Equal,
                    0,
                ));
                puts.push(TxnOp::put(tenure_key(key), session.lease.to_string(), None));
                gets.push(TxnOp::get(tenure_key(key), None));
                gets.push(TxnOp::get(delay_key(key), None));
            }
            let txn = Txn::new().when(compares).and_then(puts).or_else(gets);
            let answer = match self.call(self.client().txn(txn)).await {
                Err(CoordinationError::SessionLost(reason)) => {
                    tracing::warn!(reason, "etcd lease vanished; starting a new session");
                    session.lost.cancel();
                    continue;
                }
                other => other?,
            };
            let revision = answer.revision;
            if answer.succeeded {
                return Ok(Attempt::Acquired(LockGuard::new(
                    key,
                    value,
                    revision as u64,
                    session.lost.child_token(),
                    Arc::new(self.clone()),
                )));
            }
            let since = revision.max(0) as u64;
            let ranges: Vec<_> = answer
                .responses
                .into_iter()
                .map(|op| match op {
                    TxnOpResponse::Get(get) => get.kvs.into_iter().next(),
                    _ => None,
                })
                .collect();
            if ranges.first().cloned().flatten().is_some() {
                return Ok(Attempt::Busy { since });
            }
            if !with_delay {
                continue;
            }
            if ranges.get(2).cloned().flatten().is_some() {
                return Ok(Attempt::Busy { since });
            }
            let Some(tenure) = ranges.get(1).cloned().flatten() else {
                continue;
            };
            let old_lease: i64 = text(&tenure.value).parse().unwrap_or(0);
            let holder_alive = old_lease == session.lease || self.lease_alive(old_lease).await?;
            if holder_alive {
                // The key was deleted while its holder lives (plain delete): no crash, no delay.
                let cleanup = Txn::new()
                    .when([Compare::mod_revision(
                        tenure_key(key),
                        CompareOp::Equal,
                        tenure.mod_revision,
                    )])
                    .and_then([TxnOp::delete(tenure_key(key), None)]);
                self.call(self.client().txn(cleanup)).await?;
                continue;
            }
            self.start_lock_delay(key, tenure.mod_revision).await?;
            return Ok(Attempt::Busy { since });
        }
        Ok(Attempt::Busy { since: 0 })
    }

    async fn wait_change(&self, key: &str, since: u64, max_wait: Duration) {
        let wait = async {
            if since == 0 {
                return std::future::pending::<()>().await;
            }
            let options = WatchOptions::new().with_start_revision(since as i64 + 1);
            let Ok(mut stream) = self.client().watch(key, Some(options.clone())).await else {
                return std::future::pending::<()>().await;
            };
            if !self.inner.delay.is_zero()
                && stream.watch(delay_key(key), Some(options)).await.is_err()
            {
                return std::future::pending::<()>().await;
            }
            loop {
                match stream.message().await {
                    Ok(Some(message)) if message.events.is_empty() && !message.canceled => {}
                    Ok(Some(_)) => return,
                    _ => return std::future::pending::<()>().await,
                }
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

struct EtcdDeregister {
    coordination: EtcdCoordination,
    key: String,
}

#[async_trait]
impl ServiceDeregister for EtcdDeregister {
    async fn deregister_service(&self, _id: &str) -> Result<()> {
        self.coordination.delete(&self.key).await
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
        let answer = self.call(self.client().get(key, None)).await?;
        Ok(answer
            .kvs
            .first()
            .filter(|kv| kv.lease != 0)
            .map(|kv| text(&kv.value)))
    }

    async fn list(&self, prefix: &str) -> Result<BTreeMap<String, String>> {
        let (entries, _) = self.range(prefix).await?;
        Ok(entries
            .into_iter()
            .filter(|(_, (_, lease))| *lease != 0)
            .map(|(k, (v, _))| (k, v))
            .collect())
    }

    async fn watch_prefix(&self, prefix: &str) -> Result<WatchEvents> {
        // Fail early when etcd is unreachable, like the other calls.
        let (first, first_revision) = self.range(prefix).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let me = self.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let mut known: BTreeMap<String, String> = BTreeMap::new();
            let mut listed = Some((first, first_revision));
            loop {
                let (snapshot, revision) = match listed.take() {
                    Some(listing) => listing,
                    None => match me.range(&prefix).await {
                        Ok(listing) => listing,
                        Err(e) => {
                            tracing::debug!(prefix, error = %e, "etcd watch resync failed");
                            tokio::select! {
                                _ = me.inner.shutdown.cancelled() => return,
                                _ = tx.closed() => return,
                                _ = tokio::time::sleep(RESYNC_BACKOFF) => continue,
                            }
                        }
                    },
                };
                let snapshot: BTreeMap<String, String> =
                    snapshot.into_iter().map(|(k, (v, _))| (k, v)).collect();
                for event in diff(&known, &snapshot) {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                known = snapshot;
                let options = WatchOptions::new()
                    .with_prefix()
                    .with_prev_kv()
                    .with_start_revision(revision + 1);
                let mut stream = match me
                    .call(me.client().watch(prefix.as_str(), Some(options)))
                    .await
                {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::debug!(prefix, error = %e, "etcd watch failed to start");
                        tokio::select! {
                            _ = me.inner.shutdown.cancelled() => return,
                            _ = tx.closed() => return,
                            _ = tokio::time::sleep(RESYNC_BACKOFF) => continue,
                        }
                    }
                };
                loop {
                    let message = tokio::select! {
                        _ = me.inner.shutdown.cancelled() => return,
                        _ = tx.closed() => return,
                        message = stream.message() => message,
                    };
                    let message = match message {
                        Ok(Some(message)) => message,
                        Ok(None) | Err(_) => break,
                    };
                    if message.canceled {
                        tracing::info!(
                            prefix,
                            compact_revision = message.compact_revision,
                            "etcd watch cancelled; resyncing"
                        );
                        break;
                    }
                    for event in message.events {
                        let key = text(&event.kv.key);
                        if is_internal(&key) {
                            continue;
                        }
                        let out = match event.event_type {
                            EventType::Put => {
                                let value = text(&event.kv.value);
                                known.insert(key.clone(), value.clone());
                                WatchEvent::Put { key, value }
                            }
                            EventType::Delete => {
                                known.remove(&key);
                                WatchEvent::Delete { key }
                            }
                        };
                        if tx.send(out).await.is_err() {
                            return;
                        }
                    }
                }
                tokio::select! {
                    _ = me.inner.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RESYNC_BACKOFF) => {}
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }

    #[tracing::instrument(skip(self, registration), fields(backend = "etcd", name = %registration.name, id = %registration.id))]
    async fn register_service(&self, registration: ServiceRegistration) -> Result<ServiceHandle> {
        let session = self.session().await?;
        let key = keys::service(&registration.name, &registration.id);
        let value = kv_services::encode(&registration);
        self.put_service(&key, &value, session.lease).await?;
        let keeper = CancellationToken::new();
        let stop = keeper.clone();
        let me = self.clone();
        let (key_bg, value_bg) = (key.clone(), value);
        tokio::spawn(async move {
            let mut session = session;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = me.inner.shutdown.cancelled() => return,
                    _ = session.lost.cancelled() => {}
                }
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = me.inner.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(me.inner.retry) => {}
                    }
                    let Ok(next) = me.session().await else {
                        continue;
                    };
                    match me.put_service(&key_bg, &value_bg, next.lease).await {
                        Ok(()) => {
                            tracing::info!(key = %key_bg, "service registered again under a new session");
                            session = next;
                            break;
                        }
                        Err(e) => tracing::debug!(error = %e, "service re-registration failed"),
                    }
                }
            }
        });
        let deregister = Arc::new(EtcdDeregister {
            coordination: self.clone(),
            key,
        });
        Ok(ServiceHandle::new(&registration.id, keeper, deregister))
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
        let answer = self.call(self.client().get(key, None)).await?;
        Ok(answer.kvs.first().map(|kv| text(&kv.value)))
    }

    async fn get_prefix(&self, prefix: &str) -> Result<BTreeMap<String, String>> {
        let (entries, _) = self.range(prefix).await?;
        Ok(entries.into_iter().map(|(k, (v, _))| (k, v)).collect())
    }

    async fn put(&self, key: &str, value: &str) -> Result<()> {
        check_key(key)?;
        self.call(self.client().put(key, value, None))
            .await
            .map(|_| ())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.call(self.client().delete(key, None))
            .await
            .map(|_| ())
    }

    async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let session = self.inner.session.lock().await.take();
        if let Some(session) = session {
            let _ = self.call(self.client().lease_revoke(session.lease)).await;
            session.lost.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TlsConfig;

    #[test]
    fn tls_settings_fail_clearly() {
        let skip = TlsConfig {
            skip_verify: true,
            ..Default::default()
        };
        let err = tls_options(&skip).unwrap_err().to_string();
        assert!(err.contains("skip-verify"), "{err}");
        let missing = TlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let err = tls_options(&missing).unwrap_err().to_string();
        assert!(
            err.contains("tls.ca-file") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
        let half = TlsConfig {
            cert_file: Some("/x.pem".into()),
            ..Default::default()
        };
        assert!(tls_options(&half)
            .unwrap_err()
            .to_string()
            .contains("together"));
    }

    #[test]
    fn internal_keys_are_reserved() {
        assert!(is_internal(&tenure_key("gnmic/c1/leader")));
        assert!(is_internal(&delay_key("gnmic/c1/leader")));
        assert!(crate::check_key(&delay_key("x")).is_err());
        assert!(crate::check_key("").is_err());
        assert!(crate::check_key("gnmic/c1/leader").is_ok());
    }
}
