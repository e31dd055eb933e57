//! The independent observer: it trusts no gnomon process's own account of what happened.
//! It listens to NATS itself ([`BusRecorder`]), polls the simulator's `/stats`
//! ([`StatsProbe`]), scrapes the exporters' own counters ([`scrape_counter`]) and reads the
//! process logs ([`scan_panics`]).

use futures::StreamExt;
use gnomon_bus::{Bus, NatsBus, NatsOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One message of a target's data subscription, as the observer received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    pub at: Instant,
    pub fencing_token: u64,
}

/// A message whose fencing token was below the highest the observer had already seen for
/// its target: data from an owner that had been replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleMessage {
    pub at: Instant,
    pub target: String,
    pub fencing_token: u64,
    pub highest_seen: u64,
}

/// What the bus recorder saw so far.
#[derive(Debug, Default)]
pub struct BusRecord {
    /// Per target, the data messages (subscription `data_subscription`) in arrival order.
    pub arrivals: BTreeMap<String, Vec<Arrival>>,
    /// Per target, the highest fencing token seen on any of its messages.
    pub highest_token: BTreeMap<String, u64>,
    /// Messages below their target's highest token, in arrival order.
    pub stale: Vec<StaleMessage>,
    /// Every message with a target header (data and status).
    pub messages: u64,
}

impl BusRecord {
    /// The newest fencing token seen for `target` (0 when none).
    pub fn token(&self, target: &str) -> u64 {
        self.highest_token.get(target).copied().unwrap_or(0)
    }

    /// The time of `target`'s newest data message.
    pub fn last_arrival(&self, target: &str) -> Option<Instant> {
        self.arrivals
            .get(target)
            .and_then(|a| a.last())
            .map(|a| a.at)
    }

    /// Applies the exporter's fencing rule to one message, as the observer received it.
    fn record(&mut self, at: Instant, target: &str, token: u64, is_data: bool) {
        self.messages += 1;
        let highest = self.highest_token.entry(target.to_string()).or_insert(0);
        if token < *highest {
            self.stale.push(StaleMessage {
                at,
                target: target.to_string(),
                fencing_token: token,
                highest_seen: *highest,
            });
        } else {
            *highest = token;
        }
        if is_data {
            self.arrivals
                .entry(target.to_string())
                .or_default()
                .push(Arrival {
                    at,
                    fencing_token: token,
                });
        }
    }
}

/// Subscribes to every telemetry subject (no queue group, so it sees what each exporter
/// sees) and records, per target, arrival times and fencing tokens.
pub struct BusRecorder {
    record: Arc<Mutex<BusRecord>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl BusRecorder {
    /// Connects to NATS at `address` and records messages on `subject`; messages of
    /// subscription `data_subscription` count as data (for gaps), all others (the
    /// target-up status) only for fencing.
    pub async fn start(
        address: &str,
        subject: &str,
        data_subscription: &str,
    ) -> anyhow::Result<Self> {
        let bus = NatsBus::connect(&NatsOptions::new(address)).await?;
        let mut subscription = bus.subscribe(subject, None).await?;
        let record: Arc<Mutex<BusRecord>> = Arc::default();
        let stop = CancellationToken::new();
        let sink = record.clone();
        let stopped = stop.clone();
        let data_subscription = data_subscription.to_string();
        let task = tokio::spawn(async move {
            let _bus = bus;
            loop {
                let message = tokio::select! {
                    _ = stopped.cancelled() => break,
                    message = subscription.next() => message,
                };
                let Some(message) = message else { break };
                let Some(target) = message.headers.target.as_deref() else {
                    continue;
                };
                if message.payload.is_empty() {
                    continue;
                }
                let is_data =
                    message.headers.subscription.as_deref() == Some(data_subscription.as_str());
                lock(&sink).record(
                    Instant::now(),
                    target,
                    message.headers.fencing_token.unwrap_or(0),
                    is_data,
                );
            }
        });
        Ok(Self { record, stop, task })
    }

    /// The record so far (hold the guard briefly: the recorder waits for it).
    pub fn record(&self) -> MutexGuard<'_, BusRecord> {
        lock(&self.record)
    }

    /// Stops recording and returns everything recorded.
    pub async fn finish(self) -> BusRecord {
        self.stop.cancel();
        let _ = self.task.await;
        std::mem::take(&mut *lock(&self.record))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Per-device subscriber counts from the simulator, as `/stats` reports them.
#[derive(Debug, Clone, serde::Deserialize)]
struct DeviceStats {
    subscriptions: usize,
    #[serde(default)]
    peers: Vec<String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct StatsReport {
    targets: BTreeMap<String, DeviceStats>,
}

/// One stretch during which a device had two or more Subscribe streams.
#[derive(Clone, Debug)]
pub struct DoubleSubscription {
    pub device: String,
    /// Whether one of the subscribers was a frozen process.
    pub frozen: bool,
    pub first_seen: Instant,
    pub last_seen: Instant,
    pub most_subscriptions: usize,
    pub peers: Vec<String>,
    /// `peer=process` for the peers of a live stretch, resolved from the processes'
    /// sockets when it was first seen (which process opened which stream).
    pub peer_processes: Vec<String>,
}

/// What the stats probe measured.
#[derive(Debug, Default)]
pub struct StatsRecord {
    /// Σ over polls that showed any device with ≥ 2 subscriptions of the time until the
    /// next poll (the interval the observation stands for).
    pub two_subscriber: Duration,
    /// The same for polls whose only extra subscribers were connections of a frozen
    /// (SIGSTOPped) process, which cannot close its streams; reported apart.
    pub two_subscriber_frozen: Duration,
    /// Every stretch per device (a stretch ends at the first poll showing it below 2).
    pub episodes: Vec<DoubleSubscription>,
    pub polls: u64,
    pub failed_polls: u64,
}

/// Polls the simulator's `/stats` every `interval` and sums the time during which any
/// device had two subscribers.
pub struct StatsProbe {
    record: Arc<Mutex<StatsRecord>>,
    frozen: Arc<Mutex<BTreeSet<String>>>,
    processes: Arc<Mutex<BTreeMap<String, u32>>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl StatsProbe {
    pub fn start(stats_url: String, interval: Duration) -> anyhow::Result<Self> {
        let http = gnomon_testkit::http_client_builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let record: Arc<Mutex<StatsRecord>> = Arc::default();
        let frozen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let stop = CancellationToken::new();
        let sink = record.clone();
        let frozen_peers = frozen.clone();
        let processes: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
        let known_processes = processes.clone();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            // The previous poll's time and what it showed.
            let mut previous: Option<(Instant, Doubles)> = None;
            let mut open: BTreeMap<String, DoubleSubscription> = BTreeMap::new();
            while !stopped.is_cancelled() {
                let report = poll_stats(&http, &stats_url).await;
                let now = Instant::now();
                {
                    let mut record = lock(&sink);
                    record.polls += 1;
                    match report {
                        Err(_) => record.failed_polls += 1,
                        Ok(report) => {
                            if let Some((at, seen)) = previous {
                                match seen {
                                    Doubles::Live => record.two_subscriber += now - at,
                                    Doubles::Frozen => record.two_subscriber_frozen += now - at,
                                    Doubles::None => {}
                                }
                            }
                            let frozen = lock(&frozen_peers).clone();
                            let report = without_closed_peers(report, &established_sockets());
                            let seen = note_doubles(&report, &frozen, now, &mut open, &mut record);
                            if seen == Doubles::Live {
                                let processes = lock(&processes).clone();
                                name_peers(&mut open, &processes);
                            }
                            previous = Some((now, seen));
                        }
                    }
                }
                tokio::time::sleep(interval).await;
            }
            let mut record = lock(&sink);
            match previous {
                Some((at, Doubles::Live)) => record.two_subscriber += Instant::now() - at,
                Some((at, Doubles::Frozen)) => record.two_subscriber_frozen += Instant::now() - at,
                _ => {}
            }
            record.episodes.extend(open.into_values());
        });
        Ok(Self {
            record,
            frozen,
            processes: known_processes,
            stop,
            task,
        })
    }

    /// Names process `pid` (a member started or restarted), so the peers of a double
    /// subscription can be traced to the processes that opened them.
    pub fn name_process(&self, name: &str, pid: u32) {
        lock(&self.processes).insert(name.to_string(), pid);
    }

    /// Marks `peers` (`ip:port` of a process's connections) as belonging to a frozen process.
    pub fn freeze(&self, peers: BTreeSet<String>) {
        *lock(&self.frozen) = peers;
    }

    /// The frozen process runs again: after `grace` (the time it has to notice its lost
    /// locks and close its streams) its connections count like any other.
    pub fn thaw_after(&self, grace: Duration) {
        let frozen = self.frozen.clone();
        let woken = lock(&frozen).clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            lock(&frozen).retain(|peer| !woken.contains(peer));
        });
    }

    /// Two-subscriber time so far.
    pub fn two_subscriber(&self) -> Duration {
        lock(&self.record).two_subscriber
    }

    pub async fn finish(self) -> StatsRecord {
        self.stop.cancel();
        let _ = self.task.await;
        std::mem::take(&mut *lock(&self.record))
    }
}

/// Resolves the peers of live double-subscription stretches that are not resolved yet to
/// the named processes whose sockets they are.
fn name_peers(open: &mut BTreeMap<String, DoubleSubscription>, processes: &BTreeMap<String, u32>) {
    let mut sockets: Option<Vec<(&String, BTreeSet<String>)>> = None;
    for episode in open.values_mut() {
        if episode.frozen || !episode.peer_processes.is_empty() {
            continue;
        }
        let sockets = sockets.get_or_insert_with(|| {
            processes
                .iter()
                .map(|(name, pid)| (name, tcp_local_addresses(*pid)))
                .collect()
        });
        episode.peer_processes = episode
            .peers
            .iter()
            .map(|peer| {
                let owner = sockets
                    .iter()
                    .find(|(_, addresses)| addresses.contains(peer))
                    .map_or("?", |(name, _)| name.as_str());
                format!("{peer}={owner}")
            })
            .collect();
    }
}

/// What one poll showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Doubles {
    None,
    /// Some device had two subscribers only counting a frozen process's connection.
    Frozen,
    /// Some device had two subscribers from running processes.
    Live,
}

/// Opens, extends and closes the per-device double-subscription stretches for one poll. A
/// device counts as frozen-double when a frozen peer is among its subscribers and at most one
/// other peer remains.
fn note_doubles(
    report: &StatsReport,
    frozen: &BTreeSet<String>,
    now: Instant,
    open: &mut BTreeMap<String, DoubleSubscription>,
    record: &mut StatsRecord,
) -> Doubles {
    let mut seen = Doubles::None;
    for (device, stats) in &report.targets {
        if stats.subscriptions >= 2 {
            let frozen_peer = stats.peers.iter().any(|p| frozen.contains(p));
            let live_peers = stats.peers.iter().filter(|p| !frozen.contains(*p)).count();
            let is_frozen = frozen_peer && live_peers <= 1;
            seen = match (seen, is_frozen) {
                (Doubles::Live, _) | (_, false) => Doubles::Live,
                _ => Doubles::Frozen,
            };
            let episode = open
                .entry(device.clone())
                .or_insert_with(|| DoubleSubscription {
                    device: device.clone(),
                    frozen: is_frozen,
                    first_seen: now,
                    last_seen: now,
                    most_subscriptions: 0,
                    peers: Vec::new(),
                    peer_processes: Vec::new(),
                });
            episode.last_seen = now;
            episode.frozen &= is_frozen;
            if stats.subscriptions > episode.most_subscriptions {
                episode.most_subscriptions = stats.subscriptions;
                episode.peers = stats.peers.clone();
            }
        } else if let Some(episode) = open.remove(device) {
            record.episodes.push(episode);
        }
    }
    seen
}

async fn poll_stats(http: &reqwest::Client, url: &str) -> anyhow::Result<StatsReport> {
    Ok(http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Sums every sample of metric `name` (any labels) in the Prometheus text at `url`.
/// A metric that is not exposed at all reads as 0; an unreachable endpoint is an error.
pub async fn scrape_counter(http: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<f64> {
    let text = http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(sum_metric(&text, name))
}

/// Sums the samples of `name` in a Prometheus exposition.
pub fn sum_metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            // `name` exactly, not a longer metric name sharing the prefix.
            let value = match rest.chars().next()? {
                '{' => rest.split_once('}')?.1,
                ' ' => rest,
                _ => return None,
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// Lines that report a Rust panic, in every log under `dir` (`*.log`), with the file name.
pub fn scan_panics(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read(&path)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for line in String::from_utf8_lossy(&text).lines() {
            if line.contains("panicked") {
                found.push(format!("{name}: {line}"));
            }
        }
    }
    Ok(found)
}

/// `local ip:port` of every ESTABLISHED IPv4 TCP socket on this host (all processes share
/// the network namespace in a chaos run).
fn established_sockets() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(3) == Some(&"01")).then_some(())?;
            parse_ipv4_socket(fields.get(1)?)
        })
        .collect()
}

/// Leaves out of a device's subscribers the peers whose own socket is no longer
/// established: a collector that closed its connection has stopped subscribing, even if the
/// simulator (busy on a loaded machine) has not yet noticed the close. Streams of a closed
/// peer stop counting; a double needs two peers that still hold their connection.
fn without_closed_peers(mut report: StatsReport, established: &BTreeSet<String>) -> StatsReport {
    for stats in report.targets.values_mut() {
        if stats.subscriptions < 2 || stats.peers.iter().all(|p| established.contains(p)) {
            continue;
        }
        let live: Vec<String> = stats
            .peers
            .iter()
            .filter(|p| established.contains(*p))
            .cloned()
            .collect();
        if live.len() < 2 {
            stats.subscriptions = live.len();
        }
        stats.peers = live;
    }
    report
}

/// The local `ip:port` of every IPv4 TCP socket process `pid` has open (how the simulator's
/// `/stats` names that process's connections).
pub fn tcp_local_addresses(pid: u32) -> BTreeSet<String> {
    let mut inodes = BTreeSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.filter_map(Result::ok) {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                let link = link.to_string_lossy();
                if let Some(inode) = link
                    .strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                {
                    inodes.insert(inode.to_string());
                }
            }
        }
    }
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let inode = fields.get(9)?;
            if !inodes.contains(*inode) {
                return None;
            }
            parse_ipv4_socket(fields.get(1)?)
        })
        .collect()
}

/// A `/proc/net/tcp` address: the network-order address bytes printed as a native-endian
/// hex word, then the port in hex (`0100007F:1F90` → `127.0.0.1:8080` on little-endian).
fn parse_ipv4_socket(text: &str) -> Option<String> {
    let (address, port) = text.split_once(':')?;
    let address = u32::from_str_radix(address, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = std::net::Ipv4Addr::from(address.to_ne_bytes());
    Some(format!("{ip}:{port}"))
}

/// CPU time (user + system) a process used so far, from `/proc/<pid>/stat`.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
    Some(Duration::from_secs_f64((utime + stime) as f64 / ticks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_of_a_closed_peer_are_not_a_double() {
        let report = StatsReport {
            targets: [(
                "127.0.0.1:9000".to_string(),
                DeviceStats {
                    subscriptions: 2,
                    peers: vec!["127.0.0.1:40000".into(), "127.0.0.1:40001".into()],
                },
            )]
            .into(),
        };
        let both: BTreeSet<String> = ["127.0.0.1:40000", "127.0.0.1:40001"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let kept = without_closed_peers(report.clone(), &both);
        assert_eq!(kept.targets["127.0.0.1:9000"].subscriptions, 2);
        let one: BTreeSet<String> = ["127.0.0.1:40001".to_string()].into();
        let closed = without_closed_peers(report, &one);
        assert_eq!(closed.targets["127.0.0.1:9000"].subscriptions, 1);
        assert_eq!(
            closed.targets["127.0.0.1:9000"].peers,
            vec!["127.0.0.1:40001"]
        );
    }

    #[test]
    fn stale_is_a_token_below_the_highest_seen_for_the_same_target() {
        let mut record = BusRecord::default();
        let now = Instant::now();
        record.record(now, "t1", 5, true);
        record.record(now, "t2", 3, true);
        record.record(now, "t1", 7, true);
        record.record(now, "t1", 5, true);
        record.record(now, "t1", 7, false);
        assert_eq!(record.stale.len(), 1);
        assert_eq!(record.stale[0].target, "t1");
        assert_eq!(record.stale[0].fencing_token, 5);
        assert_eq!(record.stale[0].highest_seen, 7);
        assert_eq!(record.token("t1"), 7);
        assert_eq!(record.arrivals["t1"].len(), 3);
        assert_eq!(record.messages, 5);
    }

    #[test]
    fn sums_one_metric_across_labels_and_ignores_longer_names() {
        let text = "# TYPE gnomon_exporter_stale_dropped_total counter\n\
                    gnomon_exporter_stale_dropped_total 3\n\
                    gnomon_exporter_stale_dropped_total{input=\"b\"} 2\n\
                    gnomon_exporter_stale_dropped_total_extra 100\n\
                    other 9\n";
        assert_eq!(sum_metric(text, "gnomon_exporter_stale_dropped_total"), 5.0);
        assert_eq!(sum_metric(text, "missing"), 0.0);
    }

    #[test]
    fn finds_panics_in_logs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        std::fs::write(
            path.join("g1.log"),
            "ok\nthread 'x' panicked at src/a.rs:1:1\n",
        )
        .unwrap();
        std::fs::write(path.join("g2.log"), "fine\n").unwrap();
        std::fs::write(path.join("notes.txt"), "panicked\n").unwrap();
        let found = scan_panics(path).unwrap();
        assert_eq!(found, vec!["g1.log: thread 'x' panicked at src/a.rs:1:1"]);
    }

    #[test]
    fn finds_the_local_address_of_this_process_connections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let local = client.local_addr().unwrap().to_string();
        let found = tcp_local_addresses(std::process::id());
        assert!(found.contains(&local), "{local} not in {found:?}");
        assert!(found.contains(&listener.local_addr().unwrap().to_string()));
    }

    #[test]
    fn a_frozen_peer_makes_a_double_frozen_and_two_live_peers_make_it_live() {
        let report = |peers: &[&str]| StatsReport {
            targets: [(
                "127.0.0.1:9000".to_string(),
                DeviceStats {
                    subscriptions: peers.len(),
                    peers: peers.iter().map(|p| p.to_string()).collect(),
                },
            )]
            .into(),
        };
        let frozen: BTreeSet<String> = ["127.0.0.1:1".to_string()].into();
        let mut open = BTreeMap::new();
        let mut record = StatsRecord::default();
        let now = Instant::now();
        let mut seen =
            |peers: &[&str]| note_doubles(&report(peers), &frozen, now, &mut open, &mut record);
        assert_eq!(seen(&["127.0.0.1:1", "127.0.0.1:2"]), Doubles::Frozen);
        assert_eq!(seen(&["127.0.0.1:2", "127.0.0.1:3"]), Doubles::Live);
        assert_eq!(seen(&["127.0.0.1:3"]), Doubles::None);
        assert_eq!(record.episodes.len(), 1);
        assert!(!record.episodes[0].frozen, "the stretch turned live");
    }

    #[test]
    fn measures_cpu_this_process_spent() {
        // Spin until the measured CPU time has grown by 100 ms: on a loaded machine a fixed
        // stretch of wall time may get little CPU (300 ms of spinning once measured 60 ms),
        // so the wall clock only bounds how long a broken measurement may take to fail.
        let before = process_cpu(std::process::id()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut x = 0u64;
        let mut after = before;
        while after - before < Duration::from_millis(100) {
            assert!(
                Instant::now() < deadline,
                "no CPU time measured while spinning: {before:?} → {after:?}"
            );
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            after = process_cpu(std::process::id()).unwrap();
        }
    }
}
