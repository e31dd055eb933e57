//! Issue 17, sharded exporters, on real processes: 200 simulator devices → a clustered
//! `gnomon all` (collector and leader, targets in etcd) → nats-server → three
//! `gnomon exporter`s sharing two shards (`service-registration.shards: 2`) → a real
//! Prometheus 2.42 finding both shard holders through http_sd. Then a shard holder is
//! SIGKILLed and the spare takes its shard.

use gnomon_exporter::shard::shard_of;
use gnomon_testkit::cluster::{Harness, Store};
use gnomon_testkit::{free_port, spawn_gnomon, wait_for_tcp, ChildProcess, PrometheusServer};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const DEVICES: usize = 200;
const SHARDS: u32 = 2;
const METRIC: &str = "interfaces_interface_state_counters_in_octets";

struct Exporter {
    process: ChildProcess,
    listen: String,
}

/// The `source` labels of the series named [`METRIC`] in an exposition.
fn sources(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with(METRIC))
        .filter_map(|l| l.split("source=\"").nth(1)?.split('"').next())
        .map(str::to_string)
        .collect()
}

async fn scrape(http: &reqwest::Client, listen: &str) -> Option<BTreeSet<String>> {
    let text = http
        .get(format!("http://{listen}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(sources(&text))
}

/// `/sd` of one exporter: registered `host:port` → shard.
async fn sd_shards(http: &reqwest::Client, listen: &str) -> Option<BTreeMap<String, String>> {
    let groups: serde_json::Value = http
        .get(format!("http://{listen}/sd"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    groups
        .as_array()?
        .iter()
        .map(|g| {
            Some((
                g["targets"][0].as_str()?.to_string(),
                g["labels"]["__meta_gnomon_shard"].as_str()?.to_string(),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_three_exporters_each_target_on_exactly_one_shard() {
    let mut harness = Harness::start("etcd", DEVICES).await.unwrap();
    let etcd = match &harness.store {
        Store::Etcd(etcd) => etcd.address(),
        _ => unreachable!("started with etcd"),
    };
    let targets: BTreeMap<String, Vec<String>> = (0..DEVICES)
        .map(|i| (format!("t{i}"), Vec::new()))
        .collect();
    harness.start_member("c1", &[], &targets).unwrap();
    let all: BTreeSet<String> = targets.keys().cloned().collect();
    let of_shard = |shard: u32| -> BTreeSet<String> {
        all.iter()
            .filter(|t| shard_of(t, SHARDS) == shard)
            .cloned()
            .collect()
    };

    let ttl = Duration::from_secs(2);
    let mut exporters = Vec::new();
    for name in ["e1", "e2", "e3"] {
        let listen = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "clustering:\n  cluster-name: {cluster}\n  instance-name: {name}\n  locker: {{type: etcd, address: \"{etcd}\", session-ttl: {ttl}s, delay: 0s}}\n\
             outputs:\n  prom:\n    type: prometheus\n    listen: \"{listen}\"\n    service-registration: {{name: gnomon-prometheus, use-lock: true, shards: {SHARDS}}}\n\
             inputs:\n  nats-in: {{type: nats, address: \"{nats}\", subject: \"telemetry.>\", format: proto, outputs: [prom]}}\n",
            cluster = gnomon_testkit::cluster::CLUSTER,
            ttl = ttl.as_secs(),
            nats = harness.nats.address(),
        );
        let process = spawn_gnomon(harness.dir.path(), name, "exporter", &config).unwrap();
        wait_for_tcp(&listen, Duration::from_secs(20)).unwrap();
        exporters.push(Exporter { process, listen });
    }
    let http = harness.http.clone();

    // Both shards registered (with their shard), every exporter's /sd agrees.
    let started = Instant::now();
    let registered: BTreeMap<String, String> = loop {
        let mut lists = Vec::new();
        for e in &exporters {
            lists.push(sd_shards(&http, &e.listen).await);
        }
        if let Some(Some(first)) = lists.first() {
            let shards: BTreeSet<&String> = first.values().collect();
            if first.len() == 2
                && shards.len() == 2
                && lists.iter().all(|l| l.as_ref() == Some(first))
            {
                break first.clone();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "two shard holders never registered: {lists:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let spare = exporters
        .iter()
        .position(|e| !registered.contains_key(&e.listen))
        .expect("one exporter is the spare");

    // Each holder serves exactly its shard's targets; together all 200; the spare nothing.
    let started = Instant::now();
    loop {
        let mut served = Vec::new();
        for e in &exporters {
            served.push(scrape(&http, &e.listen).await.unwrap_or_default());
        }
        let exact = exporters
            .iter()
            .zip(&served)
            .all(|(e, got)| match registered.get(&e.listen) {
                Some(shard) => *got == of_shard(shard.parse().unwrap()),
                None => got.is_empty(),
            });
        if exact {
            let union: BTreeSet<&String> = served.iter().flatten().collect();
            assert_eq!(union.len(), DEVICES);
            let total: usize = served.iter().map(BTreeSet::len).sum();
            assert_eq!(total, DEVICES, "a target on two shards");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "shards never served exactly: {:?} (expected {} + {})",
            served.iter().map(BTreeSet::len).collect::<Vec<_>>(),
            of_shard(0).len(),
            of_shard(1).len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Prometheus discovers both shards through http_sd and scrapes both.
    let sd = exporters
        .iter()
        .map(|e| {
            format!(
                "      - url: http://{}/sd\n        refresh_interval: 1s\n",
                e.listen
            )
        })
        .collect::<String>();
    let prometheus = PrometheusServer::start(&format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: gnomon\n    honor_labels: true\n    relabel_configs:\n      - source_labels: [__meta_gnomon_shard]\n        target_label: shard\n    http_sd_configs:\n{sd}"
    ))
    .unwrap();
    let (prometheus, http) = (&prometheus, &http);
    let query = |q: String| async move { prometheus.query(http, &q).await };
    let started = Instant::now();
    loop {
        let up = query("up{job=\"gnomon\"} == 1".into())
            .await
            .unwrap_or_default();
        let shards: BTreeSet<String> = up
            .iter()
            .filter_map(|s| s["metric"]["shard"].as_str().map(str::to_string))
            .collect();
        let per_source = query(format!(
            "count by (source) (count by (source, instance) ({METRIC}))"
        ))
        .await
        .unwrap_or_default();
        let once = per_source.iter().all(|s| s["value"][1] == "1");
        if up.len() == 2 && shards.len() == 2 && per_source.len() == DEVICES && once {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "Prometheus does not scrape both shards: up {up:?}, {} sources",
            per_source.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // SIGKILL shard 0's holder: the spare serves shard 0 (measured against TTL + 2 s).
    let victim = exporters
        .iter()
        .position(|e| registered.get(&e.listen).map(String::as_str) == Some("0"))
        .unwrap();
    exporters[victim].process.kill();
    let killed = Instant::now();
    let spare_listen = exporters[spare].listen.clone();
    let expected = of_shard(0);
    loop {
        let served = scrape(http, &spare_listen).await.unwrap_or_default();
        let listed = sd_shards(http, &spare_listen).await.unwrap_or_default();
        if served == expected && listed.get(&spare_listen).map(String::as_str) == Some("0") {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the spare never took shard 0: serves {} of {}, /sd {listed:?}",
            served.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "shard 0 served by the spare {:?} after SIGKILL (goal: session TTL {ttl:?} + 2 s)",
        killed.elapsed()
    );
}
