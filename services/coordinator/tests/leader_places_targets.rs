//! The leader against in-process members (memory coordination): members that take the
//! target lock when told to start, as collectors do.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use gnomon_coordination::{
    keys, Coordination, LockGuard, LockerConfig, MemoryCoordination, MemoryStore, ServiceHandle,
    ServiceRegistration,
};
use gnomon_coordinator::api::{router, stats_client, ClusterApiState};
use gnomon_coordinator::member_client::MemberClientOptions;
use gnomon_coordinator::{spawn, CoordinatorSettings, TargetStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CLUSTER: &str = "c1";

/// A member that locks targets when started and releases them when stopped.
struct FakeMember {
    coordination: Arc<MemoryCoordination>,
    /// Targets the leader told this member to start.
    running: Arc<Mutex<HashMap<String, Claim>>>,
    _registration: ServiceHandle,
    server: tokio::task::JoinHandle<()>,
}

/// A started target: its cancel token and the task holding (or waiting for) its lock.
type Claim = (
    CancellationToken,
    tokio::task::JoinHandle<Option<LockGuard>>,
);

#[derive(Clone)]
struct MemberState {
    name: String,
    coordination: Arc<MemoryCoordination>,
    running: Arc<Mutex<HashMap<String, Claim>>>,
}

async fn config(Json(_body): Json<serde_json::Value>) -> StatusCode {
    StatusCode::OK
}

async fn start(State(state): State<MemberState>, Path(target): Path<String>) -> StatusCode {
    let cancel = CancellationToken::new();
    let key = keys::target(CLUSTER, &target);
    let (coordination, name, token) = (
        state.coordination.clone(),
        state.name.clone(),
        cancel.clone(),
    );
    let task = tokio::spawn(async move {
        coordination
            .acquire_blocking(&key, &name, &token)
            .await
            .ok()
            .flatten()
    });
    if let Some((old, _)) = state.running.lock().unwrap().insert(target, (cancel, task)) {
        old.cancel();
    }
    StatusCode::OK
}

async fn stop(State(state): State<MemberState>, Path(target): Path<String>) -> StatusCode {
    let entry = state.running.lock().unwrap().remove(&target);
    match entry {
        Some((cancel, task)) => {
            cancel.cancel();
            if let Ok(Some(guard)) = task.await {
                let _ = guard.release().await;
            }
            StatusCode::OK
        }
        None => StatusCode::NOT_FOUND,
    }
}

impl FakeMember {
    async fn start(store: &MemoryStore, name: &str, custom_tags: &[&str]) -> Self {
        let cfg: LockerConfig = serde_json::from_value(serde_json::json!({
            "type": "memory", "session-ttl": "1s", "delay": "200ms", "retry-timer": "100ms"
        }))
        .unwrap();
        let coordination = Arc::new(MemoryCoordination::with_store(store.clone(), &cfg, name));
        let running: Arc<Mutex<HashMap<String, Claim>>> = Default::default();
        let state = MemberState {
            name: name.to_string(),
            coordination: coordination.clone(),
            running: running.clone(),
        };
        let router = Router::new()
            .route("/api/v1/config/targets", post(config))
            .route("/api/v1/targets/{name}", post(start).merge(delete(stop)))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let mut tags = vec![
            format!("cluster-name={CLUSTER}"),
            format!("instance-name={name}"),
            "__protocol=http".into(),
        ];
        tags.extend(custom_tags.iter().map(|t| t.to_string()));
        let registration = coordination
            .register_service(ServiceRegistration {
                name: keys::api_service_name(CLUSTER),
                id: keys::api_service_id(name),
                address: "127.0.0.1".into(),
                port,
                tags,
                ttl: Duration::from_secs(1),
            })
            .await
            .unwrap();
        Self {
            coordination,
            running,
            _registration: registration,
            server,
        }
    }

    /// Targets the leader has told this member to start, sorted.
    fn started(&self) -> Vec<String> {
        let mut names: Vec<String> = self.running.lock().unwrap().keys().cloned().collect();
        names.sort();
        names
    }

    /// Dies without releasing anything (its session expires).
    fn crash(self) {
        self.server.abort();
        self.coordination.disconnect();
    }
}

fn settings(instance: &str) -> CoordinatorSettings {
    let mut s = CoordinatorSettings::new(CLUSTER, instance);
    s.leader_wait_timer = Duration::from_millis(100);
    s.targets_watch_timer = Duration::from_secs(2);
    s.target_assignment_timeout = Duration::from_secs(3);
    s.member_client.timeout = Duration::from_secs(2);
    s
}

/// A store client that only reads.
fn observer(store: &MemoryStore) -> MemoryCoordination {
    MemoryCoordination::with_store(
        store.clone(),
        &serde_json::from_value(serde_json::json!({"type": "memory"})).unwrap(),
        "observer",
    )
}

/// Stores configs for targets `t0` .. `t<count-1>`.
async fn put_targets(targets: &TargetStore, count: usize) {
    for i in 0..count {
        targets
            .put(&serde_json::json!({ "name": format!("t{i}"), "address": format!("10.0.0.{i}:57400") }))
            .await
            .unwrap();
    }
}

async fn owners(coordination: &dyn Coordination) -> BTreeMap<String, String> {
    coordination
        .list(&format!("{}/", keys::targets_prefix(CLUSTER)))
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v)| (keys::target_name_from_key(&k).to_string(), v))
        .collect()
}

async fn wait_owners<F: Fn(&BTreeMap<String, String>) -> bool>(
    coordination: &dyn Coordination,
    what: &str,
    ok: F,
) -> BTreeMap<String, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let current = owners(coordination).await;
        if ok(&current) {
            return current;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; owners: {current:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_places_balances_fails_over_drains_and_follows_runtime_changes() {
    let store = MemoryStore::new();
    let observer = observer(&store);
    let m1 = FakeMember::start(&store, "m1", &[]).await;
    let m2 = FakeMember::start(&store, "m2", &[]).await;
    let m3 = FakeMember::start(&store, "m3", &["site=dc3"]).await;

    let coordination: Arc<dyn Coordination> = m1.coordination.clone();
    let targets = TargetStore::new(coordination.clone(), CLUSTER);
    for i in 0..29 {
        targets.put(&serde_json::json!({ "name": format!("r{i}.example.com:57400"), "address": format!("10.0.0.{i}:57400") })).await.unwrap();
    }
    // Pinned to m3 by its custom tag (after gnmic's three registration tags).
    targets
        .put(
            &serde_json::json!({ "name": "pinned", "address": "10.0.1.1:57400",
            "tags": ["cluster-name=c1", "instance-name=m3", "__protocol=http", "site=dc3"] }),
        )
        .await
        .unwrap();

    let shutdown = CancellationToken::new();
    let (handle, _task) = spawn(
        settings("coordinator-a"),
        coordination.clone(),
        shutdown.clone(),
    )
    .unwrap();

    let placed = wait_owners(&observer, "30 targets placed", |o| o.len() == 30).await;
    assert_eq!(placed.get("pinned").map(String::as_str), Some("m3"));
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for owner in placed.values() {
        *load.entry(owner.as_str()).or_default() += 1;
    }
    assert_eq!(load.len(), 3, "every member gets targets: {load:?}");
    assert!(
        load.values().all(|n| (9..=11).contains(n)),
        "balanced: {load:?}"
    );
    assert!(handle.is_leader());

    // Runtime add and remove.
    targets
        .put(&serde_json::json!({ "name": "late", "address": "10.0.2.1:57400" }))
        .await
        .unwrap();
    wait_owners(&observer, "late target placed", |o| o.contains_key("late")).await;
    targets.delete("late").await.unwrap();
    wait_owners(&observer, "late target released", |o| {
        !o.contains_key("late") && o.len() == 30
    })
    .await;

    // Drain m2: all of its targets move to m1 / m3.
    let moves = handle.drain("m2").await.unwrap();
    assert!(moves >= 9);
    wait_owners(&observer, "m2 drained", |o| {
        o.len() == 30 && o.values().all(|m| m != "m2")
    })
    .await;
    assert_eq!(
        handle.drain("nobody").await.unwrap_err().to_string(),
        "unknown instance: nobody"
    );

    // m3 crashes: its targets (including the pinned one) are re-placed on the survivors.
    m3.crash();
    let after = wait_owners(&observer, "m3's targets re-placed", |o| {
        o.len() == 30 && o.values().all(|m| m != "m3")
    })
    .await;
    assert!(after.values().all(|m| m == "m1" || m == "m2"));

    shutdown.cancel();
    drop((m1, m2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_member_gets_a_share_when_the_spread_reaches_the_threshold() {
    let store = MemoryStore::new();
    let observer = observer(&store);
    let m1 = FakeMember::start(&store, "m1", &[]).await;
    let m2 = FakeMember::start(&store, "m2", &[]).await;
    let coordination: Arc<dyn Coordination> = m1.coordination.clone();
    let targets = TargetStore::new(coordination.clone(), CLUSTER);
    put_targets(&targets, 12).await;
    let shutdown = CancellationToken::new();
    let (_handle, _task) = spawn(
        settings("coordinator-a"),
        coordination.clone(),
        shutdown.clone(),
    )
    .unwrap();
    wait_owners(&observer, "12 targets on 2 members", |o| o.len() == 12).await;

    // m3 joins: the spread (6 vs 0) reaches the default threshold of 2, so targets move to it.
    let m3 = FakeMember::start(&store, "m3", &[]).await;
    let after = wait_owners(&observer, "m3 gets its share", |o| {
        o.len() == 12 && o.values().filter(|m| *m == "m3").count() >= 3
    })
    .await;
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for owner in after.values() {
        *load.entry(owner.as_str()).or_default() += 1;
    }
    assert!(
        load.values().max().unwrap() - load.values().min().unwrap() < 2,
        "{load:?}"
    );
    shutdown.cancel();
    drop((m1, m2, m3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_leaves_held_targets_with_their_holders() {
    let store = MemoryStore::new();
    let m1 = FakeMember::start(&store, "m1", &[]).await;
    let m2 = FakeMember::start(&store, "m2", &[]).await;
    let coordination: Arc<dyn Coordination> = m1.coordination.clone();
    let targets = TargetStore::new(coordination.clone(), CLUSTER);
    put_targets(&targets, 13).await;
    // t0..t11 are held (as after a leader change), t12 is not.
    let mut held = Vec::new();
    for i in 0..12 {
        let (member, name) = if i % 2 == 0 { (&m1, "m1") } else { (&m2, "m2") };
        let key = keys::target(CLUSTER, &format!("t{i}"));
        held.push(
            member
                .coordination
                .acquire(&key, name)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let shutdown = CancellationToken::new();
    let (_handle, _task) = spawn(
        settings("coordinator-a"),
        coordination.clone(),
        shutdown.clone(),
    )
    .unwrap();
    // Once the one free target is placed, the leader has seen every target.
    let observer = observer(&store);
    let owners = wait_owners(&observer, "t12 placed", |o| o.contains_key("t12")).await;
    assert_eq!(owners.len(), 13, "{owners:?}");
    let mut started = m1.started();
    started.extend(m2.started());
    assert_eq!(
        started,
        vec!["t12".to_string()],
        "the leader re-placed held targets"
    );
    shutdown.cancel();
    drop((held, m1, m2));
}

/// Issue 14.1: a target every member refuses — or whose name cannot even travel in a URL —
/// must not send the leader into a tight loop of assignments and log lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_unusable_targets_are_retried_with_backoff_not_in_a_loop() {
    let store = MemoryStore::named("leader-refused-targets");
    let refusals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // A member whose API answers 404 to every start, like a collector that does not know
    // the target (what `..` became once normalized away from the URL).
    let cfg: LockerConfig = serde_json::from_value(serde_json::json!({
        "type": "memory", "session-ttl": "1s", "delay": "200ms", "retry-timer": "100ms"
    }))
    .unwrap();
    let member = Arc::new(MemoryCoordination::with_store(store.clone(), &cfg, "m1"));
    let counted = refusals.clone();
    let pushed_dotdot = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let dotdot = pushed_dotdot.clone();
    let router = Router::new()
        .route(
            "/api/v1/config/targets",
            post(move |Json(body): Json<serde_json::Value>| {
                let dotdot = dotdot.clone();
                async move {
                    if body["name"] == ".." {
                        dotdot.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    StatusCode::OK
                }
            }),
        )
        .route(
            "/api/v1/targets/{name}",
            post(move || {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    StatusCode::NOT_FOUND
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let _registration = member
        .register_service(ServiceRegistration {
            name: keys::api_service_name(CLUSTER),
            id: keys::api_service_id("m1"),
            address: "127.0.0.1".into(),
            port,
            tags: vec![
                format!("cluster-name={CLUSTER}"),
                "instance-name=m1".into(),
                "__protocol=http".into(),
            ],
            ttl: Duration::from_secs(1),
        })
        .await
        .unwrap();
    let coordination: Arc<dyn Coordination> = Arc::new(MemoryCoordination::with_store(
        store.clone(),
        &cfg,
        "coordinator-a",
    ));
    let targets = TargetStore::new(coordination.clone(), CLUSTER);
    targets
        .put(&serde_json::json!({"name": "refused", "address": "10.0.0.1:57400"}))
        .await
        .unwrap();
    // Written straight into the store (the API refuses such names): never placeable.
    coordination
        .put(
            &format!("{}..", targets.prefix()),
            r#"{"name":"..","address":"127.0.0.1:1"}"#,
        )
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let mut settings = settings("coordinator-a");
    settings.targets_watch_timer = Duration::from_millis(500);
    let (_handle, _task) = spawn(settings, coordination.clone(), shutdown.clone()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while refusals.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no assignment attempt"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let attempts = refusals.load(std::sync::atomic::Ordering::SeqCst);
    // With backoff (200 ms doubling, capped at 1 s here) about 5 attempts fit in 3 s;
    // the tight loop made thousands. `..` is never attempted at all.
    assert!(
        (2..=12).contains(&attempts),
        "{attempts} start attempts in 3 s for one refused target"
    );
    assert_eq!(
        pushed_dotdot.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a target named `..` was assigned"
    );
    shutdown.cancel();
    server.abort();
}

/// Issue 16.4 / 12.6: a pinned target placed while its member was away moves to that
/// member when it joins (gnmic's affinity, applied over time), and nothing else moves back
/// and forth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_target_follows_its_member_when_it_joins_later() {
    let store = MemoryStore::named("leader-affinity-over-time");
    let coordination: Arc<dyn Coordination> = Arc::new(observer(&store));
    let targets = TargetStore::new(coordination.clone(), CLUSTER);
    targets
        .put(
            &serde_json::json!({ "name": "pinned", "address": "10.0.1.1:57400",
            "tags": ["cluster-name=c1", "instance-name=m2", "__protocol=http", "site=dc2"] }),
        )
        .await
        .unwrap();
    put_targets(&targets, 4).await;
    let m1 = FakeMember::start(&store, "m1", &[]).await;
    let shutdown = CancellationToken::new();
    let leader: Arc<dyn Coordination> = Arc::new(MemoryCoordination::with_store(
        store.clone(),
        &serde_json::from_value(serde_json::json!({"type": "memory", "session-ttl": "1s"}))
            .unwrap(),
        "coordinator-a",
    ));
    let mut settings = settings("coordinator-a");
    settings.rebalance_threshold = None;
    let (_handle, _task) = spawn(settings, leader, shutdown.clone()).unwrap();
    let observer = observer(&store);
    let placed = wait_owners(&observer, "all 5 placed on m1", |o| o.len() == 5).await;
    assert_eq!(placed["pinned"], "m1");
    let joined = tokio::time::Instant::now();
    let m2 = FakeMember::start(&store, "m2", &["site=dc2"]).await;
    let moved = wait_owners(&observer, "pinned on m2", |o| {
        o.get("pinned").is_some_and(|m| m == "m2")
    })
    .await;
    // Printed, not asserted: timing assertions are flaky on loaded machines; wait_owners'
    // deadline bounds it.
    println!(
        "pinned target on its member {:?} after it joined",
        joined.elapsed()
    );
    // Only the pinned target moved (rebalancing is off here).
    for i in 0..4 {
        assert_eq!(moved[&format!("t{i}")], "m1", "{moved:?}");
    }
    shutdown.cancel();
    drop((m1, m2));
}

/// Sends one request to a cluster API router; returns the status and the JSON body.
async fn call(
    api: &axum::Router,
    method: &str,
    path: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    use tower::ServiceExt;
    let request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let response = api.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn move_body(target: &str, member: &str) -> String {
    serde_json::json!({ "target": target, "member": member }).to_string()
}

/// Asks `api` to move `target` to `member` until the answer is not "being placed or moved
/// right now" (the leader learns that a handover finished a moment after the store shows it).
async fn move_when_settled(
    api: &axum::Router,
    target: &str,
    member: &str,
) -> (StatusCode, serde_json::Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = call(
            api,
            "POST",
            "/api/v1/cluster/move",
            &move_body(target, member),
        )
        .await;
        let busy = status == StatusCode::CONFLICT && body.to_string().contains("right now");
        if !busy || tokio::time::Instant::now() >= deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 16.4: `POST /api/v1/cluster/move` on the leader moves a target to the named member
/// with the handover and refuses, naming what is wrong, what it cannot or must not do;
/// another instance answers "not leader". `GET /api/v1/cluster/assignments` answers on any
/// instance from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_moves_to_the_named_member_on_request() {
    let store = MemoryStore::named("leader-move-on-request");
    let observer: Arc<dyn Coordination> = Arc::new(observer(&store));
    let targets = TargetStore::new(observer.clone(), CLUSTER);
    targets
        .put(
            &serde_json::json!({ "name": "pinned", "address": "10.0.1.1:57400",
            "tags": ["cluster-name=c1", "instance-name=m3", "__protocol=http", "site=dc3"] }),
        )
        .await
        .unwrap();
    put_targets(&targets, 3).await;
    // An instance without a coordinator answers reads from the store: nothing placed yet.
    let reader = router(ClusterApiState {
        cluster_name: CLUSTER.into(),
        coordination: observer.clone(),
        handle: None,
        members: stats_client(&MemberClientOptions::default()).unwrap(),
    });
    let (status, body) = call(&reader, "GET", "/api/v1/cluster/assignments", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"assignments": {"pinned": null, "t0": null, "t1": null, "t2": null}})
    );

    let m1 = FakeMember::start(&store, "m1", &[]).await;
    let m2 = FakeMember::start(&store, "m2", &[]).await;
    let m3 = FakeMember::start(&store, "m3", &["site=dc3"]).await;
    let shutdown = CancellationToken::new();
    let coordinator = |name: &str| -> Arc<dyn Coordination> {
        Arc::new(MemoryCoordination::with_store(
            store.clone(),
            &serde_json::from_value(serde_json::json!({"type": "memory", "session-ttl": "1s"}))
                .unwrap(),
            name,
        ))
    };
    let mut settings_a = settings("coordinator-a");
    settings_a.rebalance_threshold = None;
    let (mut handle_a, _task_a) =
        spawn(settings_a, coordinator("coordinator-a"), shutdown.clone()).unwrap();
    handle_a.wait_leading(true).await;
    let (handle_b, _task_b) = spawn(
        settings("coordinator-b"),
        coordinator("coordinator-b"),
        shutdown.clone(),
    )
    .unwrap();
    let api = |handle| {
        router(ClusterApiState {
            cluster_name: CLUSTER.into(),
            coordination: observer.clone(),
            handle: Some(handle),
            members: stats_client(&MemberClientOptions::default()).unwrap(),
        })
    };
    let (leader, follower) = (api(handle_a), api(handle_b));
    let placed = wait_owners(observer.as_ref(), "4 targets placed", |o| o.len() == 4).await;
    assert_eq!(placed["pinned"], "m3");

    // Only the leader moves targets.
    let (status, body) = call(
        &follower,
        "POST",
        "/api/v1/cluster/move",
        &move_body("t0", "m1"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body, serde_json::json!({"errors": ["not leader"]}));

    // What is wrong is named.
    let refusals = [
        (
            "{\"target\": \"t0\"}",
            StatusCode::BAD_REQUEST,
            "missing field `member`",
        ),
        (
            "{\"target\": \"t0\", \"member\": 3}",
            StatusCode::BAD_REQUEST,
            "invalid type: integer `3`",
        ),
        (
            "{\"target\": \"t0\", \"instance\": \"m1\"}",
            StatusCode::BAD_REQUEST,
            "unknown field `instance`",
        ),
        ("t0 to m1", StatusCode::BAD_REQUEST, "invalid body"),
        (
            &move_body("nope", "m1"),
            StatusCode::NOT_FOUND,
            "unknown target: nope",
        ),
        (
            &move_body("t0", "nobody"),
            StatusCode::NOT_FOUND,
            "unknown instance: nobody",
        ),
        (
            &move_body("pinned", "m1"),
            StatusCode::CONFLICT,
            "target pinned's tags match m3 better than m1: affinity would move it back to m3",
        ),
    ];
    for (request, expected, message) in refusals {
        let (status, body) = call(&leader, "POST", "/api/v1/cluster/move", request).await;
        assert_eq!(status, expected, "{request}: {body}");
        let errors = body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"));
        assert!(
            errors.len() == 1 && errors[0].as_str().unwrap().contains(message),
            "{request}: {body}"
        );
    }

    // Already there: nothing moves.
    let owner = placed["t0"].clone();
    let (status, body) = move_when_settled(&leader, "t0", &owner).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, serde_json::json!({"moves": 0}))
    );

    // A move: the named member takes the lock, the old owner lets go, nothing else moves.
    let to = ["m1", "m2", "m3"]
        .into_iter()
        .find(|m| *m != owner)
        .unwrap();
    let (status, body) = move_when_settled(&leader, "t0", to).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, serde_json::json!({"moves": 1}))
    );
    let moved = wait_owners(observer.as_ref(), "t0 on the named member", |o| {
        o.get("t0").is_some_and(|m| m == to)
    })
    .await;
    for target in ["pinned", "t1", "t2"] {
        assert_eq!(moved[target], placed[target], "{target} moved: {moved:?}");
    }
    let members = [("m1", &m1), ("m2", &m2), ("m3", &m3)];
    let (_, old) = members.iter().find(|(n, _)| *n == owner).unwrap();
    let (_, new) = members.iter().find(|(n, _)| *n == to).unwrap();
    assert!(new.started().contains(&"t0".to_string()));
    assert!(!old.started().contains(&"t0".to_string()));

    // Any instance shows the assignments as the locks are.
    let (status, body) = call(&follower, "GET", "/api/v1/cluster/assignments", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expected: BTreeMap<String, Option<String>> = owners(observer.as_ref())
        .await
        .into_iter()
        .map(|(t, m)| (t, Some(m)))
        .collect();
    assert_eq!(body, serde_json::json!({ "assignments": expected }));

    shutdown.cancel();
    drop((m1, m2, m3));
}

/// Issue 19.2: a member registered with the unhealthy tag (its outputs fail) gets no target
/// and cannot be moved to; registered again without it, the rebalance gives it a share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_outputs_fail_gets_no_targets_until_it_recovers() {
    let store = MemoryStore::new();
    let observer = observer(&store);
    let m1 = FakeMember::start(&store, "m1", &[]).await;
    let failing = FakeMember::start(&store, "m2", &[keys::UNHEALTHY_TAG]).await;
    let coordination: Arc<dyn Coordination> = m1.coordination.clone();
    let targets = TargetStore::new(coordination.clone(), CLUSTER);
    put_targets(&targets, 6).await;
    let shutdown = CancellationToken::new();
    let (handle, _task) = spawn(
        settings("coordinator-a"),
        coordination.clone(),
        shutdown.clone(),
    )
    .unwrap();
    let placed = wait_owners(&observer, "6 targets placed", |o| o.len() == 6).await;
    // Eligible, m2 would have had half of them (placement goes to the least loaded).
    assert!(placed.values().all(|m| m == "m1"), "{placed:?}");
    assert!(failing.started().is_empty(), "{:?}", failing.started());

    let api = router(ClusterApiState {
        cluster_name: CLUSTER.into(),
        coordination: coordination.clone(),
        handle: Some(handle),
        members: stats_client(&MemberClientOptions::default()).unwrap(),
    });
    let (status, body) = move_when_settled(&api, "t0", "m2").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"errors": ["member m2 takes no targets: its outputs are failing"]})
    );
    // The cluster view says so, from the registration (the fake serves no figures).
    let (status, cluster) = call(&api, "GET", "/api/v1/cluster", "").await;
    assert_eq!(status, StatusCode::OK, "{cluster}");
    let m2 = cluster["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "m2")
        .unwrap()
        .clone();
    assert_eq!(m2["accepts-targets"], false, "{m2}");
    assert_eq!(m2["output-health"], "unhealthy", "{m2}");
    assert!(
        m2["stats-error"].as_str().unwrap().contains("HTTP 404"),
        "{m2}"
    );

    // Outputs recovered: m2 registers again without the tag and gets a share.
    // (The old registration has the same ID: wait until it is gone, as a member does.)
    drop(failing);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while observer
        .services(&keys::api_service_name(CLUSTER), &[])
        .await
        .unwrap()
        .iter()
        .any(|s| s.id == keys::api_service_id("m2"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "m2 not deregistered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m2 = FakeMember::start(&store, "m2", &[]).await;
    wait_owners(&observer, "m2 gets a share", |o| {
        o.len() == 6 && o.values().filter(|m| *m == "m2").count() >= 2
    })
    .await;
    shutdown.cancel();
    drop((m1, m2));
}
