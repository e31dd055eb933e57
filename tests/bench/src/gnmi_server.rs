//! gNMI server benchmarks (issue 18). The exporter's gNMI server runs in-process on
//! 127.0.0.1 over its real cache; data enters through the real ingest path (proto
//! SubscribeResponses with collector headers handed to the NATS input's message handler,
//! which fences, decodes and feeds the cache), and gNMI clients in the same process read it
//! back over TCP — so client work shares the machine with the server. The headline figures
//! use gnomon's collector client (`RawSubscribeCodec`: a response is kept as received and
//! only its top-level framing is scanned to count updates, as a collector forwarding proto
//! does — a gnomon cluster subscribing to another's gNMI server); each is followed by the
//! same measurement with clients that decode every response in full with prost
//! (`…_decoding_clients`), which on 2 shared cores measures mostly the clients.
//!
//! - `gnmi_server_fanout_updates_per_s`: 100 STREAM on-change subscribers (target `*`,
//!   `/interfaces/interface/state/counters`, PROTO) over 10 connections; one thread feeds
//!   notifications of 8 counters each, keeping at most `WINDOW` notifications ahead of the
//!   slowest subscriber (so nobody is ended for lag); the figure is updates received by all
//!   subscribers divided by the wall time from the first notification fed to the last
//!   update received. Goal ≥ 2 M/s.
//! - `gnmi_server_initial_sync_1m_paths_s`: 1 M paths cached (1000 targets × 125 interfaces
//!   × 8 counters), one STREAM subscriber to everything; wall time from sending the
//!   SubscriptionList to receiving sync_response, every update counted. Goal ≤ 1 s. The same
//!   for ONCE as `gnmi_server_initial_sync_1m_paths_once_s`.

use crate::report;
use bytes::Bytes;
use gnomon_bus::{BusMessage, MessageHeaders};
use gnomon_collector::codec::{RawResponse, RawSubscribeCodec, ResponseKind};
use gnomon_config::nats_input::NatsInputConfig;
use gnomon_config::GnmiServerConfig;
use gnomon_exporter::gnmi_cache::GnmiCache;
use gnomon_exporter::input::NatsInput;
use gnomon_exporter::{gnmi_server, ExporterStats, Fencing};
use gnomon_gnmi::proto::gnmi::g_nmi_client::GNmiClient;
use gnomon_gnmi::proto::gnmi::{
    subscribe_request, subscribe_response, subscription_list, typed_value, Encoding, Notification,
    Path, PathElem, SubscribeRequest, SubscribeResponse, Subscription, SubscriptionList,
    SubscriptionMode, TypedValue, Update,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

const COUNTERS: [&str; 8] = [
    "in-octets",
    "out-octets",
    "in-pkts",
    "out-pkts",
    "in-errors",
    "out-errors",
    "in-discards",
    "out-discards",
];
const SUBSCRIBERS: usize = 100;
const CONNECTIONS: usize = 10;
/// Notifications the feeder may be ahead of the slowest subscriber.
const WINDOW: u64 = 2_000;
const FANOUT_NOTIFICATIONS: u64 = 40_000;
const FANOUT_TARGETS: usize = 10;
const FANOUT_INTERFACES: usize = 50;

fn elem(name: &str) -> PathElem {
    PathElem {
        name: name.into(),
        ..Default::default()
    }
}

/// One proto message as the collector publishes it: `target`'s `interface`, 8 counters.
fn message(target: usize, interface: usize, round: u64) -> BusMessage {
    let response = SubscribeResponse {
        response: Some(subscribe_response::Response::Update(Notification {
            timestamp: 1_700_000_000_000_000_000 + round as i64,
            prefix: Some(Path {
                elem: vec![
                    elem("interfaces"),
                    PathElem {
                        name: "interface".into(),
                        key: HashMap::from([("name".into(), format!("ethernet-1/{interface}"))]),
                    },
                    elem("state"),
                    elem("counters"),
                ],
                ..Default::default()
            }),
            update: COUNTERS
                .iter()
                .enumerate()
                .map(|(i, counter)| Update {
                    path: Some(Path {
                        elem: vec![elem(counter)],
                        ..Default::default()
                    }),
                    val: Some(TypedValue {
                        value: Some(typed_value::Value::UintVal(round * 1000 + i as u64)),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })),
        ..Default::default()
    };
    BusMessage {
        subject: format!("telemetry.router-{target}.port-stats"),
        headers: MessageHeaders {
            target: Some(format!("router-{target}")),
            subscription: Some("port-stats".into()),
            fencing_token: Some(1),
            traceparent: None,
        },
        payload: Bytes::from(prost::Message::encode_to_vec(&response)),
    }
}

fn input(cache: Arc<GnmiCache>) -> NatsInput {
    let config: NatsInputConfig =
        serde_json::from_value(serde_json::json!({"format": "proto"})).expect("static config");
    NatsInput {
        name: "bench".into(),
        config,
        queue: "bench".into(),
        client_name: "bench".into(),
        outputs: Vec::new(),
        fencing: Arc::new(Fencing::default()),
        stats: Arc::new(ExporterStats::default()),
        chain: None,
        gnmi_cache: Some(cache),
        shard: None,
    }
}

struct Server {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    cache: Arc<GnmiCache>,
    shutdown: CancellationToken,
    _tasks: JoinSet<()>,
}

fn server(max_paths: u64, lag: u64) -> anyhow::Result<Server> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let config = GnmiServerConfig {
        address: "127.0.0.1:0".into(),
        cache_expiration: None,
        max_cache_paths: max_paths,
        max_subscriber_lag: lag,
        max_subscriptions: 1000,
        ..Default::default()
    };
    let cache = Arc::new(GnmiCache::new(max_paths as usize, lag as usize));
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let addr = runtime.block_on(gnmi_server::start(
        config,
        cache.clone(),
        &mut tasks,
        shutdown.clone(),
    ))?;
    Ok(Server {
        runtime,
        addr,
        cache,
        shutdown,
        _tasks: tasks,
    })
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

/// How the benchmark's clients read responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    /// gnomon's collector client: responses kept as bytes, top-level framing scanned.
    Collector,
    /// tonic's generated client: every response decoded in full.
    Decoding,
}

/// What a client learned from one response.
enum Received {
    Updates(u64),
    Sync,
}

/// A Subscribe stream read the way `client` reads it.
enum Responses {
    Collector(tonic::Streaming<RawResponse>),
    Decoding(tonic::Streaming<SubscribeResponse>),
}

impl Responses {
    async fn open(
        client: Client,
        channel: Channel,
        request: SubscribeRequest,
    ) -> Result<Self, tonic::Status> {
        let outbound = futures::stream::iter(vec![request]);
        match client {
            Client::Decoding => Ok(Self::Decoding(
                GNmiClient::new(channel)
                    .max_decoding_message_size(256 << 20)
                    .subscribe(outbound)
                    .await?
                    .into_inner(),
            )),
            Client::Collector => {
                let mut grpc =
                    tonic::client::Grpc::new(channel).max_decoding_message_size(256 << 20);
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                let path =
                    tonic::codegen::http::uri::PathAndQuery::from_static("/gnmi.gNMI/Subscribe");
                Ok(Self::Collector(
                    grpc.streaming(tonic::Request::new(outbound), path, RawSubscribeCodec)
                        .await?
                        .into_inner(),
                ))
            }
        }
    }

    /// The next response; `None` when the stream ended.
    async fn next(&mut self) -> Result<Option<Received>, tonic::Status> {
        Ok(match self {
            Self::Collector(stream) => stream.message().await?.map(|r| match r.kind {
                ResponseKind::Sync => Received::Sync,
                _ => Received::Updates(r.update_count().into()),
            }),
            Self::Decoding(stream) => stream.message().await?.map(|r| {
                if is_sync(&r) {
                    Received::Sync
                } else {
                    Received::Updates(updates_in(&r))
                }
            }),
        })
    }
}

fn request(mode: subscription_list::Mode, path: Path) -> SubscribeRequest {
    SubscribeRequest {
        request: Some(subscribe_request::Request::Subscribe(SubscriptionList {
            prefix: Some(Path {
                target: "*".into(),
                ..Default::default()
            }),
            subscription: vec![Subscription {
                path: Some(path),
                mode: SubscriptionMode::OnChange as i32,
                ..Default::default()
            }],
            mode: mode as i32,
            encoding: Encoding::Proto as i32,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn counters_path() -> Path {
    Path {
        elem: ["interfaces", "interface", "state", "counters"]
            .into_iter()
            .map(elem)
            .collect(),
        ..Default::default()
    }
}

/// Updates in a response (0 for sync_response).
fn updates_in(response: &SubscribeResponse) -> u64 {
    match &response.response {
        Some(subscribe_response::Response::Update(n)) => n.update.len() as u64,
        _ => 0,
    }
}

fn is_sync(response: &SubscribeResponse) -> bool {
    matches!(
        response.response,
        Some(subscribe_response::Response::SyncResponse(true))
    )
}

pub fn fanout_updates_per_s() -> anyhow::Result<()> {
    fanout(Client::Collector, "gnmi_server_fanout_updates_per_s")?;
    fanout(
        Client::Decoding,
        "gnmi_server_fanout_updates_per_s_decoding_clients",
    )
}

fn fanout(client_kind: Client, name: &str) -> anyhow::Result<()> {
    let server = server(1_000_000, 1 << 16)?;
    let feeder_input = input(server.cache.clone());
    // Every path exists before the subscribers start, so each fed notification is a change.
    for target in 0..FANOUT_TARGETS {
        for interface in 0..FANOUT_INTERFACES {
            feeder_input.process(&message(target, interface, 0));
        }
    }
    let received: Arc<Vec<AtomicU64>> =
        Arc::new((0..SUBSCRIBERS).map(|_| AtomicU64::new(0)).collect());
    let failed = Arc::new(AtomicBool::new(false));
    let (synced_tx, mut synced_rx) = tokio::sync::mpsc::channel::<()>(SUBSCRIBERS);
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(server.runtime.block_on(connect(server.addr))?);
    }
    let mut readers = Vec::new();
    for subscriber in 0..SUBSCRIBERS {
        let channel = clients[subscriber % CONNECTIONS].clone();
        let received = received.clone();
        let failed = failed.clone();
        let synced = synced_tx.clone();
        readers.push(server.runtime.spawn(async move {
            let subscription = request(subscription_list::Mode::Stream, counters_path());
            let mut stream = match Responses::open(client_kind, channel, subscription).await {
                Ok(stream) => stream,
                Err(e) => {
                    eprintln!("subscribe failed: {e}");
                    failed.store(true, Ordering::Relaxed);
                    let _ = synced.send(()).await;
                    return;
                }
            };
            loop {
                match stream.next().await {
                    Ok(Some(Received::Sync)) => {
                        let _ = synced.send(()).await;
                    }
                    // Updates of the initial dump count too, but only after sync is
                    // the feeder running; they are subtracted below.
                    Ok(Some(Received::Updates(n))) => {
                        received[subscriber].fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(None) => return,
                    Err(status) => {
                        eprintln!("subscriber {subscriber} ended: {status}");
                        failed.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }
    drop(synced_tx);
    for _ in 0..SUBSCRIBERS {
        server
            .runtime
            .block_on(synced_rx.recv())
            .ok_or_else(|| anyhow::anyhow!("a subscriber never synced"))?;
    }
    anyhow::ensure!(
        !failed.load(Ordering::Relaxed),
        "a subscriber failed to start"
    );
    let initial = (FANOUT_TARGETS * FANOUT_INTERFACES * COUNTERS.len()) as u64;
    let per_notification = COUNTERS.len() as u64;
    let slowest = || {
        received
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
            .saturating_sub(initial)
            / per_notification
    };
    let started = Instant::now();
    let mut fed: u64 = 0;
    let mut round = 1;
    while fed < FANOUT_NOTIFICATIONS {
        for target in 0..FANOUT_TARGETS {
            for interface in 0..FANOUT_INTERFACES {
                while fed >= slowest() + WINDOW {
                    anyhow::ensure!(!failed.load(Ordering::Relaxed), "a subscriber was ended");
                    // Sleep, not yield: on 2 cores a spinning feeder takes a core from the
                    // server and the subscribers it waits for.
                    std::thread::sleep(Duration::from_micros(100));
                }
                feeder_input.process(&message(target, interface, round));
                fed += 1;
            }
        }
        round += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while slowest() < fed {
        anyhow::ensure!(!failed.load(Ordering::Relaxed), "a subscriber was ended");
        anyhow::ensure!(Instant::now() < deadline, "subscribers did not catch up");
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let delivered: u64 = received
        .iter()
        .map(|r| r.load(Ordering::Relaxed) - initial)
        .sum();
    eprintln!(
        "{name}: {SUBSCRIBERS} subscribers ({client_kind:?} clients), {fed} notifications × {per_notification} updates fed, {delivered} updates delivered in {elapsed:.3} s"
    );
    report(name, delivered as f64 / elapsed, "updates/s");
    server.shutdown.cancel();
    Ok(())
}

pub fn initial_sync_1m_paths_s() -> anyhow::Result<()> {
    const TARGETS: usize = 1000;
    const INTERFACES: usize = 125;
    let server = server(2_000_000, 1000)?;
    let feeder = input(server.cache.clone());
    let loading = Instant::now();
    for target in 0..TARGETS {
        for interface in 0..INTERFACES {
            feeder.process(&message(target, interface, 1));
        }
    }
    let paths = server.cache.len();
    anyhow::ensure!(paths == 1_000_000, "cache holds {paths} paths");
    eprintln!(
        "loaded {paths} paths in {:.2} s",
        loading.elapsed().as_secs_f64()
    );
    let everything = Path {
        elem: vec![elem("...")],
        ..Default::default()
    };
    for (name, mode, client) in [
        (
            "gnmi_server_initial_sync_1m_paths_s",
            subscription_list::Mode::Stream,
            Client::Collector,
        ),
        (
            "gnmi_server_initial_sync_1m_paths_once_s",
            subscription_list::Mode::Once,
            Client::Collector,
        ),
        (
            "gnmi_server_initial_sync_1m_paths_s_decoding_client",
            subscription_list::Mode::Stream,
            Client::Decoding,
        ),
    ] {
        let (elapsed, updates) = server.runtime.block_on(async {
            let channel = connect(server.addr).await?;
            let started = Instant::now();
            let mut stream =
                Responses::open(client, channel, request(mode, everything.clone())).await?;
            let mut updates = 0;
            loop {
                match stream.next().await? {
                    Some(Received::Sync) => break,
                    Some(Received::Updates(n)) => updates += n,
                    None => anyhow::bail!("the stream ended before sync_response"),
                }
            }
            anyhow::Ok((started.elapsed().as_secs_f64(), updates))
        })?;
        anyhow::ensure!(updates == paths as u64, "{updates} updates before sync");
        eprintln!("{name}: {updates} updates until sync_response ({client:?} client)");
        report(name, elapsed, "s");
    }
    server.shutdown.cancel();
    Ok(())
}
