//! Global connection settings and per-target configuration, resolved the way gnmic does:
//! a target inherits every global value it does not set, and gets the default port.

use super::duration::{serialize_ns, serialize_opt_ns};
use super::reader::Section;
use super::secret::Secret;
use super::subscription::Encoding;
use super::ConfigError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// gnmic's default gNMI port, appended to addresses without one.
pub const DEFAULT_PORT: u16 = 57400;
/// Default dial / RPC timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default maximum wait between reconnect attempts (gnmic's `retry-timer`).
pub const DEFAULT_RETRY_TIMER: Duration = Duration::from_secs(10);
/// Default per-target buffer of responses.
pub const DEFAULT_BUFFER_SIZE: u64 = 100;
/// Default cluster name.
pub const DEFAULT_CLUSTER_NAME: &str = "default-cluster";

/// Top-level (global) settings that targets inherit.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct GlobalConfig {
    /// Target addresses given at the top level (`address`), used when `targets` is empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub address: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    pub port: u16,
    pub encoding: Encoding,
    pub insecure: bool,
    pub skip_verify: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    #[serde(serialize_with = "serialize_ns")]
    pub timeout: Duration,
    #[serde(serialize_with = "serialize_ns")]
    pub retry: Duration,
    pub cluster_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
    pub debug: bool,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        Self {
            address: Vec::new(),
            username: None,
            password: None,
            token: None,
            port: DEFAULT_PORT,
            encoding: Encoding::Json,
            insecure: false,
            skip_verify: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_server_name: None,
            timeout: DEFAULT_TIMEOUT,
            retry: DEFAULT_RETRY_TIMER,
            cluster_name: DEFAULT_CLUSTER_NAME.to_string(),
            instance_name: None,
            debug: false,
        }
    }
}

impl GlobalConfig {
    /// Reads the global keys from the root section.
    pub fn from_section(root: &Section<'_>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let port = match root.u64("port")? {
            None => defaults.port,
            Some(p) if (1..=65535).contains(&p) => p as u16,
            Some(p) => {
                return Err(ConfigError::invalid(
                    root.key_path("port"),
                    &p.into(),
                    "is not a TCP port (expected 1-65535)",
                ))
            }
        };
        let address = root
            .string_list("address")?
            .iter()
            .flat_map(|a| a.split(','))
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        root.accept(&[
            "log",
            "log-file",
            "log-format",
            "format",
            "max-msg-size",
            "gzip",
            "no-prefix",
            "proxy-from-env",
        ]);
        Ok(Self {
            address,
            username: root.string("username")?,
            password: root.string("password")?.map(Secret::new),
            token: root.string("token")?.map(Secret::new),
            port,
            encoding: Encoding::read(root, "encoding")?.unwrap_or(defaults.encoding),
            insecure: root.bool("insecure")?.unwrap_or(false),
            skip_verify: root.bool("skip-verify")?.unwrap_or(false),
            tls_ca: root.string("tls-ca")?,
            tls_cert: root.string("tls-cert")?,
            tls_key: root.string("tls-key")?,
            tls_server_name: root.string("tls-server-name")?,
            timeout: root.duration("timeout")?.unwrap_or(defaults.timeout),
            retry: root.duration("retry")?.unwrap_or(defaults.retry),
            cluster_name: root
                .string_if_set("cluster-name")?
                .unwrap_or(defaults.cluster_name),
            instance_name: root.string_if_set("instance-name")?,
            debug: root.bool("debug")?.unwrap_or(false),
        })
    }
}

/// One target, with the global values applied.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct TargetConfig {
    pub name: String,
    /// One or more `host:port` (comma-separated, as gnmic allows).
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Never serialized in clear: always `****`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    #[serde(serialize_with = "serialize_ns")]
    pub timeout: Duration,
    pub insecure: bool,
    pub skip_verify: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    pub encoding: Encoding,
    /// Subscription names; empty means all subscriptions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<String>,
    /// Output names; empty means all outputs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// Placement tags (`k=v`) for clustering.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Tags added to every event from this target.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub event_tags: BTreeMap<String, String>,
    /// The longest wait between reconnect attempts.
    #[serde(serialize_with = "serialize_ns")]
    pub retry_timer: Duration,
    /// Accepted for gnmic compatibility; the collector has no per-target queue (responses
    /// go straight into the outputs' bounded queues).
    pub buffer_size: u64,
    /// Optional gnomon-only poll interval default for POLL subscriptions of this target.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_opt_ns"
    )]
    pub poll_interval: Option<Duration>,
}

impl TargetConfig {
    /// The config as gnmic sends it between instances (the coordinator's assignment push and
    /// the cluster store): like the API's JSON, but with the password and token in clear.
    /// Never log or return it from a GET.
    pub fn to_wire_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(object) = value.as_object_mut() {
            for (key, secret) in [("password", &self.password), ("token", &self.token)] {
                if let Some(secret) = secret {
                    object.insert(
                        key.to_string(),
                        serde_json::Value::String(secret.expose().to_string()),
                    );
                }
            }
        }
        value
    }

    /// A target at `address` with every other value from `globals`.
    pub fn new(name: &str, address: &str, globals: &GlobalConfig) -> Self {
        Self {
            name: name.to_string(),
            address: with_default_port(address, globals.port),
            username: globals.username.clone(),
            password: globals.password.clone(),
            token: globals.token.clone(),
            timeout: globals.timeout,
            insecure: globals.insecure,
            skip_verify: globals.skip_verify,
            tls_ca: globals.tls_ca.clone(),
            tls_cert: globals.tls_cert.clone(),
            tls_key: globals.tls_key.clone(),
            tls_server_name: globals.tls_server_name.clone(),
            encoding: globals.encoding,
            subscriptions: Vec::new(),
            outputs: Vec::new(),
            tags: Vec::new(),
            event_tags: BTreeMap::new(),
            retry_timer: DEFAULT_RETRY_TIMER,
            buffer_size: DEFAULT_BUFFER_SIZE,
            poll_interval: None,
        }
    }

    /// Reads a target section. `key` is its map key (the default name and address);
    /// `None` for a posted body, where `name` or `address` must be given.
    pub fn from_section(
        key: Option<&str>,
        section: &Section<'_>,
        globals: &GlobalConfig,
    ) -> Result<Self, ConfigError> {
        let name = section.non_empty_string("name", "a target name")?;
        let address = section.string("address")?;
        let address = match (address, key, &name) {
            (Some(a), _, _) if a.trim().is_empty() => {
                return Err(ConfigError::invalid(
                    section.key_path("address"),
                    &serde_json::Value::String(a),
                    "is empty (expected host:port)",
                ))
            }
            (Some(a), _, _) => a,
            (None, Some(k), _) if !k.trim().is_empty() => k.to_string(),
            (None, _, Some(n)) if key.is_none() => n.clone(),
            _ => {
                return Err(ConfigError::Missing {
                    key: section.key_path("address"),
                    expected: "expected host:port".into(),
                })
            }
        };
        let name = name
            .or_else(|| key.map(str::to_string))
            .unwrap_or_else(|| address.clone());
        let mut target = Self::new(&name, &address, globals);
        if target.address.is_empty() {
            // Only commas and blanks (e.g. a name "," standing in for the address).
            return Err(ConfigError::invalid(
                section.key_path("address"),
                &serde_json::Value::String(address),
                "names no host (expected host:port)",
            ));
        }
        if let Some(v) = section.string("username")? {
            target.username = Some(v);
        }
        if let Some(v) = section.string("password")? {
            target.password = Some(Secret::new(v));
        }
        if let Some(v) = section.string("token")? {
            target.token = Some(Secret::new(v));
        }
        if let Some(v) = section.duration("timeout")? {
            target.timeout = v;
        }
        if let Some(v) = section.bool("insecure")? {
            target.insecure = v;
        }
        if let Some(v) = section.bool("skip-verify")? {
            target.skip_verify = v;
        }
        for (key, field) in [
            ("tls-ca", &mut target.tls_ca),
            ("tls-cert", &mut target.tls_cert),
            ("tls-key", &mut target.tls_key),
            ("tls-server-name", &mut target.tls_server_name),
        ] {
            if let Some(v) = section.string(key)? {
                *field = Some(v).filter(|s| !s.is_empty());
            }
        }
        if let Some(v) = Encoding::read(section, "encoding")? {
            target.encoding = v;
        }
        target.subscriptions = section.string_list("subscriptions")?;
        target.outputs = section.string_list("outputs")?;
        target.tags = section.string_list("tags")?;
        target.event_tags = section.string_map("event-tags")?;
        // gnmic's JSON field is `retry-timer`; older files used `retry`.
        if let Some(v) = section
            .duration("retry-timer")?
            .or(section.duration("retry")?)
        {
            if !v.is_zero() {
                target.retry_timer = v;
            }
        }
        if let Some(v) = section.u64("buffer-size")? {
            if v > 0 {
                target.buffer_size = v;
            }
        }
        target.poll_interval = section.duration("poll-interval")?;
        if target.tls_cert.is_some() != target.tls_key.is_some() {
            let (missing, present) = if target.tls_cert.is_some() {
                ("tls-key", "tls-cert")
            } else {
                ("tls-cert", "tls-key")
            };
            return Err(ConfigError::Missing {
                key: section.key_path(missing),
                expected: format!("required with {present} for mutual TLS"),
            });
        }
        section.accept(&[
            "auth-scheme",
            "gzip",
            "proto-files",
            "proto-dirs",
            "tls-min-version",
            "tls-max-version",
            "tls-version",
            "log-tls-secret",
            "cipher-suites",
            "tcp-keepalive",
            "grpc-keepalive",
            "metadata",
            "proxy",
            "tunnel-target-type",
        ]);
        section.warn_unknown_keys();
        Ok(target)
    }

    /// The addresses to dial, in order.
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        self.address
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
    }
}

/// Appends `:port` to each comma-separated address that has none, as gnmic does with Go's
/// `net.JoinHostPort`: `host` → `host:port`, a bare IPv6 `::1` → `[::1]:port`, `[::1]` →
/// `[::1]:port` (`unix://` kept as is). An address that has a port (even one that is not a
/// number; the dial reports it) or malformed brackets is kept as written, so applying this
/// to its own output changes nothing (members re-parse each other's target configs).
pub fn with_default_port(address: &str, port: u16) -> String {
    address
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| add_port(a, port))
        .collect::<Vec<_>>()
        .join(",")
}

fn add_port(address: &str, port: u16) -> String {
    if address.starts_with("unix://") {
        return address.to_string();
    }
    if let Some(inner) = address.strip_prefix('[') {
        return match inner.strip_suffix(']') {
            Some(host) if !host.contains(['[', ']']) => format!("[{host}]:{port}"),
            _ => address.to_string(),
        };
    }
    match address.matches(':').count() {
        0 => format!("{address}:{port}"),
        1 => address.to_string(),
        _ => format!("[{address}]:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_the_default_port() {
        assert_eq!(with_default_port("10.0.0.1", 57400), "10.0.0.1:57400");
        assert_eq!(with_default_port("10.0.0.1:6030", 57400), "10.0.0.1:6030");
        assert_eq!(with_default_port("a, b:1", 57400), "a:57400,b:1");
        assert_eq!(with_default_port("[::1]", 57400), "[::1]:57400");
        assert_eq!(with_default_port("[::1]:9", 57400), "[::1]:9");
        assert_eq!(with_default_port("unix:///tmp/s", 57400), "unix:///tmp/s");
        assert_eq!(with_default_port("::1", 57400), "[::1]:57400");
    }

    /// Found by the `rest_bodies` fuzzer: a posted target named "," (so its address was
    /// ",") was accepted with an empty address, which its own wire form then failed.
    #[test]
    fn an_address_of_only_commas_is_rejected() {
        for body in [
            serde_json::json!({"name": ","}),
            serde_json::json!({"name": "r1", "address": " , ,"}),
        ] {
            let section = Section::from_value("", &body, false).unwrap();
            let error = TargetConfig::from_section(None, &section, &GlobalConfig::default())
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with("address: ") && error.contains("names no host"),
                "{error}"
            );
        }
    }

    /// Found by the `rest_bodies` fuzzer: a port that is not a number got the default port
    /// appended on every parse, so a target changed each time members exchanged it.
    #[test]
    fn adding_the_default_port_twice_changes_nothing() {
        for address in [
            "10.0.0.1:57s3cret",
            "host:",
            "10.0.0.1",
            "::1",
            "[::1]",
            "[::1]x",
            "[::1",
            "a]:b:c",
            "a, b:1,,[fe80::1]:9",
        ] {
            let once = with_default_port(address, 57400);
            assert_eq!(with_default_port(&once, 57400), once, "{address:?}");
        }
        assert_eq!(
            with_default_port("10.0.0.1:57s3cret", 57400),
            "10.0.0.1:57s3cret"
        );
    }
}
