//! `lock_takeover_p99_s`: etcd with a 2s session TTL and no lock-delay. A holder process takes
//! the lock, a contender in this process waits in `acquire_blocking`, the holder is SIGKILLed,
//! and the time until the contender holds the lock is measured (25 trials, kill moments spread
//! over the keep-alive cycle). The holder is this same binary re-executed in holder mode.

use gnomon_coordination::{self as coordination, CancellationToken, LockerConfig, LockerType};
use gnomon_testkit::{ChildProcess, EtcdServer};
use std::process::Command;
use std::time::{Duration, Instant};

const HOLDER_ENV: &str = "GNOMON_BENCH_LOCK_HOLDER";
const KEY: &str = "gnmic/bench/leader";
const TRIALS: usize = 25;

fn config(address: &str) -> LockerConfig {
    let mut cfg = LockerConfig::new(LockerType::Etcd);
    cfg.address = Some(address.to_string());
    cfg.session_ttl = Duration::from_secs(2);
    cfg.delay = Duration::ZERO;
    cfg
}

pub fn lock_takeover_p99_s() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    if let Ok(address) = std::env::var(HOLDER_ENV) {
        return runtime.block_on(hold(address));
    }
    runtime.block_on(measure())
}

/// Holder mode: take the lock, say so, and wait to be killed.
async fn hold(address: String) -> anyhow::Result<()> {
    let backend = coordination::connect(&config(&address), "bench-holder").await?;
    let guard = backend
        .acquire_blocking(KEY, "bench-holder", &CancellationToken::new())
        .await?
        .ok_or_else(|| anyhow::anyhow!("holder gave up"))?;
    println!("ACQUIRED {}", guard.fencing_token());
    std::future::pending::<()>().await;
    Ok(())
}

async fn wait_for_acquired(child: &ChildProcess) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !child.log().contains("ACQUIRED") {
        if Instant::now() > deadline {
            anyhow::bail!("holder never acquired; log:\n{}", child.log());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn measure() -> anyhow::Result<()> {
    let etcd = tokio::task::spawn_blocking(EtcdServer::start).await??;
    let logs = tempfile::tempdir()?;
    let contender = coordination::connect(&config(&etcd.address()), "bench-contender").await?;
    let exe = std::env::current_exe()?;
    let mut samples = Vec::with_capacity(TRIALS);
    for trial in 0..TRIALS {
        let mut command = Command::new(&exe);
        command
            .arg("lock_takeover_p99_s")
            .env(HOLDER_ENV, etcd.address());
        let mut holder = ChildProcess::spawn(&format!("holder-{trial}"), command, logs.path())?;
        wait_for_acquired(&holder).await?;
        let waiting = {
            let contender = contender.clone();
            tokio::spawn(async move {
                contender
                    .acquire_blocking(KEY, "bench-contender", &CancellationToken::new())
                    .await
            })
        };
        // Spread the kill moment over the holder's keep-alive cycle (renewals every ttl/3).
        tokio::time::sleep(Duration::from_millis(200 + (trial as u64 * 137) % 700)).await;
        let killed = Instant::now();
        holder.kill();
        let guard = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .map_err(|_| anyhow::anyhow!("trial {trial}: no takeover within 30s"))???
            .ok_or_else(|| anyhow::anyhow!("trial {trial}: acquire cancelled"))?;
        let took = killed.elapsed().as_secs_f64();
        samples.push(took);
        eprintln!(
            "trial {trial}: takeover after {took:.3}s (token {})",
            guard.fencing_token()
        );
        guard.release().await?;
    }
    contender.shutdown().await;
    samples.sort_by(f64::total_cmp);
    let rank = ((samples.len() as f64) * 0.99).ceil() as usize;
    let p99 = samples[rank.saturating_sub(1).min(samples.len() - 1)];
    eprintln!(
        "lock takeover over {} trials: min {:.3}s median {:.3}s max {:.3}s",
        samples.len(),
        samples[0],
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    );
    crate::report("lock_takeover_p99_s", (p99 * 1000.0).round() / 1000.0, "s");
    Ok(())
}
