//! Pins the Consul test double to Consul's documented edge semantics (raw HTTP), and checks
//! the Consul backend's token, datacenter and key escaping against it.

use gnomon_consul_double::{ConsulDouble, DoubleConfig};
use gnomon_coordination::{self as coordination, LockerConfig, LockerType};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(20);

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(double: &ConsulDouble) -> Self {
        Self {
            http: gnomon_testkit::http_client(),
            base: double.url(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> (StatusCode, String, Option<u64>) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let index = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        (status, response.text().await.unwrap(), index)
    }

    async fn put(&self, path: &str, body: Option<&str>) -> (StatusCode, String) {
        let (status, text, _) = self.call(reqwest::Method::PUT, path, body).await;
        (status, text)
    }

    async fn get(&self, path: &str) -> (StatusCode, String, Option<u64>) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn session(&self, body: &str) -> String {
        let (status, text) = self.put("/v1/session/create", Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        serde_json::from_str::<Value>(&text).unwrap()["ID"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn entry(&self, key: &str) -> Option<Value> {
        let (status, text, _) = self.get(&format!("/v1/kv/{key}")).await;
        match status {
            StatusCode::NOT_FOUND => None,
            StatusCode::OK => Some(serde_json::from_str::<Value>(&text).unwrap()[0].clone()),
            other => panic!("GET {key}: {other} {text}"),
        }
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn session_creation_validates_ttl_and_behavior() {
    let double = ConsulDouble::start_with(DoubleConfig::default())
        .await
        .unwrap();
    let api = Api::new(&double);
    let (status, text) = api.put("/v1/session/create", Some(r#"{"TTL":"5s"}"#)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(text.contains("Invalid Session TTL"), "{text}");
    let (status, text) = api
        .put("/v1/session/create", Some(r#"{"Behavior":"explode"}"#))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(text.contains("Invalid Behavior"), "{text}");
    let id = api
        .session(r#"{"TTL":"10s","LockDelay":7,"Behavior":"delete"}"#)
        .await;
    let (_, text, _) = api.get(&format!("/v1/session/info/{id}")).await;
    let info: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        info[0]["LockDelay"], 7_000_000_000u64,
        "numbers below 1000 are seconds"
    );
    assert_eq!(info[0]["Behavior"], "delete");
    assert_eq!(info[0]["TTL"], "10s");
}

#[tokio::test]
async fn acquire_release_and_lock_index_bookkeeping() {
    let double = ConsulDouble::start().await.unwrap();
    let api = Api::new(&double);
    let s1 = api.session(r#"{"TTL":"10s","LockDelay":"0s"}"#).await;
    let s2 = api.session(r#"{"TTL":"10s","LockDelay":"0s"}"#).await;
    assert_eq!(
        api.put(&format!("/v1/kv/lk?acquire={s1}"), Some("one"))
            .await
            .1,
        "true"
    );
    let first = api.entry("lk").await.unwrap();
    assert_eq!(first["LockIndex"], 1);
    assert_eq!(first["Session"], s1.as_str());
    assert_eq!(
        api.put(&format!("/v1/kv/lk?acquire={s2}"), Some("two"))
            .await
            .1,
        "false"
    );
    let (status, text) = api
        .put(
            "/v1/kv/lk?acquire=5b3d4e2f-0000-4000-8000-000000000000",
            Some("x"),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(text.contains("invalid session"), "{text}");
    assert_eq!(
        api.put(&format!("/v1/kv/lk?acquire={s1}"), Some("again"))
            .await
            .1,
        "true"
    );
    let same = api.entry("lk").await.unwrap();
    assert_eq!(
        same["LockIndex"], 1,
        "re-acquire by the holder does not count"
    );
    assert!(same["ModifyIndex"].as_u64() > first["ModifyIndex"].as_u64());
    assert_eq!(
        api.put(&format!("/v1/kv/lk?release={s2}"), None).await.1,
        "false"
    );
    assert_eq!(
        api.put(&format!("/v1/kv/lk?release={s1}"), None).await.1,
        "true"
    );
    let released = api.entry("lk").await.unwrap();
    assert_eq!(released["LockIndex"], 1);
    assert!(released.get("Session").is_none());
    assert_eq!(released["Value"], Value::Null, "empty value is null");
    assert_eq!(
        api.put(&format!("/v1/kv/lk?acquire={s2}"), Some("two"))
            .await
            .1,
        "true"
    );
    assert_eq!(api.entry("lk").await.unwrap()["LockIndex"], 2);
    let (status, _) = api
        .put(&format!("/v1/kv/lk?cas=1&acquire={s2}"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "conflicting flags");
}

#[tokio::test]
async fn lock_delay_applies_on_destroy_but_not_on_release() {
    let double = ConsulDouble::start().await.unwrap();
    let api = Api::new(&double);
    let holder = api.session(r#"{"TTL":"10s","LockDelay":"2s"}"#).await;
    let other = api.session(r#"{"TTL":"10s","LockDelay":"0s"}"#).await;
    assert_eq!(
        api.put(&format!("/v1/kv/d?acquire={holder}"), None).await.1,
        "true"
    );
    assert_eq!(
        api.put(&format!("/v1/kv/d?release={holder}"), None).await.1,
        "true"
    );
    assert_eq!(
        api.put(&format!("/v1/kv/d?acquire={other}"), None).await.1,
        "true",
        "release sets no delay"
    );
    assert_eq!(
        api.put(&format!("/v1/kv/d?release={other}"), None).await.1,
        "true"
    );
    assert_eq!(
        api.put(&format!("/v1/kv/d?acquire={holder}"), None).await.1,
        "true"
    );
    let destroyed = Instant::now();
    assert_eq!(
        api.put(&format!("/v1/session/destroy/{holder}"), None)
            .await,
        (StatusCode::OK, "true".into())
    );
    assert_eq!(
        api.put(&format!("/v1/session/destroy/{holder}"), None)
            .await,
        (StatusCode::OK, "true".into()),
        "idempotent"
    );
    let refused = api.put(&format!("/v1/kv/d?acquire={other}"), None).await.1;
    if destroyed.elapsed() < Duration::from_millis(1500) {
        assert_eq!(refused, "false", "inside the lock-delay");
    }
    let (status, _) = api.put("/v1/kv/d", Some("plain")).await;
    assert_eq!(status, StatusCode::OK, "plain writes ignore lock-delay");
    eventually("the lock-delay to end", async || {
        api.put(&format!("/v1/kv/d?acquire={other}"), None).await.1 == "true"
    })
    .await;
    assert!(destroyed.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn sessions_expire_at_twice_the_ttl_and_renew_then_404s() {
    let double = ConsulDouble::start().await.unwrap();
    let api = Api::new(&double);
    let id = api
        .session(r#"{"TTL":"1s","LockDelay":"0s","Behavior":"delete"}"#)
        .await;
    assert_eq!(
        api.put(&format!("/v1/kv/ttl/k?acquire={id}"), Some("v"))
            .await
            .1,
        "true"
    );
    let created = Instant::now();
    let (status, text) = api.put(&format!("/v1/session/renew/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()[0]["TTL"],
        "1s"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    if created.elapsed() < Duration::from_millis(1900) {
        assert!(
            api.entry("ttl/k").await.is_some(),
            "never invalidated before 2×TTL"
        );
    }
    eventually("the session to expire", async || {
        api.entry("ttl/k").await.is_none()
    })
    .await;
    assert!(created.elapsed() >= Duration::from_secs(2));
    let (status, text) = api.put(&format!("/v1/session/renew/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(text, format!("Session id '{id}' not found"));
    let (_, text, _) = api.get(&format!("/v1/session/info/{id}")).await;
    assert_eq!(text, "[]");
}

#[tokio::test]
async fn missing_keys_404_with_an_index_and_blocking_queries_wake_on_change() {
    let double = ConsulDouble::start().await.unwrap();
    let api = Api::new(&double);
    let (status, body, index) = api.get("/v1/kv/later").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.is_empty());
    let index = index.expect("404 carries X-Consul-Index");
    assert!(index >= 1);
    let (status, _, timed_out_index) = {
        let started = Instant::now();
        let answer = api
            .get(&format!("/v1/kv/later?index={index}&wait=300ms"))
            .await;
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "waited for the wait time"
        );
        answer
    };
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(timed_out_index, Some(index), "a timeout is not a change");
    let waiter = {
        let http = api.http.clone();
        let url = format!("{}/v1/kv/later?index={index}&wait=60s", api.base);
        tokio::spawn(async move {
            let started = Instant::now();
            let response = http.get(url).send().await.unwrap();
            (
                response.status(),
                response.text().await.unwrap(),
                started.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(api.put("/v1/kv/later", Some("now")).await.1, "true");
    let (status, text, elapsed) = waiter.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        elapsed < Duration::from_secs(50),
        "woken by the write, not the wait"
    );
    let value = serde_json::from_str::<Value>(&text).unwrap()[0]["Value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(value, "bm93", "base64 of 'now'");
    // Recurse: tombstones move the index.
    let (_, _, before) = api.get("/v1/kv/?recurse").await;
    assert_eq!(
        api.call(reqwest::Method::DELETE, "/v1/kv/later", None)
            .await
            .0,
        StatusCode::OK
    );
    let (status, _, after) = api.get("/v1/kv/later?recurse").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(after > before, "a delete moves the recurse index");
}

#[tokio::test]
async fn ttl_checks_go_critical_and_passing_filters_them_out() {
    let double = ConsulDouble::start().await.unwrap();
    let api = Api::new(&double);
    let body = r#"{"ID":"g1-api","Name":"c1-gnmic-api","Address":"10.0.0.1","Port":7890,
        "Tags":["cluster-name=c1","__protocol=http"],
        "Checks":[{"TTL":"1s","DeregisterCriticalServiceAfter":"5s","Status":"passing"}]}"#;
    assert_eq!(
        api.put("/v1/agent/service/register", Some(body)).await.0,
        StatusCode::OK
    );
    let passing = async || {
        let (_, text, _) = api.get("/v1/health/service/c1-gnmic-api?passing").await;
        serde_json::from_str::<Vec<Value>>(&text).unwrap()
    };
    let listed = passing().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["Service"]["ID"], "g1-api");
    assert_eq!(listed[0]["Checks"][1]["CheckID"], "service:g1-api");
    let (_, text, _) = api
        .get("/v1/health/service/c1-gnmic-api?passing&tag=__protocol=https")
        .await;
    assert_eq!(text, "[]", "tag filter");
    eventually("the TTL check to go critical", async || {
        passing().await.is_empty()
    })
    .await;
    let (_, text, _) = api.get("/v1/health/service/c1-gnmic-api").await;
    let all: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(all[0]["Checks"][1]["Status"], "critical");
    assert_eq!(all[0]["Checks"][1]["Output"], "TTL expired");
    assert_eq!(
        api.put("/v1/agent/check/pass/service:g1-api", None).await.0,
        StatusCode::OK
    );
    assert_eq!(passing().await.len(), 1);
    let (status, text) = api.put("/v1/agent/check/pass/service:nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(text.contains("Unknown check ID"), "{text}");
    let (status, _) = api
        .put(
            "/v1/agent/check/update/service:g1-api",
            Some(r#"{"Status":"bogus"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        api.put("/v1/agent/service/deregister/g1-api", None).await.0,
        StatusCode::OK
    );
    assert!(passing().await.is_empty());
}

#[tokio::test]
async fn strict_key_validation_and_backend_escaping() {
    let double = ConsulDouble::start().await.unwrap();
    let api = Api::new(&double);
    let (status, text) = api
        .put("/v1/kv/gnmic/c1/targets/10.0.0.1:57400", Some("g1"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(
        api.put("/v1/kv/gnmic/c1/targets/router1.example.com", Some("g1"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let mut cfg = LockerConfig::new(LockerType::Consul);
    cfg.address = Some(double.address().to_string());
    cfg.session_ttl = Duration::from_secs(1);
    let backend = coordination::connect(&cfg, "g1").await.unwrap();
    let key = coordination::keys::target("c1", "router1.example.com:57400");
    let guard = backend
        .acquire(&key, "g1")
        .await
        .unwrap()
        .expect("escaped key accepted");
    assert!(api
        .entry("gnmic/c1/targets/router1_2eexample_2ecom_3a57400")
        .await
        .is_some());
    let held = backend
        .list(&coordination::keys::targets_prefix("c1"))
        .await
        .unwrap();
    assert_eq!(held.get(&key).map(String::as_str), Some("g1"));
    guard.release().await.unwrap();
    backend
        .put(
            &coordination::keys::target("c1", "10.0.0.1:57400"),
            "{\"address\":\"10.0.0.1:57400\"}",
        )
        .await
        .unwrap();
    let all = backend.get_prefix("gnmic/c1/").await.unwrap();
    assert!(
        all.contains_key("gnmic/c1/targets/10.0.0.1:57400"),
        "{all:?}"
    );
    backend.shutdown().await;
}

#[tokio::test]
async fn backend_sends_token_and_datacenter() {
    let double = ConsulDouble::start_with(DoubleConfig {
        session_ttl_min: Duration::from_secs(1),
        acl_token: Some("s3cret-token".into()),
        datacenter: "east".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut cfg = LockerConfig::new(LockerType::Consul);
    cfg.address = Some(double.url());
    cfg.session_ttl = Duration::from_secs(1);
    cfg.datacenter = Some("east".into());
    let anonymous = coordination::connect(&cfg, "g1").await.unwrap();
    let error = anonymous.acquire("k", "g1").await.unwrap_err();
    assert!(error.to_string().contains("permission denied"), "{error}");
    assert!(!error.to_string().contains("s3cret"), "no secret in errors");
    cfg.token = Some("s3cret-token".into());
    let authorized = coordination::connect(&cfg, "g1").await.unwrap();
    let guard = authorized.acquire("k", "g1").await.unwrap().expect("free");
    assert!(!format!("{cfg:?}").contains("s3cret"));
    guard.release().await.unwrap();
    cfg.datacenter = Some("west".into());
    let wrong_dc = coordination::connect(&cfg, "g1").await.unwrap();
    assert!(
        wrong_dc.get("k").await.is_err(),
        "unknown datacenter must fail"
    );
    authorized.shutdown().await;
}
