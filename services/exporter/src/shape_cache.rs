//! Where a notification's samples are stored, learnt from an earlier notification of the
//! same shape.
//!
//! Why: a device sends the same notification every sample interval with new values — the
//! same subscription, tags and value keys in the same order. Storing a sample the general
//! way renders its series text (name and labels), hashes it and looks it up in the index:
//! about half of the exporter's work per update, every time giving the same slot. So a
//! Prometheus output remembers, per notification shape, the location of each entry's
//! series, and a notification of a known shape writes its values straight into those
//! slots.
//!
//! A shape is exact: the event name, every tag set (names and values), every value key and
//! which tag set each entry takes. A fingerprint finds the candidate; the shape itself is
//! compared in full before its locations are used, so a fingerprint collision costs a
//! lookup, never a wrong series. A shape is learnt the second time it is seen (streams
//! whose notifications rarely repeat — on-change subsets — only leave a fingerprint), and
//! forgotten when the exposition removes any series (a removal moves another series into
//! the hole) or when the cache outgrows its budget.
//!
//! What it costs: per learnt shape its tag texts and 20 bytes per entry, the value keys
//! kept once for all shapes — 30 to 40 bytes per series in the benchmarks, a tenth more
//! than the exposition holds — and, per notification, hashing and comparing its keys and
//! tags (a few per cent of the work it saves).

use crate::exposition::Location;
use foldhash::fast::{FixedState, RandomState};
use gnomon_gnmi::event::PlainEvents;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// Where one entry of a learnt shape went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeSlot {
    /// The entry gave no sample (its value was not a number, or it names no metric).
    Skipped,
    /// The entry's series is here.
    At(Location),
}

/// What the cache knows of a notification's shape.
pub enum Lookup<'c> {
    /// Seen before (under this fingerprint) with these locations, one per entry.
    Learnt(u64, &'c [ShapeSlot]),
    /// Worth learning: store the notification the general way and give its locations to
    /// [`ShapeCache::learn`] with this fingerprint.
    Learn(u64),
    /// First seen: store it the general way.
    Unknown,
}

/// A learnt shape.
struct Shape {
    name: Box<str>,
    /// The tag sets, as [`write_tags`] writes them.
    tags: Box<[u8]>,
    /// Per entry: its value key (in [`Keys`]) and its tag set.
    entries: Box<[(u32, u32)]>,
    slots: Box<[ShapeSlot]>,
}

impl Shape {
    /// Heap bytes the shape holds.
    fn heap_bytes(&self) -> usize {
        self.name.len()
            + self.tags.len()
            + std::mem::size_of_val(&*self.entries)
            + std::mem::size_of_val(&*self.slots)
    }

    fn matches(&self, plain: &PlainEvents<'_>, tags: &[u8], keys: &Keys) -> bool {
        self.name.as_ref() == plain.name
            && self.tags.as_ref() == tags
            && self.entries.len() == plain.entries().len()
            && self
                .entries
                .iter()
                .zip(plain.entries())
                .zip(entry_keys(plain))
                .all(|((&(id, tag_set), entry), key)| {
                    tag_set as usize == entry.tag_set && keys.get(id) == Some(key)
                })
    }
}

/// The value keys of the learnt shapes, each kept once: the shapes of a fleet repeat a
/// handful of keys (the counters of an interface) under many tag sets.
#[derive(Default)]
struct Keys {
    /// The keys back to back.
    text: Vec<u8>,
    /// Where each key ends in `text`.
    ends: Vec<u32>,
    /// Each key's id.
    ids: HashMap<Box<[u8]>, u32, RandomState>,
}

impl Keys {
    fn get(&self, id: u32) -> Option<&[u8]> {
        let id = id as usize;
        let start = match id {
            0 => 0,
            _ => *self.ends.get(id - 1)? as usize,
        };
        self.text.get(start..*self.ends.get(id)? as usize)
    }

    /// The id of `key`, added if new; `None` when the text would outgrow its u32 offsets.
    fn id(&mut self, key: &[u8]) -> Option<u32> {
        if let Some(&id) = self.ids.get(key) {
            return Some(id);
        }
        let end = u32::try_from(self.text.len() + key.len()).ok()?;
        let id = u32::try_from(self.ends.len()).ok()?;
        self.text.extend_from_slice(key);
        self.ends.push(end);
        self.ids.insert(key.into(), id);
        Some(id)
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
        self.ids.clear();
    }

    fn heap_bytes(&self) -> usize {
        self.text.capacity() * 2
            + self.ends.capacity() * 4
            + self.ids.capacity() * (std::mem::size_of::<(Box<[u8]>, u32)>() + 1)
    }
}

/// Each entry's value key, as bytes, in entry order.
fn entry_keys<'p>(plain: &'p PlainEvents<'_>) -> impl Iterator<Item = &'p [u8]> {
    let keys = plain.keys_text().as_bytes();
    let mut start = 0;
    plain.entries().iter().map(move |entry| {
        let end = entry.key_end().clamp(start, keys.len());
        let key = &keys[start..end];
        start = end;
        key
    })
}

enum Known {
    /// Seen once: learnt if seen again.
    Seen,
    Learnt(Shape),
}

impl Known {
    /// Its part of the cache's size.
    fn size(&self) -> usize {
        match self {
            Known::Seen => 1,
            Known::Learnt(shape) => shape.slots.len().max(1),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Known::Seen => 0,
            Known::Learnt(shape) => shape.heap_bytes(),
        }
    }
}

/// Series locations by notification shape, for one exposition.
pub struct ShapeCache {
    /// By fingerprint (seeded per process: a sender cannot aim notifications at one
    /// fingerprint).
    shapes: HashMap<u64, Known, FixedState>,
    hasher: RandomState,
    /// The exposition's removal count the locations are valid for.
    removals: u64,
    /// Entries of the learnt shapes plus one per fingerprint: the cache's size.
    size: usize,
    /// Heap bytes of the learnt shapes (the map's own table aside).
    shape_bytes: usize,
    /// The value keys of the learnt shapes.
    keys: Keys,
    /// The tag sets of the notification being looked up, written out.
    tags: Vec<u8>,
    /// Times the cache emptied itself on reaching its budget.
    resets: u64,
    /// Lookups that found their shape.
    hits: u64,
}

impl Default for ShapeCache {
    fn default() -> Self {
        Self {
            shapes: HashMap::with_hasher(FixedState::with_seed(0x0073_6861_7065)),
            hasher: RandomState::default(),
            removals: 0,
            size: 0,
            shape_bytes: 0,
            keys: Keys::default(),
            tags: Vec::new(),
            resets: 0,
            hits: 0,
        }
    }
}

fn entry_layout(entry: &gnomon_gnmi::event::PlainEntry<'_>) -> (u32, u32) {
    (entry.key_end() as u32, entry.tag_set as u32)
}

/// Writes tag sets out as one byte string: lengths before texts, so that different sets
/// never write the same bytes.
fn write_tags(out: &mut Vec<u8>, tag_sets: &[Vec<(String, String)>]) {
    out.clear();
    for set in tag_sets {
        out.extend_from_slice(&(set.len() as u32).to_le_bytes());
        for (name, value) in set {
            for text in [name, value] {
                out.extend_from_slice(&(text.len() as u32).to_le_bytes());
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
}

impl ShapeCache {
    /// Looks `plain` up; `removals` is the exposition's
    /// [`crate::exposition::Exposition::removals`], `budget` the most entries to hold.
    pub fn lookup(&mut self, plain: &PlainEvents<'_>, removals: u64, budget: usize) -> Lookup<'_> {
        if removals != self.removals {
            self.clear();
            self.removals = removals;
        }
        // Layout values must fit the u32s a shape keeps them in.
        if plain.keys_text().len() > u32::MAX as usize || plain.tag_sets.len() > u32::MAX as usize {
            return Lookup::Unknown;
        }
        write_tags(&mut self.tags, &plain.tag_sets);
        let mut hasher = self.hasher.build_hasher();
        hasher.write(plain.name.as_bytes());
        hasher.write(&self.tags);
        hasher.write(plain.keys_text().as_bytes());
        for entry in plain.entries() {
            let (key_end, tag_set) = entry_layout(entry);
            hasher.write_u64(u64::from(key_end) << 32 | u64::from(tag_set));
        }
        let fingerprint = hasher.finish();
        match self.shapes.get(&fingerprint) {
            Some(Known::Learnt(shape)) if shape.matches(plain, &self.tags, &self.keys) => {
                self.hits += 1;
                // Re-borrowed: the guard above ends the first borrow.
                match self.shapes.get(&fingerprint) {
                    Some(Known::Learnt(shape)) => Lookup::Learnt(fingerprint, &shape.slots),
                    _ => Lookup::Unknown,
                }
            }
            // Seen once, or another shape with the same fingerprint: (re)learn.
            Some(_) => Lookup::Learn(fingerprint),
            None => {
                self.make_room(1, budget);
                self.insert(fingerprint, Known::Seen);
                Lookup::Unknown
            }
        }
    }

    /// Remembers the locations of `plain`'s entries (`slots`, one per entry), looked up as
    /// `fingerprint`, while the cache holds at most `budget` entries.
    pub fn learn(
        &mut self,
        fingerprint: u64,
        plain: &PlainEvents<'_>,
        slots: Vec<ShapeSlot>,
        budget: usize,
    ) {
        if slots.len() != plain.entries().len() {
            return;
        }
        // Room for the entries and, at most, as many new keys.
        self.make_room(2 * slots.len(), budget);
        let entries: Option<Box<[(u32, u32)]>> = entry_keys(plain)
            .zip(plain.entries())
            .map(|(key, entry)| Some((self.keys.id(key)?, entry.tag_set as u32)))
            .collect();
        let Some(entries) = entries else {
            return;
        };
        write_tags(&mut self.tags, &plain.tag_sets);
        let shape = Shape {
            name: plain.name.into(),
            tags: self.tags.as_slice().into(),
            entries,
            slots: slots.into_boxed_slice(),
        };
        self.insert(fingerprint, Known::Learnt(shape));
    }

    /// Empties the cache if `size` more entries would take it beyond `budget`.
    fn make_room(&mut self, size: usize, budget: usize) {
        if self.size + self.keys.len() + size > budget {
            self.clear();
            self.resets += 1;
        }
    }

    /// Adds `known` (replacing what the fingerprint had).
    fn insert(&mut self, fingerprint: u64, known: Known) {
        self.size += known.size();
        self.shape_bytes += known.heap_bytes();
        if let Some(before) = self.shapes.insert(fingerprint, known) {
            self.size -= before.size();
            self.shape_bytes -= before.heap_bytes();
        }
    }

    /// Forgets every shape.
    pub fn clear(&mut self) {
        self.shapes.clear();
        self.keys.clear();
        self.size = 0;
        self.shape_bytes = 0;
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.shape_bytes
            + self.shapes.capacity() * (std::mem::size_of::<(u64, Known)>() + 1)
            + self.keys.heap_bytes()
            + self.tags.capacity()
    }

    /// Times the cache emptied itself on reaching its budget.
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// Lookups that found their shape.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Entries held (the size the budget bounds): the learnt shapes' entries, one per
    /// fingerprint seen once, one per value key.
    pub fn size(&self) -> usize {
        self.size + self.keys.len()
    }
}
