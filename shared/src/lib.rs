//! gnomon-shared: the parts every gnomon service uses.

pub mod bus;
pub mod config;
pub mod coordination;
pub mod duration;
pub mod error_text;
pub mod gnmi;
pub mod proto;
pub mod telemetry;
pub mod tls;
