//! Test support: starts real servers (nats-server, etcd, prometheus, the gnomon binary)
//! on random 127.0.0.1 ports in temporary directories, and stops them when dropped.

pub mod cluster;
mod process;
mod servers;

pub use process::{free_port, gnomon_binary, wait_for_tcp, workspace_binary, ChildProcess};
pub use servers::{
    CertFiles, EtcdServer, EtcdServerOptions, NatsOperator, NatsServer, NatsServerOptions,
    PrometheusServer, ServerTls, TestPki,
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
