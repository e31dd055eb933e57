//! The etcd connection of one backend instance: the gnomon-etcd client built from
//! `clustering.locker`, the backend's shutdown signal, and the mapping of the client's errors
//! to [`CoordinationError`]s that say what to check:
//!
//! | gnomon-etcd [`ErrorKind`] | [`CoordinationError`] |
//! |---|---|
//! | `AuthenticationFailed` | `CredentialRefused` ([`Credential::EtcdPassword`]) |
//! | `PermissionDenied` | `CredentialRefused` ([`Credential::EtcdRole`]) |
//! | `LeaseNotFound` | `SessionLost` |
//! | `Unavailable`, `Timeout`, `TooManyRequests`, `InvalidAuthToken` | `Unavailable` |
//! | `Tls` | `Unavailable`, with a hint at the TLS settings |
//! | `Config` | `Config` |
//! | anything else | `Backend` |
//!
//! The gnomon-etcd error is kept as the source.

use crate::{keys, CoordinationError, Credential, LockInfo, LockerConfig, Result, TlsConfig};
use gnomon_etcd::{Client, ConnectOptions, ErrorKind, GetOptions, TlsOptions, TxnOpResponse};
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Added to TLS failures, and to connection failures when TLS is on: an untrusted server
/// certificate is reported by rustls, but a refused (or missing) client certificate only
/// shows as a closed connection.
const TLS_HINT: &str = "(TLS is on: check clustering.locker tls.ca-file, the CA that signed \
etcd's certificate, and tls.cert-file / tls.key-file when etcd requires client certificates)";

/// Added to connection failures before etcd ever answered, without TLS.
const ADDRESS_HINT: &str =
    "(no answer from etcd: check the address, and clustering.locker tls if etcd serves TLS)";

/// Key-values of a prefix read: key → (value, lease), and the revision read at.
pub(super) type Listing = (BTreeMap<String, (String, i64)>, i64);

/// How to read a failure: until etcd has answered once, a connection failure most likely
/// means a configuration problem (address, TLS), afterwards an outage.
struct Link {
    tls: bool,
    /// The configured user, named when etcd denies it access.
    user: Option<String>,
    answered: AtomicBool,
}

/// The client and what its errors mean; cheap to clone.
#[derive(Clone)]
pub(super) struct Etcd {
    client: Client,
    link: Arc<Link>,
    /// Cancelled by [`Coordination::shutdown`](crate::Coordination::shutdown): every
    /// background task of the backend ends.
    pub(super) shutdown: CancellationToken,
    /// Bounds the calls in flight (see [`CALLS_IN_FLIGHT`]).
    in_flight: Arc<Semaphore>,
}

/// Unary calls one backend instance has in flight at most. A member given thousands of
/// targets at once takes thousands of locks; sent all at once they outrun etcd's apply
/// loop ("etcdserver: too many requests") and starve the session's own renewals, so
/// leadership and every lock are lost. Streams (watches, lease keep-alive) are opened
/// through the limit but do not hold it.
const CALLS_IN_FLIGHT: usize = 64;

impl Etcd {
    /// Prepares the connections; with a user and password, logs in (and fails here on a wrong
    /// password). Without credentials nothing is sent yet: the first call connects.
    pub(super) async fn connect(cfg: &LockerConfig) -> Result<Self> {
        // Every call (and the opening of every stream) is bounded by request-timeout. HTTP/2
        // keep-alive stays at the client's defaults (a ping every 10 s while a call or stream
        // is open): etcd closes connections that ping more often than every 5 s.
        let mut options = ConnectOptions::new()
            .with_connect_timeout(cfg.request_timeout)
            .with_timeout(cfg.request_timeout);
        if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
            // The client logs in now and again whenever etcd rejects its (expired) token.
            options = options.with_user(user.clone(), password.expose());
        }
        if let Some(tls) = &cfg.tls {
            options = options.with_tls(tls_options(tls)?);
        }
        let link = Arc::new(Link {
            tls: cfg.tls.is_some(),
            user: cfg.username.clone(),
            answered: AtomicBool::new(false),
        });
        let client = Client::connect(cfg.etcd_endpoints(), options)
            .await
            .map_err(|e| map_error(e, &link))?;
        Ok(Self {
            client,
            link,
            shutdown: CancellationToken::new(),
            in_flight: Arc::new(Semaphore::new(CALLS_IN_FLIGHT)),
        })
    }

    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    /// Runs one client call (bounded by the client's request timeout) and maps its error.
    pub(super) async fn call<T>(
        &self,
        call: impl Future<Output = gnomon_etcd::Result<T>>,
    ) -> Result<T> {
        // Closed only if the Etcd is gone; then the call goes ahead unbounded.
        let _permit = self.in_flight.acquire().await;
        match call.await {
            Ok(value) => {
                self.link.answered.store(true, Ordering::Relaxed);
                Ok(value)
            }
            Err(e) => Err(self.error(e)),
        }
    }

    /// Maps a client error (for calls not made through [`Etcd::call`], such as streams).
    pub(super) fn error(&self, error: gnomon_etcd::Error) -> CoordinationError {
        map_error(error, &self.link)
    }

    /// Every key under `prefix` except gnomon's internal ones.
    pub(super) async fn range(&self, prefix: &str) -> Result<Listing> {
        let answer = self
            .call(
                self.client
                    .get(prefix, Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let entries = answer
            .kvs
            .iter()
            .map(|kv| (text(&kv.key), (text(&kv.value), kv.lease)))
            .filter(|(key, _)| !keys::is_internal(key))
            .collect();
        Ok((entries, answer.revision))
    }
}

impl Etcd {
    /// Held locks under `prefix` (keys with a lease) with their create revision, the
    /// fencing token their holder was granted.
    pub(super) async fn range_locks(&self, prefix: &str) -> Result<BTreeMap<String, LockInfo>> {
        let answer = self
            .call(
                self.client
                    .get(prefix, Some(GetOptions::new().with_prefix())),
            )
            .await?;
        Ok(answer
            .kvs
            .iter()
            .filter(|kv| kv.lease != 0)
            .map(|kv| (text(&kv.key), kv))
            .filter(|(key, _)| !keys::is_internal(key))
            .map(|(key, kv)| {
                (
                    key,
                    LockInfo {
                        holder: text(&kv.value),
                        fencing_token: u64::try_from(kv.create_revision).unwrap_or(0),
                    },
                )
            })
            .collect())
    }
}

/// Keys and values as text (invalid UTF-8 replaced).
pub(super) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn tls_options(tls: &TlsConfig) -> Result<TlsOptions> {
    if tls.skip_verify {
        return Err(CoordinationError::config(
            "tls.skip-verify is not supported by the etcd backend; set tls.ca-file instead",
        ));
    }
    let read = |field: &str, path: &str| {
        std::fs::read(path).map_err(|e| {
            CoordinationError::config(format!("cannot read locker tls.{field} {path:?}: {e}"))
                .caused_by(e)
        })
    };
    // Like gnmic: without ca-file the system's trusted CAs verify etcd's certificate.
    let mut options = TlsOptions::new();
    if let Some(ca) = &tls.ca_file {
        options = options.with_ca_pem(read("ca-file", ca)?);
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            options = options.with_identity_pem(read("cert-file", cert)?, read("key-file", key)?);
        }
        (None, None) => {}
        _ => {
            return Err(CoordinationError::config(
                "locker tls.cert-file and tls.key-file must be set together",
            ))
        }
    }
    Ok(options)
}

/// Maps a client error (see the module docs); connection failures before etcd ever answered
/// get a configuration hint ([`TLS_HINT`] when TLS is on).
fn map_error(error: gnomon_etcd::Error, link: &Link) -> CoordinationError {
    if error.reached_etcd() {
        link.answered.store(true, Ordering::Relaxed);
    }
    let unproven = !link.answered.load(Ordering::Relaxed) && !error.reached_etcd();
    let hint = match error.kind() {
        ErrorKind::Tls => Some(TLS_HINT),
        ErrorKind::Unavailable if unproven && link.tls => Some(TLS_HINT),
        ErrorKind::Unavailable if unproven => Some(ADDRESS_HINT),
        _ => None,
    };
    let reason = match hint {
        Some(hint) => format!("{error} {hint}"),
        None => error.to_string(),
    };
    let mapped = match error.kind() {
        ErrorKind::AuthenticationFailed => {
            CoordinationError::refused(Credential::EtcdPassword, reason)
        }
        ErrorKind::PermissionDenied => CoordinationError::refused(
            Credential::EtcdRole {
                user: link.user.clone(),
            },
            reason,
        ),
        ErrorKind::LeaseNotFound => CoordinationError::session_lost(reason),
        ErrorKind::Config => CoordinationError::config(reason),
        ErrorKind::Tls => CoordinationError::unavailable(reason),
        _ if error.is_transient() => CoordinationError::unavailable(reason),
        _ => CoordinationError::backend(reason),
    };
    mapped.caused_by(error)
}

/// The keys a txn's failure branch of gets found (keys-only or not): those that exist.
pub(super) fn found_keys(responses: Vec<TxnOpResponse>) -> HashSet<Vec<u8>> {
    responses
        .into_iter()
        .filter_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs.into_iter().next().map(|kv| kv.key),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_fail_clearly() {
        let skip = TlsConfig {
            skip_verify: true,
            ..Default::default()
        };
        let err = tls_options(&skip).unwrap_err().to_string();
        assert!(err.contains("skip-verify"), "{err}");
        let missing = TlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let err = tls_options(&missing).unwrap_err().to_string();
        assert!(
            err.contains("tls.ca-file") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
        let half = TlsConfig {
            cert_file: Some("/x.pem".into()),
            ..Default::default()
        };
        assert!(tls_options(&half)
            .unwrap_err()
            .to_string()
            .contains("together"));
    }
}
