//! Processors that combine or thin out events: event-group-by, event-merge
//! (within one batch) and event-rate-limit (across batches, bounded LRU).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::Arc;

use serde_json::Value;

use crate::build::{pure, Build, Pure, Resolve};
use crate::chain::Apply;
use crate::config::Fields;
use crate::error::ProcessorError;
use crate::record::{Record, Str};

/// Folds `from` into `into`: later tags and values win, deletes are
/// appended.
fn absorb(into: &mut Record, from: Record) {
    into.tags.extend(from.tags);
    into.values.extend(from.values);
    into.deletes.extend(from.deletes);
}

/// event-group-by: events of one batch that share the values of all
/// `tags` (and, with `by-name`, the name) become one event.
struct GroupBy {
    tags: Vec<String>,
    by_name: bool,
}

pub(crate) fn group_by(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    Ok(pure(GroupBy {
        tags: f.strings("tags")?,
        by_name: f.bool("by-name")?,
    }))
}

impl GroupBy {
    /// Groups in first-seen order; events missing a tag pass through first,
    /// as in gnmic.
    fn by_tags(&self, events: Vec<Record>, out: &mut Vec<Record>) {
        if self.tags.is_empty() {
            out.extend(events);
            return;
        }
        let mut groups: Vec<Record> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut key = String::new();
        for e in events {
            key.clear();
            let mut complete = true;
            for t in &self.tags {
                match e.tags.get(t) {
                    Some(v) => {
                        key.push_str(v);
                        key.push('\u{0}');
                    }
                    None => {
                        complete = false;
                        break;
                    }
                }
            }
            if !complete {
                out.push(e);
                continue;
            }
            match index.get(&key) {
                Some(&i) => absorb(&mut groups[i], e),
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push(e);
                }
            }
        }
        out.extend(groups);
    }
}

impl Pure for GroupBy {
    fn apply(&self, events: &mut Vec<Record>) {
        if events.len() < 2 && !self.by_name {
            return;
        }
        let input = std::mem::take(events);
        if !self.by_name {
            self.by_tags(input, events);
            return;
        }
        let mut by_name: Vec<(Str, Vec<Record>)> = Vec::new();
        for e in input {
            match by_name.iter_mut().find(|(n, _)| *n == e.name) {
                Some((_, group)) => group.push(e),
                None => by_name.push((e.name.clone(), vec![e])),
            }
        }
        by_name.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, group) in by_name {
            self.by_tags(group, events);
        }
    }
}

/// event-merge: events of one batch with the same timestamp (all of them
/// with `always: true`) become one event; the latest timestamp is kept.
struct Merge {
    always: bool,
}

pub(crate) fn merge(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    Ok(pure(Merge {
        always: f.bool("always")?,
    }))
}

impl Pure for Merge {
    fn apply(&self, events: &mut Vec<Record>) {
        if events.len() < 2 {
            return;
        }
        let input = std::mem::take(events);
        if self.always {
            let mut it = input.into_iter();
            if let Some(mut first) = it.next() {
                for e in it {
                    let ts = e.timestamp;
                    absorb(&mut first, e);
                    first.timestamp = first.timestamp.max(ts);
                }
                events.push(first);
            }
            return;
        }
        let mut index: HashMap<i64, usize> = HashMap::new();
        for e in input {
            match index.get(&e.timestamp) {
                Some(&i) => absorb(&mut events[i], e),
                None => {
                    index.insert(e.timestamp, events.len());
                    events.push(e);
                }
            }
        }
    }
}

/// Default LRU size of event-rate-limit (gnmic's).
const RATE_LIMIT_DEFAULT_CACHE: usize = 1000;

/// event-rate-limit: at most `per-second` events per distinct tag set; an
/// event with exactly the timestamp of the last one let through is not
/// limited (devices split one sample over several messages).
struct RateLimitSpec {
    processor: String,
    per_second: f64,
    cache_size: NonZeroUsize,
}

pub(crate) fn rate_limit(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    let per_second = f.f64("per-second")?.unwrap_or(0.0);
    if per_second <= 0.0 {
        return Err(f.err(
            "per-second",
            f.raw("per-second").unwrap_or(&Value::Null),
            "must be greater than 0",
        ));
    }
    let size = match f.i64("cache-size")? {
        Some(n) if n > 0 => n as usize,
        _ => RATE_LIMIT_DEFAULT_CACHE,
    };
    Ok(Arc::new(RateLimitSpec {
        processor: f.processor.to_string(),
        per_second,
        cache_size: NonZeroUsize::new(size).unwrap_or(NonZeroUsize::MIN),
    }))
}

impl Build for RateLimitSpec {
    fn build(&self, _: &dyn Resolve) -> Result<Box<dyn Apply>, ProcessorError> {
        Ok(Box::new(RateLimit {
            per_second: self.per_second,
            seen: lru::LruCache::new(self.cache_size),
            evictions: metrics::counter!("gnomon_processor_evictions_total", "processor" => self.processor.clone()),
        }))
    }
}

struct RateLimit {
    per_second: f64,
    /// Tag-set hash → timestamp of the last event let through.
    seen: lru::LruCache<u64, i64>,
    evictions: metrics::Counter,
}

/// A 64-bit hash of the sorted tags (gnmic hashes them with SHA-256; a
/// collision here would only merge the limits of two series).
fn tags_hash(e: &Record) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (k, v) in &e.tags {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    h.finish()
}

impl Apply for RateLimit {
    fn apply(&mut self, events: &mut Vec<Record>) {
        events.retain(|e| {
            let h = tags_hash(e);
            if let Some(&last) = self.seen.get(&h) {
                let elapsed = e.timestamp.wrapping_sub(last) as f64 * self.per_second;
                if e.timestamp != last && (elapsed as i64) < 1_000_000_000 {
                    return false;
                }
            }
            if let Some((old, _)) = self.seen.push(h, e.timestamp) {
                if old != h {
                    self.evictions.increment(1);
                }
            }
            true
        });
    }
}
