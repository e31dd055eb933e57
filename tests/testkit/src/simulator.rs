//! `gnomon simulator` as a test peer: one process serving many devices on 127.0.0.1 ports
//! it picks itself, and a `/stats` endpoint that is the only way to learn those ports (and,
//! later, which device has how many Subscribe streams open — what tests judge placement by).

use crate::process::{free_port, gnomon_binary, ChildProcess};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What one simulator process serves.
#[derive(Clone, Debug)]
pub struct SimulatorSpec {
    /// Number of devices (each its own gNMI port).
    pub count: usize,
    /// Interfaces per device.
    pub interfaces: usize,
    /// How often counters change (`--update-rate`, e.g. "1s").
    pub update_rate: String,
    /// More arguments (credentials, `--flap-period`, TLS).
    pub extra_args: Vec<String>,
}

impl SimulatorSpec {
    /// `count` devices with `interfaces` interfaces each, counters changing every second.
    pub fn new(count: usize, interfaces: usize) -> Self {
        Self {
            count,
            interfaces,
            update_rate: "1s".to_string(),
            extra_args: Vec::new(),
        }
    }

    pub fn update_rate(mut self, rate: &str) -> Self {
        self.update_rate = rate.to_string();
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// A running simulator and its devices' addresses, in port order.
pub struct Simulator {
    pub process: ChildProcess,
    pub stats_url: String,
    pub devices: Vec<String>,
}

/// Spawns a simulator named `name` (its log is `<dir>/<name>.log`) without waiting for it;
/// returns the process and its `/stats` URL.
pub fn spawn_simulator(
    dir: &Path,
    name: &str,
    spec: &SimulatorSpec,
) -> anyhow::Result<(ChildProcess, String)> {
    let stats_port = free_port();
    let mut cmd = Command::new(gnomon_binary()?);
    cmd.args(["simulator", "--listen", "127.0.0.1:0"])
        .args(["--count", &spec.count.to_string()])
        .args(["--interfaces", &spec.interfaces.to_string()])
        .args(["--update-rate", &spec.update_rate])
        .args(["--stats-listen", &format!("127.0.0.1:{stats_port}")])
        .args(&spec.extra_args);
    let process = ChildProcess::spawn(name, cmd, dir)?;
    Ok((process, format!("http://127.0.0.1:{stats_port}/stats")))
}

/// Starts a simulator and waits (up to `timeout`) until `/stats` lists all its devices.
pub async fn start_simulator(
    dir: &Path,
    name: &str,
    spec: &SimulatorSpec,
    timeout: Duration,
) -> anyhow::Result<Simulator> {
    let (process, stats_url) = spawn_simulator(dir, name, spec)?;
    let http = crate::http_client_builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let devices = crate::eventually("simulated devices", timeout, || {
        let (http, url) = (http.clone(), stats_url.clone());
        async move {
            let stats = device_subscriptions(&http, &url).await.ok()?;
            let mut devices: Vec<String> = stats.into_keys().collect();
            devices.sort_by_key(|address| port_of(address));
            (devices.len() == spec.count).then_some(devices)
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}: {}", process.log()))?;
    Ok(Simulator {
        process,
        stats_url,
        devices,
    })
}

impl Simulator {
    /// Active Subscribe streams per device address.
    pub async fn subscriptions(&self) -> anyhow::Result<BTreeMap<String, usize>> {
        let http = crate::http_client_builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        device_subscriptions(&http, &self.stats_url).await
    }

    /// The port of each device, in port order.
    pub fn ports(&self) -> Vec<u16> {
        self.devices.iter().map(|a| port_of(a)).collect()
    }
}

/// The port of a `host:port` device address (0 if it has none).
pub fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// Active Subscribe streams per device address, from a simulator's `/stats` at `url`.
pub async fn device_subscriptions(
    http: &reqwest::Client,
    url: &str,
) -> anyhow::Result<BTreeMap<String, usize>> {
    #[derive(serde::Deserialize)]
    struct Device {
        subscriptions: usize,
    }
    #[derive(serde::Deserialize)]
    struct Report {
        targets: BTreeMap<String, Device>,
    }
    let report: Report = http.get(url).send().await?.json().await?;
    Ok(report
        .targets
        .into_iter()
        .map(|(address, device)| (address, device.subscriptions))
        .collect())
}
