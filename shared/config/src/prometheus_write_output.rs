//! gnmic's `outputs.<name>` block with `type: prometheus_write`: Prometheus remote write
//! 1.0 to `url`. Every gnmic key is applied, or warned about / refused by name.
//!
//! Defaults are gnmic's: `interval` 10 s, `timeout` 10 s, `buffer-size` 1000,
//! `max-time-series-per-write` 500, `max-retries` 0, `metadata.interval` 60 s,
//! `metadata.max-entries-per-write` 500.

use super::reader::Section;
use super::secret::Secret;
use super::tls_files::TlsFiles;
use super::ConfigError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// gnmic's default push interval and request timeout.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// gnmic's default request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// gnmic's default buffer of time series waiting to be written.
pub const DEFAULT_BUFFER_SIZE: usize = 1000;
/// gnmic's default number of time series per write request.
pub const DEFAULT_MAX_TIME_SERIES_PER_WRITE: usize = 500;
/// gnmic's default metadata interval.
pub const DEFAULT_METADATA_INTERVAL: Duration = Duration::from_secs(60);
/// gnmic's default number of metadata entries per write request.
pub const DEFAULT_METADATA_MAX_ENTRIES: usize = 500;
/// Upper bound of `buffer-size` (samples held in memory while the backend is away).
pub const MAX_BUFFER_SIZE: usize = 1_000_000;

/// `authentication`: HTTP basic auth.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

/// `authorization`: `Authorization: <type> <credentials>`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AuthorizationHeader {
    /// gnmic's `type`, `Bearer` when unset.
    #[serde(rename = "type")]
    pub kind: String,
    pub credentials: Secret,
}

/// `metadata`: metric metadata sent every `interval` when `include` is set.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct MetadataConfig {
    pub include: bool,
    #[serde(serialize_with = "super::duration::serialize_ns")]
    pub interval: Duration,
    pub max_entries_per_write: usize,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        Self {
            include: false,
            interval: DEFAULT_METADATA_INTERVAL,
            max_entries_per_write: DEFAULT_METADATA_MAX_ENTRIES,
        }
    }
}

/// gnmic's `prometheus_write` output.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct PrometheusWriteOutputConfig {
    /// The remote write endpoint, `http://` or `https://`.
    pub url: String,
    /// Extra headers sent with every request.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<BasicAuth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AuthorizationHeader>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// Timeout of each request attempt.
    #[serde(serialize_with = "super::duration::serialize_ns")]
    pub timeout: Duration,
    /// Time between writes.
    #[serde(serialize_with = "super::duration::serialize_ns")]
    pub interval: Duration,
    /// Samples waiting to be written; beyond it new samples are dropped and counted.
    pub buffer_size: usize,
    /// Time series per request; a full batch is written without waiting for `interval`.
    pub max_time_series_per_write: usize,
    /// Repeats of a failed request (5xx, 429, connection errors), with backoff.
    pub max_retries: u32,
    pub metadata: MetadataConfig,
    pub metric_prefix: String,
    pub append_subscription_name: bool,
    pub strings_as_labels: bool,
    /// gnmic's add-target (`overwrite` / `if-not-present`), as on the Prometheus output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_target: Option<String>,
    /// gnmic's target-template for `add-target`, as on the Prometheus output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_template: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub event_processors: Vec<String>,
}

impl PrometheusWriteOutputConfig {
    /// Reads `outputs.<name>` (type prometheus_write).
    pub fn from_section(section: &Section<'_>) -> Result<Self, ConfigError> {
        let url = section
            .non_empty_string(
                "url",
                "the remote write URL, e.g. http://mimir:9009/api/v1/push",
            )?
            .ok_or_else(|| ConfigError::Missing {
                key: section.key_path("url"),
                expected: "the remote write URL, e.g. http://mimir:9009/api/v1/push".into(),
            })?;
        let lower = url.trim().to_ascii_lowercase();
        let rest = lower
            .strip_prefix("http://")
            .or_else(|| lower.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            return Err(ConfigError::invalid(
                section.key_path("url"),
                &serde_json::Value::String(url),
                "is not an http:// or https:// URL with a host (the scheme is required)",
            ));
        }
        let headers = section.string_map("headers")?;
        for name in headers.keys() {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid {
                return Err(ConfigError::invalid(
                    format!("{}.{name}", section.key_path("headers")),
                    &serde_json::Value::String(name.clone()),
                    "is not a valid HTTP header name",
                ));
            }
        }
        let authentication = match section.section("authentication")? {
            None => None,
            Some(auth) => {
                let username = auth.string_if_set("username")?.unwrap_or_default();
                let password = auth.string_if_set("password")?.unwrap_or_default();
                auth.warn_unknown_keys();
                (!username.is_empty() || !password.is_empty()).then(|| BasicAuth {
                    username,
                    password: Secret::new(password),
                })
            }
        };
        let authorization = match section.section("authorization")? {
            None => None,
            Some(authz) => {
                let kind = authz
                    .string_if_set("type")?
                    .filter(|t| !t.trim().is_empty())
                    .unwrap_or_else(|| "Bearer".into());
                let credentials = authz.string_if_set("credentials")?.unwrap_or_default();
                authz.warn_unknown_keys();
                (!credentials.is_empty()).then(|| AuthorizationHeader {
                    kind: kind.trim().to_string(),
                    credentials: Secret::new(credentials),
                })
            }
        };
        if authentication.is_some() && authorization.is_some() {
            return Err(ConfigError::Message(format!(
                "{}: both authentication and authorization set the Authorization header \
                 (keep one)",
                section.path()
            )));
        }
        let positive = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
            Ok(section
                .duration(key)?
                .filter(|d| !d.is_zero())
                .unwrap_or(default))
        };
        let count = |key: &str, default: usize, max: usize| -> Result<usize, ConfigError> {
            match section.u64(key)? {
                None | Some(0) => Ok(default),
                Some(n) if n as usize > max => Err(ConfigError::invalid(
                    section.key_path(key),
                    &n.into(),
                    format!("is more than gnomon's limit of {max}"),
                )),
                Some(n) => Ok(n as usize),
            }
        };
        let metadata = match section.section("metadata")? {
            None => MetadataConfig::default(),
            Some(block) => {
                let max_entries = match block.u64("max-entries-per-write")? {
                    None | Some(0) => DEFAULT_METADATA_MAX_ENTRIES,
                    Some(n) => (n as usize).min(100_000),
                };
                let config = MetadataConfig {
                    include: block.bool("include")?.unwrap_or(false),
                    interval: block
                        .duration("interval")?
                        .filter(|d| !d.is_zero())
                        .unwrap_or(DEFAULT_METADATA_INTERVAL),
                    max_entries_per_write: max_entries,
                };
                block.warn_unknown_keys();
                config
            }
        };
        let max_retries = match section.u64("max-retries")? {
            None => 0,
            Some(n @ 0..=100) => n as u32,
            Some(n) => {
                return Err(ConfigError::invalid(
                    section.key_path("max-retries"),
                    &n.into(),
                    "is more than 100 retries of one write",
                ))
            }
        };
        let add_target = section.string_if_set("add-target")?;
        if let Some(mode) = &add_target {
            if !matches!(mode.as_str(), "overwrite" | "if-not-present") {
                return Err(ConfigError::invalid(
                    section.key_path("add-target"),
                    &serde_json::Value::String(mode.clone()),
                    "is not an add-target mode (expected overwrite or if-not-present)",
                ));
            }
        }
        let target_template = section.string_if_set("target-template")?;
        super::prometheus_output::parse_target_template(
            &section.key_path("target-template"),
            target_template.as_deref(),
        )?;
        let config = Self {
            target_template,
            url: url.trim().to_string(),
            headers,
            authentication,
            authorization,
            tls: TlsFiles::read(section, "tls")?,
            timeout: positive("timeout", DEFAULT_TIMEOUT)?,
            interval: positive("interval", DEFAULT_INTERVAL)?,
            buffer_size: count("buffer-size", DEFAULT_BUFFER_SIZE, MAX_BUFFER_SIZE)?,
            max_time_series_per_write: count(
                "max-time-series-per-write",
                DEFAULT_MAX_TIME_SERIES_PER_WRITE,
                100_000,
            )?,
            max_retries,
            metadata,
            metric_prefix: section.string_if_set("metric-prefix")?.unwrap_or_default(),
            append_subscription_name: section.bool("append-subscription-name")?.unwrap_or(false),
            strings_as_labels: section.bool("strings-as-labels")?.unwrap_or(false),
            add_target,
            event_processors: section.string_list("event-processors")?,
        };
        section.raw("type");
        section.unsupported(
            "input-buffer-size",
            "messages are converted to samples as they arrive, without an input queue; \
             buffer-size bounds the samples waiting to be written",
        );
        section.unsupported(
            "num-workers",
            "messages are converted to samples as they arrive, without conversion workers",
        );
        section.unsupported(
            "num-writers",
            "one writer per output drains the buffer (max-time-series-per-write per request)",
        );
        section.unsupported_unless(
            "debug",
            &serde_json::Value::Bool(false),
            "use RUST_LOG=gnomon_exporter::remote_write=debug for per-request logs",
        );
        section.unsupported_unless(
            "enable-metrics",
            &serde_json::Value::Bool(true),
            "gnomon always records the output's metrics",
        );
        section.warn_unknown_keys();
        Ok(config)
    }
}
