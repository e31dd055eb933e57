//! gnomon collector service.
