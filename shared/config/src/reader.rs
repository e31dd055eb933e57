//! Typed reading of one configuration section (a JSON object after file parsing,
//! environment overrides and `$VAR` expansion), with the key path in every error and a
//! warning for every key nobody asked for.

use super::duration::{parse_go_duration, GoDuration};
use super::warning;
use super::ConfigError;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A view on one object of the configuration tree.
pub struct Section<'a> {
    path: String,
    map: &'a Map<String, Value>,
    /// A JSON body (REST): strings must be JSON strings (no number or boolean taken as text).
    strict: bool,
    read_keys: RefCell<Vec<String>>,
}

/// The empty object, for sections that are absent.
static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

/// The JSON type of a value, for messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

impl<'a> Section<'a> {
    /// A section at `path` (dotted, for messages).
    pub fn new(path: impl Into<String>, map: &'a Map<String, Value>) -> Self {
        Self {
            path: path.into(),
            map,
            strict: false,
            read_keys: RefCell::new(Vec::new()),
        }
    }

    /// An empty section at `path`.
    pub fn empty(path: impl Into<String>) -> Section<'static> {
        Section::new(path, &EMPTY)
    }

    /// Reads `value` as a section, or fails naming `path`.
    pub fn from_value(path: impl Into<String>, value: &'a Value) -> Result<Self, ConfigError> {
        let path = path.into();
        match value {
            Value::Object(map) => Ok(Self::new(path, map)),
            other => Err(ConfigError::invalid(
                path,
                other,
                "is not a map of settings",
            )),
        }
    }

    /// A JSON body posted to the REST API: like [`Self::from_value`], but a string key given
    /// a number or a boolean is refused (gnmic's JSON decoding does the same).
    pub fn strict(path: impl Into<String>, value: &'a Value) -> Result<Self, ConfigError> {
        let mut section = Self::from_value(path, value)?;
        section.strict = true;
        Ok(section)
    }

    /// A nested section inherits strictness.
    fn child(&self, key: &str, value: &'a Value) -> Result<Section<'a>, ConfigError> {
        let mut section = Section::from_value(self.key_path(key), value)?;
        section.strict = self.strict;
        Ok(section)
    }

    /// The dotted path of this section.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The dotted path of `key` in this section.
    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The raw value of `key` (null counts as absent); marks the key as known.
    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.read_keys.borrow_mut().push(key.to_string());
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Whether `key` is present (not null), without marking it as read.
    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// All keys of this section.
    pub fn keys(&self) -> impl Iterator<Item = &'a String> {
        self.map.keys()
    }

    /// A gnmic key gnomon does not apply: when present, a warning names it and says why.
    pub fn unsupported(&self, key: &str, why: &str) {
        if self.raw(key).is_some() {
            warning::warn(
                self.key_path(key),
                format!("not supported by gnomon: {why}"),
            );
        }
    }

    /// Like [`Self::unsupported`], but only when the key is set to something other than
    /// `harmless` (a value meaning what gnomon does anyway, e.g. `debug: false`).
    pub fn unsupported_unless(&self, key: &str, harmless: &Value, why: &str) {
        if let Some(value) = self.raw(key) {
            let same = value == harmless
                || matches!((value, harmless), (Value::String(s), Value::Bool(b)) if s.trim().eq_ignore_ascii_case(&b.to_string()));
            if !same {
                warning::warn(
                    self.key_path(key),
                    format!("not supported by gnomon: {why}"),
                );
            }
        }
    }

    /// A string (numbers and booleans are taken as their text, except in a REST body).
    pub fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        let Some(value) = self.raw(key) else {
            return Ok(None);
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) if !self.strict => n.to_string(),
            Value::Bool(b) if !self.strict => b.to_string(),
            other => {
                return Err(ConfigError::invalid(
                    self.key_path(key),
                    other,
                    format!("is {} (expected a string)", type_name(other)),
                ))
            }
        };
        Ok(Some(text))
    }

    /// A string; an empty one counts as unset (gnmic's zero value).
    pub fn string_if_set(&self, key: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.string(key)?.filter(|s| !s.is_empty()))
    }

    /// A file path; an empty string counts as unset.
    pub fn path_if_set(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.string_if_set(key)?.map(PathBuf::from))
    }

    /// A string that must not be empty when present.
    pub fn non_empty_string(
        &self,
        key: &str,
        expected: &str,
    ) -> Result<Option<String>, ConfigError> {
        match self.string(key)? {
            Some(s) if s.trim().is_empty() => Err(ConfigError::invalid(
                self.key_path(key),
                &Value::String(s),
                format!("is empty (expected {expected})"),
            )),
            other => Ok(other),
        }
    }

    /// A boolean (`true`/`false`, also as strings from environment variables).
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        let Some(value) = self.raw(key) else {
            return Ok(None);
        };
        match value {
            Value::Bool(b) => Ok(Some(*b)),
            Value::String(s) if !self.strict => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Some(true)),
                "false" | "0" | "no" | "" => Ok(Some(false)),
                _ => Err(ConfigError::invalid(
                    self.key_path(key),
                    value,
                    "is not a boolean (expected true or false)",
                )),
            },
            other => Err(ConfigError::invalid(
                self.key_path(key),
                other,
                "is not a boolean (expected true or false)",
            )),
        }
    }

    /// A non-negative integer.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        let Some(value) = self.raw(key) else {
            return Ok(None);
        };
        let parsed = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) if !self.strict => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| {
            ConfigError::invalid(self.key_path(key), value, "is not a non-negative integer")
        })
    }

    /// An integer (negative allowed).
    pub fn i64(&self, key: &str) -> Result<Option<i64>, ConfigError> {
        let Some(value) = self.raw(key) else {
            return Ok(None);
        };
        let parsed = match value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) if !self.strict => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        parsed
            .map(Some)
            .ok_or_else(|| ConfigError::invalid(self.key_path(key), value, "is not an integer"))
    }

    /// A non-negative duration: a Go duration string or integer nanoseconds.
    pub fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        let Some(value) = self.raw(key) else {
            return Ok(None);
        };
        let parsed = match value {
            Value::Number(n) => n.as_u64().map(Duration::from_nanos),
            Value::String(text) => match text.trim().parse::<u64>() {
                Ok(ns) => Some(Duration::from_nanos(ns)),
                Err(_) => parse_go_duration(text).ok(),
            },
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| {
            ConfigError::invalid(
                self.key_path(key),
                value,
                "is not a duration (expected e.g. \"10s\", \"500ms\" or integer nanoseconds)",
            )
        })
    }

    /// A duration that may be negative (keys where a negative value means "off").
    pub fn signed_duration(&self, key: &str) -> Result<Option<GoDuration>, ConfigError> {
        let Some(value) = self.raw(key) else {
            return Ok(None);
        };
        let parsed = match value {
            Value::Number(n) => n.as_i64().map(|ns| GoDuration::from_nanos(ns.into())),
            Value::String(text) => match text.trim().parse::<i64>() {
                Ok(ns) => Some(GoDuration::from_nanos(ns.into())),
                Err(_) => GoDuration::parse(text).ok(),
            },
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| {
            ConfigError::invalid(
                self.key_path(key),
                value,
                "is not a duration (expected e.g. \"10s\", \"-1s\" or integer nanoseconds)",
            )
        })
    }

    /// A list of strings; a single string is split on whitespace (gnmic's env form).
    pub fn string_list(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        let Some(value) = self.raw(key) else {
            return Ok(Vec::new());
        };
        match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) if !self.strict => Ok(n.to_string()),
                    other => Err(ConfigError::invalid(
                        format!("{}[{i}]", self.key_path(key)),
                        other,
                        format!("is {} (expected a string)", type_name(other)),
                    )),
                })
                .collect(),
            Value::String(s) => Ok(s.split_whitespace().map(str::to_string).collect()),
            other => Err(ConfigError::invalid(
                self.key_path(key),
                other,
                "is not a list of strings",
            )),
        }
    }

    /// A map of string to string (e.g. `event-tags`).
    pub fn string_map(&self, key: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        let Some(value) = self.raw(key) else {
            return Ok(BTreeMap::new());
        };
        let Value::Object(map) = value else {
            return Err(ConfigError::invalid(
                self.key_path(key),
                value,
                "is not a map of strings",
            ));
        };
        map.iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Number(n) if !self.strict => Ok((k.clone(), n.to_string())),
                Value::Bool(b) if !self.strict => Ok((k.clone(), b.to_string())),
                other => Err(ConfigError::invalid(
                    format!("{}.{k}", self.key_path(key)),
                    other,
                    format!("is {} (expected a string)", type_name(other)),
                )),
            })
            .collect()
    }

    /// A nested section, if present.
    pub fn section(&self, key: &str) -> Result<Option<Section<'a>>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(value) => self.child(key, value).map(Some),
        }
    }

    /// Warns about every key that no reader asked for.
    pub fn warn_unknown_keys(&self) {
        for key in self.unknown_keys() {
            warning::warn(key, "unknown configuration key; ignored");
        }
    }

    /// Keys nobody read.
    pub fn unknown_keys(&self) -> Vec<String> {
        let read = self.read_keys.borrow();
        self.map
            .keys()
            .filter(|k| !read.iter().any(|r| r == *k))
            .map(|k| self.key_path(k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_key_and_value() {
        let value = json!({"sample-interval": "10x", "flag": "maybe", "n": -1});
        let section = Section::from_value("subscriptions.port-stats", &value).unwrap();
        let err = section.duration("sample-interval").unwrap_err().to_string();
        assert!(
            err.starts_with("subscriptions.port-stats.sample-interval: \"10x\" is not a duration"),
            "{err}"
        );
        let err = section.bool("flag").unwrap_err().to_string();
        assert!(
            err.contains("subscriptions.port-stats.flag: \"maybe\""),
            "{err}"
        );
        assert!(section.u64("n").is_err());
    }

    #[test]
    fn durations_accept_ns_integers_and_strings() {
        let value = json!({"a": 5_000_000_000u64, "b": "1m", "c": "250", "d": "-1s"});
        let section = Section::from_value("", &value).unwrap();
        assert_eq!(section.duration("a").unwrap(), Some(Duration::from_secs(5)));
        assert_eq!(
            section.duration("b").unwrap(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            section.duration("c").unwrap(),
            Some(Duration::from_nanos(250))
        );
        assert!(section.duration("d").is_err());
        assert!(section.signed_duration("d").unwrap().unwrap().is_negative());
    }

    #[test]
    fn unknown_keys_are_reported() {
        let value = json!({"known": 1, "typo": 2});
        let section = Section::from_value("outputs.o1", &value).unwrap();
        let _ = section.u64("known");
        assert_eq!(section.unknown_keys(), vec!["outputs.o1.typo".to_string()]);
        let ((), warnings) = warning::collect(|| section.warn_unknown_keys());
        assert_eq!(warnings[0].key, "outputs.o1.typo");
    }

    #[test]
    fn strict_sections_refuse_numbers_for_strings() {
        let value = json!({"name": 123, "address": true});
        let section = Section::strict("", &value).unwrap();
        let err = section.string("name").unwrap_err().to_string();
        assert_eq!(err, "name: 123 is a number (expected a string)");
        let loose = Section::from_value("", &value).unwrap();
        assert_eq!(loose.string("name").unwrap().as_deref(), Some("123"));
    }
}
