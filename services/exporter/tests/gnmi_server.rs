//! The gNMI server on the exporter's data: messages go in through the in-process bus (the
//! exporter's real input path: fencing, decoding), a tonic gNMI client reads them back.

use gnomon_bus::{Bus, BusMessage, MemoryBus, MessageHeaders};
use gnomon_config::nats_input::NatsInputConfig;
use gnomon_config::{GnmiServerConfig, Secret};
use gnomon_exporter::{Exporter, ExporterDeps, ExporterSettings};
use gnomon_gnmi::path::{parse_path, path_to_string};
use gnomon_gnmi::proto::gnmi::g_nmi_client::GNmiClient;
use gnomon_gnmi::proto::gnmi::{
    subscribe_request, subscribe_response, subscription_list, typed_value, CapabilityRequest,
    Encoding, GetRequest, Notification, Path, Poll, SetRequest, SubscribeRequest,
    SubscribeResponse, Subscription, SubscriptionList, SubscriptionMode, TypedValue, Update,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status, Streaming};

const WAIT: Duration = Duration::from_secs(10);

struct Fixture {
    exporter: Exporter,
    bus: Arc<MemoryBus>,
    addr: std::net::SocketAddr,
}

async fn start(configure: impl FnOnce(&mut GnmiServerConfig)) -> Fixture {
    let mut server = GnmiServerConfig {
        address: "127.0.0.1:0".into(),
        username: Some("admin".into()),
        password: Some(Secret::new("pw-gnmi-1")),
        cache_expiration: None,
        ..Default::default()
    };
    configure(&mut server);
    let input: NatsInputConfig =
        serde_yaml::from_str("format: proto\nsubject: telemetry.>").unwrap();
    let mut settings = ExporterSettings {
        instance_name: "e1".into(),
        cluster_name: "c".into(),
        gnmi_server: Some(server),
        ..Default::default()
    };
    settings.inputs.insert("in".into(), input);
    let bus = Arc::new(MemoryBus::new());
    let deps = ExporterDeps {
        bus: Some(bus.clone()),
        ..Default::default()
    };
    let exporter = Exporter::start(settings, deps, CancellationToken::new())
        .await
        .unwrap();
    let addr = exporter.gnmi_server_addr().unwrap();
    Fixture {
        exporter,
        bus,
        addr,
    }
}

fn string_value(text: &str) -> TypedValue {
    TypedValue {
        value: Some(typed_value::Value::StringVal(text.into())),
    }
}

fn uint_value(n: u64) -> TypedValue {
    TypedValue {
        value: Some(typed_value::Value::UintVal(n)),
    }
}

async fn publish(bus: &MemoryBus, target: &str, timestamp: i64, updates: &[(&str, TypedValue)]) {
    let response = SubscribeResponse {
        response: Some(subscribe_response::Response::Update(Notification {
            timestamp,
            prefix: Some(parse_path("/interfaces").unwrap()),
            update: updates
                .iter()
                .map(|(path, value)| Update {
                    path: Some(parse_path(path).unwrap()),
                    val: Some(value.clone()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })),
        ..Default::default()
    };
    bus.publish(BusMessage {
        subject: format!("telemetry.{target}.s"),
        headers: MessageHeaders {
            target: Some(target.into()),
            subscription: Some("s".into()),
            fencing_token: Some(1),
            traceparent: None,
        },
        payload: prost::Message::encode_to_vec(&response).into(),
    })
    .await
    .unwrap();
}

async fn client(addr: std::net::SocketAddr, small_window: bool) -> GNmiClient<Channel> {
    let mut endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    if small_window {
        endpoint = endpoint
            .initial_stream_window_size(Some(65_535))
            .initial_connection_window_size(Some(65_535));
    }
    GNmiClient::new(endpoint.connect().await.unwrap())
}

fn authed<T>(message: T, password: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("username", "admin".parse().unwrap());
    request
        .metadata_mut()
        .insert("password", password.parse().unwrap());
    request
}

fn prefix_target(target: &str) -> Option<Path> {
    Some(Path {
        target: target.into(),
        ..Default::default()
    })
}

/// Waits until a Get of everything finds `count` updates.
async fn wait_cached(client: &mut GNmiClient<Channel>, count: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = client
            .get(authed(
                GetRequest {
                    path: vec![parse_path("/...").unwrap()],
                    encoding: Encoding::Proto as i32,
                    ..Default::default()
                },
                "pw-gnmi-1",
            ))
            .await;
        let n = got
            .map(|r| {
                r.into_inner()
                    .notification
                    .iter()
                    .map(|n| n.update.len())
                    .sum()
            })
            .unwrap_or(0);
        if n >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cache holds {n} of {count} paths"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn updates_of(response: &SubscribeResponse) -> Vec<(String, String, Option<TypedValue>)> {
    match &response.response {
        Some(subscribe_response::Response::Update(n)) => n
            .update
            .iter()
            .map(|u| {
                (
                    n.prefix
                        .as_ref()
                        .map(|p| p.target.clone())
                        .unwrap_or_default(),
                    path_to_string(u.path.as_ref().unwrap()),
                    u.val.clone(),
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn is_sync(response: &SubscribeResponse) -> bool {
    matches!(
        response.response,
        Some(subscribe_response::Response::SyncResponse(true))
    )
}

async fn subscribe(
    client: &mut GNmiClient<Channel>,
    list: SubscriptionList,
) -> (mpsc::Sender<SubscribeRequest>, Streaming<SubscribeResponse>) {
    let (sender, receiver) = mpsc::channel(4);
    sender
        .send(SubscribeRequest {
            request: Some(subscribe_request::Request::Subscribe(list)),
            ..Default::default()
        })
        .await
        .unwrap();
    let stream = client
        .subscribe(authed(ReceiverStream::new(receiver), "pw-gnmi-1"))
        .await
        .unwrap()
        .into_inner();
    (sender, stream)
}

fn list(
    mode: subscription_list::Mode,
    target: &str,
    path: &str,
    sub_mode: SubscriptionMode,
) -> SubscriptionList {
    SubscriptionList {
        prefix: prefix_target(target),
        subscription: vec![Subscription {
            path: Some(parse_path(path).unwrap()),
            mode: sub_mode as i32,
            ..Default::default()
        }],
        mode: mode as i32,
        encoding: Encoding::Proto as i32,
        ..Default::default()
    }
}

async fn next(
    stream: &mut Streaming<SubscribeResponse>,
) -> Result<Option<SubscribeResponse>, Status> {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("no response in time")
}

/// Reads until a sync_response; returns the updates before it.
async fn until_sync(
    stream: &mut Streaming<SubscribeResponse>,
) -> Vec<(String, String, Option<TypedValue>)> {
    let mut updates = Vec::new();
    loop {
        let response = next(stream)
            .await
            .unwrap()
            .expect("stream ended before sync");
        if is_sync(&response) {
            return updates;
        }
        updates.extend(updates_of(&response));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_get_set_and_credentials() {
    let f = start(|_| {}).await;
    let mut c = client(f.addr, false).await;
    publish(
        &f.bus,
        "r1",
        100,
        &[(
            "interface[name=eth0]/state/counters/in-octets",
            uint_value(7),
        )],
    )
    .await;
    publish(
        &f.bus,
        "r2",
        200,
        &[(
            "interface[name=eth1]/state/counters/in-octets",
            uint_value(9),
        )],
    )
    .await;
    wait_cached(&mut c, 2).await;

    let caps = c
        .capabilities(authed(CapabilityRequest::default(), "pw-gnmi-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.g_nmi_version, gnomon_gnmi::proto::GNMI_VERSION);
    for encoding in [Encoding::Json, Encoding::JsonIetf, Encoding::Proto] {
        assert!(caps.supported_encodings.contains(&(encoding as i32)));
    }

    // One target, wildcard path, JSON.
    let one = c
        .get(authed(
            GetRequest {
                prefix: prefix_target("r1"),
                path: vec![parse_path("/interfaces/interface[name=*]/...").unwrap()],
                encoding: Encoding::Json as i32,
                ..Default::default()
            },
            "pw-gnmi-1",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.notification.len(), 1);
    let n = &one.notification[0];
    assert_eq!(n.prefix.as_ref().unwrap().target, "r1");
    assert_eq!(n.timestamp, 100);
    assert_eq!(
        path_to_string(n.update[0].path.as_ref().unwrap()),
        "/interfaces/interface[name=eth0]/state/counters/in-octets"
    );
    assert_eq!(
        n.update[0].val.as_ref().unwrap().value,
        Some(typed_value::Value::JsonVal(b"7".to_vec()))
    );

    // Every target with `*`.
    let all = c
        .get(authed(
            GetRequest {
                prefix: prefix_target("*"),
                path: vec![parse_path("/interfaces/*/state").unwrap()],
                encoding: Encoding::Proto as i32,
                ..Default::default()
            },
            "pw-gnmi-1",
        ))
        .await
        .unwrap()
        .into_inner();
    let targets: Vec<&str> = all
        .notification
        .iter()
        .map(|n| n.prefix.as_ref().unwrap().target.as_str())
        .collect();
    assert_eq!(targets, ["r1", "r2"]);
    assert_eq!(all.notification[1].update[0].val, Some(uint_value(9)));

    // Nothing there.
    let missing = c
        .get(authed(
            GetRequest {
                prefix: prefix_target("r3"),
                path: vec![parse_path("/...").unwrap()],
                ..Default::default()
            },
            "pw-gnmi-1",
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let set = c
        .set(authed(SetRequest::default(), "pw-gnmi-1"))
        .await
        .unwrap_err();
    assert_eq!(set.code(), Code::Unimplemented, "{set:?}");
    assert!(set.message().contains("Set is not supported"), "{set:?}");

    let wrong = c
        .get(authed(GetRequest::default(), "not-the-password"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let none = c
        .capabilities(Request::new(CapabilityRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated);
    assert!(!none.message().contains("pw-gnmi-1"));
    f.exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_once_poll_and_stream_on_change() {
    let f = start(|_| {}).await;
    let mut c = client(f.addr, false).await;
    let leaf = "interface[name=eth0]/state/counters/in-octets";
    let path = "/interfaces/interface[name=eth0]/state/counters/in-octets";
    publish(&f.bus, "r1", 100, &[(leaf, uint_value(1))]).await;
    publish(&f.bus, "r2", 100, &[(leaf, uint_value(2))]).await;
    wait_cached(&mut c, 2).await;

    // ONCE: dump, sync, end.
    let (_keep, mut once) = subscribe(
        &mut c,
        list(
            subscription_list::Mode::Once,
            "r1",
            "/interfaces/...",
            SubscriptionMode::TargetDefined,
        ),
    )
    .await;
    assert_eq!(
        until_sync(&mut once).await,
        vec![("r1".to_string(), path.to_string(), Some(uint_value(1)))]
    );
    assert!(
        next(&mut once).await.unwrap().is_none(),
        "ONCE must end after its sync"
    );

    // STREAM on-change over every target: initial dump, sync, then each change.
    let (_keep_stream, mut stream) = subscribe(
        &mut c,
        list(
            subscription_list::Mode::Stream,
            "",
            "/interfaces",
            SubscriptionMode::OnChange,
        ),
    )
    .await;
    assert_eq!(until_sync(&mut stream).await.len(), 2);

    // POLL: dump + sync at start and on each poll.
    let (poller, mut poll) = subscribe(
        &mut c,
        list(
            subscription_list::Mode::Poll,
            "r2",
            "/interfaces/interface/state",
            SubscriptionMode::TargetDefined,
        ),
    )
    .await;
    assert_eq!(until_sync(&mut poll).await[0].2, Some(uint_value(2)));

    publish(&f.bus, "r2", 200, &[(leaf, uint_value(3))]).await;
    let response = next(&mut stream).await.unwrap().unwrap();
    assert_eq!(
        updates_of(&response),
        vec![("r2".to_string(), path.to_string(), Some(uint_value(3)))]
    );

    poller
        .send(SubscribeRequest {
            request: Some(subscribe_request::Request::Poll(Poll::default())),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        until_sync(&mut poll).await,
        vec![("r2".to_string(), path.to_string(), Some(uint_value(3)))]
    );
    f.exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sample_resends_at_the_interval() {
    let f = start(|c| c.min_sample_interval = Duration::from_millis(100)).await;
    let mut c = client(f.addr, false).await;
    publish(
        &f.bus,
        "r1",
        100,
        &[("interface[name=eth0]/state/oper-status", string_value("UP"))],
    )
    .await;
    wait_cached(&mut c, 1).await;
    let mut sample = list(
        subscription_list::Mode::Stream,
        "r1",
        "/interfaces",
        SubscriptionMode::Sample,
    );
    sample.subscription[0].sample_interval = 1; // below the minimum: 100 ms
    let (_keep, mut stream) = subscribe(&mut c, sample).await;
    assert_eq!(until_sync(&mut stream).await.len(), 1);
    let started = tokio::time::Instant::now();
    for _ in 0..3 {
        let response = next(&mut stream).await.unwrap().unwrap();
        assert_eq!(updates_of(&response)[0].2, Some(string_value("UP")));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    f.exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_ended_and_the_others_keep_receiving() {
    let f = start(|c| {
        c.max_subscriber_lag = 8;
        c.max_subscriptions = 2;
    })
    .await;
    let mut reader_client = client(f.addr, false).await;
    let mut slow_client = client(f.addr, true).await;
    publish(
        &f.bus,
        "r1",
        1,
        &[("interface[name=eth0]/state/description", string_value("x"))],
    )
    .await;
    wait_cached(&mut reader_client, 1).await;
    let on_change = || {
        list(
            subscription_list::Mode::Stream,
            "r1",
            "/interfaces",
            SubscriptionMode::OnChange,
        )
    };

    let (_keep_slow, mut slow) = subscribe(&mut slow_client, on_change()).await;
    assert_eq!(until_sync(&mut slow).await.len(), 1);
    let (_keep_reader, mut reader) = subscribe(&mut reader_client, on_change()).await;
    assert_eq!(until_sync(&mut reader).await.len(), 1);

    // A third subscription is over max-subscriptions.
    let (sender, receiver) = mpsc::channel(1);
    sender
        .send(SubscribeRequest {
            request: Some(subscribe_request::Request::Subscribe(on_change())),
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = reader_client
        .subscribe(authed(ReceiverStream::new(receiver), "pw-gnmi-1"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    let big = "v".repeat(8 * 1024);
    let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reading = tokio::spawn({
        let read = read.clone();
        async move {
            let mut seen = 0;
            while seen < 300 {
                match next(&mut reader).await {
                    Ok(Some(response)) => seen += updates_of(&response).len(),
                    other => panic!("the reading subscriber ended after {seen}: {other:?}"),
                }
                read.store(seen, std::sync::atomic::Ordering::SeqCst);
            }
            reader
        }
    });
    for i in 0..300i64 {
        // The reader is kept within half the lag bound however late a loaded machine
        // schedules it; the slow one never reads, so it still falls behind.
        let published = i as usize;
        let caught_up = async {
            while published > read.load(std::sync::atomic::Ordering::SeqCst) + 4 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(WAIT, caught_up)
            .await
            .unwrap_or_else(|_| panic!("the reader stopped at {published}"));
        publish(
            &f.bus,
            "r1",
            10 + i,
            &[(
                "interface[name=eth0]/state/description",
                string_value(&format!("{i}{big}")),
            )],
        )
        .await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut reader = tokio::time::timeout(WAIT, reading).await.unwrap().unwrap();

    // The slow one was ended with a status naming why (after whatever was in flight).
    let status = loop {
        match next(&mut slow).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the slow subscription ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("behind"), "{status:?}");

    // The reader still receives, and the slot the slow one held is free again.
    publish(
        &f.bus,
        "r1",
        1_000,
        &[(
            "interface[name=eth0]/state/description",
            string_value("after"),
        )],
    )
    .await;
    let response = next(&mut reader).await.unwrap().unwrap();
    assert_eq!(updates_of(&response)[0].2, Some(string_value("after")));
    let (_keep_again, mut again) = subscribe(&mut slow_client, on_change()).await;
    assert_eq!(until_sync(&mut again).await.len(), 1);
    f.exporter.stop().await;
}

/// 1 000 STREAM on-change subscribers of every device's counters, 100 devices, rounds of one
/// new sample per device (their sample interval, compressed into a round the subscribers
/// have read before the next): every subscriber receives every sample, the input drops
/// nothing, and one subscriber of a high-volume path that never reads is ended with
/// RESOURCE_EXHAUSTED meanwhile, without holding the others back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_keep_up_and_a_stalled_one_is_ended() {
    const SUBSCRIBERS: usize = 1_000;
    const DEVICES: usize = 100;
    const ROUNDS: usize = 5;
    const COUNTER: &str = "interface[name=eth0]/state/counters/in-octets";
    const BULK: &str = "interface[name=bulk]/state/description";
    let f = start(|c| {
        c.max_subscriptions = SUBSCRIBERS as u64 + 1;
        c.max_subscriber_lag = 4 * DEVICES as u64;
    })
    .await;
    let device = |d: usize| format!("d{d}");
    for d in 0..DEVICES {
        publish(&f.bus, &device(d), 1, &[(COUNTER, uint_value(0))]).await;
    }
    let mut probe = client(f.addr, false).await;
    wait_cached(&mut probe, DEVICES).await;

    // Subscribers share 10 connections (HTTP/2 streams), as many clients behind few hosts.
    let mut channels = Vec::new();
    for _ in 0..10 {
        channels.push(client(f.addr, false).await);
    }
    let counters = || {
        list(
            subscription_list::Mode::Stream,
            "*",
            "/interfaces/interface[name=eth0]/state/counters",
            SubscriptionMode::OnChange,
        )
    };
    // Per subscriber: samples received after its initial sync.
    let received: Arc<Vec<std::sync::atomic::AtomicUsize>> =
        Arc::new((0..SUBSCRIBERS).map(|_| Default::default()).collect());
    let mut readers = Vec::new();
    for i in 0..SUBSCRIBERS {
        let connection = i % channels.len();
        let (keep, mut stream) = subscribe(&mut channels[connection], counters()).await;
        assert_eq!(
            until_sync(&mut stream).await.len(),
            DEVICES,
            "subscriber {i}"
        );
        let received = received.clone();
        readers.push(tokio::spawn(async move {
            let _keep = keep;
            loop {
                match stream.message().await {
                    Ok(Some(response)) => {
                        received[i].fetch_add(
                            updates_of(&response).len(),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                    }
                    other => return other.map(|_| ()),
                }
            }
        }));
    }
    let mut stalled_client = client(f.addr, true).await;
    let (_keep_stalled, mut stalled) = subscribe(
        &mut stalled_client,
        list(
            subscription_list::Mode::Stream,
            "*",
            "/interfaces/interface[name=bulk]",
            SubscriptionMode::OnChange,
        ),
    )
    .await;
    assert!(until_sync(&mut stalled).await.is_empty());

    let bulk = "v".repeat(8 * 1024);
    let mut bulk_sent = 0;
    for round in 1..=ROUNDS {
        for d in 0..DEVICES {
            let ts = 1 + round as i64;
            publish(
                &f.bus,
                &device(d),
                ts,
                &[(COUNTER, uint_value(round as u64))],
            )
            .await;
        }
        // The stalled subscriber's path gets 8 KiB values it never reads.
        for _ in 0..150 {
            bulk_sent += 1;
            publish(
                &f.bus,
                "d0",
                bulk_sent,
                &[(BULK, string_value(&format!("{bulk_sent}{bulk}")))],
            )
            .await;
        }
        let wanted = round * DEVICES;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let behind = received
                .iter()
                .filter(|n| n.load(std::sync::atomic::Ordering::Relaxed) < wanted)
                .count();
            if behind == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: {behind} subscribers have not received every device's sample"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for (i, n) in received.iter().enumerate() {
        assert_eq!(
            n.load(std::sync::atomic::Ordering::Relaxed),
            ROUNDS * DEVICES,
            "subscriber {i} received more than was published"
        );
    }
    assert!(
        readers.iter().all(|r| !r.is_finished()),
        "a reading subscriber was ended"
    );
    let status = loop {
        match next(&mut stalled).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stalled subscription ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let stats = f.exporter.stats();
    assert_eq!(stats.dropped_total(), 0, "the input dropped messages");
    assert_eq!(
        stats.messages_total(),
        (DEVICES * (ROUNDS + 1)) as u64 + bulk_sent as u64
    );
    for reader in readers {
        reader.abort();
    }
    f.exporter.stop().await;
}

/// A device snapshot of 5 MiB under one timestamp is dumped as several notifications of at
/// most about 1 MiB, so a client with gRPC's default 4 MiB limit reads it (PROTO and JSON).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_same_timestamp_snapshot_is_split_for_default_clients() {
    const LEAVES: usize = 5_000;
    let f = start(|_| {}).await;
    let value = "d".repeat(1024);
    let paths: Vec<String> = (0..LEAVES)
        .map(|i| format!("interface[name=eth{i}]/state/description"))
        .collect();
    let updates: Vec<(&str, TypedValue)> = paths
        .iter()
        .map(|p| (p.as_str(), string_value(&value)))
        .collect();
    publish(&f.bus, "big", 42, &updates).await;
    // Get answers in one message: the probe accepts a large one.
    let mut probe = client(f.addr, false)
        .await
        .max_decoding_message_size(64 << 20);
    wait_cached(&mut probe, LEAVES).await;
    let mut client = client(f.addr, false).await;
    for encoding in [Encoding::Proto, Encoding::Json] {
        let mut request = list(
            subscription_list::Mode::Once,
            "big",
            "/interfaces",
            SubscriptionMode::TargetDefined,
        );
        request.encoding = encoding as i32;
        let (_keep, mut stream) = subscribe(&mut client, request).await;
        let mut notifications = 0;
        let mut leaves = 0;
        loop {
            let response = next(&mut stream)
                .await
                .unwrap_or_else(|s| panic!("{encoding:?}: {s}"))
                .expect("ended before sync");
            if is_sync(&response) {
                break;
            }
            assert!(
                prost::Message::encoded_len(&response) < (1 << 20) + (64 << 10),
                "{encoding:?}: a notification of {} bytes",
                prost::Message::encoded_len(&response)
            );
            notifications += 1;
            leaves += updates_of(&response).len();
        }
        assert_eq!(leaves, LEAVES, "{encoding:?}");
        assert!(
            notifications >= 5,
            "{encoding:?}: {notifications} notifications"
        );
    }
    f.exporter.stop().await;
}

/// A sample tick over more targets than `max-subscriber-lag` is a dump the client reads as it
/// comes, not a burst that overflows the subscriber's queue: the subscription keeps going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_ticks_larger_than_the_lag_bound_keep_the_subscription() {
    const TARGETS: usize = 40;
    let f = start(|c| c.max_subscriber_lag = 8).await;
    for t in 0..TARGETS {
        publish(
            &f.bus,
            &format!("s{t}"),
            1,
            &[(
                "interface[name=eth0]/state/counters/in-octets",
                uint_value(t as u64),
            )],
        )
        .await;
    }
    let mut client = client(f.addr, false).await;
    wait_cached(&mut client, TARGETS).await;
    let mut request = list(
        subscription_list::Mode::Stream,
        "*",
        "/interfaces",
        SubscriptionMode::Sample,
    );
    request.subscription[0].sample_interval = 50_000_000;
    let (_keep, mut stream) = subscribe(&mut client, request).await;
    assert_eq!(until_sync(&mut stream).await.len(), TARGETS);
    let mut sampled = 0;
    while sampled < 3 * TARGETS {
        match next(&mut stream).await {
            Ok(Some(response)) => sampled += updates_of(&response).len(),
            other => panic!("the sample subscription ended after {sampled} updates: {other:?}"),
        }
    }
    f.exporter.stop().await;
}
