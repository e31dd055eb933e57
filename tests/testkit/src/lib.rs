//! Test support: starts real servers (nats-server, etcd, prometheus, the gnomon binary)
//! on random 127.0.0.1 ports in temporary directories, and stops them when dropped.

pub mod cluster;
mod process;
mod proxy;
mod servers;
mod simulator;

pub use process::{
    free_port, gnomon_binary, raise_fd_limit, resident_bytes, signal_pid, spawn_gnomon,
    wait_for_tcp, workspace_binary, ChildProcess,
};
pub use proxy::TcpProxy;
pub use servers::{
    CertFiles, EtcdServer, EtcdServerOptions, NatsOperator, NatsServer, NatsServerOptions,
    PrometheusServer, ServerTls, TestPki,
};
pub use simulator::{
    device_subscriptions, port_of, spawn_simulator, start_simulator, Simulator, SimulatorSpec,
};

use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout`
/// with an error naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Installs ring as the process's rustls provider (gnomon compiles in no other, and reqwest is
/// built without one of its own), so HTTP clients in tests can be built.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client for tests (plain or https with the system roots).
pub fn http_client() -> reqwest::Client {
    http_client_builder()
        .build()
        .unwrap_or_else(|e| panic!("cannot build a test HTTP client: {e}"))
}

/// A builder for test HTTP clients that need more settings; the crypto provider is installed.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

/// `reqwest::get` with the crypto provider installed.
pub async fn http_get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    http_client().get(url).send().await
}

/// Runs `promtool check metrics` on an exposition; `Err` carries promtool's complaint.
pub fn promtool_check(exposition: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    promtool
        .stdin
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("promtool has no stdin"))?
        .write_all(exposition.as_bytes())?;
    let checked = promtool.wait_with_output()?;
    if checked.status.success() {
        Ok(())
    } else {
        anyhow::bail!(
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        )
    }
}
