//! gnomon coordinator service.
