//! gnmic's consul loader: the passing instances of each configured service
//! (`GET /v1/health/service/<name>?passing&tag=…&dc=…`), one target per instance, named by
//! its service ID or the `config.name` template, addressed by the service address (the
//! node's when empty) and port.
//!
//! Changes are followed with Consul's blocking queries, as gnmic does: between reads,
//! [`Loader::wait_for_change`] holds one blocking query per service on the index of the last
//! read (`?index=&wait=`) and returns as soon as any of them answers, so an instance that
//! registers, fails its check or deregisters is seen within milliseconds; every read is
//! still a complete read of every service. A failed blocking query is not retried at once:
//! the next read reports the failure, then the wait starts again (at most every 5 s).

use crate::http::{query_string, HttpClient};
use crate::targets::{self, join_host_port, WarnOnce};
use crate::{LoadError, Loader};
use gnomon_config::loader::{ConsulLoaderConfig, ConsulServiceConfig, LoaderConfig};
use gnomon_config::{GlobalConfig, TargetConfig};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

pub struct ConsulLoader {
    config: ConsulLoaderConfig,
    base: String,
    globals: GlobalConfig,
    client: HttpClient,
    blocking: HttpClient,
    /// `X-Consul-Index` of each service's last read.
    indexes: Vec<u64>,
    warnings: WarnOnce,
}

impl ConsulLoader {
    pub fn new(consul: &ConsulLoaderConfig, config: &LoaderConfig) -> Result<Self, LoadError> {
        let setup = |reason: String| LoadError::Setup {
            loader: "consul",
            reason,
        };
        let base =
            if consul.address.starts_with("http://") || consul.address.starts_with("https://") {
                consul.address.trim_end_matches('/').to_string()
            } else {
                format!("http://{}", consul.address)
            };
        // Consul adds up to wait/16 of jitter to a blocking query.
        let blocking_timeout = config.interval + config.interval / 16 + config.timeout;
        Ok(Self {
            client: HttpClient::new(reqwest::Client::builder(), config.timeout).map_err(setup)?,
            blocking: HttpClient::new(reqwest::Client::builder(), blocking_timeout)
                .map_err(setup)?,
            indexes: vec![0; consul.services.len()],
            config: consul.clone(),
            base,
            globals: config.globals.clone(),
            warnings: WarnOnce::default(),
        })
    }

    fn url(&self, service: &ConsulServiceConfig) -> String {
        format!(
            "{}/v1/health/service/{}",
            self.base,
            encode_segment(&service.name)
        )
    }

    fn request(
        &self,
        client: &HttpClient,
        service: &ConsulServiceConfig,
        wait: Option<(u64, Duration)>,
    ) -> reqwest::RequestBuilder {
        let mut query: Vec<(&str, String)> = vec![
            ("dc", self.config.datacenter.clone()),
            ("passing", String::new()),
        ];
        for tag in &service.tags {
            query.push(("tag", tag.clone()));
        }
        if let Some((index, wait)) = wait {
            query.push(("index", index.max(1).to_string()));
            query.push(("wait", format!("{}ms", wait.as_millis())));
        }
        let url = format!("{}{}", self.url(service), query_string(&query));
        let mut request = client.request(reqwest::Method::GET, &url);
        if let Some(token) = &self.config.token {
            request = request.header("X-Consul-Token", token.expose());
        }
        if let (Some(user), Some(password)) = (&self.config.username, &self.config.password) {
            request = request.basic_auth(user, Some(password.expose()));
        }
        request
    }

    /// One instance as a target, or why it was skipped.
    fn target(
        &self,
        service: &ConsulServiceConfig,
        entry: &Value,
    ) -> Result<Option<TargetConfig>, String> {
        let instance = entry.get("Service").ok_or("an entry without Service")?;
        let tags: Vec<&str> = instance
            .get("Tags")
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !service.tags.iter().all(|t| tags.contains(&t.as_str())) {
            return Ok(None);
        }
        let id = instance
            .get("ID")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("an instance without ID")?;
        let host = instance
            .get("Address")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
            .or_else(|| entry.pointer("/Node/Address").and_then(Value::as_str))
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("instance {id:?} has no address"))?;
        let port = instance.get("Port").and_then(Value::as_u64).unwrap_or(0);
        let name = match &service.name_template {
            Some(template) => template
                .render(instance)
                .map_err(|e| format!("instance {id:?}: config.name: {e}"))?,
            None => id.to_string(),
        };
        let mut target = targets::discovered(
            &name,
            &join_host_port(host, port),
            &service.config,
            &self.globals,
        )
        .map_err(|e| format!("instance {id:?}: {e}"))?;
        for (tag, template) in &service.event_tag_templates {
            let value = template
                .render(instance)
                .map_err(|e| format!("instance {id:?}: config.event-tags.{tag}: {e}"))?;
            target.event_tags.insert(tag.clone(), value);
        }
        Ok(Some(target))
    }
}

/// Percent-encodes a path segment.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn consul_index(headers: &reqwest::header::HeaderMap) -> u64 {
    headers
        .get("X-Consul-Index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[async_trait::async_trait]
impl Loader for ConsulLoader {
    fn type_name(&self) -> &'static str {
        "consul"
    }

    async fn load(&mut self) -> Result<BTreeMap<String, TargetConfig>, LoadError> {
        let mut found = BTreeMap::new();
        for (i, service) in self.config.services.iter().enumerate() {
            let url = self.url(service);
            let reply = self
                .client
                .get_ok(self.request(&self.client, service, None), &url)
                .await?;
            let entries: Vec<Value> =
                serde_json::from_slice(&reply.body).map_err(|e| LoadError::Parse {
                    source_name: url.clone(),
                    reason: e.to_string(),
                })?;
            self.indexes[i] = consul_index(&reply.headers);
            for entry in &entries {
                match self.target(service, entry) {
                    Ok(Some(target)) => {
                        found.insert(target.name.clone(), target);
                    }
                    Ok(None) => {}
                    Err(why) => {
                        let text = format!("service {:?}: {why}; instance skipped", service.name);
                        self.warnings.log("consul", text);
                    }
                }
            }
        }
        Ok(found)
    }

    async fn wait_for_change(&mut self, max: Duration) {
        let started = tokio::time::Instant::now();
        let mut waits = tokio::task::JoinSet::new();
        for (i, service) in self.config.services.iter().enumerate() {
            let request = self.request(&self.blocking, service, Some((self.indexes[i], max)));
            let client = self.blocking.clone();
            let known = self.indexes[i];
            waits.spawn(async move {
                match client.send(request).await {
                    Ok(reply) if reply.status == reqwest::StatusCode::OK => {
                        Ok(consul_index(&reply.headers) != known)
                    }
                    Ok(reply) => Err(format!("HTTP {}", reply.status.as_u16())),
                    Err(e) => Err(e),
                }
            });
        }
        while let Some(done) = waits.join_next().await {
            match done {
                Ok(Ok(true)) => return,
                Ok(Ok(false)) => continue,
                // Failures are reported by the next read; do not spin on a dead agent.
                Ok(Err(_)) | Err(_) => {
                    let pause = max.min(Duration::from_secs(5));
                    tokio::time::sleep_until(started + pause).await;
                    return;
                }
            }
        }
    }
}
