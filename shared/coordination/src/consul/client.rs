//! A thin Consul HTTP client: reqwest inside tower timeout + retry layers, covering the calls
//! gnomon needs (sessions, KV, agent services and TTL checks, health) with Consul's quirks:
//! `LockDelay` sent as a string, 500 `invalid session` vs `false`, 404 with `X-Consul-Index`,
//! blocking queries with per-request timeouts longer than `wait`.

use crate::{CoordinationError, LockerConfig, Result, ServiceInstance, ServiceRegistration};
use base64::Engine;
use gnomon_common::duration::format_go_duration;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::json;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

type HttpService = BoxCloneSyncService<reqwest::Request, reqwest::Response, BoxError>;

/// Longest `wait` gnomon asks for in a blocking query.
pub(crate) const MAX_BLOCKING_WAIT: Duration = Duration::from_secs(60);

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
                        CoordinationError::Backend(format!(
                            "consul KV value of {:?} is not base64: {e}",
                            self.key
                        ))
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

/// Retries idempotent calls on transport errors, timeouts and 429/502/503/504.
#[derive(Clone)]
struct RetryTransient {
    attempts_left: usize,
    backoff: Duration,
}

fn retryable(request: &reqwest::Request) -> bool {
    let url = request.url();
    if url.path().ends_with("/session/create") {
        return false;
    }
    let query = url.query().unwrap_or("");
    !(query.contains("cas=") || query.contains("release="))
}

impl tower::retry::Policy<reqwest::Request, reqwest::Response, BoxError> for RetryTransient {
    type Future = Pin<Box<tokio::time::Sleep>>;

    fn retry(
        &mut self,
        request: &mut reqwest::Request,
        result: &mut std::result::Result<reqwest::Response, BoxError>,
    ) -> Option<Self::Future> {
        let transient = match result {
            Ok(response) => matches!(response.status().as_u16(), 429 | 502 | 503 | 504),
            Err(_) => true,
        };
        if !transient || self.attempts_left == 0 || !retryable(request) {
            return None;
        }
        self.attempts_left -= 1;
        Some(Box::pin(tokio::time::sleep(self.backoff)))
    }

    fn clone_request(&mut self, request: &reqwest::Request) -> Option<reqwest::Request> {
        request.try_clone()
    }
}

fn stack(http: reqwest::Client, timeout: Duration) -> HttpService {
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .retry(RetryTransient {
                attempts_left: 2,
                backoff: Duration::from_millis(200),
            })
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

pub(crate) struct ConsulClient {
    base: Url,
    datacenter: Option<String>,
    /// The ACL token as a header value marked sensitive (kept out of debug output).
    token: Option<reqwest::header::HeaderValue>,
    basic: Option<(String, String)>,
    normal: HttpService,
    blocking: HttpService,
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
            CoordinationError::Config(format!(
                "locker address {address:?} is not a valid URL: {e}"
            ))
        })?;
        gnomon_common::tls::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.request_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| {
                CoordinationError::Config(format!("cannot build the Consul HTTP client: {e}"))
            })?;
        let token = match cfg.token.as_deref().filter(|t| !t.is_empty()) {
            None => None,
            Some(token) => {
                let mut value = reqwest::header::HeaderValue::from_str(token).map_err(|_| {
                    CoordinationError::Config(
                        "the Consul ACL token contains characters not allowed in an HTTP header"
                            .into(),
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let blocking_timeout = MAX_BLOCKING_WAIT + MAX_BLOCKING_WAIT / 16 + cfg.request_timeout;
        Ok(Self {
            base,
            datacenter: cfg.datacenter.clone().filter(|d| !d.is_empty()),
            token,
            basic: cfg.username.clone().zip(cfg.password.clone()),
            normal: stack(http.clone(), cfg.request_timeout),
            blocking: stack(http, blocking_timeout),
            debug: cfg.debug,
        })
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<Url> {
        let mut url = self
            .base
            .join(path)
            .map_err(|e| CoordinationError::Config(format!("bad Consul path {path:?}: {e}")))?;
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

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        blocking: bool,
    ) -> Result<reqwest::Response> {
        if self.debug {
            tracing::debug!(%method, path = url.path(), "consul call");
        }
        let mut request = reqwest::Request::new(method, url);
        if let Some(token) = &self.token {
            request
                .headers_mut()
                .insert("X-Consul-Token", token.clone());
        }
        if let Some((user, password)) = &self.basic {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            if let Ok(value) = format!("Basic {encoded}").parse() {
                request
                    .headers_mut()
                    .insert(reqwest::header::AUTHORIZATION, value);
            }
        }
        if let Some(body) = body {
            *request.body_mut() = Some(body.into());
        }
        let service = if blocking {
            self.blocking.clone()
        } else {
            self.normal.clone()
        };
        let path = request.url().path().to_string();
        service.oneshot(request).await.map_err(|e| {
            if e.is::<tower::timeout::error::Elapsed>() {
                CoordinationError::Unavailable(format!("consul {path}: timed out"))
            } else {
                CoordinationError::Unavailable(format!("consul {path}: {e}"))
            }
        })
    }

    /// Maps a non-success answer to an error naming the call.
    async fn failure(what: &str, response: reqwest::Response) -> CoordinationError {
        let status = response.status();
        let mut body = response.text().await.unwrap_or_default();
        body.truncate(300);
        let body = body.trim().to_string();
        if status == StatusCode::INTERNAL_SERVER_ERROR && body.contains("invalid session") {
            return CoordinationError::SessionLost(format!("consul {what}: {body}"));
        }
        if body.contains("Invalid Session TTL") {
            return CoordinationError::Config(format!(
                "consul {what}: {body} (adjust session-ttl)"
            ));
        }
        if status == StatusCode::FORBIDDEN {
            return CoordinationError::Backend(format!(
                "consul {what}: permission denied (check the ACL token: clustering.locker.token, or service-registration.token): {body}"
            ));
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return CoordinationError::Unavailable(format!("consul {what}: {status}: {body}"));
        }
        CoordinationError::Backend(format!("consul {what}: {status}: {body}"))
    }

    fn index_of(response: &reqwest::Response) -> u64 {
        response
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
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

    async fn bool_answer(what: &str, response: reqwest::Response) -> Result<bool> {
        if !response.status().is_success() {
            return Err(Self::failure(what, response).await);
        }
        let text = response
            .text()
            .await
            .map_err(|e| CoordinationError::Unavailable(format!("consul {what}: {e}")))?;
        Ok(text.trim() == "true")
    }

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
        let response = self
            .send(Method::PUT, url, Some(body.to_string().into_bytes()), false)
            .await?;
        if !response.status().is_success() {
            return Err(Self::failure("session create", response).await);
        }
        let created: Created = response.json().await.map_err(|e| {
            CoordinationError::Backend(format!("consul session create: bad answer: {e}"))
        })?;
        Ok(created.id)
    }

    /// `Some(ttl granted by the server)`, or `None` when the session no longer exists.
    pub async fn session_renew(&self, id: &str) -> Result<Option<Duration>> {
        let url = self.url(&format!("/v1/session/renew/{}", segment(id)), &[])?;
        let response = self.send(Method::PUT, url, None, false).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(Self::failure("session renew", response).await);
        }
        let entries: Vec<SessionEntry> = response.json().await.map_err(|e| {
            CoordinationError::Backend(format!("consul session renew: bad answer: {e}"))
        })?;
        let ttl = entries
            .first()
            .and_then(|e| gnomon_common::duration::parse_go_duration(&e.ttl).ok())
            .unwrap_or_default();
        if entries.is_empty() {
            return Ok(None);
        }
        Ok(Some(ttl))
    }

    pub async fn session_destroy(&self, id: &str) -> Result<()> {
        let url = self.url(&format!("/v1/session/destroy/{}", segment(id)), &[])?;
        let response = self.send(Method::PUT, url, None, false).await?;
        if !response.status().is_success() {
            return Err(Self::failure("session destroy", response).await);
        }
        Ok(())
    }

    /// One key (`None` if missing) and the index to block on next.
    pub async fn kv_get(
        &self,
        key: &str,
        block: Option<(u64, Duration)>,
    ) -> Result<(Option<KvEntry>, u64)> {
        let url = self.url(&format!("/v1/kv/{key}"), &Self::blocking_query(block))?;
        let response = self.send(Method::GET, url, None, block.is_some()).await?;
        let index = Self::index_of(&response);
        if response.status() == StatusCode::NOT_FOUND {
            return Ok((None, index));
        }
        if !response.status().is_success() {
            return Err(Self::failure("kv get", response).await);
        }
        let entries: Vec<RawKv> = response
            .json()
            .await
            .map_err(|e| CoordinationError::Backend(format!("consul kv get: bad answer: {e}")))?;
        let entry = entries
            .into_iter()
            .find(|e| e.key == key)
            .map(RawKv::decode)
            .transpose()?;
        Ok((entry, index))
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
        let response = self.send(Method::GET, url, None, block.is_some()).await?;
        let index = Self::index_of(&response);
        if response.status() == StatusCode::NOT_FOUND {
            return Ok((Vec::new(), index));
        }
        if !response.status().is_success() {
            return Err(Self::failure("kv list", response).await);
        }
        let entries: Vec<RawKv> = response
            .json()
            .await
            .map_err(|e| CoordinationError::Backend(format!("consul kv list: bad answer: {e}")))?;
        let entries = entries
            .into_iter()
            .map(RawKv::decode)
            .collect::<Result<Vec<_>>>()?;
        Ok((entries, index))
    }

    pub async fn kv_put(&self, key: &str, value: &str, mode: KvWrite<'_>) -> Result<bool> {
        let query = match mode {
            KvWrite::Plain => Vec::new(),
            KvWrite::Acquire(session) => vec![("acquire", session.to_string())],
        };
        let url = self.url(&format!("/v1/kv/{key}"), &query)?;
        let response = self
            .send(Method::PUT, url, Some(value.as_bytes().to_vec()), false)
            .await?;
        Self::bool_answer("kv put", response).await
    }

    pub async fn kv_delete(&self, key: &str, cas: Option<u64>) -> Result<bool> {
        let query = cas
            .map(|c| vec![("cas", c.to_string())])
            .unwrap_or_default();
        let url = self.url(&format!("/v1/kv/{key}"), &query)?;
        let response = self.send(Method::DELETE, url, None, false).await?;
        Self::bool_answer("kv delete", response).await
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
        let response = self
            .send(Method::PUT, url, Some(body.to_string().into_bytes()), false)
            .await?;
        if !response.status().is_success() {
            return Err(Self::failure("service register", response).await);
        }
        Ok(())
    }

    pub async fn service_deregister(&self, id: &str) -> Result<()> {
        let url = self.url(
            &format!("/v1/agent/service/deregister/{}", segment(id)),
            &[],
        )?;
        let response = self.send(Method::PUT, url, None, false).await?;
        if !response.status().is_success() {
            return Err(Self::failure("service deregister", response).await);
        }
        Ok(())
    }

    /// Marks a TTL check passing; `false` when the agent no longer knows the check (both the
    /// newer 404 and the older 500 "does not have associated TTL" mean "register again").
    pub async fn check_pass(&self, check_id: &str) -> Result<bool> {
        let url = self.url(&format!("/v1/agent/check/pass/{}", segment(check_id)), &[])?;
        let response = self.send(Method::PUT, url, None, false).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(true);
        }
        if status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        let error = Self::failure("check pass", response).await;
        if error.to_string().contains("does not have associated TTL") {
            return Ok(false);
        }
        Err(error)
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
        let response = self.send(Method::GET, url, None, block.is_some()).await?;
        let index = Self::index_of(&response);
        if !response.status().is_success() {
            return Err(Self::failure("health service", response).await);
        }
        let entries: Vec<HealthEntry> = response.json().await.map_err(|e| {
            CoordinationError::Backend(format!("consul health service: bad answer: {e}"))
        })?;
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
        Ok((instances, index))
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

    #[test]
    fn only_idempotent_calls_are_retried() {
        let request = |url: &str| reqwest::Request::new(Method::PUT, Url::parse(url).unwrap());
        assert!(!retryable(&request("http://a/v1/session/create")));
        assert!(!retryable(&request("http://a/v1/kv/k?cas=3")));
        assert!(retryable(&request("http://a/v1/session/renew/x")));
        assert!(retryable(&request("http://a/v1/kv/k?acquire=s")));
    }
}
