//! gnomon exporter service.
