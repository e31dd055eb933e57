//! Real third-party servers for tests: nats-server, etcd and Prometheus, each on
//! random loopback ports with its own temporary directory.

use crate::process::{free_port, wait_for_tcp, ChildProcess};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// A nats-server on 127.0.0.1 with a random client port.
pub struct NatsServer {
    process: ChildProcess,
    port: u16,
    dir: TempDir,
}

impl NatsServer {
    /// Starts nats-server and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let process = Self::spawn(port, &dir)?;
        Ok(Self { process, port, dir })
    }

    fn spawn(port: u16, dir: &TempDir) -> anyhow::Result<ChildProcess> {
        let mut cmd = Command::new("nats-server");
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-n",
            "gnomon-test",
        ]);
        let process = ChildProcess::spawn("nats-server", cmd, dir.path())?;
        wait_for_tcp(&format!("127.0.0.1:{port}"), Duration::from_secs(10))?;
        Ok(process)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>` (gnmic's `address` form).
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL).
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.kill();
        self.process = Self::spawn(self.port, &self.dir)?;
        Ok(())
    }
}

/// A single-member etcd on 127.0.0.1 with random client and peer ports.
pub struct EtcdServer {
    process: ChildProcess,
    client_port: u16,
    peer_port: u16,
    dir: TempDir,
}

impl EtcdServer {
    /// Starts etcd and waits until its client port answers.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let client_port = free_port();
        let peer_port = free_port();
        let process = Self::spawn(client_port, peer_port, &dir)?;
        Ok(Self {
            process,
            client_port,
            peer_port,
            dir,
        })
    }

    fn spawn(client_port: u16, peer_port: u16, dir: &TempDir) -> anyhow::Result<ChildProcess> {
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = Command::new("etcd");
        cmd.arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("default={peer}")])
            .args(["--listen-metrics-urls", ""]);
        let process = ChildProcess::spawn("etcd", cmd, dir.path())?;
        wait_for_tcp(&format!("127.0.0.1:{client_port}"), Duration::from_secs(20))?;
        Ok(process)
    }

    /// `http://127.0.0.1:<client port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `127.0.0.1:<client port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Kills etcd (SIGKILL); its data directory is kept for [`EtcdServer::restart`].
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.kill();
        self.process = Self::spawn(self.client_port, self.peer_port, &self.dir)?;
        Ok(())
    }
}

/// A Prometheus server on 127.0.0.1 with the given configuration file text.
pub struct PrometheusServer {
    _process: ChildProcess,
    port: u16,
    _dir: TempDir,
}

impl PrometheusServer {
    /// Writes `config_yaml` and starts Prometheus with it.
    pub fn start(config_yaml: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config_yaml)?;
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h");
        let process = ChildProcess::spawn("prometheus", cmd, dir.path())?;
        wait_for_tcp(&format!("127.0.0.1:{port}"), Duration::from_secs(20))?;
        Ok(Self {
            _process: process,
            port,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
