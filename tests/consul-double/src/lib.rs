//! gnomon consul-double.
