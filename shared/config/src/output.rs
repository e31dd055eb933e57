//! Outputs (gnmic's `outputs` section): `nats`, `jetstream` and `file` here; `prometheus` and
//! `prometheus_write` are the exporter's.

use super::nats_output::warn_unsupported_output_keys;
pub use super::nats_output::{NatsFormat, NatsOutputConfig, DEFAULT_OUTPUT_BUFFER};
use super::prometheus_output::PrometheusOutputConfig;
use super::prometheus_write_output::PrometheusWriteOutputConfig;
use super::reader::Section;
pub use super::tls_files::TlsFiles;
use super::ConfigError;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

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
