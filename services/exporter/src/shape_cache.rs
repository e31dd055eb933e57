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
//! What it costs: per learnt shape its value keys, tag texts and 16 bytes per entry — about
//! 60 bytes per series for gNMI paths, a third more memory than the exposition alone — and,
//! per notification, hashing and comparing its keys and tags (a few per cent of the work it
//! saves).

use crate::exposition::Location;
use foldhash::fast::FixedState;
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
    keys: Box<str>,
    /// Per entry: where its key ends and its tag set.
    layout: Box<[(u32, u32)]>,
    slots: Box<[ShapeSlot]>,
}

impl Shape {
    /// Heap bytes the shape holds.
    fn heap_bytes(&self) -> usize {
        self.name.len()
            + self.tags.len()
            + self.keys.len()
            + std::mem::size_of_val(&*self.layout)
            + std::mem::size_of_val(&*self.slots)
    }

    fn matches(&self, plain: &PlainEvents<'_>, tags: &[u8]) -> bool {
        self.name.as_ref() == plain.name
            && self.tags.as_ref() == tags
            && self.keys.as_ref() == plain.keys_text()
            && self.layout.len() == plain.entries().len()
            && self
                .layout
                .iter()
                .zip(plain.entries())
                .all(|(&layout, entry)| layout == entry_layout(entry))
    }
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
    shapes: HashMap<u64, Known, FixedState>,
    hasher: FixedState,
    /// The exposition's removal count the locations are valid for.
    removals: u64,
    /// Entries of the learnt shapes plus one per fingerprint: the cache's size.
    size: usize,
    /// Heap bytes of the learnt shapes (the map's own table aside).
    shape_bytes: usize,
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
            hasher: FixedState::with_seed(0x6669_6e67_6572),
            removals: 0,
            size: 0,
            shape_bytes: 0,
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
            Some(Known::Learnt(shape)) if shape.matches(plain, &self.tags) => {
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
                self.insert(fingerprint, Known::Seen, budget);
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
        write_tags(&mut self.tags, &plain.tag_sets);
        let shape = Shape {
            name: plain.name.into(),
            tags: self.tags.as_slice().into(),
            keys: plain.keys_text().into(),
            layout: plain.entries().iter().map(entry_layout).collect(),
            slots: slots.into_boxed_slice(),
        };
        self.insert(fingerprint, Known::Learnt(shape), budget);
    }

    /// Adds `known`, emptying the cache first if it would hold more than `budget` entries.
    fn insert(&mut self, fingerprint: u64, known: Known, budget: usize) {
        if self.size + known.size() > budget {
            self.clear();
            self.resets += 1;
        }
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
        self.size = 0;
        self.shape_bytes = 0;
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.shape_bytes
            + self.shapes.capacity() * (std::mem::size_of::<(u64, Known)>() + 1)
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

    /// Entries held (the size the budget bounds).
    pub fn size(&self) -> usize {
        self.size
    }
}
