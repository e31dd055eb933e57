//! Issue 16, target discovery as cluster state, on a real 3-member cluster (etcd,
//! nats-server, `gnomon all`) with gnmic's file loader: the leader follows the file, every
//! target it lists is collected exactly once, removed ones stop and free their locks, a new
//! leader keeps following the file, and a broken file keeps the current set. The
//! simulator's `/stats` is the judge.

use gnomon_testkit::cluster::{exactly_one_each, Harness};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Writes the loader's file atomically (a reader never sees it half written).
fn write_targets(path: &Path, h: &Harness, targets: &[usize]) {
    let mut text = String::new();
    for i in targets {
        text.push_str(&format!("t{i}:\n  address: {}\n", h.devices[*i]));
    }
    write_atomically(path, &text);
}

fn write_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

fn names(targets: &[usize]) -> Vec<String> {
    targets.iter().map(|i| format!("t{i}")).collect()
}

/// Exactly `targets` are collected, each by one subscriber; every other device has none.
async fn only_these_collected(h: &Harness, targets: &[usize]) -> bool {
    let wanted: BTreeSet<String> = names(targets).into_iter().collect();
    h.target_stats().await.is_ok_and(|stats| {
        exactly_one_each(&stats, &names(targets))
            && stats
                .iter()
                .filter(|(t, _)| !wanted.contains(*t))
                .all(|(_, s)| s.subscriptions == 0)
    })
}

async fn loader_errors(h: &Harness, member: &str) -> f64 {
    let Some(member) = h.members.iter().find(|m| m.name == member) else {
        return 0.0;
    };
    let Ok(response) = h.http.get(format!("{}/metrics", member.api())).send().await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("gnomon_loader_load_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_loader_drives_the_cluster_through_a_leader_change() {
    let mut h = Harness::start("etcd", 8).await.unwrap();
    let file = h.dir.path().join("targets.yaml");
    write_targets(&file, &h, &[0, 1, 2, 3]);
    let loader = format!(
        "loader:\n  type: file\n  path: {}\n  interval: 1s\n  enable-metrics: true\n",
        file.display()
    );
    for member in ["g1", "g2", "g3"] {
        // No target in the members' files: every target comes from the loader.
        let config = h.config(member, &[], &BTreeMap::new()) + &loader;
        h.start_member_with_config(member, &config).unwrap();
    }
    let stop_observer = tokio_util::sync::CancellationToken::new();
    let observer = {
        let probe = h.duplicate_probe();
        let stop = stop_observer.clone();
        tokio::spawn(async move { probe.worst_duplicate(stop).await })
    };
    h.wait_until("the file's 4 targets collected once", WAIT, || {
        only_these_collected(&h, &[0, 1, 2, 3])
    })
    .await;

    // Added to the file: collected within the interval (+ placement).
    write_targets(&file, &h, &[0, 1, 2, 3, 4, 5]);
    let took = h
        .wait_until("t4 and t5 collected once", WAIT, || {
            only_these_collected(&h, &[0, 1, 2, 3, 4, 5])
        })
        .await;
    println!("targets added to the file collected after {took:?} (interval 1 s)");

    // Removed from the file: its subscription stops and its lock is freed.
    write_targets(&file, &h, &[1, 2, 3, 4, 5]);
    h.wait_until("t0 stopped and unlocked", WAIT, || async {
        only_these_collected(&h, &[1, 2, 3, 4, 5]).await
            && h.owners().await.is_ok_and(|o| !o.contains_key("t0"))
    })
    .await;

    // The leader dies; the new one keeps following the file.
    let leader = h.cluster().await.unwrap()["leader"]
        .as_str()
        .unwrap()
        .to_string();
    h.member(&leader).process.kill();
    h.wait_until("a new leader", WAIT, || async {
        h.cluster()
            .await
            .ok()
            .and_then(|c| c["leader"].as_str().map(str::to_string))
            .is_some_and(|l| !l.is_empty() && l != leader)
    })
    .await;
    write_targets(&file, &h, &[1, 2, 3, 4, 5, 6]);
    h.wait_until("t6 collected once after the leader change", WAIT, || {
        only_these_collected(&h, &[1, 2, 3, 4, 5, 6])
    })
    .await;
    let new_leader = h.cluster().await.unwrap()["leader"]
        .as_str()
        .unwrap()
        .to_string();

    // A broken file: the error is reported (log and metric); the targets stay.
    let before = loader_errors(&h, &new_leader).await;
    write_atomically(&file, "t1: [this is: not, a target map\n");
    h.wait_until("the broken file reported", WAIT, || async {
        loader_errors(&h, &new_leader).await > before
    })
    .await;
    assert!(
        only_these_collected(&h, &[1, 2, 3, 4, 5, 6]).await,
        "a broken file changed the collected set"
    );
    let log = h.member(&new_leader).process.log();
    assert!(
        log.contains("loader read failed; keeping the last targets"),
        "{log}"
    );
    // Fixed again: followed again.
    write_targets(&file, &h, &[1, 2, 3, 4, 5, 6, 7]);
    h.wait_until("t7 collected once after the fix", WAIT, || {
        only_these_collected(&h, &[1, 2, 3, 4, 5, 6, 7])
    })
    .await;

    let delay = h.delay;
    drop(h);
    stop_observer.cancel();
    let worst = observer.await.unwrap();
    println!("longest double subscription: {worst:?}");
    assert!(
        worst <= delay + Duration::from_millis(500),
        "a target had two subscribers for {worst:?}"
    );
}
