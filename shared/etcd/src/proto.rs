//! The wire types and gRPC client stubs generated from `proto/etcd/` at build time. The
//! module names are etcd's protobuf packages; generated code refers to its siblings by them.

/// Stored key-values and watch events (`mvccpb`).
#[allow(clippy::all, missing_docs)]
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

/// Role permissions (`authpb`).
#[allow(clippy::all, missing_docs)]
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
}

/// The KV, Watch, Lease, Maintenance and Auth services (`etcdserverpb`).
#[allow(clippy::all, missing_docs)]
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}
