//! gnomon's gNMI layer, shared by the collector, exporter and simulator.
//!
//! * [`proto`]: the gNMI and gnmi_ext types and gRPC stubs, generated at build time from
//!   `proto/` with protox (pure Rust, so no system `protoc` is needed).
//! * [`path`]: gnmic's path text syntax, joining and wildcard matching.
//! * [`value`]: turning `TypedValue`s into JSON, numbers and display text.
//! * [`event`]: gnmic's "event" message format (what travels over NATS and
//!   what the Prometheus output is built from).

pub mod event;
pub mod path;
pub mod proto;
pub mod value;
