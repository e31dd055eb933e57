//! Compiles gnomon's etcd protos (`proto/etcd/`) with protox, a pure-Rust protobuf
//! compiler, so building needs no system `protoc`. Client stubs only.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../../proto";
    let files = [
        "etcd/mvccpb/kv.proto",
        "etcd/authpb/auth.proto",
        "etcd/etcdserverpb/rpc.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={proto_root}/{file}");
    }
    let descriptors = protox::compile(files, [proto_root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
