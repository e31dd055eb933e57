//! The one retry policy for remote calls: exponential backoff with jitter, a bounded number
//! of attempts, and retries only where repeating the call is safe.
//!
//! * [`Backoff`] gives the delays (also used directly by loops that are not tower services,
//!   such as the collector's reconnect and the coordination backends' retry loops).
//! * [`RetryPolicy`] is a `tower::retry::Policy` over any request type: a [`RetryClassify`]
//!   decides, from the request and the outcome, whether another attempt is both useful (a
//!   transient failure, not a refusal such as a permission error) and safe (the request is
//!   idempotent, or it certainly never reached the server).
//!
//! Compose it as `ServiceBuilder::new().retry(policy).timeout(per_attempt)`: the timeout is
//! per attempt, and the policy bounds the attempts.

use rand::Rng;
use std::time::Duration;

/// Exponential backoff with "equal jitter": each delay is 50–100 % of the current step,
/// which doubles from `initial` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    current: Duration,
    max: Duration,
}

impl Backoff {
    /// Steps from `initial`, doubling up to `max` (both at least 10 ms, so a misconfigured
    /// zero never makes a tight loop).
    pub fn new(initial: Duration, max: Duration) -> Self {
        let floor = Duration::from_millis(10);
        let max = max.max(floor);
        let initial = initial.max(floor).min(max);
        Self {
            initial,
            current: initial,
            max,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        step.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// Back to the first step (after a success).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    /// The largest delay this backoff can give.
    pub fn max(&self) -> Duration {
        self.max
    }
}

/// Decides whether a failed (or unsatisfying) attempt should be repeated.
pub trait RetryClassify<Req, Res, E>: Clone {
    /// `true` when another attempt may succeed and is safe to send.
    fn should_retry(&self, request: &Req, result: &Result<Res, E>) -> bool;
}

/// Retries up to `attempts - 1` times with [`Backoff`] delays when the classifier says so.
#[derive(Debug, Clone)]
pub struct RetryPolicy<K> {
    classify: K,
    backoff: Backoff,
    remaining: u32,
}

impl<K> RetryPolicy<K> {
    /// At most `retries` repeats after the first attempt.
    pub fn new(classify: K, retries: u32, backoff: Backoff) -> Self {
        Self {
            classify,
            backoff,
            remaining: retries,
        }
    }
}

impl<Req, Res, E, K> tower::retry::Policy<Req, Res, E> for RetryPolicy<K>
where
    Req: Clone,
    K: RetryClassify<Req, Res, E>,
{
    type Future = tokio::time::Sleep;

    fn retry(&mut self, request: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        if self.remaining == 0 || !self.classify.should_retry(request, result) {
            return None;
        }
        self.remaining -= 1;
        Some(tokio::time::sleep(self.backoff.next_delay()))
    }

    fn clone_request(&mut self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use tower::{Service, ServiceBuilder, ServiceExt};

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(4));
        assert_eq!(backoff.max(), Duration::from_secs(4));
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(250) && delays[0] <= Duration::from_millis(500));
        for delay in &delays {
            assert!(*delay <= Duration::from_secs(4), "{delay:?}");
        }
        assert!(delays[7] >= Duration::from_secs(2), "{delays:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(500));
        // A zero cap still waits.
        let mut zero = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert!(zero.next_delay() >= Duration::from_millis(5));
    }

    /// Requests are (idempotent, attempt counter); the service fails until `succeed_at`.
    #[derive(Clone)]
    struct Call {
        idempotent: bool,
    }

    #[derive(Clone)]
    struct OnlyIdempotent;

    impl RetryClassify<Call, u32, &'static str> for OnlyIdempotent {
        fn should_retry(&self, request: &Call, result: &Result<u32, &'static str>) -> bool {
            matches!(result, Err("transient")) && request.idempotent
        }
    }

    async fn run(
        idempotent: bool,
        error: &'static str,
        retries: u32,
    ) -> (Result<u32, &'static str>, u32) {
        let attempts = Arc::new(AtomicU32::new(0));
        let counter = attempts.clone();
        let inner = tower::service_fn(move |_call: Call| {
            let counter = counter.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                if n < 3 {
                    Err(error)
                } else {
                    Ok(n)
                }
            }
        });
        let policy = RetryPolicy::new(
            OnlyIdempotent,
            retries,
            Backoff::new(Duration::from_millis(1), Duration::from_millis(2)),
        );
        let mut service = ServiceBuilder::new().retry(policy).service(inner);
        let result = service
            .ready()
            .await
            .map_err(|_| "not ready")
            .map(|s| s.call(Call { idempotent }));
        let result = match result {
            Ok(future) => future.await,
            Err(e) => Err(e),
        };
        (result, attempts.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn transient_failures_of_idempotent_calls_are_retried() {
        assert_eq!(run(true, "transient", 5).await, (Ok(3), 3));
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        assert_eq!(run(true, "transient", 1).await, (Err("transient"), 2));
    }

    #[tokio::test]
    async fn refusals_and_unsafe_calls_are_not_retried() {
        assert_eq!(
            run(true, "permission denied", 5).await,
            (Err("permission denied"), 1)
        );
        assert_eq!(run(false, "transient", 5).await, (Err("transient"), 1));
    }
}
