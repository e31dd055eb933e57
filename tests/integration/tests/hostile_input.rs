//! Issue 14's probes against the real binary (`gnomon demo`: collector, coordinator and
//! exporter in one process over the memory locker and the in-process bus): each test
//! reproduces what a hostile or careless user did and checks gnomon now holds.

use gnomon_testkit::{eventually, free_port, gnomon_binary, ChildProcess};
use std::process::Command;
use std::time::Duration;

/// A running `gnomon demo` with its API and exporter addresses.
struct Demo {
    process: ChildProcess,
    api: String,
    metrics: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Demo {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (api, metrics) = (free_port(), free_port());
        let mut cmd = Command::new(gnomon_binary().unwrap());
        cmd.args([
            "demo",
            "--devices",
            "2",
            "--api",
            &format!("127.0.0.1:{api}"),
            "--metrics-listen",
            &format!("127.0.0.1:{metrics}"),
        ]);
        let process = ChildProcess::spawn("demo", cmd, dir.path()).unwrap();
        let demo = Self {
            process,
            api: format!("http://127.0.0.1:{api}"),
            metrics: format!("http://127.0.0.1:{metrics}/metrics"),
            http: gnomon_testkit::http_client_builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            _dir: dir,
        };
        let ready = eventually("device1 collected", Duration::from_secs(30), || async {
            demo.scrape()
                .await
                .filter(|text| text.contains("gnomon_target_up{target=\"device1\"} 1"))
        })
        .await;
        if let Err(e) = ready {
            panic!("{e}\n{}", demo.process.log());
        }
        demo
    }

    async fn scrape(&self) -> Option<String> {
        let response = self.http.get(&self.metrics).send().await.ok()?;
        response.text().await.ok()
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<String>) -> u16 {
        let mut request = self.http.request(method, format!("{}{path}", self.api));
        if let Some(body) = body {
            request = request.body(body);
        }
        request
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// The address of a simulated device, so added targets really stream.
    async fn device_address(&self) -> String {
        let configs: serde_json::Value = self
            .http
            .get(format!("{}/api/v1/config/targets", self.api))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        configs["device1"]["address"].as_str().unwrap().to_string()
    }
}

/// Issue 14.6: targets added, started and deleted through the API left their
/// `gnomon_target_up` series on the exporter for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_targets_leave_no_up_series_on_the_exporter() {
    let demo = Demo::start().await;
    let address = demo.device_address().await;
    let names: Vec<String> = (1..=6).map(|i| format!("cycle{i}")).collect();
    for name in &names {
        let body = serde_json::json!({ "name": name, "address": address }).to_string();
        assert_eq!(
            demo.send(reqwest::Method::POST, "/api/v1/config/targets", Some(body))
                .await,
            200
        );
        demo.send(
            reqwest::Method::POST,
            &format!("/api/v1/targets/{name}"),
            None,
        )
        .await;
    }
    // Every one streams (up 1 on the exporter) before it is deleted.
    eventually("every cycle target up", Duration::from_secs(30), || async {
        let text = demo.scrape().await?;
        names
            .iter()
            .all(|n| text.contains(&format!("gnomon_target_up{{target=\"{n}\"}} 1")))
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", demo.process.log()));
    for name in &names {
        assert_eq!(
            demo.send(
                reqwest::Method::DELETE,
                &format!("/api/v1/config/targets/{name}"),
                None
            )
            .await,
            200
        );
    }
    let last = eventually(
        "no up series of a deleted target",
        Duration::from_secs(15),
        || async {
            let text = demo.scrape().await?;
            (!names
                .iter()
                .any(|n| text.contains(&format!("gnomon_target_up{{target=\"{n}\"}}"))))
            .then_some(text)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", demo.process.log()));
    assert!(
        last.contains("gnomon_target_up{target=\"device1\"} 1"),
        "{last}"
    );
}

/// Resident memory of process `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Opens `count` TCP connections to `address`, never sends a byte, prints `ready`, and holds
/// them until killed (a separate process: one process may not hold 20 000 descriptors here).
const FLOODER: &str = r#"
import selectors, socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held, pending = [], selectors.DefaultSelector()
for _ in range(count):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((host, port))
    pending.register(s, selectors.EVENT_WRITE)
deadline = time.time() + 60
while pending.get_map() and time.time() < deadline:
    for key, _ in pending.select(timeout=1):
        pending.unregister(key.fileobj)
        if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            held.append(key.fileobj)
print("ready", len(held), flush=True)
time.sleep(3600)
"#;

/// Issue 14.7: 20 000 idle connections exhausted the file limit and both listeners stopped
/// answering; memory grew to 500 MB and stayed. Now a normal request still answers, and
/// memory comes back once the flood is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_flood_neither_starves_the_api_nor_keeps_memory() {
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let config = dir.path().join("gnomon.yaml");
    std::fs::write(&config, format!("api: 127.0.0.1:{api}\n")).unwrap();
    let mut cmd = Command::new(gnomon_binary().unwrap());
    cmd.args(["collector", "--config"]).arg(&config);
    let server = ChildProcess::spawn("collector", cmd, dir.path()).unwrap();
    let http = gnomon_testkit::http_client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let healthz = format!("http://127.0.0.1:{api}/healthz");
    eventually("the API", Duration::from_secs(20), || async {
        http.get(&healthz)
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await
    .unwrap();
    for _ in 0..20 {
        http.get(&healthz).send().await.unwrap();
    }
    let pid = server.pid();
    let before = rss_kib(pid);

    let flood_started = std::time::Instant::now();
    let mut flooders = Vec::new();
    for _ in 0..4 {
        let child = std::process::Command::new("python3")
            .args(["-c", FLOODER, "127.0.0.1", &api.to_string(), "5000"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        flooders.push(child);
    }
    let mut opened = 0;
    for flooder in &mut flooders {
        let stdout = flooder.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).ok();
            line
        })
        .await
        .unwrap();
        opened += line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
    }
    assert!(
        opened >= 19_000,
        "only {opened} flood connections were opened"
    );
    println!("flood open after {:?}", flood_started.elapsed());
    let peak = rss_kib(pid);

    // A fresh client is answered at once, however many idle connections are open.
    let fresh = gnomon_testkit::http_client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let asked = std::time::Instant::now();
    let response = fresh.get(&healthz).send().await.unwrap();
    let took = asked.elapsed();
    assert_eq!(response.status(), 200);
    println!("healthz answered in {took:?} with {opened} idle connections open");
    assert!(
        took < Duration::from_secs(1),
        "healthz took {took:?} during the flood"
    );

    for mut flooder in flooders {
        let _ = flooder.kill();
        let _ = flooder.wait();
    }
    let killed = std::time::Instant::now();
    // Memory back within 20 % of where it started.
    let settled = eventually("memory back", Duration::from_secs(30), || async {
        let _ = fresh.get(&healthz).send().await;
        let now = rss_kib(pid);
        (now <= before + before / 5).then_some(now)
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: RSS {before} KiB before, {peak} KiB at the peak, {} KiB now",
            rss_kib(pid)
        )
    });
    println!(
        "RSS {before} KiB before, {peak} KiB during the flood, {settled} KiB {:?} after",
        killed.elapsed()
    );
    assert!(
        !server.log().contains("Too many open files"),
        "{}",
        server.log()
    );
}

/// Issues 14.2 and 14.3: forged bus messages for a real target. A 4-byte undecodable payload
/// with a raised fencing token used to freeze the target (its real data was dropped as stale
/// until the exporter restarted); a valid body with a raised token would have been applied.
/// Now both are dropped and counted, and the target keeps updating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_fencing_tokens_neither_freeze_a_target_nor_inject_data() {
    use futures::StreamExt;
    use gnomon_bus::{Bus, BusMessage, NatsBus, NatsOptions};

    let dir = tempfile::tempdir().unwrap();
    let nats = gnomon_testkit::NatsServer::start().unwrap();
    let device = free_port();
    let mut cmd = Command::new(gnomon_binary().unwrap());
    cmd.args(["simulator", "--listen", &format!("127.0.0.1:{device}")])
        .args([
            "--count",
            "1",
            "--interfaces",
            "1",
            "--update-rate",
            "500ms",
        ]);
    let _sim = ChildProcess::spawn("sim", cmd, dir.path()).unwrap();
    gnomon_testkit::wait_for_tcp(&format!("127.0.0.1:{device}"), Duration::from_secs(20)).unwrap();
    let (api, listen) = (free_port(), free_port());
    let config = format!(
        r#"
insecure: true
api: 127.0.0.1:{api}
targets:
  r1: {{address: "127.0.0.1:{device}"}}
subscriptions:
  counters:
    paths: [/interfaces/interface/state/counters]
    stream-mode: sample
    sample-interval: 500ms
    encoding: proto
outputs:
  bus: {{type: nats, address: "{nats}", subject-prefix: telemetry, format: proto}}
  prom: {{type: prometheus, listen: "127.0.0.1:{listen}"}}
inputs:
  from-bus: {{type: nats, address: "{nats}", subject: "telemetry.>", format: proto, outputs: [prom]}}
clustering:
  cluster-name: forge
  instance-name: g1
  locker: {{type: memory, session-ttl: 2s, delay: 0s}}
"#,
        nats = nats.address()
    );
    let path = dir.path().join("gnomon.yaml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(gnomon_binary().unwrap());
    cmd.args(["all", "--config"]).arg(&path);
    let gnomon = ChildProcess::spawn("all", cmd, dir.path()).unwrap();
    let http = gnomon_testkit::http_client_builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let scrape = || async {
        http.get(format!("http://127.0.0.1:{listen}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    let in_octets = |text: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with("interfaces_interface_state_counters_in_octets{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
    };
    // A real message, to copy its subject, headers and body.
    let observer = NatsBus::connect(&NatsOptions::new(nats.address()))
        .await
        .unwrap();
    let mut messages = observer.subscribe("telemetry.>", None).await.unwrap();
    let real = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let message = messages.next().await.unwrap();
            if message.headers.subscription.as_deref() == Some("counters") {
                break message;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no data on the bus\n{}", gnomon.log()));
    let token = real
        .headers
        .fencing_token
        .expect("clustered data carries a token");
    let first = eventually("data on /metrics", Duration::from_secs(30), || async {
        in_octets(&scrape().await?)
    })
    .await
    .unwrap();

    let forger = NatsBus::connect(&NatsOptions::new(nats.address()))
        .await
        .unwrap();
    let mut raised = real.headers.clone();
    raised.fencing_token = Some(token + 1_000);
    // Garbage with a raised token, then the real body with a raised token and a value that
    // must never be served.
    forger
        .publish(BusMessage {
            subject: real.subject.clone(),
            headers: raised.clone(),
            payload: bytes::Bytes::from_static(b"\xff\xff\xff\xff"),
        })
        .await
        .unwrap();
    let forged_body = {
        use prost::Message;
        let mut response =
            gnomon_gnmi::proto::gnmi::SubscribeResponse::decode(real.payload.clone()).unwrap();
        if let Some(gnomon_gnmi::proto::gnmi::subscribe_response::Response::Update(n)) =
            response.response.as_mut()
        {
            for update in &mut n.update {
                update.val = Some(gnomon_gnmi::proto::gnmi::TypedValue {
                    value: Some(gnomon_gnmi::proto::gnmi::typed_value::Value::UintVal(
                        4_242_424_242,
                    )),
                });
            }
        }
        bytes::Bytes::from(response.encode_to_vec())
    };
    for _ in 0..5 {
        forger
            .publish(BusMessage {
                subject: real.subject.clone(),
                headers: raised.clone(),
                payload: forged_body.clone(),
            })
            .await
            .unwrap();
    }
    forger.flush().await.unwrap();

    // The target keeps updating with real data, the forged value never shows.
    eventually(
        "real data after the forgery",
        Duration::from_secs(20),
        || async {
            let text = scrape().await?;
            assert!(
                !text.contains("4242424242") && !text.contains("4.242424242e9"),
                "{text}"
            );
            in_octets(&text).filter(|v| *v != first && *v != 4_242_424_242)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gnomon.log()));
    let own = http
        .get(format!("http://127.0.0.1:{api}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let unconfirmed = own
        .lines()
        .find(|l| l.starts_with("gnomon_exporter_unconfirmed_dropped_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        unconfirmed >= 6.0,
        "forged messages counted: {unconfirmed}\n{own}"
    );
    for _ in 0..3 {
        let text = scrape().await.unwrap();
        assert!(!text.contains("4242424242"), "{text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Issues 14.9 and 14.10: what the API accepted. Names and addresses are checked where they
/// enter (a 400 naming the problem, never a 200 or a 503), error bodies are gnmic's JSON even
/// for oversized bodies, and no name can forge a log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_what_it_cannot_use_and_logs_names_escaped() {
    let demo = Demo::start().await;
    let post = |body: String| {
        let http = demo.http.clone();
        let url = format!("{}/api/v1/config/targets", demo.api);
        async move {
            let response = http.post(url).body(body).send().await.unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value =
                serde_json::from_str(&response.text().await.unwrap()).unwrap_or_default();
            (status, body)
        }
    };
    let cases = [
        (r#"{"name":123,"address":true}"#.to_string(), "name"),
        (r#"{"name":"a/b","address":"127.0.0.1:1"}"#.to_string(), "/"),
        (r#"{"name":"..","address":"127.0.0.1:1"}"#.to_string(), ".."),
        (
            r#"{"name":"nul\u0000x","address":"127.0.0.1:1"}"#.to_string(),
            "control",
        ),
        (
            r#"{"name":"tab\tx","address":"127.0.0.1:1"}"#.to_string(),
            "control",
        ),
        (
            r#"{"name":"x\nERROR forged log line","address":"127.0.0.1:1"}"#.to_string(),
            "control",
        ),
        (
            format!(
                r#"{{"name":"{}","address":"127.0.0.1:1"}}"#,
                "n".repeat(10_000)
            ),
            "longer",
        ),
        (
            r#"{"name":"bad-address","address":"not an address"}"#.to_string(),
            "address",
        ),
    ];
    for (body, expected) in &cases {
        let (status, answer) = post(body.clone()).await;
        assert_eq!(status, 400, "{body:.80} → {answer}");
        let message = answer["errors"][0].as_str().unwrap_or_default();
        assert!(
            message.contains(expected),
            "{body:.80}: {message:?} should mention {expected:?}"
        );
    }
    // A name with '/' on the path is a 404/400 with a JSON body, not a 503.
    let response = demo
        .http
        .delete(format!("{}/api/v1/config/targets/a%2Fb", demo.api))
        .send()
        .await
        .unwrap();
    assert!(
        matches!(response.status().as_u16(), 400 | 404),
        "{}",
        response.status()
    );
    // An oversized body is a 413 in gnmic's error shape.
    let huge = format!(
        r#"{{"name":"big","address":"127.0.0.1:1","x":"{}"}}"#,
        "y".repeat(2 << 20)
    );
    let response = demo
        .http
        .post(format!("{}/api/v1/config/targets", demo.api))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert!(body["errors"][0].is_string(), "{body}");
    // Nothing the refused requests carried became a log line of its own.
    let log = demo.process.log();
    assert!(
        !log.lines().any(|l| l.starts_with("ERROR forged")),
        "a forged line in the log:\n{log}"
    );
    assert_eq!(
        demo.send(reqwest::Method::GET, "/healthz", None).await,
        200,
        "gnmic's /healthz at the root"
    );
}
