//! gnmic's `service-registration` of the Prometheus output and of the gNMI server, through
//! the coordination layer (Consul services, or the same layout in etcd / memory).
//!
//! With `use-lock`, the exporter first takes the service's lock
//! (`gnmic/<cluster>/prometheus-output`, `gnmic/<cluster>/gnmi-server`) and is registered
//! only while it holds it: when the lock is lost (session expired, process gone) the
//! registration is dropped and the loop goes back to waiting for the lock, so exactly one
//! exporter of the cluster is discoverable and another takes over when it dies.

use gnomon_common::log::Throttle;
use gnomon_common::retry::Backoff;
use gnomon_config::prometheus_output::{split_host_port, ServiceRegistrationConfig};
use gnomon_coordination::{Coordination, CoordinationError, ServiceHandle, ServiceRegistration};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Pause after a failed store call before retrying (gnmic: 1 s on errors).
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// One service's registration, ready to run.
pub struct Registrar {
    /// What is registered, for logs ("Prometheus output", "gNMI server").
    pub what: &'static str,
    pub coordination: Arc<dyn Coordination>,
    pub service: ServiceRegistration,
    pub use_lock: bool,
    pub lock_key: String,
    /// True while this exporter is registered.
    pub registered: Arc<AtomicBool>,
}

/// The host this machine is known by, for announcing a wildcard listener.
fn local_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The address and port to announce: `service-address` (its port falling back to the
/// listener's), else the listener's; a wildcard host becomes the host name.
pub fn announced_address(
    config: &ServiceRegistrationConfig,
    listen: &str,
    bound: SocketAddr,
) -> (String, u16) {
    let (listen_host, _) = split_host_port(listen);
    let (host, port) = if config.service_address.is_empty() {
        (listen_host.to_string(), bound.port())
    } else {
        let (host, port) = split_host_port(&config.service_address);
        (
            host.to_string(),
            port.and_then(|p| p.parse().ok()).unwrap_or(bound.port()),
        )
    };
    let host = match host.as_str() {
        "" | "0.0.0.0" | "::" => local_host_name(),
        _ => host,
    };
    (host, port)
}

/// Builds the registration gnmic would make for the service `name` (see
/// `ServiceRegistrationConfig::effective_name` and `gnmi_server_name`).
pub fn service_registration(
    config: &ServiceRegistrationConfig,
    name: String,
    instance_name: &str,
    cluster_name: &str,
    address: (String, u16),
) -> ServiceRegistration {
    let id = if instance_name.is_empty() {
        format!("{name}-{}", uuid::Uuid::new_v4())
    } else {
        format!("{name}-{instance_name}")
    };
    let mut tags = config.tags.clone();
    tags.push(format!("gnmic-instance={instance_name}"));
    tags.push(format!("gnmic-cluster={cluster_name}"));
    ServiceRegistration {
        name,
        id,
        address: address.0,
        port: address.1,
        tags,
        ttl: config.effective_check_interval(),
    }
}

impl Registrar {
    /// Registers (retrying on errors) until `stop`; returns the handle or None when stopped.
    pub(crate) async fn register(&self, stop: &CancellationToken) -> Option<ServiceHandle> {
        let mut retry = ErrorRetry::new();
        loop {
            match self
                .coordination
                .register_service(self.service.clone())
                .await
            {
                Ok(handle) => {
                    tracing::info!(service = %self.service.name, id = %self.service.id, "{} registered", self.what);
                    self.registered.store(true, Ordering::SeqCst);
                    return Some(handle);
                }
                Err(e) => {
                    let delay = retry.failed(&e, "service registration failed");
                    tokio::select! {
                        _ = stop.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    pub(crate) async fn deregister(&self, handle: ServiceHandle) {
        self.registered.store(false, Ordering::SeqCst);
        match tokio::time::timeout(Duration::from_secs(5), handle.deregister()).await {
            Ok(Ok(())) => tracing::info!(id = %self.service.id, "{} deregistered", self.what),
            Ok(Err(e)) => {
                tracing::warn!(id = %self.service.id, error = %e, "deregistration failed")
            }
            Err(_) => tracing::warn!(id = %self.service.id, "deregistration timed out"),
        }
    }

    /// Runs until `shutdown`, then deregisters (and releases the lock).
    pub async fn run(self, shutdown: CancellationToken) {
        let span = tracing::info_span!("service_registration", what = self.what, service = %self.service.name, id = %self.service.id, use_lock = self.use_lock);
        async move {
            if !self.use_lock {
                if let Some(handle) = self.register(&shutdown).await {
                    shutdown.cancelled().await;
                    self.deregister(handle).await;
                }
                return;
            }
            let mut retry = ErrorRetry::new();
            loop {
                let guard = match self.coordination.acquire_blocking(&self.lock_key, &self.service.id, &shutdown).await {
                    Ok(Some(guard)) => guard,
                    Ok(None) => return,
                    Err(e) => {
                        let delay = retry.failed(&e, "acquiring the registration lock failed");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        continue;
                    }
                };
                retry = ErrorRetry::new();
                let lost = guard.lost_token();
                let stop = CancellationToken::new();
                let registered = tokio::select! {
                    _ = shutdown.cancelled() => None,
                    _ = lost.cancelled() => None,
                    handle = self.register(&stop) => handle,
                };
                if let Some(handle) = registered {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = lost.cancelled() => tracing::warn!(key = %self.lock_key, "{} lock lost; deregistering", self.what),
                    }
                    self.deregister(handle).await;
                }
                if shutdown.is_cancelled() {
                    if let Err(e) = guard.release().await {
                        tracing::warn!(key = %self.lock_key, error = %e, "lock release failed");
                    }
                    return;
                }
                drop(guard);
            }
        }
        .instrument(span)
        .await
    }
}

/// Delays and logging for a store call that keeps failing: backoff from
/// [`RETRY_AFTER_ERROR`] (up to 30 s when a credential is refused, which will not fix
/// itself soon; else up to 5 s), one log line per 30 s.
pub(crate) struct ErrorRetry {
    backoff: Backoff,
    log: Throttle,
}

impl ErrorRetry {
    pub(crate) fn new() -> Self {
        Self {
            backoff: Backoff::new(RETRY_AFTER_ERROR, Duration::from_secs(30)),
            log: Throttle::new(Duration::from_secs(30)),
        }
    }

    /// Logs `error` (throttled) and returns how long to wait before the next attempt.
    pub(crate) fn failed(&mut self, error: &CoordinationError, what: &str) -> Duration {
        let delay = if error.credential().is_some() {
            self.backoff.next_delay()
        } else {
            self.backoff.next_delay().min(Duration::from_secs(5))
        };
        if let Some(suppressed) = self.log.allow() {
            tracing::warn!(error = %gnomon_common::error_text::error_chain(error), retry_in = ?delay, suppressed, "{what}");
        }
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_follows_gnmic_naming() {
        let config = ServiceRegistrationConfig {
            tags: vec!["dc=a".into()],
            ..Default::default()
        };
        let bound: SocketAddr = "127.0.0.1:9804".parse().unwrap();
        let reg = service_registration(
            &config,
            config.effective_name("prom"),
            "gnomon-1",
            "lab",
            announced_address(&config, "127.0.0.1:9804", bound),
        );
        assert_eq!(reg.name, "prometheus-prom");
        assert_eq!(reg.id, "prometheus-prom-gnomon-1");
        assert_eq!(
            reg.tags,
            ["dc=a", "gnmic-instance=gnomon-1", "gnmic-cluster=lab"]
        );
        assert_eq!((reg.address.as_str(), reg.port), ("127.0.0.1", 9804));
        assert_eq!(reg.ttl, Duration::from_secs(5));
        let with_address = ServiceRegistrationConfig {
            service_address: "exporter.lab".into(),
            ..Default::default()
        };
        assert_eq!(
            announced_address(&with_address, ":9804", bound),
            ("exporter.lab".to_string(), 9804)
        );
        let with_port = ServiceRegistrationConfig {
            service_address: "10.1.1.1:19804".into(),
            ..Default::default()
        };
        assert_eq!(
            announced_address(&with_port, ":9804", bound),
            ("10.1.1.1".to_string(), 19804)
        );
        assert_ne!(
            announced_address(&ServiceRegistrationConfig::default(), ":9804", bound).0,
            ""
        );
    }
}
