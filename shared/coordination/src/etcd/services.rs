//! Service registration: `gnmic-services/<name>/<id>` = JSON record (see `kv_services`)
//! attached to the instance's lease, so it disappears with the session. When the session is
//! lost, a background task registers the service again under the next session, backing off
//! (up to `retry-timer`, longer while etcd refuses the credential) between attempts.

use super::client::Etcd;
use super::session::{Session, Sessions};
use crate::retry_loop::RetryLoop;
use crate::{keys, kv_services, Result, ServiceDeregister, ServiceHandle, ServiceRegistration};
use async_trait::async_trait;
use gnomon_etcd::PutOptions;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Writes the registration under the current session and keeps it registered until the
/// handle is dropped or deregistered, or the backend shuts down.
pub(super) async fn register(
    etcd: &Etcd,
    sessions: &Arc<Sessions>,
    retry: Duration,
    registration: &ServiceRegistration,
) -> Result<ServiceHandle> {
    let session = sessions.current().await?;
    let record = Record {
        etcd: etcd.clone(),
        key: keys::service(&registration.name, &registration.id),
        value: kv_services::encode(registration),
    };
    record.put(session.lease).await?;
    let keeper = CancellationToken::new();
    let task = Reregister {
        record: record.clone(),
        sessions: sessions.clone(),
        retry,
        stop: keeper.clone(),
    };
    let span = tracing::info_span!("etcd_service", key = %gnomon_common::log::Escaped(&record.key));
    tokio::spawn(task.run(session).instrument(span));
    let deregister = Arc::new(Deregister {
        etcd: etcd.clone(),
        key: record.key,
    });
    Ok(ServiceHandle::new(&registration.id, keeper, deregister))
}

/// One registration's key and value.
#[derive(Clone)]
struct Record {
    etcd: Etcd,
    key: String,
    value: String,
}

impl Record {
    async fn put(&self, lease: i64) -> Result<()> {
        let options = PutOptions::new().with_lease(lease);
        self.etcd
            .call(
                self.etcd
                    .client()
                    .put(self.key.as_str(), self.value.as_str(), Some(options)),
            )
            .await
            .map(|_| ())
    }
}

/// Registers the record again whenever the session it lives under is lost.
struct Reregister {
    record: Record,
    sessions: Arc<Sessions>,
    retry: Duration,
    stop: CancellationToken,
}

impl Reregister {
    async fn run(self, mut session: Arc<Session>) {
        let shutdown = self.record.etcd.shutdown.clone();
        let mut retry = RetryLoop::new("etcd service re-registration", self.retry);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = shutdown.cancelled() => return,
                _ = session.lost.cancelled() => {}
            }
            // The session is usually lost because etcd is away: start after a first pause.
            let mut wait = retry.pause();
            loop {
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                match self.register_again().await {
                    Ok(next) => {
                        tracing::info!(key = %self.record.key, "service registered again under a new session");
                        retry.succeeded();
                        session = next;
                        break;
                    }
                    Err(e) => wait = retry.failed(&e),
                }
            }
        }
    }

    async fn register_again(&self) -> Result<Arc<Session>> {
        let next = self.sessions.current().await?;
        self.record.put(next.lease).await?;
        Ok(next)
    }
}

struct Deregister {
    etcd: Etcd,
    key: String,
}

#[async_trait]
impl ServiceDeregister for Deregister {
    async fn deregister_service(&self, _id: &str) -> Result<()> {
        self.etcd
            .call(self.etcd.client().delete(self.key.as_str(), None))
            .await
            .map(|_| ())
    }
}
