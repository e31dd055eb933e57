//! Drives every gNMI RPC and Subscribe mode of an in-process simulator with a tonic client.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use gnomon_gnmi::proto::gnmi::{
    subscription_list::Mode, typed_value, Encoding, GetRequest, SetRequest, SubscriptionMode,
};
use gnomon_simulator::{Simulator, SimulatorArgs};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic::Code;

fn quick_args(count: u32) -> SimulatorArgs {
    SimulatorArgs {
        interfaces: 3,
        update_rate: Duration::from_millis(50),
        flap_period: Duration::from_millis(400),
        ..SimulatorArgs::on_free_ports(count)
    }
}

async fn start(args: SimulatorArgs) -> Simulator {
    Simulator::start(args).await.unwrap()
}

#[tokio::test]
async fn capabilities_report_version_encodings_and_models() {
    let simulator = start(quick_args(1)).await;
    let mut client = client(simulator.device_addresses()[0]).await;
    let caps = client
        .capabilities(gnomon_gnmi::proto::gnmi::CapabilityRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.g_nmi_version, "0.10.0");
    let mut encodings = caps.supported_encodings.clone();
    encodings.sort();
    assert_eq!(
        encodings,
        [
            Encoding::Json as i32,
            Encoding::Proto as i32,
            Encoding::JsonIetf as i32
        ]
    );
    assert!(caps
        .supported_models
        .iter()
        .any(|m| m.name == "openconfig-interfaces"));
}

#[tokio::test]
async fn devices_listen_on_their_own_ports_with_their_own_hostnames() {
    let simulator = start(quick_args(3)).await;
    let addresses = simulator.device_addresses().to_vec();
    assert_eq!(addresses.len(), 3);
    for (index, address) in addresses.iter().enumerate() {
        let mut client = client(*address).await;
        let response = client
            .get(GetRequest {
                path: vec![path("/system/state/hostname")],
                encoding: Encoding::Proto as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let found = leaves(&response.notification[0]);
        assert_eq!(
            found,
            [(
                "/system/state/hostname".to_string(),
                typed_value::Value::StringVal(format!("sim-{index}"))
            )]
        );
    }
}

#[tokio::test]
async fn get_serves_json_subtrees_typed_leaves_and_error_codes() {
    let simulator = start(quick_args(1)).await;
    let mut client = client(simulator.device_addresses()[0]).await;

    let response = client
        .get(GetRequest {
            prefix: Some(path("/interfaces")),
            path: vec![path("interface[name=*]/state/counters")],
            encoding: Encoding::Json as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let notification = &response.notification[0];
    assert!(notification.timestamp > 0);
    assert_eq!(
        path_to_text(notification.prefix.as_ref().unwrap()),
        "/interfaces"
    );
    let found = leaves(notification);
    assert_eq!(found.len(), 3, "one subtree per interface: {found:?}");
    assert_eq!(
        found[0].0,
        "/interfaces/interface[name=Ethernet1]/state/counters"
    );
    let counters = json(&found[0].1);
    for counter in [
        "in-octets",
        "out-octets",
        "in-pkts",
        "out-errors",
        "out-discards",
    ] {
        assert!(
            counters[counter].is_u64(),
            "{counter} missing in {counters}"
        );
    }

    let proto = client
        .get(GetRequest {
            path: vec![path("/system/memory/state")],
            encoding: Encoding::Proto as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let memory: BTreeMap<_, _> = leaves(&proto.notification[0]).into_iter().collect();
    let physical = uint(&memory["/system/memory/state/physical"]);
    let used = uint(&memory["/system/memory/state/used"]);
    assert!(
        used > 0 && used < physical,
        "used {used} physical {physical}"
    );

    let code = |request: GetRequest| {
        let mut client = client.clone();
        async move { client.get(request).await.unwrap_err().code() }
    };
    let ask = |text: &str, encoding: Encoding| GetRequest {
        path: vec![path(text)],
        encoding: encoding as i32,
        ..Default::default()
    };
    assert_eq!(
        code(ask("/system", Encoding::Bytes)).await,
        Code::InvalidArgument
    );
    assert_eq!(
        code(ask("/no/such/thing", Encoding::Json)).await,
        Code::InvalidArgument
    );
    assert_eq!(
        code(ask(
            "/interfaces/interface[name=Ethernet42]",
            Encoding::Json
        ))
        .await,
        Code::NotFound
    );
    let status = client.set(SetRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

fn path_to_text(path: &gnomon_gnmi::proto::gnmi::Path) -> String {
    gnomon_gnmi::path::path_to_string(path)
}

#[tokio::test]
async fn once_sends_a_snapshot_then_sync_then_ends() {
    let simulator = start(quick_args(1)).await;
    let mut client = client(simulator.device_addresses()[0]).await;
    let mut session = open(
        &mut client,
        list(
            Mode::Once,
            Encoding::Proto,
            vec![subscription(
                "/interfaces/interface[name=Ethernet2]/state",
                SubscriptionMode::Sample,
                Duration::ZERO,
            )],
        ),
    )
    .await
    .unwrap();
    let snapshot = session.until_sync().await;
    let found: Vec<_> = snapshot.iter().flat_map(leaves).collect();
    assert_eq!(found.len(), 11);
    assert!(found.iter().all(|(p, _)| p.contains("Ethernet2")));
    assert!(snapshot.iter().all(|n| n.timestamp > 0));
    assert!(matches!(session.next().await, Received::End));
}

#[tokio::test]
async fn poll_answers_every_poll_with_data_and_sync() {
    let simulator = start(quick_args(1)).await;
    let mut client = client(simulator.device_addresses()[0]).await;
    let mut session = open(
        &mut client,
        list(
            Mode::Poll,
            Encoding::Proto,
            vec![subscription(
                "/interfaces/interface[name=Ethernet1]/state/counters/in-octets",
                SubscriptionMode::TargetDefined,
                Duration::ZERO,
            )],
        ),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    let initial = session.until_sync().await;
    seen.push(uint(&leaves(&initial[0])[0].1));
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        session.requests.send(poll_request()).await.unwrap();
        let answer = session.until_sync().await;
        assert_eq!(answer.len(), 1);
        seen.push(uint(&leaves(&answer[0])[0].1));
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "counter not growing: {seen:?}"
    );
}

#[tokio::test]
async fn stream_sample_delivers_growing_counters_with_the_prefix_echoed() {
    let simulator = start(quick_args(1)).await;
    let mut client = client(simulator.device_addresses()[0]).await;
    let mut request = list(
        Mode::Stream,
        Encoding::JsonIetf,
        vec![subscription(
            "state/counters/out-pkts",
            SubscriptionMode::Sample,
            Duration::from_millis(200),
        )],
    );
    request.prefix = Some(path("/interfaces/interface[name=Ethernet3]"));
    let mut session = open(&mut client, request).await.unwrap();
    let initial = session.until_sync().await;
    assert_eq!(initial.len(), 1);
    let mut values = vec![json(&leaves(&initial[0])[0].1).as_u64().unwrap()];
    for _ in 0..3 {
        let notification = session.next_notification().await;
        assert_eq!(
            path_to_text(notification.prefix.as_ref().unwrap()),
            "/interfaces/interface[name=Ethernet3]"
        );
        assert_eq!(
            path_to_text(notification.update[0].path.as_ref().unwrap()),
            "/state/counters/out-pkts"
        );
        values.push(json(&leaves(&notification)[0].1).as_u64().unwrap());
    }
    assert!(
        values.windows(2).all(|w| w[0] < w[1]),
        "not growing: {values:?}"
    );
}

#[tokio::test]
async fn on_change_sends_only_oper_status_changes() {
    let simulator = start(quick_args(1)).await;
    let mut client = client(simulator.device_addresses()[0]).await;
    let mut session = open(
        &mut client,
        list(
            Mode::Stream,
            Encoding::Proto,
            vec![subscription(
                "/interfaces/interface[name=*]/state/oper-status",
                SubscriptionMode::OnChange,
                Duration::ZERO,
            )],
        ),
    )
    .await
    .unwrap();
    let initial: Vec<_> = session.until_sync().await.iter().flat_map(leaves).collect();
    assert_eq!(
        initial.len(),
        3,
        "every interface's status first: {initial:?}"
    );
    let flapping = "/interfaces/interface[name=Ethernet1]/state/oper-status";
    let mut last = initial
        .iter()
        .find(|(p, _)| p == flapping)
        .unwrap()
        .1
        .clone();
    for _ in 0..3 {
        let changes = leaves(&session.next_notification().await);
        assert_eq!(
            changes.len(),
            1,
            "only the flapping interface changes: {changes:?}"
        );
        assert_eq!(changes[0].0, flapping);
        assert_ne!(changes[0].1, last, "an update without a change");
        last = changes[0].1.clone();
    }
}

#[tokio::test]
async fn gnmi_cli_style_target_defined_requests_are_accepted() {
    let simulator = start(quick_args(1)).await;
    let mut client = client(simulator.device_addresses()[0]).await;
    // As gnmi_cli sends it: TARGET_DEFINED, sample_interval 0, JSON, deprecated element strings.
    #[allow(deprecated)]
    let legacy = gnomon_gnmi::proto::gnmi::Path {
        element: vec![
            "interfaces".into(),
            "interface[name=Ethernet2]".into(),
            "state".into(),
        ],
        ..Default::default()
    };
    let mut request = list(Mode::Stream, Encoding::Json, Vec::new());
    request
        .subscription
        .push(gnomon_gnmi::proto::gnmi::Subscription {
            path: Some(legacy),
            ..Default::default()
        });
    request.prefix = Some(gnomon_gnmi::proto::gnmi::Path {
        target: "sim-0".into(),
        ..Default::default()
    });
    let mut session = open(&mut client, request).await.unwrap();
    let initial = session.until_sync().await;
    assert!(initial
        .iter()
        .all(|n| n.prefix.as_ref().unwrap().target == "sim-0"));
    assert_eq!(initial.iter().map(|n| n.update.len()).sum::<usize>(), 11);
    // Counters are sampled at the default 1 s; state leaves only on change (Ethernet2 never flaps).
    let sampled = leaves(&session.next_notification().await);
    assert_eq!(sampled.len(), 8, "{sampled:?}");
    assert!(sampled.iter().all(|(p, _)| p.contains("/counters/")));
}

#[tokio::test]
async fn suppress_redundant_sends_unchanged_leaves_only_on_heartbeat() {
    let simulator = start(quick_args(1)).await;
    let mut client = client(simulator.device_addresses()[0]).await;
    let mut quiet = subscription(
        "/system/state/hostname",
        SubscriptionMode::Sample,
        Duration::from_millis(20),
    );
    quiet.suppress_redundant = true;
    quiet.heartbeat_interval = Duration::from_millis(300).as_nanos() as u64;
    let mut session = open(
        &mut client,
        list(Mode::Stream, Encoding::Proto, vec![quiet]),
    )
    .await
    .unwrap();
    session.until_sync().await;
    let started = std::time::Instant::now();
    let heartbeat = session.next_notification().await;
    // Sampled every 20 ms but unchanged: nothing may arrive before the 300 ms heartbeat.
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(leaves(&heartbeat)[0].0, "/system/state/hostname");
}

#[tokio::test]
async fn updates_only_skips_the_initial_snapshot() {
    let simulator = start(quick_args(1)).await;
    let mut client = client(simulator.device_addresses()[0]).await;
    let mut request = list(
        Mode::Stream,
        Encoding::Proto,
        vec![subscription(
            "/system/cpus",
            SubscriptionMode::Sample,
            Duration::from_millis(100),
        )],
    );
    request.updates_only = true;
    let mut session = open(&mut client, request).await.unwrap();
    assert!(matches!(session.next().await, Received::Sync));
    let sample = leaves(&session.next_notification().await);
    assert_eq!(sample.len(), 2);
}

#[tokio::test]
async fn bad_subscriptions_are_rejected_with_invalid_argument() {
    let simulator = start(quick_args(1)).await;
    let mut client = client(simulator.device_addresses()[0]).await;
    let cases = [
        list(
            Mode::Stream,
            Encoding::Proto,
            vec![subscription(
                "/bogus",
                SubscriptionMode::Sample,
                Duration::ZERO,
            )],
        ),
        list(
            Mode::Stream,
            Encoding::Ascii,
            vec![subscription(
                "/system",
                SubscriptionMode::Sample,
                Duration::ZERO,
            )],
        ),
        list(Mode::Once, Encoding::Proto, Vec::new()),
    ];
    for case in cases {
        let status = match open(&mut client, case).await {
            Err(status) => status,
            Ok(mut session) => session.responses.message().await.unwrap_err(),
        };
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
}

#[tokio::test]
async fn credentials_and_tls_are_enforced() {
    let args = SimulatorArgs {
        tls: true,
        username: Some("admin".into()),
        password: Some("letmein".into()),
        ..quick_args(1)
    };
    let simulator = start(args).await;
    let address = simulator.device_addresses()[0];
    let pem = simulator.certificate_pem().unwrap().to_string();
    let channel = Endpoint::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = gnomon_gnmi::proto::gnmi::g_nmi_client::GNmiClient::new(channel);
    let with = |user: &str, password: &str| {
        let mut request = tonic::Request::new(GetRequest {
            path: vec![path("/system/state/hostname")],
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("username", user.parse().unwrap());
        request
            .metadata_mut()
            .insert("password", password.parse().unwrap());
        request
    };
    assert!(client.get(with("admin", "letmein")).await.is_ok());
    let wrong = client.get(with("admin", "nope")).await.unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let missing = client
        .get(GetRequest {
            path: vec![path("/system")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    let subscribe = open_with(
        &mut client,
        list(
            Mode::Once,
            Encoding::Json,
            vec![subscription(
                "/system",
                SubscriptionMode::Sample,
                Duration::ZERO,
            )],
        ),
        |request| {
            request
                .metadata_mut()
                .insert("username", "admin".parse().unwrap());
            request
                .metadata_mut()
                .insert("password", "bad".parse().unwrap());
        },
    )
    .await;
    assert_eq!(subscribe.err().unwrap().code(), Code::Unauthenticated);

    // A plaintext client cannot talk to the TLS device.
    let plain =
        gnomon_gnmi::proto::gnmi::g_nmi_client::GNmiClient::connect(format!("http://{address}"))
            .await;
    if let Ok(mut plain) = plain {
        assert!(plain.get(with("admin", "letmein")).await.is_err());
    }
}

#[tokio::test]
async fn stats_track_streams_and_peers_until_they_leave() {
    let args = SimulatorArgs {
        stats_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..quick_args(2)
    };
    let simulator = start(args).await;
    let stats_url = format!("http://{}/stats", simulator.stats_address().unwrap());
    let device = simulator.device_addresses()[1];
    let fetch = || async {
        gnomon_testkit::http_get(&stats_url)
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let idle = fetch().await;
    assert_eq!(idle["targets"][device.to_string()]["subscriptions"], 0);
    assert_eq!(idle["targets"].as_object().unwrap().len(), 2);

    let mut client = client(device).await;
    let mut session = open(
        &mut client,
        list(
            Mode::Stream,
            Encoding::Proto,
            vec![subscription(
                "/system",
                SubscriptionMode::Sample,
                Duration::from_secs(10),
            )],
        ),
    )
    .await
    .unwrap();
    session.until_sync().await;
    let busy = fetch().await;
    let entry = &busy["targets"][device.to_string()];
    assert_eq!(entry["subscriptions"], 1);
    let peers = entry["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1);
    assert!(peers[0].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(
        simulator.stats().targets[&device.to_string()].subscriptions,
        1
    );

    // The client goes away while the stream waits for its 10 s sample.
    drop(session);
    drop(client);
    gnomon_testkit::eventually(
        "the stream to be uncounted",
        Duration::from_secs(5),
        || async {
            (fetch().await["targets"][device.to_string()]["subscriptions"] == 0).then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn load_mode_streams_full_batches_of_growing_values() {
    let args = SimulatorArgs {
        load: true,
        updates_per_notification: 12,
        ..quick_args(1)
    };
    let simulator = start(args).await;
    let mut client = client(simulator.device_addresses()[0]).await;
    let mut session = open(
        &mut client,
        list(
            Mode::Stream,
            Encoding::Proto,
            vec![subscription(
                "/interfaces/interface/state/counters",
                SubscriptionMode::Sample,
                Duration::from_secs(1),
            )],
        ),
    )
    .await
    .unwrap();
    session.until_sync().await;
    let mut first_in_octets = Vec::new();
    for _ in 0..50 {
        let notification = session.next_notification().await;
        assert_eq!(notification.update.len(), 12);
        for (path, value) in leaves(&notification) {
            if path == "/interfaces/interface[name=Ethernet1]/state/counters/in-octets" {
                first_in_octets.push(uint(&value));
            }
        }
    }
    assert!(first_in_octets.len() >= 10);
    assert!(first_in_octets.windows(2).all(|w| w[0] < w[1]));
}
