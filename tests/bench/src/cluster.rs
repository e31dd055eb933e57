//! Cluster benchmarks on real etcd, nats-server, a simulator and `gnomon all` processes
//! (the gnomon binary must be built: `cargo build --release -p gnomon`).

use crate::report;
use gnomon_testkit::cluster::{exactly_one_each, Harness};
use std::collections::BTreeMap;
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

async fn wait_for(
    what: &str,
    timeout: Duration,
    mut ok: impl AsyncFnMut() -> bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !ok().await {
        anyhow::ensure!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(start.elapsed())
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// SIGKILL a member ≥ 20 times (etcd, session TTL 2 s); one sample per kill: the time until
/// every target of the killed member is owned by a survivor and has exactly one subscriber
/// again (simulator `/stats`).
pub fn failover_p99_s() -> anyhow::Result<()> {
    failover("etcd", "failover_p99_s")
}

/// The same on the Kubernetes API double (`type: k8s`, lease-duration 2 s, no lock-delay;
/// the harness plays the EndpointSlice controller). Goal: ≤ lease-duration + 2 s.
pub fn failover_p99_s_k8s() -> anyhow::Result<()> {
    failover("k8s", "failover_p99_s_k8s")
}

fn failover(store: &str, result: &str) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let targets = plain_targets(30);
        let names: Vec<String> = targets.keys().cloned().collect();
        let mut h = Harness::start(store, 30).await?;
        for member in ["g1", "g2", "g3"] {
            h.start_member(member, &[], &targets)?;
        }
        wait_for("initial placement", Duration::from_secs(60), async || {
            h.target_stats()
                .await
                .map(|s| exactly_one_each(&s, &names))
                .unwrap_or(false)
        })
        .await?;
        let mut samples = Vec::new();
        for trial in 0..20 {
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
            let took = wait_for("failover", Duration::from_secs(60), async || {
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
            let settled = wait_for("rebalance", Duration::from_secs(60), async || {
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
                eprintln!("owners: {:?}\n{}", h.owners().await, h.logs());
                return Err(e);
            }
        }
        anyhow::ensure!(samples.len() >= 20, "only {} kills measured", samples.len());
        eprintln!("failover samples (s): {samples:?}");
        report(result, percentile(&mut samples, 99.0), "s");
        Ok(())
    })
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
    runtime()?.block_on(async {
        let targets = plain_targets(1000);
        let names: Vec<String> = targets.keys().cloned().collect();
        let mut h = Harness::start("etcd", 1000).await?;
        let start = Instant::now();
        for member in ["g1", "g2", "g3"] {
            h.start_member(member, &[], &targets)?;
        }
        wait_for(
            "1000 targets placed",
            Duration::from_secs(300),
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
        eprintln!("placement of 1000 targets: {took:?}, load {load:?}");
        report("place_1000_targets_s", took.as_secs_f64(), "s");
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
        let file = h.dir.path().join("targets.yaml");
        std::fs::write(&file, "")?;
        let loader = format!(
            "loader:\n  type: file\n  path: {}\n  interval: {}s\n",
            file.display(),
            LOADER_INTERVAL.as_secs()
        );
        for member in ["g1", "g2", "g3"] {
            let config = h.config(member, &[], &BTreeMap::new()) + &loader;
            h.start_member_with_config(member, &config)?;
        }
        wait_for("a leader with 3 members", Duration::from_secs(60), async || {
            h.cluster().await.is_ok_and(|c| {
                c["leader"].as_str().is_some_and(|l| !l.is_empty())
                    && c["members"].as_array().is_some_and(|m| m.len() == 3)
            })
        })
        .await?;
        let mut text = String::new();
        for (i, device) in h.devices.iter().enumerate() {
            text.push_str(&format!("t{i}:\n  address: {device}\n"));
        }
        let temporary = file.with_extension("tmp");
        std::fs::write(&temporary, text)?;
        let start = Instant::now();
        std::fs::rename(&temporary, &file)?;
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
