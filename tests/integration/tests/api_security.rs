//! REST API security: the bearer token on changing requests (`api-server.token`), HTTPS with
//! client certificates (`api-server.tls` with `client-auth: require-verify`), and a cluster
//! whose leader places targets on its members over HTTPS with client certificates and the
//! token (`clustering.tls`).

mod security_support;

use gnomon_testkit::{eventually, free_port, EtcdServer, NatsServer, TestPki};
use security_support::{first_error, https_client, send, spawn_gnomon, start_simulator};
use std::time::Duration;

const TOKEN: &str = "api-tok-5b1e0c";

#[tokio::test]
async fn token_guards_changes_and_leaves_reads_open() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The token comes from gnmic's environment override, not the file.
    let config = format!("api: 127.0.0.1:{port}\nsubscriptions:\n  s:\n    paths: [/interfaces]\n");
    let _collector = spawn_gnomon(
        dir.path(),
        "collector",
        "collector",
        &config,
        port,
        &[("GNMIC_API_SERVER_TOKEN", TOKEN)],
    )
    .unwrap();
    let http = gnomon_testkit::http_client();
    let base = format!("http://127.0.0.1:{port}");
    let body = serde_json::json!({"name": "r9", "address": "127.0.0.1:1", "subscriptions": ["s"]});

    let changes = [
        http.post(format!("{base}/api/v1/config/targets"))
            .json(&body),
        http.delete(format!("{base}/api/v1/config/targets/r9")),
        http.post(format!("{base}/api/v1/targets/r9")),
        http.delete(format!("{base}/api/v1/targets/r9")),
    ];
    for request in changes {
        let missing = request.try_clone().unwrap();
        let (status, body) = send(missing).await.unwrap();
        assert_eq!(status, 401, "{body}");
        assert!(
            first_error(&body).starts_with("missing bearer token"),
            "{body}"
        );
        let (status, body) = send(request.bearer_auth("guessed-wrong")).await.unwrap();
        assert_eq!(status, 401, "{body}");
        assert_eq!(first_error(&body), "invalid bearer token");
        assert!(!body.contains("guessed-wrong"), "{body}");
    }
    // Nothing changed.
    let (status, configs) = send(http.get(format!("{base}/api/v1/config/targets")))
        .await
        .unwrap();
    assert_eq!((status, configs.as_str()), (200, "{}"));

    // With the token the same calls work; reads never need it.
    let (status, body) = send(
        http.post(format!("{base}/api/v1/config/targets"))
            .json(&body)
            .bearer_auth(TOKEN),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, configs) = send(http.get(format!("{base}/api/v1/config/targets")))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(configs.contains("\"r9\""), "{configs}");
    for path in ["/api/v1/healthz", "/api/v1/targets", "/metrics"] {
        let (status, body) = send(http.get(format!("{base}{path}"))).await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, body) = send(
        http.delete(format!("{base}/api/v1/config/targets/r9"))
            .bearer_auth(TOKEN),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn api_tls_with_a_client_ca_refuses_clients_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("api").unwrap();
    let server = pki.issue("server").unwrap();
    let client_identity = pki.issue("operator").unwrap();
    let stranger = TestPki::new("stranger").unwrap();
    let stranger_identity = stranger.issue("stranger").unwrap();
    let port = free_port();
    let config = format!(
        "api-server:\n  address: 127.0.0.1:{port}\n  tls:\n    cert-file: {}\n    key-file: {}\n    ca-file: {}\n    client-auth: require-verify\n",
        server.cert_file.display(),
        server.key_file.display(),
        pki.ca_file().display()
    );
    let collector = spawn_gnomon(dir.path(), "collector", "collector", &config, port, &[]).unwrap();
    let url = format!("https://127.0.0.1:{port}/api/v1/healthz");

    // The server is verified against the CA; no client certificate: refused.
    let anonymous = https_client(pki.ca_file(), None);
    let refused = anonymous.get(&url).send().await;
    assert!(refused.is_err(), "{refused:?}\n{}", collector.log());
    // A certificate from another CA: refused too.
    let foreign = https_client(pki.ca_file(), Some(&stranger_identity));
    assert!(foreign.get(&url).send().await.is_err());
    // The CA's client certificate: served.
    let trusted = https_client(pki.ca_file(), Some(&client_identity));
    let (status, body) = send(trusted.get(&url)).await.unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"status":"healthy"}"#));
    // Plain HTTP on the TLS port gets no API answer.
    let plain = gnomon_testkit::http_client()
        .get(format!("http://127.0.0.1:{port}/api/v1/healthz"))
        .send()
        .await;
    assert!(
        plain.map(|r| !r.status().is_success()).unwrap_or(true),
        "plain HTTP was served"
    );
}

/// gnmic's Prometheus output `tls` (cert-file, key-file, ca-file, client-auth): /metrics is
/// served over HTTPS to a client with the CA's certificate, refused without one, and plain
/// HTTP on the port gets no metrics.
#[tokio::test]
async fn the_prometheus_listener_serves_tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start().unwrap();
    let pki = TestPki::new("prom").unwrap();
    let server = pki.issue("exporter").unwrap();
    let scraper = pki.issue("prometheus").unwrap();
    let prom = free_port();
    let config = format!(
        "outputs:\n  prom:\n    type: prometheus\n    listen: 127.0.0.1:{prom}\n    cache: {{}}\n    tls:\n      cert-file: {}\n      key-file: {}\n      ca-file: {}\n      client-auth: require-verify\ninputs:\n  in:\n    type: nats\n    address: {}\n    subject: telemetry.>\n",
        server.cert_file.display(),
        server.key_file.display(),
        pki.ca_file().display(),
        nats.address()
    );
    let exporter =
        gnomon_testkit::spawn_gnomon(dir.path(), "exporter", "exporter", &config).unwrap();
    if let Err(e) =
        gnomon_testkit::wait_for_tcp(&format!("127.0.0.1:{prom}"), Duration::from_secs(20))
    {
        panic!("{e}\n{}", exporter.log());
    }
    let url = format!("https://127.0.0.1:{prom}/metrics");

    let anonymous = https_client(pki.ca_file(), None);
    let refused = anonymous.get(&url).send().await;
    assert!(refused.is_err(), "{refused:?}\n{}", exporter.log());
    let trusted = https_client(pki.ca_file(), Some(&scraper));
    let (status, body) = send(trusted.get(&url)).await.unwrap();
    assert_eq!(status, 200, "{body}\n{}", exporter.log());
    let plain = gnomon_testkit::http_client()
        .get(format!("http://127.0.0.1:{prom}/metrics"))
        .send()
        .await;
    assert!(
        plain.map(|r| !r.status().is_success()).unwrap_or(true),
        "plain HTTP was served"
    );
}
/// The config of member `name`: API over HTTPS requiring client certificates and the
/// token; the leader's client TLS (`clustering.tls`) presents the member's certificate.
fn member_config(
    name: &str,
    port: u16,
    pki: &TestPki,
    etcd: &EtcdServer,
    nats: &NatsServer,
    devices: &[String],
) -> String {
    let identity = pki.issue(name).unwrap();
    let mut text = String::from("insecure: true\nencoding: proto\ntargets:\n");
    for (i, device) in devices.iter().enumerate() {
        text.push_str(&format!("  t{i}:\n    address: {device}\n"));
    }
    text.push_str(
        "subscriptions:\n  counters:\n    paths: [/interfaces/interface/state/counters]\n    stream-mode: sample\n    sample-interval: 1s\n",
    );
    let (cert, key, ca) = (
        identity.cert_file.display().to_string(),
        identity.key_file.display().to_string(),
        pki.ca_file().display().to_string(),
    );
    text.push_str(&format!(
        "api-server:\n  address: 127.0.0.1:{port}\n  token: {TOKEN}\n  tls:\n    cert-file: {cert}\n    key-file: {key}\n    ca-file: {ca}\n    client-auth: require-verify\n"
    ));
    text.push_str(&format!(
        "clustering:\n  cluster-name: secure\n  instance-name: {name}\n  targets-watch-timer: 2s\n  leader-wait-timer: 300ms\n  target-assignment-timeout: 5s\n  rebalance-threshold: 0\n  tls:\n    ca-file: {ca}\n    cert-file: {cert}\n    key-file: {key}\n  locker:\n    type: etcd\n    address: {}\n    session-ttl: 2s\n    retry-timer: 500ms\n",
        etcd.address()
    ));
    text.push_str(&format!(
        "outputs:\n  nats-out:\n    type: nats\n    address: {}\n    subject-prefix: telemetry\n    format: proto\n",
        nats.address()
    ));
    text
}

#[tokio::test]
async fn leader_places_targets_on_members_over_https_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("cluster").unwrap();
    let etcd = EtcdServer::start().unwrap();
    let nats = NatsServer::start().unwrap();
    let simulator = start_simulator(dir.path(), 4, None).await.unwrap();
    let mut members = Vec::new();
    for name in ["m1", "m2"] {
        let port = free_port();
        let config = member_config(name, port, &pki, &etcd, &nats, &simulator.devices);
        let process = spawn_gnomon(dir.path(), name, "all", &config, port, &[]).unwrap();
        members.push((name, port, process));
    }
    let operator = pki.issue("operator").unwrap();
    let http = https_client(pki.ca_file(), Some(&operator));
    let api = |port: u16| format!("https://127.0.0.1:{port}");
    let logs = |members: &[(&str, u16, gnomon_testkit::ChildProcess)]| {
        members
            .iter()
            .map(|(name, _, p)| format!("==== {name} ====\n{}", p.log()))
            .collect::<String>()
    };

    // Every target is placed (POST config + POST start over HTTPS with the token), locked
    // and subscribed exactly once, spread over both members.
    let cluster = eventually("all targets placed", Duration::from_secs(30), || {
        let http = http.clone();
        let url = format!("{}/api/v1/cluster", api(members[0].1));
        async move {
            let (status, body) = send(http.get(url)).await?;
            let cluster: serde_json::Value = serde_json::from_str(&body).ok()?;
            (status == 200 && cluster["number-of-locked-targets"] == 4).then_some(cluster)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&members)));
    let members_view = cluster["members"].as_array().unwrap();
    assert_eq!(members_view.len(), 2, "{cluster}");
    for member in members_view {
        assert!(
            member["api-endpoint"]
                .as_str()
                .unwrap()
                .starts_with("https://127.0.0.1:"),
            "{member}"
        );
        assert!(
            member["number-of-locked-nodes"].as_u64().unwrap() >= 1,
            "{cluster}"
        );
        // The member's figures were fetched over HTTPS with the client certificate and
        // token (a member refusing the call would show `stats-error` instead).
        assert!(member.get("stats-error").is_none(), "{member}");
        assert_eq!(member["output-health"], "healthy", "{member}");
        assert!(member["targets-held"].is_u64(), "{member}");
    }
    eventually(
        "one subscription per device",
        Duration::from_secs(20),
        || async {
            let stats = simulator.subscriptions().await.ok()?;
            (stats.len() == 4 && stats.values().all(|&n| n == 1)).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&members)));

    // Cluster operations are changes too: the token is required.
    let leader = cluster["leader"].as_str().unwrap().to_string();
    let leader_port = members.iter().find(|(n, _, _)| *n == leader).unwrap().1;
    let rebalance = format!("{}/api/v1/cluster/rebalance", api(leader_port));
    let (status, body) = send(http.post(&rebalance)).await.unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, body) = send(http.post(&rebalance).bearer_auth(TOKEN))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let drain = format!("{}/api/v1/cluster/members/{leader}/drain", api(leader_port));
    let (status, _) = send(http.post(&drain).bearer_auth("nope")).await.unwrap();
    assert_eq!(status, 401);
    let step_down = format!("{}/api/v1/cluster/leader", api(leader_port));
    let (status, _) = send(http.delete(&step_down)).await.unwrap();
    assert_eq!(status, 401);
    // Still led by the same member: the refused step-down did nothing.
    let (_, body) = send(http.get(format!("{}/api/v1/cluster/leader", api(leader_port))))
        .await
        .unwrap();
    assert!(body.contains(&format!("\"name\":\"{leader}\"")), "{body}");
}
