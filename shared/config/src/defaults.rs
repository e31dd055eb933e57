//! gnmic's defaults in one place, each with where gnmic defines it (gnmic's documentation
//! under `docs/user_guide/`, or its source where the docs are silent), plus the few values
//! gnomon adds (marked "gnomon").

use std::time::Duration;

// --- targets (targets/targets.md, global_flags.md) ---

/// Port appended to a target address without one (targets.md: "the default gRPC port").
pub const PORT: u16 = 57400;
/// Dial / RPC timeout (global_flags.md `timeout`: "Defaults to 10s").
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Wait between reconnect attempts (global_flags.md `retry`: "Defaults to 10s").
pub const RETRY_TIMER: Duration = Duration::from_secs(10);
/// Responses buffered per target (gnmic's target `buffer-size` default).
pub const TARGET_BUFFER_SIZE: u64 = 100;
/// Largest gNMI message accepted (gnmic's `max-msg-size` default, 512 MiB).
pub const MAX_MSG_SIZE: usize = 512 * 1024 * 1024;
/// TCP keepalive when `tcp-keepalive` is unset or 0 (targets.md: "the Golang default (15s)").
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
/// Smallest `grpc-keepalive.time` (targets.md: "a minimum value of 10s will be used instead").
pub const GRPC_KEEPALIVE_MIN_TIME: Duration = Duration::from_secs(10);
/// `grpc-keepalive.timeout` when unset (gRPC's client keepalive default, 20 s).
pub const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// gnomon: HTTP/2 keepalive pings when `grpc-keepalive` is not set (gnmic sends none; gnomon
/// pings so a dead peer is noticed).
pub const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// gnomon: how long a keepalive ping may go unanswered when `grpc-keepalive` is not set.
pub const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Smallest HTTP/2 window gnmic applies (targets.md `grpc-conn-window-size`: 64K).
pub const MIN_WINDOW_SIZE: u32 = 64 * 1024;

// --- clustering (HA.md) ---

/// `cluster-name` default.
pub const CLUSTER_NAME: &str = "default-cluster";
/// `clustering.services-watch-timer`.
pub const SERVICES_WATCH_TIMER: Duration = Duration::from_secs(60);
/// `clustering.targets-watch-timer`.
pub const TARGETS_WATCH_TIMER: Duration = Duration::from_secs(20);
/// `clustering.target-assignment-timeout`.
pub const TARGET_ASSIGNMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// `clustering.leader-wait-timer`.
pub const LEADER_WAIT_TIMER: Duration = Duration::from_secs(5);
/// gnomon: `clustering.rebalance-threshold` (gnmic's rebalance stops below a spread of 2).
pub const REBALANCE_THRESHOLD: u64 = 2;
/// gnomon: `clustering.output-failure-timeout` (how long every output may fail before the
/// member gives its targets up).
pub const OUTPUT_FAILURE_TIMEOUT: Duration = Duration::from_secs(10);
/// `clustering.locker.session-ttl`.
pub const LOCKER_SESSION_TTL: Duration = Duration::from_secs(10);
/// `clustering.locker.delay` (lock-delay).
pub const LOCKER_DELAY: Duration = Duration::from_secs(5);
/// `clustering.locker.retry-timer`.
pub const LOCKER_RETRY_TIMER: Duration = Duration::from_secs(2);
/// gnomon: `clustering.locker.request-timeout`.
pub const LOCKER_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Consul ignores lock-delays above this; gnomon caps every backend at it.
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);

// --- API (api/api_intro.md) ---

/// `api` / `api-server.address`.
pub const API_ADDRESS: &str = ":7890";
/// `api-server.timeout`.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

// --- NATS output and input (outputs/nats_output.md, inputs/nats_input.md) ---

/// `address`.
pub const NATS_ADDRESS: &str = "localhost:4222";
/// `subject`.
pub const NATS_SUBJECT: &str = "telemetry";
/// `connect-time-wait`.
pub const NATS_CONNECT_TIME_WAIT: Duration = Duration::from_secs(2);
/// Output `write-timeout`.
pub const NATS_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Input `buffer-size` (per worker).
pub const NATS_INPUT_BUFFER_SIZE: usize = 100;
/// gnomon: an output's queue when `buffer-size` is 0 (gnmic's channel would be unbuffered
/// and block the gNMI stream on every message; a bounded buffer keeps the back-pressure).
pub const OUTPUT_BUFFER: usize = 1000;

// --- Prometheus output (outputs/prometheus_output.md) ---

/// `listen`.
pub const PROMETHEUS_LISTEN: &str = ":9804";
/// `path`.
pub const PROMETHEUS_PATH: &str = "/metrics";
/// `expiration` (also what 0 means).
pub const PROMETHEUS_EXPIRATION: Duration = Duration::from_secs(60);
/// `timeout`.
pub const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(10);
/// `service-registration.address`.
pub const REGISTRATION_ADDRESS: &str = "localhost:8500";
/// Smallest `service-registration.check-interval`; shorter values are raised to it.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// `service-registration.max-fail`.
pub const MAX_FAIL: u32 = 3;
