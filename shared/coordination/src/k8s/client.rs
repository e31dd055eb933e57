//! The calls the k8s backend makes to the Kubernetes API, through kube's client.
//!
//! Plain calls go through a tower stack like the Consul client's: gnomon's shared
//! [`RetryPolicy`] over a timeout per attempt (`request-timeout`). At most [`RETRIES`] more
//! attempts, only when another attempt may succeed **and** is safe ([`K8sRetry`]): a 429
//! (the API server did not process the request) for any call; a transport error, timeout or
//! 500/502/503/504 for reads only. Writes are never repeated blindly: every write carries a
//! precondition (a `resourceVersion`), and the callers re-read after an ambiguous failure to
//! learn whether it took effect. A refusal (401, 403) is never repeated.
//!
//! Watches are streams and are not in the stack: establishing one is bounded by the request
//! timeout, and each event by the watch's `timeoutSeconds` plus the request timeout, so a
//! connection that went silent is noticed.
//!
//! Errors: 401 → [`Credential::KubernetesToken`], 403 → [`Credential::KubernetesRbac`]
//! naming the verb, the resource and the namespace; 409 / 404 / 410 are returned as
//! [`Failure`]s the callers act on; 429 and 5xx are `Unavailable`; anything else is a
//! backend error carrying the API server's `Status` message.

use crate::{CoordinationError, Credential, LockerConfig, Result};
use futures::StreamExt;
use gnomon_common::retry::{Backoff, RetryClassify, RetryPolicy};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    Api, DeleteParams, ListParams, PostParams, Preconditions, WatchEvent, WatchParams,
};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// Repeats of one call after its first attempt, at most.
const RETRIES: u32 = 2;

/// How long the API server keeps one watch open before we open the next.
pub(crate) const WATCH_SECONDS: u32 = 55;

/// API groups and resources, for errors and RBAC hints.
pub(crate) const LEASES: &str = "leases.coordination.k8s.io";
pub(crate) const ENDPOINT_SLICES: &str = "endpointslices.discovery.k8s.io";

/// An outcome the callers handle themselves; anything else is a [`CoordinationError`].
#[derive(Debug)]
pub(crate) enum Failure {
    /// 409: the object changed since the `resourceVersion` sent, or already exists.
    Conflict,
    /// 404.
    NotFound,
    /// 410: the watch's `resourceVersion` is too old; list again.
    Gone,
    Store(CoordinationError),
}

impl From<CoordinationError> for Failure {
    fn from(error: CoordinationError) -> Self {
        Failure::Store(error)
    }
}

impl Failure {
    /// As an error, for callers that have nothing special to do with it.
    pub(crate) fn into_error(self, what: &str) -> CoordinationError {
        match self {
            Failure::Store(error) => error,
            Failure::Conflict => CoordinationError::backend(format!(
                "{what}: the object changed meanwhile (409 Conflict)"
            )),
            Failure::NotFound => CoordinationError::backend(format!("{what}: not found (404)")),
            Failure::Gone => {
                CoordinationError::backend(format!("{what}: resourceVersion too old (410 Gone)"))
            }
        }
    }
}

/// One plain call.
#[derive(Clone, Debug)]
enum Call {
    GetLease(String),
    ListLeases {
        labels: String,
        fields: Option<String>,
    },
    CreateLease(Box<Lease>),
    ReplaceLease(Box<Lease>),
    DeleteLease {
        name: String,
        resource_version: Option<String>,
    },
    ListSlices {
        labels: String,
    },
}

impl Call {
    fn idempotent(&self) -> bool {
        matches!(
            self,
            Call::GetLease(_) | Call::ListLeases { .. } | Call::ListSlices { .. }
        )
    }

    /// The RBAC verb and resource, for a 403.
    fn verb_resource(&self) -> (&'static str, &'static str) {
        match self {
            Call::GetLease(_) => ("get", LEASES),
            Call::ListLeases { .. } => ("list", LEASES),
            Call::CreateLease(_) => ("create", LEASES),
            Call::ReplaceLease(_) => ("update", LEASES),
            Call::DeleteLease { .. } => ("delete", LEASES),
            Call::ListSlices { .. } => ("list", ENDPOINT_SLICES),
        }
    }
}

enum Reply {
    Lease(Option<Lease>),
    Leases(Vec<Lease>, String),
    Slices(Vec<EndpointSlice>, String),
    Done,
}

/// kube's typed APIs as a tower service.
#[derive(Clone)]
struct Calls {
    leases: Api<Lease>,
    slices: Api<EndpointSlice>,
}

impl Service<Call> for Calls {
    type Response = Reply;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<Reply, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::result::Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let (leases, slices) = (self.leases.clone(), self.slices.clone());
        Box::pin(async move {
            let post = PostParams::default();
            Ok(match call {
                Call::GetLease(name) => Reply::Lease(leases.get_opt(&name).await?),
                Call::ListLeases { labels, fields } => {
                    let mut params = ListParams::default().labels(&labels);
                    if let Some(fields) = &fields {
                        params = params.fields(fields);
                    }
                    let list = leases.list(&params).await?;
                    Reply::Leases(
                        list.items,
                        list.metadata.resource_version.unwrap_or_default(),
                    )
                }
                Call::CreateLease(lease) => Reply::Lease(Some(leases.create(&post, &lease).await?)),
                Call::ReplaceLease(lease) => {
                    let name = lease.metadata.name.clone().unwrap_or_default();
                    Reply::Lease(Some(leases.replace(&name, &post, &lease).await?))
                }
                Call::DeleteLease {
                    name,
                    resource_version,
                } => {
                    let params = DeleteParams {
                        preconditions: resource_version.map(|rv| Preconditions {
                            resource_version: Some(rv),
                            uid: None,
                        }),
                        ..DeleteParams::default()
                    };
                    leases.delete(&name, &params).await?;
                    Reply::Done
                }
                Call::ListSlices { labels } => {
                    let list = slices.list(&ListParams::default().labels(&labels)).await?;
                    Reply::Slices(
                        list.items,
                        list.metadata.resource_version.unwrap_or_default(),
                    )
                }
            })
        })
    }
}

/// The API server's answer code, when the error is one.
fn api_code(error: &BoxError) -> Option<u16> {
    match error.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(response)) => Some(response.code),
        _ => None,
    }
}

/// Which failed calls are repeated (see the module docs).
#[derive(Clone)]
struct K8sRetry;

impl RetryClassify<Call, Reply, BoxError> for K8sRetry {
    fn should_retry(&self, call: &Call, result: &std::result::Result<Reply, BoxError>) -> bool {
        let Err(error) = result else { return false };
        match api_code(error) {
            Some(429) => true,
            Some(500 | 502 | 503 | 504) => call.idempotent(),
            Some(_) => false,
            // Transport errors and timeouts: the request may have been applied.
            None => call.idempotent(),
        }
    }
}

type CallService = BoxCloneSyncService<Call, Reply, BoxError>;

/// The Kubernetes API as the backend uses it.
pub(crate) struct K8sClient {
    service: CallService,
    leases: Api<Lease>,
    slices: Api<EndpointSlice>,
    namespace: String,
    timeout: Duration,
    debug: bool,
}

impl K8sClient {
    /// Reads the kubeconfig (`kubeconfig`, else `KUBECONFIG` / `~/.kube/config`, else the
    /// pod's ServiceAccount) and builds the client. Nothing is sent yet.
    pub(crate) async fn new(cfg: &LockerConfig) -> Result<Self> {
        gnomon_common::tls::ensure_crypto_provider();
        let mut config = match &cfg.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                    CoordinationError::config(format!(
                        "clustering.locker.kubeconfig: cannot read {path:?}"
                    ))
                    .caused_by(e)
                })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .map_err(|e| {
                        CoordinationError::config(format!(
                            "clustering.locker.kubeconfig: {path:?} is not usable"
                        ))
                        .caused_by(e)
                    })?
            }
            None => kube::Config::infer().await.map_err(|e| {
                CoordinationError::config(
                    "the k8s locker found no Kubernetes credentials: not in a pod (no \
                     ServiceAccount), no KUBECONFIG, no ~/.kube/config; set \
                     clustering.locker.kubeconfig",
                )
                .caused_by(e)
            })?,
        };
        config.connect_timeout = Some(cfg.request_timeout);
        config.write_timeout = Some(cfg.request_timeout);
        // Watches wait up to WATCH_SECONDS for an event; each read is bounded below.
        config.read_timeout =
            Some(Duration::from_secs(u64::from(WATCH_SECONDS)) + cfg.request_timeout);
        let namespace = cfg
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).map_err(|e| {
            CoordinationError::config("cannot build the Kubernetes client").caused_by(e)
        })?;
        let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
        let slices: Api<EndpointSlice> = Api::namespaced(client, &namespace);
        let service = BoxCloneSyncService::new(
            ServiceBuilder::new()
                .retry(RetryPolicy::new(
                    K8sRetry,
                    RETRIES,
                    Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
                ))
                .timeout(cfg.request_timeout)
                .service(Calls {
                    leases: leases.clone(),
                    slices: slices.clone(),
                }),
        );
        Ok(Self {
            service,
            leases,
            slices,
            namespace,
            timeout: cfg.request_timeout,
            debug: cfg.debug,
        })
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn send(&self, call: Call) -> std::result::Result<Reply, Failure> {
        let (verb, resource) = call.verb_resource();
        let target = match &call {
            Call::GetLease(name) | Call::DeleteLease { name, .. } => name.clone(),
            Call::CreateLease(lease) | Call::ReplaceLease(lease) => {
                lease.metadata.name.clone().unwrap_or_default()
            }
            Call::ListLeases { .. } | Call::ListSlices { .. } => String::new(),
        };
        if self.debug {
            tracing::debug!(verb, resource, name = %target, namespace = %self.namespace, "kubernetes call");
        }
        match self.service.clone().oneshot(call).await {
            Ok(reply) => Ok(reply),
            Err(error) => Err(self.failure(verb, resource, &target, error)),
        }
    }

    /// Maps a failed call to a [`Failure`] naming it.
    fn failure(&self, verb: &str, resource: &str, name: &str, error: BoxError) -> Failure {
        let what = if name.is_empty() {
            format!(
                "kubernetes {verb} {resource} in namespace {:?}",
                self.namespace
            )
        } else {
            format!(
                "kubernetes {verb} {resource} {name:?} in namespace {:?}",
                self.namespace
            )
        };
        if error.is::<tower::timeout::error::Elapsed>() {
            return Failure::Store(
                CoordinationError::unavailable(format!(
                    "{what}: no answer within {:?}",
                    self.timeout
                ))
                .caused_by(error),
            );
        }
        let response = match error.downcast_ref::<kube::Error>() {
            Some(kube::Error::Api(response)) => response.clone(),
            _ => {
                let reason = format!(
                    "{what}: {}",
                    gnomon_common::error_text::error_chain(error.as_ref())
                );
                return Failure::Store(CoordinationError::unavailable(reason).caused_by(error));
            }
        };
        let message = format!(
            "{what}: HTTP {} {}: {}",
            response.code, response.reason, response.message
        );
        match response.code {
            409 => Failure::Conflict,
            404 => Failure::NotFound,
            410 => Failure::Gone,
            401 => Failure::Store(
                CoordinationError::refused(Credential::KubernetesToken, message).caused_by(error),
            ),
            403 => Failure::Store(
                CoordinationError::refused(
                    Credential::KubernetesRbac {
                        namespace: self.namespace.clone(),
                        verb: verb.to_string(),
                        resource: resource.to_string(),
                    },
                    message,
                )
                .caused_by(error),
            ),
            429 | 500..=599 => {
                Failure::Store(CoordinationError::unavailable(message).caused_by(error))
            }
            _ => Failure::Store(CoordinationError::backend(message).caused_by(error)),
        }
    }

    pub(crate) async fn get_lease(
        &self,
        name: &str,
    ) -> std::result::Result<Option<Lease>, Failure> {
        match self.send(Call::GetLease(name.to_string())).await? {
            Reply::Lease(lease) => Ok(lease),
            _ => Ok(None),
        }
    }

    /// Leases carrying `labels` (and `fields`), and the list's `resourceVersion`.
    pub(crate) async fn list_leases(
        &self,
        labels: &str,
        fields: Option<String>,
    ) -> std::result::Result<(Vec<Lease>, String), Failure> {
        let call = Call::ListLeases {
            labels: labels.to_string(),
            fields,
        };
        match self.send(call).await? {
            Reply::Leases(items, version) => Ok((items, version)),
            _ => Ok((Vec::new(), String::new())),
        }
    }

    pub(crate) async fn create_lease(&self, lease: Lease) -> std::result::Result<Lease, Failure> {
        match self.send(Call::CreateLease(Box::new(lease))).await? {
            Reply::Lease(Some(lease)) => Ok(lease),
            _ => Err(Failure::NotFound),
        }
    }

    /// PUT: fails with [`Failure::Conflict`] when `lease`'s `resourceVersion` is stale.
    pub(crate) async fn replace_lease(&self, lease: Lease) -> std::result::Result<Lease, Failure> {
        match self.send(Call::ReplaceLease(Box::new(lease))).await? {
            Reply::Lease(Some(lease)) => Ok(lease),
            _ => Err(Failure::NotFound),
        }
    }

    /// DELETE, only at `resource_version` when given.
    pub(crate) async fn delete_lease(
        &self,
        name: &str,
        resource_version: Option<String>,
    ) -> std::result::Result<(), Failure> {
        self.send(Call::DeleteLease {
            name: name.to_string(),
            resource_version,
        })
        .await
        .map(|_| ())
    }

    pub(crate) async fn list_slices(
        &self,
        labels: &str,
    ) -> std::result::Result<(Vec<EndpointSlice>, String), Failure> {
        match self
            .send(Call::ListSlices {
                labels: labels.to_string(),
            })
            .await?
        {
            Reply::Slices(items, version) => Ok((items, version)),
            _ => Ok((Vec::new(), String::new())),
        }
    }

    /// Opens a watch of Leases (`labels`, `fields`) after `version`.
    pub(crate) async fn watch_leases(
        &self,
        labels: &str,
        fields: Option<String>,
        version: &str,
        seconds: u32,
    ) -> std::result::Result<Events<Lease>, Failure> {
        self.watch(&self.leases, LEASES, labels, fields, version, seconds)
            .await
    }

    /// Opens a watch of EndpointSlices (`labels`) after `version`.
    pub(crate) async fn watch_slices(
        &self,
        labels: &str,
        version: &str,
    ) -> std::result::Result<Events<EndpointSlice>, Failure> {
        self.watch(
            &self.slices,
            ENDPOINT_SLICES,
            labels,
            None,
            version,
            WATCH_SECONDS,
        )
        .await
    }

    async fn watch<K>(
        &self,
        api: &Api<K>,
        resource: &str,
        labels: &str,
        fields: Option<String>,
        version: &str,
        seconds: u32,
    ) -> std::result::Result<Events<K>, Failure>
    where
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        let mut params = WatchParams::default()
            .labels(labels)
            .timeout(seconds.max(1))
            .disable_bookmarks();
        if let Some(fields) = &fields {
            params = params.fields(fields);
        }
        if self.debug {
            tracing::debug!(resource, labels, version, namespace = %self.namespace, "kubernetes watch");
        }
        let opened = tokio::time::timeout(self.timeout, api.watch(&params, version)).await;
        let stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(self.failure("watch", resource, "", Box::new(error))),
            Err(elapsed) => {
                return Err(self.failure("watch", resource, "", Box::new(elapsed)));
            }
        };
        Ok(Events {
            stream: stream.boxed(),
            idle: Duration::from_secs(u64::from(seconds.max(1))) + self.timeout,
        })
    }
}

/// What one watch delivers.
pub(crate) enum Event<K> {
    Upsert(K),
    Remove(K),
    /// A bookmark: only the `resourceVersion` moved.
    Bookmark(String),
}

/// The events of one watch; ends when the API server closes it.
pub(crate) struct Events<K> {
    stream: futures::stream::BoxStream<'static, kube::Result<WatchEvent<K>>>,
    idle: Duration,
}

impl<K> Events<K> {
    /// The next event; `None` when the watch ended (time up, or closed).
    pub(crate) async fn next(&mut self) -> Option<std::result::Result<Event<K>, Failure>> {
        let event = match tokio::time::timeout(self.idle, self.stream.next()).await {
            Err(_) => {
                return Some(Err(Failure::Store(CoordinationError::unavailable(
                    format!("kubernetes watch: nothing received for {:?}", self.idle),
                ))))
            }
            Ok(None) => return None,
            Ok(Some(event)) => event,
        };
        Some(match event {
            Ok(WatchEvent::Added(object)) | Ok(WatchEvent::Modified(object)) => {
                Ok(Event::Upsert(object))
            }
            Ok(WatchEvent::Deleted(object)) => Ok(Event::Remove(object)),
            Ok(WatchEvent::Bookmark(bookmark)) => {
                Ok(Event::Bookmark(bookmark.metadata.resource_version))
            }
            Ok(WatchEvent::Error(response)) if response.code == 410 => Err(Failure::Gone),
            Ok(WatchEvent::Error(response)) => {
                Err(Failure::Store(CoordinationError::backend(format!(
                    "kubernetes watch: HTTP {} {}: {}",
                    response.code, response.reason, response.message
                ))))
            }
            Err(error) => Err(Failure::Store(
                CoordinationError::unavailable(format!("kubernetes watch: {error}"))
                    .caused_by(error),
            )),
        })
    }
}
