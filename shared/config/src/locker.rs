//! `clustering.locker` configuration: gnmic's Consul locker keys plus etcd's endpoints and TLS.

use super::duration;
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// Which store backs coordination.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LockerType {
    /// etcd v3 (leases, txns, watches).
    Etcd,
    /// Consul (sessions, KV acquire, agent services with TTL checks).
    Consul,
    /// In-process store, for the single-process demo and tests.
    Memory,
}

/// The `clustering.locker` block. Durations accept Go strings (`"10s"`) or nanoseconds.
#[derive(Deserialize, Clone)]
#[serde(rename_all = "kebab-case")]
pub struct LockerConfig {
    #[serde(rename = "type")]
    pub kind: LockerType,
    /// One endpoint (`host:port` or URL). Consul: the agent; etcd: one member; memory:
    /// the name of the in-process store shared by instances in this process.
    #[serde(default)]
    pub address: Option<String>,
    /// etcd members; used together with `address` when both are set.
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Consul ACL token (sent as `X-Consul-Token`).
    #[serde(default)]
    pub token: Option<String>,
    /// Consul datacenter (`?dc=`).
    #[serde(default)]
    pub datacenter: Option<String>,
    /// Session (Consul) / lease (etcd) time to live.
    #[serde(default = "default_session_ttl", with = "duration")]
    pub session_ttl: Duration,
    /// Lock-delay: after a holder dies, nobody may take its locks for this long.
    /// Graceful releases never apply it.
    #[serde(default = "default_delay", with = "duration")]
    pub delay: Duration,
    /// Pause between acquire attempts and after errors.
    #[serde(default = "default_retry_timer", with = "duration")]
    pub retry_timer: Duration,
    /// How often the session is renewed; defaults to session-ttl/2 (Consul) or /3 (etcd).
    #[serde(default, with = "duration::option")]
    pub renew_period: Option<Duration>,
    /// Timeout of each request to the store.
    #[serde(default = "default_request_timeout", with = "duration")]
    pub request_timeout: Duration,
    /// etcd client TLS.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// gnmic's `debug` key: logs every store call at debug level.
    #[serde(default)]
    pub debug: bool,
}

/// Client TLS for etcd.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "kebab-case")]
pub struct TlsConfig {
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub cert_file: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
    #[serde(default)]
    pub skip_verify: bool,
}

fn default_session_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_delay() -> Duration {
    Duration::from_secs(5)
}
fn default_retry_timer() -> Duration {
    Duration::from_secs(2)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Consul ignores lock-delays above this.
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);

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
            session_ttl: default_session_ttl(),
            delay: default_delay(),
            retry_timer: default_retry_timer(),
            renew_period: None,
            request_timeout: default_request_timeout(),
            tls: None,
            debug: false,
        }
    }

    /// Checks the values that would otherwise fail later and obscurely.
    pub fn validate(&self) -> Result<(), String> {
        if self.session_ttl < Duration::from_secs(1) {
            return Err(format!("session-ttl {:?} is below 1s", self.session_ttl));
        }
        if self.retry_timer.is_zero() {
            return Err("retry-timer must be positive".to_string());
        }
        if self.request_timeout.is_zero() {
            return Err("request-timeout must be positive".to_string());
        }
        if self.username.is_some() != self.password.is_some() {
            return Err("username and password must be set together".to_string());
        }
        if self.kind == LockerType::Etcd && self.etcd_endpoints().is_empty() {
            return Err("etcd locker needs `address` or `endpoints`".to_string());
        }
        Ok(())
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

/// Redacts `password` and `token`.
impl fmt::Debug for LockerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
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
        assert!(err.to_string().contains("invalid duration"), "{err}");
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
    fn validation_names_the_problem() {
        let mut cfg = LockerConfig::new(LockerType::Etcd);
        assert!(cfg.validate().unwrap_err().contains("address"));
        cfg.address = Some("127.0.0.1:2379".into());
        cfg.session_ttl = Duration::from_millis(100);
        assert!(cfg.validate().unwrap_err().contains("session-ttl"));
    }
}
