//! The k8s locker against the Kubernetes API double, beyond the conformance suite: RBAC
//! refusals named clearly and not retried, members from a headless Service's
//! EndpointSlices, a watch that resynchronises after `410 Gone`, what the Leases look like,
//! and the double's own API answers (Status objects, 401/403/404/409/410/422).

use futures::StreamExt;
use gnomon_coordination::{
    self as coordination, Coordination, CoordinationError, Credential, LockerConfig, LockerType,
    ServiceInstance, ServiceRegistration, WatchEvent, WatchEvents,
};
use gnomon_k8s_double::{K8sDouble, ADMIN_TOKEN, LIMITED_TOKEN};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(20);

struct Setup {
    double: K8sDouble,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Setup {
    async fn start() -> Self {
        gnomon_testkit::install_crypto_provider();
        Self {
            double: K8sDouble::start().await.unwrap(),
            dir: tempfile::tempdir().unwrap(),
            http: gnomon_testkit::http_client(),
        }
    }

    fn config(&self, token: &str) -> LockerConfig {
        let path = self.dir.path().join(format!("kubeconfig-{token}"));
        gnomon_k8s_double::write_kubeconfig(&path, &self.double.url(), token, "default").unwrap();
        let mut cfg = LockerConfig::new(LockerType::K8s);
        cfg.kubeconfig = Some(path.display().to_string());
        cfg.session_ttl = Duration::from_secs(2);
        cfg.retry_timer = Duration::from_millis(200);
        cfg.request_timeout = Duration::from_secs(3);
        cfg
    }

    async fn member(&self, instance: &str, token: &str) -> Arc<dyn Coordination> {
        coordination::connect(&self.config(token), instance)
            .await
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.double.url())
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

async fn wait_for(watch: &mut coordination::ServiceWatch, expected: Vec<ServiceInstance>) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let list = tokio::time::timeout_at(deadline, watch.next())
            .await
            .unwrap_or_else(|_| panic!("members never became {expected:?}"))
            .unwrap();
        if list == expected {
            return;
        }
    }
}

async fn next_event(events: &mut WatchEvents, what: &str, wanted: impl Fn(&WatchEvent) -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(event)) if wanted(&event) => return,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("watch ended while waiting for {what}"),
            Err(_) => panic!("no {what} within {PATIENCE:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rbac_refusal_names_what_to_grant_and_is_not_retried() {
    let setup = Setup::start().await;
    let limited = setup.member("g1", LIMITED_TOKEN).await;
    let started = Instant::now();
    let error = limited
        .acquire_blocking(
            "gnmic/lab/leader",
            "g1",
            &coordination::CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a refusal returns at once, not after retries: {:?}",
        started.elapsed()
    );
    assert!(!error.is_transient());
    assert_eq!(
        error.credential(),
        Some(&Credential::KubernetesRbac {
            namespace: "default".into(),
            verb: "list".into(),
            resource: "leases.coordination.k8s.io".into(),
        })
    );
    let text = error.to_string();
    for needle in [
        "forbidden",
        "system:serviceaccount:default:limited",
        "grant get, list, watch, create, update and delete on leases",
        "endpointslices",
        "namespace \"default\"",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from: {text}");
    }
    assert!(!text.contains(LIMITED_TOKEN), "{text}");
    // The same for plain KV and watches.
    assert!(matches!(
        limited.put("gnmic/lab/config/targets/t1", "{}").await,
        Err(CoordinationError::CredentialRefused { .. })
    ));
    assert!(limited.watch_prefix("gnmic/lab/").await.is_err());

    let stranger = setup.member("g2", "not-a-token").await;
    let error = stranger.get("gnmic/lab/leader").await.unwrap_err();
    assert_eq!(error.credential(), Some(&Credential::KubernetesToken));
    assert!(error.to_string().contains("Unauthorized"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_the_ready_endpoints_described_by_their_registrations() {
    let setup = Setup::start().await;
    let service = "lab-gnmic-api";
    let g1 = setup.member("g1", ADMIN_TOKEN).await;
    let observer = setup.member("observer", ADMIN_TOKEN).await;
    let registration = ServiceRegistration {
        name: service.into(),
        id: "g1-api".into(),
        address: "127.0.0.1".into(),
        port: 7890,
        tags: vec![
            "cluster-name=lab".into(),
            "instance-name=g1".into(),
            "__protocol=https".into(),
            "zone=a".into(),
        ],
        ttl: Duration::from_secs(2),
    };
    let _handle = g1.register_service(registration.clone()).await.unwrap();
    // No Service (no EndpointSlices): the registrations are the members.
    let list = observer.services(service, &[]).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].address, "127.0.0.1");
    let mut watch = observer
        .watch_services(service, &["cluster-name=lab".to_string()])
        .await
        .unwrap();
    // The EndpointSlice controller's view: g1 ready, g2 not yet.
    let slice = |g2_ready: bool, g1_terminating: bool| {
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "lab-gnmic-api-7xk2p", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.1.0.5"], "conditions": {"ready": !g1_terminating, "serving": true, "terminating": g1_terminating},
                 "targetRef": {"kind": "Pod", "name": "g1", "namespace": "default"}},
                {"addresses": ["10.1.0.6"], "conditions": {"ready": g2_ready},
                 "targetRef": {"kind": "Pod", "name": "g2", "namespace": "default"}},
            ],
            "ports": [{"name": "api", "port": 7890, "protocol": "TCP"}],
        })
    };
    let (code, created) = setup
        .call(
            reqwest::Method::POST,
            SLICES,
            Some(ADMIN_TOKEN),
            Some(slice(false, false)),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let g1_member = ServiceInstance {
        id: "g1-api".into(),
        name: service.into(),
        address: "10.1.0.5".into(),
        port: 7890,
        tags: registration.tags.clone(),
    };
    wait_for(&mut watch, vec![g1_member.clone()]).await;
    // g2 becomes ready without registering: gnmic's ID and derived tags.
    let mut update = slice(true, false);
    update["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"].clone();
    let (code, updated) = setup
        .call(
            reqwest::Method::PUT,
            &format!("{SLICES}/lab-gnmic-api-7xk2p"),
            Some(ADMIN_TOKEN),
            Some(update),
        )
        .await;
    assert_eq!(code, 200, "{updated}");
    let g2_member = ServiceInstance {
        id: "g2-api".into(),
        name: service.into(),
        address: "10.1.0.6".into(),
        port: 7890,
        tags: vec![
            "cluster-name=lab".into(),
            "instance-name=g2".into(),
            "__protocol=http".into(),
        ],
    };
    wait_for(&mut watch, vec![g1_member.clone(), g2_member.clone()]).await;
    assert_eq!(
        observer
            .services(service, &["zone=a".to_string()])
            .await
            .unwrap(),
        vec![g1_member.clone()]
    );
    // g1 starts terminating (a rolling restart): it leaves at once.
    let mut update = slice(true, true);
    update["metadata"]["resourceVersion"] = updated["metadata"]["resourceVersion"].clone();
    let (code, _) = setup
        .call(
            reqwest::Method::PUT,
            &format!("{SLICES}/lab-gnmic-api-7xk2p"),
            Some(ADMIN_TOKEN),
            Some(update),
        )
        .await;
    assert_eq!(code, 200);
    wait_for(&mut watch, vec![g2_member]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resynchronises_after_410_gone() {
    let setup = Setup::start().await;
    let writer = setup.member("writer", ADMIN_TOKEN).await;
    let observer = setup.member("observer", ADMIN_TOKEN).await;
    writer
        .put("gnmic/lab/config/targets/t1", "one")
        .await
        .unwrap();
    let mut events = observer.watch_prefix("gnmic/lab/").await.unwrap();
    next_event(&mut events, "t1", |e| e.key().ends_with("t1")).await;
    // Every retained change is dropped and every watch cut: the observer resumes from a
    // version the double no longer has, gets 410 and lists again.
    setup.double.compact();
    setup.double.end_watches();
    writer
        .put("gnmic/lab/config/targets/t2", "two")
        .await
        .unwrap();
    writer.delete("gnmic/lab/config/targets/t1").await.unwrap();
    next_event(
        &mut events,
        "t2 after the resync",
        |e| matches!(e, WatchEvent::Put { key, value } if key.ends_with("t2") && value == "two"),
    )
    .await;
    next_event(
        &mut events,
        "t1's delete after the resync",
        |e| matches!(e, WatchEvent::Delete { key } if key.ends_with("t1")),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_is_a_lease_gnmic_users_recognise() {
    let setup = Setup::start().await;
    let member = setup.member("gnomon-0", ADMIN_TOKEN).await;
    let key = "gnmic/lab/targets/Router1.example.com:57400";
    let guard = member.acquire(key, "gnomon-0").await.unwrap().unwrap();
    let name = "gnmic.lab.targets.q52outer1q2eexampleq2ecomq3a57400";
    let (code, lease) = setup
        .call(
            reqwest::Method::GET,
            &format!("{LEASES}/{name}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(code, 200, "{lease}");
    assert_eq!(lease["kind"], "Lease");
    assert_eq!(lease["metadata"]["annotations"]["original-key"], key);
    assert_eq!(
        lease["metadata"]["annotations"]["original-value"],
        "gnomon-0"
    );
    assert_eq!(
        lease["metadata"]["annotations"]["gnomon.io/fencing-token"],
        guard.fencing_token().to_string()
    );
    assert_eq!(lease["metadata"]["labels"]["gnomon.io/store"], "v1");
    let spec = &lease["spec"];
    assert!(spec["holderIdentity"]
        .as_str()
        .unwrap()
        .starts_with("gnomon-0-"));
    assert_eq!(spec["leaseDurationSeconds"], 2);
    assert!(spec["renewTime"].as_str().unwrap().ends_with('Z'));
    // Renewed in the background: the version moves, the token stays.
    let version = lease["metadata"]["resourceVersion"].clone();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, renewed) = setup
        .call(
            reqwest::Method::GET,
            &format!("{LEASES}/{name}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_ne!(renewed["metadata"]["resourceVersion"], version);
    assert_eq!(
        renewed["metadata"]["annotations"]["gnomon.io/fencing-token"],
        guard.fencing_token().to_string()
    );
    assert_eq!(
        member.list("gnmic/lab/targets/").await.unwrap().get(key),
        Some(&"gnomon-0".to_string())
    );
    guard.release().await.unwrap();
    let (code, _) = setup
        .call(
            reqwest::Method::GET,
            &format!("{LEASES}/{name}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(code, 404, "a release deletes the Lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_double_answers_like_the_api_server() {
    let setup = Setup::start().await;
    let get = reqwest::Method::GET;
    let (code, body) = setup.call(get.clone(), LEASES, None, None).await;
    assert_eq!(code, 401);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    let (code, body) = setup
        .call(
            get.clone(),
            &format!("{LEASES}/x"),
            Some(LIMITED_TOKEN),
            None,
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "leases.coordination.k8s.io \"x\" is forbidden: User \"system:serviceaccount:default:limited\" cannot get resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"default\""
    );
    let (code, body) = setup
        .call(get.clone(), &format!("{LEASES}/x"), Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(code, 404);
    assert_eq!(body["reason"], "NotFound");
    assert_eq!(body["details"]["group"], "coordination.k8s.io");
    assert_eq!(body["details"]["kind"], "leases");
    let lease = |name: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": name}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 10}})
    };
    let (code, body) = setup
        .call(
            reqwest::Method::POST,
            LEASES,
            Some(ADMIN_TOKEN),
            Some(lease("Not_Valid")),
        )
        .await;
    assert_eq!(code, 422);
    assert_eq!(body["reason"], "Invalid");
    let (code, created) = setup
        .call(
            reqwest::Method::POST,
            LEASES,
            Some(ADMIN_TOKEN),
            Some(lease("a")),
        )
        .await;
    assert_eq!(code, 201);
    let (code, body) = setup
        .call(
            reqwest::Method::POST,
            LEASES,
            Some(ADMIN_TOKEN),
            Some(lease("a")),
        )
        .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    let mut stale = lease("a");
    stale["metadata"]["resourceVersion"] = json!("1");
    stale["spec"]["holderIdentity"] = json!("b");
    let (code, _) = setup
        .call(
            reqwest::Method::PUT,
            &format!("{LEASES}/a"),
            Some(ADMIN_TOKEN),
            Some(stale.clone()),
        )
        .await;
    assert_eq!(code, 200, "version 1 is current");
    let (code, body) = setup
        .call(
            reqwest::Method::PUT,
            &format!("{LEASES}/a"),
            Some(ADMIN_TOKEN),
            Some(stale),
        )
        .await;
    assert_eq!((code, body["reason"].as_str()), (409, Some("Conflict")));
    let (code, body) = setup
        .call(
            reqwest::Method::DELETE,
            &format!("{LEASES}/a"),
            Some(ADMIN_TOKEN),
            Some(json!({"preconditions": {"resourceVersion": created["metadata"]["resourceVersion"]}})),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("Precondition failed"));
    // A watch from a compacted version: one ERROR event, 410 Expired.
    setup.double.compact();
    let response = setup
        .http
        .get(setup.url(&format!("{LEASES}?watch=true&resourceVersion=1")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let event: Value = serde_json::from_str(response.text().await.unwrap().trim()).unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
}
