//! The binary's start with a configuration: gnmic's top-level `debug` raises the log level,
//! warnings about keys gnomon does not apply are logged by name, and a bad value stops the
//! start before anything runs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn gnomon(config: &str, rust_log: Option<&str>) -> (Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gnomon.yaml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_gnomon"));
    command
        .args(["collector", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars() {
        if name.starts_with("GNMIC_") || name.starts_with("GNOMON_") {
            command.env_remove(name);
        }
    }
    if let Some(filter) = rust_log {
        command.env("RUST_LOG", filter);
    }
    (command.spawn().unwrap(), dir)
}

/// Reads stderr lines until `done` says so or 20 s pass; then stops the process.
fn read_until(mut child: Child, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while Instant::now() < deadline && !done(&lines) {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => lines.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

const BASE: &str = "api: 127.0.0.1:0\nlog-file: /tmp/gnmic.log\n";

#[test]
fn top_level_debug_raises_the_log_level_and_warnings_name_the_key() {
    let (child, _dir) = gnomon(&format!("debug: true\n{BASE}"), None);
    let lines = read_until(child, |lines| {
        lines.iter().any(|l| l.contains("DEBUG")) && lines.iter().any(|l| l.contains("log-file"))
    });
    let text = lines.join("\n");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("DEBUG") && l.contains("configuration loaded")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("log-file") && l.contains("not supported")),
        "{text}"
    );
}

#[test]
fn without_debug_or_with_rust_log_the_level_stays() {
    for (config, rust_log) in [
        (BASE.to_string(), None),
        (format!("debug: true\n{BASE}"), Some("info")),
    ] {
        let (child, _dir) = gnomon(&config, rust_log);
        let lines = read_until(child, |lines| {
            lines.iter().any(|l| l.contains("gnomon running"))
        });
        let text = lines.join("\n");
        assert!(!text.contains("DEBUG"), "{rust_log:?}: {text}");
        assert!(text.contains("log-file"), "{text}");
    }
}

#[test]
fn a_bad_api_address_stops_the_start_naming_the_key() {
    let (mut child, _dir) = gnomon("api: notaport\n", None);
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.starts_with("gnomon: api: \"notaport\""), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
