//! Shared by `api_security.rs` and `secrets.rs`: a simulator process, `gnomon` processes
//! from config text, and HTTPS clients that trust a test CA (optionally with a client
//! certificate).

#![allow(dead_code)]

use gnomon_testkit::{gnomon_binary, wait_for_tcp, CertFiles, ChildProcess};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use gnomon_testkit::Simulator;

/// Starts `count` simulated devices; with `credentials` every RPC needs that username and
/// password.
pub async fn start_simulator(
    dir: &Path,
    count: usize,
    credentials: Option<(&str, &str)>,
) -> anyhow::Result<Simulator> {
    let mut spec = gnomon_testkit::SimulatorSpec::new(count, 2);
    if let Some((user, password)) = credentials {
        spec = spec.args(["--username", user, "--password", password]);
    }
    gnomon_testkit::start_simulator(dir, "simulator", &spec, Duration::from_secs(20)).await
}

/// Starts `gnomon <command> --config <dir>/<name>.yaml` with debug logging (so span fields
/// and debug messages are in its log, `<dir>/<name>.log`) and waits for its API port.
pub fn spawn_gnomon(
    dir: &Path,
    name: &str,
    command: &str,
    config_text: &str,
    api_port: u16,
    env: &[(&str, &str)],
) -> anyhow::Result<ChildProcess> {
    let config: PathBuf = dir.join(format!("{name}.yaml"));
    std::fs::write(&config, config_text)?;
    let mut cmd = Command::new(gnomon_binary()?);
    cmd.arg(command).arg("--config").arg(&config);
    cmd.env("RUST_LOG", "debug");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let process = ChildProcess::spawn(name, cmd, dir)?;
    if let Err(error) = wait_for_tcp(&format!("127.0.0.1:{api_port}"), Duration::from_secs(20)) {
        anyhow::bail!("{name}: {error}\n{}", process.log());
    }
    Ok(process)
}

/// An HTTPS client trusting `ca_file`, presenting `identity` when given.
pub fn https_client(ca_file: &Path, identity: Option<&CertFiles>) -> reqwest::Client {
    let options = gnomon_common::tls::ClientTlsOptions {
        ca_file: Some(ca_file.to_path_buf()),
        cert_file: identity.map(|i| i.cert_file.clone()),
        key_file: identity.map(|i| i.key_file.clone()),
        skip_verify: false,
    };
    let tls = gnomon_common::tls::client_config(&options, &[b"http/1.1"]).unwrap();
    gnomon_testkit::http_client_builder()
        .timeout(Duration::from_secs(5))
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap()
}

/// `(status, body)` of a request; `None` on a transport error.
pub async fn send(request: reqwest::RequestBuilder) -> Option<(u16, String)> {
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// The first `errors` entry of gnmic's error body.
pub fn first_error(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["errors"][0].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("<no errors in {body:?}>"))
}
