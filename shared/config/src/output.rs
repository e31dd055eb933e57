//! Outputs (gnmic's `outputs` section): `nats`, `jetstream` and `file` here; `prometheus` and
//! `prometheus_write` are the exporter's.

use super::address::check_nats_servers;
use super::defaults;
use super::duration::serialize_ns;
use super::prometheus_output::PrometheusOutputConfig;
use super::prometheus_write_output::PrometheusWriteOutputConfig;
use super::reader::Section;
use super::secret::Secret;
pub use super::tls_files::TlsFiles;
use super::ConfigError;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Payload format of the NATS output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NatsFormat {
    /// gnmic's event JSON: one array of events per SubscribeResponse.
    #[default]
    Event,
    /// The SubscribeResponse protobuf bytes.
    Proto,
}

/// gnmic's `nats` output.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct NatsOutputConfig {
    /// Client name prefix (`<name>-<worker>`); defaults to the output name.
    pub name: String,
    pub address: String,
    /// Single subject, used when `subject-prefix` is empty.
    pub subject: String,
    /// Per-target / per-subscription subjects: `<prefix>.<source>.<subscription>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    pub format: NatsFormat,
    /// With `event`: one message per event instead of one array per response.
    pub split_events: bool,
    pub num_workers: usize,
    /// How long a write waits for buffer space before the message is dropped.
    #[serde(serialize_with = "serialize_ns")]
    pub write_timeout: Duration,
    pub buffer_size: usize,
    #[serde(serialize_with = "serialize_ns")]
    pub connect_time_wait: Duration,
    /// Names under `processors`, applied in order to the events of each response (`event`
    /// format only: `proto` forwards the bytes received, as gnmic does).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub event_processors: Vec<String>,
}

/// Buffer used when `buffer-size` is 0: gnmic's channel would be unbuffered and block the
/// gNMI stream on every message; a small bounded buffer keeps the same back-pressure.
pub const DEFAULT_OUTPUT_BUFFER: usize = defaults::OUTPUT_BUFFER;

/// gnmic's NATS skip-verify is not applied: the server certificate is always verified.
pub(crate) const NATS_SKIP_VERIFY: &str =
    "the NATS server certificate is always verified (set tls.ca-file for a private CA)";

/// Keys of gnmic's outputs that gnomon does not apply, and why.
fn warn_unsupported_output_keys(section: &Section<'_>) {
    for key in ["add-target", "target-template"] {
        section.unsupported(key, "the target field of messages is never rewritten");
    }
    section.unsupported("msg-template", "Go templates are not supported");
    section.unsupported_unless(
        "override-timestamps",
        &serde_json::Value::Bool(false),
        "timestamps are always the target's",
    );
    section.unsupported_unless(
        "enable-metrics",
        &serde_json::Value::Bool(true),
        "gnomon always records output metrics",
    );
    section.unsupported_unless(
        "debug",
        &serde_json::Value::Bool(false),
        "use RUST_LOG=gnomon_collector=debug for per-message logs",
    );
}

impl NatsOutputConfig {
    pub(crate) fn from_section(name: &str, section: &Section<'_>) -> Result<Self, ConfigError> {
        let format = match section.string("format")? {
            None => NatsFormat::Event,
            Some(text) => match text.trim().to_ascii_lowercase().as_str() {
                "" | "event" => NatsFormat::Event,
                "proto" => NatsFormat::Proto,
                _ => {
                    return Err(ConfigError::invalid(
                        section.key_path("format"),
                        &serde_json::Value::String(text),
                        "is not a supported NATS output format (expected event or proto)",
                    ))
                }
            },
        };
        let num_workers = match section.u64("num-workers")? {
            None | Some(0) => 1,
            Some(n @ 1..=64) => n as usize,
            Some(n) => {
                return Err(ConfigError::invalid(
                    section.key_path("num-workers"),
                    &n.into(),
                    "is more than gnomon's 64 NATS publishers per output (expected 1-64)",
                ))
            }
        };
        let buffer_size = section.u64("buffer-size")?.unwrap_or(0) as usize;
        let subject = section
            .string_if_set("subject")?
            .unwrap_or_else(|| defaults::NATS_SUBJECT.into());
        let address = section
            .non_empty_string("address", "host:port of a NATS server")?
            .unwrap_or_else(|| defaults::NATS_ADDRESS.into());
        check_nats_servers(&section.key_path("address"), &address)?;
        let config = Self {
            name: section
                .string_if_set("name")?
                .unwrap_or_else(|| name.to_string()),
            address,
            subject: subject.replace(' ', "_"),
            subject_prefix: section.string_if_set("subject-prefix")?,
            username: section.string_if_set("username")?,
            password: section.string_if_set("password")?.map(Secret::new),
            token: section.string_if_set("token")?.map(Secret::new),
            credentials_file: section.path_if_set("credentials-file")?,
            tls: TlsFiles::read_with(section, "tls", Some(NATS_SKIP_VERIFY))?,
            format,
            split_events: section.bool("split-events")?.unwrap_or(false),
            num_workers,
            write_timeout: section
                .duration("write-timeout")?
                .filter(|d| !d.is_zero())
                .unwrap_or(defaults::NATS_WRITE_TIMEOUT),
            buffer_size: if buffer_size == 0 {
                DEFAULT_OUTPUT_BUFFER
            } else {
                buffer_size.min(1_000_000)
            },
            connect_time_wait: section
                .duration("connect-time-wait")?
                .filter(|d| !d.is_zero())
                .unwrap_or(defaults::NATS_CONNECT_TIME_WAIT),
            event_processors: section.string_list("event-processors")?,
        };
        section.raw("type");
        warn_unsupported_output_keys(section);
        section.warn_unknown_keys();
        Ok(config)
    }
}

/// Where the file output writes.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum FileDestination {
    Stdout,
    Stderr,
    Path(PathBuf),
}

/// gnmic's `file` output: JSON lines of events.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct FileOutputConfig {
    pub destination: FileDestination,
    /// One event object per line when true (default); one array per response otherwise.
    pub split_events: bool,
    pub buffer_size: usize,
    /// Names under `processors`, applied in order to the events of each response.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub event_processors: Vec<String>,
    /// gnmic's `rotation` block; `None` appends to one file forever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<FileRotation>,
}

/// gnmic's file `rotation` (its lumberjack settings): the file is renamed to
/// `<stem>-<UTC time><ext>` once the next write would pass `max_size`, and a
/// fresh one is opened; old files beyond `max_backups` or older than `max_age`
/// are removed, and `compress` gzips them.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct FileRotation {
    /// Bytes (gnmic: `max-size` in megabytes, 100 when unset or 0).
    pub max_size: u64,
    /// gnmic: `max-age` in days; `None` (unset or 0) keeps files of any age.
    pub max_age: Option<Duration>,
    /// Rotated files kept; 0 keeps them all (as gnmic).
    pub max_backups: usize,
    pub compress: bool,
}

impl FileRotation {
    /// gnmic's default `max-size`, in megabytes.
    pub const DEFAULT_MAX_SIZE_MB: u64 = 100;

    fn from_section(section: &Section<'_>) -> Result<Self, ConfigError> {
        const MB: u64 = 1024 * 1024;
        const DAY: u64 = 24 * 60 * 60;
        let max_size_mb = match section.u64("max-size")? {
            None | Some(0) => Self::DEFAULT_MAX_SIZE_MB,
            Some(mb) if mb > u64::MAX / MB => {
                return Err(ConfigError::invalid(
                    section.key_path("max-size"),
                    &serde_json::Value::from(mb),
                    "is too large (megabytes)",
                ))
            }
            Some(mb) => mb,
        };
        let max_age = match section.u64("max-age")? {
            None | Some(0) => None,
            Some(days) if days > 100 * 365 => {
                return Err(ConfigError::invalid(
                    section.key_path("max-age"),
                    &serde_json::Value::from(days),
                    "is too large (days; at most 36500)",
                ))
            }
            Some(days) => Some(Duration::from_secs(days * DAY)),
        };
        let max_backups = section.u64("max-backups")?.unwrap_or(0);
        let rotation = Self {
            max_size: max_size_mb * MB,
            max_age,
            max_backups: usize::try_from(max_backups).unwrap_or(usize::MAX),
            compress: section.bool("compress")?.unwrap_or(false),
        };
        section.warn_unknown_keys();
        Ok(rotation)
    }
}

impl FileOutputConfig {
    fn from_section(section: &Section<'_>) -> Result<Self, ConfigError> {
        let filename = section.string_if_set("filename")?;
        let file_type = section.string_if_set("file-type")?;
        let destination = match (filename, file_type) {
            (Some(path), _) => FileDestination::Path(PathBuf::from(path)),
            (None, Some(t)) => match t.trim().to_ascii_lowercase().as_str() {
                "stdout" => FileDestination::Stdout,
                "stderr" => FileDestination::Stderr,
                _ => {
                    return Err(ConfigError::invalid(
                        section.key_path("file-type"),
                        &serde_json::Value::String(t),
                        "is not a file type (expected stdout or stderr, or set filename)",
                    ))
                }
            },
            (None, None) => {
                return Err(ConfigError::Missing {
                    key: section.key_path("filename"),
                    expected: "expected a file path, or file-type: stdout".into(),
                })
            }
        };
        if let Some(format) = section.string("format")? {
            if !matches!(format.trim().to_ascii_lowercase().as_str(), "" | "event") {
                return Err(ConfigError::invalid(
                    section.key_path("format"),
                    &serde_json::Value::String(format),
                    "is not a supported file output format (expected event)",
                ));
            }
        }
        let buffer_size = section.u64("buffer-size")?.unwrap_or(0) as usize;
        let rotation = match section.section("rotation")? {
            None => None,
            Some(block) => {
                if !matches!(destination, FileDestination::Path(_)) {
                    return Err(ConfigError::Message(format!(
                        "{}: applies to a file; stdout and stderr cannot be rotated \
                         (set filename instead of file-type, or remove rotation)",
                        section.key_path("rotation")
                    )));
                }
                Some(FileRotation::from_section(&block)?)
            }
        };
        let config = Self {
            rotation,
            destination,
            split_events: section.bool("split-events")?.unwrap_or(true),
            buffer_size: if buffer_size == 0 {
                DEFAULT_OUTPUT_BUFFER
            } else {
                buffer_size.min(1_000_000)
            },
            event_processors: section.string_list("event-processors")?,
        };
        section.raw("type");
        warn_unsupported_output_keys(section);
        for key in [
            "multiline",
            "indent",
            "separator",
            "concurrency-limit",
            "calculate-latency",
        ] {
            section.unsupported(
                key,
                "one JSON value per line is the file output's only layout",
            );
        }
        section.warn_unknown_keys();
        Ok(config)
    }
}

/// One output by type.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
#[allow(clippy::large_enum_variant)] // built once at start; never moved in a hot path
pub enum OutputConfig {
    Nats(NatsOutputConfig),
    Jetstream(super::jetstream::JetStreamOutputConfig),
    File(FileOutputConfig),
    /// The exporter's Prometheus output.
    Prometheus(PrometheusOutputConfig),
    /// The exporter's Prometheus remote write output.
    #[serde(rename = "prometheus_write")]
    PrometheusWrite(PrometheusWriteOutputConfig),
}

impl OutputConfig {
    /// Reads the output called `name` (env expansion on, as gnmic does for outputs).
    pub fn from_section(name: &str, section: &Section<'_>) -> Result<Self, ConfigError> {
        let Some(kind) = section.string("type")? else {
            return Err(ConfigError::Missing {
                key: section.key_path("type"),
                expected: "expected one of nats, jetstream, file, prometheus, prometheus_write"
                    .into(),
            });
        };
        match kind.trim().to_ascii_lowercase().as_str() {
            "nats" => Ok(Self::Nats(NatsOutputConfig::from_section(name, section)?)),
            "jetstream" => Ok(Self::Jetstream(
                super::jetstream::JetStreamOutputConfig::from_section(name, section)?,
            )),
            "file" => Ok(Self::File(FileOutputConfig::from_section(section)?)),
            "prometheus" => Ok(Self::Prometheus(PrometheusOutputConfig::from_section(
                name, section,
            )?)),
            "prometheus_write" => Ok(Self::PrometheusWrite(
                PrometheusWriteOutputConfig::from_section(section)?,
            )),
            _ => Err(ConfigError::invalid(
                section.key_path("type"),
                &serde_json::Value::String(kind),
                "is not a supported output type (expected nats, jetstream, file, prometheus or prometheus_write)",
            )),
        }
    }

    /// The output's type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Nats(_) => "nats",
            Self::Jetstream(_) => "jetstream",
            Self::File(_) => "file",
            Self::Prometheus(_) => "prometheus",
            Self::PrometheusWrite(_) => "prometheus_write",
        }
    }
}
