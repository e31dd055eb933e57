//! Serving the REST API: plain HTTP, or HTTPS when `api-server.tls` is set (a
//! self-signed certificate when no cert is given; client certificates per `client-auth`).
//! With `api-server.token`, changing requests need the bearer token ([`crate::auth`]).

use anyhow::Context;
use axum::Router;
use gnomon_common::tls::server_config;
use gnomon_config::ApiConfig;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may continue after shutdown.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Binds `api`'s address and serves `router` until `shutdown` fires. Binding and TLS
/// errors are returned now; the returned task ends after shutdown. Every router served
/// here gets the bearer-token check when `api-server.token` is set.
pub async fn serve_api(
    api: &ApiConfig,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let router = crate::auth::require_token_for_changes(router, api.token.clone());
    let token_required = api.token.is_some();
    let address = api.bind_address();
    let listener = TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot listen on API address {address}"))?;
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(address);
    let Some(options) = api.server_tls() else {
        tracing::info!(address = %local, token_required, "REST API listening (http)");
        return Ok(tokio::spawn(async move {
            let serving =
                axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned());
            if let Err(error) = serving.await {
                tracing::warn!(%error, "API server ended with an error");
            }
        }));
    };
    let config = server_config(&options, &[b"h2", b"http/1.1"]).context("api-server.tls")?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tracing::info!(address = %local, token_required, "REST API listening (https)");
    Ok(tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(%error, "API accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(router.clone());
            connections.spawn(async move {
                let stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "API TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "API TLS handshake timed out");
                            return;
                        }
                    };
                if let Err(error) = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%peer, %error, "API connection ended with an error");
                }
            });
            while connections.try_join_next().is_some() {}
        }
        if tokio::time::timeout(DRAIN_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            connections.abort_all();
        }
    }))
}
