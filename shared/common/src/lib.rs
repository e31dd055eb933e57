//! gnomon's small common parts, used by almost every crate and pulling in little:
//!
//! * [`tls`]: rustls client and server configs from gnmic's TLS keys, one crypto provider.
//! * [`duration`]: Go duration strings (`"10s"`, `"1m30s"`) as gnmic writes them.
//! * [`secret`]: the one type for passwords and tokens, redacted wherever it is shown.
//! * [`error_text`]: an error and all its causes on one line.
//! * [`log`]: escaping names from outside in log lines; throttling repeated errors.
//! * [`retry`]: the one retry policy (backoff with jitter, bounded, idempotency-aware).

pub mod duration;
pub mod error_text;
pub mod log;
pub mod retry;
pub mod secret;
pub mod tls;
