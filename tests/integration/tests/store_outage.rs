//! Coordination store outage (issue 8): with the store gone, a member stops subscribing once
//! it can no longer prove it holds a target's lock — within the session TTL of the outage, so
//! before the store could hand the lock to anyone else — keeps serving its API, and the
//! cluster collects every target again, with new fencing tokens, after the store returns.
//! Outages: etcd killed and restarted on its data; etcd and the Consul double frozen with
//! SIGSTOP (a partition: connections stay open, nothing answers) and resumed.

use gnomon_testkit::cluster::Harness;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Target → fencing token of its current lock, from the members' target lists.
async fn fencing_tokens(h: &Harness) -> BTreeMap<String, u64> {
    let mut tokens = BTreeMap::new();
    for member in &h.members {
        let Ok(response) = h
            .http
            .get(format!("{}/api/v1/targets", member.api()))
            .send()
            .await
        else {
            continue;
        };
        let Ok(targets) = response.json::<serde_json::Value>().await else {
            continue;
        };
        for (name, state) in targets.as_object().into_iter().flatten() {
            if let Some(token) = state["fencing-token"].as_u64().filter(|t| *t > 0) {
                tokens.insert(name.clone(), token);
            }
        }
    }
    tokens
}

#[derive(Clone, Copy, Debug)]
enum Outage {
    /// SIGKILL, then a restart on the same data directory.
    KillAndRestart,
    /// SIGSTOP, then SIGCONT.
    Freeze,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_and_restarted() {
    members_stop_during_the_outage_and_resume_after_it("etcd", Outage::KillAndRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_frozen() {
    members_stop_during_the_outage_and_resume_after_it("etcd", Outage::Freeze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_double_frozen() {
    members_stop_during_the_outage_and_resume_after_it("consul", Outage::Freeze).await;
}

async fn members_stop_during_the_outage_and_resume_after_it(store: &str, outage_kind: Outage) {
    let mut h = Harness::start(store, 9).await.unwrap();
    let targets: BTreeMap<String, Vec<String>> =
        (0..9).map(|i| (format!("t{i}"), Vec::new())).collect();
    let names: Vec<String> = targets.keys().cloned().collect();
    for member in ["g1", "g2", "g3"] {
        h.start_member(member, &[], &targets).unwrap();
    }
    let stop_probe = tokio_util::sync::CancellationToken::new();
    let probe = {
        let probe = h.duplicate_probe();
        let stop = stop_probe.clone();
        tokio::spawn(async move { probe.worst_duplicate(stop).await })
    };
    h.wait_until(
        "every target with exactly one subscriber",
        Duration::from_secs(30),
        || async { h.collected_once(&names).await },
    )
    .await;
    // A member reports a target's token once its subscription is under way, which can trail
    // the simulator seeing the subscriber by a moment.
    let before = fencing_tokens_of_all(&h, names.len()).await;

    // The outage. The last renewal the store acknowledged was at or before this instant, so
    // every holder must have stopped by `outage + ttl`: after that the store, were it
    // reachable, could expire the session and give the lock away.
    match outage_kind {
        Outage::KillAndRestart => h.store_stop(),
        Outage::Freeze => h.store_pause(),
    }
    let outage = Instant::now();
    h.wait_until(
        "no subscriber left once the locks can no longer be proven",
        h.ttl + Duration::from_secs(2),
        || async {
            h.target_stats()
                .await
                .is_ok_and(|s| s.values().all(|d| d.subscriptions == 0))
        },
    )
    .await;
    let stopped_after = outage.elapsed();
    // Bounded by the TTL plus the simulator's view of a cancelled stream (poll is 100 ms).
    assert!(
        stopped_after <= h.ttl + Duration::from_millis(1500),
        "subscriptions stopped {stopped_after:?} into the outage; TTL is {:?}",
        h.ttl
    );

    // The members keep serving their API while the store is away.
    for member in &h.members {
        let response = h
            .http
            .get(format!("{}/api/v1/targets", member.api()))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", member.name);
    }
    // Stay away past the TTL on the members' side and well past their retry timers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = h.target_stats().await.unwrap();
    assert!(
        still.values().all(|d| d.subscriptions == 0),
        "someone subscribed without a store: {still:?}"
    );

    match outage_kind {
        Outage::KillAndRestart => h.store_restart().unwrap(),
        Outage::Freeze => h.store_resume(),
    }
    h.wait_until(
        "every target collected again after the store returned",
        Duration::from_secs(30),
        || async { h.collected_once(&names).await },
    )
    .await;
    let after = fencing_tokens_of_all(&h, names.len()).await;
    for (target, token) in &after {
        assert!(
            *token > before[target],
            "{target}: fencing token {token} after the outage, {} before",
            before[target]
        );
    }
    if std::env::var_os("GNOMON_TEST_LOGS").is_some() {
        println!("{}", h.logs());
    }
    stop_probe.cancel();
    let worst = probe.await.unwrap();
    assert_eq!(worst, Duration::ZERO, "a device had two subscribers");
}

/// Waits until the members report a lock for each of `count` targets.
async fn fencing_tokens_of_all(h: &Harness, count: usize) -> BTreeMap<String, u64> {
    let start = Instant::now();
    loop {
        let tokens = fencing_tokens(h).await;
        if tokens.len() == count {
            return tokens;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "members report locks for {tokens:?} only\n{}",
            h.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
