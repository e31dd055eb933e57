//! Global connection settings and per-target configuration, resolved the way gnmic does:
//! a target inherits every global value it does not set, and gets the default port.

use super::address::host_port_problem;
use super::defaults;
use super::duration::{serialize_ns, serialize_opt_ns, GoDuration};
use super::names::{self, NameKind};
use super::reader::Section;
use super::secret::Secret;
use super::subscription::Encoding;
use super::ConfigError;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// gnmic's default gNMI port, appended to addresses without one.
pub const DEFAULT_PORT: u16 = defaults::PORT;
/// Default dial / RPC timeout.
pub const DEFAULT_TIMEOUT: Duration = defaults::TIMEOUT;
/// Default maximum wait between reconnect attempts (gnmic's `retry-timer`).
pub const DEFAULT_RETRY_TIMER: Duration = defaults::RETRY_TIMER;
/// Default per-target buffer of responses.
pub const DEFAULT_BUFFER_SIZE: u64 = defaults::TARGET_BUFFER_SIZE;
/// Default cluster name.
pub const DEFAULT_CLUSTER_NAME: &str = defaults::CLUSTER_NAME;

/// A TLS protocol version gnomon can negotiate (rustls implements 1.2 and 1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

impl Serialize for TlsVersion {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match self {
            Self::V1_2 => "1.2",
            Self::V1_3 => "1.3",
        })
    }
}

impl TlsVersion {
    fn read(section: &Section<'_>, key: &str) -> Result<Option<Self>, ConfigError> {
        let Some(text) = section.string_if_set(key)? else {
            return Ok(None);
        };
        let normalized = text.trim().to_ascii_lowercase();
        let number = normalized
            .strip_prefix("tls")
            .unwrap_or(&normalized)
            .trim_start_matches(['v', ' ']);
        match number {
            "1.2" | "12" => Ok(Some(Self::V1_2)),
            "1.3" | "13" => Ok(Some(Self::V1_3)),
            "1.0" | "1" | "10" | "1.1" | "11" => Err(ConfigError::invalid(
                section.key_path(key),
                &Value::String(text),
                "is not supported: gnomon's TLS (rustls) refuses TLS 1.0 and 1.1 (expected 1.2 or 1.3)",
            )),
            _ => Err(ConfigError::invalid(
                section.key_path(key),
                &Value::String(text),
                "is not a TLS version (expected 1.2 or 1.3)",
            )),
        }
    }
}

/// gnmic's cipher suite names that gnomon's TLS (rustls with ring) implements, and the TLS
/// version each belongs to.
pub const SUPPORTED_CIPHER_SUITES: [(&str, TlsVersion); 9] = [
    ("TLS_AES_128_GCM_SHA256", TlsVersion::V1_3),
    ("TLS_AES_256_GCM_SHA384", TlsVersion::V1_3),
    ("TLS_CHACHA20_POLY1305_SHA256", TlsVersion::V1_3),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", TlsVersion::V1_2),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", TlsVersion::V1_2),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        TlsVersion::V1_2,
    ),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", TlsVersion::V1_2),
    ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", TlsVersion::V1_2),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        TlsVersion::V1_2,
    ),
];

/// gnmic's cipher suite names rustls does not implement (CBC, RSA key exchange, 3DES, RC4).
const LEGACY_CIPHER_SUITES: [&str; 13] = [
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
];

/// gnmic's `grpc-keepalive` block.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct GrpcKeepalive {
    /// Ping after this long without activity (at least 10 s, as gnmic).
    #[serde(serialize_with = "serialize_ns")]
    pub time: Duration,
    /// Close the connection when a ping is not answered within this.
    #[serde(serialize_with = "serialize_ns")]
    pub timeout: Duration,
    /// Ping even without an active RPC.
    pub permit_without_stream: bool,
}

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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_scheme: Option<String>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_min_version: Option<TlsVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_max_version: Option<TlsVersion>,
    pub gzip: bool,
    pub max_msg_size: usize,
    #[serde(serialize_with = "serialize_ns")]
    pub timeout: Duration,
    #[serde(serialize_with = "serialize_ns")]
    pub retry: Duration,
    pub cluster_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
    /// gnmic's `debug`: the binary raises the log level to debug (unless `RUST_LOG` is set).
    pub debug: bool,
    /// gnmic's `log-format` (`json` or `text`): the binary's log format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        Self {
            address: Vec::new(),
            username: None,
            password: None,
            token: None,
            auth_scheme: None,
            port: DEFAULT_PORT,
            encoding: Encoding::Json,
            insecure: false,
            skip_verify: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_server_name: None,
            tls_min_version: None,
            tls_max_version: None,
            gzip: false,
            max_msg_size: defaults::MAX_MSG_SIZE,
            timeout: DEFAULT_TIMEOUT,
            retry: DEFAULT_RETRY_TIMER,
            cluster_name: DEFAULT_CLUSTER_NAME.to_string(),
            instance_name: None,
            debug: false,
            log_format: None,
        }
    }
}

/// Reads `tls-min-version`, `tls-max-version` and `tls-version` (which sets both).
fn tls_versions(
    section: &Section<'_>,
    mut min: Option<TlsVersion>,
    mut max: Option<TlsVersion>,
) -> Result<(Option<TlsVersion>, Option<TlsVersion>), ConfigError> {
    if let Some(v) = TlsVersion::read(section, "tls-min-version")? {
        min = Some(v);
    }
    if let Some(v) = TlsVersion::read(section, "tls-max-version")? {
        max = Some(v);
    }
    if let Some(v) = TlsVersion::read(section, "tls-version")? {
        min = Some(v);
        max = Some(v);
    }
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            return Err(ConfigError::invalid(
                section.key_path("tls-min-version"),
                &serde_json::to_value(lo).unwrap_or(Value::Null),
                "is above tls-max-version (expected min <= max)",
            ));
        }
    }
    Ok((min, max))
}

/// gnmic keys that only concern its command-line printing or features gnomon lacks.
fn warn_unsupported_target_keys(section: &Section<'_>) {
    section.unsupported("proxy", "targets are dialed directly (no SOCKS5 proxy)");
    section.unsupported("proto-files", "ProtoBytes values are not decoded");
    section.unsupported("proto-dirs", "ProtoBytes values are not decoded");
    section.unsupported_unless(
        "log-tls-secret",
        &Value::Bool(false),
        "TLS session secrets are never written to a file",
    );
    section.unsupported(
        "tunnel-target-type",
        "gRPC tunnel targets are not supported",
    );
    for key in ["grpc-read-buffer-size", "grpc-write-buffer-size"] {
        section.unsupported(key, "the HTTP/2 client's buffers are not configurable");
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
        let (tls_min_version, tls_max_version) = tls_versions(root, None, None)?;
        let log_format = match root.string_if_set("log-format")? {
            None => None,
            Some(f) if matches!(f.trim().to_ascii_lowercase().as_str(), "json" | "text") => {
                Some(f.trim().to_ascii_lowercase())
            }
            Some(f) => {
                return Err(ConfigError::invalid(
                    root.key_path("log-format"),
                    &Value::String(f),
                    "is not a log format (expected json or text)",
                ))
            }
        };
        let max_msg_size = match root.u64("max-msg-size")? {
            None | Some(0) => defaults.max_msg_size,
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        // Logging and command-line printing keys of gnmic.
        root.unsupported_unless("log", &Value::Bool(true), "gnomon always logs to stderr");
        for key in [
            "log-file",
            "log-max-size",
            "log-max-backups",
            "log-compress",
        ] {
            root.unsupported(key, "gnomon logs to stderr only");
        }
        root.unsupported(
            "format",
            "it selects gnmic's command-line output format; each gnomon output has its own format",
        );
        root.unsupported("no-prefix", "it only affects gnmic's command-line output");
        root.unsupported_unless(
            "proxy-from-env",
            &Value::Bool(false),
            "targets are dialed directly (no HTTP proxy)",
        );
        root.unsupported(
            "prometheus-address",
            "gnomon's own metrics are on the API's /metrics",
        );
        root.unsupported("targets-file", "the file target loader is not supported");
        for key in ["dir", "file", "exclude"] {
            root.unsupported(key, "YANG files are not used");
        }
        warn_unsupported_target_keys(root);
        Ok(Self {
            address,
            username: root.string("username")?,
            password: root.string("password")?.map(Secret::new),
            token: root.string("token")?.map(Secret::new),
            auth_scheme: root.string_if_set("auth-scheme")?,
            port,
            encoding: Encoding::read(root, "encoding")?.unwrap_or(defaults.encoding),
            insecure: root.bool("insecure")?.unwrap_or(false),
            skip_verify: root.bool("skip-verify")?.unwrap_or(false),
            tls_ca: root.string_if_set("tls-ca")?,
            tls_cert: root.string_if_set("tls-cert")?,
            tls_key: root.string_if_set("tls-key")?,
            tls_server_name: root.string_if_set("tls-server-name")?,
            tls_min_version,
            tls_max_version,
            gzip: root.bool("gzip")?.unwrap_or(false),
            max_msg_size,
            timeout: root.duration("timeout")?.unwrap_or(defaults.timeout),
            retry: root
                .duration("retry")?
                .filter(|d| !d.is_zero())
                .unwrap_or(defaults.retry),
            cluster_name: root
                .string_if_set("cluster-name")?
                .unwrap_or(defaults.cluster_name),
            instance_name: root.string_if_set("instance-name")?,
            debug: root.bool("debug")?.unwrap_or(false),
            log_format,
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
    /// gnmic's `auth-scheme`: credentials go as `authorization: <scheme> base64(user:pass)`
    /// instead of the `username` / `password` metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_scheme: Option<String>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_min_version: Option<TlsVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_max_version: Option<TlsVersion>,
    /// gnmic's names of the cipher suites to offer, in order (empty: rustls' defaults).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
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
    /// gRPC metadata sent with every request.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// gzip-compress requests and accept gzip-compressed responses.
    pub gzip: bool,
    /// TCP keepalive: unset or 0 means 15 s (Go's default), negative means off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<GoDuration>,
    /// HTTP/2 keepalive pings (gnomon pings every 30 s with a 20 s timeout without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_keepalive: Option<GrpcKeepalive>,
    /// Initial HTTP/2 connection window (bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_conn_window_size: Option<u32>,
    /// Initial HTTP/2 stream window (bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_window_size: Option<u32>,
    /// The longest wait between reconnect attempts.
    #[serde(serialize_with = "serialize_ns")]
    pub retry_timer: Duration,
    /// Shown for gnmic compatibility; the collector has no per-target queue (responses go
    /// straight into the outputs' bounded queues). Another value gives a warning.
    pub buffer_size: u64,
    /// Optional gnomon-only poll interval default for POLL subscriptions of this target.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_opt_ns"
    )]
    pub poll_interval: Option<Duration>,
    /// The largest message accepted from the target (the top-level `max-msg-size`; not part
    /// of a target's own JSON).
    #[serde(skip)]
    pub max_msg_size: usize,
}

/// Checks a `metadata` entry: gRPC ASCII metadata (binary `-bin` keys are not supported).
fn check_metadata(
    section: &Section<'_>,
    metadata: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (key, value) in metadata {
        let path = format!("{}.{key}", section.key_path("metadata"));
        let key_ok = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !key_ok || key.to_ascii_lowercase().starts_with("grpc-") {
            return Err(ConfigError::invalid(
                path,
                &Value::String(key.clone()),
                "is not a gRPC metadata key (expected letters, digits, '-', '_', '.'; not starting with grpc-)",
            ));
        }
        if key.to_ascii_lowercase().ends_with("-bin") {
            return Err(ConfigError::invalid(
                path,
                &Value::String(key.clone()),
                "is a binary metadata key, which gnomon does not support (expected a text key)",
            ));
        }
        if !value.chars().all(|c| (' '..='~').contains(&c)) {
            // The value may be a credential: not repeated.
            return Err(ConfigError::Invalid {
                key: path,
                value: super::REDACTED.to_string(),
                problem:
                    "contains characters gRPC text metadata cannot carry (expected printable ASCII)"
                        .into(),
            });
        }
    }
    Ok(())
}

fn check_cipher_suites(section: &Section<'_>, target: &TargetConfig) -> Result<(), ConfigError> {
    if target.cipher_suites.is_empty() {
        return Ok(());
    }
    let key = section.key_path("cipher-suites");
    let allowed = |version: TlsVersion| {
        target.tls_min_version.is_none_or(|min| version >= min)
            && target.tls_max_version.is_none_or(|max| version <= max)
    };
    let mut usable = 0;
    for name in &target.cipher_suites {
        match SUPPORTED_CIPHER_SUITES.iter().find(|(n, _)| n == name) {
            Some((_, version)) if allowed(*version) => usable += 1,
            Some(_) => {}
            None if LEGACY_CIPHER_SUITES.contains(&name.as_str()) => {
                super::warning::warn(
                    &key,
                    format!("{name} is not supported by gnomon's TLS (rustls); it is not offered"),
                );
            }
            None => {
                return Err(ConfigError::invalid(
                    key,
                    &Value::String(name.clone()),
                    format!(
                        "is not a cipher suite gnomon knows (supported: {})",
                        SUPPORTED_CIPHER_SUITES
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        }
    }
    if usable == 0 {
        return Err(ConfigError::invalid(
            key,
            &serde_json::to_value(&target.cipher_suites).unwrap_or(Value::Null),
            "leaves no cipher suite gnomon can offer for the allowed TLS versions",
        ));
    }
    Ok(())
}

fn window_size(section: &Section<'_>, key: &str) -> Result<Option<u32>, ConfigError> {
    match section.i64(key)? {
        None => Ok(None),
        // gnmic: values below 64K are ignored.
        Some(n) if n < i64::from(defaults::MIN_WINDOW_SIZE) => Ok(None),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| {
            ConfigError::invalid(
                section.key_path(key),
                &n.into(),
                "is too large (expected at most 4294967295)",
            )
        }),
    }
}

fn grpc_keepalive(section: &Section<'_>) -> Result<Option<GrpcKeepalive>, ConfigError> {
    let Some(block) = section.section("grpc-keepalive")? else {
        return Ok(None);
    };
    let time = block
        .duration("time")?
        .unwrap_or(defaults::GRPC_KEEPALIVE_MIN_TIME)
        .max(defaults::GRPC_KEEPALIVE_MIN_TIME);
    let timeout = block
        .duration("timeout")?
        .filter(|d| !d.is_zero())
        .unwrap_or(defaults::GRPC_KEEPALIVE_TIMEOUT);
    let permit_without_stream = block.bool("permit-without-stream")?.unwrap_or(false);
    block.warn_unknown_keys();
    Ok(Some(GrpcKeepalive {
        time,
        timeout,
        permit_without_stream,
    }))
}

impl TargetConfig {
    /// The config as gnmic sends it between instances (the coordinator's assignment push and
    /// the cluster store): like the API's JSON, but with the password and token in clear.
    /// Never log or return it from a GET.
    pub fn to_wire_json(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(object) = value.as_object_mut() {
            for (key, secret) in [("password", &self.password), ("token", &self.token)] {
                if let Some(secret) = secret {
                    object.insert(key.to_string(), Value::String(secret.expose().to_string()));
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
            auth_scheme: globals.auth_scheme.clone(),
            timeout: globals.timeout,
            insecure: globals.insecure,
            skip_verify: globals.skip_verify,
            tls_ca: globals.tls_ca.clone(),
            tls_cert: globals.tls_cert.clone(),
            tls_key: globals.tls_key.clone(),
            tls_server_name: globals.tls_server_name.clone(),
            tls_min_version: globals.tls_min_version,
            tls_max_version: globals.tls_max_version,
            cipher_suites: Vec::new(),
            encoding: globals.encoding,
            subscriptions: Vec::new(),
            outputs: Vec::new(),
            tags: Vec::new(),
            event_tags: BTreeMap::new(),
            metadata: BTreeMap::new(),
            gzip: globals.gzip,
            tcp_keepalive: None,
            grpc_keepalive: None,
            grpc_conn_window_size: None,
            grpc_window_size: None,
            retry_timer: globals.retry,
            buffer_size: DEFAULT_BUFFER_SIZE,
            poll_interval: None,
            max_msg_size: globals.max_msg_size,
        }
    }

    /// A target given only by its address (the top-level `address` list), checked.
    pub fn from_address(address: &str, globals: &GlobalConfig) -> Result<Self, ConfigError> {
        names::check(NameKind::Target, "address", address)?;
        let target = Self::new(address, address, globals);
        target.check_addresses("address")?;
        Ok(target)
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
                    &Value::String(a),
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
        let name_key = if name.is_some() {
            section.key_path("name")
        } else if key.is_some() {
            section.path().to_string()
        } else {
            section.key_path("address")
        };
        let name = name
            .or_else(|| key.map(str::to_string))
            .unwrap_or_else(|| address.clone());
        names::check(NameKind::Target, &name_key, &name)?;
        let mut target = Self::new(&name, &address, globals);
        if target.address.is_empty() {
            // Only commas and blanks (e.g. a name "," standing in for the address).
            return Err(ConfigError::invalid(
                section.key_path("address"),
                &Value::String(address),
                "names no host (expected host:port)",
            ));
        }
        target.check_addresses(&section.key_path("address"))?;
        if let Some(v) = section.string("username")? {
            target.username = Some(v);
        }
        if let Some(v) = section.string("password")? {
            target.password = Some(Secret::new(v));
        }
        if let Some(v) = section.string("token")? {
            target.token = Some(Secret::new(v));
        }
        if let Some(v) = section.string("auth-scheme")? {
            target.auth_scheme = Some(v).filter(|s| !s.trim().is_empty());
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
        (target.tls_min_version, target.tls_max_version) =
            tls_versions(section, target.tls_min_version, target.tls_max_version)?;
        target.cipher_suites = section.string_list("cipher-suites")?;
        check_cipher_suites(section, &target)?;
        if let Some(v) = Encoding::read(section, "encoding")? {
            target.encoding = v;
        }
        target.subscriptions = section.string_list("subscriptions")?;
        target.outputs = section.string_list("outputs")?;
        target.tags = section.string_list("tags")?;
        target.event_tags = section.string_map("event-tags")?;
        target.metadata = section.string_map("metadata")?;
        check_metadata(section, &target.metadata)?;
        if let Some(v) = section.bool("gzip")? {
            target.gzip = v;
        }
        target.tcp_keepalive = section.signed_duration("tcp-keepalive")?;
        target.grpc_keepalive = grpc_keepalive(section)?;
        target.grpc_conn_window_size = window_size(section, "grpc-conn-window-size")?
            .or(window_size(section, "grpc-static-connec-window-size")?);
        target.grpc_window_size = window_size(section, "grpc-window-size")?
            .or(window_size(section, "grpc-static-stream-window-size")?);
        // gnmic's JSON field is `retry-timer`; its flag and older files say `retry`.
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
            if v != 0 && v != DEFAULT_BUFFER_SIZE {
                super::warning::warn(
                    section.key_path("buffer-size"),
                    "not applied by gnomon: responses go straight into each output's bounded \
                     queue (set the output's buffer-size instead)",
                );
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
        warn_unsupported_target_keys(section);
        section.warn_unknown_keys();
        Ok(target)
    }

    /// Checks every address is `host:port` (or `unix://`), naming `key`.
    fn check_addresses(&self, key: &str) -> Result<(), ConfigError> {
        for address in self.addresses() {
            if address.starts_with("unix://") {
                return Err(ConfigError::invalid(
                    key,
                    &Value::String(address.to_string()),
                    "is a unix socket, which gnomon cannot dial (expected host:port)",
                ));
            }
            if let Some(why) = host_port_problem(address, false, false) {
                return Err(ConfigError::invalid(
                    key,
                    &Value::String(address.to_string()),
                    format!("{why} (expected host:port)"),
                ));
            }
        }
        Ok(())
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
/// number; the load refuses it) or malformed brackets is kept as written, so applying this
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
            serde_json::json!({"name": "r1", "address": ","}),
            serde_json::json!({"name": "r1", "address": " , ,"}),
        ] {
            let section = Section::from_value("", &body).unwrap();
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
