//! `clustering.locker` configuration: gnmic's Consul and k8s locker keys plus etcd's endpoints
//! and TLS.
//!
//! The k8s locker (`type: k8s`) takes gnmic's keys — `namespace`, `lease-duration` (10 s; read
//! into [`LockerConfig::session_ttl`]), `renew-period` (lease-duration/2), `retry-timer` (2 s),
//! `debug` — plus gnomon's `delay` (default 0 there: gnmic's k8s locker has none),
//! `request-timeout` and `kubeconfig`. Keys of the other lockers (`address`, `session-ttl`,
//! `token`, ...) are refused in a k8s block, naming the key, instead of being ignored.
//!
//! Parsed once, with [`Section`] (errors name `clustering.locker.<key>`); `Deserialize`
//! goes through the same reader, for callers that build a locker from YAML or JSON.

use super::address::{check_host_optional_port, split_host_port};
use super::defaults;
use super::reader::Section;
use super::secret::Secret;
use super::ConfigError;
use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// Which store backs coordination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockerType {
    /// etcd v3 (leases, txns, watches).
    Etcd,
    /// Consul (sessions, KV acquire, agent services with TTL checks).
    Consul,
    /// In-process store, for the single-process demo and tests.
    Memory,
    /// The Kubernetes API (Leases, the EndpointSlices of a headless Service).
    K8s,
}

impl LockerType {
    fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "etcd" => Some(Self::Etcd),
            "consul" => Some(Self::Consul),
            "memory" => Some(Self::Memory),
            "k8s" => Some(Self::K8s),
            _ => None,
        }
    }

    /// The name written in `type:`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Etcd => "etcd",
            Self::Consul => "consul",
            Self::Memory => "memory",
            Self::K8s => "k8s",
        }
    }
}

/// Keys of the etcd and Consul lockers that mean nothing to the k8s locker.
const NOT_K8S_KEYS: [&str; 8] = [
    "address",
    "endpoints",
    "username",
    "password",
    "token",
    "datacenter",
    "session-ttl",
    "tls",
];

/// gnmic's k8s locker default `lease-duration`.
pub const K8S_LEASE_DURATION: Duration = Duration::from_secs(10);

/// Client TLS of the store: the one TLS-files type (see [`crate::TlsFiles`]).
pub type TlsConfig = crate::TlsFiles;

/// The `clustering.locker` block. Durations accept Go strings (`"10s"`) or nanoseconds.
#[derive(Clone, PartialEq)]
pub struct LockerConfig {
    pub kind: LockerType,
    /// One endpoint (`host:port` or URL). Consul: the agent; etcd: one member; memory:
    /// the name of the in-process store shared by instances in this process.
    pub address: Option<String>,
    /// etcd members; used together with `address` when both are set.
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Consul ACL token (sent as `X-Consul-Token`).
    pub token: Option<Secret>,
    /// Consul datacenter (`?dc=`).
    pub datacenter: Option<String>,
    /// Session (Consul) / lease (etcd) time to live.
    pub session_ttl: Duration,
    /// Lock-delay: after a holder dies, nobody may take its locks for this long.
    /// Graceful releases never apply it.
    pub delay: Duration,
    /// Pause between acquire attempts and after errors.
    pub retry_timer: Duration,
    /// How often the session is renewed; defaults to session-ttl/2 (Consul) or /3 (etcd).
    pub renew_period: Option<Duration>,
    /// Timeout of each request to the store.
    pub request_timeout: Duration,
    /// etcd client TLS.
    pub tls: Option<TlsConfig>,
    /// gnmic's `debug` key: logs every store call at debug level.
    pub debug: bool,
    /// k8s: the namespace of the Leases and of the headless Service (gnmic's `namespace`).
    /// Unset: the kubeconfig context's namespace, or the pod's own (in-cluster), else
    /// `default`.
    pub namespace: Option<String>,
    /// k8s (gnomon): a kubeconfig file to use instead of `KUBECONFIG` / `~/.kube/config` /
    /// the in-cluster ServiceAccount.
    pub kubeconfig: Option<String>,
}

/// Consul ignores lock-delays above this.
pub const MAX_LOCK_DELAY: Duration = defaults::MAX_LOCK_DELAY;

impl LockerConfig {
    /// A configuration of `kind` with every other key at its default.
    pub fn new(kind: LockerType) -> Self {
        Self {
            kind,
            address: None,
            endpoints: Vec::new(),
            username: None,
            password: None,
            token: None,
            datacenter: None,
            session_ttl: if kind == LockerType::K8s {
                K8S_LEASE_DURATION
            } else {
                defaults::LOCKER_SESSION_TTL
            },
            delay: if kind == LockerType::K8s {
                Duration::ZERO
            } else {
                defaults::LOCKER_DELAY
            },
            retry_timer: defaults::LOCKER_RETRY_TIMER,
            renew_period: None,
            request_timeout: defaults::LOCKER_REQUEST_TIMEOUT,
            tls: None,
            debug: false,
            namespace: None,
            kubeconfig: None,
        }
    }

    /// Reads a `locker` section (its path names every key in errors) and validates it.
    pub fn from_section(section: &Section<'_>) -> Result<Self, ConfigError> {
        let kind = match section.string("type")? {
            Some(text) => LockerType::parse(&text).ok_or_else(|| {
                ConfigError::invalid(
                    section.key_path("type"),
                    &Value::String(text),
                    "is not a locker type (expected etcd, consul, k8s or memory)",
                )
            })?,
            None => {
                return Err(ConfigError::Missing {
                    key: section.key_path("type"),
                    expected: "expected etcd, consul, k8s or memory".into(),
                })
            }
        };
        if kind == LockerType::K8s {
            return Self::k8s_from_section(section);
        }
        let mut config = Self::new(kind);
        config.address = section.string_if_set("address")?;
        config.endpoints = section.string_list("endpoints")?;
        config.username = section.string_if_set("username")?;
        config.password = section.string_if_set("password")?.map(Secret::from);
        config.token = section.string_if_set("token")?.map(Secret::from);
        config.datacenter = section.string_if_set("datacenter")?;
        let positive = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
            Ok(section
                .duration(key)?
                .filter(|d| !d.is_zero())
                .unwrap_or(default))
        };
        config.session_ttl = positive("session-ttl", config.session_ttl)?;
        config.delay = section.duration("delay")?.unwrap_or(config.delay);
        config.retry_timer = positive("retry-timer", config.retry_timer)?;
        config.renew_period = section.duration("renew-period")?;
        config.request_timeout = positive("request-timeout", config.request_timeout)?;
        config.debug = section.bool("debug")?.unwrap_or(false);
        if let Some(files) = crate::TlsFiles::read(section, "tls")? {
            if files.skip_verify && kind == LockerType::Etcd {
                return Err(ConfigError::invalid(
                    format!("{}.skip-verify", section.key_path("tls")),
                    &Value::Bool(true),
                    "is not supported by the etcd backend (expected false; set tls.ca-file)",
                ));
            }
            config.tls = Some(files);
        }
        config.validate_at(section)?;
        section.warn_unknown_keys();
        Ok(config)
    }

    /// A `type: k8s` block: gnmic's k8s keys plus gnomon's `delay`, `request-timeout` and
    /// `kubeconfig`.
    fn k8s_from_section(section: &Section<'_>) -> Result<Self, ConfigError> {
        for key in NOT_K8S_KEYS {
            if let Some(value) = section.raw(key) {
                let hint = if key == "session-ttl" {
                    "is not a k8s locker key (expected lease-duration)"
                } else {
                    "is not used by the k8s locker (the API server and its credentials come \
                     from the kubeconfig or the pod's ServiceAccount; set kubeconfig to choose \
                     a file)"
                };
                return Err(ConfigError::invalid(section.key_path(key), value, hint));
            }
        }
        let mut config = Self::new(LockerType::K8s);
        config.namespace = section.string_if_set("namespace")?;
        config.kubeconfig = section.string_if_set("kubeconfig")?;
        let positive = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
            Ok(section
                .duration(key)?
                .filter(|d| !d.is_zero())
                .unwrap_or(default))
        };
        config.session_ttl = positive("lease-duration", config.session_ttl)?;
        config.delay = section.duration("delay")?.unwrap_or(config.delay);
        config.retry_timer = positive("retry-timer", config.retry_timer)?;
        config.renew_period = section.duration("renew-period")?;
        config.request_timeout = positive("request-timeout", config.request_timeout)?;
        config.debug = section.bool("debug")?.unwrap_or(false);
        config.validate_at(section)?;
        section.warn_unknown_keys();
        Ok(config)
    }

    /// Parses a locker from a JSON value (`path` names it in errors).
    pub fn from_value(path: &str, value: &Value) -> Result<Self, ConfigError> {
        Self::from_section(&Section::from_value(path, value)?)
    }

    fn validate_at(&self, section: &Section<'_>) -> Result<(), ConfigError> {
        let ns = |d: Duration| Value::String(super::duration::format_go_duration(d));
        if self.kind == LockerType::K8s {
            return self.validate_k8s(section);
        }
        if self.session_ttl < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                section.key_path("session-ttl"),
                &ns(self.session_ttl),
                "is below 1s (expected at least 1s)",
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            let missing = if self.username.is_some() {
                "password"
            } else {
                "username"
            };
            return Err(ConfigError::Missing {
                key: section.key_path(missing),
                expected: "username and password go together".into(),
            });
        }
        if self.kind == LockerType::Etcd && self.etcd_endpoints().is_empty() {
            return Err(ConfigError::Missing {
                key: section.key_path("address"),
                expected: "the etcd locker needs `address` or `endpoints`".into(),
            });
        }
        match self.kind {
            LockerType::Etcd => {
                for (i, endpoint) in self.endpoints.iter().enumerate() {
                    check_endpoint(&format!("{}[{i}]", section.key_path("endpoints")), endpoint)?;
                }
                if let Some(address) = &self.address {
                    check_endpoint(&section.key_path("address"), address)?;
                }
            }
            LockerType::Consul => {
                if let Some(address) = &self.address {
                    check_endpoint(&section.key_path("address"), address)?;
                }
            }
            // The memory store's address is a name.
            LockerType::Memory | LockerType::K8s => {}
        }
        Ok(())
    }

    fn validate_k8s(&self, section: &Section<'_>) -> Result<(), ConfigError> {
        let ns = |d: Duration| Value::String(super::duration::format_go_duration(d));
        // Lease.spec.leaseDurationSeconds is a whole number of seconds: a contender judges
        // expiry by it, so the holder must not believe in a longer lease than it writes.
        if self.session_ttl < Duration::from_secs(1) || self.session_ttl.subsec_nanos() != 0 {
            return Err(ConfigError::invalid(
                section.key_path("lease-duration"),
                &ns(self.session_ttl),
                "must be a whole number of seconds, at least 1s (Lease.spec.leaseDurationSeconds)",
            ));
        }
        if self.session_ttl > Duration::from_secs(i32::MAX as u64) {
            return Err(ConfigError::invalid(
                section.key_path("lease-duration"),
                &ns(self.session_ttl),
                "is too long for Lease.spec.leaseDurationSeconds",
            ));
        }
        if let Some(namespace) = &self.namespace {
            let valid = !namespace.is_empty()
                && namespace.len() <= 63
                && namespace
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !namespace.starts_with('-')
                && !namespace.ends_with('-');
            if !valid {
                return Err(ConfigError::invalid(
                    section.key_path("namespace"),
                    &Value::String(namespace.clone()),
                    "is not a Kubernetes namespace name (lowercase letters, digits and '-', at \
                     most 63, starting and ending with a letter or digit)",
                ));
            }
        }
        if self.kubeconfig.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::invalid(
                section.key_path("kubeconfig"),
                &Value::String(String::new()),
                "is empty (expected the path of a kubeconfig file)",
            ));
        }
        Ok(())
    }

    /// Checks the values that would otherwise fail later and obscurely.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_at(&Section::empty("clustering.locker"))
    }

    /// The renew period in use: the configured one when shorter than the TTL (gnmic forces
    /// ttl/2 otherwise), else `ttl / default_divisor`.
    pub fn effective_renew_period(&self, default_divisor: u32) -> Duration {
        match self.renew_period {
            Some(period) if !period.is_zero() && period < self.session_ttl => period,
            _ => self.session_ttl / default_divisor,
        }
    }

    /// The lock-delay in use (Consul caps it at 60s; so do the other backends).
    pub fn effective_delay(&self) -> Duration {
        self.delay.min(MAX_LOCK_DELAY)
    }

    /// etcd endpoints: `endpoints` then `address`, each given `http://` (or `https://` with TLS)
    /// when it has no scheme.
    pub fn etcd_endpoints(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.endpoints
            .iter()
            .chain(self.address.iter())
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                let e = e.trim();
                if e.contains("://") {
                    e.to_string()
                } else {
                    format!("{scheme}://{e}")
                }
            })
            .collect()
    }
}

/// A store endpoint: `host[:port]`, optionally as an `http://` / `https://` URL.
fn check_endpoint(key: &str, endpoint: &str) -> Result<(), ConfigError> {
    let rest = match endpoint.trim().split_once("://") {
        Some(("http" | "https", rest)) => rest,
        Some((scheme, _)) => {
            return Err(ConfigError::invalid(
                key,
                &Value::String(endpoint.to_string()),
                format!("has scheme {scheme:?} (expected host:port, http:// or https://)"),
            ))
        }
        None => endpoint.trim(),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains(':') && !rest.starts_with('[') && split_host_port(rest).is_none() {
        return Err(ConfigError::invalid(
            key,
            &Value::String(endpoint.to_string()),
            "is not host:port (expected host:port)",
        ));
    }
    check_host_optional_port(key, rest)
}

/// Shown (API, `--print-config`-like dumps) with `password` and `token` as `****`.
impl serde::Serialize for LockerConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let ns = |d: &Duration| d.as_nanos() as u64;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", self.kind.name())?;
        if self.kind == LockerType::K8s {
            if let Some(namespace) = &self.namespace {
                map.serialize_entry("namespace", namespace)?;
            }
            if let Some(kubeconfig) = &self.kubeconfig {
                map.serialize_entry("kubeconfig", kubeconfig)?;
            }
            map.serialize_entry("lease-duration", &ns(&self.session_ttl))?;
            map.serialize_entry("delay", &ns(&self.delay))?;
            map.serialize_entry("retry-timer", &ns(&self.retry_timer))?;
            if let Some(period) = &self.renew_period {
                map.serialize_entry("renew-period", &ns(period))?;
            }
            map.serialize_entry("request-timeout", &ns(&self.request_timeout))?;
            map.serialize_entry("debug", &self.debug)?;
            return map.end();
        }
        if let Some(address) = &self.address {
            map.serialize_entry("address", address)?;
        }
        if !self.endpoints.is_empty() {
            map.serialize_entry("endpoints", &self.endpoints)?;
        }
        if let Some(username) = &self.username {
            map.serialize_entry("username", username)?;
        }
        if self.password.is_some() {
            map.serialize_entry("password", super::REDACTED)?;
        }
        if self.token.is_some() {
            map.serialize_entry("token", super::REDACTED)?;
        }
        if let Some(datacenter) = &self.datacenter {
            map.serialize_entry("datacenter", datacenter)?;
        }
        map.serialize_entry("session-ttl", &ns(&self.session_ttl))?;
        map.serialize_entry("delay", &ns(&self.delay))?;
        map.serialize_entry("retry-timer", &ns(&self.retry_timer))?;
        if let Some(period) = &self.renew_period {
            map.serialize_entry("renew-period", &ns(period))?;
        }
        map.serialize_entry("request-timeout", &ns(&self.request_timeout))?;
        if let Some(tls) = &self.tls {
            let mut shown = serde_json::Map::new();
            for (key, value) in [
                ("ca-file", &tls.ca_file),
                ("cert-file", &tls.cert_file),
                ("key-file", &tls.key_file),
            ] {
                if let Some(value) = value {
                    shown.insert(key.into(), Value::String(value.clone()));
                }
            }
            shown.insert("skip-verify".into(), Value::Bool(tls.skip_verify));
            map.serialize_entry("tls", &shown)?;
        }
        map.serialize_entry("debug", &self.debug)?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for LockerConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_value("locker", &value).map_err(serde::de::Error::custom)
    }
}

/// Redacts `password` and `token`.
impl fmt::Debug for LockerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<Secret>| s.as_ref().map(|_| super::REDACTED);
        f.debug_struct("LockerConfig")
            .field("type", &self.kind)
            .field("address", &self.address)
            .field("endpoints", &self.endpoints)
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("token", &redact(&self.token))
            .field("datacenter", &self.datacenter)
            .field("session_ttl", &self.session_ttl)
            .field("delay", &self.delay)
            .field("retry_timer", &self.retry_timer)
            .field("renew_period", &self.renew_period)
            .field("request_timeout", &self.request_timeout)
            .field("tls", &self.tls)
            .field("debug", &self.debug)
            .field("namespace", &self.namespace)
            .field("kubeconfig", &self.kubeconfig)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gnmic_consul_block_with_defaults() {
        let cfg: LockerConfig = serde_yaml::from_str(
            "type: consul\naddress: 10.0.0.1:8500\ndatacenter: dc2\ntoken: s3cret\nsession-ttl: 15s\nrenew-period: 5s\n",
        )
        .unwrap();
        assert_eq!(cfg.kind, LockerType::Consul);
        assert_eq!(cfg.session_ttl, Duration::from_secs(15));
        assert_eq!(cfg.delay, Duration::from_secs(5));
        assert_eq!(cfg.retry_timer, Duration::from_secs(2));
        assert_eq!(cfg.effective_renew_period(2), Duration::from_secs(5));
        assert_eq!(cfg.datacenter.as_deref(), Some("dc2"));
        cfg.validate().unwrap();
    }

    #[test]
    fn renew_period_not_below_ttl_falls_back_to_half() {
        let cfg: LockerConfig =
            serde_yaml::from_str("type: consul\nsession-ttl: 10s\nrenew-period: 20s\n").unwrap();
        assert_eq!(cfg.effective_renew_period(2), Duration::from_secs(5));
    }

    #[test]
    fn accepts_nanosecond_integers_and_rejects_garbage() {
        let cfg: LockerConfig =
            serde_yaml::from_str("type: etcd\naddress: 127.0.0.1:2379\ndelay: 2000000000\n")
                .unwrap();
        assert_eq!(cfg.delay, Duration::from_secs(2));
        assert_eq!(
            cfg.etcd_endpoints(),
            vec!["http://127.0.0.1:2379".to_string()]
        );
        let err = serde_yaml::from_str::<LockerConfig>("type: etcd\nsession-ttl: soon\n")
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("locker.session-ttl: \"soon\""),
            "{err}"
        );
        assert!(serde_yaml::from_str::<LockerConfig>("type: zookeeper\n").is_err());
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let cfg: LockerConfig = serde_yaml::from_str(
            "type: etcd\naddress: a:1\nusername: root\npassword: hunter2\ntoken: tok-123\n",
        )
        .unwrap();
        let printed = format!("{cfg:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("tok-123"),
            "{printed}"
        );
        assert!(printed.contains("root"));
    }

    #[test]
    fn parses_gnmic_k8s_block_with_gnmic_defaults() {
        let cfg: LockerConfig = serde_yaml::from_str("type: k8s\nnamespace: telemetry\n").unwrap();
        assert_eq!(cfg.kind, LockerType::K8s);
        assert_eq!(cfg.namespace.as_deref(), Some("telemetry"));
        assert_eq!(cfg.session_ttl, Duration::from_secs(10), "lease-duration");
        assert_eq!(cfg.retry_timer, Duration::from_secs(2));
        assert_eq!(
            cfg.delay,
            Duration::ZERO,
            "gnmic's k8s locker has no lock-delay"
        );
        assert_eq!(cfg.effective_renew_period(2), Duration::from_secs(5));
        let cfg: LockerConfig = serde_yaml::from_str(
            "type: k8s\nlease-duration: 4s\nrenew-period: 1s\nretry-timer: 500ms\ndebug: true\nkubeconfig: /tmp/kc\n",
        )
        .unwrap();
        assert_eq!(cfg.session_ttl, Duration::from_secs(4));
        assert_eq!(cfg.effective_renew_period(2), Duration::from_secs(1));
        assert_eq!(cfg.retry_timer, Duration::from_millis(500));
        assert!(cfg.debug);
        assert_eq!(cfg.kubeconfig.as_deref(), Some("/tmp/kc"));
        // What it shows is what it reads.
        let shown = serde_json::to_value(&cfg).unwrap();
        let again = LockerConfig::from_value("locker", &shown).unwrap();
        assert_eq!(again, cfg);
    }

    #[test]
    fn k8s_errors_name_the_key() {
        let error = |text: &str| {
            serde_yaml::from_str::<LockerConfig>(text)
                .err()
                .unwrap()
                .to_string()
        };
        let text = error("type: k8s\nlease-duration: 1500ms\n");
        assert!(text.contains("locker.lease-duration"), "{text}");
        assert!(text.contains("whole number of seconds"), "{text}");
        let text = error("type: k8s\nsession-ttl: 10s\n");
        assert!(text.contains("locker.session-ttl"), "{text}");
        assert!(text.contains("expected lease-duration"), "{text}");
        let text = error("type: k8s\naddress: 10.0.0.1:443\n");
        assert!(text.contains("locker.address"), "{text}");
        assert!(text.contains("kubeconfig"), "{text}");
        let text = error("type: k8s\nnamespace: Telemetry_1\n");
        assert!(text.contains("locker.namespace"), "{text}");
        let text = error("type: kubernetes\n");
        assert!(text.contains("etcd, consul, k8s or memory"), "{text}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut cfg = LockerConfig::new(LockerType::Etcd);
        assert_eq!(
            cfg.validate().unwrap_err().key(),
            Some("clustering.locker.address")
        );
        cfg.address = Some("127.0.0.1:2379".into());
        cfg.session_ttl = Duration::from_millis(100);
        assert_eq!(
            cfg.validate().unwrap_err().key(),
            Some("clustering.locker.session-ttl")
        );
    }
}
