//! gnomon-etcd against a real etcd (the `etcd` binary, started on 127.0.0.1 with a temporary
//! data directory by gnomon-testkit). One test binary, so the suite links once.

mod auth;
mod common;
mod failures;
mod kv;
mod lease;
mod tls;
mod watch;
