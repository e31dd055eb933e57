//! The client: one lazily connected channel per endpoint with a `tower::timeout` layer,
//! failover between endpoints, and the auth token (with transparent re-authentication).

use crate::error::{Error, ErrorKind, Result};
use crate::options::{endpoint_uri, tonic_endpoint, ConnectOptions, Credentials};
use crate::proto::etcdserverpb::{auth_client::AuthClient, AuthenticateRequest};
use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tower::timeout::Timeout;

/// The service every generated gRPC client is built on: a channel whose calls time out.
pub(crate) type Service = Timeout<Channel>;

/// The auth token as sent in the `token` metadata.
pub(crate) type Token = AsciiMetadataValue;

/// One endpoint: its URI (for error messages) and its channel.
#[derive(Clone)]
pub(crate) struct EndpointHandle {
    pub(crate) uri: Arc<str>,
    pub(crate) service: Service,
    tls: bool,
    /// Whether etcd answered a call on this endpoint yet (see
    /// [`Error::closed_before_first_tls_answer`]).
    answered: Arc<AtomicBool>,
}

struct Inner {
    endpoints: Vec<EndpointHandle>,
    /// Index of the endpoint calls start with: the last one that answered.
    current: AtomicUsize,
    timeout: Duration,
    credentials: Option<Credentials>,
    token: RwLock<Option<Token>>,
    /// Serialises re-authentication, so calls failing together log in once.
    auth_lock: tokio::sync::Mutex<()>,
    authentications: AtomicU64,
}

/// An etcd v3 client. Cheap to clone; clones share connections and the auth token.
///
/// Connections are opened lazily by the first call; each call runs on the endpoint that last
/// answered and fails over to the next endpoint when the request could not be delivered
/// (connection refused, TLS failure). Every unary call is bounded by the configured timeout.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let endpoints: Vec<&str> = self.inner.endpoints.iter().map(|e| &*e.uri).collect();
        f.debug_struct("Client")
            .field("endpoints", &endpoints)
            .field("timeout", &self.inner.timeout)
            .field("credentials", &self.inner.credentials)
            .finish_non_exhaustive()
    }
}

/// What a call is for error messages: a name and, for key operations, the key.
#[derive(Clone, Copy)]
pub(crate) struct Op<'a> {
    pub(crate) name: &'static str,
    pub(crate) key: Option<&'a [u8]>,
}

impl Op<'_> {
    pub(crate) fn new(name: &'static str) -> Self {
        Op { name, key: None }
    }

    pub(crate) fn key<'a>(name: &'static str, key: &'a [u8]) -> Op<'a> {
        Op {
            name,
            key: Some(key),
        }
    }

    pub(crate) fn describe(&self) -> Cow<'static, str> {
        match self.key {
            Some(key) => Cow::Owned(format!("{} {:?}", self.name, String::from_utf8_lossy(key))),
            None => Cow::Borrowed(self.name),
        }
    }
}

/// Whether a call re-authenticates when etcd denies it. Watches need this: etcd 3.4 answers
/// a watch made with an expired token with "permission denied", not "invalid auth token".
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeniedMeans {
    Denied,
    MaybeStaleToken,
}

impl Client {
    /// Prepares connections to `endpoints` (`host:port` or `http(s)://host:port`) and, when
    /// credentials are set, logs in (which fails with
    /// [`ErrorKind::AuthenticationFailed`] on a wrong password). Without credentials nothing
    /// is sent yet: the first call connects.
    pub async fn connect<E, S>(endpoints: S, options: ConnectOptions) -> Result<Self>
    where
        E: AsRef<str>,
        S: IntoIterator<Item = E>,
    {
        let tls = options.tls.is_some();
        let mut handles = Vec::new();
        for endpoint in endpoints {
            let uri = endpoint_uri(endpoint.as_ref(), tls)?;
            let channel = tonic_endpoint(&uri, &options)?.connect_lazy();
            handles.push(EndpointHandle {
                tls: uri.starts_with("https://"),
                uri: uri.into(),
                service: Timeout::new(channel, options.timeout),
                answered: Arc::new(AtomicBool::new(false)),
            });
        }
        if handles.is_empty() {
            return Err(Error::config("no etcd endpoint given", None));
        }
        let client = Client {
            inner: Arc::new(Inner {
                endpoints: handles,
                current: AtomicUsize::new(0),
                timeout: options.timeout,
                credentials: options.credentials,
                token: RwLock::new(None),
                auth_lock: tokio::sync::Mutex::new(()),
                authentications: AtomicU64::new(0),
            }),
        };
        if client.inner.credentials.is_some() {
            client.refresh_token(None).await?;
        }
        Ok(client)
    }

    /// The endpoints as URIs, in the order given.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner
            .endpoints
            .iter()
            .map(|e| e.uri.to_string())
            .collect()
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// How many times this client (and its clones) logged in: once at connect, then once per
    /// token etcd rejected. For diagnostics and tests.
    pub fn authentications(&self) -> u64 {
        self.inner.authentications.load(Ordering::Relaxed)
    }

    fn token(&self) -> Option<Token> {
        self.inner
            .token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_token(&self, token: Option<Token>) {
        *self
            .inner
            .token
            .write()
            .unwrap_or_else(PoisonError::into_inner) = token;
    }

    /// Logs in again unless another call already replaced `stale`.
    async fn refresh_token(&self, stale: Option<Token>) -> Result<()> {
        let Some(credentials) = &self.inner.credentials else {
            return Ok(());
        };
        let _serialised = self.inner.auth_lock.lock().await;
        if stale.is_some() && self.token() != stale {
            return Ok(());
        }
        let request = AuthenticateRequest {
            name: credentials.user.clone(),
            password: credentials.password.clone(),
        };
        let op = Op::new("authenticate");
        let answer = self
            .run_on_endpoints(op, None, |endpoint, _| {
                let request = request.clone();
                async move {
                    AuthClient::new(endpoint.service)
                        .authenticate(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await;
        let token = match answer {
            Ok(answer) => Some(AsciiMetadataValue::try_from(answer.token.as_str()).map_err(
                |e| {
                    Error::local(
                        ErrorKind::Etcd,
                        format!("authenticate as {:?}", credentials.user),
                        &self.inner.endpoints[0].uri,
                        "etcd sent a token that is not valid metadata",
                        Some(Box::new(e)),
                    )
                },
            )?),
            // Auth is off: calls go without a token (and log in once etcd asks for one).
            Err(e)
                if e.etcd_message()
                    .is_some_and(|m| m.contains("authentication is not enabled")) =>
            {
                None
            }
            Err(e) => return Err(e.renamed(format!("authenticate as {:?}", credentials.user))),
        };
        self.inner.authentications.fetch_add(1, Ordering::Relaxed);
        self.set_token(token);
        Ok(())
    }

    /// Runs one unary call with failover, the token, and one re-authentication when etcd
    /// rejects the token.
    pub(crate) async fn unary<Req, Resp, F, Fut>(
        &self,
        op: Op<'_>,
        request: Req,
        call: F,
    ) -> Result<Resp>
    where
        Req: Clone,
        F: Fn(Service, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.call(op, DeniedMeans::Denied, |endpoint, token| {
            let request = with_token(request.clone(), token);
            let answer = call(endpoint.service, request);
            async move { answer.await.map(tonic::Response::into_inner) }
        })
        .await
    }

    /// Runs `attempt` (one try on one endpoint with the current token) with failover and one
    /// re-authentication when etcd rejects the token.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        op: Op<'_>,
        denied: DeniedMeans,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut(EndpointHandle, Option<Token>) -> Fut,
        Fut: Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let mut reauthenticated = false;
        loop {
            let token = self.token();
            let result = self.run_on_endpoints(op, token.clone(), &mut attempt).await;
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let stale_token = error.kind() == ErrorKind::InvalidAuthToken
                || error.is_missing_token()
                || (denied == DeniedMeans::MaybeStaleToken
                    && error.kind() == ErrorKind::PermissionDenied);
            if reauthenticated || !stale_token || self.inner.credentials.is_none() {
                return Err(error);
            }
            reauthenticated = true;
            tracing::debug!(operation = %op.describe(), error = %error, "etcd rejected the auth token; logging in again");
            self.refresh_token(token).await?;
        }
    }

    /// Tries the endpoints in turn, from the one that last answered, while the request could
    /// not be delivered.
    async fn run_on_endpoints<T, F, Fut>(
        &self,
        op: Op<'_>,
        token: Option<Token>,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut(EndpointHandle, Option<Token>) -> Fut,
        Fut: Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let endpoints = &self.inner.endpoints;
        let start = self.inner.current.load(Ordering::Relaxed) % endpoints.len();
        let mut tried = Vec::new();
        for step in 0..endpoints.len() {
            let index = (start + step) % endpoints.len();
            let endpoint = &endpoints[index];
            tried.push(&*endpoint.uri);
            match attempt(endpoint.clone(), token.clone()).await {
                Ok(value) => {
                    self.inner.current.store(index, Ordering::Relaxed);
                    endpoint.answered.store(true, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(status) => {
                    let mut error = Error::from_status(
                        op.describe(),
                        &endpoint.uri,
                        status,
                        self.inner.timeout,
                    );
                    if error.reached_etcd() {
                        endpoint.answered.store(true, Ordering::Relaxed);
                    } else if endpoint.tls && !endpoint.answered.load(Ordering::Relaxed) {
                        error = error.closed_before_first_tls_answer();
                    }
                    let last = step + 1 == endpoints.len();
                    if error.try_next_endpoint() && !last {
                        tracing::debug!(operation = %op.describe(), error = %error, "trying the next etcd endpoint");
                        continue;
                    }
                    if error.is_transient() && !error.reached_etcd() {
                        // Start the next call elsewhere: this member is unreachable or stalled.
                        self.inner
                            .current
                            .store((index + 1) % endpoints.len(), Ordering::Relaxed);
                    }
                    return Err(error.with_endpoints(&tried));
                }
            }
        }
        Err(Error::config("no etcd endpoint given", None))
    }
}

/// `message` as a request carrying the auth token, if any.
pub(crate) fn with_token<T>(message: T, token: Option<Token>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("token", token);
    }
    request
}
