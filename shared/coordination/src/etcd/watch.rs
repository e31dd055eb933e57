//! Prefix watches: the keys present at the start, then ordered events from the revision they
//! were listed at. When the stream breaks (disconnect, compaction, cancellation) the task lists
//! the prefix again, emits the differences to what it reported so far, and watches again from
//! the new listing's revision + 1, so consumers always converge on the store's content.

use super::client::{text, Etcd, Listing};
use crate::memory::diff;
use crate::{keys, Result, WatchEvent, WatchEvents};
use futures::StreamExt;
use gnomon_etcd::{EventType, WatchOptions};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;

const WATCH_BUFFER: usize = 256;
const RESYNC_BACKOFF: Duration = Duration::from_millis(250);

/// Lists `prefix` (failing like any call when etcd cannot be read) and hands the rest to a
/// background task that ends at shutdown or when the consumer drops the stream.
pub(super) async fn watch_prefix(etcd: &Etcd, prefix: &str) -> Result<WatchEvents> {
    let first = etcd.range(prefix).await?;
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    let task = PrefixWatch {
        etcd: etcd.clone(),
        prefix: prefix.to_string(),
        tx,
        known: BTreeMap::new(),
    };
    tokio::spawn(task.run(first));
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
}

struct PrefixWatch {
    etcd: Etcd,
    prefix: String,
    tx: mpsc::Sender<WatchEvent>,
    /// What the consumer has been told: key → value.
    known: BTreeMap<String, String>,
}

impl PrefixWatch {
    async fn run(mut self, first: Listing) {
        let mut listed = Some(first);
        loop {
            let (snapshot, revision) = match listed.take() {
                Some(listing) => listing,
                None => match self.etcd.range(&self.prefix).await {
                    Ok(listing) => listing,
                    Err(e) => {
                        tracing::debug!(prefix = %self.prefix, error = %e, "etcd watch resync failed");
                        if !self.pause().await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let snapshot: BTreeMap<String, String> =
                snapshot.into_iter().map(|(k, (v, _))| (k, v)).collect();
            for event in diff(&self.known, &snapshot) {
                if self.tx.send(event).await.is_err() {
                    return;
                }
            }
            self.known = snapshot;
            if !self.follow(revision).await {
                return;
            }
            if !self.pause().await {
                return;
            }
        }
    }

    /// Forwards events from `revision + 1` until the stream breaks (`true`: resync) or the
    /// watch must end (`false`).
    async fn follow(&mut self, revision: i64) -> bool {
        let options = WatchOptions::new()
            .with_prefix()
            .with_prev_kv()
            .with_start_revision(revision + 1);
        let mut stream = match self
            .etcd
            .call(
                self.etcd
                    .client()
                    .watch(self.prefix.as_str(), Some(options)),
            )
            .await
        {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(prefix = %self.prefix, error = %e, "etcd watch failed to start");
                return true;
            }
        };
        loop {
            let message = tokio::select! {
                _ = self.etcd.shutdown.cancelled() => return false,
                _ = self.tx.closed() => return false,
                message = stream.message() => message,
            };
            let message = match message {
                Ok(Some(message)) => message,
                Ok(None) | Err(_) => return true,
            };
            if message.canceled {
                tracing::info!(
                    prefix = %self.prefix,
                    compact_revision = message.compact_revision,
                    "etcd watch cancelled; resyncing"
                );
                return true;
            }
            for event in message.events {
                let key = text(&event.kv.key);
                if keys::is_internal(&key) {
                    continue;
                }
                let out = match event.event_type {
                    EventType::Put => {
                        let value = text(&event.kv.value);
                        self.known.insert(key.clone(), value.clone());
                        WatchEvent::Put { key, value }
                    }
                    EventType::Delete => {
                        self.known.remove(&key);
                        WatchEvent::Delete { key }
                    }
                };
                if self.tx.send(out).await.is_err() {
                    return false;
                }
            }
        }
    }

    /// Waits before the next resync; `false` when the watch must end instead.
    async fn pause(&self) -> bool {
        tokio::select! {
            _ = self.etcd.shutdown.cancelled() => false,
            _ = self.tx.closed() => false,
            _ = tokio::time::sleep(RESYNC_BACKOFF) => true,
        }
    }
}
