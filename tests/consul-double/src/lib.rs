//! A Consul HTTP **test double** (not Consul): the subset of the agent/server API gnomon uses,
//! with Consul's edge semantics — session TTL×2 invalidation, `Behavior` release/delete,
//! lock-delay on invalidation/destroy only, `acquire` → `false` vs 500 `invalid session`,
//! renew 404, idempotent destroy, LockIndex/ModifyIndex bookkeeping, 404 with
//! `X-Consul-Index`, blocking `index`/`wait`, TTL checks going critical, the `?passing` filter,
//! and the strict KV key validation of Consul ≥ 1.21.5.
//!
//! Use it in-process ([`ConsulDouble::start`]) or as a process (`consul-double --listen ADDR`).
//! One global Raft-like index grows on every write. Everything runs on the real clock; the
//! minimum session TTL is configurable so tests can use 1s sessions (Consul's default is 10s).

mod handlers;
mod model;

use anyhow::Context;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use model::DoubleConfig;
use model::State;

pub(crate) struct Shared {
    pub(crate) cfg: DoubleConfig,
    pub(crate) state: Mutex<State>,
    /// Carries the global index; blocking queries wait on it.
    pub(crate) changes: watch::Sender<u64>,
    /// Requests answered 403 for a missing or wrong ACL token.
    pub(crate) refused: AtomicU64,
}

impl Shared {
    /// Runs `f` on the state and wakes blocking queries if the index moved.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = state.index;
        let out = f(&mut state);
        let after = state.index;
        drop(state);
        if after != before {
            self.changes.send_replace(after);
        }
        out
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&state)
    }
}

/// A running double. Dropping it stops it.
pub struct ConsulDouble {
    address: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    reaper: JoinHandle<()>,
}

impl ConsulDouble {
    /// Starts on a random 127.0.0.1 port with a 1s minimum session TTL (for fast tests).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(DoubleConfig {
            session_ttl_min: Duration::from_secs(1),
            ..Default::default()
        })
        .await
    }

    /// Starts on a random 127.0.0.1 port.
    pub async fn start_with(cfg: DoubleConfig) -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1:0".parse()?, cfg).await
    }

    /// Starts on `address` (e.g. again on the address of a stopped double).
    pub async fn start_on(address: SocketAddr, cfg: DoubleConfig) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("consul double cannot listen on {address}"))?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            changes: watch::channel(1).0,
            refused: AtomicU64::new(0),
            cfg,
        });
        let app = handlers::router(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(error = %e, "consul double server ended");
            }
        });
        let reaper = tokio::spawn(model::reap_forever(shared.clone()));
        tracing::info!(%address, "consul double listening");
        Ok(Self {
            address,
            shared,
            stop: Some(stop),
            server: Some(server),
            reaper,
        })
    }

    /// The socket address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Stops serving: pending requests answer 503 at once, connections close, the port is
    /// released. State is discarded with the double.
    pub async fn stop(&mut self) {
        self.shared.write(|state| {
            state.stopped = true;
            state.index += 1;
        });
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            if tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
            {
                tracing::warn!("consul double did not stop within 5s");
            }
        }
        self.reaper.abort();
    }

    /// Waits until the server ends (for the standalone binary).
    pub async fn wait(mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Number of live sessions (test introspection).
    pub fn session_count(&self) -> usize {
        self.shared.read(|state| state.sessions.len())
    }

    /// The current global index (test introspection).
    pub fn index(&self) -> u64 {
        self.shared.read(|state| state.index)
    }

    /// How many requests were refused (403) for a missing or wrong ACL token (test
    /// introspection: a client must not repeat a refused call).
    pub fn refused_requests(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }
}

impl Drop for ConsulDouble {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.stopped = true;
        }
        self.shared.changes.send_modify(|i| *i += 1);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.reaper.abort();
    }
}
