//! Issue 16, runtime configuration as cluster state: subscriptions added, patched and
//! removed through one member's REST API, or through SIGHUP with an edited file, reach the
//! targets on every member of a real 3-member cluster (etcd, nats-server, `gnomon all`)
//! without restarting them. The simulator's `/stats` is the judge: a device's stream count
//! follows the subscriptions while its one client address (the connection) stays the same.

use gnomon_testkit::cluster::{DeviceStats, Harness};
use std::collections::BTreeMap;
use std::time::Duration;

const SIGHUP: i32 = 1;
const WAIT: Duration = Duration::from_secs(30);

/// Waits until every device has `streams` Subscribe streams from the same single client
/// address it had in `before` (`before` empty: any one address).
async fn wait_streams(
    h: &Harness,
    what: &str,
    streams: impl Fn(&str) -> usize,
    before: &BTreeMap<String, DeviceStats>,
) -> BTreeMap<String, DeviceStats> {
    h.wait_until(what, WAIT, || async {
        h.target_stats().await.is_ok_and(|stats| {
            stats.iter().all(|(target, device)| {
                device.subscriptions == streams(target)
                    && device.peers.len() == 1
                    && before
                        .get(target)
                        .is_none_or(|was| was.peers == device.peers)
            })
        })
    })
    .await;
    h.target_stats().await.unwrap()
}

async fn call(
    h: &Harness,
    method: reqwest::Method,
    member: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, String) {
    let api = h
        .members
        .iter()
        .find(|m| m.name == member)
        .map(|m| m.api())
        .unwrap();
    let mut request = h.http.request(method, format!("{api}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

fn subscription(name: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "paths": ["/interfaces/interface/state/counters"],
        "stream-mode": "sample",
        "sample-interval": "1s",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_change_at_runtime_on_every_member_without_restarts() {
    let mut h = Harness::start("etcd", 6).await.unwrap();
    let targets: BTreeMap<String, Vec<String>> =
        (0..6).map(|i| (format!("t{i}"), vec![])).collect();
    for member in ["g1", "g2"] {
        h.start_member(member, &[], &targets).unwrap();
    }
    // g3's file has no subscriptions at all (gnmic #787): it takes the cluster's.
    let file_subscriptions = "subscriptions:\n  counters:\n    paths: [/interfaces/interface/state/counters]\n    stream-mode: sample\n    sample-interval: 1s\n";
    let g3 = h.config("g3", &[], &targets);
    assert!(g3.contains(file_subscriptions), "{g3}");
    h.start_member_with_config("g3", &g3.replace(file_subscriptions, ""))
        .unwrap();
    // The member without subscriptions in its file collects with the cluster's (targets
    // reach it at placement or when it joins and the leader rebalances).
    // Settled: two targets per member (placement, or the rebalance when g3 joins later),
    // so no move changes a connection from here on.
    h.wait_until("two targets per member", WAIT, || async {
        h.owners().await.is_ok_and(|o| {
            ["g1", "g2", "g3"]
                .iter()
                .all(|m| o.values().filter(|owner| owner == m).count() == 2)
        })
    })
    .await;
    let start = wait_streams(&h, "one stream per device", |_| 1, &BTreeMap::new()).await;
    let owners = h.owners().await.unwrap();
    assert!(owners.values().any(|m| m == "g3"), "{owners:?}");

    // Added through g2's API: every device gets a second stream on its existing connection.
    let (status, body) = call(
        &h,
        reqwest::Method::POST,
        "g2",
        "/api/v1/config/subscriptions",
        Some(subscription("more")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_streams(
        &h,
        "two streams per device, same connections",
        |_| 2,
        &start,
    )
    .await;
    for member in ["g1", "g3"] {
        let (status, body) = call(
            &h,
            reqwest::Method::GET,
            member,
            "/api/v1/config/subscriptions",
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            listed.get("more").is_some() && listed.get("counters").is_some(),
            "{member}: {listed}"
        );
    }

    // PATCH through g3: t0 keeps only `more`, the others keep both.
    let (status, body) = call(
        &h,
        reqwest::Method::PATCH,
        "g3",
        "/api/v1/config/targets/t0/subscriptions",
        Some(serde_json::json!({"subscriptions": ["more"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_streams(
        &h,
        "t0 on one stream",
        |t| if t == "t0" { 1 } else { 2 },
        &start,
    )
    .await;
    let (status, body) = call(
        &h,
        reqwest::Method::PATCH,
        "g1",
        "/api/v1/config/targets/t0/subscriptions",
        Some(serde_json::json!({"subscriptions": ["nope"]})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("subscription nope does not exist"), "{body}");
    let (status, _) = call(
        &h,
        reqwest::Method::PATCH,
        "g1",
        "/api/v1/config/targets/t99/subscriptions",
        Some(serde_json::json!({"subscriptions": []})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &h,
        reqwest::Method::PATCH,
        "g1",
        "/api/v1/config/targets/t0/subscriptions",
        Some(serde_json::json!({"subscriptions": ["counters", "more"]})),
    )
    .await;
    assert_eq!(status, 200);
    wait_streams(&h, "t0 on two streams again", |_| 2, &start).await;

    // Removed through g1: only that subscription's streams close.
    let (status, body) = call(
        &h,
        reqwest::Method::DELETE,
        "g1",
        "/api/v1/config/subscriptions/more",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_streams(
        &h,
        "one stream per device again, same connections",
        |_| 1,
        &start,
    )
    .await;
    let (status, _) = call(
        &h,
        reqwest::Method::DELETE,
        "g1",
        "/api/v1/config/subscriptions/more",
        None,
    )
    .await;
    assert_eq!(status, 404);

    // A bad subscription is refused by name.
    let (status, body) = call(
        &h,
        reqwest::Method::POST,
        "g1",
        "/api/v1/config/subscriptions",
        Some(serde_json::json!({"name": "bad", "paths": ["/a"], "mode": "sometimes"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("mode"), "{body}");

    // SIGHUP with an edited file: g1's file gains a subscription, then loses it again.
    let file = h.dir.path().join("g1.yaml");
    let original = std::fs::read_to_string(&file).unwrap();
    let edited = original.replacen(
        "subscriptions:\n",
        "subscriptions:\n  extra:\n    paths: [/interfaces/interface/state/counters]\n    stream-mode: sample\n    sample-interval: 1s\n",
        1,
    );
    assert_ne!(edited, original);
    std::fs::write(&file, &edited).unwrap();
    h.member("g1").process.signal(SIGHUP);
    // t0 names its subscriptions since the PATCH (counters, more): a new one does not reach
    // it, as in gnmic; the others use every subscription.
    wait_streams(
        &h,
        "SIGHUP: two streams per device but t0, same connections",
        |t| if t == "t0" { 1 } else { 2 },
        &start,
    )
    .await;
    std::fs::write(&file, &original).unwrap();
    h.member("g1").process.signal(SIGHUP);
    wait_streams(
        &h,
        "SIGHUP: one stream per device, same connections",
        |_| 1,
        &start,
    )
    .await;

    // The effective configuration, with the runtime state.
    let (status, body) = call(&h, reqwest::Method::GET, "g2", "/api/v1/config", None).await;
    assert_eq!(status, 200, "{body}");
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        config["subscriptions"].get("counters").is_some(),
        "{config}"
    );
    assert!(config["subscriptions"].get("extra").is_none(), "{config}");
    assert!(config["outputs"].get("nats-out").is_some(), "{config}");
    let (status, body) = call(
        &h,
        reqwest::Method::GET,
        "g3",
        "/api/v1/config/outputs",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let outputs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(outputs["nats-out"]["type"], "nats", "{outputs}");
    let (status, body) = call(
        &h,
        reqwest::Method::GET,
        "g3",
        "/api/v1/config/clustering",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"g3\""), "{body}");
    let (status, body) = call(
        &h,
        reqwest::Method::GET,
        "g3",
        "/api/v1/config/nothing",
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
}
