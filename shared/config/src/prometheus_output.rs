//! gnmic's `outputs.<name>` block with `type: prometheus` (the scrape output), keys and
//! defaults as gnmic reads them, plus its `service-registration` sub-block.
//!
//! Durations are Go duration strings (`"60s"`, `"1m30s"`, `"-1s"`); see [`GoDuration`].

use super::address::{check_host_optional_port, check_host_port};
use super::api::ApiTls;
use super::defaults;
use super::reader::Section;
use super::secret::Secret;
use super::serde_section::{deserialize_section, warn_unknown_nested};
use super::ConfigError;
pub use gnomon_common::duration::GoDuration;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Default `listen` address of the Prometheus output.
pub const DEFAULT_LISTEN: &str = defaults::PROMETHEUS_LISTEN;
/// Default scrape path.
pub const DEFAULT_PATH: &str = defaults::PROMETHEUS_PATH;
/// Default (and "0") expiration.
pub const DEFAULT_EXPIRATION: Duration = defaults::PROMETHEUS_EXPIRATION;
/// Default scrape / enqueue timeout.
pub const DEFAULT_TIMEOUT: Duration = defaults::PROMETHEUS_TIMEOUT;
/// Default Consul address of the service registration.
pub const DEFAULT_REGISTRATION_ADDRESS: &str = defaults::REGISTRATION_ADDRESS;
/// Smallest check interval gnmic accepts; shorter values are raised to it.
pub const MIN_CHECK_INTERVAL: Duration = defaults::MIN_CHECK_INTERVAL;
/// Default number of failed checks before the registration is removed.
pub const DEFAULT_MAX_FAIL: u32 = defaults::MAX_FAIL;

/// The Prometheus (scrape) output: `outputs.<name>` with `type: prometheus`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", default)]
pub struct PrometheusOutputConfig {
    /// `type` key of the output block (`prometheus`).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub output_type: Option<String>,
    /// HTTP listen address, `host:port` or `:port`.
    pub listen: String,
    /// Scrape path.
    pub path: String,
    /// How long a series lives without an update; 0 means 60 s, negative means never.
    pub expiration: GoDuration,
    /// Prefix of every metric name.
    pub metric_prefix: String,
    /// Put the subscription name into metric names.
    pub append_subscription_name: bool,
    /// Expose sample timestamps (ms).
    pub export_timestamps: bool,
    /// With `export-timestamps`: timestamp = the time the sample was received.
    pub override_timestamps: bool,
    /// Non-numeric values become labels of the event's metrics.
    pub strings_as_labels: bool,
    /// gnmic's add-target (`overwrite` / `if-not-present`); sets the `target` tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_target: Option<String>,
    /// gnmic's target-template (a Go template, in the subset `gotemplate` renders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_template: Option<String>,
    /// Names of event processors to apply.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub event_processors: Vec<String>,
    /// Scrape budget and enqueue wait.
    pub timeout: GoDuration,
    /// Number of ingest workers.
    pub num_workers: usize,
    /// Capacity of the ingest queue.
    pub buffer_size: usize,
    /// Publish the output's own metrics.
    pub enable_metrics: bool,
    pub debug: bool,
    /// gnmic's cache mode: `oc` is what the exposition is (see `check_cache`); remote types
    /// are refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<serde_json::Value>,
    /// TLS for the listener (read by [`Self::listener_tls`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<serde_json::Value>,
    /// Registration of this output as a discoverable service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_registration: Option<ServiceRegistrationConfig>,
    /// gnomon's cap on data series (not gnmic's): samples that would add a series beyond it
    /// are dropped and counted; 0 (the default) means no cap.
    pub max_series: u64,
}

impl Default for PrometheusOutputConfig {
    fn default() -> Self {
        Self {
            output_type: None,
            listen: DEFAULT_LISTEN.to_string(),
            path: DEFAULT_PATH.to_string(),
            expiration: GoDuration::from_std(DEFAULT_EXPIRATION),
            metric_prefix: String::new(),
            append_subscription_name: false,
            export_timestamps: false,
            override_timestamps: false,
            strings_as_labels: false,
            add_target: None,
            target_template: None,
            event_processors: Vec::new(),
            timeout: GoDuration::from_std(DEFAULT_TIMEOUT),
            num_workers: 1,
            buffer_size: 10_000,
            enable_metrics: false,
            debug: false,
            cache: None,
            tls: None,
            service_registration: None,
            max_series: 0,
        }
    }
}

impl fmt::Debug for PrometheusOutputConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusOutputConfig")
            .field("listen", &self.listen)
            .field("path", &self.path)
            .field("expiration", &self.expiration)
            .field("metric_prefix", &self.metric_prefix)
            .field("append_subscription_name", &self.append_subscription_name)
            .field("export_timestamps", &self.export_timestamps)
            .field("override_timestamps", &self.override_timestamps)
            .field("strings_as_labels", &self.strings_as_labels)
            .field("add_target", &self.add_target)
            .field("event_processors", &self.event_processors)
            .field("timeout", &self.timeout)
            .field("num_workers", &self.num_workers)
            .field("buffer_size", &self.buffer_size)
            .field("service_registration", &self.service_registration)
            .field("max_series", &self.max_series)
            .finish_non_exhaustive()
    }
}

impl PrometheusOutputConfig {
    /// gnmic's rule: 0 ⇒ 60 s, negative ⇒ never (None).
    pub fn effective_expiration(&self) -> Option<Duration> {
        if self.expiration.is_zero() {
            Some(DEFAULT_EXPIRATION)
        } else {
            self.expiration.to_std()
        }
    }

    /// The series cap, `None` when there is none.
    pub fn series_cap(&self) -> Option<usize> {
        (self.max_series > 0).then(|| usize::try_from(self.max_series).unwrap_or(usize::MAX))
    }

    /// Scrape budget; zero or negative falls back to the 10 s default.
    pub fn effective_timeout(&self) -> Duration {
        self.timeout
            .to_std()
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_TIMEOUT)
    }

    /// The listen address with an empty host (`:9804`) turned into `0.0.0.0:9804`.
    pub fn listen_socket_address(&self) -> String {
        if self.listen.starts_with(':') {
            format!("0.0.0.0{}", self.listen)
        } else {
            self.listen.clone()
        }
    }

    /// The path with a leading `/`.
    pub fn normalized_path(&self) -> String {
        if self.path.is_empty() {
            DEFAULT_PATH.to_string()
        } else if self.path.starts_with('/') {
            self.path.clone()
        } else {
            format!("/{}", self.path)
        }
    }

    /// Reads `outputs.<name>` (type prometheus): only gnmic's keys are taken (others get the
    /// unknown-key warning), each bad value names its key, then [`Self::validate`].
    pub fn from_section(name: &str, section: &Section<'_>) -> Result<Self, ConfigError> {
        let config: Self = deserialize_section(section, KEYS)?;
        warn_unknown_nested(section, "service-registration", REGISTRATION_KEYS);
        for key in ["num-workers", "buffer-size"] {
            section.unsupported(
                key,
                "the exporter adds each message to the exposition as it arrives, without \
                 ingest workers or a queue",
            );
        }
        section.unsupported_unless(
            "debug",
            &serde_json::Value::Bool(false),
            "use RUST_LOG=gnomon_exporter=debug",
        );
        section.unsupported_unless(
            "enable-metrics",
            &serde_json::Value::Bool(true),
            "gnomon always records the output's metrics",
        );
        section.warn_unknown_keys();
        config.validate(name)?;
        Ok(config)
    }

    /// gnmic's `cache`: its in-process (`oc`) form is what the exposition already is — the
    /// latest value of every series — so it is accepted; remote caches are refused. The one
    /// difference is named at start: processors run as messages arrive, not over the whole
    /// cache at scrape time.
    fn check_cache(&self, key: &str) -> Result<(), ConfigError> {
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        if cache.is_null() {
            return self.warn_cache_mode(key);
        }
        let section = Section::from_value(key, cache)?;
        if let Some(kind) = section.string("type")? {
            if !kind.is_empty() && kind != "oc" {
                return Err(ConfigError::invalid(
                    section.key_path("type"),
                    &serde_json::Value::String(kind),
                    "is a remote cache; gnomon's Prometheus output keeps the latest values in \
                     process (use type oc or remove the cache block)",
                ));
            }
        }
        section.unsupported("expiration", "series live for the output's expiration");
        section.unsupported_unless(
            "debug",
            &serde_json::Value::Bool(false),
            "use RUST_LOG=gnomon_exporter=debug",
        );
        for remote in [
            "address",
            "username",
            "password",
            "max-bytes",
            "max-msgs-per-subscription",
            "fetch-batch-size",
            "fetch-wait-time",
        ] {
            section.unsupported(remote, "applies to a remote cache");
        }
        section.warn_unknown_keys();
        self.warn_cache_mode(key)
    }

    fn warn_cache_mode(&self, key: &str) -> Result<(), ConfigError> {
        if !self.event_processors.is_empty() {
            super::warning::warn(
                key.to_string(),
                "the exposition is the latest-value cache; event-processors run on each \
                 message as it arrives, not on all cached events at scrape time",
            );
        }
        Ok(())
    }

    /// gnmic's `target-template` (used with `add-target`), parsed; `None` when unset or empty
    /// (gnmic's default: the subscription's target, else the source without its port).
    pub fn parsed_target_template(
        &self,
        output_name: &str,
    ) -> Result<Option<super::gotemplate::GoTemplate>, ConfigError> {
        parse_target_template(
            &format!("outputs.{output_name}.target-template"),
            self.target_template.as_deref(),
        )
    }

    /// The listener's TLS (gnmic's `tls`: cert-file, key-file, ca-file, client-auth).
    pub fn listener_tls(&self, output_name: &str) -> Result<Option<ApiTls>, ConfigError> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        if tls.is_null() {
            return Ok(None);
        }
        let section = Section::from_value(format!("outputs.{output_name}.tls"), tls)?;
        ApiTls::from_section(
            &section,
            "client certificates are verified when ca-file is set (see client-auth)",
        )
        .map(Some)
    }

    /// Rejects values gnomon cannot honor, naming the key.
    pub fn validate(&self, output_name: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("outputs.{output_name}.{k}");
        let text = |s: &str| serde_json::Value::String(s.to_string());
        if let Some(kind) = &self.output_type {
            if kind != "prometheus" {
                return Err(ConfigError::invalid(
                    key("type"),
                    &text(kind),
                    "is not this output's type (expected prometheus)",
                ));
            }
        }
        check_host_port(&key("listen"), &self.listen, true, true)?;
        self.check_cache(&key("cache"))?;
        self.listener_tls(output_name)?;
        self.parsed_target_template(output_name)?;
        if let Some(mode) = &self.add_target {
            if !mode.is_empty() && mode != "overwrite" && mode != "if-not-present" {
                return Err(ConfigError::invalid(
                    key("add-target"),
                    &text(mode),
                    "is not an add-target mode (expected overwrite or if-not-present)",
                ));
            }
        }
        if let Some(registration) = &self.service_registration {
            registration.validate(&key("service-registration"))?;
        }
        Ok(())
    }
}

/// The keys of gnmic's Prometheus output that gnomon reads.
const KEYS: &[&str] = &[
    "type",
    "listen",
    "path",
    "expiration",
    "metric-prefix",
    "append-subscription-name",
    "export-timestamps",
    "override-timestamps",
    "strings-as-labels",
    "add-target",
    "target-template",
    "event-processors",
    "timeout",
    "num-workers",
    "buffer-size",
    "enable-metrics",
    "debug",
    "cache",
    "tls",
    "service-registration",
    "max-series",
];

/// The keys of `service-registration`.
const REGISTRATION_KEYS: &[&str] = &[
    "address",
    "datacenter",
    "username",
    "password",
    "token",
    "name",
    "check-interval",
    "max-fail",
    "tags",
    "enable-http-check",
    "http-check-address",
    "use-lock",
    "service-address",
    "shards",
];

/// Most shards a sharded output may have: each shard is a lock and a registration, and
/// more shards than exporters leaves shards unserved.
pub const MAX_SHARDS: u32 = 1024;

/// gnmic's `service-registration` block of the Prometheus output.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", default)]
pub struct ServiceRegistrationConfig {
    /// Registry address (Consul `host:port`).
    pub address: String,
    pub datacenter: String,
    pub username: String,
    /// Never serialized (kept out of API responses).
    #[serde(skip_serializing)]
    pub password: Option<Secret>,
    #[serde(skip_serializing)]
    pub token: Option<Secret>,
    /// Service name; empty means `prometheus-<output-name>`.
    pub name: String,
    /// TTL-check interval; values ≤ 5 s become 5 s.
    pub check_interval: GoDuration,
    /// Failed checks before the registration is dropped.
    pub max_fail: u32,
    /// Extra service tags.
    pub tags: Vec<String>,
    pub enable_http_check: bool,
    pub http_check_address: String,
    /// Register only while holding the `gnmic/<cluster>/prometheus-output` lock.
    pub use_lock: bool,
    /// Address announced for the service (`host[:port]`); empty means from `listen`.
    pub service_address: String,
    /// gnomon extension: split the cluster's targets into this many shards, one exporter
    /// per shard (locks `gnmic/<cluster>/prometheus-output/<i>`); 1 (the default) keeps
    /// gnmic's single `use-lock` holder. More than 1 needs `use-lock` and a cluster store.
    pub shards: u32,
}

impl Default for ServiceRegistrationConfig {
    fn default() -> Self {
        Self {
            address: DEFAULT_REGISTRATION_ADDRESS.to_string(),
            datacenter: String::new(),
            username: String::new(),
            password: None,
            token: None,
            name: String::new(),
            check_interval: GoDuration::from_std(MIN_CHECK_INTERVAL),
            max_fail: DEFAULT_MAX_FAIL,
            tags: Vec::new(),
            enable_http_check: false,
            http_check_address: String::new(),
            use_lock: false,
            service_address: String::new(),
            shards: 1,
        }
    }
}

impl fmt::Debug for ServiceRegistrationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceRegistrationConfig")
            .field("address", &self.address)
            .field("datacenter", &self.datacenter)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("token", &self.token)
            .field("name", &self.name)
            .field("check_interval", &self.check_interval)
            .field("max_fail", &self.max_fail)
            .field("tags", &self.tags)
            .field("enable_http_check", &self.enable_http_check)
            .field("http_check_address", &self.http_check_address)
            .field("use_lock", &self.use_lock)
            .field("service_address", &self.service_address)
            .field("shards", &self.shards)
            .finish()
    }
}

impl ServiceRegistrationConfig {
    /// The `gnmi-server.service-registration` block: gnmic's keys (address, datacenter,
    /// username, password, token, name, check-interval, max-fail, tags) and gnomon's
    /// `use-lock` and `service-address`; an empty `name` means `<cluster>-gnmi-server`.
    pub fn from_gnmi_server_section(block: &Section<'_>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let max_fail = match block.u64("max-fail")? {
            None => defaults.max_fail,
            Some(n) => u32::try_from(n).map_err(|_| {
                ConfigError::invalid(
                    block.key_path("max-fail"),
                    &serde_json::Value::from(n),
                    "is too large",
                )
            })?,
        };
        let config = Self {
            address: block.string_if_set("address")?.unwrap_or(defaults.address),
            datacenter: block.string_if_set("datacenter")?.unwrap_or_default(),
            username: block.string_if_set("username")?.unwrap_or_default(),
            password: block.string_if_set("password")?.map(Secret::new),
            token: block.string_if_set("token")?.map(Secret::new),
            name: block.string_if_set("name")?.unwrap_or_default(),
            check_interval: block
                .signed_duration("check-interval")?
                .unwrap_or(defaults.check_interval),
            max_fail,
            tags: block.string_list("tags")?,
            use_lock: block.bool("use-lock")?.unwrap_or(false),
            service_address: block.string_if_set("service-address")?.unwrap_or_default(),
            ..defaults
        };
        block.warn_unknown_keys();
        config.validate(block.path())?;
        Ok(config)
    }

    /// The gNMI server's service name, defaulting to `<cluster>-gnmi-server`.
    pub fn gnmi_server_name(&self, cluster_name: &str) -> String {
        if self.name.is_empty() {
            format!("{cluster_name}-gnmi-server")
        } else {
            self.name.clone()
        }
    }

    /// The service name, defaulting to `prometheus-<output-name>`.
    pub fn effective_name(&self, output_name: &str) -> String {
        if self.name.is_empty() {
            format!("prometheus-{output_name}")
        } else {
            self.name.clone()
        }
    }

    /// The check interval with gnmic's floor of 5 s.
    pub fn effective_check_interval(&self) -> Duration {
        self.check_interval
            .to_std()
            .filter(|d| *d > MIN_CHECK_INTERVAL)
            .unwrap_or(MIN_CHECK_INTERVAL)
    }

    /// Failed checks tolerated; 0 means the default 3.
    pub fn effective_max_fail(&self) -> u32 {
        if self.max_fail == 0 {
            DEFAULT_MAX_FAIL
        } else {
            self.max_fail
        }
    }

    /// How long a registration survives without a refresh: check-interval × max-fail.
    pub fn deregister_after(&self) -> Duration {
        self.effective_check_interval() * self.effective_max_fail()
    }

    /// Whether the output is sharded (more than one shard).
    pub fn is_sharded(&self) -> bool {
        self.shards > 1
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return Err(ConfigError::invalid(
                format!("{key}.shards"),
                &self.shards.into(),
                format!("is out of range (expected 1 to {MAX_SHARDS})"),
            ));
        }
        if self.is_sharded() && !self.use_lock {
            return Err(ConfigError::invalid(
                format!("{key}.shards"),
                &self.shards.into(),
                "needs use-lock: true (each shard is served by the exporter holding its lock)",
            ));
        }
        if self.check_interval.is_negative() {
            return Err(ConfigError::invalid(
                format!("{key}.check-interval"),
                &serde_json::Value::String(self.check_interval.to_string()),
                "is negative (expected a duration of at least 5s)",
            ));
        }
        check_host_optional_port(&format!("{key}.address"), &self.address)?;
        if !self.service_address.is_empty() {
            check_host_optional_port(&format!("{key}.service-address"), &self.service_address)?;
        }
        let no_password = self.password.as_ref().is_none_or(|p| p.expose().is_empty());
        if self.username.is_empty() != no_password {
            let (set, unset) = if self.username.is_empty() {
                ("password", "username")
            } else {
                ("username", "password")
            };
            super::warning::warn(
                format!("{key}.{set}"),
                format!("not sent: Consul basic auth needs {unset} too"),
            );
        }
        Ok(())
    }
}

/// A `target-template` value parsed (with `key` named in the error); empty means none.
pub fn parse_target_template(
    key: &str,
    template: Option<&str>,
) -> Result<Option<super::gotemplate::GoTemplate>, ConfigError> {
    match template.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => super::gotemplate::GoTemplate::parse(text)
            .map(Some)
            .map_err(|why| {
                ConfigError::invalid(
                    key,
                    &serde_json::Value::String(text.to_string()),
                    format!("is not a template gnomon renders: {why}"),
                )
            }),
    }
}

/// Splits `host[:port]`; see [`super::address::host_optional_port`].
pub use super::address::host_optional_port as split_host_port;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_like_go() {
        assert_eq!(
            GoDuration::parse("60s").unwrap().to_std(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            GoDuration::parse("1m30s").unwrap().to_std(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            GoDuration::parse("1.5h").unwrap().to_std(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            GoDuration::parse("250ms").unwrap().to_std(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(GoDuration::parse("0").unwrap(), GoDuration::default());
        assert!(GoDuration::parse("-1s").unwrap().is_negative());
        assert!(GoDuration::parse("10").is_err());
        assert!(GoDuration::parse("5x").is_err());
        assert!(GoDuration::parse("").is_err());
    }

    #[test]
    fn defaults_match_gnmic() {
        let config: PrometheusOutputConfig = serde_yaml::from_str("type: prometheus").unwrap();
        assert_eq!(config.listen, ":9804");
        assert_eq!(config.normalized_path(), "/metrics");
        assert_eq!(config.effective_expiration(), Some(Duration::from_secs(60)));
        assert_eq!(config.effective_timeout(), Duration::from_secs(10));
        assert_eq!(config.buffer_size, 10_000);
        config.validate("prom").unwrap();
    }

    #[test]
    fn expiration_zero_is_default_and_negative_is_never() {
        let zero: PrometheusOutputConfig = serde_yaml::from_str("expiration: 0s").unwrap();
        assert_eq!(zero.effective_expiration(), Some(Duration::from_secs(60)));
        let never: PrometheusOutputConfig = serde_yaml::from_str("expiration: -1s").unwrap();
        assert_eq!(never.effective_expiration(), None);
        let short: PrometheusOutputConfig = serde_yaml::from_str("expiration: 5s").unwrap();
        assert_eq!(short.effective_expiration(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn service_registration_defaults_and_redaction() {
        let yaml = "service-registration:\n  password: hunter2\n  token: secret-token\n  use-lock: true\n  check-interval: 1s\n";
        let config: PrometheusOutputConfig = serde_yaml::from_str(yaml).unwrap();
        let registration = config.service_registration.clone().unwrap();
        assert_eq!(registration.address, "localhost:8500");
        assert_eq!(registration.effective_name("prom"), "prometheus-prom");
        assert_eq!(
            registration.effective_check_interval(),
            Duration::from_secs(5)
        );
        assert_eq!(registration.deregister_after(), Duration::from_secs(15));
        assert!(registration.use_lock);
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("secret-token"),
            "{debug}"
        );
    }

    #[test]
    fn shards_default_to_one_and_are_checked() {
        let plain: PrometheusOutputConfig =
            serde_yaml::from_str("service-registration: {use-lock: true}").unwrap();
        let registration = plain.service_registration.clone().unwrap();
        assert_eq!(registration.shards, 1);
        assert!(!registration.is_sharded());
        plain.validate("prom").unwrap();
        let sharded: PrometheusOutputConfig =
            serde_yaml::from_str("service-registration: {use-lock: true, shards: 4}").unwrap();
        sharded.validate("prom").unwrap();
        assert!(sharded.service_registration.unwrap().is_sharded());
        for bad in [
            "service-registration: {use-lock: true, shards: 0}",
            "service-registration: {use-lock: true, shards: 5000}",
            "service-registration: {shards: 2}",
        ] {
            let config: PrometheusOutputConfig = serde_yaml::from_str(bad).unwrap();
            let error = config.validate("prom").unwrap_err();
            assert_eq!(
                error.key(),
                Some("outputs.prom.service-registration.shards"),
                "{bad}"
            );
        }
    }

    #[test]
    fn unsupported_modes_are_named() {
        let config: PrometheusOutputConfig = serde_yaml::from_str("cache: {}").unwrap();
        config.validate("prom").unwrap();
        let config: PrometheusOutputConfig =
            serde_yaml::from_str("cache: {type: jetstream}").unwrap();
        assert_eq!(
            config.validate("prom").unwrap_err().key(),
            Some("outputs.prom.cache.type")
        );
        let config: PrometheusOutputConfig = serde_yaml::from_str("listen: nope").unwrap();
        assert_eq!(
            config.validate("prom").unwrap_err().key(),
            Some("outputs.prom.listen")
        );
    }

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("10.0.0.1:9804"), ("10.0.0.1", Some("9804")));
        assert_eq!(split_host_port("exporter"), ("exporter", None));
        assert_eq!(split_host_port("[::1]:80"), ("::1", Some("80")));
    }
}
