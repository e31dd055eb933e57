//! Routes every gnomon API serves, whatever roles the process runs.

use crate::responses::json;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// `/healthz` (gnmic's path) and `/api/v1/healthz`.
pub fn health_routes() -> Router {
    let healthy = || async { json(StatusCode::OK, &serde_json::json!({"status": "healthy"})) };
    Router::new()
        .route("/healthz", get(healthy))
        .route("/api/v1/healthz", get(healthy))
}

/// `/metrics`, the process's own metrics in the text exposition format, as `render` gives them.
pub fn metrics_route(render: impl Fn() -> String + Send + Sync + 'static) -> Router {
    let render = Arc::new(render);
    Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move {
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    render(),
                )
                    .into_response()
            }
        }),
    )
}
