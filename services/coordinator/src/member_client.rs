//! The leader's calls to members' REST APIs (gnmic's assignment handshake), through reqwest
//! wrapped in tower layers: a concurrency limit, retries with backoff for failures that are
//! safe to repeat, and a timeout on every attempt.
//!
//! Members registered with `__protocol=https` are called over TLS. Without `clustering.tls`
//! their certificates are not verified (gnmic's behaviour); with it the leader trusts its
//! `ca-file` (else the system roots), presents `cert-file`/`key-file` to members that ask for
//! a client certificate, and skips verification only with `skip-verify`. Members share
//! `api-server.token`; the leader sends it as a bearer token on every call.

use bytes::Bytes;
use gnomon_common::retry::{Backoff, RetryClassify, RetryPolicy};
use gnomon_common::tls::ClientTlsOptions;
use gnomon_config::Secret;
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

use gnomon_coordination::assignments::{AssignmentsReply, ASSIGNMENTS_PATH};
use gnomon_coordination::member_stats::{MemberStats, MEMBER_STATS_PATH};
use gnomon_coordination::ASSIGNMENT_HEADER;

/// A member's answer: status and body.
#[derive(Clone, Debug)]
pub struct MemberReply {
    pub status: reqwest::StatusCode,
    pub body: Bytes,
}

/// Why a call to a member failed.
#[derive(Debug, thiserror::Error)]
pub enum MemberCallError {
    #[error("{method} {url}")]
    Transport {
        method: reqwest::Method,
        url: String,
        #[source]
        source: BoxError,
    },
    #[error("setting up the member client: {0}")]
    Setup(String),
    #[error("{method} {url}: HTTP {status}: {body}")]
    Status {
        method: reqwest::Method,
        url: String,
        status: u16,
        body: String,
    },
    /// The member answered 200 with a body that is not what the call expects.
    #[error("{url}: unexpected answer: {reason}")]
    Decode { url: String, reason: String },
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// reqwest as a tower service.
#[derive(Clone)]
struct HttpService {
    client: reqwest::Client,
    /// The cluster's `api-server.token`, sent as `Authorization: Bearer`.
    token: Option<Secret>,
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
        let token = self.token.clone();
        Box::pin(async move {
            let mut request = client.request(call.method.clone(), &call.url);
            if let Some(token) = &token {
                request = request.bearer_auth(token.expose());
            }
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

/// The current span's W3C `traceparent`, for calls that carry several spans' contexts in
/// their body.
pub(crate) fn current_traceparent() -> Option<String> {
    trace_context_headers()
        .into_iter()
        .find(|(name, _)| name == "traceparent")
        .map(|(_, value)| value)
}

/// Which member calls are repeated: transport errors and 5xx answers. Every call of the
/// assignment handshake is idempotent (pushing the same config, claiming or unclaiming a
/// target twice changes nothing), so any of them may be repeated.
#[derive(Clone)]
struct TransientMemberFailures;

impl RetryClassify<MemberCall, MemberReply, BoxError> for TransientMemberFailures {
    fn should_retry(&self, _call: &MemberCall, result: &Result<MemberReply, BoxError>) -> bool {
        match result {
            Ok(reply) => reply.status.is_server_error(),
            Err(_) => true,
        }
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
    /// Calls in flight at once across all members: the one bound on the leader's placement
    /// work (handshakes wait for locks without holding a slot).
    pub concurrency: usize,
    /// `clustering.tls` for https members; `None` accepts any member certificate (gnmic's
    /// behaviour without `clustering.tls`).
    pub tls: Option<ClientTlsOptions>,
    /// The cluster's `api-server.token`, sent on every call.
    pub token: Option<Secret>,
}

impl Default for MemberClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            retries: 2,
            concurrency: 64,
            tls: None,
            token: None,
        }
    }
}

impl MemberClient {
    pub fn new(options: &MemberClientOptions) -> Result<Self, MemberCallError> {
        let setup_error = MemberCallError::Setup;
        let tls = options.tls.clone().unwrap_or(ClientTlsOptions {
            skip_verify: true,
            ..ClientTlsOptions::default()
        });
        let tls = gnomon_common::tls::client_config(&tls, &[b"http/1.1"])
            .map_err(|e| setup_error(format!("clustering.tls: {e}")))?;
        let client = reqwest::Client::builder()
            .connect_timeout(options.timeout)
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| setup_error(format!("cannot build the HTTP client: {e}")))?;
        let service = ServiceBuilder::new()
            .concurrency_limit(options.concurrency.max(1))
            .retry(RetryPolicy::new(
                TransientMemberFailures,
                options.retries,
                Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
            ))
            .timeout(options.timeout)
            .service(HttpService {
                client,
                token: options.token.clone(),
            });
        Ok(Self {
            service: BoxCloneSyncService::new(service),
        })
    }

    /// Sends `call`; any status above 200 is an error, as gnmic treats it.
    pub async fn send(&self, call: MemberCall) -> Result<MemberReply, MemberCallError> {
        let (method, url) = (call.method.clone(), call.url.clone());
        let reply = self.service.clone().oneshot(call).await.map_err(|source| {
            MemberCallError::Transport {
                method: method.clone(),
                url: url.clone(),
                source,
            }
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

    /// `POST <api>/api/v1/cluster/member/assignments` with encoded assignments (see
    /// [`gnomon_coordination::assignments`]): for each, in order, `None` when the member took
    /// the target, else why it refused.
    pub async fn assign_targets(
        &self,
        api: &str,
        assignments: Bytes,
    ) -> Result<Vec<Option<String>>, MemberCallError> {
        let url = format!("{api}{ASSIGNMENTS_PATH}");
        let reply = self
            .send(MemberCall {
                method: reqwest::Method::POST,
                url: url.clone(),
                body: Some(assignments),
                assignment: true,
            })
            .await?;
        serde_json::from_slice::<AssignmentsReply>(&reply.body)
            .map(|reply| reply.refused)
            .map_err(|e| MemberCallError::Decode {
                url,
                reason: e.to_string(),
            })
    }

    /// `GET <api>/api/v1/cluster/member/stats`: the member's own figures.
    pub async fn member_stats(&self, api: &str) -> Result<MemberStats, MemberCallError> {
        let url = format!("{api}{MEMBER_STATS_PATH}");
        let reply = self
            .send(MemberCall {
                method: reqwest::Method::GET,
                url: url.clone(),
                body: None,
                assignment: false,
            })
            .await?;
        serde_json::from_slice(&reply.body).map_err(|e| MemberCallError::Decode {
            url,
            reason: e.to_string(),
        })
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
pub(crate) fn encode_segment(segment: &str) -> String {
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

/// Serves `router` on a free loopback port for a test; returns its base URL.
#[cfg(test)]
pub(crate) async fn serve_for_test(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    async fn serve(router: axum::Router) -> String {
        serve_for_test(router).await
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
    async fn member_stats_are_decoded_and_a_bad_body_is_named() {
        let router = axum::Router::new().route(
            MEMBER_STATS_PATH,
            axum::routing::get(|| async {
                r#"{"name":"m1","targets-held":2,"updates-in-per-second":4.5,"updates-out-per-second":4.0,"output-health":"failing","outputs":[{"name":"n","healthy":false}]}"#
            }),
        );
        let api = serve(router).await;
        let client = MemberClient::new(&MemberClientOptions::default()).unwrap();
        let stats = client.member_stats(&api).await.unwrap();
        assert_eq!(stats.name, "m1");
        assert_eq!(stats.targets_held, 2);
        assert_eq!(stats.updates_in_per_second, 4.5);
        assert_eq!(
            stats.output_health,
            gnomon_coordination::member_stats::OutputHealth::Failing
        );
        assert!(!stats.outputs[0].healthy);

        let wrong = serve(axum::Router::new().route(
            MEMBER_STATS_PATH,
            axum::routing::get(|| async { r#"{"name":"m1"}"# }),
        ))
        .await;
        let err = client.member_stats(&wrong).await.unwrap_err();
        assert!(
            matches!(err, MemberCallError::Decode { .. })
                && err.to_string().contains("/api/v1/cluster/member/stats")
                && err.to_string().contains("missing field"),
            "{err}"
        );
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

    /// A member API over TLS with a certificate from `pki`, requiring `token` for changes;
    /// counts the calls that reached the handler.
    async fn serve_tls_member(
        pki: &gnomon_testkit::TestPki,
        token: &str,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> (String, Arc<AtomicUsize>) {
        let identity = pki.issue("member").unwrap();
        let port = gnomon_testkit::free_port();
        let yaml = format!(
            "api-server:\n  address: 127.0.0.1:{port}\n  token: {token}\n  tls:\n    cert-file: {}\n    key-file: {}\n",
            identity.cert_file.display(),
            identity.key_file.display()
        );
        let config =
            gnomon_config::load_config_with_env(&yaml, gnomon_config::ConfigFormat::Yaml, &[])
                .unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let router = axum::Router::new().route(
            "/api/v1/targets/{name}",
            axum::routing::post(move || {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::OK
                }
            }),
        );
        let options = gnomon_collector::api_server_options(config.api.as_ref().unwrap());
        gnomon_api_server::serve_api(&options, router, shutdown)
            .await
            .unwrap();
        (format!("https://127.0.0.1:{port}"), hits)
    }

    #[tokio::test]
    async fn https_members_are_verified_with_the_cluster_ca_and_get_the_token() {
        let pki = gnomon_testkit::TestPki::new("members").unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (api, hits) = serve_tls_member(&pki, "cluster-tok-1", shutdown.clone()).await;
        let options = |tls: Option<ClientTlsOptions>, token: Option<&str>| MemberClientOptions {
            retries: 0,
            timeout: Duration::from_secs(5),
            tls,
            token: token.map(Secret::new),
            ..Default::default()
        };
        let trusting = Some(ClientTlsOptions {
            ca_file: Some(pki.ca_file().to_path_buf()),
            ..Default::default()
        });

        // The cluster CA and the token: accepted.
        let client = MemberClient::new(&options(trusting.clone(), Some("cluster-tok-1"))).unwrap();
        client.start_target(&api, "r1").await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        // Without `clustering.tls` the certificate is not verified (gnmic's behaviour).
        let client = MemberClient::new(&options(None, Some("cluster-tok-1"))).unwrap();
        client.start_target(&api, "r1").await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 2);

        // A CA that did not sign the member's certificate: refused before any request.
        let other = gnomon_testkit::TestPki::new("other").unwrap();
        let distrusting = Some(ClientTlsOptions {
            ca_file: Some(other.ca_file().to_path_buf()),
            ..Default::default()
        });
        let client = MemberClient::new(&options(distrusting, Some("cluster-tok-1"))).unwrap();
        let err = client.start_target(&api, "r1").await.unwrap_err();
        assert!(matches!(err, MemberCallError::Transport { .. }), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 2);

        // The wrong token (or none): the member answers 401, reported without the value.
        let client = MemberClient::new(&options(trusting.clone(), Some("not-the-token"))).unwrap();
        let err = client.start_target(&api, "r1").await.unwrap_err();
        assert!(err.to_string().contains("HTTP 401"), "{err}");
        assert!(!err.to_string().contains("not-the-token"), "{err}");
        let client = MemberClient::new(&options(trusting, None)).unwrap();
        let err = client.start_target(&api, "r1").await.unwrap_err();
        assert!(err.to_string().contains("missing bearer token"), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        shutdown.cancel();
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
