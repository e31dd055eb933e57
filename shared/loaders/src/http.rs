//! The one HTTP client of the loaders and actions: reqwest inside a tower stack whose
//! timeout covers the whole call, body included, and a bounded body read. A loader or
//! action never waits on a remote without a deadline and never buffers an unbounded body.

use bytes::{Bytes, BytesMut};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Status, one header and body of an answer.
pub(crate) struct Reply {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

/// Sends a request and reads the whole body, refusing one above `limit` bytes.
#[derive(Clone)]
struct ReadAll {
    client: reqwest::Client,
    limit: usize,
}

impl Service<reqwest::Request> for ReadAll {
    type Response = Reply;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: reqwest::Request) -> Self::Future {
        let client = self.client.clone();
        let limit = self.limit;
        Box::pin(async move {
            let mut response = client.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let mut body = BytesMut::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > limit {
                    return Err(format!("the answer is larger than {} MiB", limit >> 20).into());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Reply {
                status,
                headers,
                body: body.freeze(),
            })
        })
    }
}

/// A reqwest client whose calls time out after `timeout`.
#[derive(Clone)]
pub(crate) struct HttpClient {
    client: reqwest::Client,
    service: BoxCloneSyncService<reqwest::Request, Reply, BoxError>,
    timeout: Duration,
}

impl HttpClient {
    /// `builder` carries TLS or a unix socket; connect timeout and the call timeout are set here.
    pub fn new(builder: reqwest::ClientBuilder, timeout: Duration) -> Result<Self, String> {
        let tls = gnomon_common::tls::client_config(
            &gnomon_common::tls::ClientTlsOptions::default(),
            &[b"http/1.1"],
        )
        .map_err(|e| e.to_string())?;
        Self::with_tls(builder, tls, timeout)
    }

    /// Like [`Self::new`] with a client TLS configuration.
    pub fn with_tls(
        builder: reqwest::ClientBuilder,
        tls: rustls::ClientConfig,
        timeout: Duration,
    ) -> Result<Self, String> {
        let client = builder
            .connect_timeout(timeout)
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let service = ServiceBuilder::new().timeout(timeout).service(ReadAll {
            client: client.clone(),
            limit: crate::MAX_DOCUMENT_SIZE,
        });
        Ok(Self {
            client,
            service: BoxCloneSyncService::new(service),
            timeout,
        })
    }

    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends `request`; the error is one line naming what failed (not the URL: callers do).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Reply, String> {
        let request = request.build().map_err(|e| error_chain(&e))?;
        self.service.clone().oneshot(request).await.map_err(|e| {
            if e.is::<tower::timeout::error::Elapsed>() {
                format!("no answer within {:?}", self.timeout)
            } else {
                error_chain(e.as_ref())
            }
        })
    }
}

impl HttpClient {
    /// Sends a GET `request` and wants 200: the error names `shown_url` (the URL without
    /// credentials), the failure or the status, and the start of the body.
    pub async fn get_ok(
        &self,
        request: reqwest::RequestBuilder,
        shown_url: &str,
    ) -> Result<Reply, crate::LoadError> {
        let reply = self
            .send(request)
            .await
            .map_err(|reason| crate::LoadError::Request {
                method: "GET",
                url: shown_url.to_string(),
                reason,
            })?;
        if reply.status != reqwest::StatusCode::OK {
            return Err(crate::LoadError::Status {
                method: "GET",
                url: shown_url.to_string(),
                status: reply.status.as_u16(),
                body: body_excerpt(&reply.body),
            });
        }
        Ok(reply)
    }
}

pub(crate) use gnomon_common::error_text::error_chain;

/// The start of a body, for error messages.
pub(crate) fn body_excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(300).collect()
}

/// `?k=v&…` with each part percent-encoded (a flag with an empty value is sent as `k`).
pub(crate) fn query_string(pairs: &[(&str, String)]) -> String {
    let encode = |text: &str| {
        let mut out = String::with_capacity(text.len());
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                out.push(byte as char);
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    };
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                encode(k)
            } else {
                format!("{}={}", encode(k), encode(v))
            }
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}
