//! gnomon's chaos run (issue 8): a real cluster — etcd, nats-server, the simulator, three
//! `gnomon all` members and two `gnomon exporter`s sharing the Prometheus use-lock — is
//! disturbed for a bounded time while an independent observer measures safety properties.
//!
//! # Disturbances
//! Every `kill_every` (20 s) a random member (seeded) is SIGKILLed and started again
//! `restart_after` (5 s) later; nats-server is restarted once (a third into the run) and
//! etcd once (two thirds in), each halfway between two kills, by killing the server and
//! starting it at once on the same ports and data. Optionally (`pause_member`, `--pause`) one
//! member is frozen halfway through (SIGSTOP for session-ttl + 3 s, then SIGCONT): its locks
//! expire while it still holds its streams, so on waking it may publish under its old fencing
//! token — the case exporter fencing exists for. After the disturbed phase the cluster must
//! collect every target again within `settle_timeout`.
//!
//! # Measurements
//! - **Two-subscriber seconds.** The simulator's `/stats` is polled every 100 ms. For every
//!   poll that shows any device with ≥ 2 Subscribe streams, the time until the next poll is
//!   added. Goal: 0. Polls whose extra subscriber is a connection of the frozen member (its
//!   sockets are read from `/proc` before SIGSTOP), until 1 s after SIGCONT, are summed apart
//!   (`two_subscriber_frozen`, not a goal: a frozen process cannot close its streams). A peer
//!   whose own socket is no longer ESTABLISHED (`/proc/net/tcp`) has closed its connection:
//!   its streams stop counting even if the simulator, starved of CPU on a loaded machine, has
//!   not noticed the close yet. For a live double the peers are traced to the member
//!   processes that own them.
//! - **Stale accepted.** The observer subscribes to `telemetry.>` itself (no queue group, like
//!   each exporter) and applies the exporter's rule: a message whose fencing token is below the
//!   highest seen for its target is stale. At the end each exporter's
//!   `gnomon_exporter_stale_dropped_total` is scraped; stale accepted is, for the worst
//!   exporter, stale-on-bus − dropped (clamped at 0; an unreadable counter counts as 0
//!   dropped). Exporters are never restarted, so their counters cover the whole run. Goal: 0.
//! - **Longest gap.** Per target, the longest interval between consecutive data messages the
//!   observer received (and from the last one to the end of the run). The gaps open at some
//!   moment within session-ttl + 2 s after the nats-server restart, the etcd restart, and any
//!   kill are reported separately. Goal: ≤ session-ttl + 2 s (the failover bound).
//! - **Panics.** Lines containing `panicked` in every gnomon process log (killed members'
//!   logs are kept). Goal: 0.
//! - **Failover samples.** Per kill, the time until every target the victim held had a data
//!   message with a higher fencing token than before the kill.
//!
//! [`run`] returns a [`ChaosReport`]; `ChaosReport::result_lines` are the `RESULT` lines and
//! `ChaosReport::missed_goals` says which goals were missed.

pub mod observer;
mod report;
mod run;

pub use report::{ChaosReport, Gap, KillRecord};
pub use run::{run, ChaosConfig};
