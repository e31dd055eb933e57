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
