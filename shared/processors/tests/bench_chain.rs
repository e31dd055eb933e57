//! `cargo test --release -p gnomon-processors --test bench_chain -- --ignored --nocapture`

#[test]
#[ignore = "benchmark; run in release"]
fn six_processor_chain_ns_per_event() {
    let ns = gnomon_processors::bench_chain_ns_per_event(2_000_000);
    println!("RESULT processors_chain_ns_per_event {ns:.1}");
    assert!(ns.is_finite());
}
