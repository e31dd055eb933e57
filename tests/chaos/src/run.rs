//! The chaos run itself: start the cluster, wait for a steady state, disturb it on a fixed
//! schedule for a bounded time, let it settle, then judge it from the observer's records.

use crate::observer::{
    process_cpu, scan_panics, scrape_counter, tcp_local_addresses, BusRecord, BusRecorder,
    StatsProbe,
};
use crate::report::{ChaosReport, Gap, KillRecord};
use gnomon_testkit::cluster::{Harness, Store, CLUSTER};
use gnomon_testkit::{free_port, gnomon_binary, wait_for_tcp, ChildProcess};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The subscription every member runs on every target (the harness's member config).
const DATA_SUBSCRIPTION: &str = "counters";
/// The exporter counter of messages dropped for a stale fencing token.
const STALE_DROPPED: &str = "gnomon_exporter_stale_dropped_total";
/// How long a woken member's old streams still count apart as frozen: it must notice its
/// lost locks and close them within this time.
const THAW_GRACE: Duration = Duration::from_secs(1);
/// The exporter counter of messages received.
const EXPORTER_MESSAGES: &str = "gnomon_exporter_messages_total";

/// What to run and how hard to shake it.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// Length of the disturbed phase (setup and the final settle come on top).
    pub duration: Duration,
    /// Simulated devices; each is one configured target.
    pub devices: usize,
    /// `gnomon all` members.
    pub members: usize,
    /// `gnomon exporter`s sharing the Prometheus use-lock.
    pub exporters: usize,
    /// A random member is SIGKILLed this often.
    pub kill_every: Duration,
    /// A killed member is started again this long after its kill.
    pub restart_after: Duration,
    /// The locker's session TTL (lock-delay is 0 on etcd).
    pub session_ttl: Duration,
    /// Seed of the victim choice, so a run can be repeated.
    pub seed: u64,
    /// Restart nats-server once, a third into the run.
    pub restart_nats: bool,
    /// Restart etcd once, two thirds into the run.
    pub restart_etcd: bool,
    /// Freeze a random member once, halfway through (SIGSTOP for session-ttl + 3 s, then
    /// SIGCONT): its locks expire while it still holds its streams, so on waking it may
    /// publish data under its old fencing token, which exporters must drop.
    pub pause_member: bool,
    /// How long the initial placement may take.
    pub placement_timeout: Duration,
    /// How long the cluster may take after the disturbed phase to collect every target again.
    pub settle_timeout: Duration,
    /// How often the simulator's `/stats` is polled.
    pub stats_interval: Duration,
    /// Copy every process log and config here at the end.
    pub keep_dir: Option<PathBuf>,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(120),
            devices: 300,
            members: 3,
            exporters: 2,
            kill_every: Duration::from_secs(20),
            restart_after: Duration::from_secs(5),
            session_ttl: Duration::from_secs(2),
            seed: 1,
            restart_nats: true,
            restart_etcd: true,
            pause_member: false,
            placement_timeout: Duration::from_secs(120),
            settle_timeout: Duration::from_secs(60),
            stats_interval: Duration::from_millis(100),
            keep_dir: None,
        }
    }
}

/// One disturbance, at an offset from the start of the disturbed phase.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    Kill,
    Restart(String),
    RestartNats,
    RestartEtcd,
    Pause,
    Resume(String),
}

/// The fixed part of the schedule: kills every `kill_every` (the last one early enough for
/// its restart to fall inside the phase), nats-server and etcd restarts halfway between two
/// kills, a third and two thirds into the phase.
fn schedule(config: &ChaosConfig) -> Vec<(Duration, Action)> {
    let mut plan = Vec::new();
    let every = config.kill_every.max(Duration::from_secs(1));
    let mut at = every;
    while at + config.restart_after < config.duration {
        plan.push((at, Action::Kill));
        at += every;
    }
    let between_kills = |fraction: f64| {
        let slot = (config.duration.as_secs_f64() * fraction / every.as_secs_f64()).floor();
        every.mul_f64(slot + 0.5)
    };
    if config.restart_nats {
        plan.push((between_kills(1.0 / 3.0), Action::RestartNats));
    }
    if config.restart_etcd {
        plan.push((between_kills(2.0 / 3.0), Action::RestartEtcd));
    }
    let pause_at = between_kills(0.5);
    if config.pause_member && plan.iter().all(|(at, _)| *at != pause_at) {
        plan.push((pause_at, Action::Pause));
    }
    plan.retain(|(at, _)| *at < config.duration);
    plan.sort_by_key(|(at, _)| *at);
    plan
}

/// One `gnomon exporter` process.
struct Exporter {
    name: String,
    api_port: u16,
    process: ChildProcess,
}

impl Exporter {
    fn start(h: &Harness, name: &str) -> anyhow::Result<Self> {
        let dir = h.dir.path();
        let listen = format!("127.0.0.1:{}", free_port());
        let api_port = free_port();
        let etcd = match &h.store {
            Store::Etcd(etcd) => etcd.address(),
            Store::ConsulDouble { .. } | Store::K8sDouble { .. } => {
                anyhow::bail!("the chaos run uses etcd")
            }
        };
        let config = format!(
            "clustering:\n  cluster-name: {CLUSTER}\n  instance-name: {name}\n  locker: {{type: etcd, address: \"{etcd}\", session-ttl: {}s, delay: 0s}}\noutputs:\n  prom:\n    type: prometheus\n    listen: \"{listen}\"\n    service-registration: {{name: gnomon-prometheus, use-lock: true}}\ninputs:\n  nats-in: {{type: nats, address: \"{}\", subject: \"telemetry.>\", format: proto, outputs: [prom]}}\n",
            h.ttl.as_secs(),
            h.nats.address()
        );
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, config)?;
        let mut cmd = Command::new(gnomon_binary()?);
        cmd.args(["exporter", "--config"])
            .arg(&path)
            .env("GNMIC_API", format!("127.0.0.1:{api_port}"));
        let process = ChildProcess::spawn(name, cmd, dir)?;
        wait_for_tcp(&format!("127.0.0.1:{api_port}"), Duration::from_secs(30))?;
        wait_for_tcp(&listen, Duration::from_secs(30))?;
        Ok(Self {
            name: name.to_string(),
            api_port,
            process,
        })
    }

    fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.api_port)
    }
}

/// CPU used by the cluster's processes during the disturbed phase.
#[derive(Default)]
struct CpuMeter {
    /// CPU a live process had already used when the phase started (0 for later starts).
    baseline: HashMap<u32, Duration>,
    spent: Duration,
}

impl CpuMeter {
    fn begin(&mut self, pid: u32, now: bool) {
        let base = if now {
            process_cpu(pid).unwrap_or_default()
        } else {
            Duration::ZERO
        };
        self.baseline.insert(pid, base);
    }

    fn end(&mut self, pid: u32) {
        if let (Some(base), Some(now)) = (self.baseline.remove(&pid), process_cpu(pid)) {
            self.spent += now.saturating_sub(base);
        }
    }
}

/// Runs the whole chaos run and returns what the observer measured. Errors only when the
/// cluster cannot be started or never reaches its first steady state; everything that goes
/// wrong later is part of the report. Needs a multi-thread tokio runtime (process starts
/// block a worker while they wait for the new process's port).
pub async fn run(config: &ChaosConfig) -> anyhow::Result<ChaosReport> {
    anyhow::ensure!(
        tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread,
        "the chaos run needs a multi-thread tokio runtime"
    );
    anyhow::ensure!(
        config.devices > 0,
        "the chaos run needs at least one device"
    );
    anyhow::ensure!(
        config.members >= 2,
        "the chaos run needs at least two members"
    );
    let mut h = Harness::start("etcd", config.devices).await?;
    h.ttl = config.session_ttl;
    let targets: BTreeMap<String, Vec<String>> = (0..config.devices)
        .map(|i| (format!("t{i}"), Vec::new()))
        .collect();
    let names: Vec<String> = targets.keys().cloned().collect();
    let member_names: Vec<String> = (1..=config.members).map(|i| format!("g{i}")).collect();
    let log_dir = h.dir.path().to_path_buf();
    progress(None, &format!("logs in {}", log_dir.display()));

    let recorder = BusRecorder::start(&h.nats.url(), "telemetry.>", DATA_SUBSCRIPTION).await?;
    let probe = StatsProbe::start(h.stats_url.clone(), config.stats_interval)?;
    for name in &member_names {
        tokio::task::block_in_place(|| h.start_member(name, &[], &targets))?;
        probe.name_process(name, h.member(name).process.pid());
    }
    let mut exporters = Vec::new();
    for i in 1..=config.exporters {
        let exporter = tokio::task::block_in_place(|| Exporter::start(&h, &format!("e{i}")))?;
        exporters.push(exporter);
    }

    let setup = Instant::now();
    if let Err(e) = wait_for_collection(&h, &recorder, &names, config.placement_timeout).await {
        anyhow::bail!("{e:#}\n{}", log_tails(&h, 40));
    }
    progress(
        None,
        &format!(
            "{} targets collected once each after {:.1}s; disturbing for {:?}",
            names.len(),
            setup.elapsed().as_secs_f64(),
            config.duration
        ),
    );

    let mut cpu = CpuMeter::default();
    cpu.begin(h.simulator.pid(), true);
    for member in &h.members {
        cpu.begin(member.process.pid(), true);
    }
    for exporter in &exporters {
        cpu.begin(exporter.process.pid(), true);
    }

    let start = Instant::now();
    let mut plan = schedule(config);
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let mut down: BTreeSet<String> = BTreeSet::new();
    let pause_for = config.session_ttl + Duration::from_secs(3);
    let mut kills: Vec<KillRecord> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut nats_restart: Option<(Instant, Duration)> = None;
    let mut etcd_restart: Option<(Instant, Duration)> = None;
    while !plan.is_empty() {
        let (offset, action) = plan.remove(0);
        tokio::time::sleep_until((start + offset).into()).await;
        let at = Some(start.elapsed());
        match action {
            Action::Kill | Action::Pause => {
                let paused = action == Action::Pause;
                let alive: Vec<&String> =
                    member_names.iter().filter(|m| !down.contains(*m)).collect();
                if alive.len() < 2 {
                    progress(at, "skipped: fewer than two members up");
                    continue;
                }
                let victim = alive[rng.random_range(0..alive.len())].clone();
                let leader = h
                    .cluster()
                    .await
                    .ok()
                    .and_then(|c| c["leader"].as_str().map(str::to_string));
                let orphans: Vec<String> = match h.owners().await {
                    Ok(owners) => owners
                        .into_iter()
                        .filter(|(_, m)| *m == victim)
                        .map(|(t, _)| t)
                        .collect(),
                    Err(e) => {
                        progress(at, &format!("owners unknown before the kill: {e:#}"));
                        Vec::new()
                    }
                };
                let tokens: Vec<(String, u64)> = {
                    let record = recorder.record();
                    orphans
                        .iter()
                        .map(|t| (t.clone(), record.token(t)))
                        .collect()
                };
                let pid = h.member(&victim).process.pid();
                let signalled_at = Instant::now();
                if paused {
                    probe.freeze(tcp_local_addresses(pid));
                    h.member(&victim).process.signal(libc::SIGSTOP);
                    insert_sorted(
                        &mut plan,
                        offset + pause_for,
                        Action::Resume(victim.clone()),
                    );
                } else {
                    cpu.end(pid);
                    h.member(&victim).process.kill();
                    archive_log(&log_dir, &victim, kills.len());
                    insert_sorted(
                        &mut plan,
                        offset + config.restart_after,
                        Action::Restart(victim.clone()),
                    );
                }
                let signal = if paused { "SIGSTOP" } else { "SIGKILL" };
                let role = if leader.as_deref() == Some(victim.as_str()) {
                    ", the leader"
                } else {
                    ""
                };
                progress(
                    at,
                    &format!("{signal} {victim} ({} targets{role})", orphans.len()),
                );
                kills.push(KillRecord {
                    at: signalled_at,
                    member: victim.clone(),
                    was_leader: leader.as_deref() == Some(victim.as_str()),
                    signal,
                    orphans: tokens,
                });
                down.insert(victim);
            }
            Action::Restart(member) => {
                match tokio::task::block_in_place(|| h.restart_member(&member)) {
                    Ok(()) => {
                        cpu.begin(h.member(&member).process.pid(), false);
                        probe.name_process(&member, h.member(&member).process.pid());
                        progress(at, &format!("restarted {member}"));
                    }
                    Err(e) => problems.push(format!("{member} did not start again: {e:#}")),
                }
                down.remove(&member);
            }
            Action::Resume(member) => {
                h.member(&member).process.signal(libc::SIGCONT);
                probe.thaw_after(THAW_GRACE);
                down.remove(&member);
                progress(at, &format!("SIGCONT {member}"));
            }
            Action::RestartNats => {
                let began = Instant::now();
                match tokio::task::block_in_place(|| h.nats.restart()) {
                    Ok(()) => {
                        nats_restart = Some((began, began.elapsed()));
                        progress(
                            at,
                            &format!("nats-server restarted in {:?}", began.elapsed()),
                        );
                    }
                    Err(e) => problems.push(format!("nats-server did not start again: {e:#}")),
                }
            }
            Action::RestartEtcd => {
                let began = Instant::now();
                let restarted = match &mut h.store {
                    Store::Etcd(etcd) => tokio::task::block_in_place(|| etcd.restart()),
                    Store::ConsulDouble { .. } | Store::K8sDouble { .. } => {
                        Err(anyhow::anyhow!("not etcd"))
                    }
                };
                match restarted {
                    Ok(()) => {
                        etcd_restart = Some((began, began.elapsed()));
                        progress(at, &format!("etcd restarted in {:?}", began.elapsed()));
                    }
                    Err(e) => problems.push(format!("etcd did not start again: {e:#}")),
                }
            }
        }
    }
    tokio::time::sleep_until((start + config.duration).into()).await;
    let disturbed = start.elapsed();
    for member in &h.members {
        cpu.end(member.process.pid());
    }
    cpu.end(h.simulator.pid());
    for exporter in &exporters {
        cpu.end(exporter.process.pid());
    }
    progress(
        Some(disturbed),
        "disturbed phase over; waiting for every target to be collected once",
    );

    let settle = Instant::now();
    let settled = wait_for_collection(&h, &recorder, &names, config.settle_timeout).await;
    match &settled {
        Ok(()) => progress(
            Some(start.elapsed()),
            &format!("settled after {:.1}s", settle.elapsed().as_secs_f64()),
        ),
        Err(e) => {
            problems.push(format!("not settled: {e:#}"));
            let stats = h.target_stats().await.unwrap_or_default();
            let wrong: Vec<String> = stats
                .iter()
                .filter(|(_, s)| s.subscriptions != 1)
                .map(|(t, s)| format!("{t}={}", s.subscriptions))
                .take(20)
                .collect();
            problems.push(format!("targets without exactly one subscriber: {wrong:?}"));
        }
    }

    let http = gnomon_testkit::http_client_builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut stale_dropped = Vec::new();
    let mut exporter_messages = Vec::new();
    for exporter in &mut exporters {
        if !exporter.process.is_running() {
            problems.push(format!("exporter {} exited during the run", exporter.name));
        }
        match scrape_counter(&http, &exporter.metrics_url(), STALE_DROPPED).await {
            Ok(value) => stale_dropped.push((exporter.name.clone(), Some(value as u64))),
            Err(e) => {
                problems.push(format!("exporter {} /metrics: {e:#}", exporter.name));
                stale_dropped.push((exporter.name.clone(), None));
            }
        }
        if let Ok(value) = scrape_counter(&http, &exporter.metrics_url(), EXPORTER_MESSAGES).await {
            exporter_messages.push((exporter.name.clone(), value as u64));
        }
    }
    for member in &mut h.members {
        if !member.process.is_running() {
            problems.push(format!("member {} exited by itself", member.name));
        }
    }

    let ended = Instant::now();
    let mut stats = probe.finish().await;
    for episode in &mut stats.episodes {
        if let Some(index) = h.devices.iter().position(|d| *d == episode.device) {
            episode.device = format!("t{index} ({})", episode.device);
        }
    }
    let bus = recorder.finish().await;
    drop(exporters);
    let panics = scan_panics(&log_dir)?;
    if let Some(keep) = &config.keep_dir {
        keep_logs(&log_dir, keep)?;
    }
    drop(h);

    let window = config.session_ttl + Duration::from_secs(2);
    let gaps = gaps(&bus, ended);
    let report = ChaosReport {
        start,
        disturbed,
        devices: config.devices,
        session_ttl: config.session_ttl,
        two_subscriber: stats.two_subscriber,
        two_subscriber_frozen: stats.two_subscriber_frozen,
        double_subscriptions: stats.episodes,
        stats_polls: stats.polls,
        failed_stats_polls: stats.failed_polls,
        stale_on_bus: bus.stale.clone(),
        stale_dropped,
        exporter_messages,
        bus_messages: bus.messages,
        longest_gap: gaps.iter().max_by_key(|g| g.length).cloned(),
        gap_at_nats_restart: nats_restart.and_then(|(at, _)| longest_around(&gaps, at, window)),
        gap_at_etcd_restart: etcd_restart.and_then(|(at, _)| longest_around(&gaps, at, window)),
        gap_at_kills: kills
            .iter()
            .filter_map(|k| longest_around(&gaps, k.at, window))
            .max_by_key(|g| g.length),
        nats_outage: nats_restart.map(|(_, took)| took),
        etcd_outage: etcd_restart.map(|(_, took)| took),
        failover: kills.iter().map(|k| k.failover(&bus)).collect(),
        kills,
        panics,
        problems,
        cpu_cores: cpu.spent.as_secs_f64() / disturbed.as_secs_f64().max(1e-9),
        log_dir: config.keep_dir.clone(),
    };
    Ok(report)
}

/// Waits until every target has exactly one Subscribe stream at the simulator and a data
/// message on NATS within the last two seconds.
async fn wait_for_collection(
    h: &Harness,
    recorder: &BusRecorder,
    names: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut missing: Vec<String> = Vec::new();
    let mut wrong: Vec<String> = Vec::new();
    loop {
        if let Ok(stats) = h.target_stats().await {
            wrong = names
                .iter()
                .filter(|t| stats.get(*t).is_none_or(|s| s.subscriptions != 1))
                .cloned()
                .collect();
            let record = recorder.record();
            missing = names
                .iter()
                .filter(|t| {
                    record
                        .last_arrival(t)
                        .is_none_or(|at| at.elapsed() > Duration::from_secs(2))
                })
                .cloned()
                .collect();
            if wrong.is_empty() && missing.is_empty() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "after {timeout:?}: {} targets without exactly one subscriber (first: {:?}), {} without recent data (first: {:?})",
                wrong.len(),
                wrong.iter().take(10).collect::<Vec<_>>(),
                missing.len(),
                missing.iter().take(10).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every silence of every target: between consecutive data messages, and from the last one
/// to `end` (a target that stopped for good shows as one long trailing gap).
fn gaps(bus: &BusRecord, end: Instant) -> Vec<Gap> {
    let mut all = Vec::new();
    for (target, arrivals) in &bus.arrivals {
        let times = arrivals.iter().map(|a| a.at).chain(std::iter::once(
            end.max(arrivals.last().map_or(end, |a| a.at)),
        ));
        let mut previous: Option<Instant> = None;
        for at in times {
            if let Some(from) = previous {
                all.push(Gap {
                    target: target.clone(),
                    from,
                    length: at - from,
                });
            }
            previous = Some(at);
        }
    }
    all
}

/// The longest gap that was open at some moment in `[at, at + window]`.
fn longest_around(gaps: &[Gap], at: Instant, window: Duration) -> Option<Gap> {
    gaps.iter()
        .filter(|g| g.from < at + window && g.from + g.length > at)
        .max_by_key(|g| g.length)
        .cloned()
}

/// The last `lines` lines of every member's log, for an error message.
fn log_tails(h: &Harness, lines: usize) -> String {
    h.members
        .iter()
        .map(|m| {
            let log = m.process.log();
            let all: Vec<&str> = log.lines().collect();
            let tail = all[all.len().saturating_sub(lines)..].join("\n");
            format!("==== {} (last {lines} lines) ====\n{tail}\n", m.name)
        })
        .collect()
}

fn insert_sorted(plan: &mut Vec<(Duration, Action)>, at: Duration, action: Action) {
    let index = plan.partition_point(|(t, _)| *t <= at);
    plan.insert(index, (at, action));
}

/// Keeps a killed member's log: its restart writes a fresh `<member>.log`.
fn archive_log(dir: &Path, member: &str, kill: usize) {
    let from = dir.join(format!("{member}.log"));
    let to = dir.join(format!("{member}.kill{kill}.log"));
    if let Err(e) = std::fs::rename(&from, &to) {
        progress(None, &format!("cannot keep {}: {e}", from.display()));
    }
}

fn keep_logs(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        if path.is_file() {
            if let Some(name) = path.file_name() {
                std::fs::copy(&path, to.join(name))?;
            }
        }
    }
    Ok(())
}

/// A timeline line on stderr (`[  20.0s] …` offsets from the start of the disturbed phase).
fn progress(at: Option<Duration>, what: &str) {
    match at {
        Some(at) => eprintln!("chaos [{:7.1}s] {what}", at.as_secs_f64()),
        None => eprintln!("chaos [   setup] {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_minutes_kill_five_times_and_restart_the_servers_between_kills() {
        let plan = schedule(&ChaosConfig::default());
        let at = |a: &Action| -> Vec<u64> {
            plan.iter()
                .filter(|(_, b)| b == a)
                .map(|(t, _)| t.as_secs())
                .collect()
        };
        assert_eq!(at(&Action::Kill), vec![20, 40, 60, 80, 100]);
        assert_eq!(at(&Action::RestartNats), vec![50]);
        assert_eq!(at(&Action::RestartEtcd), vec![90]);
        assert!(at(&Action::Pause).is_empty());
        let paused = schedule(&ChaosConfig {
            pause_member: true,
            duration: Duration::from_secs(300),
            ..ChaosConfig::default()
        });
        let pauses: Vec<u64> = paused
            .iter()
            .filter(|(_, a)| *a == Action::Pause)
            .map(|(t, _)| t.as_secs())
            .collect();
        assert_eq!(pauses, vec![150]);
        assert_eq!(
            paused.iter().filter(|(_, a)| *a == Action::Kill).count(),
            14
        );
    }

    #[test]
    fn gaps_include_the_silence_until_the_end() {
        let t0 = Instant::now();
        let mut bus = BusRecord::default();
        for s in [0u64, 1, 2, 6] {
            bus.arrivals
                .entry("t0".into())
                .or_default()
                .push(crate::observer::Arrival {
                    at: t0 + Duration::from_secs(s),
                    fencing_token: 1,
                });
        }
        let all = gaps(&bus, t0 + Duration::from_secs(9));
        let lengths: Vec<u64> = all.iter().map(|g| g.length.as_secs()).collect();
        assert_eq!(lengths, vec![1, 1, 4, 3]);
        let around = longest_around(
            &all,
            t0 + Duration::from_millis(2500),
            Duration::from_secs(1),
        );
        assert_eq!(around.unwrap().length, Duration::from_secs(4));
        assert!(
            longest_around(&all, t0 + Duration::from_secs(20), Duration::from_secs(1)).is_none()
        );
    }
}
