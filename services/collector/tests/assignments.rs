//! gnomon's batched assignment route on a clustered collector: each target of a batch is
//! added and claimed as the per-target calls would, a bad one is refused by name without
//! failing the others, and a body that is not a batch is refused as a whole.

use gnomon_collector::cluster_member::ClusterMember;
use gnomon_collector::{api_routes, clustered_api_routes, CollectorHandle};
use gnomon_config::{load_config_with_env, ConfigFormat};
use gnomon_coordination::assignments::{AssignmentsReply, ASSIGNMENTS_PATH};
use gnomon_coordination::{MemoryCoordination, SubscriptionStore, TargetStore};
use std::sync::Arc;

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}{ASSIGNMENTS_PATH}")
}

fn collector() -> CollectorHandle {
    let yaml = "insecure: true\nsubscriptions:\n  counters:\n    paths: [/interfaces]\n    \
                stream-mode: sample\n    sample-interval: 1s\n";
    CollectorHandle::new(load_config_with_env(yaml, ConfigFormat::Yaml, &[]).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_adds_and_claims_each_target_and_refuses_bad_ones_by_name() {
    let collector = collector();
    let coordination = Arc::new(MemoryCoordination::new("m1"));
    let member = ClusterMember::new(collector.clone(), coordination.clone(), "c1", "m1");
    let url = serve(clustered_api_routes(
        collector.clone(),
        member.clone(),
        TargetStore::new(coordination.clone(), "c1"),
        SubscriptionStore::new(coordination.clone(), "c1"),
    ))
    .await;
    let http = gnomon_testkit::http_client();
    let batch = serde_json::json!([
        {"config": {"name": "t1", "address": "127.0.0.1:1"}, "traceparent": "not-a-trace"},
        {"config": {"name": "t2", "address": "127.0.0.1:2", "timeout": "banana"}},
        {"config": {"name": "t3", "address": "127.0.0.1:3"}},
    ]);
    let reply = http.post(&url).json(&batch).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    let reply: AssignmentsReply = reply.json().await.unwrap();
    assert_eq!(reply.refused.len(), 3);
    assert_eq!(reply.refused[0], None);
    let reason = reply.refused[1].as_deref().unwrap();
    assert!(reason.contains("timeout"), "{reason}");
    assert_eq!(reply.refused[2], None);
    assert_eq!(member.claimed(), ["t1", "t3"]);
    let configs = collector.target_configs();
    assert!(configs.contains_key("t1") && configs.contains_key("t3"));
    assert!(!configs.contains_key("t2"));

    for (body, expected) in [
        ("{\"config\": {}}", "invalid assignments"),
        ("not json", "invalid assignments"),
    ] {
        let reply = http.post(&url).body(body).send().await.unwrap();
        assert_eq!(reply.status(), 400);
        let text = reply.text().await.unwrap();
        assert!(text.contains(expected), "{text}");
    }
    member.shutdown().await;
}

#[tokio::test]
async fn a_collector_outside_a_cluster_takes_no_assignments() {
    let url = serve(api_routes(collector())).await;
    let reply = gnomon_testkit::http_client()
        .post(&url)
        .json(&serde_json::json!([{"config": {"name": "t1", "address": "127.0.0.1:1"}}]))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 404);
    assert!(reply.text().await.unwrap().contains("not a cluster member"));
}
