//! gnmic's REST API (the subset a collector needs), under `/api/v1`, plus `/metrics`.
//! Every response is JSON; errors are `{"errors":["..."]}`; successful mutations return
//! 200 with an empty body. No GET ever shows a password or token (`****`).

use crate::collector::{CollectorError, CollectorHandle};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(error) => errors(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the response failed: {error}"),
        ),
    }
}

fn errors(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "errors": [message.into()] });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok_empty() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")]).into_response()
}

/// The collector's routes; merge them into a bigger router (`gnomon all`) or serve alone.
pub fn api_router(collector: CollectorHandle) -> Router {
    Router::new()
        .route("/api/v1/healthz", get(healthz))
        .route("/api/v1/targets", get(list_targets))
        .route(
            "/api/v1/targets/{name}",
            get(get_target).post(start_target).delete(delete_target),
        )
        .route(
            "/api/v1/config/targets",
            get(list_target_configs).post(post_target_config),
        )
        .route(
            "/api/v1/config/targets/{name}",
            get(get_target_config).delete(delete_target_config),
        )
        .route("/metrics", get(metrics))
        .fallback(post(not_found).get(not_found))
        .with_state(collector)
}

async fn not_found() -> Response {
    errors(StatusCode::NOT_FOUND, "not found")
}

async fn healthz() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "healthy"}))
}

async fn metrics() -> Response {
    let text = gnomon_shared::telemetry::metrics_handle().render();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

async fn list_targets(State(collector): State<CollectorHandle>) -> Response {
    json(StatusCode::OK, &collector.targets())
}

async fn get_target(
    State(collector): State<CollectorHandle>,
    Path(name): Path<String>,
) -> Response {
    match collector.target(&name) {
        Some(target) => json(StatusCode::OK, &target),
        None => errors(StatusCode::NOT_FOUND, "no targets found"),
    }
}

async fn start_target(
    State(collector): State<CollectorHandle>,
    Path(name): Path<String>,
) -> Response {
    match collector.start_target(&name, None) {
        Ok(()) => ok_empty(),
        Err(CollectorError::UnknownTarget(_)) => {
            errors(StatusCode::NOT_FOUND, format!("target {name:?} not found"))
        }
        Err(error) => errors(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

async fn delete_target(
    State(collector): State<CollectorHandle>,
    Path(name): Path<String>,
) -> Response {
    if collector.target(&name).is_none() {
        return errors(
            StatusCode::NOT_FOUND,
            format!("target {name:?} not running"),
        );
    }
    collector.delete_target(&name).await;
    ok_empty()
}

async fn list_target_configs(State(collector): State<CollectorHandle>) -> Response {
    json(StatusCode::OK, &collector.target_configs())
}

async fn get_target_config(
    State(collector): State<CollectorHandle>,
    Path(name): Path<String>,
) -> Response {
    match collector.target_config(&name) {
        Some(target) => json(StatusCode::OK, &target),
        None => errors(StatusCode::NOT_FOUND, format!("target {name:?} not found")),
    }
}

async fn delete_target_config(
    State(collector): State<CollectorHandle>,
    Path(name): Path<String>,
) -> Response {
    if collector.delete_target(&name).await {
        ok_empty()
    } else {
        errors(StatusCode::NOT_FOUND, format!("target {name:?} not found"))
    }
}

async fn post_target_config(State(collector): State<CollectorHandle>, body: Bytes) -> Response {
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(error) => {
            return errors(
                StatusCode::BAD_REQUEST,
                format!("invalid JSON body: {error}"),
            )
        }
    };
    let target = match collector.parse_target(&value) {
        Ok(target) => target,
        Err(error) => return errors(StatusCode::BAD_REQUEST, error.to_string()),
    };
    match collector.add_target_config(target) {
        Ok(_) => ok_empty(),
        Err(error) => errors(StatusCode::BAD_REQUEST, error.to_string()),
    }
}
