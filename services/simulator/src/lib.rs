//! gnomon simulator: one process serving many simulated gNMI devices.
//!
//! Each device listens on its own port and serves an OpenConfig-shaped tree (hostname, CPU,
//! memory, interfaces with growing counters and a flapping oper-status) over Capabilities,
//! Get and Subscribe (ONCE, POLL, STREAM with SAMPLE / ON_CHANGE / TARGET_DEFINED). Set
//! answers UNIMPLEMENTED. An optional HTTP `/stats` endpoint reports who subscribes to
//! which device, and a load mode turns every STREAM subscription into a firehose for
//! throughput tests.
//!
//! Status codes: a path outside the tree's schema is INVALID_ARGUMENT; a path that fits the
//! schema but names no instance (`interface[name=Ethernet99]`) is NOT_FOUND (Get and
//! Subscribe); unsupported encodings are INVALID_ARGUMENT; missing or wrong credentials are
//! UNAUTHENTICATED.
//!
//! In-process use (tests, demos):
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use gnomon_simulator::{Simulator, SimulatorArgs};
//! let simulator = Simulator::start(SimulatorArgs::on_free_ports(3)).await?;
//! for address in simulator.device_addresses() {
//!     println!("device at {address}");
//! }
//! simulator.stop().await;
//! # Ok(()) }
//! ```

mod args;
mod auth;
mod context;
mod encoding;
mod model;
mod router;
mod selection;
mod server;
mod service;
mod stats;
mod subscribe;
mod tls;
mod wire;

pub use args::SimulatorArgs;
pub use server::{run, Simulator};
pub use stats::{StatsReport, TargetStats};
