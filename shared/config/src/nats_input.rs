//! gnmic's `inputs.<name>` block with `type: nats`: keys and defaults as gnmic reads them.
//!
//! Queue semantics follow gnmic: without an explicit `queue`, the queue group is
//! `<instance-name>-<name>-nats-sub`, unique per instance, so every instance receives every
//! message; instances sharing an explicit `queue` split the stream.

use super::address::check_nats_servers;
use super::defaults;
use super::names::{self, NameKind};
use super::nats_output::NATS_SKIP_VERIFY;
use super::prometheus_output::GoDuration;
use super::reader::Section;
use super::secret::Secret;
use super::serde_section::{deserialize_section, warn_unknown_nested};
use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default NATS address.
pub const DEFAULT_ADDRESS: &str = defaults::NATS_ADDRESS;
/// Default subject.
pub const DEFAULT_SUBJECT: &str = defaults::NATS_SUBJECT;
/// Default per-worker buffer.
pub const DEFAULT_BUFFER_SIZE: usize = defaults::NATS_INPUT_BUFFER_SIZE;
/// Default reconnect wait.
pub const DEFAULT_CONNECT_TIME_WAIT: Duration = defaults::NATS_CONNECT_TIME_WAIT;

/// Payload format of the NATS messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NatsInputFormat {
    /// A JSON array of gnmic event objects.
    #[default]
    Event,
    /// A binary `gnmi.SubscribeResponse`.
    Proto,
}

impl<'de> Deserialize<'de> for NatsInputFormat {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.to_ascii_lowercase().as_str() {
            "" | "event" => Ok(Self::Event),
            "proto" => Ok(Self::Proto),
            other => Err(serde::de::Error::custom(format!(
                "format {other:?} is not supported by the NATS input (expected \"event\" or \"proto\")"
            ))),
        }
    }
}

/// TLS settings of the NATS connection: the one TLS-files type (see [`crate::TlsFiles`]).
pub type NatsInputTls = crate::TlsFiles;

/// The NATS input: `inputs.<name>` with `type: nats`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", default)]
pub struct NatsInputConfig {
    /// `type` key of the input block (`nats`).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub input_type: Option<String>,
    /// Client name; empty means `<instance-name>-<input-name>-nats-sub`.
    pub name: String,
    /// Comma-separated NATS servers.
    pub address: String,
    /// Subject to subscribe to; wildcards allowed (`telemetry.>` for subject-prefix publishers).
    pub subject: String,
    /// Queue group; empty means the per-instance name (every instance gets every message).
    pub queue: String,
    pub format: NatsInputFormat,
    /// Connections (each with its own queue subscription).
    pub num_workers: usize,
    /// Per-worker buffer of received messages.
    pub buffer_size: usize,
    /// Wait between reconnect attempts.
    pub connect_time_wait: GoDuration,
    pub username: String,
    /// Never serialized (kept out of API responses).
    #[serde(skip_serializing)]
    pub password: Option<Secret>,
    /// NATS token auth (gnomon addition). Never serialized.
    #[serde(skip_serializing)]
    pub token: Option<Secret>,
    /// NATS credentials (JWT + nkey) file (gnomon addition).
    pub credentials_file: Option<PathBuf>,
    pub tls: Option<NatsInputTls>,
    pub debug: bool,
    /// Event processors for decoded events (event format).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub event_processors: Vec<String>,
    /// Outputs to feed; empty means all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// Set for a `type: jetstream` input: the stream and durable consumer to read instead
    /// of the core-NATS `subject` / `queue`.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<super::jetstream_consume::JetStreamConsume>,
}

impl Default for NatsInputConfig {
    fn default() -> Self {
        Self {
            input_type: None,
            name: String::new(),
            address: DEFAULT_ADDRESS.to_string(),
            subject: DEFAULT_SUBJECT.to_string(),
            queue: String::new(),
            format: NatsInputFormat::Event,
            num_workers: 1,
            buffer_size: DEFAULT_BUFFER_SIZE,
            connect_time_wait: GoDuration::from_std(DEFAULT_CONNECT_TIME_WAIT),
            username: String::new(),
            password: None,
            token: None,
            credentials_file: None,
            tls: None,
            debug: false,
            event_processors: Vec::new(),
            outputs: Vec::new(),
            jetstream: None,
        }
    }
}

impl fmt::Debug for NatsInputConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsInputConfig")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("subject", &self.subject)
            .field("queue", &self.queue)
            .field("format", &self.format)
            .field("num_workers", &self.num_workers)
            .field("buffer_size", &self.buffer_size)
            .field("connect_time_wait", &self.connect_time_wait)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("token", &self.token)
            .field("credentials_file", &self.credentials_file)
            .field("tls", &self.tls)
            .field("event_processors", &self.event_processors)
            .field("outputs", &self.outputs)
            .field("jetstream", &self.jetstream)
            .finish()
    }
}

impl NatsInputConfig {
    /// gnmic's rewritten client name: `<instance>-<input>-nats-sub` (or without the
    /// instance when there is none); an explicit `name` is used as the middle part.
    pub fn client_name(&self, input_name: &str, instance_name: &str) -> String {
        let base = if self.name.is_empty() {
            input_name
        } else {
            self.name.as_str()
        };
        if instance_name.is_empty() {
            format!("{base}-nats-sub")
        } else {
            format!("{instance_name}-{base}-nats-sub")
        }
    }

    /// The queue group: the explicit `queue`, else the per-instance client name.
    pub fn effective_queue(&self, input_name: &str, instance_name: &str) -> String {
        if self.queue.is_empty() {
            self.client_name(input_name, instance_name)
        } else {
            self.queue.clone()
        }
    }

    /// The durable consumer of a JetStream input: `name` when set, else
    /// `<instance>-<input>` (or `<input>`), with what JetStream refuses in a name written
    /// `_`. Stable across restarts, so a restarted exporter resumes where it stopped.
    pub fn durable_name(&self, input_name: &str, instance_name: &str) -> String {
        let base = if !self.name.is_empty() {
            self.name.clone()
        } else if instance_name.is_empty() {
            input_name.to_string()
        } else {
            format!("{instance_name}-{input_name}")
        };
        base.chars()
            .map(|c| {
                if c.is_whitespace() || matches!(c, '.' | '>' | '*' | '/' | '\\') {
                    '_'
                } else {
                    c
                }
            })
            .collect()
    }

    /// Reconnect wait; zero or negative falls back to 2 s.
    pub fn effective_connect_time_wait(&self) -> Duration {
        self.connect_time_wait
            .to_std()
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_CONNECT_TIME_WAIT)
    }

    /// Workers, at least one.
    pub fn effective_num_workers(&self) -> usize {
        self.num_workers.max(1)
    }

    /// Buffer, at least one message.
    pub fn effective_buffer_size(&self) -> usize {
        if self.buffer_size == 0 {
            DEFAULT_BUFFER_SIZE
        } else {
            self.buffer_size
        }
    }

    /// Whether this input feeds the output called `output_name`.
    pub fn feeds(&self, output_name: &str) -> bool {
        self.outputs.is_empty() || self.outputs.iter().any(|o| o == output_name)
    }

    /// Reads `inputs.<name>` (type nats): only gnmic's keys are taken (others get the
    /// unknown-key warning), each bad value names its key, then [`Self::validate`].
    pub fn from_section(name: &str, section: &Section<'_>) -> Result<Self, ConfigError> {
        let config: Self = deserialize_section(section, KEYS)?;
        warn_unknown_nested(
            section,
            "tls",
            &["ca-file", "cert-file", "key-file", "skip-verify"],
        );
        if let Some(tls) = section.section("tls")? {
            tls.unsupported_unless(
                "skip-verify",
                &serde_json::Value::Bool(false),
                NATS_SKIP_VERIFY,
            );
        }
        section.unsupported_unless(
            "debug",
            &serde_json::Value::Bool(false),
            "use RUST_LOG=gnomon_exporter=debug",
        );
        section.warn_unknown_keys();
        config.validate(name)?;
        Ok(config)
    }

    /// Rejects values gnomon cannot honor, naming the key.
    pub fn validate(&self, input_name: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("inputs.{input_name}.{k}");
        let text = |s: &str| serde_json::Value::String(s.to_string());
        if let Some(kind) = &self.input_type {
            if kind != "nats" {
                return Err(ConfigError::invalid(
                    key("type"),
                    &text(kind),
                    "is not this input's type (expected nats)",
                ));
            }
        }
        check_nats_servers(&key("address"), &self.address)?;
        if let Err(e) = gnomon_bus::validate_subject(&self.subject, true) {
            return Err(ConfigError::invalid(
                key("subject"),
                &text(&self.subject),
                format!("is not a NATS subject ({e})"),
            ));
        }
        if self.queue.contains(char::is_whitespace) {
            return Err(ConfigError::invalid(
                key("queue"),
                &text(&self.queue),
                "contains spaces (expected a NATS queue name)",
            ));
        }
        for (i, output) in self.outputs.iter().enumerate() {
            names::check(
                NameKind::Output,
                &format!("{}[{i}]", key("outputs")),
                output,
            )?;
        }
        let no_password = self.password.as_ref().is_none_or(|p| p.expose().is_empty());
        if self.username.is_empty() != no_password {
            let missing = if self.username.is_empty() {
                "username"
            } else {
                "password"
            };
            return Err(ConfigError::Missing {
                key: key(missing),
                expected: "username and password go together".into(),
            });
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                let missing = if tls.cert_file.is_some() {
                    "tls.key-file"
                } else {
                    "tls.cert-file"
                };
                return Err(ConfigError::Missing {
                    key: key(missing),
                    expected: "cert-file and key-file go together".into(),
                });
            }
        }
        Ok(())
    }
}

/// The keys of gnmic's NATS input that gnomon reads (`token` and `credentials-file` are
/// gnomon's).
const KEYS: &[&str] = &[
    "type",
    "name",
    "address",
    "subject",
    "queue",
    "format",
    "num-workers",
    "buffer-size",
    "connect-time-wait",
    "username",
    "password",
    "token",
    "credentials-file",
    "tls",
    "debug",
    "event-processors",
    "outputs",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_gnmic() {
        let config: NatsInputConfig = serde_yaml::from_str("type: nats").unwrap();
        assert_eq!(config.address, "localhost:4222");
        assert_eq!(config.subject, "telemetry");
        assert_eq!(config.format, NatsInputFormat::Event);
        assert_eq!(config.effective_buffer_size(), 100);
        assert_eq!(config.effective_connect_time_wait(), Duration::from_secs(2));
        assert_eq!(
            config.effective_queue("in1", "gnomon-1"),
            "gnomon-1-in1-nats-sub"
        );
        assert_eq!(config.effective_queue("in1", ""), "in1-nats-sub");
        config.validate("in1").unwrap();
        let bad: NatsInputConfig = serde_yaml::from_str("subject: telemetry.>.x").unwrap();
        assert_eq!(
            bad.validate("in1").unwrap_err().key(),
            Some("inputs.in1.subject")
        );
    }

    #[test]
    fn explicit_queue_is_shared_and_format_is_case_insensitive() {
        let config: NatsInputConfig =
            serde_yaml::from_str("queue: exporters\nformat: PROTO\nsubject: telemetry.>").unwrap();
        assert_eq!(config.effective_queue("in1", "a"), "exporters");
        assert_eq!(config.effective_queue("in1", "b"), "exporters");
        assert_eq!(config.format, NatsInputFormat::Proto);
        assert!(serde_yaml::from_str::<NatsInputConfig>("format: json").is_err());
    }

    #[test]
    fn secrets_are_redacted_and_pairs_checked() {
        let config: NatsInputConfig =
            serde_yaml::from_str("username: u\npassword: p4ssw0rd\ntoken: t0k3n").unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("p4ssw0rd") && !debug.contains("t0k3n"),
            "{debug}"
        );
        let half: NatsInputConfig = serde_yaml::from_str("username: u").unwrap();
        assert_eq!(
            half.validate("in1").unwrap_err().key(),
            Some("inputs.in1.password")
        );
    }

    #[test]
    fn outputs_filter() {
        let config: NatsInputConfig = serde_yaml::from_str("outputs: [prom]").unwrap();
        assert!(config.feeds("prom"));
        assert!(!config.feeds("other"));
        assert!(NatsInputConfig::default().feeds("any"));
    }
}
