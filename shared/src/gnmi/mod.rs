//! gNMI helpers shared by the collector, exporter and simulator.
//!
//! * [`path`]: gnmic's path text syntax, joining and wildcard matching.
//! * [`value`]: turning `TypedValue`s into JSON, numbers and display text.
//! * [`event`]: gnmic's "event" message format (what travels over NATS and
//!   what the Prometheus output is built from).

pub mod event;
pub mod path;
pub mod value;
