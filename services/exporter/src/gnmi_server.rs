//! gnmic's `gnmi-server`: Capabilities, Get and Subscribe answered from the exporter's
//! latest-value cache ([`crate::gnmi_cache`]), i.e. from what the cluster collected.
//!
//! Why this shape: each Subscribe runs in its own task that reads the cache's change ring
//! and writes into a bounded per-subscriber queue (`max-subscriber-lag` responses) that the
//! gRPC response stream drains. Ingest only ever publishes to the ring, so no subscriber
//! can slow it; a subscriber whose queue is full, or that falls off the ring, is ended with
//! `RESOURCE_EXHAUSTED` naming why (the status is delivered ahead of anything still queued,
//! as soon as the connection lets it through), and the others carry on.
//!
//! Responses are queued already encoded: Subscribe is mounted with its own codec
//! ([`GnmiRouter`], [`crate::gnmi_wire`]) so that a change is encoded once and shared by all
//! the PROTO subscribers that want all of it, and a PROTO dump (initial, poll, sample tick)
//! is written from each leaf's cached `Update` bytes under one target's read lock at a
//! time, queued 1 MiB at a time so the client reads while the rest is written. JSON
//! encodings and partly wanted changes are encoded per subscriber, as before.
//!
//! What it costs: per subscriber a task, its queue, a pattern match per changed leaf and a
//! copy of each response into its HTTP/2 stream; per PROTO dump one copy of the matching
//! leaves' bytes (JSON: a copy of the entries, then an encode). Not implemented yet: Get/Set relayed to targets
//! (Get is answered from the cache; Set is UNIMPLEMENTED), `heartbeat_interval`,
//! `suppress_redundant` and `origin: gnmic` paths. Registration as a service is
//! `crate::registration`'s, as for the Prometheus output.

use crate::gnmi_cache::{Change, Entry, GnmiCache, TargetSnapshot};
use crate::gnmi_wire::{notification, Encoded, EncodedCodec};
use crate::stats;
use anyhow::Context;
use futures::Stream;
use gnomon_config::GnmiServerConfig;
use gnomon_gnmi::path::{join_paths, path_matches};
use gnomon_gnmi::proto::gnmi::g_nmi_server::{GNmi, GNmiServer};
use gnomon_gnmi::proto::gnmi::{
    subscribe_request, subscribe_response, subscription_list, typed_value, CapabilityRequest,
    CapabilityResponse, Encoding, GetRequest, GetResponse, Notification, Path, SetRequest,
    SetResponse, SubscribeRequest, SubscribeResponse, SubscriptionList, SubscriptionMode,
    TypedValue, Update,
};
use gnomon_gnmi::proto::GNMI_VERSION;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

/// Connections the server keeps at most (as every gnomon listener).
pub const MAX_CONNECTIONS: usize = 256;
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to read a dump (initial, poll, sample) before it is ended.
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(30);
/// Encoded bytes of a PROTO dump queued at once: the client reads one batch while the next
/// is encoded, and a large dump never sits in memory whole.
const DUMP_BATCH_BYTES: usize = 1 << 20;
/// Largest notification of a dump, in update bytes: leaves sharing a timestamp are split
/// into notifications of at most this much, so none nears the 4 MiB a gRPC client accepts
/// by default (a device's snapshot often carries one timestamp for all its leaves).
const MAX_NOTIFICATION_BYTES: usize = 1 << 20;

/// The peer of a connection, in each request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub Option<SocketAddr>);

/// A connection holding one of the listener's connection slots.
pub struct Limited<IO> {
    io: IO,
    peer: Option<SocketAddr>,
    _slot: OwnedSemaphorePermit,
}

impl<IO> Connected for Limited<IO> {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        Peer(self.peer)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Limited<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Limited<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Accepts connections (at most [`MAX_CONNECTIONS`]; a TLS handshake runs in its own task
/// with a timeout) and hands them to the gRPC server through a bounded channel.
fn accept_loop<IO, F, Fut>(
    listener: TcpListener,
    handshake: F,
    tasks: &mut JoinSet<()>,
    shutdown: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<Result<Limited<IO>, std::io::Error>>
where
    IO: Send + 'static,
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = std::io::Result<IO>> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let handshake = Arc::new(handshake);
    tasks.spawn(async move {
        let mut errors = gnomon_common::log::Throttle::new(Duration::from_secs(30));
        loop {
            let slot = tokio::select! {
                _ = shutdown.cancelled() => return,
                slot = slots.clone().acquire_owned() => match slot { Ok(s) => s, Err(_) => return },
            };
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if let Some(suppressed) = errors.allow() {
                        tracing::warn!(error = %e, suppressed, "gNMI server: accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let sender = sender.clone();
            let handshake = handshake.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream)).await {
                    Ok(Ok(io)) => {
                        let _ = sender
                            .send(Ok(Limited {
                                io,
                                peer: Some(peer),
                                _slot: slot,
                            }))
                            .await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "gNMI server: TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "gNMI server: TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// Binds `config.address` and serves the gNMI server until `shutdown`; returns the bound
/// address.
pub async fn start(
    config: GnmiServerConfig,
    cache: Arc<GnmiCache>,
    tasks: &mut JoinSet<()>,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(config.bind_address())
        .await
        .with_context(|| format!("gnmi-server.address: binding {}", config.address))?;
    let bound = listener.local_addr()?;
    let tls = match config.server_tls() {
        Some(options) => {
            gnomon_common::tls::ensure_crypto_provider();
            let server = gnomon_common::tls::server_config(&options, &[b"h2"])
                .map_err(|e| anyhow::anyhow!("gnmi-server.tls: {e}"))?;
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
        }
        None => None,
    };
    let service = GnmiService::new(config.clone(), cache.clone(), shutdown.clone());
    let grpc = GnmiRouter::new(
        Arc::new(service),
        config.max_recv_msg_size,
        config.max_send_msg_size,
    );
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_keepalive_interval(config.keepalive_time)
        .http2_keepalive_timeout(config.keepalive_timeout)
        .add_service(grpc);
    let stop = shutdown.clone();
    match tls {
        Some(acceptor) => {
            let incoming = accept_loop(
                listener,
                move |stream| {
                    let acceptor = acceptor.clone();
                    async move { acceptor.accept(stream).await }
                },
                tasks,
                shutdown.clone(),
            );
            tasks.spawn(async move {
                if let Err(e) = router
                    .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                    .await
                {
                    tracing::error!(error = %e, "gNMI server stopped");
                }
            });
        }
        None => {
            let incoming = accept_loop(
                listener,
                |stream| async move { Ok(stream) },
                tasks,
                shutdown.clone(),
            );
            tasks.spawn(async move {
                if let Err(e) = router
                    .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                    .await
                {
                    tracing::error!(error = %e, "gNMI server stopped");
                }
            });
        }
    }
    if let Some(expiration) = config.cache_expiration {
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let mut timer = tokio::time::interval((expiration / 4).max(Duration::from_millis(100)));
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = timer.tick() => {
                        let expired = cache.expire(expiration);
                        metrics::counter!(stats::GNMI_CACHE_EXPIRED).increment(expired as u64);
                        metrics::gauge!(stats::GNMI_CACHE_PATHS).set(cache.len() as f64);
                    }
                }
            }
        });
    }
    tracing::info!(listen = %bound, tls = config.tls.is_some(), "gNMI server listening");
    Ok(bound)
}

/// The gNMI service.
pub struct GnmiService {
    cache: Arc<GnmiCache>,
    config: Arc<GnmiServerConfig>,
    subscriptions: Arc<Semaphore>,
    unary: Arc<Semaphore>,
    shutdown: CancellationToken,
}

fn refused(rpc: &'static str, reason: &'static str) {
    metrics::counter!(stats::GNMI_REFUSED, "rpc" => rpc, "reason" => reason).increment(1);
}

/// Byte-wise comparison that does not stop at the first difference.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, b) in expected.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ b);
    }
    diff == 0
}

fn peer_of<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Peer>()
        .and_then(|p| p.0)
        .map(|a| a.to_string())
        .unwrap_or_default()
}

impl GnmiService {
    pub fn new(
        config: GnmiServerConfig,
        cache: Arc<GnmiCache>,
        shutdown: CancellationToken,
    ) -> Self {
        let clamp = |n: u64| {
            usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(Semaphore::MAX_PERMITS)
        };
        Self {
            subscriptions: Arc::new(Semaphore::new(clamp(config.max_subscriptions))),
            unary: Arc::new(Semaphore::new(clamp(config.max_unary_rpc))),
            cache,
            config: Arc::new(config),
            shutdown,
        }
    }

    /// Checks `username`/`password` metadata when the server requires them.
    fn authorize<T>(&self, rpc: &'static str, request: &Request<T>) -> Result<(), Status> {
        let (Some(username), Some(password)) = (&self.config.username, &self.config.password)
        else {
            return Ok(());
        };
        let metadata = request.metadata();
        let given = |key: &str| {
            metadata
                .get(key)
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default()
        };
        let user_ok = same_secret(&given("username"), username.as_bytes());
        let password_ok = same_secret(&given("password"), password.expose().as_bytes());
        if user_ok && password_ok {
            Ok(())
        } else {
            refused(rpc, "unauthenticated");
            Err(Status::unauthenticated(
                "invalid username or password (send them as the username and password metadata)",
            ))
        }
    }

    fn unary_permit(&self, rpc: &'static str) -> Result<OwnedSemaphorePermit, Status> {
        self.unary.clone().try_acquire_owned().map_err(|_| {
            refused(rpc, "limit");
            Status::resource_exhausted(format!(
                "the server answers at most {} Get/Set RPCs at once (gnmi-server.max-unary-rpc)",
                self.config.max_unary_rpc
            ))
        })
    }
}

/// Which targets a prefix selects: empty or `*` = all; else a comma-separated list.
#[derive(Clone, Debug)]
enum Targets {
    All,
    Some(BTreeSet<String>),
}

impl Targets {
    fn of(prefix: Option<&Path>) -> Self {
        let target = prefix.map(|p| p.target.trim()).unwrap_or_default();
        if target.is_empty() || target == "*" {
            return Targets::All;
        }
        Targets::Some(
            target
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
        )
    }
    fn selects(&self, target: &str) -> bool {
        match self {
            Targets::All => true,
            Targets::Some(set) => set.contains(target),
        }
    }
}

/// How values are encoded in responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValueEncoding {
    Json,
    JsonIetf,
    Proto,
}

impl ValueEncoding {
    fn of(encoding: i32) -> Result<Self, Status> {
        match Encoding::try_from(encoding) {
            Ok(Encoding::Json) => Ok(Self::Json),
            Ok(Encoding::JsonIetf) => Ok(Self::JsonIetf),
            Ok(Encoding::Proto) => Ok(Self::Proto),
            Ok(other) => Err(Status::unimplemented(format!(
                "encoding {} is not supported (JSON, JSON_IETF or PROTO)",
                other.as_str_name()
            ))),
            Err(_) => Err(Status::invalid_argument(format!(
                "encoding {encoding} is not a gNMI encoding"
            ))),
        }
    }

    fn encode(self, value: &TypedValue) -> TypedValue {
        let json = || match &value.value {
            Some(typed_value::Value::JsonVal(bytes) | typed_value::Value::JsonIetfVal(bytes)) => {
                bytes.clone()
            }
            _ => serde_json::to_vec(&gnomon_gnmi::value::to_json(value)).unwrap_or_default(),
        };
        match self {
            Self::Proto => value.clone(),
            Self::Json => TypedValue {
                value: Some(typed_value::Value::JsonVal(json())),
            },
            Self::JsonIetf => TypedValue {
                value: Some(typed_value::Value::JsonIetfVal(json())),
            },
        }
    }
}

fn target_prefix(target: &str) -> Path {
    Path {
        target: target.to_string(),
        ..Default::default()
    }
}

/// A target's entries as notifications: consecutive entries with the same device timestamp
/// share one.
fn dump_notifications(snapshot: TargetSnapshot, encoding: ValueEncoding) -> Vec<Notification> {
    let mut out: Vec<Notification> = Vec::new();
    let mut entries: Vec<Entry> = snapshot.entries;
    entries.sort_by_key(|e| e.timestamp);
    // Update bytes in the last notification (capped like PROTO dumps).
    let mut bytes = 0;
    for entry in entries {
        let timestamp = entry.timestamp;
        let update = Update {
            path: Some(entry.leaf.path.clone()),
            val: Some(encoding.encode(&entry.leaf.value)),
            ..Default::default()
        };
        let size = prost::Message::encoded_len(&update);
        match out.last_mut() {
            Some(last) if last.timestamp == timestamp && bytes + size <= MAX_NOTIFICATION_BYTES => {
                bytes += size;
                last.update.push(update)
            }
            _ => {
                bytes = size;
                out.push(Notification {
                    timestamp,
                    prefix: Some(target_prefix(&snapshot.target)),
                    update: vec![update],
                    ..Default::default()
                })
            }
        }
    }
    out
}

fn untargeted_patterns(prefix: Option<&Path>, paths: &[Path]) -> Vec<Path> {
    let mut patterns: Vec<Path> = if paths.is_empty() {
        vec![prefix.cloned().unwrap_or_default()]
    } else {
        paths.iter().map(|p| join_paths(prefix, p)).collect()
    };
    for pattern in &mut patterns {
        pattern.target.clear();
    }
    patterns
}

#[tonic::async_trait]
impl GNmi for GnmiService {
    async fn capabilities(
        &self,
        request: Request<CapabilityRequest>,
    ) -> Result<Response<CapabilityResponse>, Status> {
        let span = tracing::info_span!("gnmi_capabilities", peer = %peer_of(&request));
        let _entered = span.enter();
        self.authorize("Capabilities", &request)?;
        Ok(Response::new(CapabilityResponse {
            supported_models: Vec::new(),
            supported_encodings: vec![
                Encoding::Json as i32,
                Encoding::JsonIetf as i32,
                Encoding::Proto as i32,
            ],
            g_nmi_version: GNMI_VERSION.to_string(),
            extension: Vec::new(),
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let span = tracing::info_span!("gnmi_get", peer = %peer_of(&request));
        let _entered = span.enter();
        self.authorize("Get", &request)?;
        let _permit = self.unary_permit("Get")?;
        let get = request.get_ref();
        let encoding = ValueEncoding::of(get.encoding)?;
        if get.path.iter().any(|p| p.origin == "gnmic") {
            return Err(Status::unimplemented(
                "origin gnmic (the server's own targets and subscriptions) is not served",
            ));
        }
        let targets = Targets::of(get.prefix.as_ref());
        let patterns = untargeted_patterns(get.prefix.as_ref(), &get.path);
        let snapshots = self.cache.snapshot(|t| targets.selects(t), &patterns);
        let notification: Vec<Notification> = snapshots
            .into_iter()
            .flat_map(|s| dump_notifications(s, encoding))
            .collect();
        if notification.is_empty() {
            return Err(Status::not_found(
                "no cached value matches the requested paths and targets",
            ));
        }
        tracing::debug!(notifications = notification.len(), "Get answered");
        Ok(Response::new(GetResponse {
            notification,
            ..Default::default()
        }))
    }

    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        self.authorize("Set", &request)?;
        Err(Status::unimplemented(
            "Set is not supported: gnomon's gNMI server serves the cluster's collected data and does not relay Set to the targets",
        ))
    }

    type SubscribeStream = DecodedResponses;

    /// Served by [`GnmiRouter`] without this decode; here for the generated server alone.
    async fn subscribe(
        &self,
        request: Request<Streaming<SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let responses = self.subscribe_encoded(request).await?;
        Ok(Response::new(DecodedResponses(responses)))
    }
}

impl GnmiService {
    /// Starts a subscription; its responses come already encoded.
    pub async fn subscribe_encoded(
        &self,
        request: Request<Streaming<SubscribeRequest>>,
    ) -> Result<SubscribeResponses, Status> {
        let peer = peer_of(&request);
        self.authorize("Subscribe", &request)?;
        let permit = self
            .subscriptions
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                refused("Subscribe", "limit");
                Status::resource_exhausted(format!(
                    "the server serves at most {} subscriptions (gnmi-server.max-subscriptions)",
                    self.config.max_subscriptions
                ))
            })?;
        let mut requests = request.into_inner();
        let first = tokio::time::timeout(DUMP_TIMEOUT, requests.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no SubscribeRequest within 30s"))??;
        let Some(subscribe_request::Request::Subscribe(list)) = first.and_then(|r| r.request)
        else {
            return Err(Status::invalid_argument(
                "the first SubscribeRequest must carry a SubscriptionList",
            ));
        };
        let plan = Plan::of(&list, &self.config)?;
        let capacity = usize::try_from(self.config.max_subscriber_lag)
            .unwrap_or(usize::MAX)
            .clamp(1, 1 << 20);
        let (sender, receiver) = mpsc::channel(capacity);
        let (kill, killed) = oneshot::channel();
        // Subscribed to the ring before the first dump, so no change is missed.
        let changes = self.cache.subscribe();
        let subscriber = Subscriber {
            cache: self.cache.clone(),
            plan,
            sender,
            kill: Some(kill),
            capacity,
        };
        let span = tracing::info_span!("gnmi_subscribe", %peer, mode = ?subscriber.plan.mode);
        let shutdown = self.shutdown.clone();
        tokio::spawn(
            async move {
                metrics::gauge!(stats::GNMI_SUBSCRIBERS).increment(1.0);
                subscriber.run(changes, requests, shutdown).await;
                metrics::gauge!(stats::GNMI_SUBSCRIBERS).decrement(1.0);
                drop(permit);
            }
            .instrument(span),
        );
        Ok(SubscribeResponses {
            receiver,
            killed: Some(killed),
            done: false,
        })
    }
}

/// The response stream: a killed subscription's status comes before anything queued.
pub struct SubscribeResponses {
    receiver: mpsc::Receiver<Result<Encoded, Status>>,
    killed: Option<oneshot::Receiver<Status>>,
    done: bool,
}

impl Stream for SubscribeResponses {
    type Item = Result<Encoded, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(killed) = self.killed.as_mut() {
            match Pin::new(killed).poll(cx) {
                Poll::Ready(Ok(status)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(status)));
                }
                Poll::Ready(Err(_)) => self.killed = None,
                Poll::Pending => {}
            }
        }
        self.receiver.poll_recv(cx)
    }
}

/// [`SubscribeResponses`] decoded back into messages (the generated trait's stream type).
pub struct DecodedResponses(SubscribeResponses);

impl Stream for DecodedResponses {
    type Item = Result<SubscribeResponse, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|item| item.map(|r| r.and_then(|encoded| encoded.decode())))
    }
}

/// The gNMI service as mounted: Subscribe is served with [`EncodedCodec`], so responses
/// encoded once (a change, a cached leaf) are written as they are; the other RPCs go to the
/// generated server.
#[derive(Clone)]
pub struct GnmiRouter {
    generated: GNmiServer<GnmiService>,
    service: Arc<GnmiService>,
    max_decoding: Option<usize>,
    max_encoding: Option<usize>,
}

impl GnmiRouter {
    pub fn new(
        service: Arc<GnmiService>,
        max_decoding: Option<usize>,
        max_encoding: Option<usize>,
    ) -> Self {
        let mut generated = GNmiServer::from_arc(service.clone());
        if let Some(size) = max_decoding {
            generated = generated.max_decoding_message_size(size);
        }
        if let Some(size) = max_encoding {
            generated = generated.max_encoding_message_size(size);
        }
        Self {
            generated,
            service,
            max_decoding,
            max_encoding,
        }
    }
}

impl tonic::server::NamedService for GnmiRouter {
    const NAME: &'static str = gnomon_gnmi::proto::gnmi::g_nmi_server::SERVICE_NAME;
}

type HttpRequest = tonic::codegen::http::Request<tonic::body::Body>;
type HttpResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl tower::Service<HttpRequest> for GnmiRouter {
    type Response = HttpResponse;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        if request.uri().path() != "/gnmi.gNMI/Subscribe" {
            return Box::pin(self.generated.call(request));
        }
        let service = self.service.clone();
        let (max_decoding, max_encoding) = (self.max_decoding, self.max_encoding);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(EncodedCodec)
                .apply_max_message_size_config(max_decoding, max_encoding);
            Ok(grpc.streaming(SubscribeRpc(service), request).await)
        })
    }
}

/// The Subscribe RPC over [`GnmiService::subscribe_encoded`].
struct SubscribeRpc(Arc<GnmiService>);

impl tonic::server::StreamingService<SubscribeRequest> for SubscribeRpc {
    type Response = Encoded;
    type ResponseStream = SubscribeResponses;
    type Future =
        Pin<Box<dyn Future<Output = Result<Response<SubscribeResponses>, Status>> + Send>>;

    fn call(&mut self, request: Request<Streaming<SubscribeRequest>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.subscribe_encoded(request).await.map(Response::new) })
    }
}

use std::future::Future;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListMode {
    Once,
    Poll,
    Stream,
}

/// What a SubscriptionList asks for.
struct Plan {
    mode: ListMode,
    targets: Targets,
    encoding: ValueEncoding,
    updates_only: bool,
    /// Paths followed on change (ON_CHANGE, TARGET_DEFINED; every path for ONCE/POLL).
    on_change: Vec<Path>,
    /// Paths re-sent every interval (SAMPLE).
    sampled: Vec<(Path, Duration)>,
}

impl Plan {
    fn of(list: &SubscriptionList, config: &GnmiServerConfig) -> Result<Self, Status> {
        let mode = match subscription_list::Mode::try_from(list.mode) {
            Ok(subscription_list::Mode::Once) => ListMode::Once,
            Ok(subscription_list::Mode::Poll) => ListMode::Poll,
            Ok(subscription_list::Mode::Stream) => ListMode::Stream,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "subscription list mode {} is not ONCE, POLL or STREAM",
                    list.mode
                )))
            }
        };
        let prefix = list.prefix.as_ref();
        let mut on_change = Vec::new();
        let mut sampled = Vec::new();
        let subscriptions: Vec<(Path, i32, u64)> = if list.subscription.is_empty() {
            vec![(Path::default(), SubscriptionMode::TargetDefined as i32, 0)]
        } else {
            list.subscription
                .iter()
                .map(|s| {
                    (
                        s.path.clone().unwrap_or_default(),
                        s.mode,
                        s.sample_interval,
                    )
                })
                .collect()
        };
        for (path, sub_mode, interval) in subscriptions {
            let mut pattern = join_paths(prefix, &path);
            pattern.target.clear();
            if mode == ListMode::Stream && sub_mode == SubscriptionMode::Sample as i32 {
                sampled.push((pattern, config.sample_interval(interval)));
            } else {
                on_change.push(pattern);
            }
        }
        Ok(Self {
            mode,
            targets: Targets::of(prefix),
            encoding: ValueEncoding::of(list.encoding)?,
            updates_only: list.updates_only,
            on_change,
            sampled,
        })
    }

    fn all_patterns(&self) -> Vec<Path> {
        self.on_change
            .iter()
            .cloned()
            .chain(self.sampled.iter().map(|(p, _)| p.clone()))
            .collect()
    }

    /// The part of a change this subscription wants, as a response. A PROTO subscription
    /// that wants all of it shares the change's one encoding with the others.
    fn filter(&self, change: &Change) -> Option<Encoded> {
        if !self.targets.selects(&change.target) {
            return None;
        }
        let wanted = |path: &Path| self.on_change.iter().any(|p| path_matches(p, path));
        let deleted = |d: &Path| wanted(d) || self.on_change.iter().any(|p| path_matches(d, p));
        if self.encoding == ValueEncoding::Proto
            && change.updates.iter().all(|leaf| wanted(&leaf.path))
            && change.deletes.iter().all(deleted)
        {
            return Some(
                change
                    .whole
                    .get_or_init(|| {
                        notification(
                            change.timestamp,
                            &change.target,
                            change.updates.iter().map(|leaf| leaf.encoded.as_ref()),
                            &change.deletes,
                        )
                    })
                    .clone(),
            );
        }
        let delete: Vec<Path> = change
            .deletes
            .iter()
            .filter(|d| deleted(d))
            .cloned()
            .collect();
        let updates = change.updates.iter().filter(|leaf| wanted(&leaf.path));
        if updates.clone().next().is_none() && delete.is_empty() {
            return None;
        }
        if self.encoding == ValueEncoding::Proto {
            return Some(notification(
                change.timestamp,
                &change.target,
                updates.map(|leaf| leaf.encoded.as_ref()),
                &delete,
            ));
        }
        let update = updates
            .map(|leaf| Update {
                path: Some(leaf.path.clone()),
                val: Some(self.encoding.encode(&leaf.value)),
                ..Default::default()
            })
            .collect();
        Some(Encoded::of(&update_response(Notification {
            timestamp: change.timestamp,
            prefix: Some(target_prefix(&change.target)),
            update,
            delete,
            ..Default::default()
        })))
    }
}

/// A target's matching entries (in dump order) as PROTO responses written from each leaf's
/// encoded bytes: consecutive entries with the same device timestamp share a notification,
/// as in [`dump_notifications`]. Returns the bytes written.
fn encode_entries(target: &str, entries: &[&Entry], out: &mut Vec<Encoded>) -> usize {
    let mut written = 0;
    for group in entries.chunk_by(|a, b| a.timestamp == b.timestamp) {
        let mut rest = group;
        while !rest.is_empty() {
            let take = within_bytes(rest, |e| e.leaf.encoded.len());
            let response = notification(
                rest[0].timestamp,
                target,
                rest[..take].iter().map(|e| e.leaf.encoded.as_ref()),
                &[],
            );
            written += response.0.len();
            out.push(response);
            rest = &rest[take..];
        }
    }
    written
}

/// How many leading `items` fit in [`MAX_NOTIFICATION_BYTES`] (at least one).
fn within_bytes<T>(items: &[T], size: impl Fn(&T) -> usize) -> usize {
    let mut bytes = 0;
    items
        .iter()
        .position(|item| {
            bytes += size(item);
            bytes > MAX_NOTIFICATION_BYTES
        })
        .unwrap_or(items.len())
        .max(1)
}

fn update_response(notification: Notification) -> SubscribeResponse {
    SubscribeResponse {
        response: Some(subscribe_response::Response::Update(notification)),
        ..Default::default()
    }
}

fn sync_response() -> SubscribeResponse {
    SubscribeResponse {
        response: Some(subscribe_response::Response::SyncResponse(true)),
        ..Default::default()
    }
}

/// Why a subscription ends early.
enum End {
    /// The client went away or the server stops: nothing to say.
    Quiet,
    /// Ended with this status.
    Status(Status),
}

struct Subscriber {
    cache: Arc<GnmiCache>,
    plan: Plan,
    sender: mpsc::Sender<Result<Encoded, Status>>,
    kill: Option<oneshot::Sender<Status>>,
    capacity: usize,
}

impl Subscriber {
    async fn run(
        mut self,
        mut changes: broadcast::Receiver<Arc<Change>>,
        mut requests: Streaming<SubscribeRequest>,
        shutdown: CancellationToken,
    ) {
        let outcome = self.serve(&mut changes, &mut requests, &shutdown).await;
        match outcome {
            Ok(()) | Err(End::Quiet) => {}
            Err(End::Status(status)) => {
                tracing::info!(code = ?status.code(), message = %status.message(), "gNMI subscription ended");
                if let Some(kill) = self.kill.take() {
                    let _ = kill.send(status);
                }
            }
        }
    }

    /// Sends a dump, waiting at most [`DUMP_TIMEOUT`] for the client to read it.
    async fn send_dump(&self, responses: Vec<Encoded>) -> Result<(), End> {
        for response in responses {
            match self.sender.send_timeout(Ok(response), DUMP_TIMEOUT).await {
                Ok(()) => {}
                Err(mpsc::error::SendTimeoutError::Closed(_)) => return Err(End::Quiet),
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    metrics::counter!(stats::GNMI_SLOW_ENDED, "reason" => "dump_timeout")
                        .increment(1);
                    return Err(End::Status(Status::resource_exhausted(format!(
                        "the client did not read the dump within {}s; subscription ended",
                        DUMP_TIMEOUT.as_secs()
                    ))));
                }
            }
        }
        Ok(())
    }

    /// Queues a change without waiting: a full queue ends the subscription.
    fn send_change(&self, response: Encoded) -> Result<(), End> {
        match self.sender.try_send(Ok(response)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(End::Quiet),
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!(stats::GNMI_SLOW_ENDED, "reason" => "queue_full").increment(1);
                Err(End::Status(Status::resource_exhausted(format!(
                    "the client fell {} responses behind (gnmi-server.max-subscriber-lag); subscription ended",
                    self.capacity
                ))))
            }
        }
    }

    /// A whole dump, in memory (JSON encodings).
    fn dump(&self, patterns: &[Path]) -> (Vec<Encoded>, Vec<(Arc<str>, u64)>) {
        if self.plan.encoding == ValueEncoding::Proto {
            let mut responses = Vec::new();
            let mut seqs = Vec::new();
            for target in self.cache.targets(|t| self.plan.targets.selects(t)) {
                let seq = self.cache.visit(&target, patterns, |seq, entries| {
                    encode_entries(&target, entries, &mut responses);
                    seq
                });
                seqs.push((target, seq));
            }
            return (responses, seqs);
        }
        let snapshots = self
            .cache
            .snapshot(|t| self.plan.targets.selects(t), patterns);
        let seqs = snapshots
            .iter()
            .map(|s| (s.target.clone(), s.seq))
            .collect();
        let responses = snapshots
            .into_iter()
            .flat_map(|s| dump_notifications(s, self.plan.encoding))
            .map(|n| Encoded::of(&update_response(n)))
            .collect();
        (responses, seqs)
    }

    /// Sends a dump (unless `!send`: only the sequence numbers are taken) and returns each
    /// target's sequence number. PROTO is encoded and queued [`DUMP_BATCH_BYTES`] at a time.
    async fn send_full_dump(
        &self,
        patterns: &[Path],
        send: bool,
    ) -> Result<Vec<(Arc<str>, u64)>, End> {
        if self.plan.encoding != ValueEncoding::Proto {
            let (responses, seqs) = self.dump(patterns);
            if send {
                self.send_dump(responses).await?;
            }
            return Ok(seqs);
        }
        let targets = self.cache.targets(|t| self.plan.targets.selects(t));
        let mut seqs = Vec::with_capacity(targets.len());
        let mut batch = Vec::new();
        let mut batched = 0;
        for target in targets {
            let seq = self.cache.visit(&target, patterns, |seq, entries| {
                if send {
                    batched += encode_entries(&target, entries, &mut batch);
                }
                seq
            });
            seqs.push((target, seq));
            if batched >= DUMP_BATCH_BYTES {
                self.send_dump(std::mem::take(&mut batch)).await?;
                batched = 0;
            }
        }
        self.send_dump(batch).await?;
        Ok(seqs)
    }

    async fn serve(
        &mut self,
        changes: &mut broadcast::Receiver<Arc<Change>>,
        requests: &mut Streaming<SubscribeRequest>,
        shutdown: &CancellationToken,
    ) -> Result<(), End> {
        let patterns = self.plan.all_patterns();
        let send = !(self.plan.updates_only && self.plan.mode != ListMode::Poll);
        let seqs = self.send_full_dump(&patterns, send).await?;
        self.send_dump(vec![Encoded::of(&sync_response())]).await?;
        match self.plan.mode {
            ListMode::Once => Ok(()),
            ListMode::Poll => loop {
                let request = tokio::select! {
                    _ = shutdown.cancelled() => return Err(End::Quiet),
                    request = requests.message() => request,
                };
                match request {
                    Ok(Some(SubscribeRequest {
                        request: Some(subscribe_request::Request::Poll(_)),
                        ..
                    })) => {
                        self.send_full_dump(&patterns, true).await?;
                        self.send_dump(vec![Encoded::of(&sync_response())]).await?;
                    }
                    Ok(Some(_)) => return Err(End::Status(Status::invalid_argument(
                        "a POLL subscription takes only Poll requests after its SubscriptionList",
                    ))),
                    Ok(None) | Err(_) => return Err(End::Quiet),
                }
            },
            ListMode::Stream => self.stream(changes, requests, shutdown, seqs).await,
        }
    }

    async fn stream(
        &mut self,
        changes: &mut broadcast::Receiver<Arc<Change>>,
        requests: &mut Streaming<SubscribeRequest>,
        shutdown: &CancellationToken,
        seqs: Vec<(Arc<str>, u64)>,
    ) -> Result<(), End> {
        let seen: std::collections::HashMap<Arc<str>, u64> = seqs.into_iter().collect();
        let mut samplers: Vec<(Vec<Path>, tokio::time::Interval)> = Vec::new();
        let mut intervals: Vec<Duration> = self.plan.sampled.iter().map(|(_, d)| *d).collect();
        intervals.sort();
        intervals.dedup();
        for interval in intervals {
            let paths = self
                .plan
                .sampled
                .iter()
                .filter(|(_, d)| *d == interval)
                .map(|(p, _)| p.clone())
                .collect();
            let mut timer =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            samplers.push((paths, timer));
        }
        let mut requests_open = true;
        loop {
            let next_sample = async {
                if samplers.is_empty() {
                    return std::future::pending::<usize>().await;
                }
                let ticks = samplers.iter_mut().enumerate().map(|(i, (_, timer))| {
                    Box::pin(async move {
                        timer.tick().await;
                        i
                    })
                });
                futures::future::select_all(ticks).await.0
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Err(End::Quiet),
                _ = self.sender.closed() => return Err(End::Quiet),
                request = requests.message(), if requests_open => {
                    // The client may half-close; only an error means it is gone.
                    match request {
                        Ok(Some(_)) => {}
                        Ok(None) => requests_open = false,
                        Err(_) => return Err(End::Quiet),
                    }
                }
                index = next_sample => {
                    // A tick is a dump: queued in batches as the client reads (within the
                    // dump timeout), not all at once into a queue sized for changes.
                    let paths = samplers[index].0.clone();
                    self.send_full_dump(&paths, true).await?;
                }
                change = changes.recv(), if !self.plan.on_change.is_empty() => match change {
                    Ok(change) => {
                        if seen.get(&change.target).is_some_and(|&seq| change.seq <= seq) {
                            continue;
                        }
                        if let Some(response) = self.plan.filter(&change) {
                            self.send_change(response)?;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        metrics::counter!(stats::GNMI_SLOW_ENDED, "reason" => "lagged").increment(1);
                        return Err(End::Status(Status::resource_exhausted(format!(
                            "the subscription fell {missed} changes behind the cache; subscription ended"
                        ))));
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(End::Quiet),
                },
            }
        }
    }
}
