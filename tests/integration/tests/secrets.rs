//! The planted-secret test: distinct random secrets go everywhere a secret can be configured
//! (device password and token, API token, NATS user passwords or token, etcd user password,
//! Consul ACL token, the exporter's registration token and password, a target config POSTed
//! through the API), a two-member cluster runs with debug logging and is exercised — the
//! leader pushes configs with passwords to members, targets fail with wrong passwords, the
//! API gets bad bodies and wrong tokens — and then every process log, every GET response
//! (body and headers), every `/metrics`, every NATS message and every span exported over
//! OTLP is searched for every secret. None may appear anywhere.

mod security_support;

use futures::StreamExt;
use gnomon_testkit::{
    eventually, free_port, workspace_binary, ChildProcess, EtcdServer, NatsServer,
    NatsServerOptions,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use security_support::{first_error, send, spawn_gnomon, start_simulator, Simulator};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DEVICE_USER: &str = "admin";
const OBSERVER_PASSWORD: &str = "observer-not-a-gnomon-secret";

/// The planted secrets by purpose: random, distinct, and unlike anything else in the outputs.
struct Planted(BTreeMap<&'static str, String>);

impl Planted {
    fn new(purposes: &[&'static str]) -> Self {
        Self(
            purposes
                .iter()
                .map(|p| (*p, format!("Zs{}", uuid::Uuid::new_v4().simple())))
                .collect(),
        )
    }

    fn get(&self, purpose: &str) -> &str {
        &self.0[purpose]
    }
}

/// Everything the system showed to the outside, by where it came from.
#[derive(Default)]
struct Evidence(Vec<(String, Vec<u8>)>);

impl Evidence {
    fn add(&mut self, source: impl Into<String>, content: impl AsRef<[u8]>) {
        self.0.push((source.into(), content.as_ref().to_vec()));
    }

    /// Fails naming each secret found, where, with some context. Each secret is searched
    /// whole and by its first 16 characters (a truncated leak still counts).
    fn assert_clean(&self, planted: &Planted) {
        let mut hits = Vec::new();
        for (purpose, secret) in &planted.0 {
            for needle in [secret.as_str(), &secret[..16]] {
                for (source, content) in &self.0 {
                    if let Some(at) = find(content, needle.as_bytes()) {
                        let from = at.saturating_sub(120);
                        let to = (at + needle.len() + 120).min(content.len());
                        hits.push(format!(
                            "{purpose} in {source}: …{}…",
                            String::from_utf8_lossy(&content[from..to])
                        ));
                    }
                }
            }
        }
        assert!(
            hits.is_empty(),
            "{} planted secret(s) leaked:\n{}",
            hits.len(),
            hits.join("\n")
        );
    }

    fn total_bytes(&self) -> usize {
        self.0.iter().map(|(_, c)| c.len()).sum()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One NATS message: its subject, and its headers followed by its payload.
type CapturedMessage = (String, Vec<u8>);

/// NATS messages seen by an independent subscriber.
#[derive(Clone, Default)]
struct NatsCapture(Arc<Mutex<Vec<CapturedMessage>>>);

impl NatsCapture {
    const MAX_MESSAGES: usize = 5000;

    async fn start(client: async_nats::Client) -> Self {
        let capture = Self::default();
        let mut subscription = client.subscribe(">").await.unwrap();
        let sink = capture.clone();
        tokio::spawn(async move {
            let _client = client;
            while let Some(message) = subscription.next().await {
                let mut seen = sink.0.lock().unwrap();
                if seen.len() < Self::MAX_MESSAGES {
                    let mut bytes = format!("{:?}\n", message.headers).into_bytes();
                    bytes.extend_from_slice(&message.payload);
                    seen.push((message.subject.to_string(), bytes));
                }
            }
        });
        capture
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn into_evidence(self, evidence: &mut Evidence) {
        for (subject, bytes) in self.0.lock().unwrap().iter() {
            evidence.add(format!("NATS message on {subject}"), bytes);
        }
    }
}

/// An OTLP/gRPC trace receiver: every exported span batch, as text (attribute values,
/// names and events appear verbatim).
#[derive(Clone, Default)]
struct SpanCapture {
    batches: Arc<Mutex<Vec<String>>>,
}

impl SpanCapture {
    const MAX_BATCHES: usize = 2000;

    /// Serves the receiver on a random loopback port; returns its endpoint URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        format!("http://{address}")
    }

    fn spans(&self) -> usize {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.matches("parent_span_id").count())
            .sum()
    }

    /// Whether some exported span text contains `text` (attribute values are verbatim).
    fn mention(&self, text: &str) -> bool {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .any(|b| b.contains(text))
    }

    fn into_evidence(self, evidence: &mut Evidence) {
        for (i, batch) in self.batches.lock().unwrap().iter().enumerate() {
            evidence.add(format!("OTLP span batch {i}"), batch);
        }
    }
}

#[tonic::async_trait]
impl TraceService for SpanCapture {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let text = format!("{:?} {:?}", request.metadata(), request.get_ref());
        let mut batches = self.batches.lock().unwrap();
        if batches.len() < Self::MAX_BATCHES {
            batches.push(text);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The coordination store of a scenario, with its planted credentials.
enum Store {
    /// etcd with authentication on; the locker logs in as root.
    Etcd(EtcdServer),
    /// The Consul double requiring an ACL token.
    Consul {
        _process: ChildProcess,
        address: String,
    },
}

/// How the cluster's NATS server authenticates.
enum NatsAuth {
    /// One user per client: the output, the input, and the test's observer.
    Users,
    /// One token for everyone.
    Token,
}

struct Scenario {
    dir: tempfile::TempDir,
    planted: Planted,
    store: Store,
    nats: NatsServer,
    nats_auth: NatsAuth,
    simulator: Simulator,
    http: reqwest::Client,
    spans: SpanCapture,
    otlp_endpoint: String,
}

/// A member's processes and ports.
struct Member {
    name: &'static str,
    api_port: u16,
    prom_port: u16,
    process: ChildProcess,
}

impl Scenario {
    async fn start(store_kind: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let planted = Planted::new(&[
            "device-password",
            "target-token",
            "wrong-device-password",
            "posted-target-password",
            "bad-body-password",
            "api-token",
            "wrong-api-token",
            "nats-output-password",
            "nats-input-password",
            "nats-token",
            "etcd-password",
            "consul-token",
            "consul-locker-password",
            "registration-password",
        ]);
        let (nats_auth, nats_options) = match store_kind {
            "etcd" => (
                NatsAuth::Users,
                NatsServerOptions {
                    extra_config: Some(format!(
                        "authorization {{\n  users = [\n    {{user: \"pub\", password: \"{}\"}}\n    {{user: \"sub\", password: \"{}\"}}\n    {{user: \"observer\", password: \"{OBSERVER_PASSWORD}\"}}\n  ]\n}}\n",
                        planted.get("nats-output-password"),
                        planted.get("nats-input-password")
                    )),
                    ..Default::default()
                },
            ),
            _ => (
                NatsAuth::Token,
                NatsServerOptions {
                    token: Some(planted.get("nats-token").to_string()),
                    ..Default::default()
                },
            ),
        };
        let nats = NatsServer::start_with(nats_options).unwrap();
        let store = match store_kind {
            "etcd" => {
                let etcd = EtcdServer::start().unwrap();
                etcd.enable_auth(planted.get("etcd-password"))
                    .await
                    .unwrap();
                Store::Etcd(etcd)
            }
            _ => {
                let address = format!("127.0.0.1:{}", free_port());
                let mut cmd = Command::new(workspace_binary("consul-double").unwrap());
                cmd.args(["--listen", &address, "--session-ttl-min", "1s"])
                    .args(["--acl-token", planted.get("consul-token")]);
                let process = ChildProcess::spawn("consul-double", cmd, dir.path()).unwrap();
                gnomon_testkit::wait_for_tcp(&address, Duration::from_secs(10)).unwrap();
                Store::Consul {
                    _process: process,
                    address,
                }
            }
        };
        let simulator = start_simulator(
            dir.path(),
            3,
            Some((DEVICE_USER, planted.get("device-password"))),
        )
        .await
        .unwrap();
        let http = gnomon_testkit::http_client_builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let spans = SpanCapture::default();
        let otlp_endpoint = spans.start().await;
        Self {
            dir,
            planted,
            store,
            nats,
            nats_auth,
            simulator,
            http,
            spans,
            otlp_endpoint,
        }
    }

    /// The observer's NATS connection (its own credentials where the server has users).
    async fn observer(&self) -> async_nats::Client {
        let options = match self.nats_auth {
            NatsAuth::Users => async_nats::ConnectOptions::with_user_and_password(
                "observer".into(),
                OBSERVER_PASSWORD.into(),
            ),
            NatsAuth::Token => {
                async_nats::ConnectOptions::with_token(self.planted.get("nats-token").into())
            }
        };
        tokio::time::timeout(Duration::from_secs(10), options.connect(self.nats.url()))
            .await
            .unwrap()
            .unwrap()
    }

    /// Member `name`'s config: every secret it can hold is planted.
    fn member_config(&self, name: &str, api_port: u16, prom_port: u16) -> String {
        let p = &self.planted;
        let devices = &self.simulator.devices;
        let mut text = format!(
            "encoding: proto\ninsecure: true\ntargets:\n  t0:\n    address: {}\n    username: {DEVICE_USER}\n    password: {}\n    token: {}\n  t1:\n    address: {}\n    username: {DEVICE_USER}\n    password: {}\n  t2:\n    address: {}\n    username: {DEVICE_USER}\n    password: {}\n    retry-timer: 1s\n",
            devices[0],
            p.get("device-password"),
            p.get("target-token"),
            devices[1],
            p.get("device-password"),
            devices[2],
            p.get("wrong-device-password"),
        );
        text.push_str(
            "subscriptions:\n  counters:\n    paths: [/interfaces/interface/state/counters]\n    stream-mode: sample\n    sample-interval: 1s\n    outputs: [nats-out]\n",
        );
        text.push_str(&format!(
            "api-server:\n  address: 127.0.0.1:{api_port}\n  token: {}\n",
            p.get("api-token")
        ));
        let locker = match &self.store {
            Store::Etcd(etcd) => format!(
                "    type: etcd\n    address: {}\n    username: root\n    password: {}\n",
                etcd.address(),
                p.get("etcd-password")
            ),
            Store::Consul { address, .. } => format!(
                "    type: consul\n    address: {address}\n    token: {}\n    username: locker\n    password: {}\n    delay: 1s\n",
                p.get("consul-token"),
                p.get("consul-locker-password")
            ),
        };
        text.push_str(&format!(
            "clustering:\n  cluster-name: planted\n  instance-name: {name}\n  targets-watch-timer: 2s\n  leader-wait-timer: 300ms\n  target-assignment-timeout: 5s\n  rebalance-threshold: 0\n  locker:\n{locker}    session-ttl: 2s\n    retry-timer: 500ms\n"
        ));
        let (output_auth, input_auth) = match self.nats_auth {
            NatsAuth::Users => (
                format!(
                    "    username: pub\n    password: {}\n",
                    p.get("nats-output-password")
                ),
                format!(
                    "    username: sub\n    password: {}\n",
                    p.get("nats-input-password")
                ),
            ),
            NatsAuth::Token => (
                format!("    token: {}\n", p.get("nats-token")),
                format!("    token: {}\n", p.get("nats-token")),
            ),
        };
        let registration = match &self.store {
            Store::Consul { address, .. } => format!(
                "    service-registration:\n      address: {address}\n      token: {}\n      username: registrar\n      password: {}\n      use-lock: true\n      check-interval: 5s\n",
                p.get("consul-token"),
                p.get("registration-password")
            ),
            Store::Etcd(_) => String::new(),
        };
        text.push_str(&format!(
            "outputs:\n  nats-out:\n    type: nats\n    address: {nats}\n    subject-prefix: telemetry\n    format: proto\n{output_auth}  prom:\n    type: prometheus\n    listen: 127.0.0.1:{prom_port}\n{registration}",
            nats = self.nats.address()
        ));
        text.push_str(&format!(
            "inputs:\n  nats-in:\n    type: nats\n    address: {}\n    subject: \"telemetry.>\"\n    format: proto\n    outputs: [prom]\n{input_auth}",
            self.nats.address()
        ));
        text
    }

    fn start_member(&self, name: &'static str) -> Member {
        let (api_port, prom_port) = (free_port(), free_port());
        let config = self.member_config(name, api_port, prom_port);
        // Spans leave the process too (OTLP to the test's receiver, batches every 200 ms).
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.otlp_endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ];
        let process = spawn_gnomon(self.dir.path(), name, "all", &config, api_port, &env).unwrap();
        Member {
            name,
            api_port,
            prom_port,
            process,
        }
    }
}

fn api(member: &Member) -> String {
    format!("http://127.0.0.1:{}", member.api_port)
}

fn logs(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("==== {} ====\n{}\n", m.name, m.process.log()))
        .collect()
}

/// GETs `url` and records its status line, headers and body.
async fn get_into(http: &reqwest::Client, url: &str, evidence: &mut Evidence) -> Option<String> {
    let response = http.get(url).send().await.ok()?;
    let head = format!("{:?} {:?}\n", response.status(), response.headers());
    let body = response.text().await.ok()?;
    evidence.add(format!("GET {url}"), format!("{head}{body}"));
    Some(body)
}

async fn cluster_view(http: &reqwest::Client, member: &Member) -> Option<serde_json::Value> {
    let (status, body) = send(http.get(format!("{}/api/v1/cluster", api(member)))).await?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// The member's runtime view of `target`, when it collects it.
async fn target_view(
    http: &reqwest::Client,
    member: &Member,
    target: &str,
) -> Option<serde_json::Value> {
    let (status, body) = send(http.get(format!("{}/api/v1/targets/{target}", api(member)))).await?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

async fn run_scenario(store_kind: &str) {
    let scenario = Scenario::start(store_kind).await;
    let p = &scenario.planted;
    let http = &scenario.http;
    let capture = NatsCapture::start(scenario.observer().await).await;
    let mut members = vec![scenario.start_member("m1"), scenario.start_member("m2")];
    let mut evidence = Evidence::default();

    // The file's three targets are placed and locked; the two with the right password stream.
    let cluster = eventually("three targets locked", Duration::from_secs(40), || async {
        let view = cluster_view(http, &members[0]).await?;
        (view["number-of-locked-targets"] == 3).then_some(view)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&members)));
    eventually(
        "devices 0 and 1 streamed",
        Duration::from_secs(30),
        || async {
            let stats = scenario.simulator.subscriptions().await.ok()?;
            let devices = &scenario.simulator.devices;
            (stats.get(&devices[0]) == Some(&1) && stats.get(&devices[1]) == Some(&1)).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&members)));
    let leader = cluster["leader"].as_str().unwrap().to_string();

    // Errors that carry configuration: a bad body with a secret in the wrong shape, a bad
    // duration next to a password, a wrong API token.
    let configs_url = format!("{}/api/v1/config/targets", api(&members[1]));
    let bad_shape = serde_json::json!({
        "name": "bad", "address": scenario.simulator.devices[0],
        "password": {"nested": p.get("bad-body-password")}
    });
    let (status, body) = send(
        http.post(&configs_url)
            .json(&bad_shape)
            .bearer_auth(p.get("api-token")),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(first_error(&body).starts_with("password: "), "{body}");
    evidence.add("POST bad-shaped password", &body);
    let bad_duration = serde_json::json!({
        "name": "bad", "address": scenario.simulator.devices[0],
        "password": p.get("bad-body-password"), "timeout": "soon"
    });
    let (status, body) = send(
        http.post(&configs_url)
            .json(&bad_duration)
            .bearer_auth(p.get("api-token")),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");
    evidence.add("POST bad duration", &body);
    let posted = serde_json::json!({
        "name": "posted", "address": scenario.simulator.devices[0], "username": DEVICE_USER,
        "password": p.get("posted-target-password"), "retry-timer": 1_000_000_000u64,
        "subscriptions": ["counters"]
    });
    let (status, body) = send(
        http.post(&configs_url)
            .json(&posted)
            .bearer_auth(p.get("wrong-api-token")),
    )
    .await
    .unwrap();
    assert_eq!(status, 401, "{body}");
    evidence.add("POST with a wrong API token", &body);
    // The right token: the config goes to the store, the leader pushes it (with the
    // password) to a member, which fails to log in to the device with it.
    let (status, body) = send(
        http.post(&configs_url)
            .json(&posted)
            .bearer_auth(p.get("api-token")),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");

    // Both wrong passwords end up as a target error on the member collecting the target.
    for target in ["t2", "posted"] {
        let what = format!("{target} fails with an error");
        eventually(&what, Duration::from_secs(30), || async {
            for member in &members {
                if let Some(view) = target_view(http, member, target).await {
                    if view["last-error"].as_str().is_some_and(|e| !e.is_empty()) {
                        return Some(());
                    }
                }
            }
            None
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&members)));
    }
    // Data flowed: NATS carried messages and an exporter serves the targets' metrics.
    eventually("NATS messages", Duration::from_secs(20), || async {
        (capture.len() >= 4).then_some(())
    })
    .await
    .unwrap();
    eventually("exported metrics", Duration::from_secs(20), || async {
        for member in &members {
            let url = format!("http://127.0.0.1:{}/metrics", member.prom_port);
            if let Some((200, body)) = send(http.get(url)).await {
                if body.contains("t0") {
                    return Some(());
                }
            }
        }
        None
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&members)));

    // With Consul, the exporter registered itself with the ACL token (use-lock): `/sd`
    // lists it.
    if matches!(scenario.store, Store::Consul { .. }) {
        eventually(
            "the exporter registered",
            Duration::from_secs(30),
            || async {
                for member in &members {
                    let url = format!("http://127.0.0.1:{}/sd", member.prom_port);
                    if let Some((200, body)) = send(http.get(url)).await {
                        if members
                            .iter()
                            .any(|m| body.contains(&format!("127.0.0.1:{}", m.prom_port)))
                        {
                            return Some(());
                        }
                    }
                }
                None
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&members)));
    }

    // Every GET endpoint of every member, with its headers.
    for member in &members {
        let base = api(member);
        let mut paths: Vec<String> = [
            "/api/v1/healthz",
            "/api/v1/targets",
            "/api/v1/config",
            "/api/v1/config/targets",
            "/api/v1/config/subscriptions",
            "/api/v1/config/clustering",
            "/api/v1/config/outputs",
            "/api/v1/config/inputs",
            "/api/v1/config/api-server",
            "/api/v1/cluster",
            "/api/v1/cluster/members",
            "/api/v1/cluster/leader",
            "/api/v1/cluster/assignments",
            "/metrics",
            "/no/such/route",
        ]
        .iter()
        .map(|p| p.to_string())
        .collect();
        for target in ["t0", "t1", "t2", "posted", "bad"] {
            paths.push(format!("/api/v1/targets/{target}"));
            paths.push(format!("/api/v1/config/targets/{target}"));
        }
        for path in paths {
            get_into(http, &format!("{base}{path}"), &mut evidence).await;
        }
        for path in ["/metrics", "/sd"] {
            let url = format!("http://127.0.0.1:{}{path}", member.prom_port);
            get_into(http, &url, &mut evidence).await;
        }
    }
    // The configs shown are redacted, not absent: the test would see a leak there.
    let configs = get_into(http, &configs_url, &mut evidence).await.unwrap();
    assert!(configs.contains("\"password\":\"****\""), "{configs}");

    // Remove the posted target cluster-wide (the leader stops it), then stop the members
    // gracefully so shutdown paths log too.
    let (status, body) = send(
        http.delete(format!("{configs_url}/posted"))
            .bearer_auth(p.get("api-token")),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let follower = members.iter().position(|m| m.name != leader).unwrap();
    members[follower].process.terminate(Duration::from_secs(10));
    let survivor = 1 - follower;
    eventually(
        "the survivor holds every target",
        Duration::from_secs(30),
        || async {
            let view = cluster_view(http, &members[survivor]).await?;
            (view["number-of-locked-targets"] == 3 && view["members"].as_array()?.len() == 1)
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&members)));
    for member in members.iter_mut() {
        member.process.terminate(Duration::from_secs(10));
    }

    // Everything the processes printed, and what NATS carried.
    for member in &members {
        let log = member.process.log();
        assert!(
            log.contains("DEBUG"),
            "{} did not log at debug level",
            member.name
        );
        evidence.add(format!("log of {}", member.name), log);
    }
    evidence.add("log of the simulator", scenario.simulator.process.log());
    get_into(http, &scenario.simulator.stats_url, &mut evidence).await;
    capture.into_evidence(&mut evidence);
    assert!(
        scenario.spans.spans() > 0,
        "no spans were exported\n{}",
        logs(&members)
    );
    assert!(
        scenario.spans.mention("gnmic/planted/targets/t0"),
        "span attributes do not show the lock keys"
    );
    let span_count = scenario.spans.spans();
    scenario.spans.clone().into_evidence(&mut evidence);
    assert!(evidence.total_bytes() > 10_000, "too little was collected");
    eprintln!(
        "{store_kind}: searched {} sources ({} bytes, {span_count} spans) for {} secrets",
        evidence.0.len(),
        evidence.total_bytes(),
        p.0.len()
    );
    evidence.assert_clean(p);
}

#[tokio::test]
async fn planted_secrets_never_leak_with_etcd() {
    run_scenario("etcd").await;
}

#[tokio::test]
async fn planted_secrets_never_leak_with_consul() {
    run_scenario("consul").await;
}

/// A configuration that fails to load names the key, never the secret value.
#[tokio::test]
async fn config_errors_name_the_key_not_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let planted = Planted::new(&["target-password", "api-token", "output-password"]);
    let cases = [
        (
            "targets.r1.password",
            format!(
                "targets:\n  r1:\n    address: 127.0.0.1:1\n    password: [{}]\n",
                planted.get("target-password")
            ),
        ),
        (
            "api-server.token",
            format!(
                "api-server:\n  address: 127.0.0.1:1\n  token: {{value: {}}}\n",
                planted.get("api-token")
            ),
        ),
        (
            "outputs.o.password",
            format!(
                "outputs:\n  o:\n    type: nats\n    password: [{}]\n",
                planted.get("output-password")
            ),
        ),
    ];
    let mut evidence = Evidence::default();
    for (key, config) in cases {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, config).unwrap();
        let output = Command::new(gnomon_testkit::gnomon_binary().unwrap())
            .args(["collector", "--config"])
            .arg(&path)
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !output.status.success(),
            "{key}: the bad config was accepted"
        );
        assert!(
            printed.contains(&format!("{key}: ****")),
            "{key}: {printed}"
        );
        evidence.add(format!("output for a bad {key}"), printed);
    }
    evidence.assert_clean(&planted);
}
