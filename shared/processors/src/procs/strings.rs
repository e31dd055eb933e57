//! event-strings: Go string functions applied to the names or values of the
//! selected values and tags.

use std::sync::Arc;

use gnomon_gnmi::event::Event;
use regex::Regex;
use serde_json::Value;

use crate::config::{compile_regex, Fields};
use crate::error::ProcessorError;
use crate::gofmt::title;
use crate::registry::{pure, Build, Pure};
use crate::select::Selectors;

#[derive(Debug, Clone, Copy, PartialEq)]
enum On {
    Name,
    Value,
    /// No `apply-on`: gnmic runs the transform and changes nothing.
    Nothing,
}

#[derive(Debug)]
enum Op {
    Replace {
        old: Regex,
        new: String,
    },
    TrimPrefix(String),
    TrimSuffix(String),
    Title,
    ToLower,
    ToUpper,
    Split {
        on: String,
        join: String,
        first: usize,
        last: usize,
    },
    PathBase,
}

#[derive(Debug)]
struct Transform {
    op: Op,
    on: On,
    keep: bool,
}

struct Strings {
    sel: Selectors,
    transforms: Vec<Transform>,
    any_keep: bool,
}

pub(crate) fn strings(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    let mut transforms = Vec::new();
    if let Some(raw) = f.raw("transforms") {
        let items: Vec<&Value> = match raw {
            Value::Array(items) => items.iter().collect(),
            Value::Object(_) => vec![raw],
            other => return Err(f.err("transforms", other, "expected a list of transforms")),
        };
        for (i, item) in items.into_iter().enumerate() {
            let Value::Object(ops) = item else {
                return Err(f.err(
                    &format!("transforms[{i}]"),
                    item,
                    "expected a map of one transform",
                ));
            };
            for (name, params) in ops {
                transforms.push(transform(f, i, name, params)?);
            }
        }
    }
    let any_keep = transforms.iter().any(|t| t.keep);
    Ok(pure(Strings {
        sel: Selectors::from_fields(f)?,
        transforms,
        any_keep,
    }))
}

fn transform(
    f: &Fields<'_>,
    i: usize,
    name: &str,
    params: &Value,
) -> Result<Transform, ProcessorError> {
    let key = |field: &str| format!("transforms[{i}].{name}.{field}");
    let empty = serde_json::Map::new();
    let p = match params {
        Value::Object(m) => m,
        Value::Null => &empty,
        other => {
            return Err(f.err(
                &format!("transforms[{i}].{name}"),
                other,
                "expected a map of parameters",
            ))
        }
    };
    let text = |field: &str| -> Result<String, ProcessorError> {
        match p.get(field) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(other) => Err(f.err(&key(field), other, "expected a string")),
        }
    };
    let count = |field: &str| -> Result<usize, ProcessorError> {
        match p.get(field) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .map(|n| n as usize)
                .ok_or_else(|| f.err(&key(field), v, "expected a non-negative integer")),
        }
    };
    let on = match p.get("apply-on") {
        None | Some(Value::Null) => {
            tracing::warn!(
                processor = f.processor,
                transform = name,
                "event-strings transform without apply-on changes nothing"
            );
            On::Nothing
        }
        Some(Value::String(s)) if s == "name" => On::Name,
        Some(Value::String(s)) if s == "value" => On::Value,
        Some(Value::String(s)) if s.is_empty() => On::Nothing,
        Some(other) => {
            return Err(f.err(&key("apply-on"), other, "expected \"name\" or \"value\""))
        }
    };
    let keep = match p.get("keep") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(f.err(&key("keep"), other, "expected true or false")),
    };
    let op = match name {
        "replace" => {
            let old = text("old")?;
            Op::Replace {
                old: compile_regex(&old).map_err(|e| f.err_str(&key("old"), &old, e))?,
                new: text("new")?,
            }
        }
        "trim-prefix" | "trim_prefix" => Op::TrimPrefix(text("prefix")?),
        "trim-suffix" | "trim_suffix" => Op::TrimSuffix(text("suffix")?),
        "title" => Op::Title,
        "to-lower" | "to_lower" => Op::ToLower,
        "to-upper" | "to_upper" => Op::ToUpper,
        "split" => Op::Split {
            on: text("split-on")?,
            join: text("join-with")?,
            first: count("ignore-first")?,
            last: count("ignore-last")?,
        },
        "path-base" | "path_base" => Op::PathBase,
        _ => {
            return Err(f.err(
                &format!("transforms[{i}]"),
                &Value::String(name.to_string()),
                "unknown transform (replace, trim-prefix, trim-suffix, title, to-lower, to-upper, split, path-base)",
            ))
        }
    };
    Ok(Transform { op, on, keep })
}

impl Op {
    /// Applies the function to an owned string, in place where it can.
    fn run(&self, mut s: String) -> String {
        match self {
            Op::Replace { old, new } => match old.replace_all(&s, new.as_str()) {
                std::borrow::Cow::Borrowed(_) => s,
                std::borrow::Cow::Owned(o) => o,
            },
            Op::TrimPrefix(p) => {
                if !p.is_empty() && s.starts_with(p.as_str()) {
                    s.drain(..p.len());
                }
                s
            }
            Op::TrimSuffix(p) => {
                if !p.is_empty() && s.ends_with(p.as_str()) {
                    s.truncate(s.len() - p.len());
                }
                s
            }
            Op::Title => title(&s),
            Op::ToLower => {
                if s.is_ascii() {
                    s.make_ascii_lowercase();
                    s
                } else {
                    s.to_lowercase()
                }
            }
            Op::ToUpper => {
                if s.is_ascii() {
                    s.make_ascii_uppercase();
                    s
                } else {
                    s.to_uppercase()
                }
            }
            Op::Split {
                on,
                join,
                first,
                last,
            } => {
                let items: Vec<&str> = if on.is_empty() {
                    // Go splits into UTF-8 sequences on an empty separator.
                    s.char_indices()
                        .map(|(i, c)| &s[i..i + c.len_utf8()])
                        .collect()
                } else {
                    s.split(on.as_str()).collect()
                };
                let n = items.len();
                if n <= *first || n <= *last || *first >= n - *last {
                    return String::new();
                }
                items[*first..n - *last].join(join)
            }
            Op::PathBase => path_base(s),
        }
    }
}

/// Go's `filepath.Base` (Unix): the last element, trailing slashes removed;
/// `""` → `"."`, all slashes → `"/"`.
fn path_base(mut s: String) -> String {
    if s.is_empty() {
        return ".".into();
    }
    let trimmed = s.trim_end_matches('/').len();
    if trimmed == 0 {
        return "/".into();
    }
    s.truncate(trimmed);
    if let Some(i) = s.rfind('/') {
        s.drain(..=i);
    }
    s
}

impl Transform {
    /// One step on a (name, value) pair of a value.
    fn on_value(&self, k: String, v: Value) -> (String, Value) {
        match self.on {
            On::Name => (self.op.run(k), v),
            On::Value => match v {
                Value::String(s) => (k, Value::String(self.op.run(s))),
                other => (k, other),
            },
            On::Nothing => (k, v),
        }
    }

    /// One step on a tag.
    fn on_tag(&self, k: String, v: String) -> (String, String) {
        match self.on {
            On::Name => (self.op.run(k), v),
            On::Value => (k, self.op.run(v)),
            On::Nothing => (k, v),
        }
    }
}

impl Strings {
    fn value_selected(&self, k: &str, v: &Value) -> bool {
        self.sel.value_names.is_match(k) || self.sel.values.is_match_value(v)
    }

    fn tag_selected(&self, k: &str, v: &str) -> bool {
        self.sel.tag_names.is_match(k) || self.sel.tags.is_match(v)
    }

    fn apply_values(&self, e: &mut Event) {
        if !e.values.iter().any(|(k, v)| self.value_selected(k, v)) {
            return;
        }
        // Entries are popped into a reused scratch buffer and reinserted: a
        // BTreeMap keeps its (emptied) root node, so renaming a few values
        // allocates nothing beyond what the transform itself needs.
        VALUE_SCRATCH.with(|cell| {
            let mut scratch = cell.take();
            while let Some(kv) = e.values.pop_first() {
                scratch.push(kv);
            }
            for (k, v) in scratch.drain(..) {
                if !self.value_selected(&k, &v) {
                    e.values.insert(k, v);
                    continue;
                }
                if !self.any_keep {
                    // Only the last name survives: no intermediate inserts.
                    let (k, v) = self
                        .transforms
                        .iter()
                        .fold((k, v), |(k, v), t| t.on_value(k, v));
                    e.values.insert(k, v);
                    continue;
                }
                // gnmic's sequence: each step removes the current name unless
                // `keep`, then stores the transformed pair.
                e.values.insert(k.clone(), v.clone());
                let (mut k, mut v) = (k, v);
                for t in &self.transforms {
                    if !t.keep {
                        e.values.remove(&k);
                    }
                    let (nk, nv) = t.on_value(k, v);
                    e.values.insert(nk.clone(), nv.clone());
                    (k, v) = (nk, nv);
                }
            }
            cell.set(scratch);
        });
    }

    fn apply_tags(&self, e: &mut Event) {
        if !e.tags.iter().any(|(k, v)| self.tag_selected(k, v)) {
            return;
        }
        TAG_SCRATCH.with(|cell| {
            let mut scratch = cell.take();
            while let Some(kv) = e.tags.pop_first() {
                scratch.push(kv);
            }
            for (k, v) in scratch.drain(..) {
                if !self.tag_selected(&k, &v) {
                    e.tags.insert(k, v);
                    continue;
                }
                if !self.any_keep {
                    let (k, v) = self
                        .transforms
                        .iter()
                        .fold((k, v), |(k, v), t| t.on_tag(k, v));
                    e.tags.insert(k, v);
                    continue;
                }
                e.tags.insert(k.clone(), v.clone());
                let (mut k, mut v) = (k, v);
                for t in &self.transforms {
                    if !t.keep {
                        e.tags.remove(&k);
                    }
                    let (nk, nv) = t.on_tag(k, v);
                    e.tags.insert(nk.clone(), nv.clone());
                    (k, v) = (nk, nv);
                }
            }
            cell.set(scratch);
        });
    }
}

thread_local! {
    static VALUE_SCRATCH: std::cell::Cell<Vec<(String, Value)>> = const { std::cell::Cell::new(Vec::new()) };
    static TAG_SCRATCH: std::cell::Cell<Vec<(String, String)>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Pure for Strings {
    fn apply(&self, events: &mut Vec<Event>) {
        if self.transforms.is_empty() {
            return;
        }
        let values = !self.sel.value_names.is_empty() || !self.sel.values.is_empty();
        let tags = !self.sel.tag_names.is_empty() || !self.sel.tags.is_empty();
        for e in events.iter_mut() {
            if values {
                self.apply_values(e);
            }
            if tags {
                self.apply_tags(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_path_base() {
        assert_eq!(path_base("/a/b/c".into()), "c");
        assert_eq!(path_base("/a/b/".into()), "b");
        assert_eq!(path_base("".into()), ".");
        assert_eq!(path_base("///".into()), "/");
        assert_eq!(path_base("abc".into()), "abc");
    }

    #[test]
    fn go_split() {
        let op = Op::Split {
            on: "/".into(),
            join: "_".into(),
            first: 2,
            last: 0,
        };
        assert_eq!(op.run("path/to/a/resource".into()), "a_resource");
        let op = Op::Split {
            on: "/".into(),
            join: "_".into(),
            first: 4,
            last: 0,
        };
        assert_eq!(op.run("path/to/a/resource".into()), "");
    }
}
