//! Rust types and gRPC stubs generated from `proto/` at build time.

/// gNMI extensions (`gnmi_ext` package).
#[allow(clippy::all, missing_docs)]
pub mod gnmi_ext {
    include!(concat!(env!("OUT_DIR"), "/gnmi_ext.rs"));
}

/// gNMI service and messages (`gnmi` package).
#[allow(clippy::all, missing_docs, deprecated)]
pub mod gnmi {
    include!(concat!(env!("OUT_DIR"), "/gnmi.rs"));
}

/// The gNMI version gnomon speaks, as reported in CapabilityResponse.
pub const GNMI_VERSION: &str = "0.10.0";
