//! Serde-defined sections: the nested output and input blocks (`prometheus`, the NATS input)
//! whose keys are defined by serde attributes, read from a [`Section`] with the key named
//! in every error and warning. Used by `prometheus_output` and `nats_input`.

use super::reader::Section;
use super::ConfigError;

/// Deserializes a section with serde, for section types that define their keys with serde
/// attributes (every field has a default). Only `known` keys are taken (the others get the
/// unknown-key warning); each is first deserialized alone so a bad value names its key.
pub(crate) fn deserialize_section<T: serde::de::DeserializeOwned>(
    section: &Section<'_>,
    known: &[&str],
) -> Result<T, ConfigError> {
    let mut map = serde_json::Map::new();
    for key in known {
        if let Some(value) = section.raw(key) {
            let alone =
                serde_json::Value::Object([(key.to_string(), value.clone())].into_iter().collect());
            if let Err(e) = serde_json::from_value::<T>(alone) {
                return Err(ConfigError::invalid(
                    section.key_path(key),
                    value,
                    format!("is not valid here ({e})"),
                ));
            }
            map.insert(key.to_string(), value.clone());
        }
    }
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| ConfigError::Message(format!("{}: {e}", section.path())))
}

/// Warns about every key of the map at `key` (a nested serde block) that is not in `known`.
pub(crate) fn warn_unknown_nested(section: &Section<'_>, key: &str, known: &[&str]) {
    if let Some(serde_json::Value::Object(map)) = section.raw(key) {
        for name in map.keys() {
            if !known.contains(&name.as_str()) {
                super::warning::warn(
                    format!("{}.{name}", section.key_path(key)),
                    "unknown configuration key; ignored",
                );
            }
        }
    }
}
