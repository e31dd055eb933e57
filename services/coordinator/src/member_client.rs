//! The leader's calls to members' REST APIs (gnmic's assignment handshake), through reqwest
//! wrapped in tower layers: a concurrency limit, retries with backoff for failures that are
//! safe to repeat, and a timeout on every attempt.

use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

/// One HTTP call to a member.
#[derive(Clone, Debug)]
pub struct MemberCall {
    pub method: reqwest::Method,
    pub url: String,
    pub body: Option<Bytes>,
    /// Marks the call as part of the leader's assignment handshake, so the member does not
    /// write the pushed config back into the cluster store.
    pub assignment: bool,
}

use gnomon_shared::coordination::ASSIGNMENT_HEADER;

/// A member's answer: status and body.
#[derive(Clone, Debug)]
pub struct MemberReply {
    pub status: reqwest::StatusCode,
    pub body: Bytes,
}

/// Why a call to a member failed.
#[derive(Debug, thiserror::Error)]
pub enum MemberCallError {
    #[error("{method} {url}: {reason}")]
    Transport {
        method: reqwest::Method,
        url: String,
        reason: String,
    },
    #[error("{method} {url}: HTTP {status}: {body}")]
    Status {
        method: reqwest::Method,
        url: String,
        status: u16,
        body: String,
    },
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// reqwest as a tower service.
#[derive(Clone)]
struct HttpService {
    client: reqwest::Client,
}

impl Service<MemberCall> for HttpService {
    type Response = MemberReply;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<MemberReply, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: MemberCall) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move {
            let mut request = client.request(call.method.clone(), &call.url);
            if let Some(body) = call.body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body);
            }
            if call.assignment {
                request = request.header(ASSIGNMENT_HEADER, "true");
            }
            for (name, value) in trace_context_headers() {
                request = request.header(name, value);
            }
            let response = request.send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok(MemberReply { status, body })
        })
    }
}

/// The current span's W3C trace context as headers, so the member's spans join the leader's trace.
fn trace_context_headers() -> Vec<(String, String)> {
    use opentelemetry::propagation::Injector;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    struct Headers(Vec<(String, String)>);
    impl Injector for Headers {
        fn set(&mut self, key: &str, value: String) {
            self.0.push((key.to_string(), value));
        }
    }
    let context = tracing::Span::current().context();
    let mut headers = Headers(Vec::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut headers));
    headers.0
}

/// Retries transport errors and 5xx answers, with exponential backoff, a bounded number of times.
#[derive(Clone)]
struct RetryWithBackoff {
    remaining: u32,
    delay: Duration,
}

impl tower::retry::Policy<MemberCall, MemberReply, BoxError> for RetryWithBackoff {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut MemberCall,
        result: &mut Result<MemberReply, BoxError>,
    ) -> Option<Self::Future> {
        let worth_retrying = match result {
            Ok(reply) => reply.status.is_server_error(),
            Err(_) => true,
        };
        if !worth_retrying || self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let sleep = tokio::time::sleep(self.delay);
        self.delay = (self.delay * 2).min(Duration::from_secs(2));
        Some(sleep)
    }

    fn clone_request(&mut self, req: &MemberCall) -> Option<MemberCall> {
        Some(req.clone())
    }
}

/// Client for members' REST APIs.
#[derive(Clone)]
pub struct MemberClient {
    service: BoxCloneSyncService<MemberCall, MemberReply, BoxError>,
}

/// Limits for [`MemberClient`].
#[derive(Clone, Debug)]
pub struct MemberClientOptions {
    /// Timeout of each attempt.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Calls in flight at once across all members.
    pub concurrency: usize,
    /// Skip verification of members' TLS certificates (gnmic's behaviour without `clustering.tls`).
    pub accept_invalid_certs: bool,
}

impl Default for MemberClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            retries: 2,
            concurrency: 64,
            accept_invalid_certs: true,
        }
    }
}

impl MemberClient {
    pub fn new(options: &MemberClientOptions) -> Result<Self, MemberCallError> {
        let client = reqwest::Client::builder()
            .connect_timeout(options.timeout)
            .danger_accept_invalid_certs(options.accept_invalid_certs)
            .build()
            .map_err(|e| MemberCallError::Transport {
                method: reqwest::Method::GET,
                url: String::new(),
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        let service = ServiceBuilder::new()
            .concurrency_limit(options.concurrency.max(1))
            .retry(RetryWithBackoff {
                remaining: options.retries,
                delay: Duration::from_millis(100),
            })
            .timeout(options.timeout)
            .service(HttpService { client });
        Ok(Self {
            service: BoxCloneSyncService::new(service),
        })
    }

    /// Sends `call`; any status above 200 is an error, as gnmic treats it.
    pub async fn send(&self, call: MemberCall) -> Result<MemberReply, MemberCallError> {
        let (method, url) = (call.method.clone(), call.url.clone());
        let reply =
            self.service
                .clone()
                .oneshot(call)
                .await
                .map_err(|e| MemberCallError::Transport {
                    method: method.clone(),
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
        if reply.status.as_u16() > 200 && reply.status != reqwest::StatusCode::NO_CONTENT {
            return Err(MemberCallError::Status {
                method,
                url,
                status: reply.status.as_u16(),
                body: String::from_utf8_lossy(&reply.body)
                    .chars()
                    .take(300)
                    .collect(),
            });
        }
        Ok(reply)
    }

    /// `POST <api>/api/v1/config/targets` with the target's config.
    pub async fn push_target_config(
        &self,
        api: &str,
        config_json: Bytes,
    ) -> Result<(), MemberCallError> {
        self.send(MemberCall {
            method: reqwest::Method::POST,
            url: format!("{api}/api/v1/config/targets"),
            body: Some(config_json),
            assignment: true,
        })
        .await
        .map(|_| ())
    }

    /// `POST <api>/api/v1/targets/<name>`: start collecting (the member takes the lock first).
    pub async fn start_target(&self, api: &str, name: &str) -> Result<(), MemberCallError> {
        self.call_target(reqwest::Method::POST, api, name).await
    }

    /// `DELETE <api>/api/v1/targets/<name>`: stop collecting and release the lock.
    pub async fn stop_target(&self, api: &str, name: &str) -> Result<(), MemberCallError> {
        self.call_target(reqwest::Method::DELETE, api, name).await
    }

    /// `DELETE <api>/api/v1/config/targets/<name>`: forget the target.
    pub async fn forget_target(&self, api: &str, name: &str) -> Result<(), MemberCallError> {
        self.send(MemberCall {
            method: reqwest::Method::DELETE,
            url: format!("{api}/api/v1/config/targets/{}", encode_segment(name)),
            body: None,
            assignment: true,
        })
        .await
        .map(|_| ())
    }

    async fn call_target(
        &self,
        method: reqwest::Method,
        api: &str,
        name: &str,
    ) -> Result<(), MemberCallError> {
        self.send(MemberCall {
            method,
            url: format!("{api}/api/v1/targets/{}", encode_segment(name)),
            body: None,
            assignment: true,
        })
        .await
        .map(|_| ())
    }
}

/// Percent-encodes a path segment (target names may contain `:` or `/`).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    async fn serve(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn server_errors_are_retried_then_reported() {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let router = axum::Router::new().route(
            "/api/v1/targets/{name}",
            axum::routing::post(move || {
                let counter = counter.clone();
                async move {
                    if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "busy")
                    } else {
                        (axum::http::StatusCode::OK, "")
                    }
                }
            }),
        );
        let api = serve(router).await;
        let client = MemberClient::new(&MemberClientOptions {
            retries: 3,
            ..Default::default()
        })
        .unwrap();
        client.start_target(&api, "r1:57400").await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 3);

        let client = MemberClient::new(&MemberClientOptions {
            retries: 0,
            ..Default::default()
        })
        .unwrap();
        hits.store(0, Ordering::SeqCst);
        let err = client.start_target(&api, "r1").await.unwrap_err();
        assert!(err.to_string().contains("HTTP 500"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_member_times_out_with_a_named_error() {
        let client = MemberClient::new(&MemberClientOptions {
            timeout: Duration::from_millis(300),
            retries: 0,
            ..Default::default()
        })
        .unwrap();
        let port = gnomon_testkit::free_port();
        let err = client
            .stop_target(&format!("http://127.0.0.1:{port}"), "r1")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }

    #[test]
    fn target_names_are_encoded_in_urls() {
        assert_eq!(
            encode_segment("r1.example.com:57400"),
            "r1.example.com:57400"
        );
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }
}
