//! gnomon benchmarks. `cargo run --release -p gnomon-bench -- NAME` runs one benchmark and
//! prints `RESULT NAME <value> <unit>` lines; `list` prints the known names.

// Benchmark modules (one per area).
// (modules)

type Benchmark = fn() -> anyhow::Result<()>;

/// Every benchmark by the name its issue gives it.
fn benchmarks() -> Vec<(&'static str, Benchmark)> {
    vec![
        // (benchmarks)
    ]
}

fn main() -> anyhow::Result<()> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "list".to_string());
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
