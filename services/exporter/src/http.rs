//! The Prometheus output's HTTP listener: the scrape path, and `/sd`, a Prometheus
//! `http_sd_configs` endpoint listing the registered exporter(s) of this output's
//! service name (read from the coordination store), for users without Consul SD.
//!
//! `/sd` answers `[{"targets":["host:port"],"labels":{"__meta_gnomon_service_id":…,
//! "__meta_gnomon_service_name":…,"__meta_gnomon_tags":",t1,t2,"}}]`, one group per
//! registered instance (only `__meta_` labels, so nothing is added to scraped series
//! unless relabeling asks for it). A sharded output's instances also carry
//! `__meta_gnomon_shard` (from their `shard=<i>` tag), for a relabel rule copying it into a
//! `shard` label. Without a service registration it lists this exporter.

use crate::output::PrometheusOutput;
use crate::stats::{SCRAPE_BYTES, SCRAPE_DURATION};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use flate2::write::GzEncoder;
use flate2::Compression;
use gnomon_coordination::Coordination;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Content type of the text exposition format.
pub const EXPOSITION_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Path of the http_sd endpoint.
pub const SD_PATH: &str = "/sd";

/// The `/sd` label naming a sharded instance's shard.
pub const SD_SHARD_LABEL: &str = "__meta_gnomon_shard";

/// Where `/sd` finds the exporters to list.
#[derive(Clone)]
pub enum Discovery {
    /// Registered instances of `service_name` in the store.
    Registered {
        coordination: Arc<dyn Coordination>,
        service_name: String,
    },
    /// No registration: this exporter only.
    Itself { target: String },
}

#[derive(Clone)]
struct HttpState {
    output: Arc<PrometheusOutput>,
    discovery: Discovery,
    timeout: Duration,
}

/// The router of one output.
pub fn router(output: Arc<PrometheusOutput>, discovery: Discovery) -> Router {
    let path = output.config().normalized_path();
    let timeout = output.config().effective_timeout();
    let state = HttpState {
        output,
        discovery,
        timeout,
    };
    let mut router = Router::new().route(&path, get(scrape));
    if path != SD_PATH {
        router = router.route(SD_PATH, get(service_discovery));
    }
    router.with_state(state)
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.trim().split(';');
            let name = parts.next().unwrap_or("").trim();
            let rejected = parts.any(|p| p.trim().replace(' ', "") == "q=0");
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !rejected
        })
}

/// Renders the exposition (and compresses it when asked) off the async workers.
pub fn render_body(output: &PrometheusOutput, gzip: bool) -> std::io::Result<(Vec<u8>, usize)> {
    let mut plain = Vec::new();
    output.render_into(&mut plain);
    let plain_len = plain.len();
    if !gzip {
        return Ok((plain, plain_len));
    }
    let mut encoder = GzEncoder::new(Vec::with_capacity(plain_len / 8), Compression::fast());
    encoder.write_all(&plain)?;
    Ok((encoder.finish()?, plain_len))
}

async fn scrape(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let gzip = accepts_gzip(&headers);
    let output = state.output.clone();
    let job = tokio::task::spawn_blocking(move || render_body(&output, gzip));
    let body = match tokio::time::timeout(state.timeout, job).await {
        Ok(Ok(Ok(body))) => body,
        Ok(Ok(Err(e))) => {
            tracing::warn!(output = %state.output.name(), error = %e, "compressing the scrape failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "compression failed\n").into_response();
        }
        Ok(Err(e)) => {
            tracing::error!(output = %state.output.name(), error = %e, "scrape render task failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "render failed\n").into_response();
        }
        Err(_) => {
            tracing::warn!(output = %state.output.name(), timeout = ?state.timeout, "scrape exceeded its timeout");
            return (StatusCode::SERVICE_UNAVAILABLE, "scrape timed out\n").into_response();
        }
    };
    let (bytes, plain_len) = body;
    let name = state.output.name().to_string();
    metrics::histogram!(SCRAPE_DURATION, "output" => name.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::gauge!(SCRAPE_BYTES, "output" => name).set(plain_len as f64);
    let mut response = Response::new(Body::from(bytes));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(EXPOSITION_CONTENT_TYPE),
    );
    if gzip {
        response.headers_mut().insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static("gzip"),
        );
    }
    response
}

/// One http_sd target group.
#[derive(Serialize, Debug, PartialEq)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

async fn service_discovery(State(state): State<HttpState>) -> Response {
    let groups = match &state.discovery {
        Discovery::Itself { target } => vec![TargetGroup {
            targets: vec![target.clone()],
            labels: BTreeMap::new(),
        }],
        Discovery::Registered {
            coordination,
            service_name,
        } => {
            let lookup =
                tokio::time::timeout(state.timeout, coordination.services(service_name, &[])).await;
            let instances = match lookup {
                Ok(Ok(instances)) => instances,
                Ok(Err(e)) => {
                    tracing::warn!(service = %service_name, error = %e, "service lookup for /sd failed");
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("service lookup failed: {e}\n"),
                    )
                        .into_response();
                }
                Err(_) => {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "service lookup timed out\n",
                    )
                        .into_response()
                }
            };
            instances
                .into_iter()
                .map(|instance| {
                    let mut labels = BTreeMap::new();
                    labels.insert("__meta_gnomon_service_id".to_string(), instance.id.clone());
                    labels.insert(
                        "__meta_gnomon_service_name".to_string(),
                        instance.name.clone(),
                    );
                    labels.insert(
                        "__meta_gnomon_tags".to_string(),
                        format!(",{},", instance.tags.join(",")),
                    );
                    if let Some(shard) = crate::shard::shard_from_tags(&instance.tags) {
                        labels.insert(SD_SHARD_LABEL.to_string(), shard.to_string());
                    }
                    TargetGroup {
                        targets: vec![instance.host_port()],
                        labels,
                    }
                })
                .collect()
        }
    };
    axum::Json(groups).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_negotiation() {
        let mut headers = HeaderMap::new();
        assert!(!accepts_gzip(&headers));
        headers.insert(header::ACCEPT_ENCODING, "gzip".parse().unwrap());
        assert!(accepts_gzip(&headers));
        headers.insert(
            header::ACCEPT_ENCODING,
            "deflate, gzip;q=0".parse().unwrap(),
        );
        assert!(!accepts_gzip(&headers));
        headers.insert(
            header::ACCEPT_ENCODING,
            "identity, GZIP;q=0.5".parse().unwrap(),
        );
        assert!(accepts_gzip(&headers));
    }
}
