//! gnmic's response shapes: JSON bodies, errors as `{"errors":["..."]}`, and an empty 200
//! for a successful change. Any error response built elsewhere (axum's rejections: 405, 413,
//! 415, a bad path) is rewritten into that shape, so a client never has to parse plain text.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

const JSON: &str = "application/json";

/// `value` as a JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, JSON)], body).into_response(),
        Err(error) => errors(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the response failed: {error}"),
        ),
    }
}

/// gnmic's error body with one message.
pub fn errors(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "errors": [message.into()] });
    (status, [(header::CONTENT_TYPE, JSON)], body.to_string()).into_response()
}

/// A successful change: 200 with an empty JSON body.
pub fn ok_empty() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, JSON)]).into_response()
}

/// The JSON 404 for paths no route serves.
pub async fn not_found() -> Response {
    errors(StatusCode::NOT_FOUND, "not found")
}

/// Largest plain-text error body carried over into the JSON message.
const MAX_REWRITTEN: usize = 4096;

/// Turns a non-JSON error response into gnmic's error body, keeping its status and text.
pub async fn json_error_bodies(response: Response) -> Response {
    let status = response.status();
    // A refused body (413) or a cut request (408) was not read to its end: the connection
    // cannot carry another request, so say so instead of letting the client reuse it and
    // fail on the next one.
    let mut response = response;
    if matches!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    ) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_REWRITTEN).await {
        Ok(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).trim().to_string(),
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_ascii_lowercase(),
    };
    let body = serde_json::json!({ "errors": [text] }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    Response::from_parts(parts, Body::from(body))
}
