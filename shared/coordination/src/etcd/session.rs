//! The instance's session: one lease, kept alive in the background, and the holder-side loss
//! signal every lock and service of the instance hangs on.
//!
//! The lease is granted with `session-ttl` (whole seconds; etcd raises TTLs below its minimum,
//! ~2 s) and renewed every `renew-period` on a keep-alive stream. The session counts as lost at
//! `send time of the last acknowledged keep-alive + granted TTL`, or at once when etcd reports
//! the lease gone; the old lease is then revoked (best effort, so its keys go at once when etcd
//! answers again) and the next call grants a new one.
//!
//! A failed renewal is retried with backoff within the renew period; a refused credential is
//! logged at error level (throttled) and retried at the same pace, since the session is lost
//! at its deadline anyway.

use super::client::Etcd;
use crate::retry_loop::RetryLoop;
use crate::{CoordinationError, LockerConfig, Result};
use gnomon_etcd::{LeaseKeepAliveStream, LeaseKeeper};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// One lease and its loss signal.
pub(super) struct Session {
    pub(super) lease: i64,
    /// Cancelled once the lease may be gone; every lock guard holds a child token.
    pub(super) lost: CancellationToken,
}

/// The current session of one instance, replaced on demand after a loss.
pub(super) struct Sessions {
    etcd: Etcd,
    instance: String,
    ttl_secs: i64,
    renew_period: Duration,
    retry: Duration,
    current: tokio::sync::Mutex<Option<Arc<Session>>>,
}

impl Sessions {
    pub(super) fn new(etcd: Etcd, cfg: &LockerConfig, instance: &str) -> Self {
        Self {
            etcd,
            instance: instance.to_string(),
            ttl_secs: cfg.session_ttl.as_secs_f64().ceil().max(1.0) as i64,
            renew_period: cfg.effective_renew_period(3),
            retry: cfg.retry_timer,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The live session, or a new one (a new lease, with its keep-alive task) when there is
    /// none or the last one was lost.
    pub(super) async fn current(&self) -> Result<Arc<Session>> {
        let mut slot = self.current.lock().await;
        if let Some(session) = slot.as_ref() {
            if !session.lost.is_cancelled() {
                return Ok(session.clone());
            }
        }
        if self.etcd.shutdown.is_cancelled() {
            return Err(CoordinationError::unavailable("etcd backend shut down"));
        }
        let sent = Instant::now();
        let grant = self
            .etcd
            .call(self.etcd.client().lease_grant(self.ttl_secs, 0))
            .await?;
        let granted = Duration::from_secs(grant.ttl.max(1) as u64);
        let session = Arc::new(Session {
            lease: grant.id,
            lost: CancellationToken::new(),
        });
        tracing::info!(instance = %self.instance, lease = grant.id, ttl = ?granted, "etcd session started");
        let keeper = KeepAlive {
            etcd: self.etcd.clone(),
            instance: self.instance.clone(),
            period: self.renew_period,
            retry: self.retry,
        };
        let span = tracing::info_span!("etcd_session", lease = grant.id);
        tokio::spawn(keeper.run(session.clone(), sent + granted).instrument(span));
        *slot = Some(session.clone());
        Ok(session)
    }

    /// The lease of the live session, if any.
    pub(super) async fn lease(&self) -> Option<i64> {
        self.current
            .lock()
            .await
            .as_ref()
            .filter(|s| !s.lost.is_cancelled())
            .map(|s| s.lease)
    }

    /// Ends the session at shutdown: revokes the lease (its locks and services go at once)
    /// and fires the loss signal.
    pub(super) async fn end(&self) {
        let session = self.current.lock().await.take();
        if let Some(session) = session {
            let _ = self
                .etcd
                .call(self.etcd.client().lease_revoke(session.lease))
                .await;
            session.lost.cancel();
        }
    }
}

/// The keep-alive task of one session.
struct KeepAlive {
    etcd: Etcd,
    instance: String,
    period: Duration,
    retry: Duration,
}

impl KeepAlive {
    /// Renews the lease until shutdown or loss; fires `session.lost` at the holder-side
    /// deadline, then revokes the lost lease.
    async fn run(self, session: Arc<Session>, mut deadline: Instant) {
        let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
        let mut retry = RetryLoop::new("etcd session keep-alive", self.period)
            .refusals_wait_at_most(self.period);
        let mut wait = self.period;
        let reason = loop {
            tokio::select! {
                _ = self.etcd.shutdown.cancelled() => {
                    session.lost.cancel();
                    return;
                }
                _ = tokio::time::sleep_until(deadline.into()) => break "no keep-alive acknowledged within the TTL",
                _ = tokio::time::sleep(wait) => {}
            }
            // Opening the stream is bounded by the client's request timeout; an answer that
            // never comes on an open stream is caught by the deadline.
            tokio::select! {
                _ = self.etcd.shutdown.cancelled() => {
                    session.lost.cancel();
                    return;
                }
                _ = tokio::time::sleep_until(deadline.into()) => break "no keep-alive acknowledged within the TTL",
                result = self.renew_once(session.lease, &mut stream) => match result {
                    Ok(Some(next_deadline)) => {
                        deadline = next_deadline;
                        wait = self.period;
                        retry.succeeded();
                    }
                    Ok(None) => break "etcd reports the lease expired",
                    Err(e) => {
                        wait = retry.failed(&e);
                        stream = None;
                    }
                }
            }
        };
        session.lost.cancel();
        tracing::warn!(instance = %self.instance, lease = session.lease, reason, "etcd session lost; every lock of this instance is lost");
        self.revoke_lost(session.lease).await;
    }

    /// One keep-alive round trip; `Some(new deadline)` or `None` when the lease is gone.
    async fn renew_once(
        &self,
        lease: i64,
        stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    ) -> Result<Option<Instant>> {
        let (keeper, answers) = match stream {
            Some(open) => open,
            // Opening renews the lease once, and fails with "lease not found" when it is gone.
            None => match self
                .etcd
                .call(self.etcd.client().lease_keep_alive(lease))
                .await
            {
                Ok(opened) => stream.insert(opened),
                Err(CoordinationError::SessionLost { .. }) => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        let sent = Instant::now();
        keeper.keep_alive().await.map_err(|e| self.etcd.error(e))?;
        match answers.message().await.map_err(|e| self.etcd.error(e))? {
            Some(answer) if answer.ttl > 0 => {
                Ok(Some(sent + Duration::from_secs(answer.ttl as u64)))
            }
            Some(_) => Ok(None),
            None => Err(CoordinationError::unavailable(
                "etcd closed the lease keep-alive stream",
            )),
        }
    }

    /// Frees the lost lease's keys as soon as etcd answers. This matters after an outage: a
    /// restarted etcd restores the lease with a fresh TTL, so without the revoke its locks
    /// would block everyone (this instance included) for another TTL.
    async fn revoke_lost(&self, lease: i64) {
        let mut retry = RetryLoop::new("revoking the lost etcd session", self.retry);
        loop {
            let wait = match self.etcd.call(self.etcd.client().lease_revoke(lease)).await {
                Ok(_) => {
                    tracing::info!(lease, "lost session's lease revoked");
                    return;
                }
                Err(CoordinationError::SessionLost { .. }) => return,
                Err(error @ CoordinationError::Unavailable { .. }) => retry.failed(&error),
                Err(error) => {
                    tracing::warn!(lease, %error, "cannot revoke the lost session's lease; etcd expires it after its TTL");
                    return;
                }
            };
            tokio::select! {
                _ = self.etcd.shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
