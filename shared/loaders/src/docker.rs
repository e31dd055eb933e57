//! gnmic's docker loader: the running containers each filter finds on a Docker Engine
//! (`GET /containers/json?filters=…`), addressed through the network its `network` filter
//! selects (`GET /networks?filters=…`), one target per container named after it.
//!
//! Addressing follows gnmic: a container in host network mode is `localhost` (or the
//! daemon's host); on a local (unix socket) daemon the container's IP on the first selected
//! network it is attached to (networks in name order); on a remote (tcp) daemon the published
//! host port of the gNMI port, else that network IP. The port is `port` or the value of the
//! `label=<name>` label; without one the global port applies. The unversioned API paths are
//! used (the daemon's current version).

use crate::http::{query_string, HttpClient};
use crate::targets::{self, join_host_port, WarnOnce};
use crate::{LoadError, Loader};
use gnomon_config::loader::{
    DockerAddress, DockerFilter, DockerLoaderConfig, DockerPort, LoaderConfig,
    DOCKER_DEFAULT_SOCKET,
};
use gnomon_config::{GlobalConfig, TargetConfig};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub struct DockerLoader {
    filters: Vec<DockerFilter>,
    /// `Some(host)` for a tcp daemon.
    remote_host: Option<String>,
    base: String,
    globals: GlobalConfig,
    client: HttpClient,
    warnings: WarnOnce,
}

/// The address `DOCKER_HOST` or the default socket gives.
fn resolve(address: &DockerAddress) -> DockerAddress {
    match address {
        DockerAddress::Default => match std::env::var("DOCKER_HOST") {
            Ok(host) if host.starts_with("unix://") && host.len() > "unix://".len() => {
                DockerAddress::Unix(PathBuf::from(&host["unix://".len()..]))
            }
            Ok(host) if host.starts_with("tcp://") => {
                DockerAddress::Tcp(host["tcp://".len()..].trim_end_matches('/').to_string())
            }
            _ => DockerAddress::Unix(PathBuf::from(DOCKER_DEFAULT_SOCKET)),
        },
        other => other.clone(),
    }
}

fn host_of(host_port: &str) -> String {
    let host = match host_port.rsplit_once(':') {
        Some((host, _)) => host,
        None => host_port,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

impl DockerLoader {
    pub fn new(docker: &DockerLoaderConfig, config: &LoaderConfig) -> Result<Self, LoadError> {
        let setup = |reason: String| LoadError::Setup {
            loader: "docker",
            reason,
        };
        let (builder, base, remote_host) = match resolve(&docker.address) {
            DockerAddress::Unix(path) => (
                reqwest::Client::builder().unix_socket(path),
                "http://localhost".to_string(),
                None,
            ),
            DockerAddress::Tcp(host_port) => (
                reqwest::Client::builder(),
                format!("http://{host_port}"),
                Some(host_of(&host_port)),
            ),
            DockerAddress::Default => {
                return Err(setup("no Docker daemon address".into()));
            }
        };
        Ok(Self {
            filters: docker.filters.clone(),
            remote_host,
            base,
            globals: config.globals.clone(),
            client: HttpClient::new(builder, config.timeout).map_err(setup)?,
            warnings: WarnOnce::default(),
        })
    }

    /// `GET <path>?filters=<json>`, answering a JSON list.
    async fn list(
        &self,
        path: &str,
        filters: &BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<Value>, LoadError> {
        let url = format!("{}{path}", self.base);
        let (full, shown) = if filters.is_empty() {
            (url.clone(), url.clone())
        } else {
            let json = serde_json::to_string(filters).unwrap_or_default();
            (
                format!("{url}{}", query_string(&[("filters", json.clone())])),
                format!("{url}?filters={json}"),
            )
        };
        let request = self.client.request(reqwest::Method::GET, &full);
        let reply = self.client.get_ok(request, &shown).await?;
        serde_json::from_slice(&reply.body).map_err(|e| LoadError::Parse {
            source_name: shown,
            reason: e.to_string(),
        })
    }

    /// The container's address, or `None` when no selected network reaches it.
    fn address(
        &self,
        filter: &DockerFilter,
        container: &Value,
        networks: &[String],
    ) -> Option<String> {
        let labels = container.get("Labels");
        let port: Option<String> = match &filter.port {
            None => None,
            Some(DockerPort::Number(p)) => Some(p.to_string()),
            Some(DockerPort::Label(label)) => labels
                .and_then(|l| l.get(label))
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        let with_port = |host: &str| match &port {
            Some(p) => join_host_port(host, p),
            None => host.to_string(),
        };
        let mode = container
            .pointer("/HostConfig/NetworkMode")
            .and_then(Value::as_str)
            .unwrap_or("");
        if mode.eq_ignore_ascii_case("host") {
            let host = self.remote_host.as_deref().unwrap_or("localhost");
            return Some(with_port(host));
        }
        if let (Some(daemon_host), Some(wanted)) = (&self.remote_host, &port) {
            let published = container
                .get("Ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|p| {
                    p.get("PrivatePort")
                        .and_then(Value::as_u64)
                        .map(|v| v.to_string())
                        == Some(wanted.clone())
                        && p.get("Type").and_then(Value::as_str) == Some("tcp")
                        && p.get("PublicPort").and_then(Value::as_u64).unwrap_or(0) != 0
                });
            if let Some(published) = published {
                let ip = published.get("IP").and_then(Value::as_str).unwrap_or("");
                let host = if ip.is_empty() || ip == "0.0.0.0" || ip == "::" {
                    daemon_host.as_str()
                } else {
                    ip
                };
                let public = published
                    .get("PublicPort")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                return Some(join_host_port(host, public));
            }
        }
        let attached = container.pointer("/NetworkSettings/Networks")?;
        networks.iter().find_map(|network| {
            let settings = attached.get(network)?;
            ["IPAddress", "GlobalIPv6Address"]
                .iter()
                .filter_map(|k| settings.get(*k).and_then(Value::as_str))
                .find(|ip| !ip.is_empty())
                .map(with_port)
        })
    }
}

/// A filter map as Docker's `filters` parameter; gnmic reads a key `label=a` with value `b`
/// as `label=a=b`.
fn docker_filters(map: &BTreeMap<String, String>, running: bool) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if running {
        out.entry("status".into())
            .or_default()
            .push("running".into());
    }
    for (key, value) in map {
        let (name, value) = match key.split_once('=') {
            Some((name, rest)) => (name.to_string(), format!("{rest}={value}")),
            None => (key.clone(), value.clone()),
        };
        let values = out.entry(name).or_default();
        if !values.contains(&value) {
            values.push(value);
        }
    }
    out
}

#[async_trait::async_trait]
impl Loader for DockerLoader {
    fn type_name(&self) -> &'static str {
        "docker"
    }

    async fn load(&mut self) -> Result<BTreeMap<String, TargetConfig>, LoadError> {
        let mut found = BTreeMap::new();
        let mut skipped = Vec::new();
        for filter in &self.filters {
            let mut networks: Vec<String> = self
                .list("/networks", &docker_filters(&filter.network, false))
                .await?
                .iter()
                .filter_map(|n| n.get("Name").and_then(Value::as_str).map(str::to_string))
                .collect();
            networks.sort();
            for query in &filter.containers {
                let containers = self
                    .list("/containers/json", &docker_filters(query, true))
                    .await?;
                for container in &containers {
                    let name = container
                        .get("Names")
                        .and_then(Value::as_array)
                        .and_then(|n| n.first())
                        .and_then(Value::as_str)
                        .map(|n| n.trim_start_matches('/').to_string())
                        .or_else(|| {
                            container
                                .get("Id")
                                .and_then(Value::as_str)
                                .map(str::to_string)
                        })
                        .unwrap_or_default();
                    let Some(address) = self.address(filter, container, &networks) else {
                        skipped.push(format!(
                            "container {name:?}: no address on the selected networks; skipped"
                        ));
                        continue;
                    };
                    match targets::discovered(&name, &address, &filter.config, &self.globals) {
                        Ok(target) => {
                            found.insert(target.name.clone(), target);
                        }
                        Err(e) => skipped.push(format!("container {name:?}: {e}; skipped")),
                    }
                }
            }
        }
        for text in skipped {
            self.warnings.log("docker", text);
        }
        Ok(found)
    }
}
