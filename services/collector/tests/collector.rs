//! Collector end to end: gnmic-style configs against the simulator (and splice-gnmi)
//! with a real nats-server, checked by an independent NATS subscriber and the REST API.

use futures::StreamExt;
use gnomon_bus::{Bus, BusMessage, NatsBus, NatsOptions};
use gnomon_collector::run;
use gnomon_config::{load_config_with_env, ConfigFormat, GnomonConfig};
use gnomon_gnmi::event::events_from_json;
use gnomon_gnmi::proto::gnmi::{subscribe_response::Response, SubscribeResponse};
use gnomon_simulator::{Simulator, SimulatorArgs};
use gnomon_testkit::{eventually, free_port, ChildProcess, NatsServer};
use prost::Message;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn load(yaml: &str) -> GnomonConfig {
    load_config_with_env(yaml, ConfigFormat::Yaml, &[])
        .unwrap_or_else(|e| panic!("config: {e}\n{yaml}"))
}

struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    api: String,
    http: reqwest::Client,
}

impl Running {
    fn start(config: GnomonConfig) -> Self {
        let api = config
            .api
            .as_ref()
            .map(|a| {
                let scheme = if a.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{}", a.address)
            })
            .unwrap_or_default();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(config, shutdown.clone()));
        // The API's self-signed certificate is accepted here; what matters is that it is TLS.
        let http = gnomon_testkit::http_client_builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        Self {
            shutdown,
            task,
            api,
            http,
        }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = self
            .http
            .get(format!("{}{path}", self.api))
            .send()
            .await
            .ok()?;
        Some((response.status().as_u16(), response.text().await.ok()?))
    }

    async fn target_json(&self, name: &str) -> Option<serde_json::Value> {
        let (status, body) = self.get(&format!("/api/v1/targets/{name}")).await?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(15), self.task).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "collector did not stop cleanly: {result:?}"
        );
    }
}

async fn simulator(args: SimulatorArgs) -> Simulator {
    Simulator::start(args).await.expect("simulator starts")
}

/// A `gnomon_target_up` report (event JSON whatever the output's format), not data.
fn is_target_up(message: &BusMessage) -> bool {
    message.headers.subscription.as_deref() == Some(gnomon_bus::contract::TARGET_STATUS)
}

/// Collects every message on `subject` for a while.
async fn collect(bus: &NatsBus, subject: &str) -> tokio::sync::mpsc::Receiver<BusMessage> {
    let mut subscription = bus.subscribe(subject, None).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(100_000);
    tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            if tx.try_send(message).is_err() {
                break;
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gnmic_config_publishes_both_formats_for_every_target_and_subscription() {
    let nats = NatsServer::start().unwrap();
    let mut args = SimulatorArgs::on_free_ports(2);
    args.update_rate = Duration::from_millis(100);
    let sim = simulator(args).await;
    let [a, b] = [sim.device_addresses()[0], sim.device_addresses()[1]];
    let api_port = free_port();
    let yaml = format!(
        r#"
insecure: true
encoding: json_ietf
api: 127.0.0.1:{api_port}
targets:
  {a}:
  dev-b:
    address: {b}
    event-tags:
      site: lab
subscriptions:
  counters:
    paths: ["/interfaces/interface[name=Ethernet1]/state/counters"]
    stream-mode: sample
    sample-interval: 200ms
  system:
    paths: ["/system/state/hostname"]
    mode: once
outputs:
  proto-out:
    type: nats
    address: {nats}
    subject-prefix: gnmi
    format: proto
  event-out:
    type: nats
    address: {nats}
    subject: events
"#,
        nats = nats.address()
    );
    let bus = NatsBus::connect(&NatsOptions::new(nats.url()))
        .await
        .unwrap();
    let mut proto_rx = collect(&bus, "gnmi.>").await;
    let mut event_rx = collect(&bus, "events").await;
    let collector = Running::start(load(&yaml));

    let expected: BTreeSet<(String, String)> = [a.to_string(), "dev-b".to_string()]
        .into_iter()
        .flat_map(|t| ["counters", "system"].map(|s| (t.clone(), s.to_string())))
        .collect();
    // proto: SubscribeResponse bytes on <prefix>.<source with . → ->.<subscription>
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen != expected && tokio::time::Instant::now() < deadline {
        let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(1), proto_rx.recv()).await
        else {
            continue;
        };
        if is_target_up(&message) {
            continue;
        }
        let response =
            SubscribeResponse::decode(message.payload.clone()).expect("proto payload decodes");
        let target = message.headers.target.clone().expect("target header");
        let subscription = message
            .headers
            .subscription
            .clone()
            .expect("subscription header");
        assert_eq!(message.headers.fencing_token, None);
        assert_eq!(
            message.subject,
            format!("gnmi.{}.{subscription}", target.replace('.', "-"))
        );
        if let Some(Response::Update(notification)) = response.response {
            assert!(!notification.update.is_empty() || !notification.delete.is_empty());
            seen.insert((target, subscription));
        }
    }
    assert_eq!(
        seen, expected,
        "proto messages for every target and subscription"
    );

    // event: gnmic event JSON arrays on the single subject
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen != expected && tokio::time::Instant::now() < deadline {
        let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(1), event_rx.recv()).await
        else {
            continue;
        };
        assert_eq!(message.subject, "events");
        if is_target_up(&message) {
            continue;
        }
        let events = events_from_json(&message.payload).expect("event payload decodes");
        assert!(!events.is_empty());
        for event in events {
            let source = event.tags["source"].clone();
            let subscription = event.tags["subscription-name"].clone();
            assert_eq!(event.name, subscription);
            assert_eq!(message.headers.target.as_deref(), Some(source.as_str()));
            if source == "dev-b" {
                assert_eq!(event.tags.get("site").map(String::as_str), Some("lab"));
            }
            if subscription == "counters" {
                assert_eq!(
                    event.tags.get("interface_name").map(String::as_str),
                    Some("Ethernet1")
                );
                assert!(event
                    .values
                    .keys()
                    .all(|k| k.starts_with("/interfaces/interface/state/counters/")));
            }
            seen.insert((source, subscription));
        }
    }
    assert_eq!(
        seen, expected,
        "event messages for every target and subscription"
    );

    // REST API: runtime targets in gnmic's shape, states, counters, health and metrics.
    let targets: serde_json::Value =
        serde_json::from_str(&collector.get("/api/v1/targets").await.unwrap().1).unwrap();
    assert_eq!(targets.as_object().unwrap().len(), 2);
    let dev_b = &targets["dev-b"];
    assert_eq!(dev_b["config"]["address"], b.to_string());
    assert!(dev_b["subscriptions"]["counters"]["paths"].is_array());
    assert_eq!(dev_b["state"], "streaming");
    assert!(dev_b["updates"].as_u64().unwrap() > 0);
    assert_eq!(
        collector.get("/api/v1/healthz").await.unwrap(),
        (200, "{\"status\":\"healthy\"}".into())
    );
    assert_eq!(collector.get("/api/v1/targets/nope").await.unwrap().0, 404);
    let metrics = collector.get("/metrics").await.unwrap().1;
    assert!(
        metrics.contains("gnmic_target_up{name=\"dev-b\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gnomon_target_updates_total{target=\"dev-b\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "gnmic_subscribe_number_of_received_subscribe_response_messages_total{source=\"dev-b\","
        ),
        "{metrics}"
    );
    // The cluster-wide up series is the exporter's; a collector serves gnmic's own only.
    assert!(!metrics.contains("gnomon_target_up{"), "{metrics}");
    for family in metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split(' ').next().unwrap_or_default();
        assert!(
            metrics.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{metrics}"
        );
    }
    collector.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_credentials_and_the_api_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("sim-ca.pem");
    let mut args = SimulatorArgs::on_free_ports(1);
    args.tls = true;
    args.tls_export_cert = Some(ca.clone());
    args.username = Some("admin".into());
    args.password = Some("s3cret-pw".into());
    let sim = simulator(args).await;
    let device = sim.device_addresses()[0];
    let out = dir.path().join("events.jsonl");
    let api_port = free_port();
    let yaml = format!(
        r#"
username: admin
password: s3cret-pw
api-server:
  address: 127.0.0.1:{api_port}
  tls: {{}}
targets:
  verified:
    address: {device}
    tls-ca: {ca}
  skip:
    address: {device}
    skip-verify: true
  wrong-password:
    address: {device}
    skip-verify: true
    password: not-it
    retry-timer: 1s
subscriptions:
  sys:
    paths: ["/system/state"]
    stream-mode: on-change
outputs:
  file:
    type: file
    filename: {out}
"#,
        ca = ca.display(),
        out = out.display()
    );
    let collector = Running::start(load(&yaml));
    for name in ["verified", "skip"] {
        eventually(
            &format!("{name} streaming"),
            Duration::from_secs(15),
            || async {
                collector
                    .target_json(name)
                    .await
                    .filter(|t| t["state"] == "streaming" && t["updates"].as_u64() > Some(0))
            },
        )
        .await
        .unwrap();
    }
    let failed = eventually(
        "UNAUTHENTICATED reason",
        Duration::from_secs(15),
        || async {
            collector
                .target_json("wrong-password")
                .await
                .filter(|t| t["state"] == "failed")
        },
    )
    .await
    .unwrap();
    let reason = failed["last-error"].as_str().unwrap();
    assert!(reason.contains("UNAUTHENTICATED"), "{reason}");
    // Secrets never appear in GET responses.
    let all = collector.get("/api/v1/targets").await.unwrap().1;
    let configs = collector.get("/api/v1/config/targets").await.unwrap().1;
    for body in [&all, &configs] {
        assert!(
            !body.contains("s3cret-pw") && !body.contains("not-it"),
            "{body}"
        );
        assert!(body.contains("\"password\":\"****\""));
    }
    // The file output got JSON lines of events from both good targets.
    let lines = eventually("file output lines", Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let sources: BTreeSet<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|e| e["tags"]["source"].as_str().map(str::to_string))
            .collect();
        (sources.len() == 2).then_some(sources)
    })
    .await
    .unwrap();
    assert!(lines.contains("verified") && lines.contains("skip"));

    // The coordinator's calls: POST a config (ns durations), start it, delete it.
    assert!(collector.api.starts_with("https://"));
    let client = &collector.http;
    let base = &collector.api;
    let body = serde_json::json!({
        "name": "posted", "address": device.to_string(), "skip-verify": true,
        "timeout": 5_000_000_000u64, "retry-timer": 1_000_000_000u64, "subscriptions": ["sys"]
    });
    let posted = client
        .post(format!("{base}/api/v1/config/targets"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 200);
    let bad = client
        .post(format!("{base}/api/v1/config/targets"))
        .body("{\"name\":\"x\",\"timeout\":\"soon\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let errors: serde_json::Value = bad.json().await.unwrap();
    assert!(
        errors["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("timeout: \"soon\" is not a duration"),
        "{errors}"
    );
    let bad = client
        .post(format!("{base}/api/v1/config/targets"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let unknown = client
        .post(format!("{base}/api/v1/targets/never-configured"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    let started = client
        .post(format!("{base}/api/v1/targets/posted"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status().as_u16(), 200);
    let posted_view = eventually(
        "posted target streaming",
        Duration::from_secs(15),
        || async {
            collector
                .target_json("posted")
                .await
                .filter(|t| t["state"] == "streaming")
        },
    )
    .await
    .unwrap();
    assert_eq!(posted_view["config"]["timeout"], 5_000_000_000u64);
    // While it runs here, its gnmic instance series are on this member's /metrics …
    let metrics = eventually("posted target up", Duration::from_secs(15), || async {
        let text = collector.get("/metrics").await?.1;
        text.contains("gnmic_target_up{name=\"posted\"} 1")
            .then_some(text)
    })
    .await
    .unwrap();
    assert!(metrics.contains("\"posted\""), "{metrics}");
    let deleted = client
        .delete(format!("{base}/api/v1/targets/posted"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    assert_eq!(
        collector.get("/api/v1/targets/posted").await.unwrap().0,
        404
    );
    // … and once it stops running here (deleted, or moved to another member) none is left
    // behind: no stale `up 0` for a dashboard to count twice.
    let metrics = collector.get("/metrics").await.unwrap().1;
    let stale: Vec<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("\"posted\""))
        .collect();
    assert!(
        stale.is_empty(),
        "series of a target no longer here: {stale:?}"
    );
    assert_eq!(
        collector
            .get("/api/v1/config/targets/posted")
            .await
            .unwrap()
            .0,
        404
    );
    let again = client
        .delete(format!("{base}/api/v1/targets/posted"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 404);
    collector.stop().await;
    sim.stop().await;
}

fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_down_then_back_reconnects_within_twice_the_max_backoff() {
    let port = free_port();
    let mut args = SimulatorArgs::on_free_ports(1);
    args.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let sim = simulator(args.clone()).await;
    let api_port = free_port();
    let max_backoff = Duration::from_secs(2);
    let yaml = format!(
        r#"
insecure: true
api: 127.0.0.1:{api_port}
targets:
  flaky:
    address: 127.0.0.1:{port}
    retry-timer: 2s
    timeout: 1s
subscriptions:
  counters:
    paths: ["/interfaces/interface/state/counters"]
    stream-mode: sample
    sample-interval: 500ms
"#
    );
    let collector = Running::start(load(&yaml));
    let series = "gnmic_target_up{name=\"flaky\"}";
    let metric = || async {
        let text = collector.get("/metrics").await?.1;
        metric_value(&text, series)
    };
    eventually("target up", Duration::from_secs(15), || async {
        metric().await.filter(|v| *v == 1.0)
    })
    .await
    .unwrap();
    sim.stop().await;
    eventually("target up drops to 0", Duration::from_secs(15), || async {
        metric().await.filter(|v| *v == 0.0)
    })
    .await
    .unwrap();
    // While the target is away its attempts are spaced by the backoff (0.5 s doubling up
    // to the 2 s cap): a few failures in 4 s, where a retry loop without the backoff makes
    // hundreds. (Counted, not timed as CPU: the other tests of this binary share the
    // process.)
    let errors = || async {
        let text = collector.get("/metrics").await?.1;
        metric_value(&text, "gnomon_target_errors_total{target=\"flaky\"}")
    };
    let errors_before = errors().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let attempts = errors().await.unwrap() - errors_before;
    assert!(
        attempts <= 6.0,
        "{attempts} failed attempts in 4 s: the reconnect backoff is not applied"
    );
    let view = collector.target_json("flaky").await.unwrap();
    assert_eq!(view["state"], "failed");
    assert!(
        view["last-error"].as_str().unwrap().contains("127.0.0.1"),
        "{view}"
    );
    let sim = simulator(args).await;
    eventually(
        "reconnected",
        max_backoff * 2 + Duration::from_secs(1),
        || async { metric().await.filter(|v| *v == 1.0) },
    )
    .await
    .unwrap();
    collector.stop().await;
    sim.stop().await;
}

/// splice-gnmi (third-party Python target): STREAM and ONCE, float_val and no sync after polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splice_gnmi_stream_once_and_poll() {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        python.is_file(),
        "the Python venv with splice-gnmi is missing at {}: run scripts/setup",
        python.display()
    );
    let scratch = tempfile::tempdir().unwrap();
    let port = free_port();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/splice_sim.py");
    let mut command = std::process::Command::new(&python);
    command
        .arg(&script)
        .arg(port.to_string())
        .arg("1")
        .env("TMPDIR", scratch.path());
    let splice = ChildProcess::spawn("splice-gnmi", command, scratch.path()).unwrap();
    eventually("splice-gnmi listening", Duration::from_secs(60), || async {
        splice.log().contains("gNMI server listening").then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", splice.log()));
    let nats = NatsServer::start().unwrap();
    let api_port = free_port();
    let yaml = format!(
        r#"
insecure: true
api: 127.0.0.1:{api_port}
targets:
  splice:
    address: 127.0.0.1:{port}
subscriptions:
  stream:
    paths: ["/org-openroadm-device"]
    stream-mode: sample
    sample-interval: 1s
  once:
    paths: ["/org-openroadm-device"]
    mode: once
  poll:
    paths: ["/org-openroadm-device"]
    mode: poll
    poll-interval: 1s
outputs:
  nats:
    type: nats
    address: {nats}
    subject-prefix: splice
"#,
        nats = nats.address()
    );
    let bus = NatsBus::connect(&NatsOptions::new(nats.url()))
        .await
        .unwrap();
    let mut rx = collect(&bus, "splice.>").await;
    let collector = Running::start(load(&yaml));
    let mut seen = BTreeSet::new();
    let (mut stream_messages, mut poll_messages) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (seen.len() < 3 || stream_messages < 2 || poll_messages < 3)
        && tokio::time::Instant::now() < deadline
    {
        let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await
        else {
            continue;
        };
        if is_target_up(&message) {
            continue;
        }
        let events = events_from_json(&message.payload).expect("events decode");
        let Some(subscription) = message.headers.subscription.clone() else {
            continue;
        };
        if events.iter().any(|e| !e.values.is_empty()) {
            match subscription.as_str() {
                "stream" => stream_messages += 1,
                "poll" => poll_messages += 1,
                _ => {}
            }
            seen.insert(subscription);
        }
    }
    assert_eq!(
        seen,
        ["once", "poll", "stream"]
            .map(String::from)
            .into_iter()
            .collect(),
        "target: {:?}\nsplice-gnmi: {}",
        collector.target_json("splice").await,
        splice.log()
    );
    assert!(
        stream_messages >= 2,
        "repeated samples from the STREAM subscription"
    );
    // Polls keep being answered although splice sends no sync_response after them.
    assert!(
        poll_messages >= 3,
        "initial POLL snapshot plus two answered polls, got {poll_messages}"
    );
    let view = collector.target_json("splice").await.unwrap();
    assert_eq!(view["state"], "streaming", "{view}");
    collector.stop().await;
}

/// What a coordinator relies on: the fencing token travels in the NATS headers, POLL is
/// polled on its interval, and a lost lock ends the subscriptions at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_targets_carry_the_fencing_token_and_stop_when_the_lock_is_lost() {
    use gnomon_collector::{CollectorHandle, Ownership, TargetState};
    let nats = NatsServer::start().unwrap();
    let mut args = SimulatorArgs::on_free_ports(1);
    args.update_rate = Duration::from_millis(100);
    let sim = simulator(args).await;
    let device = sim.device_addresses()[0];
    let yaml = format!(
        r#"
insecure: true
targets:
  owned:
    address: {device}
subscriptions:
  counters:
    paths: ["/interfaces/interface/state/counters"]
    stream-mode: sample
    sample-interval: 200ms
  polled:
    paths: ["/system/state/hostname"]
    mode: poll
    poll-interval: 300ms
outputs:
  nats:
    type: nats
    address: {nats}
    subject-prefix: own
    format: proto
"#,
        nats = nats.address()
    );
    let bus = NatsBus::connect(&NatsOptions::new(nats.url()))
        .await
        .unwrap();
    let mut rx = collect(&bus, "own.>").await;
    let collector = CollectorHandle::new(load(&yaml)).unwrap();
    let lost = CancellationToken::new();
    collector
        .start_target(
            "owned",
            Some(Ownership {
                fencing_token: 42,
                lost: lost.clone(),
            }),
        )
        .unwrap();
    let mut polled = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while polled < 3 && tokio::time::Instant::now() < deadline {
        let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await
        else {
            continue;
        };
        assert_eq!(
            message.headers.fencing_token,
            Some(42),
            "fencing token header"
        );
        if is_target_up(&message) {
            continue;
        }
        let response = SubscribeResponse::decode(message.payload).unwrap();
        if message.headers.subscription.as_deref() == Some("polled")
            && matches!(response.response, Some(Response::Update(_)))
        {
            polled += 1;
        }
    }
    assert!(
        polled >= 3,
        "initial POLL snapshot plus answers to at least two polls, got {polled}"
    );
    assert_eq!(collector.target("owned").unwrap().fencing_token, 42);

    lost.cancel();
    let view = eventually(
        "stopped after the lock was lost",
        Duration::from_secs(5),
        || async {
            collector
                .target("owned")
                .filter(|t| t.status.state == TargetState::Stopped)
        },
    )
    .await
    .unwrap();
    assert_eq!(view.status.last_error.as_deref(), Some("target lock lost"));
    eventually(
        "simulator sees no subscription",
        Duration::from_secs(5),
        || async {
            let stats = sim.stats();
            (stats.targets.get(&device.to_string())?.subscriptions == 0).then_some(())
        },
    )
    .await
    .unwrap();
    assert!(collector.stop_target("owned").await);
    assert!(collector.target("owned").is_none());
    assert!(!collector.stop_target("owned").await);
    collector.shutdown().await;
    sim.stop().await;
}

#[tokio::test]
async fn an_api_address_in_use_is_an_error_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let config = load(&format!("api: {address}\n"));
    let error = run(config, CancellationToken::new()).await.unwrap_err();
    assert!(
        format!("{error:#}").contains(&format!("cannot listen on api address {address}")),
        "{error:#}"
    );
}

/// Issue 14.4: a target address where an HTTP server that is not gNMI answers (here a
/// Prometheus-style `/metrics` listener) is a failed target with a last error, reported down
/// and retried — not "streaming" with no data forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_gnmi_is_a_failed_target_and_retried() {
    let shutdown = CancellationToken::new();
    let listener = gnomon_api_server::Listener::bind("not-gnmi", "127.0.0.1:0")
        .await
        .unwrap();
    let port = listener.local_addr().port();
    let router = axum::Router::new().route("/metrics", axum::routing::get(|| async { "up 1\n" }));
    let _server = listener.spawn(
        router,
        None,
        gnomon_api_server::ListenerOptions::default(),
        shutdown.clone(),
    );
    let api_port = free_port();
    let yaml = format!(
        r#"
insecure: true
api: 127.0.0.1:{api_port}
targets:
  not-gnmi:
    address: 127.0.0.1:{port}
    retry-timer: 500ms
    timeout: 2s
subscriptions:
  counters:
    paths: ["/interfaces/interface/state/counters"]
    stream-mode: sample
    sample-interval: 1s
  status:
    paths: ["/interfaces/interface/state/oper-status"]
    stream-mode: on-change
"#
    );
    let collector = Running::start(load(&yaml));
    let view = eventually(
        "a failed state with an error",
        Duration::from_secs(15),
        || async {
            let view = collector.target_json("not-gnmi").await?;
            (view["state"] == "failed" && view["last-error"].is_string()).then_some(view)
        },
    )
    .await
    .unwrap();
    assert!(
        view["last-error"]
            .as_str()
            .unwrap_or_default()
            .contains("UNIMPLEMENTED")
            || view["last-error"]
                .as_str()
                .unwrap_or_default()
                .contains("not a gNMI"),
        "{view}"
    );
    let metrics = collector.get("/metrics").await.unwrap().1;
    assert!(
        metrics.contains("gnmic_target_up{name=\"not-gnmi\"} 0"),
        "{metrics}"
    );
    // Retried: the error count keeps growing.
    let errors = |text: &str| metric_value(text, "gnomon_target_errors_total{target=\"not-gnmi\"}");
    let first = errors(&metrics).unwrap_or(0.0);
    eventually("another attempt", Duration::from_secs(15), || async {
        let text = collector.get("/metrics").await?.1;
        errors(&text).filter(|n| *n > first)
    })
    .await
    .unwrap();
    collector.stop().await;
    shutdown.cancel();
}
