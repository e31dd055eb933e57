//! A micro-benchmark of a typical chain, for `gnomon-bench` and the crate's
//! own ignored test.

use gnomon_gnmi::event::Event;
use serde_json::json;

use crate::record::Record;
use crate::Processors;

/// The six-processor chain of the goal: value names shortened
/// (event-strings path-base), a value deleted, a tag added, counters
/// converted to integers, a drop that matches nothing, a to-tag that matches
/// nothing.
pub fn bench_processors() -> Processors {
    let config = json!({
        "short-names": {"event-strings": {
            "value-names": [".*"],
            "transforms": [{"path-base": {"apply-on": "name"}}]
        }},
        "no-discards": {"event-delete": {"value-names": ["-discards$"]}},
        "collector-tag": {"event-add-tag": {"value-names": ["octets$"], "add": {"collector": "gnomon"}}},
        "to-int": {"event-convert": {"value-names": ["octets$"], "type": "int"}},
        "drop-decommissioned": {"event-drop": {"tags": ["^decommissioned$"]}},
        "status-tag": {"event-to-tag": {"value-names": ["oper-status$"]}}
    });
    match Processors::from_config(&config) {
        Ok(p) => p,
        Err(e) => panic!("benchmark config is invalid: {e}"),
    }
}

/// The chain order used by [`bench_chain_ns_per_event`].
pub const BENCH_CHAIN: [&str; 6] = [
    "short-names",
    "no-discards",
    "collector-tag",
    "to-int",
    "drop-decommissioned",
    "status-tag",
];

/// A realistic interface-counter event: 5 tags, 3 values.
pub fn bench_event(i: usize) -> Event {
    bench_event_with(i, 3)
}

/// An interface-counter event with 5 tags and `values` (1–3) values: in-octets,
/// out-octets, in-discards.
pub fn bench_event_with(i: usize, values: usize) -> Event {
    let mut e = Event {
        name: "interfaces".into(),
        timestamp: 1_700_000_000_000_000_000 + i as i64,
        ..Default::default()
    };
    for (k, v) in [
        ("interface_name", format!("ethernet-1/{}", i % 48 + 1)),
        ("source", "leaf1:57400".to_string()),
        ("subscription-name", "interfaces".to_string()),
        ("host", "leaf1".to_string()),
        ("site", "lab".to_string()),
    ] {
        e.tags.insert(k.to_string(), v);
    }
    let p = "/interfaces/interface/state/counters/";
    e.values
        .insert(format!("{p}in-octets"), json!((i * 1000).to_string()));
    if values >= 2 {
        e.values
            .insert(format!("{p}out-octets"), json!((i * 2000).to_string()));
    }
    if values >= 3 {
        e.values.insert(format!("{p}in-discards"), json!(0));
    }
    e
}

/// Applies the six-processor chain to `iterations` records (in batches of
/// 4, like the updates of one notification) and returns the mean cost per
/// event in nanoseconds of this thread's CPU time (so other load on the
/// machine does not count). Building the input records is not timed.
pub fn bench_chain_ns_per_event(iterations: usize) -> f64 {
    bench_names_ns_per_event(&BENCH_CHAIN, 3, iterations)
}

/// Like [`bench_chain_ns_per_event`] for a part of the chain and events
/// with `values` values (profiling).
pub fn bench_names_ns_per_event(names: &[&str], values: usize, iterations: usize) -> f64 {
    run_bench(names, values, iterations, |chain, batches| {
        let mut records: Vec<Vec<Record>> = batches
            .iter()
            .map(|b| b.iter().map(Record::from).collect())
            .collect();
        let start = thread_cpu_ns();
        for batch in &mut records {
            chain.apply_records(batch);
        }
        let elapsed = thread_cpu_ns().saturating_sub(start);
        drop(std::hint::black_box(records));
        elapsed
    })
}

/// The six-processor chain applied to gnmic [`Event`]s through
/// [`crate::Chain::apply`]: the records are made from the events and turned
/// back into events inside the timed part (what a caller holding events
/// pays).
pub fn bench_chain_with_event_conversion_ns_per_event(iterations: usize) -> f64 {
    run_bench(&BENCH_CHAIN, 3, iterations, |chain, batches| {
        let mut events = batches.to_vec();
        let start = thread_cpu_ns();
        for batch in &mut events {
            chain.apply(batch);
        }
        let elapsed = thread_cpu_ns().saturating_sub(start);
        drop(std::hint::black_box(events));
        elapsed
    })
}

fn run_bench(
    names: &[&str],
    values: usize,
    iterations: usize,
    mut timed: impl FnMut(&mut crate::Chain, &[Vec<Event>]) -> u128,
) -> f64 {
    const BATCH: usize = 4;
    // Small enough that freshly built events are still in cache (about 300 kB),
    // as freshly decoded ones are when an output applies its chain; large
    // enough that reading the thread's CPU clock (a system call, 0.5 µs in
    // a VM) around each pass costs a few ns per event, not tens.
    const POOL: usize = 64;
    let procs = bench_processors();
    let Ok(mut chain) = procs.chain(names) else {
        return f64::NAN;
    };
    let template: Vec<Vec<Event>> = (0..POOL)
        .map(|b| {
            (0..BATCH)
                .map(|i| bench_event_with(b * BATCH + i, values))
                .collect()
        })
        .collect();
    // Warm up caches and the allocator.
    timed(&mut chain, &template);
    let mut done = 0usize;
    let mut elapsed = 0u128;
    while done < iterations.max(1) {
        elapsed += timed(&mut chain, &template);
        done += POOL * BATCH;
    }
    elapsed as f64 / done as f64
}

/// CPU time of this thread: on a shared machine, wall time would also count
/// the time other processes held the core.
fn thread_cpu_ns() -> u128 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}
