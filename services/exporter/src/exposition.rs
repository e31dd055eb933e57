//! The Prometheus text exposition, kept rendered between scrapes.
//!
//! Why this shape: a scrape of a million series must cost little more than a memory copy,
//! and an update must cost a hash lookup. So every series' `name{labels}` text is rendered
//! once, when the series first appears, into its family's byte arena; the index
//! ([`crate::series_index`]) maps that text (hashed) to a slot holding the value, the sample
//! timestamp and the last-update tick. A message's samples are stored together
//! ([`Exposition::upsert_many`]) so that their lookups' cache misses overlap. A scrape walks
//! the families in order, copies each family's `# HELP`/`# TYPE` header once and, per
//! series, the pre-rendered text plus the value formatted in place.
//!
//! Per series this costs the label text (~80 bytes for gNMI series) + a 32-byte slot +
//! 16–32 bytes of index; there is no per-series heap allocation.

pub use crate::series_index::Location;
use crate::series_index::SeriesIndex;
use foldhash::fast::FixedState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

/// How a family is typed and whether its series expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyKind {
    /// gnmic's data series: `untyped`, help `gNMIc generated metric`, expire.
    Telemetry,
    /// `gnomon_target_up`: a gauge that never expires (removed by an explicit delete).
    TargetStatus,
}

/// Help text gnmic gives every metric it exports.
pub const TELEMETRY_HELP: &str = "gNMIc generated metric";
/// Help text of `gnomon_target_up`.
pub const TARGET_STATUS_HELP: &str =
    "1 while a gnomon collector holds a live gNMI subscription to the target, else 0";

/// What an upsert did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upsert {
    /// A new series.
    Inserted,
    /// An existing series took the new sample.
    Updated,
    /// The stored sample is newer; nothing changed.
    Older,
    /// A new data series, refused: the output holds its `max-series` already.
    OverCap,
}

/// Why a series could not be stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExpositionError {
    #[error("series text of {0} bytes is too long")]
    SeriesTooLong(usize),
    #[error("family {0:?} outgrew its 4 GiB arena")]
    ArenaFull(String),
}

/// Time base for "last updated", in 100 ms ticks since the exposition was created
/// (u32 ticks last 13 years; 100 ms is fine for expirations of seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick(u32);

const TICKS_PER_SECOND: u64 = 10;

#[derive(Clone, Copy, Debug)]
struct Slot {
    offset: u32,
    len: u32,
    value: f64,
    /// Sample timestamp, Unix ns; 0 = none.
    timestamp_ns: i64,
    touched: Tick,
}

struct Family {
    kind: FamilyKind,
    /// `# HELP …\n# TYPE …\n`.
    header: Box<[u8]>,
    /// Pre-rendered `name{labels}` texts of the slots (and garbage of removed ones).
    arena: Vec<u8>,
    slots: Vec<Slot>,
    garbage: usize,
}

impl Family {
    fn text(&self, slot: &Slot) -> &[u8] {
        &self.arena[slot.offset as usize..(slot.offset + slot.len) as usize]
    }

    /// Re-packs the arena once most of it is garbage (removed series).
    fn compact_if_worth_it(&mut self) {
        if self.garbage < 64 * 1024 || self.garbage * 2 < self.arena.len() {
            return;
        }
        let mut arena = Vec::with_capacity(self.arena.len() - self.garbage);
        for slot in &mut self.slots {
            let start = arena.len();
            arena.extend_from_slice(
                &self.arena[slot.offset as usize..(slot.offset + slot.len) as usize],
            );
            slot.offset = start as u32;
        }
        self.arena = arena;
        self.garbage = 0;
    }
}

fn location_text(families: &[Family], (family, slot): Location) -> &[u8] {
    let family = &families[family as usize];
    family.text(&family.slots[slot as usize])
}

/// One sample for [`Exposition::upsert_many`]: `text[range]` is the series text, whose
/// first `name_len` bytes are the metric name.
#[derive(Clone, Debug)]
pub struct PendingSample {
    pub range: std::ops::Range<usize>,
    pub name_len: usize,
    pub value: f64,
    pub timestamp_ns: i64,
}

/// The rendered exposition of one Prometheus output.
pub struct Exposition {
    families: Vec<Family>,
    family_index: HashMap<Box<str>, u32, FixedState>,
    index: SeriesIndex,
    /// Per sample of the batch being stored: its hash and its candidate location.
    batch: Vec<(u64, Option<Location>)>,
    hasher: FixedState,
    epoch: Instant,
    export_timestamps: bool,
    series: usize,
    /// Data series beyond this many are refused (`max-series`); target status is exempt.
    max_series: usize,
    /// Data series held (the cap counts these only).
    data_series: usize,
    /// Counts removals: a [`Location`] learnt while it had another value may point at
    /// another series now (a removal moves the family's last slot into the hole).
    removals: u64,
}

impl Exposition {
    /// An empty exposition. With `export_timestamps`, sample timestamps (ms) are rendered.
    pub fn new(export_timestamps: bool) -> Self {
        Self {
            families: Vec::new(),
            family_index: HashMap::with_hasher(FixedState::with_seed(0x676e_6f6d_6f6e)),
            index: SeriesIndex::default(),
            batch: Vec::new(),
            hasher: FixedState::with_seed(0x6578_706f_7274),
            epoch: Instant::now(),
            export_timestamps,
            series: 0,
            max_series: usize::MAX,
            data_series: 0,
            removals: 0,
        }
    }

    /// Changes whenever a series is removed; the locations an upsert reported stay those
    /// of the same series while it does not change.
    pub fn removals(&self) -> u64 {
        self.removals
    }

    /// The exposition with a cap on data series (`max-series`); `None` for none.
    pub fn with_series_cap(mut self, cap: Option<usize>) -> Self {
        self.max_series = cap.unwrap_or(usize::MAX);
        self
    }

    /// The current time in the exposition's ticks.
    pub fn now(&self) -> Tick {
        let ticks = self.epoch.elapsed().as_millis() as u64 / (1000 / TICKS_PER_SECOND);
        Tick(ticks.min(u64::from(u32::MAX)) as u32)
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series
    }

    pub fn is_empty(&self) -> bool {
        self.series == 0
    }

    /// Stores a sample for the series whose text is `series` (`name` then `{labels}`, or
    /// just `name`); `name_len` is the length of the name part. A sample replaces the stored
    /// one unless both have timestamps and the stored one is newer (gnmic's rule).
    pub fn upsert(
        &mut self,
        kind: FamilyKind,
        series: &[u8],
        name_len: usize,
        value: f64,
        timestamp_ns: i64,
        now: Tick,
    ) -> Result<Upsert, ExpositionError> {
        let sample = PendingSample {
            range: 0..series.len(),
            name_len,
            value,
            timestamp_ns,
        };
        let mut stored = Ok(Upsert::Older);
        self.upsert_many(
            kind,
            series,
            std::slice::from_ref(&sample),
            now,
            |outcome, _| {
                stored = outcome;
            },
        );
        stored
    }

    /// Stores many samples (`samples`, texts in `text`), reporting each one's outcome and
    /// its series' location (when it is stored) to `outcome` in order. The same as one [`Self::upsert`] per sample, but the index
    /// entries, slots and texts of all of them are loaded first, so their cache misses
    /// overlap instead of following one another (the cost of an update at 100 k+ series).
    pub fn upsert_many(
        &mut self,
        kind: FamilyKind,
        text: &[u8],
        samples: &[PendingSample],
        now: Tick,
        mut outcome: impl FnMut(Result<Upsert, ExpositionError>, Option<Location>),
    ) {
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        let mut loads = 0u32;
        for sample in samples {
            let hash = self.hasher.hash_one(&text[sample.range.clone()]);
            loads = loads.wrapping_add(self.index.touch(hash));
            batch.push((hash, None));
        }
        std::hint::black_box(loads);
        for (hash, candidate) in batch.iter_mut() {
            *candidate = self.index.candidate(*hash);
            if let Some((family, slot)) = *candidate {
                let family = &self.families[family as usize];
                let slot = &family.slots[slot as usize];
                // One byte per cache line the comparison will read.
                let text = family.text(slot);
                for &byte in text.iter().step_by(64).chain(text.last()) {
                    loads = loads.wrapping_add(u32::from(byte));
                }
            }
        }
        std::hint::black_box(loads);
        for (sample, &(hash, candidate)) in samples.iter().zip(batch.iter()) {
            let series = &text[sample.range.clone()];
            let found = candidate
                .filter(|&l| location_text(&self.families, l) == series)
                // Another series sharing the 32 bits, or one added by this batch.
                .or_else(|| self.find(hash, series));
            match self.store(kind, series, sample, now, hash, found) {
                Ok((upsert, location)) => outcome(Ok(upsert), location),
                Err(e) => outcome(Err(e), None),
            }
        }
        self.batch = batch;
    }

    /// Where the series `series` (hashed `hash`) is.
    fn find(&self, hash: u64, series: &[u8]) -> Option<Location> {
        self.index
            .find(hash, |l| location_text(&self.families, l) == series)
    }

    /// Stores `value` (stamped `timestamp_ns`) in the series at `location`, as an upsert
    /// of that series' text would; `None` when there is no series there.
    pub fn update_at(
        &mut self,
        location: Location,
        value: f64,
        timestamp_ns: i64,
        now: Tick,
    ) -> Option<Upsert> {
        let (family, slot) = location;
        let slot = self
            .families
            .get_mut(family as usize)?
            .slots
            .get_mut(slot as usize)?;
        Some(Self::update_slot(slot, value, timestamp_ns, now))
    }

    fn update_slot(slot: &mut Slot, value: f64, timestamp_ns: i64, now: Tick) -> Upsert {
        if timestamp_ns != 0 && slot.timestamp_ns != 0 && timestamp_ns < slot.timestamp_ns {
            return Upsert::Older;
        }
        slot.value = value;
        slot.timestamp_ns = timestamp_ns;
        slot.touched = now;
        Upsert::Updated
    }

    /// Updates the series at `found` with `sample`, or adds it (`series`, hashed `hash`)
    /// when `None`; returns what it did and where the series is (`None` when not stored).
    fn store(
        &mut self,
        kind: FamilyKind,
        series: &[u8],
        sample: &PendingSample,
        now: Tick,
        hash: u64,
        found: Option<Location>,
    ) -> Result<(Upsert, Option<Location>), ExpositionError> {
        let (name_len, value, timestamp_ns) = (sample.name_len, sample.value, sample.timestamp_ns);
        if let Some((family, slot)) = found {
            let stored = &mut self.families[family as usize].slots[slot as usize];
            let upsert = Self::update_slot(stored, value, timestamp_ns, now);
            return Ok((upsert, found));
        }
        let data = kind == FamilyKind::Telemetry;
        if data && self.data_series >= self.max_series {
            return Ok((Upsert::OverCap, None));
        }
        let len = u32::try_from(series.len())
            .map_err(|_| ExpositionError::SeriesTooLong(series.len()))?;
        let family_id = self.family_for(kind, &series[..name_len]);
        let family = &mut self.families[family_id as usize];
        let offset = u32::try_from(family.arena.len())
            .ok()
            .filter(|o| o.checked_add(len).is_some())
            .ok_or_else(|| {
                ExpositionError::ArenaFull(
                    String::from_utf8_lossy(&series[..name_len]).into_owned(),
                )
            })?;
        family.arena.extend_from_slice(series);
        let slot_id = family.slots.len() as u32;
        family.slots.push(Slot {
            offset,
            len,
            value,
            timestamp_ns,
            touched: now,
        });
        self.index.insert(hash, (family_id, slot_id));
        self.series += 1;
        if data {
            self.data_series += 1;
        }
        Ok((Upsert::Inserted, Some((family_id, slot_id))))
    }

    /// Removes the series whose text is `series`; true when it existed.
    pub fn remove(&mut self, series: &[u8]) -> bool {
        let hash = self.hasher.hash_one(series);
        let Some((family, slot)) = self.find(hash, series) else {
            return false;
        };
        let (family, slot) = (family as usize, slot as usize);
        self.remove_slot(family, slot);
        if let Some(family) = self.families.get_mut(family) {
            family.compact_if_worth_it();
        }
        true
    }

    fn family_for(&mut self, kind: FamilyKind, name: &[u8]) -> u32 {
        let name = String::from_utf8_lossy(name);
        if let Some(&id) = self.family_index.get(name.as_ref()) {
            return id;
        }
        let (help, type_name) = match kind {
            FamilyKind::Telemetry => (TELEMETRY_HELP, "untyped"),
            FamilyKind::TargetStatus => (TARGET_STATUS_HELP, "gauge"),
        };
        let header = format!("# HELP {name} {help}\n# TYPE {name} {type_name}\n");
        let id = self.families.len() as u32;
        self.families.push(Family {
            kind,
            header: header.into_bytes().into_boxed_slice(),
            arena: Vec::new(),
            slots: Vec::new(),
            garbage: 0,
        });
        self.family_index
            .insert(name.into_owned().into_boxed_str(), id);
        id
    }

    /// Removes slot `slot` of `family`, moving the family's last slot into its place.
    fn remove_slot(&mut self, family: usize, slot: usize) {
        let Self {
            families,
            index,
            hasher,
            ..
        } = self;
        let text_hash =
            |slot: usize| hasher.hash_one(families[family].text(&families[family].slots[slot]));
        index.remove(text_hash(slot), (family as u32, slot as u32));
        let last = families[family].slots.len() - 1;
        if slot != last {
            index.relocate(
                text_hash(last),
                (family as u32, last as u32),
                (family as u32, slot as u32),
            );
        }
        let family = &mut families[family];
        family.garbage += family.slots[slot].len as usize;
        family.slots.swap_remove(slot);
        self.removals += 1;
        self.series -= 1;
        if family.kind == FamilyKind::Telemetry {
            self.data_series -= 1;
        }
    }

    /// Drops telemetry series older than `expiration`: by sample timestamp with
    /// export-timestamps (falling back to the update time for samples without one),
    /// otherwise by the time of the last update. Returns how many were dropped.
    pub fn expire(&mut self, expiration: Duration, now: Tick, now_unix_ns: i64) -> usize {
        let max_age_ticks =
            (expiration.as_millis() as u64 / (1000 / TICKS_PER_SECOND)).min(u64::from(u32::MAX));
        let max_age_ns = i64::try_from(expiration.as_nanos()).unwrap_or(i64::MAX);
        let by_timestamp = self.export_timestamps;
        let mut dropped = 0;
        for family in 0..self.families.len() {
            if self.families[family].kind != FamilyKind::Telemetry {
                continue;
            }
            let mut slot = self.families[family].slots.len();
            while slot > 0 {
                slot -= 1;
                let s = self.families[family].slots[slot];
                let expired = if by_timestamp && s.timestamp_ns != 0 {
                    now_unix_ns.saturating_sub(s.timestamp_ns) > max_age_ns
                } else {
                    u64::from(now.0.saturating_sub(s.touched.0)) > max_age_ticks
                };
                if expired {
                    self.remove_slot(family, slot);
                    dropped += 1;
                }
            }
            self.families[family].compact_if_worth_it();
        }
        dropped
    }

    /// Bytes a render will produce, roughly (for reserving the output buffer).
    pub fn estimated_render_size(&self) -> usize {
        self.families
            .iter()
            .filter(|f| !f.slots.is_empty())
            .map(|f| {
                f.header.len() + f.arena.len() - f.garbage
                    + f.slots.len() * if self.export_timestamps { 38 } else { 24 }
            })
            .sum()
    }

    /// Appends the whole exposition to `out`: each non-empty family's header, then its series.
    pub fn render_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.estimated_render_size());
        let mut numbers = ryu::Buffer::new();
        let mut integers = itoa::Buffer::new();
        for family in &self.families {
            if family.slots.is_empty() {
                continue;
            }
            out.extend_from_slice(&family.header);
            for slot in &family.slots {
                out.extend_from_slice(family.text(slot));
                out.push(b' ');
                write_value(out, slot.value, &mut numbers, &mut integers);
                if self.export_timestamps && slot.timestamp_ns != 0 {
                    out.push(b' ');
                    out.extend_from_slice(
                        integers
                            .format(slot.timestamp_ns.div_euclid(1_000_000))
                            .as_bytes(),
                    );
                }
                out.push(b'\n');
            }
        }
    }

    /// Heap bytes held (capacities), for the series-size self metric and the benchmark.
    pub fn heap_bytes(&self) -> usize {
        let families: usize = self
            .families
            .iter()
            .map(|f| {
                std::mem::size_of::<Family>()
                    + f.header.len()
                    + f.arena.capacity()
                    + f.slots.capacity() * std::mem::size_of::<Slot>()
            })
            .sum();
        families
            + self.family_index.capacity() * (std::mem::size_of::<(Box<str>, u32)>() + 1)
            + self.index.heap_bytes()
    }
}

/// Writes a sample value as Prometheus expects: integers without a fraction, `NaN`,
/// `+Inf`/`-Inf`, otherwise the shortest round-tripping decimal.
pub fn write_value(
    out: &mut Vec<u8>,
    value: f64,
    numbers: &mut ryu::Buffer,
    integers: &mut itoa::Buffer,
) {
    if value.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if value.is_infinite() {
        out.extend_from_slice(if value > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        out.extend_from_slice(integers.format(value as i64).as_bytes());
    } else {
        out.extend_from_slice(numbers.format_finite(value).as_bytes());
    }
}

/// Convenience for tests and callers that hold the rendered text as a `String`.
pub fn render_to_string(exposition: &Exposition) -> String {
    let mut out = Vec::new();
    exposition.render_into(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(e: &mut Exposition, series: &str, value: f64, ts: i64) -> Upsert {
        let name_len = series.find('{').unwrap_or(series.len());
        let now = e.now();
        e.upsert(
            FamilyKind::Telemetry,
            series.as_bytes(),
            name_len,
            value,
            ts,
            now,
        )
        .unwrap()
    }

    #[test]
    fn the_series_cap_counts_data_series_only_and_frees_on_removal() {
        let mut e = Exposition::new(false).with_series_cap(Some(1));
        let now = e.now();
        let upsert = |e: &mut Exposition, kind, text: &str| {
            let name_len = text.find('{').unwrap_or(text.len());
            e.upsert(kind, text.as_bytes(), name_len, 1.0, 0, now)
                .unwrap()
        };
        assert_eq!(
            upsert(&mut e, FamilyKind::Telemetry, "m{a=\"1\"}"),
            Upsert::Inserted
        );
        assert_eq!(
            upsert(&mut e, FamilyKind::Telemetry, "m{a=\"2\"}"),
            Upsert::OverCap
        );
        assert_eq!(
            upsert(&mut e, FamilyKind::Telemetry, "m{a=\"1\"}"),
            Upsert::Updated
        );
        assert_eq!(
            upsert(&mut e, FamilyKind::TargetStatus, "up{t=\"x\"}"),
            Upsert::Inserted
        );
        assert_eq!(e.len(), 2);
        assert!(e.remove(b"m{a=\"1\"}"));
        assert_eq!(
            upsert(&mut e, FamilyKind::Telemetry, "m{a=\"2\"}"),
            Upsert::Inserted
        );
        // Expiry frees room too.
        assert_eq!(e.expire(Duration::ZERO, Tick(now.0 + 10), 0), 1);
        assert_eq!(
            upsert(&mut e, FamilyKind::Telemetry, "m{a=\"3\"}"),
            Upsert::Inserted
        );
    }

    #[test]
    fn groups_series_under_one_header_and_replaces_duplicates() {
        let mut e = Exposition::new(false);
        assert_eq!(put(&mut e, "a{x=\"1\"}", 1.0, 0), Upsert::Inserted);
        assert_eq!(put(&mut e, "b{x=\"1\"}", 2.5, 0), Upsert::Inserted);
        assert_eq!(put(&mut e, "a{x=\"2\"}", 3.0, 0), Upsert::Inserted);
        assert_eq!(put(&mut e, "a{x=\"1\"}", 4.0, 0), Upsert::Updated);
        assert_eq!(e.len(), 3);
        let text = render_to_string(&e);
        assert_eq!(
            text,
            "# HELP a gNMIc generated metric\n# TYPE a untyped\na{x=\"1\"} 4\na{x=\"2\"} 3\n\
             # HELP b gNMIc generated metric\n# TYPE b untyped\nb{x=\"1\"} 2.5\n"
        );
    }

    #[test]
    fn older_samples_do_not_replace_newer_ones() {
        let mut e = Exposition::new(true);
        put(&mut e, "a", 1.0, 2_000_000_000);
        assert_eq!(put(&mut e, "a", 2.0, 1_000_000_000), Upsert::Older);
        assert_eq!(put(&mut e, "a", 3.0, 0), Upsert::Updated);
        put(&mut e, "a", 5.0, 3_000_000_000);
        assert_eq!(render_to_string(&e).lines().last().unwrap(), "a 5 3000");
    }

    #[test]
    fn values_render_like_prometheus() {
        let mut out = Vec::new();
        let (mut n, mut i) = (ryu::Buffer::new(), itoa::Buffer::new());
        for v in [
            0.0,
            -3.0,
            1.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e20,
            18446744073709551615.0,
        ] {
            write_value(&mut out, v, &mut n, &mut i);
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0 -3 1.5 NaN +Inf -Inf 1e20 1.8446744073709552e19 "
        );
    }

    #[test]
    fn expiry_removes_series_and_keeps_lookups_consistent() {
        let mut e = Exposition::new(false);
        for i in 0..1000 {
            put(&mut e, &format!("m{{i=\"{i}\"}}"), i as f64, 0);
        }
        let later = Tick(e.now().0 + 100);
        // Refresh every third series "later", then expire everything older than 5 s.
        for i in (0..1000).step_by(3) {
            let s = format!("m{{i=\"{i}\"}}");
            e.upsert(FamilyKind::Telemetry, s.as_bytes(), 1, -1.0, 0, later)
                .unwrap();
        }
        let dropped = e.expire(Duration::from_secs(5), later, 0);
        assert_eq!(dropped, 1000 - 334);
        assert_eq!(e.len(), 334);
        // Every surviving series is still found (update, not insert), none duplicated.
        for i in (0..1000).step_by(3) {
            assert_eq!(
                put(&mut e, &format!("m{{i=\"{i}\"}}"), 7.0, 0),
                Upsert::Updated
            );
        }
        assert_eq!(put(&mut e, "m{i=\"1\"}", 7.0, 0), Upsert::Inserted);
        let text = render_to_string(&e);
        assert_eq!(text.matches("# TYPE m untyped").count(), 1);
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 335);
    }

    #[test]
    fn target_status_is_a_gauge_that_does_not_expire() {
        let mut e = Exposition::new(false);
        let series = b"gnomon_target_up{target=\"r1\"}";
        let now = e.now();
        e.upsert(FamilyKind::TargetStatus, series, 16, 1.0, 0, now)
            .unwrap();
        assert_eq!(e.expire(Duration::from_millis(1), Tick(now.0 + 1000), 0), 0);
        assert!(render_to_string(&e).contains("# TYPE gnomon_target_up gauge\n"));
        assert!(e.remove(series));
        assert!(!e.remove(series));
        assert_eq!(render_to_string(&e), "");
    }
}
