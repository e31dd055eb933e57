//! gnomon integration.
