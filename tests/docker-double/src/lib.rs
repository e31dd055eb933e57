//! A Docker Engine API **test double** (not Docker): the documented subset gnomon's docker
//! loader uses, served on a unix socket in a directory the test owns.
//!
//! * `GET /_ping` → `OK`.
//! * `GET /containers/json?all=&filters=` → running containers only unless `all` is true;
//!   `filters` is Docker's JSON (`{"label":["k=v"]}` or the older `{"label":{"k=v":true}}`):
//!   `label` (`key` or `key=value`, every value must match), `status` (any of; values checked
//!   against Docker's states), `network` (any of, by name or ID), `name` (substring), `id`
//!   (prefix); another filter name → 400 `invalid filter '<name>'`, bad JSON → 400.
//!   Each container has `Id`, `Names` (`/name`), `Image`, `Labels`, `State`, `Status`,
//!   `HostConfig.NetworkMode`, `Ports` and `NetworkSettings.Networks`.
//! * `GET /networks?filters=` → `name` (substring, as Docker), `id` (prefix), `label`,
//!   `driver`; other names → 400.
//! * The same paths under a version prefix (`/v1.43/...`).
//!
//! Tests change the state through [`DockerDouble`]'s methods.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A container in the double.
#[derive(Clone, Debug)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `running`, `exited`, `paused`, …
    pub state: String,
    /// `bridge`, `host`, or a network name.
    pub network_mode: String,
    /// Network name → IPv4 address (may be empty) and IPv6 address.
    pub networks: BTreeMap<String, (String, String)>,
    /// Published ports: (host IP, private port, public port, "tcp"/"udp").
    pub ports: Vec<(String, u16, u16, String)>,
}

impl Container {
    /// A running container on `network` with `ip`.
    pub fn running(name: &str, network: &str, ip: &str) -> Self {
        Self {
            id: format!(
                "{:0>64}",
                name.bytes().map(|b| format!("{b:x}")).collect::<String>()
            ),
            name: name.to_string(),
            labels: BTreeMap::new(),
            state: "running".into(),
            network_mode: network.to_string(),
            networks: BTreeMap::from([(network.to_string(), (ip.to_string(), String::new()))]),
            ports: Vec::new(),
        }
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn on_network(mut self, network: &str, ip: &str) -> Self {
        self.networks
            .insert(network.into(), (ip.into(), String::new()));
        self
    }
}

/// A network in the double.
#[derive(Clone, Debug)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub labels: BTreeMap<String, String>,
}

impl Network {
    pub fn bridge(name: &str) -> Self {
        Self {
            id: format!("{:0>64}", name.len()),
            name: name.to_string(),
            driver: "bridge".into(),
            labels: BTreeMap::new(),
        }
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

#[derive(Default)]
struct Model {
    containers: BTreeMap<String, Container>,
    networks: BTreeMap<String, Network>,
    requests: u64,
}

type Shared = Arc<Mutex<Model>>;

/// A running double. Dropping it stops it.
pub struct DockerDouble {
    socket: PathBuf,
    model: Shared,
    server: tokio::task::JoinHandle<()>,
}

const STATES: [&str; 7] = [
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

impl DockerDouble {
    /// Listens on `<dir>/docker.sock`.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let socket = dir.join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&socket)?;
        let model: Shared = Arc::default();
        let app = Router::new()
            .route("/_ping", get(|| async { "OK" }))
            .route("/containers/json", get(containers))
            .route("/networks", get(networks))
            .route("/{version}/_ping", get(|| async { "OK" }))
            .route("/{version}/containers/json", get(containers))
            .route("/{version}/networks", get(networks))
            .with_state(model.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "docker double server ended");
            }
        });
        Ok(Self {
            socket,
            model,
            server,
        })
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `unix://<socket>`, as the loader's `address`.
    pub fn address(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Model) -> T) -> T {
        let mut model = self.model.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut model)
    }

    pub fn add_container(&self, container: Container) {
        self.with(|m| m.containers.insert(container.name.clone(), container));
    }

    pub fn remove_container(&self, name: &str) {
        self.with(|m| m.containers.remove(name));
    }

    /// Sets a container's state (`exited` stops it).
    pub fn set_state(&self, name: &str, state: &str) {
        self.with(|m| {
            if let Some(c) = m.containers.get_mut(name) {
                c.state = state.to_string();
            }
        });
    }

    pub fn add_network(&self, network: Network) {
        self.with(|m| m.networks.insert(network.name.clone(), network));
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.with(|m| m.requests)
    }
}

impl Drop for DockerDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "message": message }))).into_response()
}

/// Docker's `filters` parameter: `{"name": ["v", …]}` or `{"name": {"v": true}}`.
fn parse_filters(
    params: &BTreeMap<String, String>,
    allowed: &[&str],
) -> Result<BTreeMap<String, Vec<String>>, String> {
    let Some(text) = params.get("filters").filter(|t| !t.is_empty()) else {
        return Ok(BTreeMap::new());
    };
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid filter: {e}"))?;
    let Value::Object(map) = value else {
        return Err("invalid filter: not an object".into());
    };
    let mut out = BTreeMap::new();
    for (name, values) in map {
        if !allowed.contains(&name.as_str()) {
            return Err(format!("invalid filter '{name}'"));
        }
        let list: Vec<String> = match values {
            Value::Array(items) => items
                .into_iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("invalid filter '{name}'"))?,
            Value::Object(set) => set
                .into_iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .map(|(k, _)| k)
                .collect(),
            _ => return Err(format!("invalid filter '{name}'")),
        };
        out.insert(name, list);
    }
    Ok(out)
}

fn labels_match(labels: &BTreeMap<String, String>, wanted: &[String]) -> bool {
    wanted.iter().all(|w| match w.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(w),
    })
}

fn any_or_empty(wanted: Option<&Vec<String>>, test: impl Fn(&str) -> bool) -> bool {
    wanted.is_none_or(|list| list.is_empty() || list.iter().any(|w| test(w)))
}

async fn containers(
    State(model): State<Shared>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let filters = match parse_filters(&params, &["label", "status", "network", "name", "id"]) {
        Ok(f) => f,
        Err(message) => return bad_request(message),
    };
    if let Some(bad) = filters
        .get("status")
        .and_then(|s| s.iter().find(|v| !STATES.contains(&v.as_str())))
    {
        return bad_request(format!("invalid filter 'status={bad}'"));
    }
    let all = params
        .get("all")
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True"));
    let mut model = model.lock().unwrap_or_else(|e| e.into_inner());
    model.requests += 1;
    let network_ids: BTreeMap<String, String> = model
        .networks
        .values()
        .map(|n| (n.name.clone(), n.id.clone()))
        .collect();
    let list: Vec<Value> = model
        .containers
        .values()
        .filter(|c| all || filters.contains_key("status") || c.state == "running")
        .filter(|c| {
            labels_match(
                &c.labels,
                filters.get("label").map(Vec::as_slice).unwrap_or(&[]),
            )
        })
        .filter(|c| any_or_empty(filters.get("status"), |s| c.state == s))
        .filter(|c| {
            any_or_empty(filters.get("network"), |n| {
                c.networks.keys().any(|name| {
                    name == n || network_ids.get(name).is_some_and(|id| id.starts_with(n))
                })
            })
        })
        .filter(|c| any_or_empty(filters.get("name"), |n| c.name.contains(n)))
        .filter(|c| any_or_empty(filters.get("id"), |i| c.id.starts_with(i)))
        .map(|c| {
            let networks: Map<String, Value> = c
                .networks
                .iter()
                .map(|(name, (ip, ipv6))| {
                    (
                        name.clone(),
                        json!({
                            "NetworkID": network_ids.get(name).cloned().unwrap_or_default(),
                            "IPAddress": ip,
                            "GlobalIPv6Address": ipv6,
                            "IPPrefixLen": if ip.is_empty() { 0 } else { 24 },
                        }),
                    )
                })
                .collect();
            json!({
                "Id": c.id,
                "Names": [format!("/{}", c.name)],
                "Image": "double:latest",
                "Labels": c.labels,
                "State": c.state,
                "Status": if c.state == "running" { "Up" } else { "Exited (0)" },
                "HostConfig": { "NetworkMode": c.network_mode },
                "Ports": c.ports.iter().map(|(ip, private, public, kind)| json!({
                    "IP": ip, "PrivatePort": private, "PublicPort": public, "Type": kind,
                })).collect::<Vec<_>>(),
                "NetworkSettings": { "Networks": networks },
            })
        })
        .collect();
    Json(Value::Array(list)).into_response()
}

async fn networks(
    State(model): State<Shared>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let filters = match parse_filters(&params, &["name", "id", "label", "driver"]) {
        Ok(f) => f,
        Err(message) => return bad_request(message),
    };
    let mut model = model.lock().unwrap_or_else(|e| e.into_inner());
    model.requests += 1;
    let list: Vec<Value> = model
        .networks
        .values()
        .filter(|n| any_or_empty(filters.get("name"), |w| n.name.contains(w)))
        .filter(|n| any_or_empty(filters.get("id"), |w| n.id.starts_with(w)))
        .filter(|n| any_or_empty(filters.get("driver"), |w| n.driver == w))
        .filter(|n| {
            labels_match(
                &n.labels,
                filters.get("label").map(Vec::as_slice).unwrap_or(&[]),
            )
        })
        .map(|n| {
            json!({
                "Name": n.name, "Id": n.id, "Driver": n.driver, "Scope": "local",
                "Labels": n.labels,
            })
        })
        .collect();
    Json(Value::Array(list)).into_response()
}
