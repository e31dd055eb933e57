//! `cargo test --release -p gnomon-processors --test bench_chain -- --ignored --nocapture --test-threads=1`

use gnomon_processors::bench::{bench_names_ns_per_event, BENCH_CHAIN};

#[test]
#[ignore = "benchmark; run in release"]
fn six_processor_chain_ns_per_event() {
    let ns = gnomon_processors::bench_chain_ns_per_event(2_000_000);
    println!("RESULT processors_chain_ns_per_event {ns:.1}");
    println!(
        "RESULT processors_chain_with_event_conversion_ns_per_event {:.1}",
        gnomon_processors::bench::bench_chain_with_event_conversion_ns_per_event(1_000_000)
    );
    for values in [1, 2] {
        println!(
            "RESULT processors_chain_ns_per_event_{values}_values {:.1}",
            bench_names_ns_per_event(&BENCH_CHAIN, values, 2_000_000)
        );
    }
    assert!(ns.is_finite());
}

#[test]
#[ignore = "benchmark; run in release"]
fn per_processor_breakdown() {
    println!(
        "RESULT empty {:.1}",
        bench_names_ns_per_event(&[], 3, 1_000_000)
    );
    for name in BENCH_CHAIN {
        println!(
            "RESULT {name} 3v {:.1} 1v {:.1}",
            bench_names_ns_per_event(&[name], 3, 1_000_000),
            bench_names_ns_per_event(&[name], 1, 1_000_000)
        );
    }
}
