//! Locks with fencing tokens, and the lock-delay etcd does not have.
//!
//! * Acquire: one txn `create_revision(key) == 0` → `put(key, value, lease)`. The fencing
//!   token is that txn's revision (= the key's create_revision; cluster-wide monotonic).
//! * Release: txn `create_revision(key) == token` → delete (never deletes a later holder's
//!   key).
//! * Lock-delay emulation (only when `delay > 0`): the acquire txn also writes
//!   `__gnomon/lock-tenure/<key>` = lease id (no lease) and requires both it and
//!   `__gnomon/lock-delay/<key>` to be absent. A graceful release deletes the tenure with the
//!   key. When an acquirer finds the key gone but a tenure whose lease is dead (crash or
//!   expiry), it swaps the tenure for `__gnomon/lock-delay/<key>` under a fresh lease of
//!   TTL = delay (whole seconds, at least etcd's minimum TTL); acquires fail until that lease
//!   expires. The delay therefore starts when the first contender notices the loss, never
//!   earlier than the expiry.

use super::client::{text, Etcd};
use super::session::Sessions;
use crate::keys::INTERNAL_PREFIX;
use crate::{Attempt, CoordinationError, LockGuard, LockRelease, Result};
use async_trait::async_trait;
use gnomon_etcd::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};
use std::sync::Arc;
use std::time::Duration;

fn tenure_key(key: &str) -> String {
    format!("{INTERNAL_PREFIX}lock-tenure/{key}")
}

fn delay_key(key: &str) -> String {
    format!("{INTERNAL_PREFIX}lock-delay/{key}")
}

/// Lock attempts and releases of one instance; cheap to clone (a clone is each guard's
/// releaser).
#[derive(Clone)]
pub(super) struct Locks {
    etcd: Etcd,
    sessions: Arc<Sessions>,
    delay: Duration,
}

impl Locks {
    pub(super) fn new(etcd: Etcd, sessions: Arc<Sessions>, delay: Duration) -> Self {
        Self {
            etcd,
            sessions,
            delay,
        }
    }

    /// One attempt to take `key` (retried internally only when the session's lease vanished
    /// or the key changed under the attempt).
    pub(super) async fn attempt(&self, key: &str, value: &str) -> Result<Attempt> {
        let with_delay = !self.delay.is_zero();
        for _ in 0..3 {
            let session = self.sessions.current().await?;
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
            let answer = match self.etcd.call(self.etcd.client().txn(txn)).await {
                Err(error @ CoordinationError::SessionLost { .. }) => {
                    tracing::warn!(%error, "etcd lease vanished; starting a new session");
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
                self.etcd.call(self.etcd.client().txn(cleanup)).await?;
                continue;
            }
            self.start_lock_delay(key, tenure.mod_revision).await?;
            return Ok(Attempt::Busy { since });
        }
        Ok(Attempt::Busy { since: 0 })
    }

    /// Returns when `key` (or its lock-delay marker) changed after revision `since`, or after
    /// `max_wait`.
    pub(super) async fn wait_change(&self, key: &str, since: u64, max_wait: Duration) {
        let wait = async {
            if since == 0 {
                return std::future::pending::<()>().await;
            }
            let options = WatchOptions::new().with_start_revision(since as i64 + 1);
            let Ok(mut stream) = self.etcd.client().watch(key, Some(options.clone())).await else {
                return std::future::pending::<()>().await;
            };
            if !self.delay.is_zero() && stream.watch(delay_key(key), Some(options)).await.is_err() {
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

    async fn lease_alive(&self, lease: i64) -> Result<bool> {
        let answer = self
            .etcd
            .call(self.etcd.client().lease_time_to_live(lease, false))
            .await?;
        Ok(answer.ttl > 0)
    }

    /// Swaps a dead holder's tenure record for a lock-delay marker (see the module docs).
    async fn start_lock_delay(&self, key: &str, tenure_revision: i64) -> Result<()> {
        let client = self.etcd.client();
        let secs = self.delay.as_secs_f64().ceil().max(1.0) as i64;
        let lease = self.etcd.call(client.lease_grant(secs, 0)).await?.id;
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
        let started = self.etcd.call(client.txn(txn)).await?.succeeded;
        if started {
            tracing::info!(key, delay = ?self.delay, "holder died; lock-delay started");
        } else {
            let _ = self.etcd.call(client.lease_revoke(lease)).await;
        }
        Ok(())
    }
}

#[async_trait]
impl LockRelease for Locks {
    async fn release_lock(&self, key: &str, fencing_token: u64) -> Result<()> {
        let mut ops = vec![TxnOp::delete(key, None)];
        if !self.delay.is_zero() {
            ops.push(TxnOp::delete(tenure_key(key), None));
        }
        let txn = Txn::new()
            .when([Compare::create_revision(
                key,
                CompareOp::Equal,
                fencing_token as i64,
            )])
            .and_then(ops);
        self.etcd
            .call(self.etcd.client().txn(txn))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::is_internal;

    #[test]
    fn internal_keys_are_reserved() {
        assert!(is_internal(&tenure_key("gnmic/c1/leader")));
        assert!(is_internal(&delay_key("gnmic/c1/leader")));
        assert!(crate::check_key(&delay_key("x")).is_err());
        assert!(crate::check_key("").is_err());
        assert!(crate::check_key("gnmic/c1/leader").is_ok());
    }
}
