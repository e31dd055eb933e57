//! Subscriptions (gnmic's `subscriptions` section) and the gNMI enums they name.

use super::duration::serialize_opt_ns;
use super::reader::Section;
use super::ConfigError;
use gnomon_gnmi::proto::gnmi;
use serde::Serialize;
use std::time::Duration;

/// gNMI encodings by gnmic's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Json,
    Bytes,
    Proto,
    Ascii,
    JsonIetf,
}

impl Encoding {
    /// Parses gnmic's spelling (case-insensitive; `json-ietf` and `json_ietf`).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "json" => Some(Self::Json),
            "bytes" => Some(Self::Bytes),
            "proto" => Some(Self::Proto),
            "ascii" => Some(Self::Ascii),
            "json_ietf" => Some(Self::JsonIetf),
            _ => None,
        }
    }

    pub(crate) fn read(section: &Section<'_>, key: &str) -> Result<Option<Self>, ConfigError> {
        match section.string(key)? {
            None => Ok(None),
            Some(text) => Self::parse(&text).map(Some).ok_or_else(|| {
                ConfigError::invalid(
                    section.key_path(key),
                    &serde_json::Value::String(text),
                    "is not an encoding (expected json, bytes, proto, ascii or json_ietf)",
                )
            }),
        }
    }

    /// The gNMI enum value.
    pub fn to_proto(self) -> gnmi::Encoding {
        match self {
            Self::Json => gnmi::Encoding::Json,
            Self::Bytes => gnmi::Encoding::Bytes,
            Self::Proto => gnmi::Encoding::Proto,
            Self::Ascii => gnmi::Encoding::Ascii,
            Self::JsonIetf => gnmi::Encoding::JsonIetf,
        }
    }
}

/// `mode`: stream, once or poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionMode {
    #[default]
    Stream,
    Once,
    Poll,
}

/// `stream-mode`: sample, on-change or target-defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StreamMode {
    #[default]
    TargetDefined,
    Sample,
    OnChange,
}

impl StreamMode {
    /// The gNMI enum value.
    pub fn to_proto(self) -> gnmi::SubscriptionMode {
        match self {
            Self::TargetDefined => gnmi::SubscriptionMode::TargetDefined,
            Self::Sample => gnmi::SubscriptionMode::Sample,
            Self::OnChange => gnmi::SubscriptionMode::OnChange,
        }
    }
}

/// One named subscription.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct SubscriptionConfig {
    pub name: String,
    pub paths: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The gNMI `target` field of the request prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub set_target: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    pub mode: SubscriptionMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_mode: Option<StreamMode>,
    /// Overrides the target's encoding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<u32>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_opt_ns"
    )]
    pub sample_interval: Option<Duration>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_opt_ns"
    )]
    pub heartbeat_interval: Option<Duration>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub suppress_redundant: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub updates_only: bool,
    /// Output names; empty means the target's outputs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// How often a POLL subscription polls (gnomon; gnmic polls interactively).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_opt_ns"
    )]
    pub poll_interval: Option<Duration>,
}

/// Poll interval used when a POLL subscription sets none.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

impl SubscriptionConfig {
    /// Reads the subscription called `name`.
    pub fn from_section(name: &str, section: &Section<'_>) -> Result<Self, ConfigError> {
        let paths = section.string_list("paths")?;
        if paths.is_empty() {
            return Err(ConfigError::Missing {
                key: section.key_path("paths"),
                expected:
                    "expected at least one path, e.g. [\"/interfaces/interface/state/counters\"]"
                        .into(),
            });
        }
        if let Some((i, _)) = paths.iter().enumerate().find(|(_, p)| p.trim().is_empty()) {
            return Err(ConfigError::invalid(
                format!("{}[{i}]", section.key_path("paths")),
                &serde_json::Value::String(String::new()),
                "is empty (expected a path)",
            ));
        }
        for (i, path) in paths.iter().enumerate() {
            if let Err(error) = gnomon_gnmi::path::parse_path(path) {
                return Err(ConfigError::invalid(
                    format!("{}[{i}]", section.key_path("paths")),
                    &serde_json::Value::String(path.clone()),
                    format!("is not a gNMI path ({error})"),
                ));
            }
        }
        let prefix = section.string_if_set("prefix")?;
        if let Some(text) = &prefix {
            if let Err(error) = gnomon_gnmi::path::parse_path(text) {
                return Err(ConfigError::invalid(
                    section.key_path("prefix"),
                    &serde_json::Value::String(text.clone()),
                    format!("is not a gNMI path ({error})"),
                ));
            }
        }
        let mode = match section.string("mode")? {
            None => SubscriptionMode::Stream,
            Some(text) => match text.trim().to_ascii_lowercase().as_str() {
                "" | "stream" => SubscriptionMode::Stream,
                "once" => SubscriptionMode::Once,
                "poll" => SubscriptionMode::Poll,
                _ => {
                    return Err(ConfigError::invalid(
                        section.key_path("mode"),
                        &serde_json::Value::String(text),
                        "is not a subscription mode (expected stream, once or poll)",
                    ))
                }
            },
        };
        let stream_mode =
            match section.string("stream-mode")? {
                None => None,
                Some(text) => Some(
                    match text.trim().to_ascii_lowercase().replace('_', "-").as_str() {
                        "" | "target-defined" => StreamMode::TargetDefined,
                        "sample" => StreamMode::Sample,
                        "on-change" => StreamMode::OnChange,
                        _ => return Err(ConfigError::invalid(
                            section.key_path("stream-mode"),
                            &serde_json::Value::String(text),
                            "is not a stream mode (expected sample, on-change or target-defined)",
                        )),
                    },
                ),
            };
        let qos = match section.u64("qos")? {
            None => None,
            Some(q) if q <= 63 => Some(q as u32),
            Some(q) => {
                return Err(ConfigError::invalid(
                    section.key_path("qos"),
                    &q.into(),
                    "is not a DSCP value (expected 0-63)",
                ))
            }
        };
        let poll_interval = section.duration("poll-interval")?;
        if poll_interval.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::invalid(
                section.key_path("poll-interval"),
                &serde_json::Value::String("0s".into()),
                "is zero (expected a positive duration)",
            ));
        }
        let subscription = Self {
            name: section
                .non_empty_string("name", "a subscription name")?
                .unwrap_or_else(|| name.to_string()),
            paths,
            prefix,
            target: section.string_if_set("target")?,
            set_target: section.bool("set-target")?.unwrap_or(false),
            models: section.string_list("models")?,
            mode,
            stream_mode,
            encoding: Encoding::read(section, "encoding")?,
            qos,
            sample_interval: section.duration("sample-interval")?,
            heartbeat_interval: section.duration("heartbeat-interval")?,
            suppress_redundant: section.bool("suppress-redundant")?.unwrap_or(false),
            updates_only: section.bool("updates-only")?.unwrap_or(false),
            outputs: section.string_list("outputs")?,
            poll_interval,
        };
        super::names::check(
            super::names::NameKind::Subscription,
            &section.key_path("name"),
            &subscription.name,
        )?;
        section.unsupported("history", "gNMI history extensions are not sent");
        section.unsupported("depth", "the gNMI depth extension is not sent");
        section.warn_unknown_keys();
        Ok(subscription)
    }

    /// The effective stream mode (target-defined when unset).
    pub fn effective_stream_mode(&self) -> StreamMode {
        self.stream_mode.unwrap_or_default()
    }

    /// The effective poll interval.
    pub fn effective_poll_interval(&self) -> Duration {
        self.poll_interval.unwrap_or(DEFAULT_POLL_INTERVAL)
    }
}
