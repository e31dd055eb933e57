//! `collector_cpu_us_per_update`: CPU the collector spends per update it receives from
//! the simulator (load mode, 16 updates per notification) and publishes to a real
//! nats-server in `proto` format; and `prost_decode_us_per_update`: what a plain prost
//! decode of the same SubscribeResponses costs, for comparison.
//!
//! `jetstream_collector_cpu_us_per_update`: the same through a `jetstream` output (acked
//! publishes into a memory stream), with the core-NATS figure of the same run next to it.
//!
//! The simulator runs as a separate process (this executable re-run with
//! `GNOMON_BENCH_SIMULATOR` set) so its CPU is not counted; the collector runs in this
//! process and is measured with getrusage.

use anyhow::Context;
use futures::StreamExt;
use gnomon_bus::{Bus, NatsBus, NatsOptions};
use gnomon_config::{load_config_with_env, ConfigFormat, GnomonConfig};
use gnomon_gnmi::proto::gnmi::{subscribe_response::Response, SubscribeResponse};
use gnomon_testkit::{free_port, wait_for_tcp, ChildProcess, NatsServer};
use prost::Message;
use std::time::{Duration, Instant};

const DEVICES: u32 = 2;
const UPDATES_PER_NOTIFICATION: u32 = 16;
const WARM_UP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(6);
const SIMULATOR_ENV: &str = "GNOMON_BENCH_SIMULATOR";

fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime writes into the timespec we pass.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The child role: serve load-mode devices until killed.
fn serve_simulator(listen: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let args = gnomon_simulator::SimulatorArgs {
            listen: listen.parse().context("simulator listen address")?,
            count: DEVICES,
            load: true,
            updates_per_notification: UPDATES_PER_NOTIFICATION,
            ..gnomon_simulator::SimulatorArgs::default()
        };
        let simulator = gnomon_simulator::Simulator::start(args).await?;
        println!("simulator ready on {:?}", simulator.device_addresses());
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// Starts the load-mode simulator as a child process (this executable, re-run as `bench`
/// with the simulator role); returns it and the `targets` section for its devices.
fn start_simulator(logs: &std::path::Path, bench: &str) -> anyhow::Result<(ChildProcess, String)> {
    let first_port = loop {
        let port = free_port();
        if port < 65000 && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            break port;
        }
    };
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .arg(bench)
        .env(SIMULATOR_ENV, format!("127.0.0.1:{first_port}"));
    let simulator = ChildProcess::spawn("simulator", command, logs)?;
    for i in 0..DEVICES as u16 {
        wait_for_tcp(
            &format!("127.0.0.1:{}", first_port + i),
            Duration::from_secs(20),
        )
        .with_context(|| format!("simulator did not start: {}", simulator.log()))?;
    }
    let targets: String = (0..DEVICES as u16)
        .map(|i| format!("  dev{i}:\n    address: 127.0.0.1:{}\n", first_port + i))
        .collect();
    Ok((simulator, targets))
}

/// The collector's configuration: the simulator's devices, one 1 s counters subscription,
/// and `outputs` (the section's body).
fn collector_yaml(targets: &str, outputs: &str) -> String {
    format!(
        "insecure: true\nencoding: proto\ntargets:\n{targets}subscriptions:\n  counters:\n    paths: [\"/interfaces/interface/state/counters\"]\n    stream-mode: sample\n    sample-interval: 1s\noutputs:\n{outputs}"
    )
}

/// Sum of `gnomon_output_dropped_total` so far (every output, every reason).
fn dropped_so_far() -> f64 {
    gnomon_telemetry::metrics_handle()
        .render()
        .lines()
        .filter(|l| l.starts_with("gnomon_output_dropped_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs a collector with `config` against the simulator: warm-up, then CPU per update
/// published (updates received minus those in dropped messages). Returns the running
/// collector (the caller shuts it down) and the figure.
async fn measure(
    config: GnomonConfig,
    simulator: &ChildProcess,
) -> anyhow::Result<(gnomon_collector::CollectorHandle, f64)> {
    let collector = gnomon_collector::CollectorHandle::new(config.clone())?;
    for name in config.targets.keys() {
        collector.start_target(name, None)?;
    }
    let updates = || {
        collector
            .targets()
            .values()
            .map(|t| t.status.updates)
            .sum::<u64>()
    };
    tokio::time::sleep(WARM_UP).await;
    let dropped_before = dropped_so_far();
    let (updates_before, cpu_before, started) = (updates(), process_cpu(), Instant::now());
    tokio::time::sleep(MEASURE).await;
    let (updates_after, cpu_after) = (updates(), process_cpu());
    let elapsed = started.elapsed();
    let dropped = dropped_so_far() - dropped_before;
    let received = updates_after - updates_before;
    anyhow::ensure!(received > 0, "no updates received: {}", simulator.log());
    let published = (received as f64 - dropped * f64::from(UPDATES_PER_NOTIFICATION)).max(1.0);
    let cpu_us = (cpu_after - cpu_before).as_secs_f64() * 1e6 / published;
    eprintln!(
        "collector: {received} updates in {elapsed:?} ({:.0}/s), {dropped} messages dropped, CPU {:?}",
        received as f64 / elapsed.as_secs_f64(),
        cpu_after - cpu_before
    );
    Ok((collector, cpu_us))
}

/// `jetstream_collector_cpu_us_per_update`, with `collector_cpu_us_per_update` of the same
/// run (same simulator, same nats-server, one collector after the other).
pub fn jetstream_cpu_us_per_update() -> anyhow::Result<()> {
    if let Ok(listen) = std::env::var(SIMULATOR_ENV) {
        return serve_simulator(&listen);
    }
    let logs = tempfile::tempdir()?;
    let nats = NatsServer::start_jetstream()?;
    let (simulator, targets) =
        start_simulator(logs.path(), "jetstream_collector_cpu_us_per_update")?;
    let core = collector_yaml(
        &targets,
        &format!(
            "  nats:\n    type: nats\n    address: {}\n    subject-prefix: bench\n    format: proto\n    buffer-size: 20000\n",
            nats.address()
        ),
    );
    let jetstream = collector_yaml(
        &targets,
        &format!(
            "  js:\n    type: jetstream\n    address: {}\n    stream: bench\n    subject-format: target.subscription\n    format: proto\n    buffer-size: 20000\n    create-stream:\n      storage: memory\n      max-msgs: 200000\n",
            nats.address()
        ),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (core_us, jetstream_us) = runtime.block_on(async {
        let mut figures = Vec::new();
        for yaml in [&core, &jetstream] {
            let config = load_config_with_env(yaml, ConfigFormat::Yaml, &[])?;
            let (collector, cpu_us) = measure(config, &simulator).await?;
            collector.shutdown().await;
            figures.push(cpu_us);
        }
        Ok::<_, anyhow::Error>((figures[0], figures[1]))
    })?;
    drop(simulator);
    crate::report("jetstream_collector_cpu_us_per_update", jetstream_us, "us");
    crate::report("collector_cpu_us_per_update", core_us, "us");
    Ok(())
}

pub fn cpu_us_per_update() -> anyhow::Result<()> {
    if let Ok(listen) = std::env::var(SIMULATOR_ENV) {
        return serve_simulator(&listen);
    }
    let logs = tempfile::tempdir()?;
    let nats = NatsServer::start()?;
    let (simulator, targets) = start_simulator(logs.path(), "collector_cpu_us_per_update")?;
    let yaml = collector_yaml(
        &targets,
        &format!(
            "  nats:\n    type: nats\n    address: {}\n    subject-prefix: bench\n    format: proto\n    buffer-size: 20000\n",
            nats.address()
        ),
    );
    let config = load_config_with_env(&yaml, ConfigFormat::Yaml, &[])?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let simulator_ref = &simulator;
    let (cpu_us, decode_us) = runtime.block_on(async move {
        let (collector, cpu_us) = measure(config, simulator_ref).await?;

        // Grab the same SubscribeResponses from NATS and time a plain prost decode.
        let bus = NatsBus::connect(&NatsOptions::new(nats.url())).await?;
        let mut subscription = bus.subscribe("bench.>", None).await?;
        let mut payloads = Vec::with_capacity(20_000);
        let deadline = Instant::now() + Duration::from_secs(10);
        while payloads.len() < 20_000 && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(1), subscription.next()).await {
                Ok(Some(message)) => payloads.push(message.payload),
                Ok(None) => break,
                Err(_) => {}
            }
        }
        collector.shutdown().await;
        anyhow::ensure!(!payloads.is_empty(), "no messages on NATS");
        let decode_us = tokio::task::spawn_blocking(move || {
            let mut decoded_updates = 0u64;
            let start = thread_cpu();
            for _ in 0..5 {
                for payload in &payloads {
                    if let Ok(SubscribeResponse {
                        response: Some(Response::Update(n)),
                        ..
                    }) = SubscribeResponse::decode(payload.clone())
                    {
                        decoded_updates += n.update.len() as u64;
                    }
                }
            }
            (thread_cpu() - start).as_secs_f64() * 1e6 / decoded_updates.max(1) as f64
        })
        .await?;
        Ok::<_, anyhow::Error>((cpu_us, decode_us))
    })?;
    drop(simulator);
    crate::report("collector_cpu_us_per_update", cpu_us, "us");
    crate::report("prost_decode_us_per_update", decode_us, "us");
    Ok(())
}
