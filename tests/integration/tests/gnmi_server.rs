//! Issue 18 on real processes: simulator → `gnomon collector` (NATS output) → nats-server →
//! `gnomon exporter` (NATS input, Prometheus output, `gnmi-server` with username/password),
//! read back by third-party gNMI clients from the project venv (`scripts/setup`): pygnmi
//! (Capabilities, Get, Subscribe ONCE / POLL / STREAM sample and on-change, a wrong
//! password) and aiognmi (Capabilities, Get, a STREAM subscription), each checking the values
//! against the simulator itself; then the server with TLS and required client certificates,
//! and the event format end to end (Get returns the keyed paths).

use gnomon_gnmi::path::{parse_path, path_to_string};
use gnomon_gnmi::proto::gnmi::g_nmi_client::GNmiClient;
use gnomon_gnmi::proto::gnmi::{
    subscribe_request, subscribe_response, subscription_list, typed_value, Encoding, GetRequest,
    GetResponse, Path, SubscribeRequest, Subscription, SubscriptionList, SubscriptionMode,
};
use gnomon_testkit::cluster::{exactly_one_each, Harness};
use gnomon_testkit::{
    eventually, free_port, spawn_gnomon, start_simulator, wait_for_tcp, ChildProcess, NatsServer,
    SimulatorSpec, TestPki,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request};

const USERNAME: &str = "gnomon";
const PASSWORD: &str = "gnmi-interop-secret";
const DEVICES: usize = 2;
const INTERFACES: usize = 2;
const COUNTERS: &str = "/interfaces/interface/state/counters";
const PROBE: &str = "/interfaces/interface[name=Ethernet1]/state/counters/in-octets";
const WAIT: Duration = Duration::from_secs(40);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A venv's python; a missing venv is a failure (the suite needs it), not a skip.
fn python(venv: &str, package: &str) -> PathBuf {
    let python = workspace_root().join(venv).join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup to create the Python venv with {package}",
        python.display()
    );
    python
}

/// What the gNMI server's clients need for TLS.
struct ClientTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

struct Pipeline {
    dir: tempfile::TempDir,
    /// (target name, simulated device port).
    devices: Vec<(String, u16)>,
    gnmi_port: u16,
    tls: Option<ClientTls>,
    _pki: Option<TestPki>,
    _nats: NatsServer,
    processes: Vec<ChildProcess>,
}

impl Pipeline {
    /// Starts everything; `format` is the NATS format of the collector's output and the
    /// exporter's input; `tls` puts the gNMI server behind TLS requiring client certificates.
    async fn start(format: &str, tls: bool) -> Self {
        gnomon_testkit::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let nats = NatsServer::start().unwrap();
        let simulator = start_simulator(
            dir.path(),
            "simulator",
            &SimulatorSpec::new(DEVICES, INTERFACES).update_rate("100ms"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        let devices: Vec<(String, u16)> = simulator
            .ports()
            .into_iter()
            .enumerate()
            .map(|(i, port)| (format!("dev{i}"), port))
            .collect();

        let mut collector = String::from("insecure: true\nencoding: proto\ntargets:\n");
        for (name, port) in &devices {
            collector.push_str(&format!("  {name}: {{address: \"127.0.0.1:{port}\"}}\n"));
        }
        collector.push_str(&format!(
            "subscriptions:\n  counters:\n    paths: [{COUNTERS}]\n    stream-mode: sample\n    sample-interval: 300ms\noutputs:\n  nats-out: {{type: nats, address: \"{nats}\", subject-prefix: telemetry, format: {format}}}\n",
            nats = nats.address()
        ));
        let collector = spawn_gnomon(dir.path(), "collector", "collector", &collector).unwrap();

        let (pki, tls_block, client_tls) = if tls {
            let pki = TestPki::new("gnmi").unwrap();
            let server = pki.issue("gnmi-server").unwrap();
            let client = pki.issue("gnmi-client").unwrap();
            let block = format!(
                "  tls:\n    cert-file: {}\n    key-file: {}\n    ca-file: {}\n    client-auth: require-verify\n",
                server.cert_file.display(),
                server.key_file.display(),
                pki.ca_file().display()
            );
            let client = ClientTls {
                ca: pki.ca_file().to_path_buf(),
                cert: client.cert_file,
                key: client.key_file,
            };
            (Some(pki), block, Some(client))
        } else {
            (None, String::new(), None)
        };
        let gnmi_port = free_port();
        let prom = free_port();
        let exporter = format!(
            "gnmi-server:\n  address: 127.0.0.1:{gnmi_port}\n  username: {USERNAME}\n  password: {PASSWORD}\n{tls_block}outputs:\n  prom: {{type: prometheus, listen: \"127.0.0.1:{prom}\"}}\ninputs:\n  nats-in: {{type: nats, address: \"{nats}\", subject: \"telemetry.>\", format: {format}, outputs: [prom]}}\n",
            nats = nats.address()
        );
        let exporter = spawn_gnomon(dir.path(), "exporter", "exporter", &exporter).unwrap();
        let pipeline = Self {
            dir,
            devices,
            gnmi_port,
            tls: client_tls,
            _pki: pki,
            _nats: nats,
            processes: vec![simulator.process, collector, exporter],
        };
        wait_for_tcp(&format!("127.0.0.1:{gnmi_port}"), Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}\n{}", pipeline.logs()));
        pipeline
    }
}

impl Served for Pipeline {
    fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn devices(&self) -> &[(String, u16)] {
        &self.devices
    }

    fn gnmi_port(&self) -> u16 {
        self.gnmi_port
    }

    fn tls(&self) -> Option<&ClientTls> {
        self.tls.as_ref()
    }

    fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name(), p.log()))
            .collect()
    }
}

/// A gNMI server under test as its clients see it, with the logs to show when they fail.
trait Served {
    fn dir(&self) -> &std::path::Path;
    /// (target name, simulated device port).
    fn devices(&self) -> &[(String, u16)];
    fn gnmi_port(&self) -> u16;
    fn tls(&self) -> Option<&ClientTls>;
    fn logs(&self) -> String;

    async fn client(&self) -> GNmiClient<Channel> {
        let endpoint = match self.tls() {
            Some(tls) => Endpoint::from_shared(format!("https://127.0.0.1:{}", self.gnmi_port()))
                .unwrap()
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(std::fs::read(&tls.ca).unwrap()))
                        .identity(Identity::from_pem(
                            std::fs::read(&tls.cert).unwrap(),
                            std::fs::read(&tls.key).unwrap(),
                        ))
                        .domain_name("localhost"),
                )
                .unwrap(),
            None => {
                Endpoint::from_shared(format!("http://127.0.0.1:{}", self.gnmi_port())).unwrap()
            }
        };
        GNmiClient::new(
            endpoint
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10))
                .connect()
                .await
                .unwrap_or_else(|e| panic!("connecting to the gNMI server: {e}\n{}", self.logs())),
        )
    }

    /// Get of the counters with `target` in the prefix, credentials in the metadata.
    async fn get(
        &self,
        client: &mut GNmiClient<Channel>,
        target: &str,
        password: &str,
    ) -> Result<GetResponse, tonic::Status> {
        let mut request = Request::new(GetRequest {
            prefix: Some(Path {
                target: target.into(),
                ..Default::default()
            }),
            path: vec![parse_path(COUNTERS).unwrap()],
            encoding: Encoding::Proto as i32,
            ..Default::default()
        });
        let metadata = request.metadata_mut();
        metadata.insert("username", USERNAME.parse().unwrap());
        metadata.insert("password", password.parse().unwrap());
        client.get(request).await.map(|r| r.into_inner())
    }

    /// Waits until the server has every counter of every device.
    async fn wait_served(&self) {
        let client = self.client().await;
        let wanted = self.devices().len() * INTERFACES * 8;
        let result = eventually("every counter of every device served", WAIT, || {
            let mut client = client.clone();
            async move {
                let got = self.get(&mut client, "*", PASSWORD).await.ok()?;
                (leaves(&got).len() == wanted).then_some(())
            }
        })
        .await;
        if let Err(e) = result {
            panic!("{e}\n{}", self.logs());
        }
    }

    /// Runs a client script with `python`; fails the test with its output unless it passes.
    async fn run_script(&self, python: PathBuf, script: &str, args: &[&str]) {
        let mut command = tokio::process::Command::new(python);
        command
            .arg(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/gnmi_clients")
                    .join(script),
            )
            .args(args)
            .args(["--server-port", &self.gnmi_port().to_string()])
            .args(["--interfaces", &INTERFACES.to_string()])
            .args(["--username", USERNAME, "--password", PASSWORD])
            .env("TMPDIR", self.dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, port) in self.devices() {
            command.arg("--device").arg(format!("{name}={port}"));
        }
        if let Some(tls) = self.tls() {
            command
                .arg("--ca")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.cert)
                .arg("--key")
                .arg(&tls.key);
        }
        let output = tokio::time::timeout(SCRIPT_TIMEOUT, command.output())
            .await
            .unwrap_or_else(|_| panic!("{script} did not finish in {SCRIPT_TIMEOUT:?}"))
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{script} {args:?} failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}\n{}",
            output.status,
            self.logs()
        );
        println!("{}", stdout.trim());
    }
}

/// (target, path, value) of every update of a Get answer.
fn leaves(response: &GetResponse) -> Vec<(String, String, Option<typed_value::Value>)> {
    response
        .notification
        .iter()
        .flat_map(|n| {
            let target = n
                .prefix
                .as_ref()
                .map(|p| p.target.clone())
                .unwrap_or_default();
            n.update.iter().map(move |u| {
                (
                    target.clone(),
                    path_to_string(u.path.as_ref().unwrap()),
                    u.val.as_ref().and_then(|v| v.value.clone()),
                )
            })
        })
        .collect()
}

/// Ethernet1 in-octets straight from a simulated device.
async fn simulator_counter(port: u16) -> u64 {
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    let response = GNmiClient::new(channel)
        .get(GetRequest {
            path: vec![parse_path(PROBE).unwrap()],
            encoding: Encoding::Proto as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    match leaves(&response).first() {
        Some((_, _, Some(typed_value::Value::UintVal(n)))) => *n,
        other => panic!("simulator answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygnmi_reads_the_collected_counters_from_the_exporters_gnmi_server() {
    let python = python(".venv", "pygnmi");
    let pipeline = Pipeline::start("proto", false).await;
    pipeline.wait_served().await;
    pipeline
        .run_script(python, "pygnmi_client.py", &["all"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiognmi_reads_the_collected_counters_from_the_exporters_gnmi_server() {
    let python = python(".venv/aiognmi", "aiognmi");
    let pipeline = Pipeline::start("proto", false).await;
    pipeline.wait_served().await;
    pipeline.run_script(python, "aiognmi_client.py", &[]).await;
}

/// TLS with `client-auth: require-verify`: a client with a certificate of the CA is served
/// (tonic here, pygnmi in the script), one without a certificate or with a certificate of
/// another CA is refused at the handshake, and the password is still checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gnmi_server_requires_a_client_certificate_with_tls() {
    let pipeline = Pipeline::start("proto", true).await;
    pipeline.wait_served().await;
    let mut client = pipeline.client().await;
    let wrong = pipeline
        .get(&mut client, "dev0", "not-the-password")
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong}");

    let tls = pipeline.tls.as_ref().unwrap();
    let ca = Certificate::from_pem(std::fs::read(&tls.ca).unwrap());
    let other_pki = TestPki::new("other").unwrap();
    let stranger = other_pki.issue("stranger").unwrap();
    let refused = [
        (
            "no client certificate",
            ClientTlsConfig::new().ca_certificate(ca.clone()),
        ),
        (
            "a certificate of another CA",
            ClientTlsConfig::new()
                .ca_certificate(ca)
                .identity(Identity::from_pem(
                    std::fs::read(&stranger.cert_file).unwrap(),
                    std::fs::read(&stranger.key_file).unwrap(),
                )),
        ),
    ];
    for (what, config) in refused {
        let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{}", pipeline.gnmi_port))
            .unwrap()
            .tls_config(config.domain_name("localhost"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10));
        // The handshake fails either at connect or at the first call (TLS 1.3 reports a
        // refused client certificate after the client's handshake completes).
        let outcome = match endpoint.connect().await {
            Err(e) => Err(e.to_string()),
            Ok(channel) => GNmiClient::new(channel)
                .capabilities(Request::new(Default::default()))
                .await
                .map(|_| ())
                .map_err(|s| s.to_string()),
        };
        assert!(outcome.is_err(), "a client with {what} was served");
    }
    pipeline
        .run_script(python(".venv", "pygnmi"), "pygnmi_client.py", &["tls"])
        .await;
}

/// The event format end to end: the collector publishes gnmic's event JSON, the exporter's
/// event input rebuilds each value's keyed path from the event's tags, and Get returns the
/// same paths (and values between the device's before and after) as the proto format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_format_get_returns_the_keyed_paths_and_the_devices_values() {
    let pipeline = Pipeline::start("event", false).await;
    pipeline.wait_served().await;
    let client = pipeline.client().await;
    let (target, port) = pipeline.devices[0].clone();
    let floor = simulator_counter(port).await;
    let result = eventually("dev0's in-octets caught up with the device", WAIT, || {
        let mut client = client.clone();
        let pipeline = &pipeline;
        let target = target.clone();
        async move {
            let got = pipeline.get(&mut client, &target, PASSWORD).await.ok()?;
            let leaves = leaves(&got);
            let value = leaves.iter().find_map(|(_, path, value)| match value {
                Some(typed_value::Value::UintVal(n)) if path == PROBE => Some(*n),
                _ => None,
            })?;
            (value >= floor && value <= simulator_counter(port).await).then_some(leaves)
        }
    })
    .await;
    let leaves = result.unwrap_or_else(|e| panic!("{e}\n{}", pipeline.logs()));
    let mut expected = Vec::new();
    for interface in 1..=INTERFACES {
        for counter in [
            "in-discards",
            "in-errors",
            "in-octets",
            "in-pkts",
            "out-discards",
            "out-errors",
            "out-octets",
            "out-pkts",
        ] {
            expected.push(format!(
                "/interfaces/interface[name=Ethernet{interface}]/state/counters/{counter}"
            ));
        }
    }
    expected.sort();
    let mut paths: Vec<String> = leaves.iter().map(|(_, p, _)| p.clone()).collect();
    paths.sort();
    assert_eq!(paths, expected);
    let by_target: BTreeMap<&str, usize> = leaves.iter().fold(BTreeMap::new(), |mut m, l| {
        *m.entry(l.0.as_str()).or_default() += 1;
        m
    });
    assert_eq!(
        by_target,
        BTreeMap::from([(target.as_str(), expected.len())])
    );
    for (_, path, value) in &leaves {
        assert!(
            matches!(value, Some(typed_value::Value::UintVal(_))),
            "{path}: {value:?}"
        );
    }
}

/// The gNMI server of one member of a 3-member cluster (`gnomon all` on etcd and
/// nats-server) whose devices are all collected by the two other members.
struct ClusterServer {
    harness: Harness,
    devices: Vec<(String, u16)>,
    gnmi_port: u16,
}

impl Served for ClusterServer {
    fn dir(&self) -> &std::path::Path {
        self.harness.dir.path()
    }

    fn devices(&self) -> &[(String, u16)] {
        &self.devices
    }

    fn gnmi_port(&self) -> u16 {
        self.gnmi_port
    }

    fn tls(&self) -> Option<&ClientTls> {
        None
    }

    fn logs(&self) -> String {
        self.harness.logs()
    }
}

/// Devices of the cluster test: enough that both collecting members hold some.
const CLUSTER_DEVICES: usize = 4;

impl ClusterServer {
    /// g2 and g3 start first and take every device; g1 joins afterwards (without automatic
    /// rebalancing a member joining takes only orphans), with the NATS input and the gNMI
    /// server.
    async fn start() -> Self {
        let mut harness = Harness::start("etcd", CLUSTER_DEVICES).await.unwrap();
        let targets: BTreeMap<String, Vec<String>> = (0..CLUSTER_DEVICES)
            .map(|i| (format!("t{i}"), Vec::new()))
            .collect();
        let names: Vec<String> = targets.keys().cloned().collect();
        // No rebalance when g1 joins: the devices stay with g2 and g3.
        let config = |harness: &Harness, member: &str| {
            harness
                .config(member, &[], &targets)
                .replace("clustering:\n", "clustering:\n  rebalance-threshold: 0\n")
        };
        for member in ["g2", "g3"] {
            let text = config(&harness, member);
            harness.start_member_with_config(member, &text).unwrap();
        }
        let collecting = &harness;
        collecting
            .wait_until("g2 and g3 collect every device", WAIT, || async {
                collecting
                    .target_stats()
                    .await
                    .is_ok_and(|s| exactly_one_each(&s, &names))
            })
            .await;
        let gnmi_port = free_port();
        let prom = free_port();
        let config = config(&harness, "g1")
            + &format!(
                "  prom: {{type: prometheus, listen: \"127.0.0.1:{prom}\"}}\ninputs:\n  nats-in: {{type: nats, address: \"{nats}\", subject: \"telemetry.>\", format: proto, outputs: [prom]}}\ngnmi-server:\n  address: 127.0.0.1:{gnmi_port}\n  username: {USERNAME}\n  password: {PASSWORD}\n",
                nats = harness.nats.address()
            );
        harness.start_member_with_config("g1", &config).unwrap();
        wait_for_tcp(&format!("127.0.0.1:{gnmi_port}"), WAIT)
            .unwrap_or_else(|e| panic!("{e}\n{}", harness.logs()));
        let devices = harness
            .devices
            .iter()
            .enumerate()
            .map(|(i, address)| {
                let port = address.rsplit(':').next().unwrap().parse().unwrap();
                (format!("t{i}"), port)
            })
            .collect();
        Self {
            harness,
            devices,
            gnmi_port,
        }
    }

    /// Target → owning member, once every target has exactly one owner.
    async fn owners(&self) -> BTreeMap<String, String> {
        let names: Vec<String> = self.devices.iter().map(|(n, _)| n.clone()).collect();
        eventually("one owner per target", WAIT, || {
            let names = names.clone();
            async move {
                let owners = self.harness.owners().await.ok()?;
                (names.iter().all(|n| owners.contains_key(n))).then_some(owners)
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }
}

/// Device timestamp (ns) of the newest notification received per target.
type Newest = Arc<Mutex<BTreeMap<String, i64>>>;

/// Opens a STREAM on-change subscription to every target's counters and records, per
/// target, the newest device timestamp received; the returned handle ends with the
/// stream's status (the stream is never reopened).
async fn watch_every_target(
    client: &mut GNmiClient<Channel>,
    newest: Newest,
) -> tokio::task::JoinHandle<Result<(), tonic::Status>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    sender
        .send(SubscribeRequest {
            request: Some(subscribe_request::Request::Subscribe(SubscriptionList {
                prefix: Some(Path {
                    target: "*".into(),
                    ..Default::default()
                }),
                subscription: vec![Subscription {
                    path: Some(parse_path(COUNTERS).unwrap()),
                    mode: SubscriptionMode::OnChange as i32,
                    ..Default::default()
                }],
                mode: subscription_list::Mode::Stream as i32,
                encoding: Encoding::Proto as i32,
                ..Default::default()
            })),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut request = Request::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
    request
        .metadata_mut()
        .insert("username", USERNAME.parse().unwrap());
    request
        .metadata_mut()
        .insert("password", PASSWORD.parse().unwrap());
    let mut stream = client.subscribe(request).await.unwrap().into_inner();
    tokio::spawn(async move {
        // Keeps the request stream open for as long as the subscription lives.
        let _sender = sender;
        while let Some(response) = stream.message().await? {
            if let Some(subscribe_response::Response::Update(n)) = response.response {
                let target = n.prefix.map(|p| p.target).unwrap_or_default();
                let mut newest = newest.lock().unwrap();
                let at = newest.entry(target).or_insert(0);
                *at = (*at).max(n.timestamp);
            }
        }
        Ok(())
    })
}

fn unix_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Issue 18 in a cluster: pygnmi and aiognmi read, from g1's gNMI server, the devices g2 and
/// g3 collect (values checked against the simulator); then the member holding the most
/// devices is SIGKILLed, and a STREAM subscription opened before the kill keeps receiving
/// fresh samples of every device that moved, from their new owners, without resubscribing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_gnmi_server_serves_the_others_devices_through_a_failover() {
    let pygnmi = python(".venv", "pygnmi");
    let aiognmi = python(".venv/aiognmi", "aiognmi");
    let mut cluster = ClusterServer::start().await;
    let before = cluster.owners().await;
    assert!(
        before.values().all(|owner| owner != "g1"),
        "g1 joined last and should hold no device: {before:?}"
    );
    cluster.wait_served().await;
    cluster
        .run_script(pygnmi, "pygnmi_client.py", &["all"])
        .await;
    cluster.run_script(aiognmi, "aiognmi_client.py", &[]).await;

    let newest: Newest = Arc::default();
    let mut client = cluster.client().await;
    let watching = watch_every_target(&mut client, newest.clone()).await;
    let names: Vec<String> = cluster.devices.iter().map(|(n, _)| n.clone()).collect();
    eventually("the stream to carry every device", WAIT, || {
        let ready = names
            .iter()
            .all(|n| newest.lock().unwrap().get(n).is_some_and(|ts| *ts > 0));
        async move { ready.then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));

    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for owner in before.values() {
        *load.entry(owner.as_str()).or_default() += 1;
    }
    let victim = load
        .iter()
        .max_by_key(|(member, n)| (**n, std::cmp::Reverse(**member)))
        .map(|(member, _)| member.to_string())
        .unwrap();
    let moved: Vec<String> = before
        .iter()
        .filter(|(_, owner)| **owner == victim)
        .map(|(target, _)| target.clone())
        .collect();
    let killed_at = unix_now_ns();
    cluster.harness.member(&victim).process.kill();

    let result = eventually(
        "every moved device streaming again through the same subscription",
        WAIT,
        || {
            let fresh = moved.iter().all(|t| {
                newest
                    .lock()
                    .unwrap()
                    .get(t)
                    .is_some_and(|ts| *ts > killed_at)
            });
            async move { fresh.then_some(()) }
        },
    )
    .await;
    result.unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    assert!(!watching.is_finished(), "the subscription ended");
    let after = cluster.owners().await;
    for target in &moved {
        assert_ne!(
            after[target], victim,
            "{target} still owned by the killed member"
        );
    }
    let gaps: Vec<String> = moved
        .iter()
        .map(|t| {
            let ts = newest.lock().unwrap()[t];
            format!(
                "{t}→{} ({:.1} s after the kill)",
                after[t],
                (ts - killed_at) as f64 / 1e9
            )
        })
        .collect();
    println!(
        "{victim} killed; moved and streamed again: {}",
        gaps.join(", ")
    );
    watching.abort();
}
