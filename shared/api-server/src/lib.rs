//! gnomon's HTTP(S) servers: one hardened listener for every server a gnomon process runs,
//! and the REST API's common parts.
//!
//! * [`Listener`]: binds, serves a router over HTTP or HTTPS with connection limits and
//!   idle/header timeouts (why: `axum::serve` lets idle clients exhaust the file limit).
//! * [`serve_api`]: the REST API — the routes each role contributes, merged by the caller,
//!   served with gnmic's JSON error bodies, `api-server.timeout` as a timeout layer on every
//!   route, a request body limit, and the bearer token of `api-server.token` on every
//!   changing request ([`require_token_for_changes`]).
//! * [`health_routes`] / [`metrics_route`]: the routes every API has, whatever its roles.
//!
//! It depends on neither the configuration model nor telemetry, so the simulator can use
//! the listener without building either; callers translate their settings into
//! [`ApiServerOptions`].

mod auth;
mod listener;
mod responses;
mod routes;

pub use auth::require_token_for_changes;
pub use listener::{rustls_config, Listener, ListenerOptions, CONNECTIONS, CONNECTIONS_CLOSED};
pub use responses::{errors, json, json_error_bodies, not_found, ok_empty};
pub use routes::{health_routes, metrics_route};

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;
use gnomon_common::secret::Secret;
use gnomon_common::tls::{server_config, ServerTlsOptions, TlsError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {what} address {address}")]
    Bind {
        what: &'static str,
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} TLS settings")]
    Tls {
        what: &'static str,
        #[source]
        source: TlsError,
    },
}

/// Largest request body the REST API reads (a target or subscription config is a few KB).
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// How the REST API is served.
#[derive(Clone, Debug)]
pub struct ApiServerOptions {
    /// `host:port` to bind.
    pub address: String,
    pub tls: Option<ServerTlsOptions>,
    /// Required as a bearer token on every request other than GET/HEAD.
    pub token: Option<Secret>,
    /// Longest time a request may take, body included (`api-server.timeout`).
    pub request_timeout: Duration,
    pub body_limit: usize,
    pub listener: ListenerOptions,
}

impl ApiServerOptions {
    /// Defaults (10 s requests, 1 MiB bodies, default listener limits) at `address`.
    pub fn at(address: &str) -> Self {
        Self {
            address: address.to_string(),
            tls: None,
            token: None,
            request_timeout: Duration::from_secs(10),
            body_limit: DEFAULT_BODY_LIMIT,
            listener: ListenerOptions::default(),
        }
    }
}

/// A server that is running.
pub struct RunningServer {
    pub local_addr: SocketAddr,
    /// Ends after shutdown, once open connections are done.
    pub task: JoinHandle<()>,
}

/// Builds a server TLS config offering h2 and http/1.1.
pub fn tls_config(
    what: &'static str,
    options: &ServerTlsOptions,
) -> Result<Arc<rustls_config::ServerConfig>, ServeError> {
    server_config(options, &[b"h2", b"http/1.1"])
        .map(Arc::new)
        .map_err(|source| ServeError::Tls { what, source })
}

/// Serves the REST API `router` (routes only: the JSON 404 fallback is added here) until
/// `shutdown`. Binding and TLS errors are returned now.
pub async fn serve_api(
    options: &ApiServerOptions,
    router: Router,
    shutdown: CancellationToken,
) -> Result<RunningServer, ServeError> {
    let tls = options
        .tls
        .as_ref()
        .map(|tls| tls_config("api-server.tls", tls))
        .transpose()?;
    let listener = Listener::bind("api", &options.address).await?;
    let local_addr = listener.local_addr();
    let router = api_layers(router, options);
    tracing::info!(
        address = %local_addr,
        https = tls.is_some(),
        token_required = options.token.is_some(),
        "REST API listening"
    );
    let task = listener.spawn(router, tls, options.listener.clone(), shutdown);
    Ok(RunningServer { local_addr, task })
}

/// The fallback, JSON errors, body limit, request timeout and token check around `router`.
pub fn api_layers(router: Router, options: &ApiServerOptions) -> Router {
    let timeout = options.request_timeout;
    let router = router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(options.body_limit))
        .layer(
            tower::ServiceBuilder::new()
                .layer(HandleErrorLayer::new(
                    move |error: tower::BoxError| async move { timed_out(error, timeout) },
                ))
                .timeout(timeout),
        )
        .layer(axum::middleware::map_response(json_error_bodies));
    require_token_for_changes(router, options.token.clone())
}

fn timed_out(error: tower::BoxError, timeout: Duration) -> Response {
    if error.is::<tower::timeout::error::Elapsed>() {
        errors(
            StatusCode::REQUEST_TIMEOUT,
            format!("request took longer than api-server.timeout ({timeout:?})"),
        )
    } else {
        errors(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("request failed: {error}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Starts the API on a free loopback port with `timeout` and a 1 KiB body limit.
    async fn start(timeout: Duration) -> (SocketAddr, CancellationToken) {
        let mut options = ApiServerOptions::at("127.0.0.1:0");
        options.request_timeout = timeout;
        options.body_limit = 1024;
        let router = Router::new().route("/echo", post(|body: String| async move { body }));
        let stop = CancellationToken::new();
        let server = serve_api(&options, router, stop.clone()).await.unwrap();
        (server.local_addr, stop)
    }

    /// Sends `request` raw and reads the whole response (the server closes or answers).
    async fn exchange(address: SocketAddr, request: &[u8]) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        // Read until the body of the one response has arrived (Connection: close below).
        let read = async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => response.extend_from_slice(&buf[..n]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("the server neither answered nor closed within 20 s");
        String::from_utf8_lossy(&response).into_owned()
    }

    #[tokio::test]
    async fn a_request_whose_body_never_completes_ends_with_408_naming_the_setting() {
        let (address, stop) = start(Duration::from_millis(300)).await;
        // Headers promise 100 bytes; one arrives, then the client goes quiet.
        let response = exchange(
            address,
            b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 100\r\n\r\n{",
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 408"), "{response}");
        assert!(response.contains("api-server.timeout"), "{response}");
        assert!(response.contains("{\"errors\":["), "{response}");
        stop.cancel();
    }

    #[tokio::test]
    async fn bodies_over_the_limit_get_a_json_413_and_unknown_paths_a_json_404() {
        let (address, stop) = start(Duration::from_secs(10)).await;
        let body = "x".repeat(2048);
        let request = format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let response = exchange(address, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 413"), "{response}");
        assert!(response.contains("{\"errors\":["), "{response}");
        // The unread body makes the connection unusable: the client is told not to reuse it.
        assert!(
            response.to_ascii_lowercase().contains("connection: close"),
            "{response}"
        );
        let response = exchange(
            address,
            b"GET /api/v1/nothing HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 404"), "{response}");
        assert!(response.contains("{\"errors\":["), "{response}");
        // A request within the limits still works.
        let response = exchange(
            address,
            b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        )
        .await;
        assert!(
            response.starts_with("HTTP/1.1 200") && response.ends_with("ok"),
            "{response}"
        );
        stop.cancel();
    }
}
