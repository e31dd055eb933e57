//! The gNMI client side of one target: dialing (h2c, TLS, mTLS, skip-verify, TLS versions
//! and cipher suites), TCP and HTTP/2 keepalive, credentials and `metadata` as gRPC
//! metadata, gzip, and the Subscribe call with the raw codec. The target's `timeout` bounds
//! both the connection and the opening of every Subscribe, so a peer that accepts TCP and
//! never speaks fails within it.

use crate::codec::{RawResponse, RawSubscribeCodec};
use crate::connection::{KillOnDrop, OpenSockets};
use gnomon_common::tls::{client_config_with, server_name, ClientTlsOptions, TlsNegotiation};
use gnomon_config::{defaults, TargetConfig, TlsVersion};
use gnomon_gnmi::proto::gnmi::SubscribeRequest;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_stream::Stream;
use tonic::body::Body;
use tonic::codec::CompressionEncoding;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::http::{self, HeaderValue, Uri};
use tonic::metadata::{Ascii, MetadataKey, MetadataValue};
use tonic::{Request, Status, Streaming};

/// Why a target could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("invalid address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("TLS settings: {0}")]
    Tls(String),
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("metadata: {0}")]
    Metadata(String),
}

/// gRPC metadata sent with every request.
type Metadata = Vec<(MetadataKey<Ascii>, MetadataValue<Ascii>)>;

/// A connection to a target plus what every call needs.
#[derive(Clone)]
pub struct TargetClient {
    connection: H2Connection,
    /// `http://<address>`: the `:scheme` and `:authority` of every request.
    origin: Uri,
    /// Sent with every request: the target's `metadata`, then the credentials.
    metadata: Metadata,
    gzip: bool,
    max_msg_size: usize,
    /// How long opening a Subscribe (until the target's response headers) may take.
    open_timeout: Duration,
    /// The sockets of the target's connections, to wait for them to close when it stops.
    sockets: Arc<OpenSockets>,
    /// Kills the connection's socket when the last clone of this client is gone.
    _kill: Arc<KillOnDrop>,
}

pub use gnomon_common::error_text::error_chain;

/// TCP and HTTP/2 keepalive of one target, from gnmic's `tcp-keepalive` and
/// `grpc-keepalive`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// TCP keepalive idle time and probe interval; `None`: off.
    pub tcp: Option<Duration>,
    /// HTTP/2 PING after this long without activity.
    pub h2_interval: Duration,
    /// Close the connection when a PING is not answered within this.
    pub h2_timeout: Duration,
    /// PING even without an open stream.
    pub while_idle: bool,
}

impl Keepalive {
    pub fn of(target: &TargetConfig) -> Self {
        let tcp = match target.tcp_keepalive {
            None => Some(defaults::TCP_KEEPALIVE),
            Some(d) if d.is_negative() => None,
            Some(d) if d.is_zero() => Some(defaults::TCP_KEEPALIVE),
            Some(d) => d.to_std(),
        };
        match target.grpc_keepalive {
            Some(k) => Self {
                tcp,
                h2_interval: k.time,
                h2_timeout: k.timeout,
                while_idle: k.permit_without_stream,
            },
            None => Self {
                tcp,
                h2_interval: defaults::H2_KEEPALIVE_INTERVAL,
                h2_timeout: defaults::H2_KEEPALIVE_TIMEOUT,
                while_idle: false,
            },
        }
    }
}

/// gnmic's cipher suite name → rustls' suite.
fn cipher_suite(name: &str) -> Option<rustls::CipherSuite> {
    use rustls::CipherSuite as S;
    Some(match name {
        "TLS_AES_128_GCM_SHA256" => S::TLS13_AES_128_GCM_SHA256,
        "TLS_AES_256_GCM_SHA384" => S::TLS13_AES_256_GCM_SHA384,
        "TLS_CHACHA20_POLY1305_SHA256" => S::TLS13_CHACHA20_POLY1305_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

/// The TLS versions and suites the target allows (names the config does not know were
/// refused at load; legacy ones gnomon lacks were warned about and are skipped here).
fn negotiation(target: &TargetConfig) -> TlsNegotiation {
    let allowed = |version: TlsVersion| {
        target.tls_min_version.is_none_or(|min| version >= min)
            && target.tls_max_version.is_none_or(|max| version <= max)
    };
    let mut versions = Vec::new();
    if allowed(TlsVersion::V1_3) {
        versions.push(&rustls::version::TLS13);
    }
    if allowed(TlsVersion::V1_2) {
        versions.push(&rustls::version::TLS12);
    }
    TlsNegotiation {
        versions,
        cipher_suites: target
            .cipher_suites
            .iter()
            .filter_map(|name| cipher_suite(name))
            .collect(),
    }
}

fn tls_config(target: &TargetConfig) -> Result<rustls::ClientConfig, DialError> {
    let options = ClientTlsOptions {
        ca_file: target.tls_ca.as_ref().map(Into::into),
        cert_file: target.tls_cert.as_ref().map(Into::into),
        key_file: target.tls_key.as_ref().map(Into::into),
        skip_verify: target.skip_verify,
    };
    client_config_with(&options, &[b"h2"], &negotiation(target))
        .map_err(|e| DialError::Tls(e.to_string()))
}

/// Connects to the first reachable address of `target` within its `timeout`, counting the
/// connection's socket in `sockets` (the target run's, so that stopping or replacing the run
/// can wait for every socket it opened to be closed).
#[tracing::instrument(name = "gnmi.dial", skip(target, sockets), fields(target = %target.name))]
pub async fn dial(
    target: &TargetConfig,
    sockets: &Arc<OpenSockets>,
) -> Result<TargetClient, DialError> {
    let tls = if target.insecure {
        None
    } else {
        Some(Arc::new(tls_config(target)?))
    };
    let metadata = request_metadata(target)?;
    let mut last_error = None;
    for address in target.addresses() {
        match dial_address(address, target, tls.clone(), sockets).await {
            Ok((connection, kill, origin)) => {
                return Ok(TargetClient {
                    connection,
                    origin,
                    metadata,
                    gzip: target.gzip,
                    max_msg_size: target.max_msg_size,
                    open_timeout: target.timeout,
                    sockets: sockets.clone(),
                    _kill: Arc::new(kill),
                })
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| DialError::Address {
        address: target.address.clone(),
        reason: "no address".into(),
    }))
}

/// The HTTP/2 settings of a target's connection: gnmic's `grpc-keepalive` (or ours) and
/// window sizes (grpc-go's defaults in gnmic: 4 MiB per stream, 8 MiB per connection).
fn h2_builder(target: &TargetConfig) -> hyper::client::conn::http2::Builder<TokioExecutor> {
    let keepalive = Keepalive::of(target);
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(keepalive.h2_interval)
        .keep_alive_timeout(keepalive.h2_timeout)
        .keep_alive_while_idle(keepalive.while_idle)
        .initial_stream_window_size(target.grpc_window_size.unwrap_or(4 * 1024 * 1024))
        .initial_connection_window_size(target.grpc_conn_window_size.unwrap_or(8 * 1024 * 1024));
    builder
}

/// One HTTP/2 connection to a target, driven directly rather than through tonic's
/// `Channel`: a Channel adds, per target, a tower buffer (a queue and a worker task) and a
/// reconnecting wrapper — kilobytes each of 10 000 targets — for what a target never needs:
/// its streams share one connection, and when it fails the target dials again itself.
#[derive(Clone)]
struct H2Connection {
    sender: SendRequest<Body>,
}

/// gRPC's recommended `user-agent`.
const USER_AGENT: &str = concat!("gnomon/", env!("CARGO_PKG_VERSION"));

impl tower::Service<http::Request<Body>> for H2Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.sender.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        request.headers_mut().insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(USER_AGENT),
        );
        Box::pin(self.sender.send_request(request))
    }
}

/// The HTTP/2 handshake over `io`; the connection is driven by a task of its own that ends
/// when its socket is killed or the peer goes away.
async fn h2_handshake<I>(
    io: I,
    target: &TargetConfig,
    address: &str,
) -> Result<H2Connection, DialError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = h2_builder(target)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| DialError::Connect {
            address: address.to_string(),
            reason: format!("HTTP/2 handshake: {}", error_chain(&e)),
        })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(error = %error_chain(&error), "target connection ended");
        }
    });
    Ok(H2Connection { sender })
}

/// Opens the TCP connection with gnmic's TCP keepalive (`tcp-keepalive`).
pub async fn connect_tcp(address: &str, keepalive: Option<Duration>) -> std::io::Result<TcpStream> {
    let tcp = TcpStream::connect(address).await?;
    tcp.set_nodelay(true)?;
    if let Some(idle) = keepalive {
        let params = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(idle);
        socket2::SockRef::from(&tcp).set_tcp_keepalive(&params)?;
    }
    Ok(tcp)
}

async fn dial_address(
    address: &str,
    target: &TargetConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    sockets: &Arc<OpenSockets>,
) -> Result<(H2Connection, KillOnDrop, Uri), DialError> {
    let origin: Uri = format!("http://{address}")
        .parse()
        .map_err(|e: http::uri::InvalidUri| DialError::Address {
            address: address.to_string(),
            reason: e.to_string(),
        })?;
    let connect_error = |error: std::io::Error| DialError::Connect {
        address: address.to_string(),
        reason: error_chain(&error),
    };
    let tcp_keepalive = Keepalive::of(target).tcp;
    let connecting = async {
        let tcp = connect_tcp(address, tcp_keepalive)
            .await
            .map_err(connect_error)?;
        match tls {
            None => {
                let (io, kill) = sockets.track(tcp);
                Ok((h2_handshake(io, target, address).await?, kill))
            }
            Some(config) => {
                let name = server_name(address, target.tls_server_name.as_deref())
                    .map_err(|e| DialError::Tls(e.to_string()))?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(connect_error)?;
                let (io, kill) = sockets.track(stream);
                Ok((h2_handshake(io, target, address).await?, kill))
            }
        }
    };
    let (connection, kill) = tokio::time::timeout(target.timeout, connecting)
        .await
        .map_err(|_| DialError::Connect {
            address: address.to_string(),
            reason: format!("no connection within {:?}", target.timeout),
        })??;
    Ok((connection, kill, origin))
}

fn metadata_value(text: &str, what: &str) -> Result<MetadataValue<Ascii>, DialError> {
    text.parse()
        .map_err(|_| DialError::Metadata(format!("{what} is not valid gRPC metadata")))
}

/// The metadata of every request: `metadata` (checked at load), then the credentials —
/// `username`/`password`, or with `auth-scheme` an `authorization: <scheme>
/// base64(user:password)` header — then the token as `authorization: Bearer <token>`.
fn request_metadata(target: &TargetConfig) -> Result<Metadata, DialError> {
    use base64::Engine;
    let key = |name: &str| {
        MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| DialError::Metadata(format!("{name:?} is not a gRPC metadata key")))
    };
    let mut metadata = Vec::new();
    for (name, value) in &target.metadata {
        metadata.push((
            key(name)?,
            metadata_value(value, &format!("metadata {name}"))?,
        ));
    }
    let password = target.password.as_ref().map_or("", |p| p.expose());
    match (&target.username, &target.auth_scheme) {
        (Some(user), Some(scheme)) => {
            let credentials =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            metadata.push((
                key("authorization")?,
                metadata_value(
                    &format!("{scheme} {credentials}"),
                    "auth-scheme credentials",
                )?,
            ));
        }
        (Some(user), None) => {
            metadata.push((key("username")?, metadata_value(user, "username")?));
            metadata.push((key("password")?, metadata_value(password, "password")?));
        }
        (None, _) => {}
    }
    if let Some(token) = &target.token {
        metadata.push((
            key("authorization")?,
            metadata_value(&format!("Bearer {}", token.expose()), "token")?,
        ));
    }
    Ok(metadata)
}

impl TargetClient {
    /// Closes the connection (this handle and every clone must be gone, so call it last)
    /// and waits, at most `limit`, until its socket is closed.
    pub async fn close(self, limit: Duration) -> bool {
        let sockets = self.sockets.clone();
        drop(self);
        sockets.wait_closed(limit).await
    }

    fn authorize<T>(&self, request: &mut Request<T>) {
        let metadata = request.metadata_mut();
        for (key, value) in &self.metadata {
            metadata.insert(key.clone(), value.clone());
        }
    }

    /// Opens a Subscribe stream; `requests` is the client side (the subscription, then polls).
    /// Fails when the target has not answered (response headers) within its `timeout`.
    pub async fn subscribe(
        &self,
        requests: impl Stream<Item = SubscribeRequest> + Send + 'static,
    ) -> Result<Streaming<RawResponse>, Status> {
        let mut grpc =
            tonic::client::Grpc::with_origin(self.connection.clone(), self.origin.clone())
                .max_decoding_message_size(self.max_msg_size);
        if self.gzip {
            grpc = grpc
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        let mut request = Request::new(requests);
        self.authorize(&mut request);
        let opening = async move {
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(format!("target not ready: {e}")))?;
            let path = PathAndQuery::from_static("/gnmi.gNMI/Subscribe");
            grpc.streaming(request, path, RawSubscribeCodec)
                .await
                .map(|r| r.into_inner())
        };
        tokio::time::timeout(self.open_timeout, opening)
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "the target did not answer the Subscribe within {:?} (timeout)",
                    self.open_timeout
                ))
            })?
    }
}

#[cfg(test)]
mod tests;
