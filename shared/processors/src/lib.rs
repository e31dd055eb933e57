//! gnmic's event processors: parsed from the `processors:` section, validated
//! and compiled once at startup, applied to batches of [`Event`]s on the hot
//! path.
//!
//! # What this crate owns
//!
//! * The schema: `processors: {<name>: {<type>: {...fields}}}`, names
//!   case-insensitive, `debug: true` accepted on every type (each event is
//!   logged at debug level before and after that processor).
//! * Compilation: regexes, jq programs (`condition`, event-jq) and Starlark
//!   scripts are compiled in [`Processors::from_config`]; any invalid field
//!   is one [`ProcessorError`] line naming the processor, the key and the
//!   value. `event-plugin` and `event-trigger` are refused by name.
//! * Application: [`Processors::chain`] turns an `event-processors:` name
//!   list into a [`Chain`] whose [`Chain::apply`] runs the processors in list
//!   order over one batch.
//!
//! # Use
//!
//! ```
//! use gnomon_processors::{Event, Processors};
//!
//! // The raw `processors:` map, as the config loader keeps it.
//! let raw = serde_json::json!({
//!     "short-names": {"event-strings": {
//!         "value-names": [".*"],
//!         "transforms": [{"path-base": {"apply-on": "name"}}]
//!     }}
//! });
//! let procs = Processors::from_config(&raw)?; // once, at startup
//! let mut chain = procs.chain(&["short-names"])?; // per output / input
//! let mut batch = vec![Event {
//!     name: "sub".into(),
//!     values: [("/a/b/in-octets".to_string(), serde_json::json!(1))].into(),
//!     ..Default::default()
//! }];
//! chain.apply(&mut batch); // per notification
//! assert!(batch[0].values.contains_key("in-octets"));
//! # Ok::<(), gnomon_processors::ProcessorError>(())
//! ```
//!
//! # Where gnmic applies processors (and where the integrator should)
//!
//! * **Outputs** apply their `event-processors` to the events of each message
//!   just before writing (for Prometheus: before the metrics are updated).
//!   Each output gets its own [`Chain`], so stateful processors
//!   (rate-limit, value-tag-v2, Starlark) keep per-output state, as in gnmic.
//! * **Inputs** apply their `event-processors` to the events decoded from
//!   each received message, before handing them to their outputs (which then
//!   apply their own).
//!
//! A batch is the events of one notification (one gNMI message), which is
//! what gnmic hands its processors (`[]*EventMsg`). Processors that combine
//! events (merge, group-by, value-tag, jq, Starlark) see exactly that batch.
//!
//! # Cost model
//!
//! * Nothing is compiled on the hot path; [`Chain::apply`] takes `&mut self`
//!   and needs no lock (the chain is owned by one output or input task).
//! * Each processor first checks cheap preconditions: selectors are matched
//!   against names before any value is touched; patterns that are plain text
//!   between anchors (`^x$`, `x$`, `^x`, `.*x.*`) are string comparisons, the
//!   others one `RegexSet`; `.*` is "match everything"; an event nothing
//!   matches is not modified or reallocated. A processor that matches
//!   nothing costs one scan of the names it selects on. What remains is the
//!   work a transform needs: a `BTreeMap` insert or removal per renamed,
//!   added or deleted entry, an allocation per new string (see
//!   [`bench_chain_ns_per_event`]).
//! * A `condition` (jq) converts the event to a jq value and runs the
//!   program: microseconds, paid only where a condition is configured.
//! * event-starlark runs the script on a dedicated thread that owns the
//!   interpreter (module globals such as gnmic's `cache` dict live across
//!   batches); a batch crosses threads twice. Each batch is one top-level
//!   statement of the script's module, where Starlark's collector runs once
//!   the heap has doubled, so memory is bounded by what the script keeps in
//!   its globals.
//! * Stateful processors are bounded: rate-limit's LRU (`cache-size`,
//!   default 1000 tag sets), value-tag-v2's remembered values (`cache-size`,
//!   default [`VALUE_TAG_V2_MAX_RULES`] per rule, oldest evicted). Evictions
//!   are counted in `gnomon_processor_evictions_total{processor}`. Merge,
//!   group-by, combine and value-tag work within one batch and keep nothing.
//!
//! # Differences from gnmic, on purpose
//!
//! Invalid values that gnmic silently ignores are refused at startup
//! (unknown event-convert type, unknown data unit, precision or time zone);
//! unknown fields are a warning. Where gnmic's result depends on Go's
//! random map order, gnomon is deterministic: event-strings transforms each
//! original name once, group-by keeps first-seen order, value-tag-v2
//! applies matches in the order their tag sets were first seen.
//! event-extract-tags without `overwrite` keeps an existing tag of the
//! group's name and event-date-string converts tags in place (both as
//! documented; gnmic's code differs). event-convert supports `bool` as
//! documented. Events are never lost to a nil map (group-by keeps events
//! without values). event-write writes a matching event once.
//! event-rate-limit hashes tags with a 64-bit hash instead of SHA-256.
//! event-plugin and event-trigger are refused by name. Where the
//! documentation's examples contradict gnmic's code (event-value-tag also
//! tags the event carrying the value; title casing starts a word after
//! `-`), gnomon does what gnmic does: that is what a migrating user sees.

#![deny(missing_docs)]

mod build;
mod chain;
mod config;
mod error;
mod gofmt;
mod golayout;
mod jq;
pub mod live;
mod procs;
pub mod record;
mod registry;
mod select;

pub use chain::Chain;
pub use error::ProcessorError;
pub use gnomon_gnmi::event::Event;
pub use live::{ChainSet, LiveChain};
pub use procs::tags::VALUE_TAG_V2_MAX_RULES;
pub use record::{FieldMap, Record, Str, Val};
pub use registry::{Processors, SUPPORTED_TYPES};

#[doc(hidden)]
pub mod bench;
#[doc(hidden)]
pub use bench::bench_chain_ns_per_event;
