//! Connection settings: endpoints, timeouts, keep-alive, TLS and credentials.

use crate::error::{Error, Result};
use std::fmt;
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// How to reach etcd. Defaults: 5 s connect timeout, 5 s per-call timeout, HTTP/2 pings
/// every 10 s while a call or stream is open with a 5 s answer timeout, no TLS, no
/// authentication.
#[derive(Clone)]
pub struct ConnectOptions {
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
    pub(crate) keep_alive_interval: Duration,
    pub(crate) keep_alive_timeout: Duration,
    pub(crate) keep_alive_while_idle: bool,
    pub(crate) tls: Option<TlsOptions>,
    pub(crate) credentials: Option<Credentials>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            keep_alive_while_idle: false,
            tls: None,
            credentials: None,
        }
    }
}

/// Redacts the password.
impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .field("keep_alive_while_idle", &self.keep_alive_while_idle)
            .field("tls", &self.tls)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl ConnectOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long establishing a TCP (and TLS) connection to one endpoint may take.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one unary call (and opening a watch or keep-alive stream) may take, applied
    /// as a `tower::timeout` layer around the connection. A stalled etcd then fails the call
    /// with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) instead of hanging it.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// HTTP/2 keep-alive: a ping every `interval`, the connection is dropped when no answer
    /// comes within `timeout`. Detects dead peers on otherwise quiet watch streams. etcd
    /// rejects pings more frequent than its `--grpc-keepalive-min-time` (5 s by default).
    pub fn with_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive_interval = interval;
        self.keep_alive_timeout = timeout;
        self
    }

    /// Whether to ping while no call or stream is open (default false): etcd's gRPC server
    /// counts such pings as abuse unless it permits them, and closes the connection after a
    /// few (`too_many_pings`). Watch and keep-alive streams keep pings going anyway.
    pub fn with_keep_alive_while_idle(mut self, enabled: bool) -> Self {
        self.keep_alive_while_idle = enabled;
        self
    }

    /// Use TLS. Endpoints without a scheme become `https://`.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Log in as `user`: the client authenticates at connect and again whenever etcd rejects
    /// the token (it expires after `--auth-token-ttl` of idleness).
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some(Credentials {
            user: user.into(),
            password: password.into(),
        });
        self
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// A user name and password; the password never appears in `Debug` output or errors.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) user: String,
    pub(crate) password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// TLS settings. Without a CA certificate the system's trusted roots verify etcd's
/// certificate; with one, only that CA is trusted.
#[derive(Clone, Default)]
pub struct TlsOptions {
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    domain_name: Option<String>,
}

/// Shows which settings are present, not the key material.
impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("identity", &self.identity.as_ref().map(|_| "<pem>"))
            .field("domain_name", &self.domain_name)
            .finish()
    }
}

impl TlsOptions {
    /// TLS verified against the system's trusted roots.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust only the CA(s) in this PEM text.
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Present this client certificate (PEM) and private key (PEM) when etcd asks for one
    /// (`--client-cert-auth`).
    pub fn with_identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// Verify the server certificate for this name instead of the endpoint's host.
    pub fn with_domain_name(mut self, name: impl Into<String>) -> Self {
        self.domain_name = Some(name.into());
        self
    }

    fn client_config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca_pem {
            Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.domain_name {
            config = config.domain_name(name.clone());
        }
        config
    }
}

/// `host:port` → `http(s)://host:port`; an explicit scheme is kept and must agree with the
/// TLS setting.
pub(crate) fn endpoint_uri(endpoint: &str, tls: bool) -> Result<String> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.is_empty() {
        return Err(Error::config("an etcd endpoint is empty", None));
    }
    match endpoint.split_once("://") {
        None => Ok(format!(
            "{}://{endpoint}",
            if tls { "https" } else { "http" }
        )),
        Some(("https", _)) => Ok(endpoint.to_string()),
        Some(("http", _)) if !tls => Ok(endpoint.to_string()),
        Some(("http", _)) => Err(Error::config(
            format!("endpoint {endpoint} is plain http but TLS is configured; use https://"),
            None,
        )),
        Some((scheme, _)) => Err(Error::config(
            format!("endpoint {endpoint}: unsupported scheme {scheme:?} (use http:// or https://)"),
            None,
        )),
    }
}

/// A lazily connecting tonic endpoint for `uri` with the options' timeouts, keep-alive and
/// TLS. `https://` without TLS options verifies against the system roots.
pub(crate) fn tonic_endpoint(uri: &str, options: &ConnectOptions) -> Result<Endpoint> {
    let mut endpoint = Endpoint::from_shared(uri.to_string())
        .map_err(|e| Error::config(format!("invalid etcd endpoint {uri}"), Some(Box::new(e))))?
        .connect_timeout(options.connect_timeout)
        .http2_keep_alive_interval(options.keep_alive_interval)
        .keep_alive_timeout(options.keep_alive_timeout)
        .keep_alive_while_idle(options.keep_alive_while_idle)
        .tcp_nodelay(true);
    if uri.starts_with("https://") {
        let tls = options.tls.clone().unwrap_or_default();
        endpoint = endpoint.tls_config(tls.client_config()).map_err(|e| {
            Error::config(
                format!("TLS settings for {uri} (CA certificate, client certificate and key)"),
                Some(Box::new(e)),
            )
        })?;
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme() {
        assert_eq!(
            endpoint_uri("127.0.0.1:2379", false).ok().as_deref(),
            Some("http://127.0.0.1:2379")
        );
        assert_eq!(
            endpoint_uri(" etcd:2379 ", true).ok().as_deref(),
            Some("https://etcd:2379")
        );
        assert_eq!(
            endpoint_uri("https://etcd:2379/", false).ok().as_deref(),
            Some("https://etcd:2379")
        );
        assert!(endpoint_uri("http://etcd:2379", true).is_err());
        assert!(endpoint_uri("unix://x", false).is_err());
        assert!(endpoint_uri("  ", false).is_err());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let options = ConnectOptions::new()
            .with_user("gnomon", "s3cret-pass")
            .with_tls(TlsOptions::new().with_identity_pem("CERT", "PRIVATE KEY"));
        let text = format!("{options:?}");
        assert!(text.contains("gnomon"), "{text}");
        assert!(
            !text.contains("s3cret-pass") && !text.contains("PRIVATE KEY"),
            "{text}"
        );
    }

    #[test]
    fn bad_pem_is_a_configuration_error() {
        let options = ConnectOptions::new().with_tls(
            TlsOptions::new()
                .with_ca_pem("not a certificate")
                .with_identity_pem("no cert", "no key"),
        );
        match tonic_endpoint("https://127.0.0.1:2379", &options) {
            Err(e) => assert_eq!(e.kind(), crate::ErrorKind::Config, "{e}"),
            Ok(_) => panic!("invalid PEM accepted"),
        }
    }
}
