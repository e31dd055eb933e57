//! A Kubernetes API **test double** (not Kubernetes): the namespaced resources gnomon's k8s
//! locker uses — `coordination.k8s.io/v1` Leases, `discovery.k8s.io/v1` EndpointSlices, and
//! core `v1` Endpoints and ConfigMaps — with the API server's documented behavior:
//!
//! * get / list / create / replace (PUT) / delete, JSON only, `Status` objects for every
//!   error with Kubernetes' reasons and messages (404 NotFound, 409 AlreadyExists, 409
//!   Conflict for a stale `metadata.resourceVersion` or a failed delete precondition, 422
//!   Invalid for names that are not DNS-1123 subdomains, annotations over 256 KiB, bad
//!   label values or a non-positive `leaseDurationSeconds`, 400 BadRequest for a name or
//!   namespace that disagrees with the URL or an unsupported field selector);
//! * one global `resourceVersion` counter (like etcd's revision) stamped on every write; a
//!   no-op update keeps the object's version; `uid` and `creationTimestamp` are the server's;
//! * label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!`) and field selectors on
//!   `metadata.name` / `metadata.namespace`, for list and watch;
//! * watch (`?watch=true`): without `resourceVersion` (or `0`) synthetic ADDED events for
//!   what exists, then changes; from a `resourceVersion`, every change after it from the
//!   retained history, or one ERROR event `410 Expired` ("too old resource version") when
//!   that history was dropped ([`K8sDouble::compact`], `history`); an object leaving the
//!   selector arrives as DELETED, one entering it as ADDED; `timeoutSeconds` ends the stream;
//!   no BOOKMARK events are ever sent (the API allows that); a watcher too slow to keep up is
//!   disconnected;
//! * bearer tokens: none or an unknown one → 401 Unauthorized; each token has RBAC-like
//!   rules (API group, resource, verbs), and a request outside them is 403 Forbidden with
//!   the API server's message (`User "…" cannot list resource "leases" in API group
//!   "coordination.k8s.io" in the namespace "…"`);
//! * namespaces must exist (configured): a create elsewhere is 404 `namespaces "x" not found`.
//!
//! Use it in-process ([`K8sDouble::start`]) or as a process (`k8s-double --listen ADDR`).
//! [`K8sDouble::kubeconfig`] writes the kubeconfig kube's client reads.

mod handlers;
mod model;

use anyhow::Context;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use model::Store;
pub use model::{Change, Rule, TokenConfig};

/// How the double is set up.
#[derive(Clone, Debug)]
pub struct DoubleConfig {
    /// Bearer tokens and what each may do.
    pub tokens: Vec<TokenConfig>,
    /// Namespaces that exist.
    pub namespaces: Vec<String>,
    /// Changes kept for watches that resume from a `resourceVersion`.
    pub history: usize,
}

/// The token [`DoubleConfig::default`] gives full rights (as `system:serviceaccount:default:gnomon`).
pub const ADMIN_TOKEN: &str = "gnomon-double-admin-token";
/// The token [`DoubleConfig::default`] lets only read EndpointSlices (RBAC-denied on Leases).
pub const LIMITED_TOKEN: &str = "gnomon-double-limited-token";

impl Default for DoubleConfig {
    fn default() -> Self {
        Self {
            tokens: vec![
                TokenConfig::admin(ADMIN_TOKEN, "system:serviceaccount:default:gnomon"),
                TokenConfig {
                    token: LIMITED_TOKEN.to_string(),
                    user: "system:serviceaccount:default:limited".to_string(),
                    rules: vec![Rule::new(
                        "discovery.k8s.io",
                        "endpointslices",
                        &["get", "list", "watch"],
                    )],
                },
            ],
            namespaces: vec!["default".to_string()],
            history: 10_000,
        }
    }
}

pub(crate) struct Shared {
    pub(crate) cfg: DoubleConfig,
    pub(crate) store: Mutex<Store>,
    pub(crate) changes: broadcast::Sender<Arc<Change>>,
    /// Bumped to end every open watch (as when an API server restarts or a load balancer
    /// drops connections).
    pub(crate) epoch: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running double. Dropping it stops it.
pub struct K8sDouble {
    address: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl K8sDouble {
    /// Starts on a random 127.0.0.1 port with [`DoubleConfig::default`].
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1:0".parse()?, DoubleConfig::default()).await
    }

    /// Starts on `address`.
    pub async fn start_on(address: SocketAddr, cfg: DoubleConfig) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let address = listener.local_addr()?;
        let (changes, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(cfg.history)),
            cfg,
            changes,
            epoch: tokio::sync::watch::channel(0).0,
        });
        let app = handlers::router(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            address,
            shared,
            stop: Some(stop),
            server: Some(server),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Drops every retained change: a watch resuming from any earlier `resourceVersion` gets
    /// `410 Gone` (as after an etcd compaction).
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Ends every open watch (the clients re-watch from the last version they saw).
    pub fn end_watches(&self) {
        self.shared.epoch.send_modify(|epoch| *epoch += 1);
    }

    /// The current `resourceVersion`.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().version()
    }

    /// Stops serving (open watches end).
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }
}

impl Drop for K8sDouble {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A kubeconfig (YAML) for `server` with a bearer `token` and `namespace` as the context's.
pub fn kubeconfig(server: &str, token: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {server}\nusers:\n- name: gnomon\n  user:\n    token: {token}\ncontexts:\n- name: double\n  context:\n    cluster: double\n    user: gnomon\n    namespace: {namespace}\ncurrent-context: double\n"
    )
}

/// Writes [`kubeconfig`] to `path`.
pub fn write_kubeconfig(
    path: &std::path::Path,
    server: &str,
    token: &str,
    namespace: &str,
) -> anyhow::Result<()> {
    std::fs::write(path, kubeconfig(server, token, namespace))
        .with_context(|| format!("writing {}", path.display()))
}
