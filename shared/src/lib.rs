//! gnomon-shared: the parts every gnomon service uses.

pub mod proto;
