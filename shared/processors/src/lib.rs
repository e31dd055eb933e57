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
//! * Each processor first checks cheap preconditions: regex selectors are
//!   matched against names before any value is touched, lists of patterns
//!   are one `RegexSet`, `.*` is recognised as "match everything", and an
//!   event nothing matches is not modified or reallocated. A chain whose
//!   processors match nothing costs a few regex scans per event (see
//!   [`bench_chain_ns_per_event`]).
//! * A `condition` (jq) converts the event to a jq value and runs the
//!   program: microseconds, paid only where a condition is configured.
//! * event-starlark runs the script on a dedicated thread that owns the
//!   interpreter (its module globals, like gnmic's `cache`, live across
//!   calls); a batch crosses threads twice.
//! * Stateful processors are bounded: rate-limit's LRU (`cache-size`,
//!   default 1000), value-tag-v2's rule cache ([`VALUE_TAG_V2_MAX_RULES`] per
//!   rule), Starlark's heap (collected between batches). Evictions are
//!   counted in `gnomon_processor_evictions_total{processor}`. Merge,
//!   group-by, combine and value-tag work within one batch and keep nothing.

#![deny(missing_docs)]

mod chain;
mod config;
mod error;
mod gofmt;
mod golayout;
mod jq;
mod procs;
mod registry;
mod select;

pub use chain::Chain;
pub use error::ProcessorError;
pub use gnomon_gnmi::event::Event;
pub use procs::tags::VALUE_TAG_V2_MAX_RULES;
pub use registry::{Processors, SUPPORTED_TYPES};

#[doc(hidden)]
pub mod bench;
#[doc(hidden)]
pub use bench::bench_chain_ns_per_event;
