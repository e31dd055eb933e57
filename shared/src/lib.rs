//! gnomon-shared: the parts every gnomon service uses.

pub mod proto;
pub mod bus;
pub mod gnmi;
pub mod telemetry;
