//! Reconnect delays: exponential with jitter, capped by the target's `retry-timer`.

use rand::Rng;
use std::time::Duration;

/// The first delay (or the cap, when that is smaller).
const INITIAL: Duration = Duration::from_millis(500);

/// Exponential backoff with "equal jitter": each delay is 50–100 % of the current step.
#[derive(Debug, Clone)]
pub struct Backoff {
    current: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        let max = max.max(Duration::from_millis(10));
        Self {
            current: INITIAL.min(max),
            max,
        }
    }

    /// The next delay; the step doubles up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        step.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// Back to the first step (after a healthy connection).
    pub fn reset(&mut self) {
        self.current = INITIAL.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_secs(4));
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(250) && delays[0] <= Duration::from_millis(500));
        for delay in &delays {
            assert!(*delay <= Duration::from_secs(4), "{delay:?}");
        }
        assert!(delays[7] >= Duration::from_secs(2), "{delays:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(500));
    }
}
