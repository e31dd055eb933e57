//! A hardened HTTP(S) listener for every server gnomon runs (REST API, Prometheus `/metrics`
//! and `/sd`, the simulator's `/stats`).
//!
//! Why not `axum::serve`: it keeps every accepted connection for as long as the peer likes.
//! A client that opens thousands of connections and never finishes a request exhausts the
//! file limit, and then no one is answered. Here:
//! * at most `max_connections` are open; a new one beyond that evicts the oldest connection
//!   with no request in flight (an idle or slow client), or is closed at once when every
//!   open connection is busy;
//! * a connection must complete its first request within `header_read_timeout` and may then
//!   stay idle (no request in flight) for `idle_timeout`;
//! * hyper's own header-read timeout cuts slow headers on HTTP/1;
//! * accept errors (e.g. the file limit) pause the loop briefly instead of spinning, and
//!   are logged at most once per interval.
//!
//! Cost: one small task per connection and an entry in a table under a mutex taken on
//! accept and close, never per request.

use crate::ServeError;
use axum::Router;
use gnomon_common::log::Throttle;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Open connections per listener.
pub const CONNECTIONS: &str = "gnomon_http_connections";
/// Connections closed by the listener rather than by the peer, by reason.
pub const CONNECTIONS_CLOSED: &str = "gnomon_http_connections_closed_total";

/// Gives the listener metrics their `# HELP` text (call once the recorder is installed).
pub fn describe_metrics() {
    metrics::describe_gauge!(CONNECTIONS, "Open connections of an HTTP listener.");
    metrics::describe_counter!(
        CONNECTIONS_CLOSED,
        "Connections an HTTP listener closed itself: idle, evicted for a newer one, or refused while every connection was busy."
    );
}

/// Limits of one listener.
#[derive(Clone, Debug)]
pub struct ListenerOptions {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time from accept (or TLS handshake start) to the first complete request head.
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with no request in flight, after its first request.
    pub idle_timeout: Duration,
    /// Time a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Time open connections may finish after shutdown.
    pub drain_grace: Duration,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            drain_grace: Duration::from_secs(5),
        }
    }
}

/// A bound socket, ready to serve.
pub struct Listener {
    name: &'static str,
    listener: TcpListener,
    local: SocketAddr,
}

impl Listener {
    /// Binds `address` (`host:port`); `name` says what it serves in logs, errors and metrics.
    pub async fn bind(name: &'static str, address: &str) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ServeError::Bind {
                what: name,
                address: address.to_string(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| ServeError::Bind {
            what: name,
            address: address.to_string(),
            source,
        })?;
        Ok(Self {
            name,
            listener,
            local,
        })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves `router` until `shutdown`, over TLS when `tls` is given. The task ends once open
    /// connections have finished (at most `drain_grace` after shutdown).
    pub fn spawn(
        self,
        router: Router,
        tls: Option<Arc<rustls_config::ServerConfig>>,
        options: ListenerOptions,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(accept_loop(
            self,
            router,
            tls.map(TlsAcceptor::from),
            options,
            shutdown,
        ))
    }
}

/// Re-exported so callers need no direct rustls dependency for the type.
pub mod rustls_config {
    pub use tokio_rustls::rustls::ServerConfig;
}

/// What the table knows about one open connection.
struct ConnectionState {
    evict: CancellationToken,
    in_flight: AtomicUsize,
    /// Requests completed (0: still waiting for the first one).
    served: AtomicU64,
    /// Milliseconds since `epoch` of the last request start or end.
    last_active_ms: AtomicU64,
    epoch: Instant,
}

impl ConnectionState {
    fn new(epoch: Instant) -> Self {
        Self {
            evict: CancellationToken::new(),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            last_active_ms: AtomicU64::new(epoch.elapsed().as_millis() as u64),
            epoch,
        }
    }

    fn touch(&self) {
        self.last_active_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// When this connection is due to close if nothing happens.
    fn idle_deadline(&self, options: &ListenerOptions) -> Instant {
        let allowed = if self.served.load(Ordering::Relaxed) == 0 {
            options.header_read_timeout
        } else {
            options.idle_timeout
        };
        self.epoch + Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed)) + allowed
    }
}

/// The open connections of one listener, oldest first.
#[derive(Default)]
struct ConnectionTable {
    open: Mutex<BTreeMap<u64, Arc<ConnectionState>>>,
    next_id: AtomicU64,
}

enum Admission {
    Admitted(u64, Arc<ConnectionState>),
    Full,
}

impl ConnectionTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ConnectionState>>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes room for one more connection (evicting the oldest idle one when full).
    fn admit(&self, max: usize, epoch: Instant, name: &'static str) -> Admission {
        let mut open = self.lock();
        if open.len() >= max.max(1) {
            let oldest_idle = open
                .iter()
                .find(|(_, state)| state.is_idle())
                .map(|(id, _)| *id);
            match oldest_idle.and_then(|id| open.remove(&id)) {
                Some(evicted) => {
                    evicted.evict.cancel();
                    metrics::counter!(CONNECTIONS_CLOSED, "listener" => name, "reason" => "evicted")
                        .increment(1);
                }
                None => return Admission::Full,
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnectionState::new(epoch));
        open.insert(id, state.clone());
        metrics::gauge!(CONNECTIONS, "listener" => name).set(open.len() as f64);
        Admission::Admitted(id, state)
    }

    fn remove(&self, id: u64, name: &'static str) {
        let mut open = self.lock();
        open.remove(&id);
        metrics::gauge!(CONNECTIONS, "listener" => name).set(open.len() as f64);
    }
}

async fn accept_loop(
    listener: Listener,
    router: Router,
    tls: Option<TlsAcceptor>,
    options: ListenerOptions,
    shutdown: CancellationToken,
) {
    let name = listener.name;
    describe_metrics();
    let epoch = Instant::now();
    let table = Arc::new(ConnectionTable::default());
    let mut connections = JoinSet::new();
    let mut accept_errors = Throttle::new(Duration::from_secs(10));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    if let Some(suppressed) = accept_errors.allow() {
                        tracing::warn!(listener = name, %error, suppressed, "accepting a connection failed; pausing");
                    }
                    // Typically the file limit: wait for connections to close.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (id, state) = match table.admit(options.max_connections, epoch, name) {
            Admission::Admitted(id, state) => (id, state),
            Admission::Full => {
                metrics::counter!(CONNECTIONS_CLOSED, "listener" => name, "reason" => "busy")
                    .increment(1);
                drop(tcp);
                continue;
            }
        };
        let router = router.clone();
        let tls = tls.clone();
        let options = options.clone();
        let table = table.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            serve_connection(tcp, peer, tls, router, &state, &options, &shutdown, name).await;
            table.remove(id, name);
        });
        while connections.try_join_next().is_some() {}
    }
    let drained = tokio::time::timeout(options.drain_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    router: Router,
    state: &Arc<ConnectionState>,
    options: &ListenerOptions,
    shutdown: &CancellationToken,
    name: &'static str,
) {
    let _ = tcp.set_nodelay(true);
    let service = TowerToHyperService::new(Tracked {
        inner: router,
        state: state.clone(),
    });
    match tls {
        None => drive(TokioIo::new(tcp), service, state, options, shutdown, name).await,
        Some(acceptor) => {
            let handshake = tokio::select! {
                result = tokio::time::timeout(options.handshake_timeout, acceptor.accept(tcp)) => result,
                _ = state.evict.cancelled() => return,
            };
            match handshake {
                Ok(Ok(stream)) => {
                    drive(
                        TokioIo::new(stream),
                        service,
                        state,
                        options,
                        shutdown,
                        name,
                    )
                    .await
                }
                Ok(Err(error)) => {
                    tracing::debug!(listener = name, %peer, %error, "TLS handshake failed")
                }
                Err(_) => tracing::debug!(listener = name, %peer, "TLS handshake timed out"),
            }
        }
    }
}

/// Runs one connection until it ends, is evicted, idles out, or shutdown has drained it.
async fn drive<I>(
    io: TokioIo<I>,
    service: TowerToHyperService<Tracked>,
    state: &Arc<ConnectionState>,
    options: &ListenerOptions,
    shutdown: &CancellationToken,
    name: &'static str,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let mut shutting_down = false;
    loop {
        let deadline = state.idle_deadline(options);
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = state.evict.cancelled() => return,
            _ = tokio::time::sleep_until(deadline) => {
                if state.is_idle() && Instant::now() >= state.idle_deadline(options) {
                    metrics::counter!(CONNECTIONS_CLOSED, "listener" => name, "reason" => "idle")
                        .increment(1);
                    return;
                }
            }
            _ = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The router, counting requests in flight on its connection.
#[derive(Clone)]
struct Tracked {
    inner: Router,
    state: Arc<ConnectionState>,
}

impl tower::Service<axum::http::Request<hyper::body::Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = TrackedFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A Router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<hyper::body::Incoming>) -> Self::Future {
        self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        self.state.touch();
        let request = request.map(axum::body::Body::new);
        let future = tower::Service::call(&mut self.inner, request);
        TrackedFuture {
            inner: Box::pin(future),
            state: self.state.clone(),
            done: false,
        }
    }
}

/// Ends the in-flight count of one request however its future ends (completed or dropped).
struct TrackedFuture {
    inner: Pin<
        Box<dyn Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send>,
    >,
    state: Arc<ConnectionState>,
    done: bool,
}

impl TrackedFuture {
    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.state.served.fetch_add(1, Ordering::Relaxed);
            self.state.touch();
            self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Future for TrackedFuture {
    type Output = Result<axum::response::Response, std::convert::Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let polled = self.inner.as_mut().poll(cx);
        if polled.is_ready() {
            self.finish();
        }
        polled
    }
}

impl Drop for TrackedFuture {
    fn drop(&mut self) {
        self.finish();
    }
}
