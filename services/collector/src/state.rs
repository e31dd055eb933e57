//! What the API shows about each running target.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Lifecycle of a target's subscriptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    /// Dialing or opening subscriptions.
    Connecting,
    /// Subscriptions are open.
    Streaming,
    /// The last attempt failed; waiting to retry.
    Failed,
    /// Every subscription was ONCE and has finished.
    Completed,
    /// Stopped (by request, shutdown or a lost lock).
    Stopped,
}

/// Shared, cheaply updated status of one target.
#[derive(Debug)]
pub struct TargetStatus {
    inner: Mutex<StatusInner>,
    pub responses: AtomicU64,
    pub updates: AtomicU64,
    up: metrics::Gauge,
    /// Up (`Some(true)`) or down after the first attempt ended; feeds the bus reports.
    reported_up: watch::Sender<Option<bool>>,
}

#[derive(Debug, Clone)]
struct StatusInner {
    state: TargetState,
    last_error: Option<String>,
    changed_at_ms: u64,
}

/// A snapshot for the API.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct StatusView {
    pub state: TargetState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Unix milliseconds of the last state change.
    pub state_changed_at: u64,
    pub responses: u64,
    pub updates: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl TargetStatus {
    /// A connecting target; `gnomon_target_up{target}` is created at 0.
    pub fn new(target: &str) -> Self {
        let up = metrics::gauge!("gnomon_target_up", "target" => target.to_string());
        up.set(0.0);
        Self {
            inner: Mutex::new(StatusInner {
                state: TargetState::Connecting,
                last_error: None,
                changed_at_ms: now_ms(),
            }),
            responses: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            up,
            reported_up: watch::Sender::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatusInner> {
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Moves to `state`; `error` replaces the last error when given.
    pub fn set(&self, state: TargetState, error: Option<String>) {
        let mut inner = self.lock();
        if inner.state != state {
            inner.changed_at_ms = now_ms();
        }
        inner.state = state;
        if error.is_some() {
            inner.last_error = error;
        }
        self.up.set(if state == TargetState::Streaming {
            1.0
        } else {
            0.0
        });
        // Connecting is transient, and a stop is reported by whoever stopped the target.
        let reported = match state {
            TargetState::Streaming => Some(true),
            TargetState::Failed | TargetState::Completed => Some(false),
            TargetState::Connecting | TargetState::Stopped => None,
        };
        if let Some(up) = reported {
            self.reported_up.send_if_modified(|current| {
                let changed = *current != Some(up);
                *current = Some(up);
                changed
            });
        }
    }

    /// Follows whether the target is up: `None` until its first attempt ends.
    pub fn watch_up(&self) -> watch::Receiver<Option<bool>> {
        self.reported_up.subscribe()
    }

    pub fn view(&self) -> StatusView {
        let inner = self.lock().clone();
        StatusView {
            state: inner.state,
            last_error: inner.last_error,
            state_changed_at: inner.changed_at_ms,
            responses: self.responses.load(Ordering::Relaxed),
            updates: self.updates.load(Ordering::Relaxed),
        }
    }
}
