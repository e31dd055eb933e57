//! Locks with fencing tokens, and the lock-delay etcd does not have.
//!
//! * Acquire: one txn `create_revision(key) == 0` → `put(key, value, lease)`. The fencing
//!   token is that txn's revision (= the key's create_revision; cluster-wide monotonic).
//! * Group commit: without lock-delay, the attempts a process makes while one acquire txn is
//!   in flight go together into the next txn (at most [`LOCK_BATCH`] keys, all compared and
//!   put at once; the keys share that txn's revision as their fencing token). A member given
//!   thousands of targets takes their locks in a few hundred txns instead of one each: etcd's
//!   cost is mostly per txn (raft entry, WAL write, watch response), and so is the client's.
//!   One busy key fails the whole txn; its answer names every busy key, and the free ones go
//!   again at once. A lone attempt is sent as soon as it comes, so waiting costs nothing.
//! * Release: txn `create_revision(key) == token` → delete (never deletes a later holder's
//!   key).
//! * Lock-delay emulation (only when `delay > 0`): the acquire txn also writes
//!   `__gnomon/lock-tenure/<key>` = lease id (no lease) and requires both it and
//!   `__gnomon/lock-delay/<key>` to be absent. A graceful release deletes the tenure with the
//!   key. When an acquirer finds the key gone but a tenure whose lease is dead (crash or
//!   expiry), it swaps the tenure for `__gnomon/lock-delay/<key>` under a fresh lease of
//!   TTL = delay (whole seconds, at least etcd's minimum TTL); acquires fail until that lease
//!   expires. The delay therefore starts when the first contender notices the loss, never
//!   earlier than the expiry. These attempts are not grouped: each may need its own repair.

use super::client::{found_keys, text, Etcd};
use super::session::Sessions;
use crate::keys::INTERNAL_PREFIX;
use crate::{Attempt, CoordinationError, LockGuard, LockRelease, Result};
use async_trait::async_trait;
use gnomon_etcd::{
    Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Keys one grouped acquire txn takes at most: well under etcd's default `--max-txn-ops`
/// (128). A txn etcd refuses (a lower limit) is retried key by key.
const LOCK_BATCH: usize = 64;

/// Attempts waiting for the group-commit task; callers wait for room when it is full.
const QUEUED_ATTEMPTS: usize = 4096;

fn tenure_key(key: &str) -> String {
    format!("{INTERNAL_PREFIX}lock-tenure/{key}")
}

fn delay_key(key: &str) -> String {
    format!("{INTERNAL_PREFIX}lock-delay/{key}")
}

/// Lock attempts and releases of one instance; cheap to clone.
#[derive(Clone)]
pub(super) struct Locks {
    single: SingleAttempts,
    /// The group-commit task's queue; `None` with lock-delay.
    grouped: Option<mpsc::Sender<Queued>>,
}

/// One attempt waiting for a grouped txn.
struct Queued {
    key: String,
    value: String,
    reply: oneshot::Sender<Result<Attempt>>,
}

impl Locks {
    /// Must run inside a tokio runtime without lock-delay: it starts the group-commit task,
    /// which ends with the last clone (or the backend's shutdown).
    pub(super) fn new(etcd: Etcd, sessions: Arc<Sessions>, delay: Duration) -> Self {
        let releaser = Arc::new(Releaser {
            etcd: etcd.clone(),
            delay,
        });
        let single = SingleAttempts {
            etcd,
            sessions,
            delay,
            releaser,
        };
        let grouped = delay.is_zero().then(|| {
            let (queue, queued) = mpsc::channel(QUEUED_ATTEMPTS);
            tokio::spawn(single.clone().group_commit(queued));
            queue
        });
        Self { single, grouped }
    }

    /// One attempt to take `key` (retried internally only when the session's lease vanished
    /// or the key changed under the attempt).
    pub(super) async fn attempt(&self, key: &str, value: &str) -> Result<Attempt> {
        if let Some(queue) = &self.grouped {
            let (reply, answer) = oneshot::channel();
            let queued = Queued {
                key: key.to_string(),
                value: value.to_string(),
                reply,
            };
            if queue.send(queued).await.is_ok() {
                if let Ok(outcome) = answer.await {
                    return outcome;
                }
            }
            // The task has ended (shutdown): attempt alone.
        }
        self.single.attempt(key, value).await
    }

    /// Returns when `key` (or its lock-delay marker) changed after revision `since`, or after
    /// `max_wait`.
    pub(super) async fn wait_change(&self, key: &str, since: u64, max_wait: Duration) {
        self.single.wait_change(key, since, max_wait).await
    }
}

/// Attempts one key at a time, and the group-commit task that batches them.
#[derive(Clone)]
struct SingleAttempts {
    etcd: Etcd,
    sessions: Arc<Sessions>,
    delay: Duration,
    releaser: Arc<Releaser>,
}

/// Releases the locks its guards hold.
struct Releaser {
    etcd: Etcd,
    delay: Duration,
}

impl SingleAttempts {
    /// One attempt to take `key` on its own (retried internally only when the session's
    /// lease vanished or the key changed under the attempt).
    async fn attempt(&self, key: &str, value: &str) -> Result<Attempt> {
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
                    self.releaser.clone(),
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

    async fn wait_change(&self, key: &str, since: u64, max_wait: Duration) {
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

    /// The group-commit task: takes what is queued (up to [`LOCK_BATCH`] distinct keys),
    /// attempts it, and goes again.
    async fn group_commit(self, mut queued: mpsc::Receiver<Queued>) {
        // A second attempt at a key already in the batch waits for the next one: etcd
        // refuses a txn that puts one key twice.
        let mut later: Vec<Queued> = Vec::new();
        loop {
            let first = match later.pop() {
                Some(first) => first,
                None => tokio::select! {
                    _ = self.etcd.shutdown.cancelled() => return,
                    next = queued.recv() => match next {
                        Some(next) => next,
                        None => return,
                    },
                },
            };
            let mut keys = HashSet::from([first.key.clone()]);
            let mut batch = vec![first];
            let mut held_back = std::mem::take(&mut later).into_iter();
            while batch.len() < LOCK_BATCH {
                let Some(next) = held_back.next().or_else(|| queued.try_recv().ok()) else {
                    break;
                };
                if keys.insert(next.key.clone()) {
                    batch.push(next);
                } else {
                    later.push(next);
                }
            }
            later.extend(held_back);
            self.attempt_together(batch).await;
        }
    }

    /// Attempts every key of `batch` in as few txns as etcd allows and answers each caller.
    async fn attempt_together(&self, mut batch: Vec<Queued>) {
        for _ in 0..3 {
            if batch.len() < 2 {
                break;
            }
            let Ok(session) = self.sessions.current().await else {
                break;
            };
            let txn =
                Txn::new()
                    .when(
                        batch
                            .iter()
                            .map(|q| Compare::create_revision(q.key.as_str(), CompareOp::Equal, 0)),
                    )
                    .and_then(batch.iter().map(|q| {
                        TxnOp::put(
                            q.key.as_str(),
                            q.value.as_str(),
                            Some(PutOptions::new().with_lease(session.lease)),
                        )
                    }))
                    .or_else(batch.iter().map(|q| {
                        TxnOp::get(q.key.as_str(), Some(GetOptions::new().with_keys_only()))
                    }));
            let answer = match self.etcd.call(self.etcd.client().txn(txn)).await {
                Ok(answer) => answer,
                Err(error @ CoordinationError::SessionLost { .. }) => {
                    tracing::warn!(%error, "etcd lease vanished; starting a new session");
                    session.lost.cancel();
                    continue;
                }
                // Each caller gets its own error (or success) from a lone attempt below.
                Err(_) => break,
            };
            let revision = answer.revision;
            if answer.succeeded {
                for q in batch {
                    let guard = LockGuard::new(
                        &q.key,
                        &q.value,
                        revision as u64,
                        session.lost.child_token(),
                        self.releaser.clone(),
                    );
                    let _ = q.reply.send(Ok(Attempt::Acquired(guard)));
                }
                return;
            }
            let held = found_keys(answer.responses);
            let since = revision.max(0) as u64;
            let (busy, free): (Vec<Queued>, Vec<Queued>) = batch
                .into_iter()
                .partition(|q| held.contains(q.key.as_bytes()));
            for q in busy {
                let _ = q.reply.send(Ok(Attempt::Busy { since }));
            }
            batch = free;
        }
        let lone = batch.into_iter().map(|q| async move {
            let outcome = self.attempt(&q.key, &q.value).await;
            let _ = q.reply.send(outcome);
        });
        futures::future::join_all(lone).await;
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
impl LockRelease for Releaser {
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
