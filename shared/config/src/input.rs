//! Inputs (gnmic's `inputs` section): `nats` and `jetstream`, which the exporter consumes.

use super::nats_input::NatsInputConfig;
use super::reader::Section;
use super::ConfigError;
use serde::Serialize;

/// One input by type.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum InputConfig {
    /// The exporter's NATS input.
    Nats(NatsInputConfig),
    /// The exporter's JetStream input: the NATS input's keys with its `jetstream` part set.
    Jetstream(NatsInputConfig),
}

impl InputConfig {
    /// Reads the input called `name`.
    pub fn from_section(name: &str, section: &Section<'_>) -> Result<Self, ConfigError> {
        let Some(kind) = section.string("type")? else {
            return Err(ConfigError::Missing {
                key: section.key_path("type"),
                expected: "expected nats or jetstream".into(),
            });
        };
        match kind.trim().to_ascii_lowercase().as_str() {
            "nats" => Ok(Self::Nats(NatsInputConfig::from_section(name, section)?)),
            "jetstream" => Ok(Self::Jetstream(super::jetstream::input_from_section(
                name, section,
            )?)),
            _ => Err(ConfigError::invalid(
                section.key_path("type"),
                &serde_json::Value::String(kind),
                "is not a supported input type (expected nats or jetstream)",
            )),
        }
    }

    /// The input's settings (a JetStream input has its `jetstream` part set).
    pub fn settings(&self) -> &NatsInputConfig {
        match self {
            Self::Nats(config) | Self::Jetstream(config) => config,
        }
    }
}
