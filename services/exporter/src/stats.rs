//! The exporter's own metrics. They go to the process-wide `metrics` recorder (served by the
//! API's `/metrics`), never into the gNMI exposition; the same counts are kept in atomics so
//! tests and callers can read them without a recorder.

use std::sync::atomic::{AtomicU64, Ordering};

/// Messages received from NATS.
pub const MESSAGES: &str = "gnomon_exporter_messages_total";
/// Samples stored into an output.
pub const UPDATES: &str = "gnomon_exporter_updates_total";
/// Messages dropped because their fencing token is older than the target's newest.
pub const STALE_DROPPED: &str = "gnomon_exporter_stale_dropped_total";
/// Messages dropped because their fencing token could not be matched to the target lock's
/// current holder (no token, no lock, or a token the store has not confirmed: forged or early).
pub const UNCONFIRMED_DROPPED: &str = "gnomon_exporter_unconfirmed_dropped_total";
/// Messages that could not be decoded, by `reason`.
pub const MALFORMED: &str = "gnomon_exporter_malformed_total";
/// Messages dropped by `reason`: `buffer_full` (the input buffer stayed full),
/// `other_shard` (a sharded input's message of a target outside the held shard).
pub const DROPPED: &str = "gnomon_exporter_dropped_total";
/// The shard a sharded output serves, per output; -1 while a spare.
pub const SHARD_HELD: &str = "gnomon_exporter_shard";
/// Series currently held, per output.
pub const SERIES: &str = "gnomon_exporter_series";
/// Samples dropped because they would add a series beyond the output's `max-series`.
pub const SERIES_CAP_DROPPED: &str = "gnomon_exporter_series_cap_dropped_total";
/// Series removed by expiry.
pub const EXPIRED: &str = "gnomon_exporter_expired_total";
/// Times an output's cache of notification shapes emptied itself on reaching its bound.
pub const SHAPE_CACHE_RESETS: &str = "gnomon_exporter_shape_cache_resets_total";
/// Scrape duration, per output.
pub const SCRAPE_DURATION: &str = "gnomon_exporter_scrape_duration_seconds";
/// Bytes of the last scrape body (before compression).
pub const SCRAPE_BYTES: &str = "gnomon_exporter_scrape_bytes";

/// Remote write: samples the backend accepted, per output.
pub const REMOTE_WRITE_SAMPLES: &str = "gnomon_remote_write_samples_total";
/// Remote write: samples dropped, per output and `reason` (buffer_full, send_failed, refused).
pub const REMOTE_WRITE_DROPPED: &str = "gnomon_remote_write_dropped_samples_total";
/// Remote write: requests that failed after their retries, per output.
pub const REMOTE_WRITE_FAILED_REQUESTS: &str = "gnomon_remote_write_failed_requests_total";

/// gNMI server: paths held by its cache.
pub const GNMI_CACHE_PATHS: &str = "gnomon_gnmi_server_cache_paths";
/// gNMI server: updates refused because the cache held `cache.max-paths` already.
pub const GNMI_CACHE_DROPPED: &str = "gnomon_gnmi_server_cache_dropped_total";
/// gNMI server: paths removed by `cache.expiration`.
pub const GNMI_CACHE_EXPIRED: &str = "gnomon_gnmi_server_cache_expired_total";
/// gNMI server: Subscribe RPCs currently open.
pub const GNMI_SUBSCRIBERS: &str = "gnomon_gnmi_server_subscribers";
/// gNMI server: subscriptions ended because the client fell behind, by `reason`.
pub const GNMI_SLOW_ENDED: &str = "gnomon_gnmi_server_slow_subscribers_ended_total";
/// gNMI server: RPCs refused, by `rpc` and `reason` (limit, unauthenticated).
pub const GNMI_REFUSED: &str = "gnomon_gnmi_server_refused_total";

/// Gives every exporter metric its `# HELP` text (call once the recorder is installed).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(MESSAGES, "Messages received from the bus.");
    describe_counter!(
        REMOTE_WRITE_SAMPLES,
        "Samples a prometheus_write output's backend accepted."
    );
    describe_counter!(
        REMOTE_WRITE_DROPPED,
        "Samples a prometheus_write output dropped, by reason (buffer_full: the backend is slower than ingest or down; send_failed: a request failed after its retries; refused: the backend answered 4xx)."
    );
    describe_counter!(
        REMOTE_WRITE_FAILED_REQUESTS,
        "Remote write requests that failed after their retries."
    );
    describe_gauge!(GNMI_CACHE_PATHS, "Paths held by the gNMI server's cache.");
    describe_counter!(
        GNMI_CACHE_DROPPED,
        "Updates the gNMI server's cache refused because it held cache.max-paths paths."
    );
    describe_counter!(
        GNMI_CACHE_EXPIRED,
        "Paths removed from the gNMI server's cache by cache.expiration."
    );
    describe_gauge!(GNMI_SUBSCRIBERS, "Subscribe RPCs open on the gNMI server.");
    describe_counter!(
        GNMI_SLOW_ENDED,
        "gNMI subscriptions ended with RESOURCE_EXHAUSTED because the client fell behind, by reason."
    );
    describe_counter!(
        GNMI_REFUSED,
        "gNMI RPCs refused, by rpc and reason (limit, unauthenticated)."
    );
    describe_counter!(UPDATES, "Samples stored into a Prometheus output.");
    describe_counter!(
        STALE_DROPPED,
        "Messages dropped because their fencing token is not the target lock's current one."
    );
    describe_counter!(
        UNCONFIRMED_DROPPED,
        "Messages dropped because their fencing token is not one the coordination store confirms for the target (missing, forged, or ahead of the store)."
    );
    describe_counter!(MALFORMED, "Messages that could not be decoded, by reason.");
    describe_counter!(
        DROPPED,
        "Messages dropped, by reason (buffer_full: an input buffer stayed full; other_shard: a sharded input's message of a target outside the held shard)."
    );
    describe_gauge!(SERIES, "Series currently held by a Prometheus output.");
    describe_gauge!(
        SHARD_HELD,
        "The shard a sharded Prometheus output serves (-1: a spare holding none)."
    );
    describe_counter!(EXPIRED, "Series removed by expiration.");
    describe_counter!(
        SHAPE_CACHE_RESETS,
        "Times a Prometheus output's cache of notification shapes (series locations learnt per notification shape) emptied itself on reaching its bound."
    );
    describe_counter!(
        SERIES_CAP_DROPPED,
        "Samples dropped because they would add a series beyond the output's max-series."
    );
    describe_histogram!(
        SCRAPE_DURATION,
        Unit::Seconds,
        "Time to render a scrape of a Prometheus output."
    );
    describe_gauge!(
        SCRAPE_BYTES,
        Unit::Bytes,
        "Size of the last scrape body before compression."
    );
}

/// Counters shared by an exporter's inputs. The hot-path metric handles are registered
/// once (with the recorder installed when the stats are created), not per message.
#[derive(Debug)]
pub struct ExporterStats {
    messages: AtomicU64,
    updates: AtomicU64,
    stale_dropped: AtomicU64,
    unconfirmed_dropped: AtomicU64,
    malformed: AtomicU64,
    dropped: AtomicU64,
    messages_counter: metrics::Counter,
    stale_counter: metrics::Counter,
    unconfirmed_counter: metrics::Counter,
}

impl Default for ExporterStats {
    fn default() -> Self {
        Self {
            messages: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            stale_dropped: AtomicU64::new(0),
            unconfirmed_dropped: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            messages_counter: metrics::counter!(MESSAGES),
            stale_counter: metrics::counter!(STALE_DROPPED),
            unconfirmed_counter: metrics::counter!(UNCONFIRMED_DROPPED),
        }
    }
}

impl ExporterStats {
    pub fn message(&self) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.messages_counter.increment(1);
    }

    /// Samples stored into an output; `counter` is the output's registered handle.
    pub fn updates(&self, counter: &metrics::Counter, count: u64) {
        self.updates.fetch_add(count, Ordering::Relaxed);
        counter.increment(count);
    }

    pub fn stale(&self) {
        self.stale_dropped.fetch_add(1, Ordering::Relaxed);
        self.stale_counter.increment(1);
    }

    pub fn unconfirmed(&self) {
        self.unconfirmed_dropped.fetch_add(1, Ordering::Relaxed);
        self.unconfirmed_counter.increment(1);
    }

    pub fn unconfirmed_dropped_total(&self) -> u64 {
        self.unconfirmed_dropped.load(Ordering::Relaxed)
    }

    pub fn malformed(&self, reason: &'static str) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(MALFORMED, "reason" => reason).increment(1);
    }

    pub fn dropped(&self, reason: &'static str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(DROPPED, "reason" => reason).increment(1);
    }

    pub fn messages_total(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    pub fn updates_total(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }

    pub fn stale_dropped_total(&self) -> u64 {
        self.stale_dropped.load(Ordering::Relaxed)
    }

    pub fn malformed_total(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
