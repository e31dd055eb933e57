//! gnomon-etcd: gnomon's own etcd v3 client.
//!
//! It owns everything gnomon says to etcd over gRPC: key-values and transactions (locks,
//! service records), leases and their keep-alive stream (sessions), watch streams, logging
//! in, auth administration for tests and tooling, and a status health check.
//!
//! Why not the `etcd-client` crate: its build script needs a system `protoc`, and gnomon must
//! build on a machine with nothing but the Rust toolchain. The protos here are gnomon's own
//! subset of etcd's API (`proto/etcd/`), compiled by `protox` (pure Rust) in `build.rs`.
//!
//! What it adds on top of raw gRPC:
//! * **Timeouts as a tower layer.** Each endpoint's channel is wrapped in `tower::timeout`, so
//!   every unary call (and the opening of a stream) fails with [`ErrorKind::Timeout`] instead
//!   of hanging on a stalled etcd.
//! * **Failover.** Calls go to the endpoint that last answered and move on to the next one
//!   when the request could not be delivered.
//! * **Tokens.** With a user and password, the client logs in at connect, sends the token
//!   with every call and logs in again once when etcd rejects it (tokens expire when idle).
//! * **Typed errors.** [`Error::kind`] tells transient failures (unavailable, timeout,
//!   overload) from ones that need an operator (wrong password, permission denied, TLS), and
//!   messages name the operation and the endpoint, never a password.
//!
//! ```no_run
//! # async fn example() -> gnomon_etcd::Result<()> {
//! use gnomon_etcd::{Client, Compare, CompareOp, ConnectOptions, PutOptions, Txn, TxnOp};
//! let client = Client::connect(["127.0.0.1:2379"], ConnectOptions::new()).await?;
//! let lease = client.lease_grant(10, 0).await?;
//! let acquired = client
//!     .txn(
//!         Txn::new()
//!             .when([Compare::create_revision("lock", CompareOp::Equal, 0)])
//!             .and_then([TxnOp::put("lock", "me", Some(PutOptions::new().with_lease(lease.id)))]),
//!     )
//!     .await?
//!     .succeeded;
//! # let _ = acquired;
//! # Ok(())
//! # }
//! ```

mod auth;
mod client;
mod error;
mod kv;
mod lease;
mod maintenance;
mod options;
pub mod proto;
mod watch;

pub use auth::{Permission, PermissionType};
pub use client::Client;
pub use error::{BoxError, Error, ErrorKind, Result};
pub use kv::{
    prefix_end, Compare, CompareOp, DeleteOptions, DeleteResponse, GetOptions, GetResponse,
    KeyValue, PutOptions, PutResponse, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
pub use lease::{
    LeaseGrantResponse, LeaseKeepAliveResponse, LeaseKeepAliveStream, LeaseKeeper,
    LeaseTimeToLiveResponse,
};
pub use maintenance::StatusResponse;
pub use options::{ConnectOptions, TlsOptions};
pub use watch::{Event, EventType, WatchOptions, WatchResponse, WatchStream, Watcher};
