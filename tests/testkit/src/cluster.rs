//! A multi-process gnomon cluster for tests: real etcd and nats-server, a `gnomon simulator`
//! process whose `/stats` is the independent judge of who subscribes to which device, and
//! `gnomon all` members started from generated gnmic-style configs.
//!
//! With the Kubernetes API double (`k8s`), the harness also plays Kubernetes' part in
//! membership: like the kubelet's readiness probe and the EndpointSlice controller, it
//! probes every member's `/healthz` and keeps one EndpointSlice per member (ready or not)
//! for the headless Service `<cluster>-gnmic-api`.

use crate::simulator::{port_of, spawn_simulator, SimulatorSpec};
use crate::{
    free_port, gnomon_binary, process::FLEET_PORTS_FROM, wait_for_tcp, workspace_binary,
    ChildProcess, EtcdServer, NatsServer,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// From this many devices, simulators bind ports searched upward from [`FLEET_PORTS_FROM`]
/// (below the ephemeral range) instead of kernel-picked ones: thousands of listeners in the
/// ephemeral range make every bind and every member's connect search long for a free port
/// (seconds of CPU at 10 000 devices).
const LARGE_FLEET: usize = 1000;

/// The cluster name the harness uses.
pub const CLUSTER: &str = "it";

/// One gnomon member process.
pub struct Member {
    pub name: String,
    pub api_port: u16,
    pub process: ChildProcess,
}

impl Member {
    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }
}

/// The coordination store the cluster runs on.
pub enum Store {
    Etcd(EtcdServer),
    /// The Consul test double as its own process (session TTLs down to 1 s allowed).
    ConsulDouble {
        process: ChildProcess,
        address: String,
    },
    /// The Kubernetes API double as its own process, with a kubeconfig for it.
    K8sDouble {
        process: ChildProcess,
        address: String,
        kubeconfig: PathBuf,
    },
}

impl Store {
    /// Which store a test asks for.
    pub fn start(kind: &str, dir: &std::path::Path) -> anyhow::Result<Self> {
        match kind {
            "etcd" => Ok(Store::Etcd(EtcdServer::start()?)),
            "consul" => {
                let port = free_port();
                let address = format!("127.0.0.1:{port}");
                let mut cmd = Command::new(workspace_binary("consul-double")?);
                cmd.args(["--listen", &address, "--session-ttl-min", "1s"]);
                let process = ChildProcess::spawn("consul-double", cmd, dir)?;
                wait_for_tcp(&address, Duration::from_secs(10))?;
                Ok(Store::ConsulDouble { process, address })
            }
            "k8s" => {
                let port = free_port();
                let address = format!("127.0.0.1:{port}");
                let kubeconfig = dir.join("kubeconfig");
                let mut cmd = Command::new(workspace_binary("k8s-double")?);
                cmd.args(["--listen", &address, "--admin-token", K8S_TOKEN])
                    .arg("--kubeconfig")
                    .arg(&kubeconfig);
                let process = ChildProcess::spawn("k8s-double", cmd, dir)?;
                wait_for_tcp(&address, Duration::from_secs(10))?;
                Ok(Store::K8sDouble {
                    process,
                    address,
                    kubeconfig,
                })
            }
            other => anyhow::bail!("unknown store {other}"),
        }
    }

    fn locker_type(&self) -> &'static str {
        match self {
            Store::Etcd(_) => "etcd",
            Store::ConsulDouble { .. } => "consul",
            Store::K8sDouble { .. } => "k8s",
        }
    }

    fn address(&self) -> String {
        match self {
            Store::Etcd(etcd) => etcd.address(),
            Store::ConsulDouble { address, .. } | Store::K8sDouble { address, .. } => {
                address.clone()
            }
        }
    }

    /// The `locker:` block of a member's config.
    fn locker_block(&self, ttl: Duration, delay: Duration) -> String {
        match self {
            Store::K8sDouble { kubeconfig, .. } => format!(
                "  locker:\n    type: k8s\n    kubeconfig: {}\n    namespace: default\n    lease-duration: {}s\n    delay: {}ms\n    retry-timer: 500ms\n",
                kubeconfig.display(),
                ttl.as_secs(),
                delay.as_millis()
            ),
            _ => format!(
                "  locker:\n    type: {}\n    address: {}\n    session-ttl: {}s\n    delay: {}ms\n    retry-timer: 500ms\n",
                self.locker_type(),
                self.address(),
                ttl.as_secs(),
                delay.as_millis()
            ),
        }
    }
}

/// The admin token of the Kubernetes API double the harness starts.
pub const K8S_TOKEN: &str = "gnomon-cluster-test-token";

/// Members the EndpointSlice controller follows: (name, API port).
type Pods = Arc<Mutex<Vec<(String, u16)>>>;

/// Kubernetes' part in membership, for the API double: every 200 ms, each member's
/// `/healthz` decides whether its endpoint is ready (the kubelet's readiness probe), and
/// its EndpointSlice in the double says so (the EndpointSlice controller).
async fn endpoint_slice_controller(
    api: String,
    pods: Pods,
    http: reqwest::Client,
    stop: tokio_util::sync::CancellationToken,
) {
    let service = format!("{CLUSTER}-gnmic-api");
    let slices = format!("{api}/apis/discovery.k8s.io/v1/namespaces/default/endpointslices");
    let mut written: BTreeMap<String, bool> = BTreeMap::new();
    while !stop.is_cancelled() {
        let current: Vec<(String, u16)> = pods.lock().map(|p| p.clone()).unwrap_or_default();
        for (pod, port) in current {
            let ready = http
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .timeout(Duration::from_millis(300))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if written.get(&pod) == Some(&ready) {
                continue;
            }
            let name = format!("{service}-{pod}");
            let mut slice = serde_json::json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4",
                "endpoints": [{
                    "addresses": ["127.0.0.1"],
                    "conditions": {"ready": ready, "serving": ready, "terminating": false},
                    "targetRef": {"kind": "Pod", "name": pod, "namespace": "default"},
                }],
                "ports": [{"name": "api", "port": port, "protocol": "TCP"}],
            });
            let existing = http
                .get(format!("{slices}/{name}"))
                .bearer_auth(K8S_TOKEN)
                .send()
                .await;
            let response = match existing {
                Ok(r) if r.status().is_success() => {
                    let current: serde_json::Value = r.json().await.unwrap_or_default();
                    slice["metadata"]["resourceVersion"] =
                        current["metadata"]["resourceVersion"].clone();
                    http.put(format!("{slices}/{name}"))
                        .bearer_auth(K8S_TOKEN)
                        .json(&slice)
                        .send()
                        .await
                }
                _ => {
                    http.post(&slices)
                        .bearer_auth(K8S_TOKEN)
                        .json(&slice)
                        .send()
                        .await
                }
            };
            if response.is_ok_and(|r| r.status().is_success()) {
                written.insert(pod, ready);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub nats: NatsServer,
    /// The (first) simulator process and its `/stats`.
    pub simulator: ChildProcess,
    pub stats_url: String,
    /// Further simulator processes when the fleet is larger than one process may serve
    /// within the open-file limit (see [`simulator_shards`]), and every `/stats` URL.
    more_simulators: Vec<ChildProcess>,
    stats_urls: Vec<String>,
    /// Device addresses in port order; target `t<i>` is device i.
    pub devices: Vec<String>,
    pub members: Vec<Member>,
    pub http: reqwest::Client,
    /// Session TTL and lock-delay of the cluster's locker.
    pub ttl: Duration,
    pub delay: Duration,
    /// k8s: the members whose readiness the EndpointSlice controller follows.
    pods: Pods,
    /// Stops the EndpointSlice controller.
    controller: tokio_util::sync::CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.controller.cancel();
    }
}

/// Per-device subscription state from the simulator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct DeviceStats {
    pub subscriptions: usize,
    pub peers: Vec<String>,
}

impl Harness {
    /// Starts the store (`etcd`, `consul` or `k8s`), nats-server and a simulator with `devices`
    /// devices (1 s counter steps).
    pub async fn start(store_kind: &str, devices: usize) -> anyhow::Result<Self> {
        Self::start_with(store_kind, devices, 2).await
    }

    /// [`Harness::start`] with `interfaces` interfaces per device (8 counters each under
    /// `/interfaces/interface/state/counters`).
    pub async fn start_with(
        store_kind: &str,
        devices: usize,
        interfaces: u32,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let store = Store::start(store_kind, dir.path())?;
        let nats = NatsServer::start()?;
        let mut simulators = Vec::new();
        let mut stats_urls = Vec::new();
        for (shard, count) in simulator_shards(devices).into_iter().enumerate() {
            let name = match shard {
                0 => "simulator".to_string(),
                n => format!("simulator-{n}"),
            };
            let mut spec = SimulatorSpec::new(count, interfaces as usize);
            if devices >= LARGE_FLEET {
                spec = spec.args(["--search-from", &FLEET_PORTS_FROM.to_string()]);
            }
            let (process, stats_url) = spawn_simulator(dir.path(), &name, &spec)?;
            simulators.push(process);
            stats_urls.push(stats_url);
        }
        let simulator = simulators.remove(0);
        let stats_url = stats_urls[0].clone();
        let http = crate::http_client_builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let mut harness = Self {
            dir,
            store,
            nats,
            simulator,
            stats_url,
            more_simulators: simulators,
            stats_urls,
            devices: Vec::new(),
            members: Vec::new(),
            http,
            ttl: Duration::from_secs(2),
            // etcd: the holder fences itself at last renewal + TTL, before etcd can expire the
            // lease, so no lock-delay is needed (its emulation rounds up to etcd's 2 s minimum
            // lease); the same holds for k8s Leases (one clock here). Consul enforces
            // lock-delay on the server; keep a short one there.
            delay: if store_kind == "consul" {
                Duration::from_secs(1)
            } else {
                Duration::ZERO
            },
            pods: Pods::default(),
            controller: tokio_util::sync::CancellationToken::new(),
        };
        if let Store::K8sDouble { address, .. } = &harness.store {
            tokio::spawn(endpoint_slice_controller(
                format!("http://{address}"),
                harness.pods.clone(),
                harness.http.clone(),
                harness.controller.clone(),
            ));
        }
        // A fleet of 10 000 devices takes a while to bind on a loaded machine.
        let deadline =
            Instant::now() + Duration::from_secs(20) + devices as u32 * Duration::from_millis(5);
        loop {
            if let Ok(stats) = harness.stats().await {
                if stats.len() == devices {
                    let mut addrs: Vec<String> = stats.keys().cloned().collect();
                    addrs.sort_by_key(|a| port_of(a));
                    harness.devices = addrs;
                    break;
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "simulator did not come up: {}{}",
                harness.simulator.log(),
                harness
                    .more_simulators
                    .iter()
                    .map(ChildProcess::log)
                    .collect::<String>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(harness)
    }

    /// Device stats by address.
    pub async fn stats(&self) -> anyhow::Result<BTreeMap<String, DeviceStats>> {
        #[derive(serde::Deserialize)]
        struct Report {
            targets: BTreeMap<String, DeviceStats>,
        }
        let mut targets = BTreeMap::new();
        for url in &self.stats_urls {
            let report: Report = self.http.get(url).send().await?.json().await?;
            targets.extend(report.targets);
        }
        Ok(targets)
    }

    /// Stats keyed by target name (`t<i>` for device i).
    pub async fn target_stats(&self) -> anyhow::Result<BTreeMap<String, DeviceStats>> {
        let stats = self.stats().await?;
        Ok(self
            .devices
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                (
                    format!("t{i}"),
                    stats.get(addr).cloned().unwrap_or(DeviceStats {
                        subscriptions: 0,
                        peers: vec![],
                    }),
                )
            })
            .collect())
    }

    /// The gnmic-style config of member `name` with `targets` (name → tags).
    pub fn config(
        &self,
        name: &str,
        member_tags: &[&str],
        targets: &BTreeMap<String, Vec<String>>,
    ) -> String {
        let mut text = String::new();
        text.push_str("insecure: true\nencoding: proto\ntargets:\n");
        for (target, tags) in targets {
            let index: usize = target.trim_start_matches('t').parse().unwrap_or(0);
            text.push_str(&format!(
                "  {target}:\n    address: {}\n",
                self.devices[index]
            ));
            if !tags.is_empty() {
                text.push_str(&format!("    tags: {tags:?}\n"));
            }
        }
        text.push_str(
            "subscriptions:\n  counters:\n    paths: [/interfaces/interface/state/counters]\n    stream-mode: sample\n    sample-interval: 1s\n",
        );
        text.push_str(&format!(
            "clustering:\n  cluster-name: {CLUSTER}\n  instance-name: {name}\n  targets-watch-timer: 2s\n  leader-wait-timer: 300ms\n  target-assignment-timeout: 5s\n  services-watch-timer: 5s\n  tags: {member_tags:?}\n"
        ));
        text.push_str(&self.store.locker_block(self.ttl, self.delay));
        text.push_str(&format!(
            "outputs:\n  nats-out:\n    type: nats\n    address: {}\n    subject-prefix: telemetry\n    format: proto\n",
            self.nats.address()
        ));
        text
    }

    /// Starts member `name` (`gnomon all`) with its own config file.
    pub fn start_member(
        &mut self,
        name: &str,
        member_tags: &[&str],
        targets: &BTreeMap<String, Vec<String>>,
    ) -> anyhow::Result<()> {
        let config: PathBuf = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&config, self.config(name, member_tags, targets))?;
        self.spawn_member(name)
    }

    /// Starts member `name` (`gnomon all`) with `config` as its config file.
    pub fn start_member_with_config(&mut self, name: &str, config: &str) -> anyhow::Result<()> {
        std::fs::write(self.dir.path().join(format!("{name}.yaml")), config)?;
        self.spawn_member(name)
    }

    /// Starts member `name` again from the config file it was first started with (after a kill).
    pub fn restart_member(&mut self, name: &str) -> anyhow::Result<()> {
        self.members.retain(|m| m.name != name);
        self.spawn_member(name)
    }

    fn spawn_member(&mut self, name: &str) -> anyhow::Result<()> {
        let config: PathBuf = self.dir.path().join(format!("{name}.yaml"));
        let api_port = free_port();
        let mut cmd = Command::new(gnomon_binary()?);
        cmd.args(["all", "--config"])
            .arg(&config)
            .env("GNMIC_API", format!("127.0.0.1:{api_port}"));
        let process = ChildProcess::spawn(name, cmd, self.dir.path())?;
        wait_for_tcp(&format!("127.0.0.1:{api_port}"), Duration::from_secs(20))?;
        if let Ok(mut pods) = self.pods.lock() {
            pods.retain(|(pod, _)| pod != name);
            pods.push((name.to_string(), api_port));
        }
        self.members.push(Member {
            name: name.to_string(),
            api_port,
            process,
        });
        Ok(())
    }

    /// Runs `gnomon drain` for member `name` with its config file, as a Kubernetes preStop
    /// hook would, and returns its exit status and output (stdout, then stderr).
    pub async fn drain_with_cli(
        &self,
        name: &str,
        timeout: Duration,
    ) -> anyhow::Result<(bool, String)> {
        let config: PathBuf = self.dir.path().join(format!("{name}.yaml"));
        let mut cmd = tokio::process::Command::new(gnomon_binary()?);
        cmd.args(["drain", "--config"])
            .arg(&config)
            .arg("--timeout")
            .arg(format!("{}ms", timeout.as_millis()))
            .kill_on_drop(true);
        let output = tokio::time::timeout(timeout + Duration::from_secs(30), cmd.output())
            .await
            .map_err(|_| anyhow::anyhow!("gnomon drain {name} did not end"))??;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok((output.status.success(), text))
    }

    pub fn member(&mut self, name: &str) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.name == name)
            .expect("unknown member")
    }

    /// `GET /api/v1/cluster` from any live member.
    pub async fn cluster(&self) -> anyhow::Result<serde_json::Value> {
        for member in &self.members {
            if let Ok(response) = self
                .http
                .get(format!("{}/api/v1/cluster", member.api()))
                .send()
                .await
            {
                if response.status().is_success() {
                    return Ok(response.json().await?);
                }
            }
        }
        anyhow::bail!("no member answered /api/v1/cluster")
    }

    /// Target → owner, from the cluster API.
    pub async fn owners(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let cluster = self.cluster().await?;
        let mut owners = BTreeMap::new();
        for member in cluster["members"].as_array().cloned().unwrap_or_default() {
            let name = member["name"].as_str().unwrap_or_default().to_string();
            for target in member["locked-targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                owners.insert(
                    target.as_str().unwrap_or_default().to_string(),
                    name.clone(),
                );
            }
        }
        Ok(owners)
    }

    /// Stops the coordination store abruptly (SIGKILL), keeping its data for a restart.
    pub fn store_stop(&mut self) {
        match &mut self.store {
            Store::Etcd(etcd) => etcd.stop(),
            Store::ConsulDouble { process, .. } | Store::K8sDouble { process, .. } => {
                process.kill()
            }
        }
    }

    /// Starts etcd again on its address and data. The Consul double keeps no data across
    /// processes, so it cannot be restarted meaningfully.
    pub fn store_restart(&mut self) -> anyhow::Result<()> {
        match &mut self.store {
            Store::Etcd(etcd) => etcd.restart(),
            Store::ConsulDouble { .. } => {
                anyhow::bail!("the Consul double cannot be restarted with its state")
            }
            Store::K8sDouble { .. } => {
                anyhow::bail!("the Kubernetes API double cannot be restarted with its state")
            }
        }
    }

    /// Freezes the store process (SIGSTOP): it stays connected but answers nothing, like a
    /// store behind a partition.
    pub fn store_pause(&mut self) {
        self.store_process().pause();
    }

    /// Lets a paused store run again (SIGCONT).
    pub fn store_resume(&mut self) {
        self.store_process().signal(libc::SIGCONT);
    }

    fn store_process(&mut self) -> &mut ChildProcess {
        match &mut self.store {
            Store::Etcd(etcd) => etcd.process(),
            Store::ConsulDouble { process, .. } | Store::K8sDouble { process, .. } => process,
        }
    }

    /// A `/stats` reader that can run in its own task while the harness is used elsewhere.
    pub fn duplicate_probe(&self) -> DuplicateProbe {
        DuplicateProbe {
            stats_urls: self.stats_urls.clone(),
            devices: self.devices.clone(),
            http: self.http.clone(),
        }
    }

    /// Polls `check` every 100 ms until it holds; panics with every member's log after
    /// `timeout`. Prints and returns how long it took.
    pub async fn wait_until<F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while !check().await {
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = start.elapsed();
        println!("{what}: {took:?}");
        took
    }

    /// Whether every one of `targets` has exactly one Subscribe stream right now.
    pub async fn collected_once(&self, targets: &[String]) -> bool {
        self.target_stats()
            .await
            .is_ok_and(|stats| exactly_one_each(&stats, targets))
    }

    /// Logs of every member, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("==== {} ====\n{}\n", m.name, m.process.log()))
            .collect()
    }
}

/// How many devices each simulator process serves for a fleet of `devices`: every device
/// holds a listener and an accepted connection, so one process serves at most half its
/// open-file limit (less a margin). Where the hard limit cannot be raised (a container
/// without CAP_SYS_RESOURCE: 20 000 here), 10 000 devices take two processes.
pub fn simulator_shards(devices: usize) -> Vec<usize> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let per_process = (limit.saturating_sub(1024) / 2).clamp(1, 10_000) as usize;
    let processes = devices.div_ceil(per_process).max(1);
    (0..processes)
        .map(|i| devices / processes + usize::from(i < devices % processes))
        .collect()
}

/// Whether every one of `targets` has exactly one Subscribe stream.
pub fn exactly_one_each(stats: &BTreeMap<String, DeviceStats>, targets: &[String]) -> bool {
    targets
        .iter()
        .all(|t| stats.get(t).is_some_and(|s| s.subscriptions == 1))
}

/// Watches the simulator's `/stats` for devices with two or more Subscribe streams.
pub struct DuplicateProbe {
    stats_urls: Vec<String>,
    devices: Vec<String>,
    http: reqwest::Client,
}

impl DuplicateProbe {
    /// Every simulator's devices (address → stats), or `None` when one did not answer.
    async fn read_all(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        let mut targets = serde_json::Map::new();
        for url in &self.stats_urls {
            let report: serde_json::Value =
                self.http.get(url).send().await.ok()?.json().await.ok()?;
            targets.extend(report["targets"].as_object()?.clone());
        }
        Some(targets)
    }

    /// Polls every 100 ms until `stop`; returns the longest time any device had two or more
    /// subscribers (zero when it never happened).
    pub async fn worst_duplicate(&self, stop: tokio_util::sync::CancellationToken) -> Duration {
        let mut since: BTreeMap<String, Instant> = BTreeMap::new();
        let mut worst = Duration::ZERO;
        while !stop.is_cancelled() {
            if let Some(targets) = self.read_all().await {
                for device in &self.devices {
                    let subs = targets
                        .get(device)
                        .and_then(|d| d["subscriptions"].as_u64())
                        .unwrap_or(0);
                    if subs >= 2 {
                        let start = *since.entry(device.clone()).or_insert_with(Instant::now);
                        if start.elapsed() > worst {
                            println!(
                                "double subscription on {device} for {:?}: {}",
                                start.elapsed(),
                                targets[device]
                            );
                        }
                        worst = worst.max(start.elapsed());
                    } else {
                        since.remove(device);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        worst
    }
}
