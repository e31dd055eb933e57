//! Who is subscribed to which device, served as `GET /stats` so tests and benchmarks have
//! an observer independent of the collectors they judge.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Active Subscribe streams of one device, counted per client address.
#[derive(Debug, Default)]
pub struct DeviceStats {
    peers: Mutex<BTreeMap<String, usize>>,
}

impl DeviceStats {
    fn peers(&self) -> MutexGuard<'_, BTreeMap<String, usize>> {
        // A panic while holding this lock cannot leave the map inconsistent (single
        // insert/remove), so a poisoned lock is still usable.
        self.peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a new stream from `peer`; the stream counts until the guard is dropped.
    pub fn track(self: &Arc<Self>, peer: Option<SocketAddr>) -> StreamGuard {
        let peer = peer.map_or_else(|| "unknown".to_string(), |addr| addr.to_string());
        *self.peers().entry(peer.clone()).or_insert(0) += 1;
        StreamGuard {
            stats: Arc::clone(self),
            peer,
        }
    }

    pub fn snapshot(&self) -> TargetStats {
        let peers = self.peers();
        TargetStats {
            subscriptions: peers.values().sum(),
            peers: peers.keys().cloned().collect(),
        }
    }
}

/// Keeps one Subscribe stream counted; dropping it (stream finished, failed or the client
/// went away) removes it.
#[derive(Debug)]
pub struct StreamGuard {
    stats: Arc<DeviceStats>,
    peer: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut peers = self.stats.peers();
        if let Some(count) = peers.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

/// One device in the `/stats` answer.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TargetStats {
    /// Active Subscribe streams.
    pub subscriptions: usize,
    /// Distinct client addresses with at least one active stream.
    pub peers: BTreeSet<String>,
}

/// The whole `/stats` answer, keyed by device address.
#[derive(Clone, Debug, Serialize)]
pub struct StatsReport {
    pub targets: BTreeMap<String, TargetStats>,
}

/// Every device's counters, by listen address.
#[derive(Clone, Debug, Default)]
pub struct StatsRegistry {
    devices: Vec<(SocketAddr, Arc<DeviceStats>)>,
}

impl StatsRegistry {
    pub fn add(&mut self, address: SocketAddr, stats: Arc<DeviceStats>) {
        self.devices.push((address, stats));
    }

    pub fn report(&self) -> StatsReport {
        StatsReport {
            targets: self
                .devices
                .iter()
                .map(|(address, stats)| (address.to_string(), stats.snapshot()))
                .collect(),
        }
    }
}

async fn stats_handler(State(registry): State<Arc<StatsRegistry>>) -> Json<StatsReport> {
    Json(registry.report())
}

/// Serves `GET /stats` on `listener` until `shutdown` is cancelled.
pub fn serve(
    listener: gnomon_api_server::Listener,
    registry: Arc<StatsRegistry>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route("/stats", get(stats_handler))
        .with_state(registry);
    listener.spawn(
        app,
        None,
        gnomon_api_server::ListenerOptions::default(),
        shutdown,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_streams_per_peer_and_clean_up() {
        let stats = Arc::new(DeviceStats::default());
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let first = stats.track(Some(a));
        let second = stats.track(Some(a));
        let third = stats.track(Some(b));
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.subscriptions, 3);
        assert_eq!(snapshot.peers.len(), 2);
        drop(first);
        drop(third);
        assert_eq!(stats.snapshot().subscriptions, 1);
        assert_eq!(
            stats.snapshot().peers.into_iter().collect::<Vec<_>>(),
            ["127.0.0.1:1000"]
        );
        drop(second);
        assert_eq!(stats.snapshot().subscriptions, 0);
        assert!(stats.snapshot().peers.is_empty());
    }
}
