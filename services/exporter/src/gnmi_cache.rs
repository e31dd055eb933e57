//! The latest value of every collected path, per target, for the gNMI server
//! ([`crate::gnmi_server`]), fed from the same ingest path as the Prometheus outputs (after
//! fencing and decoding, before any processor: gnmic's gNMI server caches what the targets
//! sent).
//!
//! Why this shape: ingest must cost a map update and must never wait for a subscriber, and
//! a subscriber's first dump must not stall ingest of other targets. So each target has its
//! own `RwLock<BTreeMap<path text, Entry>>` (a dump locks one target at a time, for a copy
//! of the matching entries; ordered, so a dump is in path order), and every applied change
//! is published once, as an `Arc`, on a `tokio::sync::broadcast` ring: sending never waits
//! and costs the same for 0 or 1000 subscribers. A subscriber that falls more than the
//! ring's capacity behind learns it (`Lagged`) and is ended; ingest does not notice.
//! Each change carries its target's sequence number, taken under the target's lock, so a
//! subscriber that subscribes to the ring *before* copying a target's entries skips exactly
//! the changes its copy already holds — no gap, no duplicate.
//!
//! Each leaf is an `Arc<Leaf>` holding its `Update` already encoded (PROTO): a change shares
//! the leaves it touched instead of copying them, and a dump or a change is written from
//! those bytes ([`crate::gnmi_wire`]) without walking or cloning a `Path` per subscriber.
//!
//! What it costs: per path its text key (~60–100 bytes), the `Path` and `TypedValue`
//! (~200 bytes), its encoded `Update` (~100 bytes), a timestamp and an `Instant`; per
//! updated leaf one encode at ingest; per change one allocation shared by every subscriber
//! (and one PROTO encoding of it, made by the first subscriber that wants all of it); each
//! subscriber filters every change (pattern match per update), so fan-out costs
//! subscribers × updates matches. Bounded by `cache.max-paths` (new paths beyond it are
//! dropped and counted) and by the ring's capacity (`max-subscriber-lag` changes).

use crate::gnmi_wire::Encoded;
use bytes::Bytes;
use gnomon_gnmi::path::{join_paths, parse_path, path_matches, path_to_string};
use gnomon_gnmi::proto::gnmi::{typed_value, Notification, Path, TypedValue, Update};
use gnomon_gnmi::value::update_value;
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// A leaf's path and value, with its `Update` encoded once (PROTO), shared by the cache
/// and every change and dump that carries it.
#[derive(Debug)]
pub struct Leaf {
    /// The full path (prefix joined), without target.
    pub path: Path,
    pub value: TypedValue,
    /// `Update { path, val }` as protobuf.
    pub encoded: Bytes,
}

impl Leaf {
    fn new(path: Path, value: TypedValue) -> Arc<Self> {
        let update = Update {
            path: Some(path),
            val: Some(value),
            ..Default::default()
        };
        let encoded = Bytes::from(update.encode_to_vec());
        Arc::new(Self {
            path: update.path.unwrap_or_default(),
            value: update.val.unwrap_or_default(),
            encoded,
        })
    }
}

/// One cached leaf.
#[derive(Clone, Debug)]
pub struct Entry {
    pub leaf: Arc<Leaf>,
    /// The device's timestamp (ns since the epoch).
    pub timestamp: i64,
    touched: Instant,
}

/// What one ingested notification changed on one target.
#[derive(Debug)]
pub struct Change {
    pub target: Arc<str>,
    /// The target's sequence number after this change.
    pub seq: u64,
    pub timestamp: i64,
    /// Updated leaves.
    pub updates: Vec<Arc<Leaf>>,
    /// Deleted paths as sent (a delete may cover a subtree).
    pub deletes: Vec<Path>,
    /// The whole change as one PROTO SubscribeResponse, encoded by the first subscriber
    /// that wants all of it and shared by the others.
    pub whole: OnceLock<Encoded>,
}

#[derive(Default)]
struct TargetState {
    seq: u64,
    entries: BTreeMap<String, Entry>,
}

/// A copy of one target's matching entries at sequence `seq`.
pub struct TargetSnapshot {
    pub target: Arc<str>,
    pub seq: u64,
    pub entries: Vec<Entry>,
}

/// The cache.
pub struct GnmiCache {
    targets: RwLock<HashMap<Arc<str>, Arc<RwLock<TargetState>>>>,
    paths: AtomicUsize,
    max_paths: usize,
    over_cap: AtomicU64,
    changes: broadcast::Sender<Arc<Change>>,
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The path without its target (the cache keys paths by target separately).
fn untargeted(mut path: Path) -> Path {
    path.target.clear();
    path
}

fn has_wildcards(path: &Path) -> bool {
    path.elem
        .iter()
        .any(|e| e.name == "*" || e.name == "..." || e.key.values().any(|v| v == "*"))
}

impl GnmiCache {
    /// A cache of at most `max_paths` paths whose change ring holds `ring` changes.
    pub fn new(max_paths: usize, ring: usize) -> Self {
        let (changes, _) = broadcast::channel(ring.max(1));
        Self {
            targets: RwLock::new(HashMap::new()),
            paths: AtomicUsize::new(0),
            max_paths,
            over_cap: AtomicU64::new(0),
            changes,
        }
    }

    /// Changes from now on (subscribe before [`Self::snapshot`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// Paths held.
    pub fn len(&self) -> usize {
        self.paths.load(Ordering::Relaxed)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// New paths refused because the cache was full.
    pub fn over_cap(&self) -> u64 {
        self.over_cap.load(Ordering::Relaxed)
    }

    fn target_state(&self, target: &str) -> Arc<RwLock<TargetState>> {
        if let Some(state) = read(&self.targets).get(target) {
            return state.clone();
        }
        write(&self.targets)
            .entry(Arc::from(target))
            .or_default()
            .clone()
    }

    /// Applies a notification of `target`: deletes first, then updates (as gNMI orders
    /// them); an update older than the cached value is ignored. Returns how many new paths
    /// were refused over the cap.
    pub fn ingest(&self, target: &str, notification: &Notification) -> u64 {
        if notification.update.is_empty() && notification.delete.is_empty() {
            return 0;
        }
        let prefix = notification.prefix.as_ref();
        let state = self.target_state(target);
        let mut refused = 0;
        let mut change = Change {
            target: Arc::from(target),
            seq: 0,
            timestamp: notification.timestamp,
            updates: Vec::with_capacity(notification.update.len()),
            deletes: Vec::with_capacity(notification.delete.len()),
            whole: OnceLock::new(),
        };
        let now = Instant::now();
        let mut state = write(&state);
        for delete in &notification.delete {
            let path = untargeted(join_paths(prefix, delete));
            let removed = remove_matching(&mut state.entries, &path);
            self.paths.fetch_sub(removed, Ordering::Relaxed);
            change.deletes.push(path);
        }
        for update in &notification.update {
            let Some(value) = update_value(update) else {
                continue;
            };
            let path = match &update.path {
                Some(path) => untargeted(join_paths(prefix, path)),
                None => untargeted(prefix.cloned().unwrap_or_default()),
            };
            let key = path_to_string(&path);
            match state.entries.get_mut(&key) {
                Some(entry) => {
                    if entry.timestamp > notification.timestamp {
                        continue;
                    }
                    entry.leaf = Leaf::new(path, value.into_owned());
                    entry.timestamp = notification.timestamp;
                    entry.touched = now;
                    change.updates.push(entry.leaf.clone());
                }
                None => {
                    if self.paths.load(Ordering::Relaxed) >= self.max_paths {
                        refused += 1;
                        continue;
                    }
                    self.paths.fetch_add(1, Ordering::Relaxed);
                    let leaf = Leaf::new(path, value.into_owned());
                    change.updates.push(leaf.clone());
                    state.entries.insert(
                        key,
                        Entry {
                            leaf,
                            timestamp: notification.timestamp,
                            touched: now,
                        },
                    );
                }
            }
        }
        if refused > 0 {
            self.over_cap.fetch_add(refused, Ordering::Relaxed);
        }
        if change.updates.is_empty() && change.deletes.is_empty() {
            return refused;
        }
        state.seq += 1;
        change.seq = state.seq;
        // Sent under the target's lock so the ring's order is the sequence order; a send
        // never waits (no receiver is not an error worth anything).
        let _ = self.changes.send(Arc::new(change));
        refused
    }

    /// Copies the entries matching any of `patterns` of the targets `selects` accepts.
    pub fn snapshot(
        &self,
        selects: impl Fn(&str) -> bool,
        patterns: &[Path],
    ) -> Vec<TargetSnapshot> {
        let mut targets: Vec<(Arc<str>, Arc<RwLock<TargetState>>)> = read(&self.targets)
            .iter()
            .filter(|(name, _)| selects(name))
            .map(|(name, state)| (name.clone(), state.clone()))
            .collect();
        targets.sort_by(|a, b| a.0.cmp(&b.0));
        targets
            .into_iter()
            .map(|(target, state)| {
                let state = read(&state);
                let entries = state
                    .entries
                    .values()
                    .filter(|e| patterns.iter().any(|p| path_matches(p, &e.leaf.path)))
                    .cloned()
                    .collect();
                TargetSnapshot {
                    target,
                    seq: state.seq,
                    entries,
                }
            })
            .collect()
    }

    /// The targets `selects` accepts, in name order.
    pub fn targets(&self, selects: impl Fn(&str) -> bool) -> Vec<Arc<str>> {
        let mut targets: Vec<Arc<str>> = read(&self.targets)
            .keys()
            .filter(|name| selects(name))
            .cloned()
            .collect();
        targets.sort();
        targets
    }

    /// Calls `each` with `target`'s sequence number and its entries matching `patterns` in
    /// dump order (by device timestamp, then path), under the target's read lock: nothing
    /// is copied, so `each` should only encode. A target never seen is at sequence 0.
    pub fn visit<R>(
        &self,
        target: &str,
        patterns: &[Path],
        each: impl FnOnce(u64, &[&Entry]) -> R,
    ) -> R {
        let Some(state) = read(&self.targets).get(target).cloned() else {
            return each(0, &[]);
        };
        let state = read(&state);
        let mut entries: Vec<&Entry> = state
            .entries
            .values()
            .filter(|e| patterns.iter().any(|p| path_matches(p, &e.leaf.path)))
            .collect();
        entries.sort_by_key(|e| e.timestamp);
        each(state.seq, &entries)
    }

    /// Removes paths not updated for `max_age`, publishing their deletes; returns how many.
    pub fn expire(&self, max_age: Duration) -> usize {
        let Some(cutoff) = Instant::now().checked_sub(max_age) else {
            return 0;
        };
        let targets: Vec<(Arc<str>, Arc<RwLock<TargetState>>)> = read(&self.targets)
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        let mut total = 0;
        for (target, state) in targets {
            let mut state = write(&state);
            let mut deletes = Vec::new();
            state.entries.retain(|_, entry| {
                let keep = entry.touched >= cutoff;
                if !keep {
                    deletes.push(entry.leaf.path.clone());
                }
                keep
            });
            if deletes.is_empty() {
                continue;
            }
            total += deletes.len();
            self.paths.fetch_sub(deletes.len(), Ordering::Relaxed);
            state.seq += 1;
            let _ = self.changes.send(Arc::new(Change {
                target,
                seq: state.seq,
                timestamp: 0,
                updates: Vec::new(),
                deletes,
                whole: OnceLock::new(),
            }));
        }
        total
    }
}

/// Removes the entries at or below `path`; returns how many.
fn remove_matching(entries: &mut BTreeMap<String, Entry>, path: &Path) -> usize {
    let before = entries.len();
    if has_wildcards(path) || path.elem.iter().any(|e| e.name.contains(':')) {
        entries.retain(|_, e| !path_matches(path, &e.leaf.path));
    } else {
        // Every path at or below `path` has `path`'s text as a prefix of its own.
        let text = path_to_string(path);
        let doomed: Vec<String> = entries
            .range(text.clone()..)
            .take_while(|(key, _)| key.starts_with(&text))
            .filter(|(_, e)| path_matches(path, &e.leaf.path))
            .map(|(key, _)| key.clone())
            .collect();
        for key in doomed {
            entries.remove(&key);
        }
    }
    before - entries.len()
}

/// A notification rebuilt from one gnmic event: each value's key-less path gets back the
/// keys the event carries as `<element>_<key>` tags (gnmic's naming; lossy when two
/// elements of a path share a name). JSON values become typed values.
pub fn notification_of_event(
    timestamp: i64,
    tags: &[(impl AsRef<str>, impl AsRef<str>)],
    values: impl Iterator<Item = (String, TypedValue)>,
    deletes: impl Iterator<Item = String>,
) -> Notification {
    let keyed = |text: &str| -> Option<Path> {
        let mut path = parse_path(text).ok()?;
        for elem in &mut path.elem {
            let base = elem.name.rsplit(':').next().unwrap_or_default().to_string();
            for (tag, value) in tags {
                if let Some(key) = tag
                    .as_ref()
                    .strip_prefix(base.as_str())
                    .and_then(|rest| rest.strip_prefix('_'))
                {
                    if !key.is_empty() {
                        elem.key.insert(key.to_string(), value.as_ref().to_string());
                    }
                }
            }
        }
        Some(path)
    };
    Notification {
        timestamp,
        update: values
            .filter_map(|(text, val)| {
                Some(gnomon_gnmi::proto::gnmi::Update {
                    path: Some(keyed(&text)?),
                    val: Some(val),
                    ..Default::default()
                })
            })
            .collect(),
        delete: deletes.filter_map(|text| keyed(&text)).collect(),
        ..Default::default()
    }
}

/// A JSON-ish event value as a typed value.
pub fn typed_of_number(n: f64) -> TypedValue {
    let value = if n.fract() == 0.0 && n >= 0.0 && n < u64::MAX as f64 {
        typed_value::Value::UintVal(n as u64)
    } else if n.fract() == 0.0 && n < 0.0 && n > i64::MIN as f64 {
        typed_value::Value::IntVal(n as i64)
    } else {
        typed_value::Value::DoubleVal(n)
    };
    TypedValue { value: Some(value) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(timestamp: i64, updates: &[(&str, u64)], deletes: &[&str]) -> Notification {
        Notification {
            timestamp,
            update: updates
                .iter()
                .map(|(p, v)| Update {
                    path: Some(parse_path(p).unwrap()),
                    val: Some(TypedValue {
                        value: Some(typed_value::Value::UintVal(*v)),
                    }),
                    ..Default::default()
                })
                .collect(),
            delete: deletes.iter().map(|p| parse_path(p).unwrap()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn updates_deletes_cap_and_sequence() {
        let cache = GnmiCache::new(3, 16);
        let mut changes = cache.subscribe();
        cache.ingest(
            "r1",
            &notification(
                10,
                &[("/a/b[k=1]/c", 1), ("/a/b[k=2]/c", 2), ("/a/bc", 3)],
                &[],
            ),
        );
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.ingest("r1", &notification(11, &[("/x", 1)], &[])), 1);
        assert_eq!(cache.over_cap(), 1);
        // Older than cached: ignored.
        cache.ingest("r1", &notification(5, &[("/a/bc", 9)], &[]));
        cache.ingest("r1", &notification(12, &[], &["/a/b"]));
        assert_eq!(cache.len(), 1);
        let all = cache.snapshot(|_| true, &[parse_path("/...").unwrap()]);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].seq, 2);
        assert_eq!(path_to_string(&all[0].entries[0].leaf.path), "/a/bc");
        assert_eq!(changes.try_recv().unwrap().seq, 1);
        let delete = changes.try_recv().unwrap();
        assert_eq!((delete.seq, delete.deletes.len()), (2, 1));
    }

    #[test]
    fn events_get_their_keys_back() {
        let n = notification_of_event(
            7,
            &[("interface_name", "Ethernet1"), ("source", "r1")],
            [(
                "/interfaces/interface/state/counters/in-octets".to_string(),
                typed_of_number(5.0),
            )]
            .into_iter(),
            std::iter::empty(),
        );
        let path = n.update[0].path.as_ref().unwrap();
        assert_eq!(
            path_to_string(path),
            "/interfaces/interface[name=Ethernet1]/state/counters/in-octets"
        );
    }
}
