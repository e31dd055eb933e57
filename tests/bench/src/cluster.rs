//! Cluster benchmarks on real etcd, nats-server, a simulator and `gnomon all` processes
//! (the gnomon binary must be built: `cargo build --release -p gnomon`).

use crate::report;
use gnomon_testkit::cluster::{exactly_one_each, Harness};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn plain_targets(count: usize) -> BTreeMap<String, Vec<String>> {
    (0..count).map(|i| (format!("t{i}"), Vec::new())).collect()
}

/// How often a benchmark polls `/stats` and the cluster API: every poll reads the state of
/// every target, which at 10 000 targets costs the machine more than the 20 ms that suit a
/// few dozen.
fn poll_interval(targets: usize) -> Duration {
    Duration::from_millis(20).max(Duration::from_micros(10) * targets as u32)
}

async fn wait_for(
    what: &str,
    timeout: Duration,
    ok: impl AsyncFnMut() -> bool,
) -> anyhow::Result<Duration> {
    wait_polling(what, timeout, Duration::from_millis(20), ok).await
}

async fn wait_polling(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut ok: impl AsyncFnMut() -> bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !ok().await {
        anyhow::ensure!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(poll).await;
    }
    Ok(start.elapsed())
}

/// Lets this process and the processes it starts (simulators, members) open the sockets of
/// `devices` devices: a simulator holds a listener and an accepted connection per device
/// (the harness splits the fleet over processes by the limit), a member a client connection
/// per target it collects (all of them, at worst), plus the store's and the bus's.
fn allow_sockets_for(devices: usize) -> anyhow::Result<()> {
    let wanted = 2 * devices as u64 + 4096;
    let limit = gnomon_testkit::raise_fd_limit(wanted)?;
    let needed = devices as u64 + 1024;
    anyhow::ensure!(
        limit >= needed,
        "open-file limit {limit} is below the {needed} a member collecting {devices} devices needs (raise `ulimit -n`)"
    );
    eprintln!(
        "open-file limit: {limit}; simulator processes: {:?} devices",
        gnomon_testkit::cluster::simulator_shards(devices)
    );
    Ok(())
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// SIGKILL a member ≥ 20 times (etcd, session TTL 2 s, 30 targets); one sample per kill:
/// the time until every target of the killed member is owned by a survivor and has exactly
/// one subscriber again (simulator `/stats`).
pub fn failover_p99_s() -> anyhow::Result<()> {
    failover("etcd", "failover_p99_s", 30, 20)
}

/// The same on the Kubernetes API double (`type: k8s`, lease-duration 2 s, no lock-delay;
/// the harness plays the EndpointSlice controller). Goal: ≤ lease-duration + 2 s.
pub fn failover_p99_s_k8s() -> anyhow::Result<()> {
    failover("k8s", "failover_p99_s_k8s", 30, 20)
}

/// The same with 10 000 targets: each kill takes a third of them down. Six kills (two per
/// member): every kill is followed by a restart and a rebalance of 3 333 targets, so more
/// would take long; p99 of six samples is their maximum. Goal: ≤ session-ttl + 3 s.
pub fn failover_10k_p99_s() -> anyhow::Result<()> {
    failover("etcd", "failover_10k_p99_s", 10_000, 6)
}

fn failover(store: &str, result: &str, count: usize, kills: usize) -> anyhow::Result<()> {
    allow_sockets_for(count)?;
    let poll = poll_interval(count);
    let settle = Duration::from_secs(60).max(Duration::from_millis(30) * count as u32);
    runtime()?.block_on(async {
        let targets = plain_targets(count);
        let names: Vec<String> = targets.keys().cloned().collect();
        let mut h = Harness::start(store, count).await?;
        for member in ["g1", "g2", "g3"] {
            h.start_member(member, &[], &targets)?;
        }
        wait_polling("initial placement", settle, poll, async || {
            h.target_stats()
                .await
                .map(|s| exactly_one_each(&s, &names))
                .unwrap_or(false)
        })
        .await?;
        let mut samples = Vec::new();
        for trial in 0..kills {
            let owners = h.owners().await?;
            let victim = ["g1", "g2", "g3"][trial % 3].to_string();
            let orphans: Vec<String> = owners
                .iter()
                .filter(|(_, m)| **m == victim)
                .map(|(t, _)| t.clone())
                .collect();
            if orphans.is_empty() {
                h.http
                    .post(format!(
                        "{}/api/v1/cluster/rebalance",
                        leader_api(&h).await?
                    ))
                    .send()
                    .await?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            h.member(&victim).process.kill();
            eprintln!("kill {trial}: {victim} killed at {} UTC", utc_time_of_day());
            let took = wait_polling("failover", settle, poll, async || {
                let moved = h
                    .owners()
                    .await
                    .map(|o| {
                        orphans
                            .iter()
                            .all(|t| o.get(t).is_some_and(|m| *m != victim))
                    })
                    .unwrap_or(false);
                moved
                    && h.target_stats()
                        .await
                        .map(|s| exactly_one_each(&s, &orphans))
                        .unwrap_or(false)
            })
            .await?;
            eprintln!(
                "kill {trial}: {victim} with {} targets, back in {took:?}",
                orphans.len()
            );
            samples.push(took.as_secs_f64());
            h.restart_member(&victim)?;
            // Give the restarted member its share back before the next kill.
            tokio::time::sleep(Duration::from_secs(3)).await;
            if let Ok(api) = leader_api(&h).await {
                let _ = h
                    .http
                    .post(format!("{api}/api/v1/cluster/rebalance"))
                    .send()
                    .await;
            }
            let settled = wait_polling("rebalance", settle, poll, async || {
                h.target_stats()
                    .await
                    .map(|s| exactly_one_each(&s, &names))
                    .unwrap_or(false)
            })
            .await;
            if let Err(e) = settled {
                match h.target_stats().await {
                    Ok(stats) => {
                        let odd: Vec<_> =
                            stats.iter().filter(|(_, s)| s.subscriptions != 1).collect();
                        eprintln!("not exactly one subscriber: {odd:?}");
                    }
                    Err(stats_error) => eprintln!("simulator /stats failed: {stats_error:#}"),
                }
                if count <= 100 {
                    eprintln!("owners: {:?}\n{}", h.owners().await, h.logs());
                } else {
                    // Thousands of targets: the logs' ends say what went wrong.
                    for m in &h.members {
                        let log = m.process.log();
                        let tail = log.len().saturating_sub(8000);
                        let tail = (tail..log.len())
                            .find(|i| log.is_char_boundary(*i))
                            .unwrap_or(tail);
                        eprintln!("==== {} (end) ====\n{}", m.name, &log[tail..]);
                    }
                }
                return Err(e);
            }
        }
        anyhow::ensure!(
            samples.len() >= kills,
            "only {} kills measured",
            samples.len()
        );
        eprintln!("failover samples (s): {samples:?}");
        keep_member_logs(&h)?;
        report(result, percentile(&mut samples, 99.0), "s");
        Ok(())
    })
}

/// With `GNOMON_BENCH_MEMBER_LOGS=<file>`, writes the members' logs there (the harness's
/// directory goes away with it): where a placement's time went, by the members' clocks.
fn keep_member_logs(h: &Harness) -> anyhow::Result<()> {
    if let Some(path) = std::env::var_os("GNOMON_BENCH_MEMBER_LOGS") {
        std::fs::write(&path, h.logs())?;
    }
    Ok(())
}

/// Now as `HH:MM:SS.mmm` (UTC), to compare with the members' log timestamps.
fn utc_time_of_day() -> String {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ms = since_epoch.as_millis() % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

async fn leader_api(h: &Harness) -> anyhow::Result<String> {
    let cluster = h.cluster().await?;
    let leader = cluster["leader"].as_str().unwrap_or_default().to_string();
    h.members
        .iter()
        .find(|m| m.name == leader)
        .map(|m| m.api())
        .ok_or_else(|| anyhow::anyhow!("no leader"))
}

/// 1000 simulated devices, 3 members: time from starting the members until every target has
/// exactly one subscriber.
pub fn place_1000_targets_s() -> anyhow::Result<()> {
    place("place_1000_targets_s", 1000)
}

/// The same with 10 000 devices. Goal: ≤ 5 s.
pub fn place_10k_targets_s() -> anyhow::Result<()> {
    place("place_10k_targets_s", 10_000)
}

fn place(result: &str, count: usize) -> anyhow::Result<()> {
    allow_sockets_for(count)?;
    runtime()?.block_on(async {
        let targets = plain_targets(count);
        let names: Vec<String> = targets.keys().cloned().collect();
        let mut h = Harness::start("etcd", count).await?;
        let start = Instant::now();
        for member in ["g1", "g2", "g3"] {
            h.start_member(member, &[], &targets)?;
        }
        wait_polling(
            &format!("{count} targets placed"),
            Duration::from_secs(300),
            poll_interval(count),
            async || {
                h.target_stats()
                    .await
                    .map(|s| exactly_one_each(&s, &names))
                    .unwrap_or(false)
            },
        )
        .await?;
        let took = start.elapsed();
        let owners = h.owners().await?;
        let mut load: BTreeMap<&str, usize> = BTreeMap::new();
        for owner in owners.values() {
            *load.entry(owner).or_default() += 1;
        }
        eprintln!("placement of {count} targets: {took:?}, load {load:?}");
        keep_member_logs(&h)?;
        report(result, took.as_secs_f64(), "s");
        Ok(())
    })
}

/// Loader reads the file this often in `loader_1000_targets_s`.
const LOADER_INTERVAL: Duration = Duration::from_secs(2);

/// 1000 simulated devices, 3 members with gnmic's file loader (interval 2 s): time from
/// 1000 targets appearing in the watched file (written atomically, once the cluster has a
/// leader) until every one has exactly one subscriber. Goal: ≤ interval + 3 s.
pub fn loader_1000_targets_s() -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let names: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
        let mut h = Harness::start("etcd", 1000).await?;
        let file = start_loading_members(&mut h, &["g1", "g2", "g3"]).await?;
        let start = Instant::now();
        load_every_device(&h, &file)?;
        wait_for("1000 loaded targets placed", Duration::from_secs(300), async || {
            h.target_stats()
                .await
                .map(|s| exactly_one_each(&s, &names))
                .unwrap_or(false)
        })
        .await?;
        let took = start.elapsed();
        eprintln!(
            "1000 targets from the file collected once after {took:?} (loader interval {LOADER_INTERVAL:?})"
        );
        report("loader_1000_targets_s", took.as_secs_f64(), "s");
        Ok(())
    })
}

/// Starts `members` with no targets and gnmic's file loader on an empty file; returns the
/// file once the cluster has a leader and every member.
async fn start_loading_members(h: &mut Harness, members: &[&str]) -> anyhow::Result<PathBuf> {
    let file = h.dir.path().join("targets.yaml");
    std::fs::write(&file, "")?;
    let loader = format!(
        "loader:\n  type: file\n  path: {}\n  interval: {}s\n",
        file.display(),
        LOADER_INTERVAL.as_secs()
    );
    for member in members {
        let config = h.config(member, &[], &BTreeMap::new()) + &loader;
        h.start_member_with_config(member, &config)?;
    }
    wait_for(
        "a leader with every member",
        Duration::from_secs(60),
        async || {
            h.cluster().await.is_ok_and(|c| {
                c["leader"].as_str().is_some_and(|l| !l.is_empty())
                    && c["members"]
                        .as_array()
                        .is_some_and(|m| m.len() == members.len())
            })
        },
    )
    .await?;
    Ok(file)
}

/// Writes every simulated device into the loader's file at once (a rename: the loader never
/// reads half a file); device i is target `t<i>`.
fn load_every_device(h: &Harness, file: &Path) -> anyhow::Result<()> {
    let mut text = String::new();
    for (i, device) in h.devices.iter().enumerate() {
        text.push_str(&format!("t{i}:\n  address: {device}\n"));
    }
    let temporary = file.with_extension("tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, file)?;
    Ok(())
}

/// Targets of `collector_rss_bytes_per_target`.
const RSS_TARGETS: usize = 5000;

/// How long the targets stream before the resident size is read: every subscription has
/// delivered several samples, so buffers are at their working size.
const RSS_STREAMING: Duration = Duration::from_secs(15);

/// One member (`gnomon all`: collector, and the leader that places the targets on it);
/// 5 000 devices of 4 interfaces (32 counters, sampled every 1 s) appear in its loader's
/// file. The member's resident size (`VmRSS`) once every target has streamed for a while,
/// minus its size before the targets, divided by the targets. Goal: ≤ 100 KB.
pub fn collector_rss_bytes_per_target() -> anyhow::Result<()> {
    allow_sockets_for(RSS_TARGETS)?;
    runtime()?.block_on(async {
        let names: Vec<String> = (0..RSS_TARGETS).map(|i| format!("t{i}")).collect();
        let mut h = Harness::start_with("etcd", RSS_TARGETS, 4).await?;
        let file = start_loading_members(&mut h, &["g1"]).await?;
        let pid = h.member("g1").process.pid();
        // Settled without targets: its own timers and the first store reads have run.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = gnomon_testkit::resident_bytes(pid)?;
        load_every_device(&h, &file)?;
        let took = wait_polling(
            "every target collected",
            Duration::from_secs(300),
            poll_interval(RSS_TARGETS),
            async || {
                h.target_stats()
                    .await
                    .map(|s| exactly_one_each(&s, &names))
                    .unwrap_or(false)
            },
        )
        .await?;
        tokio::time::sleep(RSS_STREAMING).await;
        anyhow::ensure!(
            h.collected_once(&names).await,
            "a target stopped streaming: {}",
            h.member("g1").process.log()
        );
        let after = gnomon_testkit::resident_bytes(pid)?;
        eprintln!(
            "{RSS_TARGETS} targets streaming after {took:?}; RSS {before} B before, {after} B after {RSS_STREAMING:?} of streaming"
        );
        report(
            "collector_rss_bytes_per_target",
            after.saturating_sub(before) as f64 / RSS_TARGETS as f64,
            "bytes",
        );
        Ok(())
    })
}
