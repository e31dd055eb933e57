//! A thin Consul HTTP client covering the calls gnomon needs (sessions, KV, agent services and
//! TTL checks, health) with Consul's quirks: `LockDelay` sent as a string, 500
//! `invalid session` vs `false`, 404 with `X-Consul-Index`, blocking queries with per-request
//! timeouts longer than `wait`.
//!
//! The transport is reqwest as a tower service, in gnomon's shared retry policy
//! ([`RetryPolicy`] with the shared [`Backoff`]) over a timeout per attempt (the answer is read
//! to the end inside it). At most [`RETRIES`] more attempts, and only when another attempt
//! may succeed **and** is safe to send ([`ConsulRetry`]):
//! * 429 (Consul did not process the request): any call;
//! * transport errors, timeouts, 502/503/504: idempotent calls only (reads, renewals, plain
//!   writes, an acquire by the same session, deletes without `cas`, agent registrations). A
//!   call that is not (session create, `cas` delete) is repeated only when it certainly never
//!   left (connection refused);
//! * never a refusal (401, 403) or any other answer: a refused ACL token fails at once with
//!   [`CoordinationError::CredentialRefused`].

use crate::{
    CoordinationError, Credential, LockerConfig, Result, ServiceInstance, ServiceRegistration,
};
use base64::Engine;
use bytes::Bytes;
use gnomon_common::duration::format_go_duration;
use gnomon_common::retry::{Backoff, RetryClassify, RetryPolicy};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// Longest `wait` gnomon asks for in a blocking query.
pub(crate) const MAX_BLOCKING_WAIT: Duration = Duration::from_secs(60);

/// Repeats of one call after its first attempt, at most.
const RETRIES: u32 = 2;

/// A KV entry as Consul returns it (`Value` already base64-decoded).
#[derive(Debug, Clone)]
pub(crate) struct KvEntry {
    pub key: String,
    pub value: String,
    pub session: Option<String>,
    pub modify_index: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawKv {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    modify_index: u64,
}

impl RawKv {
    fn decode(self) -> Result<KvEntry> {
        let value = match self.value {
            Some(encoded) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded.as_bytes())
                    .map_err(|e| {
                        CoordinationError::backend(format!(
                            "consul KV value of {:?} is not base64",
                            self.key
                        ))
                        .caused_by(e)
                    })?;
                String::from_utf8_lossy(&bytes).into_owned()
            }
            None => String::new(),
        };
        Ok(KvEntry {
            key: self.key,
            value,
            session: self.session.filter(|s| !s.is_empty()),
            modify_index: self.modify_index,
        })
    }
}

/// How a KV PUT treats locks.
pub(crate) enum KvWrite<'a> {
    Plain,
    Acquire(&'a str),
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthEntry {
    #[serde(default)]
    node: HealthNode,
    service: HealthService,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct HealthNode {
    #[serde(default)]
    address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthService {
    #[serde(rename = "ID")]
    id: String,
    service: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u16,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SessionEntry {
    #[serde(rename = "TTL", default)]
    ttl: String,
}

/// One HTTP call to Consul.
#[derive(Clone, Debug)]
struct ConsulCall {
    method: Method,
    url: Url,
    body: Option<Bytes>,
    /// Whether sending it twice has the same effect as once.
    idempotent: bool,
}

/// Consul's answer, read to the end.
struct ConsulReply {
    status: StatusCode,
    /// `X-Consul-Index` (0 when absent).
    index: u64,
    body: Bytes,
}

impl ConsulReply {
    /// The body as text, cut at 300 characters (for error messages).
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .trim()
            .chars()
            .take(300)
            .collect()
    }
}

/// reqwest as a tower service; every call carries the ACL token and basic auth, if set.
#[derive(Clone)]
struct Http {
    client: reqwest::Client,
    /// Marked sensitive, so they stay out of debug output.
    auth: HeaderMap,
}

impl Service<ConsulCall> for Http {
    type Response = ConsulReply;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<ConsulReply, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ConsulCall) -> Self::Future {
        let mut request = self
            .client
            .request(call.method, call.url)
            .headers(self.auth.clone());
        if let Some(body) = call.body {
            request = request.body(body);
        }
        Box::pin(async move {
            let response = request.send().await?;
            let status = response.status();
            let index = response
                .headers()
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let body = response.bytes().await?;
            Ok(ConsulReply {
                status,
                index,
                body,
            })
        })
    }
}

/// Which failed Consul calls are repeated (see the module docs).
#[derive(Clone)]
struct ConsulRetry;

impl RetryClassify<ConsulCall, ConsulReply, BoxError> for ConsulRetry {
    fn should_retry(&self, call: &ConsulCall, result: &Result<ConsulReply, BoxError>) -> bool {
        match result {
            // Rate limited: Consul did not process the request.
            Ok(reply) if reply.status == StatusCode::TOO_MANY_REQUESTS => true,
            // The request may have been applied before a proxy or an overloaded agent failed.
            Ok(reply) => {
                call.idempotent
                    && matches!(
                        reply.status,
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    )
            }
            Err(error) => call.idempotent || never_sent(error),
        }
    }
}

/// Whether the request certainly never reached Consul (the connection was not established).
fn never_sent(error: &BoxError) -> bool {
    error
        .downcast_ref::<reqwest::Error>()
        .is_some_and(reqwest::Error::is_connect)
}

type HttpService = BoxCloneSyncService<ConsulCall, ConsulReply, BoxError>;

/// The retry policy over a timeout per attempt.
fn stack(http: Http, timeout: Duration) -> HttpService {
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .retry(RetryPolicy::new(
                ConsulRetry,
                RETRIES,
                Backoff::new(Duration::from_millis(200), Duration::from_secs(1)),
            ))
            .timeout(timeout)
            .service(http),
    )
}

/// Percent-encodes one path segment (service IDs, check IDs, names).
fn segment(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Whether a call may be repeated, for [`ConsulClient::send`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Safe,
    Unsafe,
}

pub(crate) struct ConsulClient {
    base: Url,
    datacenter: Option<String>,
    normal: HttpService,
    normal_timeout: Duration,
    blocking: HttpService,
    blocking_timeout: Duration,
    debug: bool,
}

impl ConsulClient {
    pub fn new(cfg: &LockerConfig) -> Result<Self> {
        let address = cfg
            .address
            .clone()
            .unwrap_or_else(|| "127.0.0.1:8500".to_string());
        let with_scheme = if address.contains("://") {
            address.clone()
        } else {
            format!("http://{address}")
        };
        let base = Url::parse(&with_scheme).map_err(|e| {
            CoordinationError::config(format!("locker address {address:?} is not a valid URL"))
                .caused_by(e)
        })?;
        gnomon_common::tls::ensure_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.request_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| {
                CoordinationError::config("cannot build the Consul HTTP client").caused_by(e)
            })?;
        let mut auth = HeaderMap::new();
        if let Some(token) = cfg
            .token
            .as_ref()
            .map(|t| t.expose())
            .filter(|t| !t.is_empty())
        {
            let mut value = HeaderValue::from_str(token).map_err(|e| {
                CoordinationError::config(
                    "the Consul ACL token contains characters not allowed in an HTTP header",
                )
                .caused_by(e)
            })?;
            value.set_sensitive(true);
            auth.insert("X-Consul-Token", value);
        }
        if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            // Base64 is always a valid header value.
            if let Ok(mut value) = HeaderValue::from_str(&format!("Basic {encoded}")) {
                value.set_sensitive(true);
                auth.insert(reqwest::header::AUTHORIZATION, value);
            }
        }
        let http = Http { client, auth };
        let blocking_timeout = MAX_BLOCKING_WAIT + MAX_BLOCKING_WAIT / 16 + cfg.request_timeout;
        Ok(Self {
            base,
            datacenter: cfg.datacenter.clone().filter(|d| !d.is_empty()),
            normal: stack(http.clone(), cfg.request_timeout),
            normal_timeout: cfg.request_timeout,
            blocking: stack(http, blocking_timeout),
            blocking_timeout,
            debug: cfg.debug,
        })
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<Url> {
        let mut url = self.base.join(path).map_err(|e| {
            CoordinationError::config(format!("bad Consul path {path:?}")).caused_by(e)
        })?;
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
            if let Some(dc) = &self.datacenter {
                pairs.append_pair("dc", dc);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        Ok(url)
    }

    /// Sends one call through the retry and timeout layers; `what` names it in errors (with
    /// the URL path, never the query or headers).
    async fn send(
        &self,
        what: &str,
        method: Method,
        url: Url,
        body: Option<Bytes>,
        repeat: Repeat,
        blocking: bool,
    ) -> Result<(String, ConsulReply)> {
        if self.debug {
            tracing::debug!(%method, path = url.path(), "consul call");
        }
        let what = format!("consul {what} ({method} {})", url.path());
        let call = ConsulCall {
            method,
            url,
            body,
            idempotent: repeat == Repeat::Safe,
        };
        let (service, timeout) = if blocking {
            (&self.blocking, self.blocking_timeout)
        } else {
            (&self.normal, self.normal_timeout)
        };
        match service.clone().oneshot(call).await {
            Ok(reply) => Ok((what, reply)),
            Err(error) => {
                let reason = if error.is::<tower::timeout::error::Elapsed>() {
                    format!("{what}: no answer within {timeout:?}")
                } else {
                    format!(
                        "{what}: {}",
                        gnomon_common::error_text::error_chain(error.as_ref())
                    )
                };
                Err(CoordinationError::unavailable(reason).caused_by(error))
            }
        }
    }

    /// Maps a non-success answer to an error naming the call.
    fn failure(what: &str, reply: &ConsulReply) -> CoordinationError {
        let status = reply.status;
        let body = reply.text();
        if status == StatusCode::INTERNAL_SERVER_ERROR && body.contains("invalid session") {
            return CoordinationError::session_lost(format!("{what}: {body}"));
        }
        if body.contains("Invalid Session TTL") {
            return CoordinationError::config(format!("{what}: {body} (adjust session-ttl)"));
        }
        match status {
            StatusCode::FORBIDDEN => CoordinationError::refused(
                Credential::ConsulToken,
                format!("{what}: permission denied (HTTP 403: {body})"),
            ),
            StatusCode::UNAUTHORIZED => CoordinationError::refused(
                Credential::ConsulBasicAuth,
                format!("{what}: authentication required (HTTP 401: {body})"),
            ),
            _ if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                CoordinationError::unavailable(format!("{what}: HTTP {status}: {body}"))
            }
            _ => CoordinationError::backend(format!("{what}: HTTP {status}: {body}")),
        }
    }

    /// The answer's JSON, or an error when it is not a success or does not parse.
    fn json<T: DeserializeOwned>(what: &str, reply: &ConsulReply) -> Result<T> {
        if !reply.status.is_success() {
            return Err(Self::failure(what, reply));
        }
        serde_json::from_slice(&reply.body).map_err(|e| {
            CoordinationError::backend(format!("{what}: unexpected answer")).caused_by(e)
        })
    }

    /// `true` / `false` answers of writes.
    fn bool_answer(what: &str, reply: &ConsulReply) -> Result<bool> {
        if !reply.status.is_success() {
            return Err(Self::failure(what, reply));
        }
        Ok(reply.text() == "true")
    }

    fn ensure_success(what: &str, reply: &ConsulReply) -> Result<()> {
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(Self::failure(what, reply))
        }
    }

    fn blocking_query(block: Option<(u64, Duration)>) -> Vec<(&'static str, String)> {
        match block {
            Some((index, wait)) if index > 0 => {
                vec![
                    ("index", index.to_string()),
                    ("wait", format_go_duration(wait.min(MAX_BLOCKING_WAIT))),
                ]
            }
            _ => Vec::new(),
        }
    }

    /// Creates a session (not idempotent: a repeat would create a second one).
    pub async fn session_create(
        &self,
        name: &str,
        ttl: Duration,
        lock_delay: Duration,
    ) -> Result<String> {
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        let body = json!({
            "Name": name,
            "Behavior": "delete",
            "TTL": format_go_duration(ttl),
            "LockDelay": format_go_duration(lock_delay),
        });
        let url = self.url("/v1/session/create", &[])?;
        let body = Some(Bytes::from(body.to_string()));
        let (what, reply) = self
            .send(
                "session create",
                Method::PUT,
                url,
                body,
                Repeat::Unsafe,
                false,
            )
            .await?;
        Ok(Self::json::<Created>(&what, &reply)?.id)
    }

    /// `Some(ttl granted by the server)`, or `None` when the session no longer exists.
    pub async fn session_renew(&self, id: &str) -> Result<Option<Duration>> {
        let url = self.url(&format!("/v1/session/renew/{}", segment(id)), &[])?;
        let (what, reply) = self
            .send("session renew", Method::PUT, url, None, Repeat::Safe, false)
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let entries: Vec<SessionEntry> = Self::json(&what, &reply)?;
        Ok(entries.first().map(|entry| {
            gnomon_common::duration::parse_go_duration(&entry.ttl).unwrap_or_default()
        }))
    }

    pub async fn session_destroy(&self, id: &str) -> Result<()> {
        let url = self.url(&format!("/v1/session/destroy/{}", segment(id)), &[])?;
        let (what, reply) = self
            .send(
                "session destroy",
                Method::PUT,
                url,
                None,
                Repeat::Safe,
                false,
            )
            .await?;
        Self::ensure_success(&what, &reply)
    }

    /// One key (`None` if missing) and the index to block on next.
    pub async fn kv_get(
        &self,
        key: &str,
        block: Option<(u64, Duration)>,
    ) -> Result<(Option<KvEntry>, u64)> {
        let url = self.url(&format!("/v1/kv/{key}"), &Self::blocking_query(block))?;
        let (what, reply) = self
            .send(
                "kv get",
                Method::GET,
                url,
                None,
                Repeat::Safe,
                block.is_some(),
            )
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok((None, reply.index));
        }
        let entries: Vec<RawKv> = Self::json(&what, &reply)?;
        let entry = entries
            .into_iter()
            .find(|e| e.key == key)
            .map(RawKv::decode)
            .transpose()?;
        Ok((entry, reply.index))
    }

    /// Every key under `prefix` and the index to block on next.
    pub async fn kv_list(
        &self,
        prefix: &str,
        block: Option<(u64, Duration)>,
    ) -> Result<(Vec<KvEntry>, u64)> {
        let mut query = Self::blocking_query(block);
        query.push(("recurse", "true".to_string()));
        let url = self.url(&format!("/v1/kv/{prefix}"), &query)?;
        let (what, reply) = self
            .send(
                "kv list",
                Method::GET,
                url,
                None,
                Repeat::Safe,
                block.is_some(),
            )
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok((Vec::new(), reply.index));
        }
        let entries: Vec<RawKv> = Self::json(&what, &reply)?;
        let entries = entries
            .into_iter()
            .map(RawKv::decode)
            .collect::<Result<Vec<_>>>()?;
        Ok((entries, reply.index))
    }

    /// Writes a key; with [`KvWrite::Acquire`], only if free or held by that session
    /// (idempotent either way: the same session may acquire its own key again).
    pub async fn kv_put(&self, key: &str, value: &str, mode: KvWrite<'_>) -> Result<bool> {
        let (what, query) = match mode {
            KvWrite::Plain => ("kv put", Vec::new()),
            KvWrite::Acquire(session) => ("kv acquire", vec![("acquire", session.to_string())]),
        };
        let url = self.url(&format!("/v1/kv/{key}"), &query)?;
        let body = Some(Bytes::copy_from_slice(value.as_bytes()));
        let (what, reply) = self
            .send(what, Method::PUT, url, body, Repeat::Safe, false)
            .await?;
        Self::bool_answer(&what, &reply)
    }

    /// Deletes a key; with `cas`, only at that modify index (not idempotent: a repeat after a
    /// success answers `false`).
    pub async fn kv_delete(&self, key: &str, cas: Option<u64>) -> Result<bool> {
        let (query, repeat) = match cas {
            Some(index) => (vec![("cas", index.to_string())], Repeat::Unsafe),
            None => (Vec::new(), Repeat::Safe),
        };
        let url = self.url(&format!("/v1/kv/{key}"), &query)?;
        let (what, reply) = self
            .send("kv delete", Method::DELETE, url, None, repeat, false)
            .await?;
        Self::bool_answer(&what, &reply)
    }

    pub fn check_id(service_id: &str) -> String {
        format!("service:{service_id}")
    }

    pub async fn service_register(&self, registration: &ServiceRegistration) -> Result<()> {
        let body = json!({
            "ID": registration.id,
            "Name": registration.name,
            "Address": registration.address,
            "Port": registration.port,
            "Tags": registration.tags,
            "Check": {
                "CheckID": Self::check_id(&registration.id),
                "Name": format!("{} TTL", registration.name),
                "TTL": format_go_duration(registration.ttl),
                "Status": "passing",
                "DeregisterCriticalServiceAfter": "1m",
            },
        });
        let url = self.url("/v1/agent/service/register", &[])?;
        let body = Some(Bytes::from(body.to_string()));
        let (what, reply) = self
            .send(
                "service register",
                Method::PUT,
                url,
                body,
                Repeat::Safe,
                false,
            )
            .await?;
        Self::ensure_success(&what, &reply)
    }

    pub async fn service_deregister(&self, id: &str) -> Result<()> {
        let url = self.url(
            &format!("/v1/agent/service/deregister/{}", segment(id)),
            &[],
        )?;
        let (what, reply) = self
            .send(
                "service deregister",
                Method::PUT,
                url,
                None,
                Repeat::Safe,
                false,
            )
            .await?;
        Self::ensure_success(&what, &reply)
    }

    /// Marks a TTL check passing; `false` when the agent no longer knows the check (both the
    /// newer 404 and the older 500 "does not have associated TTL" mean "register again").
    pub async fn check_pass(&self, check_id: &str) -> Result<bool> {
        let url = self.url(&format!("/v1/agent/check/pass/{}", segment(check_id)), &[])?;
        let (what, reply) = self
            .send("check pass", Method::PUT, url, None, Repeat::Safe, false)
            .await?;
        if reply.status.is_success() {
            return Ok(true);
        }
        if reply.status == StatusCode::NOT_FOUND
            || reply.text().contains("does not have associated TTL")
        {
            return Ok(false);
        }
        Err(Self::failure(&what, &reply))
    }

    /// Passing instances of `name` with all `tags`, and the index to block on next.
    pub async fn health_service(
        &self,
        name: &str,
        tags: &[String],
        block: Option<(u64, Duration)>,
    ) -> Result<(Vec<ServiceInstance>, u64)> {
        let mut query = Self::blocking_query(block);
        query.push(("passing", "true".to_string()));
        for tag in tags {
            query.push(("tag", tag.clone()));
        }
        let url = self.url(&format!("/v1/health/service/{}", segment(name)), &query)?;
        let (what, reply) = self
            .send(
                "health service",
                Method::GET,
                url,
                None,
                Repeat::Safe,
                block.is_some(),
            )
            .await?;
        let entries: Vec<HealthEntry> = Self::json(&what, &reply)?;
        let mut instances: Vec<ServiceInstance> = entries
            .into_iter()
            .map(|e| ServiceInstance {
                id: e.service.id,
                name: e.service.service,
                address: if e.service.address.is_empty() {
                    e.node.address
                } else {
                    e.service.address
                },
                port: e.service.port,
                tags: e.service.tags.unwrap_or_default(),
            })
            .filter(|s| s.has_tags(tags))
            .collect();
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((instances, reply.index))
    }
}

/// Blocking-query index bookkeeping per Consul's rules: reset to 0 when the index goes
/// backwards, never block on an index below 1 after the first answer.
#[derive(Default)]
pub(crate) struct BlockingIndex {
    index: u64,
}

impl BlockingIndex {
    /// The index to send (0 = do not block).
    pub fn current(&self) -> u64 {
        self.index
    }

    /// Records the returned index; `true` when the content may have changed.
    pub fn advance(&mut self, returned: u64) -> bool {
        if returned < self.index {
            self.index = 0;
            return true;
        }
        let changed = self.index == 0 || returned != self.index;
        self.index = returned.max(1);
        changed
    }
}

/// Token bucket for blocking-query loops: bursts of `burst`, then one call per `interval`.
pub(crate) struct RateLimiter {
    tokens: f64,
    burst: f64,
    interval: Duration,
    last: Instant,
}

impl RateLimiter {
    pub fn new(burst: u32, interval: Duration) -> Self {
        Self {
            tokens: burst as f64,
            burst: burst as f64,
            interval,
            last: Instant::now(),
        }
    }

    pub async fn take(&mut self) {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() / self.interval.as_secs_f64();
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return;
        }
        let missing = (1.0 - self.tokens) * self.interval.as_secs_f64();
        tokio::time::sleep(Duration::from_secs_f64(missing)).await;
        self.tokens = 0.0;
        self.last = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn blocking_index_follows_consul_rules() {
        let mut index = BlockingIndex::default();
        assert_eq!(index.current(), 0);
        assert!(index.advance(10));
        assert_eq!(index.current(), 10);
        assert!(!index.advance(10));
        assert!(index.advance(3), "backwards must count as a change");
        assert_eq!(index.current(), 0, "backwards resets to 0");
        assert!(index.advance(0));
        assert_eq!(index.current(), 1, "clamped to 1 after the first answer");
    }

    #[tokio::test]
    async fn rate_limiter_allows_a_burst_then_spaces_calls() {
        let mut limiter = RateLimiter::new(2, Duration::from_millis(200));
        let start = Instant::now();
        limiter.take().await;
        limiter.take().await;
        limiter.take().await;
        assert!(start.elapsed() >= Duration::from_millis(150));
    }

    /// A fake Consul answering every request with `answer(hit number, method, path)` after
    /// `delay`; returns its address and the hit counter.
    async fn fake_consul(
        delay: Duration,
        answer: impl Fn(usize, &Method, &str) -> (u16, &'static str) + Send + Sync + 'static,
    ) -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let answer = Arc::new(answer);
        let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (counter, answer) = (counter.clone(), answer.clone());
            async move {
                let hit = counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let (status, body) = answer(hit, request.method(), request.uri().path());
                (axum::http::StatusCode::from_u16(status).unwrap(), body)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, router).await });
        (address, hits)
    }

    fn client(address: &str, token: Option<&str>) -> ConsulClient {
        let mut cfg = LockerConfig::new(crate::LockerType::Consul);
        cfg.address = Some(address.to_string());
        cfg.token = token.map(Into::into);
        cfg.request_timeout = Duration::from_millis(300);
        ConsulClient::new(&cfg).unwrap()
    }

    #[tokio::test]
    async fn a_refused_token_fails_at_once_naming_the_token() {
        let (address, hits) =
            fake_consul(Duration::ZERO, |_, _, _| (403, "Permission denied")).await;
        let consul = client(&address, Some("acl-wrong-7f"));
        let error = consul
            .session_create("gnomon-a", Duration::from_secs(10), Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(hits.load(Ordering::SeqCst), 1, "a 403 is never repeated");
        assert_eq!(error.credential(), Some(&Credential::ConsulToken));
        assert!(!error.is_transient());
        let text = error.to_string();
        assert!(text.contains("permission denied"), "{text}");
        assert!(text.contains("/v1/session/create"), "{text}");
        assert!(text.contains("clustering.locker.token"), "{text}");
        assert!(!text.contains("acl-wrong-7f"), "{text}");
        // Idempotent calls are not repeated either.
        hits.store(0, Ordering::SeqCst);
        let error = consul.kv_get("gnmic/lab/leader", None).await.unwrap_err();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(error.credential(), Some(&Credential::ConsulToken));

        let (address, hits) = fake_consul(Duration::ZERO, |_, _, _| (401, "Unauthorized")).await;
        let error = client(&address, None).kv_get("k", None).await.unwrap_err();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(error.credential(), Some(&Credential::ConsulBasicAuth));
    }

    #[tokio::test]
    async fn unavailable_answers_are_repeated_only_where_safe() {
        // Twice 503, then the answer.
        let (address, hits) = fake_consul(Duration::ZERO, |hit, _, _| match hit {
            0 | 1 => (503, "No cluster leader"),
            _ => (200, r#"[{"Key":"k","Value":"dg==","ModifyIndex":7}]"#),
        })
        .await;
        let consul = client(&address, None);
        let (entry, _) = consul.kv_get("k", None).await.unwrap();
        assert_eq!(
            entry.map(|e| (e.value, e.modify_index)),
            Some(("v".into(), 7))
        );
        assert_eq!(hits.load(Ordering::SeqCst), 3);

        // A session create may have been applied before the 503: not repeated.
        let (address, hits) = fake_consul(Duration::ZERO, |_, _, _| (503, "busy")).await;
        let error = client(&address, None)
            .session_create("gnomon-a", Duration::from_secs(10), Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert!(error.is_transient(), "{error}");

        // 429 means Consul did not process it: repeated even for a session create, and
        // bounded.
        let (address, hits) = fake_consul(Duration::ZERO, |_, _, _| (429, "slow down")).await;
        let error = client(&address, None)
            .session_create("gnomon-a", Duration::from_secs(10), Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(hits.load(Ordering::SeqCst), 1 + RETRIES as usize);
        assert!(error.is_transient(), "{error}");
    }

    #[tokio::test]
    async fn every_attempt_times_out_and_only_safe_calls_are_repeated() {
        let (address, hits) = fake_consul(Duration::from_secs(5), |_, _, _| (200, "true")).await;
        let consul = client(&address, None);
        let started = Instant::now();
        let error = consul.kv_put("k", "v", KvWrite::Plain).await.unwrap_err();
        assert_eq!(hits.load(Ordering::SeqCst), 1 + RETRIES as usize);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert!(
            error.to_string().contains("no answer within 300ms"),
            "{error}"
        );
        assert!(
            std::error::Error::source(&error).is_some(),
            "the timeout is kept as the cause"
        );

        hits.store(0, Ordering::SeqCst);
        let error = consul.kv_delete("k", Some(3)).await.unwrap_err();
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "a cas delete is not repeated"
        );
        assert!(error.is_transient(), "{error}");
    }
}
