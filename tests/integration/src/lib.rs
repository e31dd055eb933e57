//! gnomon integration tests. `tests/conformance.rs` runs one coordination conformance suite
//! against etcd, the Consul test double, the memory backend and (when `CONSUL_HTTP_ADDR` is
//! set) a real Consul; `tests/consul_double.rs` pins the double's Consul semantics. The
//! `lock-holder` binary is the child process those suites SIGKILL.
