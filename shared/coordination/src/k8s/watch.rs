//! Prefix watches over the Leases: LIST, then WATCH from the list's `resourceVersion`;
//! re-opened from the last version seen when the API server ends a watch (its
//! `timeoutSeconds`), listed again after a `410 Gone` (the differences are emitted), retried
//! with backoff after errors. Lock expiry is no event in Kubernetes: the watcher emits the
//! `Delete` itself when `renewTime + leaseDurationSeconds` passes on its clock.

use super::client::{Event, Failure, WATCH_SECONDS};
use super::lease::{Record, STORE_SELECTOR};
use super::K8sCoordination;
use crate::memory::diff;
use crate::retry_loop::RetryLoop;
use crate::{Result, WatchEvent, WatchEvents};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

const WATCH_BUFFER: usize = 256;

/// The Leases under one prefix, as last listed or watched.
struct Mirror {
    prefix: String,
    /// By object name: records whose key is under the prefix.
    objects: HashMap<String, Record>,
    /// What the consumer has been told: key → value.
    emitted: BTreeMap<String, String>,
    version: String,
}

impl Mirror {
    fn new(prefix: String) -> Self {
        Self {
            prefix,
            objects: HashMap::new(),
            emitted: BTreeMap::new(),
            version: String::new(),
        }
    }

    fn reset(&mut self, items: &[Lease], version: String) {
        self.objects = items
            .iter()
            .filter_map(|lease| Some((lease.metadata.name.clone()?, Record::parse(lease)?)))
            .filter(|(_, record)| record.key.starts_with(&self.prefix))
            .collect();
        self.version = version;
    }

    fn apply(&mut self, lease: &Lease, removed: bool) {
        if let Some(version) = &lease.metadata.resource_version {
            self.version = version.clone();
        }
        let Some(name) = lease.metadata.name.clone() else {
            return;
        };
        match Record::parse(lease).filter(|r| !removed && r.key.starts_with(&self.prefix)) {
            Some(record) => {
                self.objects.insert(name, record);
            }
            None => {
                self.objects.remove(&name);
            }
        }
    }

    /// The events that bring the consumer to what is present at `now`.
    fn settle(&mut self, now: SystemTime) -> Vec<WatchEvent> {
        let current: BTreeMap<String, String> = self
            .objects
            .values()
            .filter(|r| r.present(now))
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect();
        let events = diff(&self.emitted, &current);
        self.emitted = current;
        events
    }

    /// How long until the next lock under the prefix expires.
    fn next_expiry(&self, now: SystemTime) -> Option<Duration> {
        self.objects
            .values()
            .filter_map(Record::expires)
            .filter_map(|at| at.duration_since(now).ok())
            .min()
    }
}

/// Lists now (so a refusal is returned to the caller), then follows in the background.
pub(crate) async fn watch_prefix(me: K8sCoordination, prefix: String) -> Result<WatchEvents> {
    let (items, version) = me
        .client()
        .list_leases(STORE_SELECTOR, None)
        .await
        .map_err(|f| f.into_error("listing leases"))?;
    let mut mirror = Mirror::new(prefix);
    mirror.reset(&items, version);
    let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
    tokio::spawn(async move {
        let mut retry = RetryLoop::new("kubernetes lease watch", me.inner.retry);
        let shutdown = me.inner.shutdown.clone();
        let mut relist = false;
        loop {
            for event in mirror.settle(SystemTime::now()) {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            if relist {
                let listed = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    listed = me.client().list_leases(STORE_SELECTOR, None) => listed,
                };
                match listed {
                    Ok((items, version)) => {
                        mirror.reset(&items, version);
                        relist = false;
                        retry.succeeded();
                        continue;
                    }
                    Err(failure) => {
                        let wait = retry.failed(&failure.into_error("listing leases"));
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tx.closed() => return,
                            _ = tokio::time::sleep(wait) => continue,
                        }
                    }
                }
            }
            let opened = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                opened = me.client().watch_leases(STORE_SELECTOR, None, &mirror.version, WATCH_SECONDS) => opened,
            };
            let mut events = match opened {
                Ok(events) => events,
                Err(Failure::Gone) => {
                    relist = true;
                    continue;
                }
                Err(failure) => {
                    let wait = retry.failed(&failure.into_error("watching leases"));
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            loop {
                let now = SystemTime::now();
                let expiry = mirror.next_expiry(now);
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(expiry.unwrap_or(Duration::MAX)), if expiry.is_some() => None,
                    event = events.next() => Some(event),
                };
                match event {
                    // A lock expired: settle below.
                    None => {}
                    // The server ended the watch: open the next one from where we are.
                    Some(None) => break,
                    Some(Some(Ok(Event::Upsert(lease)))) => {
                        retry.succeeded();
                        mirror.apply(&lease, false);
                    }
                    Some(Some(Ok(Event::Remove(lease)))) => mirror.apply(&lease, true),
                    Some(Some(Ok(Event::Bookmark(version)))) => mirror.version = version,
                    Some(Some(Err(Failure::Gone))) => {
                        relist = true;
                        break;
                    }
                    Some(Some(Err(failure))) => {
                        let wait = retry.failed(&failure.into_error("watching leases"));
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tx.closed() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        break;
                    }
                }
                for event in mirror.settle(SystemTime::now()) {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::lease::{claim, new_lease, Claim};

    fn held(key: &str, value: &str, renewed: SystemTime, version: &str) -> Lease {
        let mut lease = new_lease(key, value);
        lease.metadata.resource_version = Some(version.into());
        claim(
            &mut lease,
            &Claim {
                identity: "h-1",
                value,
                duration: Duration::from_secs(2),
                delay: Duration::ZERO,
                token: 1,
                now: renewed,
            },
        );
        lease
    }

    #[test]
    fn a_mirror_emits_puts_changes_and_expiries() {
        let now = SystemTime::now();
        let mut mirror = Mirror::new("gnmic/c/".into());
        let mut plain = new_lease("gnmic/c/config/targets/t1", "{}");
        plain.metadata.resource_version = Some("3".into());
        let other = new_lease("gnmic/other/leader", "x");
        mirror.reset(
            &[plain, other, held("gnmic/c/targets/t1", "g1", now, "4")],
            "5".into(),
        );
        let events = mirror.settle(now);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(mirror.settle(now).is_empty(), "nothing new");
        let expiry = mirror.next_expiry(now).unwrap();
        assert!(expiry <= Duration::from_secs(2));
        // A renewal moves the expiry and emits nothing.
        let later = now + Duration::from_secs(1);
        mirror.apply(&held("gnmic/c/targets/t1", "g1", later, "6"), false);
        assert!(mirror.settle(later).is_empty());
        assert_eq!(mirror.version, "6");
        // Past renewTime + duration, the lock is gone for readers.
        let events = mirror.settle(later + Duration::from_secs(2));
        assert_eq!(
            events,
            vec![WatchEvent::Delete {
                key: "gnmic/c/targets/t1".into()
            }]
        );
        mirror.apply(&new_lease("gnmic/c/config/targets/t1", "{}"), true);
        assert_eq!(
            mirror.settle(later + Duration::from_secs(3)),
            vec![WatchEvent::Delete {
                key: "gnmic/c/config/targets/t1".into()
            }],
            "a deleted key is a Delete"
        );
    }
}
