//! How the backends' retry loops (lock attempts, session renewals, watches, service
//! keep-alives and re-registrations) wait and log after a failed store call: the shared
//! [`Backoff`], and one log line per [`LOG_INTERVAL`] ([`Throttle`]) instead of one per
//! attempt.
//!
//! * Transient failures (store unavailable, session lost): waits grow from `max_wait / 8` to
//!   `max_wait` (the `retry-timer`, or the renew period for keep-alives), so a store that comes
//!   back is used again within `max_wait`. Logged at warn level.
//! * A refused credential ([`CoordinationError::CredentialRefused`]) does not heal by itself:
//!   it is logged at error level, naming the credential, at once and then once per
//!   [`LOG_INTERVAL`] with the number of repeats; waits grow to [`REFUSED_MAX_WAIT`] so a loop
//!   that cannot give up (a watch, a keep-alive) does not hammer the store while an operator
//!   fixes it. Calls with a caller return the refusal instead of looping at all.

use crate::CoordinationError;
use gnomon_common::log::Throttle;
use gnomon_common::retry::Backoff;
use std::time::Duration;

/// At most one log line per kind of failure and loop in this interval.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(30);

/// The longest wait between attempts while the store refuses the credential.
pub(crate) const REFUSED_MAX_WAIT: Duration = Duration::from_secs(30);

/// Waits and log lines of one retry loop.
pub(crate) struct RetryLoop {
    /// What the loop does, for log lines (e.g. "etcd watch").
    activity: &'static str,
    transient: Backoff,
    refused: Backoff,
    transient_log: Throttle,
    refused_log: Throttle,
    failing: bool,
}

impl RetryLoop {
    /// Transient failures wait up to `max_wait`, refusals up to [`REFUSED_MAX_WAIT`] (or
    /// `max_wait` when longer).
    pub(crate) fn new(activity: &'static str, max_wait: Duration) -> Self {
        Self {
            activity,
            transient: Backoff::new(max_wait / 8, max_wait),
            refused: Backoff::new(max_wait, REFUSED_MAX_WAIT.max(max_wait)),
            transient_log: Throttle::new(LOG_INTERVAL),
            refused_log: Throttle::new(LOG_INTERVAL),
            failing: false,
        }
    }

    /// Caps the waits after a refusal at `max_wait` too (a session keep-alive must keep
    /// trying within its TTL).
    pub(crate) fn refusals_wait_at_most(mut self, max_wait: Duration) -> Self {
        self.refused = Backoff::new(max_wait, max_wait);
        self
    }

    /// Records a failed attempt: logs it (throttled) and returns how long to wait before the
    /// next one.
    pub(crate) fn failed(&mut self, error: &CoordinationError) -> Duration {
        self.failing = true;
        let activity = self.activity;
        if error.credential().is_some() {
            if let Some(repeated) = self.refused_log.allow() {
                tracing::error!(activity, repeated, error = %error, "the coordination store refused the credential; retrying rarely until it is fixed");
            }
            self.refused.next_delay()
        } else {
            if let Some(repeated) = self.transient_log.allow() {
                tracing::warn!(activity, repeated, error = %error, "coordination store call failed; retrying");
            }
            self.transient.next_delay()
        }
    }

    /// A wait between attempts without a failure to report (e.g. a watch stream that ended).
    pub(crate) fn pause(&mut self) -> Duration {
        self.transient.next_delay()
    }

    /// Records a success: the next failure is logged at once and waits start short again.
    pub(crate) fn succeeded(&mut self) {
        if std::mem::take(&mut self.failing) {
            tracing::info!(
                activity = self.activity,
                "coordination store calls succeed again"
            );
        }
        self.transient.reset();
        self.refused.reset();
        self.transient_log.reset();
        self.refused_log.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Credential;

    #[test]
    fn refusals_wait_longer_than_transient_failures() {
        let mut retry = RetryLoop::new("test", Duration::from_millis(800));
        let unavailable = CoordinationError::unavailable("down");
        let refused = CoordinationError::refused(Credential::ConsulToken, "403");
        let first = retry.failed(&unavailable);
        assert!(first <= Duration::from_millis(100), "{first:?}");
        for _ in 0..10 {
            assert!(retry.failed(&unavailable) <= Duration::from_millis(800));
        }
        assert!(retry.failed(&refused) >= Duration::from_millis(400));
        let mut waits = Duration::ZERO;
        for _ in 0..10 {
            waits = retry.failed(&refused);
        }
        assert!(waits >= REFUSED_MAX_WAIT / 2, "{waits:?}");
        retry.succeeded();
        assert!(retry.failed(&unavailable) <= Duration::from_millis(100));

        let mut keep_alive = RetryLoop::new("test", Duration::from_millis(300))
            .refusals_wait_at_most(Duration::from_millis(300));
        for _ in 0..10 {
            assert!(keep_alive.failed(&refused) <= Duration::from_millis(300));
        }
    }
}
