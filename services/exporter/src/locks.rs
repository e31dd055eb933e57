//! Keeps a [`LockTable`] in step with the target locks in the coordination store, so the
//! fencing judge believes only the current holder of each target.
//!
//! A full read first, then the store's watch on `gnmic/<cluster>/targets/`: every change of
//! a lock key re-reads that lock (holder and fencing token), and so does every token the
//! judge could not confirm (a handover the watch has not delivered yet, or a forgery). The
//! whole table is read again every [`RESYNC_INTERVAL`] as a safety net. Store errors are
//! retried with the shared backoff and logged at most once per interval; meanwhile the table
//! keeps what it knew.

use crate::fencing::LockTable;
use futures::StreamExt;
use gnomon_common::log::Escaped;
use gnomon_common::retry::Backoff;
use gnomon_coordination::{keys, Coordination};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the whole table is read again.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// Follows the locks of `cluster` into `table` until `shutdown`.
pub async fn follow_locks(
    coordination: Arc<dyn Coordination>,
    cluster: String,
    table: Arc<LockTable>,
    shutdown: CancellationToken,
) {
    crate::follow::until_cancelled(
        &shutdown,
        "following the target locks failed; fencing keeps the last known tokens",
        |backoff| {
            let (coordination, cluster, table) =
                (coordination.clone(), cluster.clone(), table.clone());
            Box::pin(async move { follow_once(&*coordination, &cluster, &table, backoff).await })
        },
    )
    .await;
}

/// One run: full read, then watch until the watch ends or a read fails.
async fn follow_once(
    coordination: &dyn Coordination,
    cluster: &str,
    table: &LockTable,
    backoff: &mut Backoff,
) -> Result<(), gnomon_coordination::CoordinationError> {
    let prefix = &format!("{}/", keys::targets_prefix(cluster));
    let mut events = coordination.watch_prefix(prefix).await?;
    resync(coordination, prefix, table).await?;
    backoff.reset();
    let mut resync_timer = tokio::time::interval(RESYNC_INTERVAL);
    resync_timer.reset();
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return Ok(()) };
                refresh(coordination, event.key(), table).await?;
            }
            _ = table.recheck_requested() => {
                for target in table.take_rechecks() {
                    refresh(coordination, &keys::target(cluster, &target), table).await?;
                }
            }
            _ = resync_timer.tick() => resync(coordination, prefix, table).await?,
        }
    }
}

async fn resync(
    coordination: &dyn Coordination,
    prefix: &str,
    table: &LockTable,
) -> Result<(), gnomon_coordination::CoordinationError> {
    let locks = coordination.list_locks(prefix).await?;
    let tokens: HashMap<String, u64> = locks
        .into_iter()
        .map(|(key, info)| {
            (
                keys::target_name_from_key(&key).to_string(),
                info.fencing_token,
            )
        })
        .collect();
    tracing::debug!(locks = tokens.len(), "target locks read");
    table.replace(tokens);
    Ok(())
}

/// Reads the lock `key` again and records its holder's token (or its absence).
async fn refresh(
    coordination: &dyn Coordination,
    key: &str,
    table: &LockTable,
) -> Result<(), gnomon_coordination::CoordinationError> {
    let target = keys::target_name_from_key(key);
    let locks = coordination.list_locks(key).await?;
    match locks.get(key) {
        Some(info) => {
            tracing::debug!(target = %Escaped(target), token = info.fencing_token, "target lock holder");
            table.set(target, info.fencing_token);
        }
        None => table.remove(target),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fencing::{Fencing, Verdict};
    use gnomon_coordination::{LockerConfig, LockerType, MemoryCoordination, MemoryStore};

    fn member(store: &MemoryStore, name: &str) -> Arc<dyn Coordination> {
        let mut cfg = LockerConfig::new(LockerType::Memory);
        cfg.delay = Duration::ZERO;
        Arc::new(MemoryCoordination::with_store(store.clone(), &cfg, name))
    }

    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_table_follows_holders_and_handovers() {
        let store = MemoryStore::named("exporter-follow-locks");
        let (collector_a, collector_b) = (member(&store, "a"), member(&store, "b"));
        let table = Arc::new(LockTable::default());
        let fencing = Fencing::following(table.clone());
        let shutdown = CancellationToken::new();
        tokio::spawn(follow_locks(
            member(&store, "exporter"),
            "c1".into(),
            table.clone(),
            shutdown.clone(),
        ));
        let key = keys::target("c1", "r1");
        let first = collector_a.acquire(&key, "a").await.unwrap().unwrap();
        let token_a = first.fencing_token();
        until("a's token", || table.get("r1") == Some(token_a)).await;
        assert_eq!(fencing.judge("r1", Some(token_a)), Verdict::Accept);
        first.release().await.unwrap();
        until("lock gone", || table.get("r1").is_none()).await;
        let second = collector_b.acquire(&key, "b").await.unwrap().unwrap();
        let token_b = second.fencing_token();
        until("b's token", || table.get("r1") == Some(token_b)).await;
        assert_eq!(fencing.judge("r1", Some(token_a)), Verdict::Stale);
        assert_eq!(fencing.judge("r1", Some(token_b)), Verdict::Accept);
        // A raised token nobody holds is not believed, and re-reading confirms nothing.
        assert_eq!(
            fencing.judge("r1", Some(token_b + 100)),
            Verdict::Unconfirmed
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(table.get("r1"), Some(token_b));
        shutdown.cancel();
    }
}
