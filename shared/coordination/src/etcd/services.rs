//! Service registration: `gnmic-services/<name>/<id>` = JSON record (see `kv_services`)
//! attached to the instance's lease, so it disappears with the session. When the session is
//! lost, a background task registers the service again under the next session.

use super::client::Etcd;
use super::session::{Session, Sessions};
use crate::{keys, kv_services, Result, ServiceDeregister, ServiceHandle, ServiceRegistration};
use async_trait::async_trait;
use gnomon_etcd::PutOptions;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
    tokio::spawn(task.run(session));
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
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = shutdown.cancelled() => return,
                _ = session.lost.cancelled() => {}
            }
            loop {
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(self.retry) => {}
                }
                let Ok(next) = self.sessions.current().await else {
                    continue;
                };
                match self.record.put(next.lease).await {
                    Ok(()) => {
                        tracing::info!(key = %self.record.key, "service registered again under a new session");
                        session = next;
                        break;
                    }
                    Err(e) => tracing::debug!(error = %e, "service re-registration failed"),
                }
            }
        }
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
