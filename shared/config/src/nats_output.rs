//! gnmic's `nats` output (and the NATS part of the `jetstream` output): keys and defaults
//! as gnmic reads them, and the output keys gnomon warns about on every output type.

use super::address::check_nats_servers;
use super::defaults;
use super::duration::serialize_ns;
use super::reader::Section;
use super::secret::Secret;
use super::tls_files::TlsFiles;
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
pub(crate) fn warn_unsupported_output_keys(section: &Section<'_>) {
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
