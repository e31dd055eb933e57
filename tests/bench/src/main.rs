//! gnomon benchmarks. `cargo run --release -p gnomon-bench -- NAME` runs one benchmark and
//! prints `RESULT NAME <value> <unit>` lines; `list` prints the known names.

/// The shipped binary's allocator (`services/gnomon/src/main.rs`): the data path's many
/// small allocations cost what they cost in production, not what glibc's malloc makes them.
/// As there, transparent huge pages are off for what a collector process runs
/// (`collector_*`) and on for the exporter's side.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Benchmark modules (one per area).
// (modules)
mod cluster;
mod collector;
mod coordination;
mod exporter;
mod gnmi_server;
mod latency;
mod remote_write;
mod simulator;

type Benchmark = fn() -> anyhow::Result<()>;

/// Every benchmark by the name its issue gives it.
fn benchmarks() -> Vec<(&'static str, Benchmark)> {
    vec![
        // (benchmarks)
        ("failover_p99_s", cluster::failover_p99_s),
        ("failover_p99_s_k8s", cluster::failover_p99_s_k8s),
        ("failover_10k_p99_s", cluster::failover_10k_p99_s),
        ("place_1000_targets_s", cluster::place_1000_targets_s),
        ("place_10k_targets_s", cluster::place_10k_targets_s),
        (
            "collector_rss_bytes_per_target",
            cluster::collector_rss_bytes_per_target,
        ),
        ("loader_1000_targets_s", cluster::loader_1000_targets_s),
        ("lock_takeover_p99_s", coordination::lock_takeover_p99_s),
        ("collector_cpu_us_per_update", collector::cpu_us_per_update),
        (
            "jetstream_collector_cpu_us_per_update",
            collector::jetstream_cpu_us_per_update,
        ),
        ("scrape_1m_series_s", exporter::scrape_1m_series),
        ("exporter_bytes_per_series", exporter::bytes_per_series),
        (
            "sharded_scrape_10m_series_s",
            exporter::sharded_scrape_10m_series,
        ),
        ("exporter_cpu_us_per_update", exporter::cpu_us_per_update),
        (
            "exporter_cpu_us_per_update_proto",
            exporter::cpu_us_per_update_proto,
        ),
        ("processors_ns_per_event", exporter::processors_ns_per_event),
        (
            "exporter_cpu_us_per_update_with_processors",
            exporter::cpu_us_per_update_with_processors,
        ),
        (
            "scrape_1m_series_value_tag_s",
            exporter::scrape_1m_series_value_tag,
        ),
        ("simulator_updates_per_s", simulator::updates_per_s),
        ("e2e_latency_p99_ms", latency::e2e_latency_p99_ms),
        ("remote_write_samples_per_s", remote_write::samples_per_s),
        (
            "gnmi_server_fanout_updates_per_s",
            gnmi_server::fanout_updates_per_s,
        ),
        (
            "gnmi_server_initial_sync_1m_paths_s",
            gnmi_server::initial_sync_1m_paths_s,
        ),
    ]
}

fn main() -> anyhow::Result<()> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "list".to_string());
    if name.starts_with("collector_") {
        if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
            eprintln!("transparent huge pages stay on: {error}");
        }
    }
    let all = benchmarks();
    if name == "list" {
        for (known, _) in &all {
            println!("{known}");
        }
        return Ok(());
    }
    match all.iter().find(|(known, _)| *known == name) {
        Some((_, run)) => run(),
        None => anyhow::bail!("unknown benchmark {name:?}; `list` shows the known ones"),
    }
}

/// Prints the line the issues ask for.
pub fn report(name: &str, value: f64, unit: &str) {
    println!("RESULT {name} {value} {unit}");
}
