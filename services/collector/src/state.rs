//! What the API shows about each running target.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

impl TargetState {
    /// gnmic's `gnmic_target_connection_state` value (gRPC connectivity states):
    /// 0 UNKNOWN, 1 IDLE, 2 CONNECTING, 3 READY, 4 TRANSIENT_FAILURE, 5 SHUTDOWN.
    pub fn connection_state(self) -> u8 {
        match self {
            TargetState::Connecting => 2,
            TargetState::Streaming => 3,
            TargetState::Failed => 4,
            TargetState::Completed => 1,
            TargetState::Stopped => 5,
        }
    }
}

/// Counters of one subscription of a target (gnmic's `{source, subscription}` series).
#[derive(Debug, Default)]
pub struct SubscriptionCounters {
    /// SubscribeResponses received.
    pub received: AtomicU64,
    /// Subscribe requests that failed (could not open, or the stream ended in an error).
    pub failed: AtomicU64,
}

/// Shared, cheaply updated status of one target. Its counters are served on `/metrics`
/// only while the target runs here ([`crate::CollectorHandle`] renders them), so a target
/// that moves to another member leaves no series behind.
#[derive(Debug)]
pub struct TargetStatus {
    inner: Mutex<StatusInner>,
    pub responses: AtomicU64,
    pub updates: AtomicU64,
    pub errors: AtomicU64,
    subscriptions: Mutex<BTreeMap<String, Arc<SubscriptionCounters>>>,
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

impl Default for TargetStatus {
    fn default() -> Self {
        Self::new()
    }
}

impl TargetStatus {
    /// A connecting target.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(StatusInner {
                state: TargetState::Connecting,
                last_error: None,
                changed_at_ms: now_ms(),
            }),
            responses: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            subscriptions: Mutex::new(BTreeMap::new()),
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

    /// The current state.
    pub fn state(&self) -> TargetState {
        self.lock().state
    }

    /// The counters of subscription `name` (created on first use).
    pub fn subscription(&self, name: &str) -> Arc<SubscriptionCounters> {
        let mut subscriptions = match self.subscriptions.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        subscriptions.entry(name.to_string()).or_default().clone()
    }

    /// Every subscription's counters, by name.
    pub fn subscriptions(&self) -> Vec<(String, Arc<SubscriptionCounters>)> {
        let subscriptions = match self.subscriptions.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        subscriptions
            .iter()
            .map(|(name, counters)| (name.clone(), counters.clone()))
            .collect()
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
