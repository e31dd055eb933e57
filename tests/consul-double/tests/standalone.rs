//! The double as a separate process (`consul-double --listen ...`), driven by gnomon's Consul
//! backend: what multi-process cluster tests will use.

use gnomon_coordination::{self as coordination, LockerConfig, LockerType};
use gnomon_testkit::{free_port, ChildProcess};
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test]
async fn standalone_double_serves_locks_and_honours_short_ttls() {
    let logs = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_consul-double"));
    command.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--session-ttl-min",
        "1s",
    ]);
    let mut process = ChildProcess::spawn("consul-double", command, logs.path()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !process.log().contains("LISTENING 127.0.0.1:") {
        assert!(
            Instant::now() < deadline,
            "never listened: {}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut cfg = LockerConfig::new(LockerType::Consul);
    cfg.address = Some(format!("127.0.0.1:{port}"));
    cfg.session_ttl = Duration::from_secs(1);
    let first = coordination::connect(&cfg, "first").await.unwrap();
    let second = coordination::connect(&cfg, "second").await.unwrap();
    let guard = first
        .acquire("gnmic/c1/leader", "first")
        .await
        .unwrap()
        .expect("free");
    assert!(second
        .acquire("gnmic/c1/leader", "second")
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        second.holder("gnmic/c1/leader").await.unwrap().as_deref(),
        Some("first")
    );
    guard.release().await.unwrap();
    assert!(second
        .acquire("gnmic/c1/leader", "second")
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        process.terminate(Duration::from_secs(5)),
        Some(0),
        "clean exit on SIGTERM"
    );
}

#[tokio::test]
async fn standalone_double_rejects_bad_arguments() {
    let logs = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_consul-double"));
    command.args(["--listen", "not-an-address"]);
    let mut process = ChildProcess::spawn("consul-double-bad", command, logs.path()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while process.is_running() {
        assert!(Instant::now() < deadline, "kept running with a bad address");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(process.log().contains("bad --listen"), "{}", process.log());
}
