//! How the exporter follows cluster state it only reads (the target locks for fencing, the
//! target list for sharding): one run is a full read then the store's watch; when a run
//! ends — the watch closed or a call failed — the next starts after the shared backoff,
//! which a run resets once its read succeeded. Failures are logged at most once per
//! [`LOG_INTERVAL`]; meanwhile the follower keeps what it knew.

use futures::future::BoxFuture;
use gnomon_common::log::Throttle;
use gnomon_common::retry::Backoff;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// At most one log line per follower in this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Runs `run` again and again until `shutdown`, pausing between runs; a failed run is
/// logged as `failure` (what failed and what is kept meanwhile).
pub(crate) async fn until_cancelled<E: std::fmt::Display>(
    shutdown: &CancellationToken,
    failure: &'static str,
    mut run: impl for<'b> FnMut(&'b mut Backoff) -> BoxFuture<'b, Result<(), E>>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut errors = Throttle::new(LOG_INTERVAL);
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = run(&mut backoff) => result,
        };
        if let Err(error) = result {
            if let Some(suppressed) = errors.allow() {
                tracing::warn!(%error, suppressed, "{failure}");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
