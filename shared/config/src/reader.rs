//! Typed reading of one configuration section (a JSON object after file parsing and
//! environment overrides), with the key path in every error and a warning for every key
//! nobody asked for.

use super::duration::parse_go_duration;
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
    expand_env: bool,
    read_keys: RefCell<Vec<String>>,
}

/// The empty object, for sections that are absent.
static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

impl<'a> Section<'a> {
    /// A section at `path` (dotted, for messages). `expand_env` turns on `$VAR` expansion
    /// of the strings read from it (gnmic does this for clustering, outputs, inputs and lockers).
    pub fn new(path: impl Into<String>, map: &'a Map<String, Value>, expand_env: bool) -> Self {
        Self {
            path: path.into(),
            map,
            expand_env,
            read_keys: RefCell::new(Vec::new()),
        }
    }

    /// An empty section at `path`.
    pub fn empty(path: impl Into<String>) -> Section<'static> {
        Section::new(path, &EMPTY, false)
    }

    /// Reads `value` as a section, or fails naming `path`.
    pub fn from_value(
        path: impl Into<String>,
        value: &'a Value,
        expand_env: bool,
    ) -> Result<Self, ConfigError> {
        let path = path.into();
        match value {
            Value::Object(map) => Ok(Self::new(path, map, expand_env)),
            other => Err(ConfigError::invalid(
                path,
                other,
                "is not a map of settings",
            )),
        }
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

    /// Whether env expansion is on for this section.
    pub fn expands_env(&self) -> bool {
        self.expand_env
    }

    /// The raw value of `key` (null counts as absent); marks the key as known.
    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.read_keys.borrow_mut().push(key.to_string());
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Marks keys as known without reading them (accepted for gnmic compatibility, unused).
    pub fn accept(&self, keys: &[&str]) {
        self.read_keys
            .borrow_mut()
            .extend(keys.iter().map(|k| k.to_string()));
    }

    /// All keys of this section.
    pub fn keys(&self) -> impl Iterator<Item = &'a String> {
        self.map.keys()
    }

    /// A string (numbers and booleans are taken as their text).
    pub fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        let Some(value) = self.raw(key) else {
            return Ok(None);
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(ConfigError::invalid(
                    self.key_path(key),
                    other,
                    "is not a string",
                ))
            }
        };
        Ok(Some(self.expand(&text)))
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
            Value::String(s) => match self.expand(s).trim().to_ascii_lowercase().as_str() {
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
            Value::String(s) => self.expand(s).trim().parse::<u64>().ok(),
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| {
            ConfigError::invalid(self.key_path(key), value, "is not a non-negative integer")
        })
    }

    /// A duration: a Go duration string or integer nanoseconds.
    pub fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        let Some(value) = self.raw(key) else {
            return Ok(None);
        };
        let parsed = match value {
            Value::Number(n) => n.as_u64().map(Duration::from_nanos),
            Value::String(s) => {
                let text = self.expand(s);
                match text.trim().parse::<u64>() {
                    Ok(ns) => Some(Duration::from_nanos(ns)),
                    Err(_) => parse_go_duration(&text).ok(),
                }
            }
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
                    Value::String(s) => Ok(self.expand(s)),
                    Value::Number(n) => Ok(n.to_string()),
                    other => Err(ConfigError::invalid(
                        format!("{}[{i}]", self.key_path(key)),
                        other,
                        "is not a string",
                    )),
                })
                .collect(),
            Value::String(s) => Ok(self
                .expand(s)
                .split_whitespace()
                .map(str::to_string)
                .collect()),
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
                Value::String(s) => Ok((k.clone(), self.expand(s))),
                Value::Number(n) => Ok((k.clone(), n.to_string())),
                Value::Bool(b) => Ok((k.clone(), b.to_string())),
                other => Err(ConfigError::invalid(
                    format!("{}.{k}", self.key_path(key)),
                    other,
                    "is not a string",
                )),
            })
            .collect()
    }

    /// A nested section, if present.
    pub fn section(&self, key: &str) -> Result<Option<Section<'a>>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(value) => {
                Section::from_value(self.key_path(key), value, self.expand_env).map(Some)
            }
        }
    }

    /// The raw value with `$VAR` expansion applied recursively when on (gnmic's locker map).
    pub fn expanded_value(&self, key: &str) -> Option<Value> {
        self.raw(key).map(|v| {
            if self.expand_env {
                expand_value(v)
            } else {
                v.clone()
            }
        })
    }

    /// Logs a warning for every key that no reader asked for.
    pub fn warn_unknown_keys(&self) {
        let read = self.read_keys.borrow();
        for key in self.map.keys() {
            if !read.iter().any(|k| k == key) {
                tracing::warn!(key = %self.key_path(key), "unknown configuration key ignored");
            }
        }
    }

    /// Keys nobody read (for tests and callers that collect them).
    pub fn unknown_keys(&self) -> Vec<String> {
        let read = self.read_keys.borrow();
        self.map
            .keys()
            .filter(|k| !read.iter().any(|r| r == *k))
            .map(|k| self.key_path(k))
            .collect()
    }

    fn expand(&self, text: &str) -> String {
        if self.expand_env {
            expand_env_vars(text)
        } else {
            text.to_string()
        }
    }
}

/// Replaces `$VAR` and `${VAR}` with the environment value (empty when unset), like Go's
/// `os.ExpandEnv`.
pub fn expand_env_vars(text: &str) -> String {
    if !text.contains('$') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(braced) = after.strip_prefix('{') {
            if let Some(end) = braced.find('}') {
                out.push_str(&std::env::var(&braced[..end]).unwrap_or_default());
                rest = &braced[end + 1..];
                continue;
            }
            out.push('$');
            rest = after;
            continue;
        }
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if name_len == 0 {
            out.push('$');
            rest = after;
            continue;
        }
        out.push_str(&std::env::var(&after[..name_len]).unwrap_or_default());
        rest = &after[name_len..];
    }
    out.push_str(rest);
    out
}

/// `$VAR` expansion over every string of a JSON value.
pub fn expand_value(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(expand_env_vars(s)),
        Value::Array(items) => Value::Array(items.iter().map(expand_value).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), expand_value(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_key_and_value() {
        let value = json!({"sample-interval": "10x", "flag": "maybe", "n": -1});
        let section = Section::from_value("subscriptions.port-stats", &value, false).unwrap();
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
        let value = json!({"a": 5_000_000_000u64, "b": "1m", "c": "250"});
        let section = Section::from_value("", &value, false).unwrap();
        assert_eq!(section.duration("a").unwrap(), Some(Duration::from_secs(5)));
        assert_eq!(
            section.duration("b").unwrap(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            section.duration("c").unwrap(),
            Some(Duration::from_nanos(250))
        );
    }

    #[test]
    fn unknown_keys_are_reported() {
        let value = json!({"known": 1, "typo": 2});
        let section = Section::from_value("outputs.o1", &value, false).unwrap();
        let _ = section.u64("known");
        assert_eq!(section.unknown_keys(), vec!["outputs.o1.typo".to_string()]);
    }

    #[test]
    fn expands_env_like_go() {
        std::env::set_var("GNOMON_READER_TEST_VAR", "abc");
        assert_eq!(
            expand_env_vars("x-$GNOMON_READER_TEST_VAR-${GNOMON_READER_TEST_VAR}"),
            "x-abc-abc"
        );
        assert_eq!(expand_env_vars("$GNOMON_READER_TEST_UNSET_VAR"), "");
        assert_eq!(expand_env_vars("cost $"), "cost $");
    }
}
