//! Reading one processor's fields out of the raw config map, with errors that
//! name the processor, the key and the value.
//!
//! gnmic decodes with mapstructure: unknown keys are ignored. gnomon warns
//! about them (the project's rule for unknown keys) and otherwise ignores
//! them. Scalars are read leniently where YAML or environment overrides can
//! change their JSON type (`"true"` for a bool, `10` for a string).

use std::cell::RefCell;
use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

use crate::error::{show, ProcessorError};

/// The fields of one processor definition.
pub(crate) struct Fields<'a> {
    pub(crate) processor: &'a str,
    pub(crate) kind: &'a str,
    map: &'a Map<String, Value>,
    used: RefCell<Vec<&'static str>>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(processor: &'a str, kind: &'a str, map: &'a Map<String, Value>) -> Self {
        Self {
            processor,
            kind,
            map,
            used: RefCell::new(vec!["debug"]),
        }
    }

    /// An error for `key` holding `value`.
    pub(crate) fn err(
        &self,
        key: &str,
        value: &Value,
        reason: impl Into<String>,
    ) -> ProcessorError {
        ProcessorError::Field {
            processor: self.processor.to_string(),
            kind: self.kind.to_string(),
            key: key.to_string(),
            value: show(value),
            reason: reason.into(),
        }
    }

    /// An error for `key` holding the string `value`.
    pub(crate) fn err_str(
        &self,
        key: &str,
        value: &str,
        reason: impl Into<String>,
    ) -> ProcessorError {
        self.err(key, &Value::String(value.to_string()), reason)
    }

    /// The raw value, `None` when absent or `null`.
    pub(crate) fn raw(&self, key: &'static str) -> Option<&'a Value> {
        self.used.borrow_mut().push(key);
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    pub(crate) fn string(&self, key: &'static str) -> Result<Option<String>, ProcessorError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => scalar_string(v)
                .map(Some)
                .ok_or_else(|| self.err(key, v, "expected a string")),
        }
    }

    pub(crate) fn string_or(
        &self,
        key: &'static str,
        default: &str,
    ) -> Result<String, ProcessorError> {
        Ok(self.string(key)?.unwrap_or_else(|| default.to_string()))
    }

    pub(crate) fn bool(&self, key: &'static str) -> Result<bool, ProcessorError> {
        match self.raw(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v @ Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "t" | "yes" => Ok(true),
                "false" | "0" | "f" | "no" | "" => Ok(false),
                _ => Err(self.err(key, v, "expected true or false")),
            },
            Some(v) => Err(self.err(key, v, "expected true or false")),
        }
    }

    pub(crate) fn i64(&self, key: &'static str) -> Result<Option<i64>, ProcessorError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => {
                let n = match v {
                    Value::Number(n) => n.as_i64().or_else(|| {
                        n.as_f64()
                            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                            .map(|f| f as i64)
                    }),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                };
                n.map(Some)
                    .ok_or_else(|| self.err(key, v, "expected an integer"))
            }
        }
    }

    pub(crate) fn f64(&self, key: &'static str) -> Result<Option<f64>, ProcessorError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => {
                let n = match v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                };
                n.filter(|f| f.is_finite())
                    .map(Some)
                    .ok_or_else(|| self.err(key, v, "expected a number"))
            }
        }
    }

    /// A list of strings; a single string counts as a one-item list.
    pub(crate) fn strings(&self, key: &'static str) -> Result<Vec<String>, ProcessorError> {
        match self.raw(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_null())
                .map(|(i, v)| {
                    scalar_string(v)
                        .ok_or_else(|| self.err(&format!("{key}[{i}]"), v, "expected a string"))
                })
                .collect(),
            Some(v) => scalar_string(v)
                .map(|s| vec![s])
                .ok_or_else(|| self.err(key, v, "expected a list of strings")),
        }
    }

    /// A map of string → string.
    pub(crate) fn string_map(
        &self,
        key: &'static str,
    ) -> Result<BTreeMap<String, String>, ProcessorError> {
        match self.raw(key) {
            None => Ok(BTreeMap::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    let v = if v.is_null() {
                        Some(String::new())
                    } else {
                        scalar_string(v)
                    };
                    v.map(|v| (k.clone(), v)).ok_or_else(|| {
                        self.err(
                            &format!("{key}.{k}"),
                            m.get(k).unwrap_or(&Value::Null),
                            "expected a string",
                        )
                    })
                })
                .collect(),
            Some(v) => Err(self.err(key, v, "expected a map of names to strings")),
        }
    }

    /// Regexes compiled from a list field (Go RE2 syntax ≈ Rust `regex`).
    pub(crate) fn regexes(&self, key: &'static str) -> Result<Vec<Regex>, ProcessorError> {
        self.strings(key)?
            .iter()
            .enumerate()
            .map(|(i, p)| compile_regex(p).map_err(|e| self.err_str(&format!("{key}[{i}]"), p, e)))
            .collect()
    }

    /// One regex from a string field.
    pub(crate) fn regex(&self, key: &'static str) -> Result<Option<Regex>, ProcessorError> {
        match self.string(key)? {
            None => Ok(None),
            Some(p) if p.is_empty() => Ok(None),
            Some(p) => compile_regex(&p)
                .map(Some)
                .map_err(|e| self.err_str(key, &p, e)),
        }
    }

    /// Warns about keys nobody read.
    pub(crate) fn warn_unknown(&self) {
        let used = self.used.borrow();
        for key in self.map.keys() {
            if !used.iter().any(|u| u == key) {
                tracing::warn!(
                    processor = self.processor,
                    kind = self.kind,
                    key = key.as_str(),
                    "unknown processor field ignored"
                );
            }
        }
    }
}

/// Compiles a Go regular expression. The differences that matter for
/// gnmic configs are few: `\z` is spelled the same, `(?P<name>)` works in
/// both; Rust rejects look-around and backreferences, as RE2 does.
pub(crate) fn compile_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| one_line(&e.to_string()))
}

/// Error texts from some crates span lines; configs errors are one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// String form of a scalar (YAML may hand a number where a string is meant).
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
