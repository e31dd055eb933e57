//! Regex selectors (`tags`, `tag-names`, `values`, `value-names`) and jq
//! conditions, shared by most processor types.

use gnomon_gnmi::event::Event;
use regex::{Regex, RegexSet};
use serde_json::Value;

use crate::config::Fields;
use crate::error::ProcessorError;
use crate::jq::Jq;

/// A list of patterns, matched as "any of them".
#[derive(Debug, Clone, Default)]
pub(crate) struct Matcher {
    regexes: Vec<Regex>,
    set: Option<RegexSet>,
    /// Some pattern matches every string (`.*`, `^.*$`, empty pattern).
    all: bool,
}

impl Matcher {
    pub(crate) fn new(regexes: Vec<Regex>) -> Self {
        let all = regexes.iter().any(|r| matches_everything(r.as_str()));
        let set = if regexes.len() > 1 && !all {
            RegexSet::new(regexes.iter().map(Regex::as_str)).ok()
        } else {
            None
        };
        Self { regexes, set, all }
    }

    pub(crate) fn from_field(f: &Fields<'_>, key: &'static str) -> Result<Self, ProcessorError> {
        Ok(Self::new(f.regexes(key)?))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.regexes.is_empty()
    }

    #[inline]
    pub(crate) fn is_match(&self, s: &str) -> bool {
        if self.all {
            return true;
        }
        match (&self.set, self.regexes.as_slice()) {
            (_, []) => false,
            (_, [one]) => one.is_match(s),
            (Some(set), _) => set.is_match(s),
            (None, many) => many.iter().any(|r| r.is_match(s)),
        }
    }

    /// True when the value is a string one pattern matches (gnmic only
    /// matches `values` patterns against string values).
    #[inline]
    pub(crate) fn is_match_value(&self, v: &Value) -> bool {
        match v {
            Value::String(s) => self.is_match(s),
            _ => false,
        }
    }
}

fn matches_everything(pattern: &str) -> bool {
    matches!(
        pattern,
        "" | ".*" | "^.*" | ".*$" | "^.*$" | "(.*)" | "^(.*)$"
    )
}

/// The four selector lists most processors take.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selectors {
    pub(crate) tag_names: Matcher,
    pub(crate) tags: Matcher,
    pub(crate) value_names: Matcher,
    pub(crate) values: Matcher,
}

impl Selectors {
    pub(crate) fn from_fields(f: &Fields<'_>) -> Result<Self, ProcessorError> {
        Ok(Self {
            tag_names: Matcher::from_field(f, "tag-names")?,
            tags: Matcher::from_field(f, "tags")?,
            value_names: Matcher::from_field(f, "value-names")?,
            values: Matcher::from_field(f, "values")?,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tag_names.is_empty()
            && self.tags.is_empty()
            && self.value_names.is_empty()
            && self.values.is_empty()
    }

    /// Some value name, string value, tag name or tag value matches.
    pub(crate) fn any_match(&self, e: &Event) -> bool {
        if !self.value_names.is_empty() || !self.values.is_empty() {
            for (k, v) in &e.values {
                if self.value_names.is_match(k) || self.values.is_match_value(v) {
                    return true;
                }
            }
        }
        if !self.tag_names.is_empty() || !self.tags.is_empty() {
            for (k, v) in &e.tags {
                if self.tag_names.is_match(k) || self.tags.is_match(v) {
                    return true;
                }
            }
        }
        false
    }
}

/// A jq `condition`, evaluated per event.
#[derive(Debug)]
pub(crate) struct Condition {
    jq: Jq,
    processor: String,
}

impl Condition {
    /// Reads and compiles the `condition` field; empty means none.
    pub(crate) fn from_field(f: &Fields<'_>) -> Result<Option<Self>, ProcessorError> {
        Self::from_key(f, "condition")
    }

    pub(crate) fn from_key(
        f: &Fields<'_>,
        key: &'static str,
    ) -> Result<Option<Self>, ProcessorError> {
        match f.string(key)? {
            None => Ok(None),
            Some(code) if code.trim().is_empty() => Ok(None),
            Some(code) => Jq::compile(&code)
                .map(|jq| {
                    Some(Self {
                        jq,
                        processor: f.processor.to_string(),
                    })
                })
                .map_err(|e| f.err_str(key, &code, e)),
        }
    }

    pub(crate) fn compile(processor: &str, code: &str) -> Result<Self, String> {
        Ok(Self {
            jq: Jq::compile(code)?,
            processor: processor.to_string(),
        })
    }

    /// The condition's verdict; an evaluation error is logged and returned.
    pub(crate) fn check(&self, e: &Event) -> Result<bool, ()> {
        self.jq.check(e).map_err(|err| {
            tracing::warn!(
                processor = self.processor.as_str(),
                condition = self.jq.source(),
                error = err.as_str(),
                "condition check failed"
            );
        })
    }
}
