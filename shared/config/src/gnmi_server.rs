//! gnmic's `gnmi-server` block: a gNMI server answering Get and Subscribe from the latest
//! values the cluster collected (the exporter serves it; see `gnomon_exporter::gnmi_server`).
//!
//! Every key gnmic documents (docs/user_guide/gnmi_server.md) is either applied or warned
//! about by name. gnomon adds `username`/`password` (checked from the gRPC metadata gnmic
//! clients send), `cache.max-paths` (the cache's bound) and `max-subscriber-lag` (how many
//! responses a subscriber may fall behind before it is ended).

use super::address::check_host_port;
use super::api::ApiTls;
use super::prometheus_output::ServiceRegistrationConfig;
use super::reader::Section;
use super::secret::Secret;
use super::ConfigError;
use serde_json::Value;
use std::time::Duration;

/// gnmic's default listen address.
pub const DEFAULT_ADDRESS: &str = ":57400";
/// gnmic's `max-subscriptions` and `max-unary-rpc` default.
pub const DEFAULT_MAX_RPCS: u64 = 64;
/// gnmic's `min-sample-interval` default.
pub const DEFAULT_MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(1);
/// gnmic's `default-sample-interval` default.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// gnmic's `cache.expiration` default.
pub const DEFAULT_CACHE_EXPIRATION: Duration = Duration::from_secs(60);
/// gnomon: paths the cache holds at most (over all targets).
pub const DEFAULT_MAX_CACHE_PATHS: u64 = 1_000_000;
/// gnomon: responses a subscriber may have queued before it is ended as too slow.
pub const DEFAULT_MAX_SUBSCRIBER_LAG: u64 = 1_000;

/// The `gnmi-server` block.
#[derive(Clone, Debug, PartialEq)]
pub struct GnmiServerConfig {
    /// gnmic form: `:57400` listens on every interface.
    pub address: String,
    pub min_sample_interval: Duration,
    pub default_sample_interval: Duration,
    pub max_subscriptions: u64,
    pub max_unary_rpc: u64,
    pub max_recv_msg_size: Option<usize>,
    pub max_send_msg_size: Option<usize>,
    pub max_concurrent_streams: Option<u32>,
    /// `keepalive.time` / `keepalive.timeout`: HTTP/2 pings to idle clients.
    pub keepalive_time: Option<Duration>,
    pub keepalive_timeout: Option<Duration>,
    pub tls: Option<ApiTls>,
    /// gnomon: required `username` metadata on every RPC (with `password`).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `cache.expiration`: a path not updated for this long is removed; `None` = never.
    pub cache_expiration: Option<Duration>,
    /// gnomon `cache.max-paths`.
    pub max_cache_paths: u64,
    /// gnomon `max-subscriber-lag`.
    pub max_subscriber_lag: u64,
    /// gnmic's `service-registration` (Consul's TTL-checked service, or the same layout in
    /// the cluster's store); `name` defaults to `<cluster>-gnmi-server`. gnomon adds
    /// `use-lock` (register only while holding `gnmic/<cluster>/gnmi-server`) and
    /// `service-address`, as on the Prometheus output.
    pub service_registration: Option<ServiceRegistrationConfig>,
}

impl Default for GnmiServerConfig {
    fn default() -> Self {
        Self {
            address: DEFAULT_ADDRESS.to_string(),
            min_sample_interval: DEFAULT_MIN_SAMPLE_INTERVAL,
            default_sample_interval: DEFAULT_SAMPLE_INTERVAL,
            max_subscriptions: DEFAULT_MAX_RPCS,
            max_unary_rpc: DEFAULT_MAX_RPCS,
            max_recv_msg_size: None,
            max_send_msg_size: None,
            max_concurrent_streams: None,
            keepalive_time: None,
            keepalive_timeout: None,
            tls: None,
            username: None,
            password: None,
            cache_expiration: Some(DEFAULT_CACHE_EXPIRATION),
            max_cache_paths: DEFAULT_MAX_CACHE_PATHS,
            max_subscriber_lag: DEFAULT_MAX_SUBSCRIBER_LAG,
            service_registration: None,
        }
    }
}

fn positive(section: &Section<'_>, key: &str, default: u64) -> Result<u64, ConfigError> {
    match section.u64(key)? {
        None => Ok(default),
        Some(0) => Ok(default),
        Some(n) => Ok(n),
    }
}

fn size(section: &Section<'_>, key: &str) -> Result<Option<usize>, ConfigError> {
    match section.u64(key)? {
        None | Some(0) => Ok(None),
        Some(n) => usize::try_from(n).map(Some).map_err(|_| {
            ConfigError::invalid(section.key_path(key), &Value::from(n), "is too large")
        }),
    }
}

impl GnmiServerConfig {
    /// Reads the block; invalid values are one error naming the key.
    pub fn from_section(block: &Section<'_>) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(address) = block.string("address")?.filter(|s| !s.trim().is_empty()) {
            if address.starts_with("unix://") {
                return Err(ConfigError::invalid(
                    block.key_path("address"),
                    &Value::String(address),
                    "is a unix socket; gnomon's gNMI server listens on TCP only (expected host:port)",
                ));
            }
            check_host_port(&block.key_path("address"), &address, true, true)?;
            config.address = address;
        }
        if let Some(d) = block.duration("min-sample-interval")? {
            if !d.is_zero() {
                config.min_sample_interval = d;
            }
        }
        if let Some(d) = block.duration("default-sample-interval")? {
            if !d.is_zero() {
                config.default_sample_interval = d;
            }
        }
        if config.default_sample_interval < config.min_sample_interval {
            return Err(ConfigError::invalid(
                block.key_path("default-sample-interval"),
                &Value::String(format!("{:?}", config.default_sample_interval)),
                "is below min-sample-interval",
            ));
        }
        config.max_subscriptions = positive(block, "max-subscriptions", DEFAULT_MAX_RPCS)?;
        config.max_unary_rpc = positive(block, "max-unary-rpc", DEFAULT_MAX_RPCS)?;
        config.max_recv_msg_size = size(block, "max-recv-msg-size")?;
        config.max_send_msg_size = size(block, "max-send-msg-size")?;
        config.max_concurrent_streams = match block.u64("max-concurrent-streams")? {
            None | Some(0) => None,
            Some(n) => Some(u32::try_from(n).map_err(|_| {
                ConfigError::invalid(
                    block.key_path("max-concurrent-streams"),
                    &Value::from(n),
                    "is larger than 4294967295",
                )
            })?),
        };
        if let Some(keepalive) = block.section("keepalive")? {
            config.keepalive_time = keepalive
                .duration("time")?
                .filter(|d| !d.is_zero())
                .map(|d| d.max(Duration::from_secs(1)));
            config.keepalive_timeout = keepalive.duration("timeout")?.filter(|d| !d.is_zero());
            for key in [
                "max-connection-idle",
                "max-connection-age",
                "max-connection-age-grace",
            ] {
                keepalive.unsupported(key, "connections are not aged or closed for idleness");
            }
            keepalive.warn_unknown_keys();
        }
        if let Some(tls) = block.section("tls")? {
            config.tls = Some(ApiTls::from_section(
                &tls,
                "client certificates are verified when ca-file is set (see client-auth)",
            )?);
        }
        block.unsupported_unless(
            "skip-verify",
            &Value::Bool(false),
            "set tls.client-auth instead (client certificates are verified when tls.ca-file is set)",
        );
        config.username = block.string_if_set("username")?.filter(|s| !s.is_empty());
        config.password = block
            .string_if_set("password")?
            .filter(|s| !s.is_empty())
            .map(Secret::new);
        if config.username.is_some() != config.password.is_some() {
            let (set, unset) = if config.username.is_some() {
                ("username", "password")
            } else {
                ("password", "username")
            };
            return Err(ConfigError::invalid(
                block.key_path(unset),
                &Value::String(String::new()),
                format!("is missing: {set} and {unset} go together"),
            ));
        }
        if let Some(cache) = block.section("cache")? {
            if let Some(kind) = cache.string("type")?.filter(|s| !s.trim().is_empty()) {
                if kind.trim() != "oc" {
                    return Err(ConfigError::invalid(
                        cache.key_path("type"),
                        &Value::String(kind),
                        "is not supported: gnomon's cache is in process, fed from the cluster's NATS data (expected oc)",
                    ));
                }
            }
            if let Some(d) = cache.duration("expiration")? {
                config.cache_expiration = (!d.is_zero()).then_some(d);
            }
            config.max_cache_paths = positive(&cache, "max-paths", DEFAULT_MAX_CACHE_PATHS)?;
            for key in [
                "address",
                "username",
                "password",
                "max-bytes",
                "max-msgs-per-subscription",
                "fetch-batch-size",
                "fetch-wait-time",
            ] {
                cache.unsupported(key, "applies to a remote cache; gnomon's is in process");
            }
            cache.unsupported_unless(
                "debug",
                &Value::Bool(false),
                "use RUST_LOG=gnomon_exporter::gnmi_server=debug",
            );
            cache.warn_unknown_keys();
        }
        config.max_subscriber_lag =
            positive(block, "max-subscriber-lag", DEFAULT_MAX_SUBSCRIBER_LAG)?;
        if let Some(registration) = block.section("service-registration")? {
            config.service_registration = Some(
                ServiceRegistrationConfig::from_gnmi_server_section(&registration)?,
            );
        }
        block.unsupported(
            "unary-rpc-timeout",
            "Get is answered from the cache, never relayed to a target",
        );
        block.unsupported(
            "min-heartbeat-interval",
            "heartbeat-interval is not implemented yet",
        );
        block.unsupported(
            "tcp-keepalive",
            "the operating system's TCP keepalive applies; use keepalive.time for HTTP/2 pings",
        );
        block.unsupported(
            "rate-limit",
            "RPCs are bounded by max-subscriptions and max-unary-rpc",
        );
        block.unsupported("timeout", "RPCs are answered from the cache");
        block.unsupported_unless(
            "enable-metrics",
            &Value::Bool(true),
            "the gNMI server's metrics are always served on the API's /metrics",
        );
        block.unsupported_unless(
            "debug",
            &Value::Bool(false),
            "use RUST_LOG=gnomon_exporter::gnmi_server=debug",
        );
        block.warn_unknown_keys();
        Ok(config)
    }

    /// The socket address to bind: gnmic's `:57400` means every interface.
    pub fn bind_address(&self) -> String {
        if self.address.starts_with(':') {
            format!("0.0.0.0{}", self.address)
        } else {
            self.address.clone()
        }
    }

    /// The server TLS options, when TLS is configured.
    pub fn server_tls(&self) -> Option<gnomon_common::tls::ServerTlsOptions> {
        self.tls.as_ref().map(ApiTls::server_options)
    }

    /// A subscription's sample interval within gnmic's bounds: 0 → default, below the
    /// minimum → the minimum.
    pub fn sample_interval(&self, requested_ns: u64) -> Duration {
        if requested_ns == 0 {
            return self.default_sample_interval;
        }
        Duration::from_nanos(requested_ns).max(self.min_sample_interval)
    }
}

#[cfg(test)]
mod tests {
    use crate::{load_config_with_env, ConfigFormat};
    use std::time::Duration;

    #[test]
    fn defaults_and_keys_applied_or_named() {
        let config = load_config_with_env(
            "gnmi-server:\n  address: 127.0.0.1:0\n  min-sample-interval: 10ms\n  max-subscriptions: 3\n  username: admin\n  password: s3cr3t-gnmi\n  cache:\n    expiration: 0s\n    address: redis:6379\n  service-registration:\n    address: consul:8500\n    username: reg\n    password: consul-pw-9\n    use-lock: true\n    tags: [east]\n    enable-http-check: true\n  rate-limit: 10\n  bogus: 1\n",
            ConfigFormat::Yaml,
            &[],
        )
        .unwrap();
        let server = config.gnmi_server.clone().unwrap();
        assert_eq!(server.address, "127.0.0.1:0");
        assert_eq!(server.min_sample_interval, Duration::from_millis(10));
        assert_eq!(server.default_sample_interval, Duration::from_secs(1));
        assert_eq!(server.max_subscriptions, 3);
        assert_eq!(server.max_unary_rpc, 64);
        assert_eq!(server.cache_expiration, None);
        assert_eq!(server.password.as_ref().unwrap().expose(), "s3cr3t-gnmi");
        assert_eq!(server.sample_interval(0), Duration::from_secs(1));
        assert_eq!(server.sample_interval(1), Duration::from_millis(10));
        let registration = server.service_registration.clone().unwrap();
        assert_eq!(registration.address, "consul:8500");
        assert!(registration.use_lock);
        assert_eq!(registration.tags, ["east"]);
        assert_eq!(registration.gnmi_server_name("lab"), "lab-gnmi-server");
        assert_eq!(
            registration.effective_check_interval(),
            Duration::from_secs(5)
        );
        let keys: Vec<&str> = config.warnings.iter().map(|w| w.key.as_str()).collect();
        for key in [
            "gnmi-server.cache.address",
            "gnmi-server.service-registration.enable-http-check",
            "gnmi-server.rate-limit",
            "gnmi-server.bogus",
        ] {
            assert!(keys.contains(&key), "{key} not in {keys:?}");
        }
        assert!(!keys.contains(&"gnmi-server"), "{keys:?}");
        assert!(
            !keys.contains(&"gnmi-server.service-registration"),
            "{keys:?}"
        );
        let shown = format!("{server:?} {:?}", config.warnings);
        assert!(!shown.contains("s3cr3t-gnmi"), "{shown}");
        assert!(!shown.contains("consul-pw-9"), "{shown}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (yaml, key) in [
            ("gnmi-server:\n  address: nonsense\n", "gnmi-server.address"),
            ("gnmi-server:\n  username: a\n", "gnmi-server.password"),
            (
                "gnmi-server:\n  service-registration:\n    check-interval: -1s\n",
                "gnmi-server.service-registration.check-interval",
            ),
            (
                "gnmi-server:\n  service-registration:\n    address: a:b:c:d\n",
                "gnmi-server.service-registration.address",
            ),
            (
                "gnmi-server:\n  cache:\n    type: redis\n",
                "gnmi-server.cache.type",
            ),
            (
                "gnmi-server:\n  tls:\n    client-auth: maybe\n",
                "gnmi-server.tls.client-auth",
            ),
            (
                "gnmi-server:\n  min-sample-interval: 5s\n  default-sample-interval: 1s\n",
                "gnmi-server.default-sample-interval",
            ),
        ] {
            let error = load_config_with_env(yaml, ConfigFormat::Yaml, &[])
                .unwrap_err()
                .to_string();
            assert!(error.contains(key), "{yaml}: {error}");
        }
    }

    #[test]
    fn absent_block_means_no_server() {
        let config = load_config_with_env("{}", ConfigFormat::Yaml, &[]).unwrap();
        assert!(config.gnmi_server.is_none());
        let config = load_config_with_env("gnmi-server: {}\n", ConfigFormat::Yaml, &[]).unwrap();
        assert_eq!(config.gnmi_server.unwrap().address, ":57400");
    }
}
