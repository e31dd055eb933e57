//! One Prometheus output: events in, rendered exposition out.
//!
//! `gnomon_target_up` is carried through from the collector rather than derived here,
//! because only the collector knows whether its gNMI stream is alive. The mechanism: the
//! collector publishes, on the same subject as the target's data and with the usual
//! headers (target, fencing token; subscription header `gnomon_target_up`), an event-format
//! JSON payload (whatever the data format) such as
//! `[{"name":"gnomon_target_up","timestamp":<ns>,"tags":{"target":"r1"},"values":{"gnomon_target_up":1}}]`.
//! Every event named `gnomon_target_up` becomes the gauge `gnomon_target_up{target="r1"}`
//! (fixed name: no metric-prefix, no subscription name, only the `target` label, taken from
//! the `target` tag, else `source`). These series never expire; an event with
//! `"deletes":["gnomon_target_up"]` removes the target's series (target deleted).

use crate::exposition::{Exposition, ExpositionError, FamilyKind, Location, PendingSample, Upsert};
use crate::naming::{NamingOptions, SampleValue, SeriesBuilder};
use crate::processing::{self, Batching, SharedChain};
use crate::remote_write::WriteBuffer;
use crate::shape_cache::{Lookup, ShapeCache, ShapeSlot};
use crate::wire::{same_tags, WireEvent};
use gnomon_common::log::Throttle;
use gnomon_config::gotemplate::GoTemplate;
use gnomon_config::prometheus_output::PrometheusOutputConfig;
use gnomon_config::prometheus_write_output::PrometheusWriteOutputConfig;
use gnomon_gnmi::event::PlainEvents;
use gnomon_processors::{Chain, Record};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Samples built before they are stored together: enough for their cache misses to
/// overlap, few enough to stay in the cache themselves.
const PENDING_SAMPLES: usize = 64;

/// Event name (and value key) of the per-target status the collector publishes.
pub use gnomon_bus::contract::TARGET_STATUS as TARGET_UP;

/// What one ingest call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestCounts {
    /// Samples stored (new or updated series).
    pub stored: u64,
    /// New series among them.
    pub inserted: u64,
    /// Samples older than the stored ones (ignored).
    pub older: u64,
    /// Values that are not samples (non-numeric without strings-as-labels, bad names).
    pub skipped: u64,
    /// Samples dropped because they would add a series beyond `max-series`.
    pub over_cap: u64,
    /// Samples dropped because a remote write buffer was full.
    pub buffer_full: u64,
}

struct State {
    exposition: Exposition,
    builder: SeriesBuilder,
    scratch: Vec<u8>,
    /// Samples built but not stored yet, stored together ([`Exposition::upsert_many`]).
    pending: Vec<PendingSample>,
    /// Their series texts.
    pending_text: Vec<u8>,
    /// One warning per minute while `max-series` refuses series.
    cap_warning: Throttle,
    /// Series locations of notifications seen before ([`Self::ingest_plain`]).
    shapes: ShapeCache,
    /// While a shape is learnt: what each value gave.
    capture: Option<Capture>,
    /// The numbers of a notification stored through a learnt shape.
    numbers: Vec<Option<f64>>,
}

/// What the values of a notification being learnt gave, in order.
#[derive(Default)]
struct Capture {
    /// Per value: whether it became a pending sample (else it was skipped).
    pending: Vec<bool>,
    /// Per pending sample: where it was stored (`None`: refused).
    stored: Vec<Option<Location>>,
}

impl Capture {
    /// One slot per value; `None` when a sample was refused (the shape cannot be learnt:
    /// its series would be tried again).
    fn slots(&self) -> Option<Vec<ShapeSlot>> {
        let mut stored = self.stored.iter();
        self.pending
            .iter()
            .map(|&pending| match pending {
                false => Some(ShapeSlot::Skipped),
                true => stored.next().copied().flatten().map(ShapeSlot::At),
            })
            .collect()
    }
}

/// Entries a shape cache may hold per series of its exposition (plus
/// [`SHAPE_BUDGET_FLOOR`]): room for every series' shape twice over.
const SHAPE_BUDGET_PER_SERIES: usize = 2;
const SHAPE_BUDGET_FLOOR: usize = 64 * 1024;

/// A Prometheus output's series, kept rendered.
pub struct PrometheusOutput {
    name: String,
    config: PrometheusOutputConfig,
    expiration: Option<Duration>,
    state: Mutex<State>,
    updates_counter: metrics::Counter,
    over_cap_counter: metrics::Counter,
    shape_resets_counter: metrics::Counter,
    /// The output's `event-processors`, applied at ingest (`None`: none configured).
    chain: Option<SharedChain>,
    /// A `prometheus_write` output: samples go to its buffer, not to the exposition.
    remote: Option<Arc<WriteBuffer>>,
    /// `target-template` for `add-target` (`None`: gnmic's default).
    target_template: Option<GoTemplate>,
}

/// Values sharing a tag set: the tags, and each value's key and value.
pub type Run<'r> = (&'r [(String, String)], &'r [(&'r str, SampleValue<'r>)]);

/// The runs of consecutive entries of `plain` sharing a tag set, each with its tags and
/// its entries' `samples` (one per entry, in entry order).
pub fn plain_runs<'r>(
    plain: &'r PlainEvents<'_>,
    samples: &'r [(&'r str, SampleValue<'r>)],
) -> impl Iterator<Item = Run<'r>> {
    let mut start = 0;
    plain
        .entries()
        .chunk_by(|a, b| a.tag_set == b.tag_set)
        .map(move |run| {
            let end = (start + run.len()).min(samples.len());
            let run_samples = &samples[start.min(end)..end];
            start = end;
            (&plain.tag_sets[run[0].tag_set][..], run_samples)
        })
}

fn unix_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl PrometheusOutput {
    pub fn new(name: &str, config: PrometheusOutputConfig) -> Self {
        let options = NamingOptions {
            metric_prefix: config.metric_prefix.clone(),
            append_subscription_name: config.append_subscription_name,
            strings_as_labels: config.strings_as_labels,
        };
        let target_template = config
            .parsed_target_template(name)
            .inspect_err(
                |e| tracing::warn!(output = name, error = %e, "target-template not applied"),
            )
            .ok()
            .flatten();
        Self {
            name: name.to_string(),
            target_template,
            expiration: config.effective_expiration(),
            state: Mutex::new(State {
                exposition: Exposition::new(config.export_timestamps)
                    .with_series_cap(config.series_cap()),
                builder: SeriesBuilder::new(options),
                scratch: Vec::new(),
                pending: Vec::new(),
                pending_text: Vec::new(),
                cap_warning: Throttle::new(Duration::from_secs(60)),
                shapes: ShapeCache::default(),
                capture: None,
                numbers: Vec::new(),
            }),
            updates_counter: metrics::counter!(crate::stats::UPDATES, "output" => name.to_string()),
            over_cap_counter: metrics::counter!(crate::stats::SERIES_CAP_DROPPED, "output" => name.to_string()),
            shape_resets_counter: metrics::counter!(crate::stats::SHAPE_CACHE_RESETS, "output" => name.to_string()),
            config,
            chain: None,
            remote: None,
        }
    }

    /// A `prometheus_write` output: series named as the scrape output names them (prefix,
    /// subscription name, strings-as-labels, add-target, processors), each sample pushed to
    /// `buffer` for the writer; nothing is kept in the exposition.
    pub fn remote_write(
        name: &str,
        config: &PrometheusWriteOutputConfig,
        buffer: Arc<WriteBuffer>,
    ) -> Self {
        let naming = PrometheusOutputConfig {
            output_type: Some("prometheus".into()),
            metric_prefix: config.metric_prefix.clone(),
            append_subscription_name: config.append_subscription_name,
            strings_as_labels: config.strings_as_labels,
            add_target: config.add_target.clone(),
            target_template: config.target_template.clone(),
            event_processors: config.event_processors.clone(),
            ..PrometheusOutputConfig::default()
        };
        let mut output = Self::new(name, naming);
        output.expiration = None;
        output.remote = Some(buffer);
        output
    }

    /// The parsed `target-template` (`None`: gnmic's default) for `add-target`.
    pub fn target_template(&self) -> Option<&GoTemplate> {
        self.target_template.as_ref()
    }

    /// The remote write buffer of a `prometheus_write` output.
    pub fn write_buffer(&self) -> Option<&Arc<WriteBuffer>> {
        self.remote.as_ref()
    }

    /// The output with its `event-processors` chain (an empty chain changes nothing).
    pub fn with_chain(mut self, chain: Chain) -> Self {
        self.chain = SharedChain::new(chain);
        self
    }

    /// The output's processor chain, when it has one.
    pub fn live_chain(&self) -> Option<&gnomon_processors::LiveChain> {
        self.chain.as_ref().map(SharedChain::live)
    }

    /// Whether the output has processors.
    pub fn has_processors(&self) -> bool {
        self.chain.is_some()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The registered `gnomon_exporter_updates_total{output}` handle.
    pub fn updates_counter(&self) -> &metrics::Counter {
        &self.updates_counter
    }

    pub fn config(&self) -> &PrometheusOutputConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it (without
        // the capture of a shape being learnt, which would otherwise grow forever).
        self.state.lock().unwrap_or_else(|poisoned| {
            let mut state = poisoned.into_inner();
            state.capture = None;
            state
        })
    }

    /// Stores the samples of `events` (one event-format NATS message's worth). With
    /// processors, each event goes through them alone first (gnmic's `WriteEvent`);
    /// without, the decoded events are read in place — as plain events through the learnt
    /// shapes when they are one notification's ([`crate::wire::plain_events`]).
    pub fn ingest(&self, events: &[WireEvent<'_>]) -> IngestCounts {
        // One notification's events, read as plain events, store through the shapes
        // learnt before — except with strings-as-labels, where a string labels the other
        // values of its own event, which plain events do not keep together.
        if self.chain.is_none() && !self.config.strings_as_labels {
            if let Some((plain, samples)) = crate::wire::plain_events(events) {
                return self.ingest_plain(&plain, &samples);
            }
        }
        if self.chain.is_none() || events.iter().all(|e| e.name == TARGET_UP) {
            return self.ingest_decoded(events);
        }
        let status: Vec<&WireEvent<'_>> = events.iter().filter(|e| e.name == TARGET_UP).collect();
        let records = events
            .iter()
            .filter(|e| e.name != TARGET_UP)
            .map(processing::record_from_wire)
            .collect();
        let mut counts = self.ingest_records(records, Batching::PerEvent);
        if !status.is_empty() {
            let mut guard = self.lock();
            let state = &mut *guard;
            let now = state.exposition.now();
            for event in status {
                ingest_target_status(state, self.remote.as_deref(), event, now, &mut counts);
            }
        }
        counts
    }

    /// Runs the output's processors (if any) over `records` in batches of `batching`, then
    /// stores their samples. Records named `gnomon_target_up` skip the processors.
    pub fn ingest_records(&self, mut records: Vec<Record>, batching: Batching) -> IngestCounts {
        if let Some(chain) = &self.chain {
            if records.iter().any(|r| r.name == TARGET_UP) {
                let (status, mut data): (Vec<Record>, Vec<Record>) =
                    records.into_iter().partition(|r| r.name == TARGET_UP);
                chain.apply(&mut data, batching);
                records = status;
                records.append(&mut data);
            } else {
                chain.apply(&mut records, batching);
            }
        }
        let mut counts = IngestCounts::default();
        let override_now = self.override_now();
        let mut values: Vec<(&str, SampleValue<'_>)> = Vec::new();
        let mut guard = self.lock();
        let state = &mut *guard;
        let now = state.exposition.now();
        for record in &records {
            if record.name == TARGET_UP {
                ingest_target_status(
                    state,
                    self.remote.as_deref(),
                    &processing::wire_view(record),
                    now,
                    &mut counts,
                );
                continue;
            }
            values.clear();
            values.extend(
                record
                    .values
                    .iter()
                    .map(|(k, v)| (k.as_str(), processing::val_to_sample(v))),
            );
            self.ingest_event(
                state,
                &record.name,
                override_now.unwrap_or(record.timestamp),
                record.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                &values,
                now,
                &mut counts,
                false,
            );
        }
        self.store_pending(state, now, &mut counts);
        counts
    }

    /// The decoded events, read in place (no processors).
    fn ingest_decoded(&self, events: &[WireEvent<'_>]) -> IngestCounts {
        let mut counts = IngestCounts::default();
        let override_now = self.override_now();
        let mut guard = self.lock();
        let state = &mut *guard;
        let now = state.exposition.now();
        // The tags of the last event given to the series builder.
        let mut previous_tags = None;
        for event in events {
            if event.name == TARGET_UP {
                ingest_target_status(state, self.remote.as_deref(), event, now, &mut counts);
                continue;
            }
            self.ingest_event(
                state,
                &event.name,
                override_now.unwrap_or(event.timestamp),
                event.tags.iter().map(|(k, v)| (k.as_ref(), v.as_ref())),
                &event.values,
                now,
                &mut counts,
                previous_tags.is_some_and(|previous| same_tags(previous, &event.tags)),
            );
            previous_tags = Some(&event.tags);
        }
        self.store_pending(state, now, &mut counts);
        counts
    }

    /// The time that replaces every sample's timestamp (`override-timestamps` with
    /// `export-timestamps`), if any.
    fn override_now(&self) -> Option<i64> {
        (self.config.export_timestamps && self.config.override_timestamps).then(unix_now_ns)
    }

    /// Stores the values of one notification's plain events (name, timestamp, then runs of
    /// values sharing a tag set; see `gnomon_gnmi::event::plain_events`) without an event
    /// per value. A run stands for one event per value: the series are the same, since
    /// labels come from the tags alone — except with `strings-as-labels`, where a string
    /// value labels the values of its own event only, so each value goes alone. Not for
    /// outputs with processors, nor for `gnomon_target_up` (the caller checks).
    pub fn ingest_runs<'r>(
        &self,
        name: &str,
        timestamp: i64,
        runs: impl Iterator<Item = Run<'r>>,
    ) -> IngestCounts {
        let mut guard = self.lock();
        self.ingest_runs_locked(&mut guard, name, timestamp, runs)
    }

    /// Stores the values of one notification's plain events (`samples`: each entry's value
    /// key and value, in entry order) as [`Self::ingest_runs`] does; through the series
    /// locations learnt from an earlier notification of the same shape when it has seen
    /// one ([`crate::shape_cache`]). Not for outputs with processors, nor for
    /// `gnomon_target_up` (the caller checks).
    pub fn ingest_plain(
        &self,
        plain: &PlainEvents<'_>,
        samples: &[(&str, SampleValue<'_>)],
    ) -> IngestCounts {
        let mut guard = self.lock();
        let state = &mut *guard;
        // With strings-as-labels a series depends on its value; remote write keeps none.
        if self.config.strings_as_labels
            || self.remote.is_some()
            || samples.len() != plain.entries().len()
        {
            let runs = plain_runs(plain, samples);
            return self.ingest_runs_locked(state, plain.name, plain.timestamp, runs);
        }
        let budget = state
            .exposition
            .len()
            .saturating_mul(SHAPE_BUDGET_PER_SERIES)
            .saturating_add(SHAPE_BUDGET_FLOOR);
        let removals = state.exposition.removals();
        let resets = state.shapes.resets();
        let lookup = state.shapes.lookup(plain, removals, budget);
        let learn = match lookup {
            Lookup::Learnt(fingerprint, slots) => {
                let timestamp = self.override_now().unwrap_or(plain.timestamp);
                let State {
                    exposition,
                    cap_warning,
                    numbers,
                    ..
                } = state;
                numbers.clear();
                numbers.extend(samples.iter().map(|(_, value)| value.to_f64()));
                match self.store_at(exposition, cap_warning, slots, numbers, timestamp) {
                    Some(counts) => return counts,
                    // A value changed kind (a number now, or no longer): learn again.
                    None => Some(fingerprint),
                }
            }
            Lookup::Learn(fingerprint) => Some(fingerprint),
            Lookup::Unknown => None,
        };
        let Some(fingerprint) = learn else {
            // First seen: the cache may have made room for its fingerprint.
            self.count_shape_resets(state, resets);
            let runs = plain_runs(plain, samples);
            return self.ingest_runs_locked(state, plain.name, plain.timestamp, runs);
        };
        state.capture = Some(Capture::default());
        let runs = plain_runs(plain, samples);
        let counts = self.ingest_runs_locked(state, plain.name, plain.timestamp, runs);
        if let Some(slots) = state.capture.take().and_then(|c| c.slots()) {
            state.shapes.learn(fingerprint, plain, slots, budget);
        }
        self.count_shape_resets(state, resets);
        counts
    }

    /// Counts the times the shape cache emptied itself since it had `before` resets.
    fn count_shape_resets(&self, state: &State, before: u64) {
        let resets = state.shapes.resets().saturating_sub(before);
        if resets > 0 {
            self.shape_resets_counter.increment(resets);
        }
    }

    /// Stores the values' `numbers` (`None`: not a number) at the series of a learnt
    /// shape's `slots`; `None`, having stored nothing, when a value's kind no longer fits
    /// its slot.
    fn store_at(
        &self,
        exposition: &mut Exposition,
        cap_warning: &mut Throttle,
        slots: &[ShapeSlot],
        numbers: &[Option<f64>],
        timestamp: i64,
    ) -> Option<IngestCounts> {
        let fits = slots.len() == numbers.len()
            && slots
                .iter()
                .zip(numbers)
                .all(|(slot, number)| matches!(slot, ShapeSlot::At(_)) == number.is_some());
        if !fits {
            return None;
        }
        let now = exposition.now();
        let mut counts = IngestCounts::default();
        for (slot, number) in slots.iter().zip(numbers) {
            let (ShapeSlot::At(location), Some(number)) = (slot, *number) else {
                counts.skipped += 1;
                continue;
            };
            match exposition.update_at(*location, number, timestamp, now) {
                Some(upsert) => self.count_stored(Ok(upsert), cap_warning, &mut counts),
                // Locations stay valid while nothing is removed, which the cache checks.
                None => {
                    debug_assert!(false, "a learnt location {location:?} is gone");
                    counts.skipped += 1;
                }
            }
        }
        Some(counts)
    }

    fn ingest_runs_locked<'r>(
        &self,
        state: &mut State,
        name: &str,
        timestamp: i64,
        runs: impl Iterator<Item = Run<'r>>,
    ) -> IngestCounts {
        let mut counts = IngestCounts::default();
        let timestamp = self.override_now().unwrap_or(timestamp);
        let now = state.exposition.now();
        let each_alone = self.config.strings_as_labels;
        for (tags, values) in runs {
            let tags = || tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            if each_alone {
                for value in values {
                    let value = std::slice::from_ref(value);
                    self.ingest_event(
                        state,
                        name,
                        timestamp,
                        tags(),
                        value,
                        now,
                        &mut counts,
                        false,
                    );
                }
            } else {
                self.ingest_event(
                    state,
                    name,
                    timestamp,
                    tags(),
                    values,
                    now,
                    &mut counts,
                    false,
                );
            }
        }
        self.store_pending(state, now, &mut counts);
        counts
    }

    /// Stores the samples of one event (tags and values sorted by name); `previous_tags`
    /// when the caller knows its tags are the previous event's.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn ingest_event<'t, K: AsRef<str>>(
        &self,
        state: &mut State,
        name: &str,
        timestamp: i64,
        tags: impl Iterator<Item = (&'t str, &'t str)>,
        values: &[(K, SampleValue<'_>)],
        now: crate::exposition::Tick,
        counts: &mut IngestCounts,
        previous_tags: bool,
    ) {
        if previous_tags {
            state.builder.start_event_with_previous_tags(tags, values);
        } else {
            state.builder.start_event(tags, values);
        }
        if let Some(remote) = &self.remote {
            for (key, value) in values {
                let Some((series, labels)) =
                    state.builder.series_and_labels(name, key.as_ref(), value)
                else {
                    counts.skipped += 1;
                    continue;
                };
                let metric =
                    std::str::from_utf8(&series.text[..series.name_len]).unwrap_or_default();
                if remote.push(series.text, metric, labels, series.value, timestamp) {
                    counts.stored += 1;
                } else {
                    counts.buffer_full += 1;
                }
            }
            return;
        }
        for (key, value) in values {
            let series = state.builder.series(name, key.as_ref(), value);
            if let Some(capture) = &mut state.capture {
                capture.pending.push(series.is_some());
            }
            let Some(series) = series else {
                counts.skipped += 1;
                continue;
            };
            let start = state.pending_text.len();
            state.pending_text.extend_from_slice(series.text);
            state.pending.push(PendingSample {
                range: start..state.pending_text.len(),
                name_len: series.name_len,
                value: series.value,
                timestamp_ns: timestamp,
            });
            if state.pending.len() >= PENDING_SAMPLES {
                self.store_pending(state, now, counts);
            }
        }
    }

    /// Stores the pending samples (every ingest ends with this).
    fn store_pending(
        &self,
        state: &mut State,
        now: crate::exposition::Tick,
        counts: &mut IngestCounts,
    ) {
        let State {
            exposition,
            pending,
            pending_text,
            cap_warning,
            capture,
            ..
        } = state;
        exposition.upsert_many(
            FamilyKind::Telemetry,
            pending_text,
            pending,
            now,
            |outcome, location| {
                if let Some(capture) = capture {
                    let stored = matches!(
                        outcome,
                        Ok(Upsert::Inserted | Upsert::Updated | Upsert::Older)
                    );
                    capture.stored.push(location.filter(|_| stored));
                }
                self.count_stored(outcome, cap_warning, counts)
            },
        );
        pending.clear();
        pending_text.clear();
    }

    fn count_stored(
        &self,
        outcome: Result<Upsert, ExpositionError>,
        cap_warning: &mut Throttle,
        counts: &mut IngestCounts,
    ) {
        match outcome {
            Ok(Upsert::Inserted) => {
                counts.stored += 1;
                counts.inserted += 1;
            }
            Ok(Upsert::Updated) => counts.stored += 1,
            Ok(Upsert::Older) => counts.older += 1,
            Ok(Upsert::OverCap) => {
                counts.over_cap += 1;
                self.over_cap_counter.increment(1);
                if let Some(suppressed) = cap_warning.allow() {
                    tracing::warn!(
                        output = %self.name,
                        max_series = self.config.max_series,
                        suppressed,
                        "new series dropped: the output holds max-series already"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(output = %self.name, error = %e, "series not stored");
                counts.skipped += 1;
            }
        }
    }

    /// Drops expired series (gnmic expires on a timer and before every scrape).
    pub fn expire(&self) -> usize {
        let Some(expiration) = self.expiration else {
            return 0;
        };
        let mut state = self.lock();
        let now = state.exposition.now();
        state.exposition.expire(expiration, now, unix_now_ns())
    }

    /// Expires, then renders the exposition into `out`.
    pub fn render_into(&self, out: &mut Vec<u8>) -> usize {
        self.expire();
        let state = self.lock();
        state.exposition.render_into(out);
        state.exposition.len()
    }

    /// The exposition text (for tests).
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.render_into(&mut out);
        out
    }

    /// Drops every series (a sharded exporter that stops serving its shard: what it held
    /// belongs to the shard's next holder now).
    pub fn clear(&self) -> usize {
        let mut state = self.lock();
        let dropped = state.exposition.len();
        state.exposition = Exposition::new(self.config.export_timestamps)
            .with_series_cap(self.config.series_cap());
        // Their locations were the old exposition's.
        state.shapes.clear();
        dropped
    }

    /// Number of series.
    pub fn series_count(&self) -> usize {
        self.lock().exposition.len()
    }

    /// Heap bytes held by the exposition and the shapes learnt for it.
    pub fn heap_bytes(&self) -> usize {
        let state = self.lock();
        state.exposition.heap_bytes() + state.shapes.heap_bytes()
    }

    /// How often the expiry timer runs (gnmic: every `expiration`), None when series never expire.
    pub fn expiration(&self) -> Option<Duration> {
        self.expiration
    }
}

fn ingest_target_status(
    state: &mut State,
    remote: Option<&WriteBuffer>,
    event: &WireEvent<'_>,
    now: crate::exposition::Tick,
    counts: &mut IngestCounts,
) {
    let Some(target) = event.tag("target").or_else(|| event.tag("source")) else {
        counts.skipped += 1;
        return;
    };
    state.scratch.clear();
    state.scratch.extend_from_slice(TARGET_UP.as_bytes());
    state.scratch.extend_from_slice(b"{target=\"");
    for &byte in target.as_bytes() {
        match byte {
            b'\\' => state.scratch.extend_from_slice(b"\\\\"),
            b'"' => state.scratch.extend_from_slice(b"\\\""),
            b'\n' => state.scratch.extend_from_slice(b"\\n"),
            other => state.scratch.push(other),
        }
    }
    state.scratch.extend_from_slice(b"\"}");
    if let Some(remote) = remote {
        // Remote write has no deletes: a target that is gone stops being written and
        // Prometheus marks the series stale.
        for (key, value) in &event.values {
            let Some(number) = value.to_f64().filter(|_| key == TARGET_UP) else {
                continue;
            };
            let labels = std::iter::once(("target", target));
            if remote.push(&state.scratch, TARGET_UP, labels, number, 0) {
                counts.stored += 1;
            } else {
                counts.buffer_full += 1;
            }
        }
        return;
    }
    if event.deletes.iter().any(|d| d == TARGET_UP) {
        state.exposition.remove(&state.scratch);
        return;
    }
    for (key, value) in &event.values {
        if key != TARGET_UP {
            continue;
        }
        let Some(number) = value.to_f64() else {
            counts.skipped += 1;
            continue;
        };
        match state.exposition.upsert(
            FamilyKind::TargetStatus,
            &state.scratch,
            TARGET_UP.len(),
            number,
            0,
            now,
        ) {
            Ok(Upsert::Inserted) => {
                counts.stored += 1;
                counts.inserted += 1;
            }
            Ok(_) => counts.stored += 1,
            Err(_) => counts.skipped += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::decode_events;

    fn output(yaml: &str) -> PrometheusOutput {
        PrometheusOutput::new("prom", serde_yaml::from_str(yaml).unwrap())
    }

    /// Labels follow each event's tags when consecutive events share them, change, or are
    /// interrupted by a target-status event, within one message and across messages.
    #[test]
    fn each_event_keeps_its_own_labels_when_neighbours_share_tags() {
        let event = |tag: &str, key: &str| {
            format!(
                r#"{{"name":"s","timestamp":1,"tags":{{"if":"{tag}"}},"values":{{"{key}":1}}}}"#
            )
        };
        let status = r#"{"name":"gnomon_target_up","timestamp":1,"tags":{"target":"r1"},"values":{"gnomon_target_up":1}}"#;
        for strings_as_labels in [false, true] {
            let out = output(&format!("strings-as-labels: {strings_as_labels}"));
            let first = format!(
                "[{},{},{status},{},{}]",
                event("e1", "a"),
                event("e1", "b"),
                event("e2", "c"),
                event("e2", "d")
            );
            out.ingest(&decode_events(first.as_bytes()).unwrap());
            let second = format!("[{},{}]", event("e3", "e"), event("e1", "f"));
            out.ingest(&decode_events(second.as_bytes()).unwrap());
            let rendered = text(&out);
            for (key, tag) in [
                ("a", "e1"),
                ("b", "e1"),
                ("c", "e2"),
                ("d", "e2"),
                ("e", "e3"),
                ("f", "e1"),
            ] {
                assert!(
                    rendered.contains(&format!("\n{key}{{if=\"{tag}\"}} 1\n")),
                    "{key} with {tag}, strings-as-labels {strings_as_labels}: {rendered}"
                );
            }
        }
    }

    /// A reproducible pseudo-random sequence (xorshift64) from `seed`.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    fn text(output: &PrometheusOutput) -> String {
        String::from_utf8(output.render()).unwrap()
    }

    fn sample(source: &str, value: u64) -> Vec<u8> {
        format!(
            r#"[{{"name":"s","timestamp":0,"tags":{{"source":"{source}"}},"values":{{"/in":{value}}}}}]"#
        )
        .into_bytes()
    }

    #[test]
    fn max_series_drops_new_series_counts_them_and_keeps_updating_the_rest() {
        let out = output("max-series: 2\nexpiration: 1h");
        for source in ["a", "b"] {
            assert_eq!(
                out.ingest(&decode_events(&sample(source, 1)).unwrap())
                    .inserted,
                1
            );
        }
        let counts = out.ingest(&decode_events(&sample("c", 1)).unwrap());
        assert_eq!((counts.stored, counts.over_cap), (0, 1));
        assert_eq!(out.series_count(), 2);
        // Existing series still take new samples.
        let counts = out.ingest(&decode_events(&sample("a", 7)).unwrap());
        assert_eq!((counts.stored, counts.over_cap), (1, 0));
        assert!(
            text(&out).contains("\nin{source=\"a\"} 7\n"),
            "{}",
            text(&out)
        );
        assert!(!text(&out).contains("source=\"c\""));
        // Target status is not data: a new target's up series is never refused.
        let status = br#"[{"name":"gnomon_target_up","timestamp":0,"tags":{"target":"r9"},"values":{"gnomon_target_up":1}}]"#;
        assert_eq!(out.ingest(&decode_events(status).unwrap()).inserted, 1);
        assert!(text(&out).contains("gnomon_target_up{target=\"r9\"} 1"));
        // Room made by a removed series is usable again.
        let deleted = br#"[{"name":"gnomon_target_up","timestamp":0,"tags":{"target":"r9"},"deletes":["gnomon_target_up"]}]"#;
        out.ingest(&decode_events(deleted).unwrap());
        assert_eq!(out.series_count(), 2);
    }

    #[test]
    fn no_max_series_means_no_cap() {
        let out = output("expiration: 1h");
        for i in 0..500 {
            let counts = out.ingest(&decode_events(&sample(&format!("t{i}"), 1)).unwrap());
            assert_eq!(counts.over_cap, 0);
        }
        assert_eq!(out.series_count(), 500);
    }

    #[test]
    fn gnmic_event_becomes_the_documented_series() {
        let out = output("metric-prefix: gnmic\nappend-subscription-name: true");
        let payload = br#"[{"name":"port-stats","timestamp":1700000000123456789,
            "tags":{"interface_name":"ethernet-1/1","source":"10.0.0.1:57400","subscription-name":"port-stats"},
            "values":{"/interfaces/interface/state/counters/in-octets":"123456","/interfaces/interface/state/oper-status":"UP"}}]"#;
        let counts = out.ingest(&decode_events(payload).unwrap());
        assert_eq!(
            counts,
            IngestCounts {
                stored: 1,
                inserted: 1,
                older: 0,
                skipped: 1,
                over_cap: 0,
                buffer_full: 0,
            }
        );
        assert_eq!(
            text(&out),
            "# HELP gnmic_port_stats_interfaces_interface_state_counters_in_octets gNMIc generated metric\n\
             # TYPE gnmic_port_stats_interfaces_interface_state_counters_in_octets untyped\n\
             gnmic_port_stats_interfaces_interface_state_counters_in_octets{interface_name=\"ethernet-1/1\",source=\"10.0.0.1:57400\",subscription_name=\"port-stats\"} 123456\n"
        );
    }

    #[test]
    fn export_timestamps_render_milliseconds() {
        // Old samples expire by their own timestamp; keep this one by never expiring.
        let out = output("export-timestamps: true\nexpiration: -1s");
        out.ingest(
            &decode_events(br#"[{"name":"s","timestamp":1700000000123456789,"values":{"/a":1}}]"#)
                .unwrap(),
        );
        assert!(
            text(&out).ends_with("\na 1 1700000000123\n"),
            "{}",
            text(&out)
        );
    }

    #[test]
    fn target_status_is_fixed_named_and_deletable() {
        let out = output("metric-prefix: gnmic\nappend-subscription-name: true");
        out.ingest(
            &decode_events(br#"[{"name":"gnomon_target_up","tags":{"target":"r1","source":"x"},"values":{"gnomon_target_up":1}}]"#)
                .unwrap(),
        );
        out.ingest(&decode_events(br#"[{"name":"gnomon_target_up","tags":{"source":"r2"},"values":{"gnomon_target_up":0}}]"#).unwrap());
        let rendered = text(&out);
        assert!(
            rendered.contains("# TYPE gnomon_target_up gauge\n"),
            "{rendered}"
        );
        assert!(
            rendered.contains("gnomon_target_up{target=\"r1\"} 1\n"),
            "{rendered}"
        );
        assert!(
            rendered.contains("gnomon_target_up{target=\"r2\"} 0\n"),
            "{rendered}"
        );
        out.ingest(&decode_events(br#"[{"name":"gnomon_target_up","tags":{"target":"r1"},"deletes":["gnomon_target_up"]}]"#).unwrap());
        assert!(!text(&out).contains("r1"));
        assert_eq!(out.series_count(), 1);
    }

    #[test]
    fn export_timestamps_expire_by_sample_time() {
        let out = output("export-timestamps: true\nexpiration: 60s");
        out.ingest(
            &decode_events(
                br#"[{"name":"s","timestamp":1700000000123456789,"values":{"/old":1}}]"#,
            )
            .unwrap(),
        );
        let recent = unix_now_ns();
        out.ingest(
            &decode_events(
                format!(r#"[{{"name":"s","timestamp":{recent},"values":{{"/new":1}}}}]"#)
                    .as_bytes(),
            )
            .unwrap(),
        );
        assert_eq!(out.expire(), 1);
        assert!(text(&out).contains("\nnew 1 "));
    }

    #[test]
    fn negative_expiration_never_expires() {
        let out = output("expiration: -1s");
        assert_eq!(out.expiration(), None);
        out.ingest(&decode_events(br#"[{"name":"s","values":{"/a":1}}]"#).unwrap());
        assert_eq!(out.expire(), 0);
        assert_eq!(out.series_count(), 1);
    }

    /// A notification of interface counters: interfaces `eth{first}`.. (`interfaces` of
    /// them), each with `counters`, values from `value`.
    fn counters(
        timestamp: i64,
        first: usize,
        interfaces: usize,
        counters: &[&str],
        mut value: impl FnMut() -> gnomon_gnmi::proto::gnmi::typed_value::Value,
    ) -> gnomon_gnmi::proto::gnmi::Notification {
        use gnomon_gnmi::path::parse_path;
        use gnomon_gnmi::proto::gnmi::{Notification, TypedValue, Update};
        let mut update = Vec::new();
        for interface in first..first + interfaces {
            for counter in counters {
                let path = format!("interface[name=eth{interface}]/state/counters/{counter}");
                update.push(Update {
                    path: Some(parse_path(&path).unwrap()),
                    val: Some(TypedValue {
                        value: Some(value()),
                    }),
                    ..Default::default()
                });
            }
        }
        Notification {
            timestamp,
            prefix: Some(parse_path("/interfaces").unwrap()),
            update,
            ..Default::default()
        }
    }

    /// A notification stored through learnt series locations gives what the general path
    /// gives, sample for sample: shapes repeating, overlapping and changing, values
    /// changing kind (numbers, numeric strings, other strings), older samples, and series
    /// expiring between notifications (a removal moves other series' slots).
    #[test]
    fn learnt_shapes_store_what_the_general_path_stores() {
        use gnomon_gnmi::event::{plain_events, EventMeta};
        use gnomon_gnmi::proto::gnmi::typed_value::Value;
        let config = "export-timestamps: true\nexpiration: 1h";
        let (learning, general) = (output(config), output(config));
        // r3's samples are stamped long ago: they expire at every expiry, and the other
        // series take their slots.
        let metas = [
            EventMeta::new("r1", "sub"),
            EventMeta::new("r2", "sub"),
            EventMeta::new("r3", "sub"),
        ];
        let mut next = xorshift(0x2545_f491_4f6c_dd1d_u64);
        let now = unix_now_ns();
        let mut expiries = 0;
        for step in 0..800 {
            let roll = next();
            let source = (roll % 3) as usize;
            let timestamp = match source {
                2 => 1_000 + step,
                // Older than the series' last sample, now and then.
                _ => now + (next() % 50) as i64,
            };
            let mut value = || match next() % 64 {
                0 => Value::StringVal("down".into()),
                1 => Value::StringVal("42".into()),
                n => Value::UintVal(n * 1000 + step as u64),
            };
            let notification = match (roll >> 8) % 4 {
                0 => counters(timestamp, 0, 3, &["in", "out"], &mut value),
                1 => counters(timestamp, 0, 3, &["in", "out", "errors"], &mut value),
                2 => counters(timestamp, 1, 3, &["in", "out"], &mut value),
                _ => counters(timestamp, 5, 1, &["in"], &mut value),
            };
            let meta = &metas[source];
            let plain = plain_events(&notification, meta).unwrap();
            let samples: Vec<(&str, SampleValue<'_>)> = plain
                .entries()
                .iter()
                .map(|entry| (plain.key(entry), SampleValue::from(entry.value)))
                .collect();
            let got = learning.ingest_plain(&plain, &samples);
            let runs = plain_runs(&plain, &samples);
            let want = general.ingest_runs(plain.name, plain.timestamp, runs);
            assert_eq!(got, want, "step {step}");
            if step % 40 == 39 {
                let expired = learning.expire();
                assert_eq!(expired, general.expire(), "step {step}");
                expiries += usize::from(expired > 0);
            }
            if step % 40 == 39 {
                assert_eq!(text(&learning), text(&general), "step {step}");
            }
        }
        assert_eq!(text(&learning), text(&general));
        let hits = learning.lock().shapes.hits();
        assert!(hits > 200, "{hits} notifications of learnt shapes");
        assert!(expiries > 15, "{expiries} expiries removed series");
    }

    /// Event-format messages of one notification are stored through learnt shapes; they
    /// must store what the general path stores, message for message: random messages over
    /// a few shapes (values that are numbers, numeric strings, other strings and booleans,
    /// several values per event, tag sets that repeat apart, now and then a second
    /// timestamp or a delete that keeps the message on the general path), older samples,
    /// and a source whose samples expire at every expiry.
    #[test]
    fn event_messages_through_learnt_shapes_store_what_the_general_path_stores() {
        // With strings-as-labels a string labels its own event's values: the general path.
        for config in [
            "export-timestamps: true\nexpiration: 1h",
            "export-timestamps: true\nexpiration: 1h\nstrings-as-labels: true",
        ] {
            event_messages_store_alike(config);
        }
    }

    fn event_messages_store_alike(config: &str) {
        let (learning, general) = (output(config), output(config));
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15_u64);
        let now = unix_now_ns();
        let mut expiries = 0;
        for step in 0..800_i64 {
            let roll = next();
            let source = roll % 3;
            let timestamp = match source {
                2 => 1_000 + step,
                _ => now + (next() % 50) as i64,
            };
            let value = |roll: u64| match roll % 32 {
                0 => r#""down""#.to_string(),
                1 => r#""42""#.to_string(),
                2 => "true".to_string(),
                3 => format!("{step}.5"),
                n => (n * 1000 + step as u64).to_string(),
            };
            // Per event: its interface (None: no tags but the source) and value keys.
            let shape: &[(Option<u32>, &[&str])] = match (roll >> 8) % 4 {
                0 => &[(Some(1), &["in", "out"]), (Some(1), &["errors"])],
                1 => &[(Some(1), &["in"]), (Some(2), &["in"]), (Some(1), &["out"])],
                2 => &[(None, &["cpu", "mem"])],
                _ => &[(Some(3), &["in", "out", "errors"])],
            };
            let events: Vec<String> = shape
                .iter()
                .enumerate()
                .map(|(i, (interface, keys))| {
                    let tags = match interface {
                        Some(n) => format!(r#"{{"interface_name":"e{n}","source":"r{source}"}}"#),
                        None => format!(r#"{{"source":"r{source}"}}"#),
                    };
                    let values: Vec<String> =
                        keys.iter().map(|k| format!(r#""/{k}":{}"#, value(next()))).collect();
                    // Now and then a second timestamp or a delete: the general path.
                    let (stamp, deletes) = match (i, next() % 40) {
                        (1, 0) => (timestamp + 7_000_000_000, ""),
                        (0, 1) => (timestamp, r#","deletes":["/gone"]"#),
                        _ => (timestamp, ""),
                    };
                    format!(
                        r#"{{"name":"port","timestamp":{stamp},"tags":{tags},"values":{{{}}}{deletes}}}"#,
                        values.join(",")
                    )
                })
                .collect();
            let json = format!("[{}]", events.join(","));
            let events = decode_events(json.as_bytes()).unwrap();
            let got = learning.ingest(&events);
            let want = general.ingest_decoded(&events);
            assert_eq!(got, want, "step {step}: {json}");
            if step % 40 == 39 {
                let expired = learning.expire();
                assert_eq!(expired, general.expire(), "step {step}");
                expiries += usize::from(expired > 0);
                assert_eq!(text(&learning), text(&general), "step {step}");
            }
        }
        assert_eq!(text(&learning), text(&general));
        let hits = learning.lock().shapes.hits();
        if config.contains("strings-as-labels") {
            assert_eq!(hits, 0, "no learnt shapes with strings-as-labels");
        } else {
            assert!(hits > 200, "{hits} messages of learnt shapes");
        }
        assert!(expiries > 15, "{expiries} expiries removed series");
    }

    /// A shape is used only when the notification is that shape: one filed under another
    /// notification's fingerprint (a collision) is learnt again, never used.
    #[test]
    fn a_shape_under_another_fingerprint_is_not_used() {
        use crate::shape_cache::{Lookup, ShapeCache, ShapeSlot};
        use gnomon_gnmi::event::{plain_events, EventMeta};
        use gnomon_gnmi::proto::gnmi::{typed_value::Value, Notification, TypedValue, Update};
        let uint = || Value::UintVal(1);
        // Updates at `paths`, without a prefix.
        let at = |paths: &[&str]| Notification {
            update: paths
                .iter()
                .map(|path| Update {
                    path: Some(gnomon_gnmi::path::parse_path(path).unwrap()),
                    val: Some(TypedValue {
                        value: Some(uint()),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let (meta, renamed) = (EventMeta::new("r1", "sub"), EventMeta::new("r1", "other"));
        let cases = [
            // Other tags, the same keys.
            (
                counters(1, 0, 2, &["in"], uint),
                counters(1, 1, 2, &["in"], uint),
                &meta,
            ),
            // Other keys (of the same lengths), the same tags.
            (
                counters(1, 0, 2, &["in"], uint),
                counters(1, 0, 2, &["on"], uint),
                &meta,
            ),
            // The same keys back to back, split otherwise.
            (at(&["/x/y", "/z"]), at(&["/x", "/y/z"]), &meta),
            // The same tag sets and keys, the middle key under the other tag set.
            (
                at(&["/i[n=0]/in", "/i[n=1]/out", "/i[n=1]/err"]),
                at(&["/i[n=0]/in", "/i[n=0]/out", "/i[n=1]/err"]),
                &meta,
            ),
            // Another subscription.
            (
                counters(1, 0, 2, &["in"], uint),
                counters(1, 0, 2, &["in"], uint),
                &renamed,
            ),
        ];
        for (i, (a, other, other_meta)) in cases.iter().enumerate() {
            let a = plain_events(a, &meta).unwrap();
            let other = plain_events(other, other_meta).unwrap();
            let slots: Vec<ShapeSlot> = (0..a.entries().len() as u32)
                .map(|slot| ShapeSlot::At((0, slot)))
                .collect();
            let mut cache = ShapeCache::default();
            assert!(matches!(cache.lookup(&a, 0, 100), Lookup::Unknown));
            let Lookup::Learn(fingerprint) = cache.lookup(&a, 0, 100) else {
                panic!("case {i}: a shape seen twice is to be learnt");
            };
            // As if `other` had `a`'s fingerprint.
            cache.learn(fingerprint, &other, slots.clone(), 100);
            let again = cache.lookup(&a, 0, 100);
            assert!(
                matches!(again, Lookup::Learn(f) if f == fingerprint),
                "case {i}"
            );
            cache.learn(fingerprint, &a, slots.clone(), 100);
            let again = cache.lookup(&a, 0, 100);
            assert!(
                matches!(again, Lookup::Learnt(_, s) if s == slots),
                "case {i}"
            );
            // A removal in the exposition forgets every shape.
            assert!(
                matches!(cache.lookup(&a, 1, 100), Lookup::Unknown),
                "case {i}"
            );
        }
    }

    /// The cache holds at most its budget of entries: beyond it, it starts again.
    #[test]
    fn the_shape_cache_keeps_to_its_budget() {
        use crate::shape_cache::{Lookup, ShapeCache, ShapeSlot};
        use gnomon_gnmi::event::{plain_events, EventMeta};
        use gnomon_gnmi::proto::gnmi::typed_value::Value;
        let meta = EventMeta::new("r1", "sub");
        let mut cache = ShapeCache::default();
        for first in 0..10 {
            let n = counters(1, first, 4, &["in"], || Value::UintVal(1));
            let plain = plain_events(&n, &meta).unwrap();
            cache.lookup(&plain, 0, 10);
            if let Lookup::Learn(fingerprint) = cache.lookup(&plain, 0, 10) {
                cache.learn(fingerprint, &plain, vec![ShapeSlot::Skipped; 4], 10);
            }
            assert!(cache.size() <= 10, "{} entries", cache.size());
        }
        assert!(cache.resets() > 0);
    }

    /// Notifications that keep changing shape over the same series (on-change subsets)
    /// fill the shape cache with fingerprints: it empties itself at its bound and counts it.
    #[test]
    fn the_shape_cache_empties_itself_at_its_bound_and_counts_it() {
        use gnomon_gnmi::event::{plain_events, EventMeta};
        use gnomon_gnmi::path::parse_path;
        use gnomon_gnmi::proto::gnmi::{typed_value::Value, Notification, TypedValue, Update};
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let out = metrics::with_local_recorder(&recorder, || output("{}"));
        let meta = EventMeta::new("r1", "sub");
        const LEAVES: u32 = 17;
        let paths: Vec<_> = (0..LEAVES)
            .map(|leaf| parse_path(&format!("/leaf{leaf}")).unwrap())
            .collect();
        // Every subset of the leaves is a shape of its own, seen once.
        let subsets = SHAPE_BUDGET_FLOOR as u32 + 2 * LEAVES + 100;
        for subset in 1..=subsets {
            let notification = Notification {
                timestamp: 1,
                update: (0..LEAVES)
                    .filter(|leaf| subset & (1 << leaf) != 0)
                    .map(|leaf| Update {
                        path: Some(paths[leaf as usize].clone()),
                        val: Some(TypedValue {
                            value: Some(Value::UintVal(u64::from(subset))),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            let plain = plain_events(&notification, &meta).unwrap();
            let samples: Vec<(&str, SampleValue<'_>)> = plain
                .entries()
                .iter()
                .map(|entry| (plain.key(entry), SampleValue::from(entry.value)))
                .collect();
            out.ingest_plain(&plain, &samples);
        }
        assert_eq!(out.series_count(), LEAVES as usize);
        let resets = out.lock().shapes.resets();
        assert_eq!(resets, 1);
        let rendered = handle.render();
        assert!(
            rendered.contains("gnomon_exporter_shape_cache_resets_total{output=\"prom\"} 1"),
            "{rendered}"
        );
        assert!(out.lock().shapes.size() < SHAPE_BUDGET_FLOOR + 2 * LEAVES as usize);
    }
}
