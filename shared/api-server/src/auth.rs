//! Bearer-token protection of the REST API (`api-server.token`, a gnomon addition): every
//! request that changes something — anything but GET and HEAD — must carry
//! `Authorization: Bearer <token>`. Reads stay open so scrapes, health checks and operators'
//! GETs work without it. Applied once, by [`crate::serve_api`], to whatever router it serves.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use gnomon_common::secret::Secret;
use std::sync::Arc;

/// Wraps `router` so that, when `token` is set, changing requests need the bearer token.
/// Without a token the router is returned unchanged.
pub fn require_token_for_changes(router: Router, token: Option<Secret>) -> Router {
    match token {
        Some(token) => router.layer(middleware::from_fn_with_state(
            Arc::new(token),
            check_bearer_token,
        )),
        None => router,
    }
}

/// Why a changing request was refused (the messages never contain the value sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Missing,
    Malformed,
    Wrong,
}

impl Refusal {
    fn message(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "missing bearer token: requests other than GET need \"Authorization: Bearer <api-server.token>\""
            }
            Refusal::Malformed => {
                "malformed Authorization header: expected \"Bearer <api-server.token>\""
            }
            Refusal::Wrong => "invalid bearer token",
        }
    }
}

/// The verdict on a request's `Authorization` header value.
fn judge(authorization: Option<&[u8]>, expected: &Secret) -> Result<(), Refusal> {
    let Some(value) = authorization else {
        return Err(Refusal::Missing);
    };
    // The scheme is case-insensitive (RFC 7235); exactly one space before the token.
    let scheme = b"bearer ";
    if value.len() < scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return Err(Refusal::Malformed);
    }
    let given = &value[scheme.len()..];
    if constant_time_eq(given, expected.expose().as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::Wrong)
    }
}

/// Compares without an early exit, so the time taken says nothing about how much of the
/// token was right.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut difference = (given.len() != expected.len()) as u8;
    for i in 0..given.len().max(expected.len()) {
        let a = given.get(i).copied().unwrap_or(0);
        let b = expected.get(i).copied().unwrap_or(0);
        difference |= a ^ b;
    }
    std::hint::black_box(difference) == 0
}

async fn check_bearer_token(
    State(token): State<Arc<Secret>>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match judge(authorization, &token) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::warn!(
                method = %request.method(),
                path = %request.uri().path(),
                reason = ?refusal,
                "API request refused: bearer token"
            );
            let body = serde_json::json!({ "errors": [refusal.message()] });
            (
                StatusCode::UNAUTHORIZED,
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::WWW_AUTHENTICATE, "Bearer"),
                ],
                body.to_string(),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    fn secret() -> Secret {
        Secret::new("s3cr3t-token")
    }

    #[test]
    fn headers_are_judged() {
        let token = secret();
        assert_eq!(judge(None, &token), Err(Refusal::Missing));
        assert_eq!(judge(Some(b"Basic abc"), &token), Err(Refusal::Malformed));
        assert_eq!(judge(Some(b"Bearer"), &token), Err(Refusal::Malformed));
        assert_eq!(judge(Some(b"Bearer nope"), &token), Err(Refusal::Wrong));
        assert_eq!(
            judge(Some(b"Bearer s3cr3t-token-and-more"), &token),
            Err(Refusal::Wrong)
        );
        assert_eq!(
            judge(Some(b"Bearer s3cr3t-toke"), &token),
            Err(Refusal::Wrong)
        );
        assert_eq!(judge(Some(b"Bearer s3cr3t-token"), &token), Ok(()));
        assert_eq!(judge(Some(b"bearer s3cr3t-token"), &token), Ok(()));
    }

    #[test]
    fn comparison_is_exact() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abc\0"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    async fn call(router: &Router, method: Method, auth: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::builder().method(method).uri("/thing");
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn changes_need_the_token_and_reads_do_not() {
        let router =
            Router::new().route("/thing", get(|| async { "read" }).post(|| async { "done" }));
        let protected = require_token_for_changes(router.clone(), Some(secret()));

        let (status, body) = call(&protected, Method::POST, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let errors: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(errors["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("missing bearer token"));

        let (status, body) = call(&protected, Method::POST, Some("Bearer guess-123")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, r#"{"errors":["invalid bearer token"]}"#);
        assert!(!body.contains("guess-123"));

        let (status, body) = call(&protected, Method::POST, Some("Bearer s3cr3t-token")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "done"));

        let (status, body) = call(&protected, Method::GET, None).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "read"));

        // Without a configured token nothing changes.
        let open = require_token_for_changes(router, None);
        let (status, _) = call(&open, Method::POST, None).await;
        assert_eq!(status, StatusCode::OK);
    }
}
