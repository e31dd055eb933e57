//! Issue 5 acceptance on real etcd (and the Consul and Kubernetes API doubles) and
//! nats-server with `gnomon all` processes; the
//! simulator's `/stats` judges who subscribes to which device.

use futures::StreamExt;
use gnomon_bus::{Bus, NatsBus, NatsOptions};
use gnomon_gnmi::proto::gnmi::{subscribe_response::Response, SubscribeResponse};
use gnomon_testkit::cluster::{exactly_one_each, Harness};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Per target: (fencing token, notification timestamp in ns) in arrival order.
type Samples = Arc<Mutex<BTreeMap<String, Vec<(u64, i64)>>>>;

async fn record_samples(nats: &str) -> anyhow::Result<Samples> {
    let bus = NatsBus::connect(&NatsOptions::new(nats)).await?;
    let mut subscription = bus.subscribe("telemetry.>", None).await?;
    let samples: Samples = Arc::default();
    let sink = samples.clone();
    tokio::spawn(async move {
        let _bus = bus;
        while let Some(message) = subscription.next().await {
            let Ok(response) = SubscribeResponse::decode(message.payload.as_ref()) else {
                continue;
            };
            let Some(Response::Update(notification)) = response.response else {
                continue;
            };
            let Some(target) = message.headers.target.clone() else {
                continue;
            };
            sink.lock().unwrap().entry(target).or_default().push((
                message.headers.fencing_token.unwrap_or(0),
                notification.timestamp,
            ));
        }
    });
    Ok(samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd() {
    cluster_places_fails_over_drains_and_follows_runtime_changes("etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_consul_double() {
    cluster_places_fails_over_drains_and_follows_runtime_changes("consul").await;
}

/// `type: k8s` against the Kubernetes API double, the harness acting as the EndpointSlice
/// controller (members are the ready endpoints of `it-gnmic-api`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_k8s_double() {
    cluster_places_fails_over_drains_and_follows_runtime_changes("k8s").await;
}

async fn cluster_places_fails_over_drains_and_follows_runtime_changes(store: &str) {
    let mut h = Harness::start(store, 31).await.unwrap();
    let pinned = vec![
        "cluster-name=it".to_string(),
        "instance-name=g3".to_string(),
    ];
    let targets: BTreeMap<String, Vec<String>> = (0..30)
        .map(|i| (format!("t{i}"), if i < 2 { pinned.clone() } else { vec![] }))
        .collect();
    let names: Vec<String> = targets.keys().cloned().collect();
    let samples = record_samples(&h.nats.url()).await.unwrap();

    // g3 starts once g1 and g2 collect everything: the targets pinned to it are placed
    // elsewhere first.
    for member in ["g1", "g2"] {
        h.start_member(member, &[], &targets).unwrap();
    }
    // Observer of double subscriptions, for the whole test.
    let stop_observer = tokio_util::sync::CancellationToken::new();
    let probe = h.duplicate_probe();
    let observer = {
        let stop = stop_observer.clone();
        tokio::spawn(async move { probe.worst_duplicate(stop).await })
    };
    h.wait_until(
        "30 targets with exactly one subscriber",
        Duration::from_secs(30),
        || async {
            h.target_stats()
                .await
                .map(|s| exactly_one_each(&s, &names))
                .unwrap_or(false)
        },
    )
    .await;
    // Streaming follows the lock, but a store that judges leases by their renewal time
    // (Kubernetes) can list one as lapsed for a moment on a loaded machine: wait for the
    // store to show every lock.
    h.wait_until("30 locks listed", Duration::from_secs(30), || async {
        h.owners().await.is_ok_and(|o| o.len() == 30)
    })
    .await;
    let owners = h.owners().await.unwrap();
    assert!(
        ["t0", "t1"]
            .iter()
            .all(|t| owners.get(*t).is_some_and(|m| m == "g1" || m == "g2")),
        "{owners:?}"
    );
    // The pinned targets follow g3 when it registers: the leader moves a target to a better
    // matching member when that member joins. The time from g3's registration (as the
    // cluster API shows it, polled every 100 ms) to both targets on g3 is printed, not
    // asserted: timing assertions are flaky on loaded machines.
    h.start_member("g3", &[], &targets).unwrap();
    h.wait_until("g3 registered", Duration::from_secs(30), || async {
        h.cluster().await.is_ok_and(|c| {
            c["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["name"] == "g3"))
        })
    })
    .await;
    let follow = h
        .wait_until("t0 and t1 on g3", Duration::from_secs(30), || async {
            h.owners()
                .await
                .map(|o| {
                    o.get("t0").is_some_and(|m| m == "g3") && o.get("t1").is_some_and(|m| m == "g3")
                })
                .unwrap_or(false)
        })
        .await;
    println!(
        "AFFINITY-FOLLOW {store}: pinned targets on g3 {follow:?} after its registration was seen"
    );
    h.wait_until(
        "30 targets with exactly one subscriber",
        Duration::from_secs(30),
        || async {
            h.target_stats()
                .await
                .map(|s| exactly_one_each(&s, &names))
                .unwrap_or(false)
        },
    )
    .await;
    let owners = h.owners().await.unwrap();
    assert_eq!(owners.len(), 30, "{owners:?}");

    move_on_request(&h, &names).await;
    let owners = h.owners().await.unwrap();
    assert_eq!(owners.len(), 30, "{owners:?}");

    // Drain g1: its targets move with no missing sample (1 s sample interval).
    let drained: Vec<String> = owners
        .iter()
        .filter(|(_, m)| *m == "g1")
        .map(|(t, _)| t.clone())
        .collect();
    assert!(!drained.is_empty());
    // As a Kubernetes preStop hook does: `gnomon drain` with g1's own config asks the leader
    // (found through the store) and returns only once the store shows g1 holding nothing.
    let drain_started = Instant::now();
    let (drained_ok, output) = h
        .drain_with_cli("g1", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(drained_ok, "gnomon drain g1 failed:\n{output}");
    let owners_now = h.owners().await.unwrap();
    assert!(
        owners_now.values().all(|m| m != "g1"),
        "drain returned while g1 still held targets: {owners_now:?}\n{output}"
    );
    h.wait_until(
        "every target owned again",
        Duration::from_secs(30),
        || async { h.owners().await.map(|o| o.len() == 30).unwrap_or(false) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    {
        let samples = samples.lock().unwrap();
        for target in &drained {
            let mut stamps: Vec<i64> = samples
                .get(target)
                .map(|s| s.iter().map(|(_, ts)| *ts).collect())
                .unwrap_or_default();
            stamps.sort();
            stamps.dedup();
            let window: Vec<i64> = stamps
                .iter()
                .copied()
                .filter(|ts| *ts >= unix_ns(drain_started) - 3_000_000_000)
                .collect();
            let worst_gap = window.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
            assert!(
                worst_gap < 1_600_000_000,
                "{target}: a sample was missed during the drain (gap {worst_gap} ns)"
            );
        }
    }

    // SIGKILL the member holding the most targets: its targets come back with one subscriber.
    let owners = h.owners().await.unwrap();
    let mut load: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (t, m) in &owners {
        load.entry(m.clone()).or_default().push(t.clone());
    }
    let (victim, orphans) = load
        .iter()
        .max_by_key(|(_, ts)| ts.len())
        .map(|(m, ts)| (m.clone(), ts.clone()))
        .unwrap();
    let tokens_before: BTreeMap<String, u64> = {
        let samples = samples.lock().unwrap();
        orphans
            .iter()
            .map(|t| {
                (
                    t.clone(),
                    samples
                        .get(t)
                        .and_then(|s| s.iter().map(|(k, _)| *k).max())
                        .unwrap_or(0),
                )
            })
            .collect()
    };
    h.member(&victim).process.kill();
    h.wait_until(
        &format!(
            "{victim}'s {} targets back with one subscriber",
            orphans.len()
        ),
        Duration::from_secs(30),
        || async {
            let stats = h.target_stats().await.unwrap_or_default();
            let owners = h.owners().await.unwrap_or_default();
            exactly_one_each(&stats, &orphans)
                && orphans
                    .iter()
                    .all(|t| owners.get(t).is_some_and(|m| *m != victim))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    {
        let samples = samples.lock().unwrap();
        for t in &orphans {
            let newest = samples
                .get(t)
                .and_then(|s| s.iter().map(|(k, _)| *k).max())
                .unwrap_or(0);
            assert!(
                newest > tokens_before[t],
                "{t}: the new owner's fencing token must be higher"
            );
        }
    }

    // SIGKILL the leader: a new one is elected and places a target added afterwards.
    let cluster = h.cluster().await.unwrap();
    let leader = cluster["leader"].as_str().unwrap().to_string();
    if leader != victim {
        h.member(&leader).process.kill();
    }
    let survivor = h
        .members
        .iter()
        .find(|m| m.name != leader && m.name != victim)
        .map(|m| m.api())
        .unwrap();
    h.wait_until("a new leader", Duration::from_secs(30), || async {
        h.cluster()
            .await
            .ok()
            .and_then(|c| c["leader"].as_str().map(str::to_string))
            .is_some_and(|l| !l.is_empty() && l != leader && l != victim)
    })
    .await;
    let late = serde_json::json!({"name": "t30", "address": h.devices[30]});
    let response = h
        .http
        .post(format!("{survivor}/api/v1/config/targets"))
        .json(&late)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "add: {}",
        response.text().await.unwrap_or_default()
    );
    h.wait_until(
        "t30 placed after the leader change",
        Duration::from_secs(30),
        || async {
            h.target_stats()
                .await
                .map(|s| exactly_one_each(&s, &["t30".to_string()]))
                .unwrap_or(false)
        },
    )
    .await;

    // Runtime removal through the API stops the subscription and frees the lock.
    let response = h
        .http
        .delete(format!("{survivor}/api/v1/config/targets/t30"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    h.wait_until("t30 removed", Duration::from_secs(30), || async {
        let stats = h.target_stats().await.unwrap_or_default();
        let owners = h.owners().await.unwrap_or_default();
        stats.get("t30").is_some_and(|s| s.subscriptions == 0) && !owners.contains_key("t30")
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
    let all: BTreeSet<String> = names.into_iter().collect();
    assert_eq!(all.len(), 30);
}

/// `POST /api/v1/cluster/move` and `GET /api/v1/cluster/assignments` (issue 16.4): a
/// non-leader refuses the move, the leader refuses a move affinity would undo and moves an
/// unpinned target to the named member with one subscriber at the device; assignments read
/// on a non-leader match the locks.
async fn move_on_request(h: &Harness, names: &[String]) {
    let leader = h.cluster().await.unwrap()["leader"]
        .as_str()
        .unwrap()
        .to_string();
    let api_of = |name: &str| h.members.iter().find(|m| m.name == name).unwrap().api();
    let follower = h
        .members
        .iter()
        .map(|m| m.name.clone())
        .find(|m| *m != leader)
        .unwrap();
    let post_move = |api: String, target: &str, member: &str| {
        let request = h
            .http
            .post(format!("{api}/api/v1/cluster/move"))
            .json(&serde_json::json!({"target": target, "member": member}));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (status, body)
        }
    };
    let owners = h.owners().await.unwrap();
    // An unpinned target and a member that does not hold it.
    let target = names
        .iter()
        .find(|t| *t != "t0" && *t != "t1")
        .unwrap()
        .clone();
    let to = ["g1", "g2", "g3"]
        .into_iter()
        .find(|m| owners.get(&target).is_some_and(|o| o != m))
        .unwrap();

    let (status, body) = post_move(api_of(&follower), &target, to).await;
    assert_eq!(
        (status, body),
        (400, serde_json::json!({"errors": ["not leader"]})),
        "move through {follower}, not the leader {leader}"
    );
    let (status, body) = post_move(api_of(&leader), "t0", "g1").await;
    assert_eq!(status, 409, "{body}");
    let refusal = body["errors"][0].as_str().unwrap_or_default();
    assert!(refusal.contains("g3") && refusal.contains("g1"), "{body}");
    // The leader may still be finishing a move of it (from the rebalance when g3 joined):
    // it says so, and the move is asked again.
    let answer = std::sync::Mutex::new((0, serde_json::Value::Null));
    h.wait_until(
        &format!("the leader's answer to moving {target} to {to}"),
        Duration::from_secs(30),
        || async {
            let (status, body) = post_move(api_of(&leader), &target, to).await;
            let busy = status == 409 && body.to_string().contains("right now");
            if busy {
                println!("move {target} to {to}: {body}");
            }
            *answer.lock().unwrap() = (status, body);
            !busy
        },
    )
    .await;
    let (status, body) = answer.into_inner().unwrap();
    assert_eq!(
        (status, body),
        (200, serde_json::json!({"moves": 1})),
        "move {target} to {to}"
    );
    h.wait_until(
        &format!("{target} on {to} with one subscriber"),
        Duration::from_secs(30),
        || async {
            h.owners()
                .await
                .is_ok_and(|o| o.get(&target).is_some_and(|m| m == to))
                && h.collected_once(std::slice::from_ref(&target)).await
        },
    )
    .await;

    // Assignments on a non-leader: every configured target with the holder of its lock.
    h.wait_until(
        &format!("assignments on {follower} match the locks"),
        Duration::from_secs(30),
        || async {
            let Ok(owners) = h.owners().await else {
                return false;
            };
            let Ok(response) = h
                .http
                .get(format!("{}/api/v1/cluster/assignments", api_of(&follower)))
                .send()
                .await
            else {
                return false;
            };
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let expected: BTreeMap<&String, Option<&String>> =
                names.iter().map(|t| (t, owners.get(t))).collect();
            owners.len() == names.len() && body == serde_json::json!({ "assignments": expected })
        },
    )
    .await;
}

fn unix_ns(at: Instant) -> i64 {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    now_ns - at.elapsed().as_nanos() as i64
}
