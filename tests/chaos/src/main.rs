//! `gnomon-chaos --minutes N`: one chaos run against the `gnomon` binary built next to this
//! one (`GNOMON_BIN` overrides). Prints the timeline on stderr and the `RESULT` lines on
//! stdout; exits non-zero when a goal of issue 8 is missed.

use clap::Parser;
use gnomon_chaos::{run, ChaosConfig};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "Bounded-time chaos run of a real gnomon cluster")]
struct Args {
    /// Length of the disturbed phase in minutes (fractions allowed).
    #[arg(long, default_value_t = 5.0)]
    minutes: f64,
    /// Simulated devices (one target each).
    #[arg(long, default_value_t = 300)]
    devices: usize,
    /// Seconds between member SIGKILLs.
    #[arg(long, default_value_t = 20)]
    kill_every: u64,
    /// Seconds from a kill to the member's restart.
    #[arg(long, default_value_t = 5)]
    restart_after: u64,
    /// Session TTL of the locks, in seconds.
    #[arg(long, default_value_t = 2)]
    session_ttl: u64,
    /// Seed of the victim choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Do not restart nats-server.
    #[arg(long)]
    no_nats_restart: bool,
    /// Do not restart etcd.
    #[arg(long)]
    no_etcd_restart: bool,
    /// Also freeze a random member once, halfway through (SIGSTOP for session-ttl + 3 s).
    #[arg(long)]
    pause: bool,
    /// Copy every process log and config into this directory at the end.
    #[arg(long)]
    keep_dir: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if !(args.minutes.is_finite() && args.minutes > 0.0) {
        eprintln!("--minutes must be a positive number, not {}", args.minutes);
        return std::process::ExitCode::from(2);
    }
    let config = ChaosConfig {
        duration: Duration::from_secs_f64(args.minutes * 60.0),
        devices: args.devices,
        kill_every: Duration::from_secs(args.kill_every),
        restart_after: Duration::from_secs(args.restart_after),
        session_ttl: Duration::from_secs(args.session_ttl),
        seed: args.seed,
        restart_nats: !args.no_nats_restart,
        restart_etcd: !args.no_etcd_restart,
        pause_member: args.pause,
        keep_dir: args.keep_dir,
        ..ChaosConfig::default()
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let report = match runtime.block_on(run(&config)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("chaos run failed: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    for line in report.details() {
        eprintln!("{line}");
    }
    for line in report.result_lines() {
        println!("{line}");
    }
    let missed = report.missed_goals();
    if missed.is_empty() {
        eprintln!("all goals met");
        std::process::ExitCode::SUCCESS
    } else {
        for goal in &missed {
            eprintln!("MISSED: {goal}");
        }
        std::process::ExitCode::FAILURE
    }
}
