//! gnomon collector: subscribes to gNMI targets as gnmic does and publishes what it
//! receives to the configured outputs (NATS, file), with gnmic's REST API.
//!
//! * [`CollectorHandle`]: start / stop targets (a coordinator passes [`Ownership`]).
//! * [`run`]: the standalone collector — every configured target, API on `api`.
//! * [`api_routes`]: the REST routes, merged with other roles' and served by
//!   `gnomon_api_server::serve_api`.

mod api;
mod client;
pub mod codec;
mod collector;
mod connection;
mod member_stats;
pub mod output_failover;
pub mod outputs;
mod request;
pub mod runtime_config;
mod state;
mod target;
mod target_metrics;
pub mod target_up;

pub use api::{api_routes, api_server_options, base_routes, clustered_api_routes};
pub use collector::{CollectorDeps, CollectorError, CollectorHandle, TargetView};
pub use outputs::nats_subject;
pub use request::subscribe_request;
pub use state::{StatusView, TargetState};
pub use target::{describe_status, Ownership};

use anyhow::Context;
use gnomon_config::GnomonConfig;
use tokio_util::sync::CancellationToken;

/// Runs the collector alone (not clustered: every configured target is subscribed)
/// until `shutdown` fires, with the REST API when `api` / `api-server` is configured.
pub async fn run(config: GnomonConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let api = config.api.clone();
    let collector = CollectorHandle::new(config.clone()).context("starting outputs")?;
    let server = match &api {
        Some(api) => match gnomon_api_server::serve_api(
            &api_server_options(api),
            api_routes(collector.clone()),
            shutdown.clone(),
        )
        .await
        {
            Ok(server) => Some(server.task),
            Err(error) => {
                collector.shutdown().await;
                return Err(error.into());
            }
        },
        None => None,
    };
    for name in config.targets.keys() {
        collector
            .start_target(name, None)
            .with_context(|| format!("starting target {name}"))?;
    }
    tracing::info!(
        targets = config.targets.len(),
        outputs = config.outputs.len(),
        "collector running"
    );
    shutdown.cancelled().await;
    collector.shutdown().await;
    if let Some(server) = server {
        if let Err(error) = server.await {
            tracing::warn!(%error, "API server task failed");
        }
    }
    Ok(())
}
pub mod cluster_member;
