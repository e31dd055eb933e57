//! Prefix watches: the keys present at the start, then ordered events from the revision they
//! were listed at. When the stream breaks (disconnect, compaction, cancellation) the task lists
//! the prefix again, emits the differences to what it reported so far, and watches again from
//! the new listing's revision + 1, so consumers always converge on the store's content.
//!
//! Failures are retried with backoff up to `retry-timer` (longer while etcd refuses the
//! credential), logged once per interval; the stream itself never ends before shutdown.

use super::client::{text, Etcd, Listing};
use crate::memory::diff;
use crate::retry_loop::RetryLoop;
use crate::{keys, CoordinationError, Result, WatchEvent, WatchEvents};
use futures::StreamExt;
use gnomon_etcd::{EventType, WatchOptions};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

const WATCH_BUFFER: usize = 256;

/// Lists `prefix` (failing like any call when etcd cannot be read, e.g. with a refused
/// credential) and hands the rest to a background task that ends at shutdown or when the
/// consumer drops the stream.
pub(super) async fn watch_prefix(
    etcd: &Etcd,
    prefix: &str,
    retry_timer: Duration,
) -> Result<WatchEvents> {
    let first = etcd.range(prefix).await?;
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    let task = PrefixWatch {
        etcd: etcd.clone(),
        prefix: prefix.to_string(),
        tx,
        known: BTreeMap::new(),
        retry: RetryLoop::new("etcd watch", retry_timer),
    };
    let span = tracing::info_span!("etcd_watch", prefix = %gnomon_common::log::Escaped(prefix));
    tokio::spawn(task.run(first).instrument(span));
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
}

struct PrefixWatch {
    etcd: Etcd,
    prefix: String,
    tx: mpsc::Sender<WatchEvent>,
    /// What the consumer has been told: key → value.
    known: BTreeMap<String, String>,
    retry: RetryLoop,
}

/// How following the watch stream ended.
enum Followed {
    /// Shutdown, or the consumer is gone.
    Stop,
    /// The stream failed or could not be opened.
    Failed(CoordinationError),
    /// The stream ended or etcd cancelled the watch (e.g. compacted history): resync.
    Ended,
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
                        let wait = self.retry.failed(&e);
                        if !self.pause(wait).await {
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
            let wait = match self.follow(revision).await {
                Followed::Stop => return,
                Followed::Failed(e) => self.retry.failed(&e),
                Followed::Ended => self.retry.pause(),
            };
            if !self.pause(wait).await {
                return;
            }
        }
    }

    /// Forwards events from `revision + 1` until the stream breaks or the watch must end.
    async fn follow(&mut self, revision: i64) -> Followed {
        // No previous key-values: nothing here reads them, and etcd reads one from its
        // backend for every event that is not a create — 3 000 range reads before the
        // deletes of a dead member's 3 000 locks reach the leader.
        let options = WatchOptions::new()
            .with_prefix()
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
            Err(e) => return Followed::Failed(e),
        };
        self.retry.succeeded();
        loop {
            let message = tokio::select! {
                _ = self.etcd.shutdown.cancelled() => return Followed::Stop,
                _ = self.tx.closed() => return Followed::Stop,
                message = stream.message() => message,
            };
            let message = match message {
                Ok(Some(message)) => message,
                Ok(None) => return Followed::Ended,
                Err(e) => return Followed::Failed(self.etcd.error(e)),
            };
            if message.canceled {
                tracing::info!(
                    compact_revision = message.compact_revision,
                    reason = %message.cancel_reason,
                    "etcd watch cancelled; resyncing"
                );
                return Followed::Ended;
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
                    return Followed::Stop;
                }
            }
        }
    }

    /// Waits `wait` before the next resync; `false` when the watch must end instead.
    async fn pause(&self, wait: Duration) -> bool {
        tokio::select! {
            _ = self.etcd.shutdown.cancelled() => false,
            _ = self.tx.closed() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }
}
