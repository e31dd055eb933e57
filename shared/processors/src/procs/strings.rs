//! event-strings: Go string functions applied to the names or values of the
//! selected values and tags.

use std::sync::Arc;

use regex::Regex;
use serde_json::Value;

use crate::build::{pure, Build, Pure};
use crate::config::{compile_regex, Fields};
use crate::error::ProcessorError;
use crate::gofmt::title;
use crate::record::{Record, Str, Val};
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
    fn run(&self, mut s: Str) -> Str {
        match self {
            Op::Replace { old, new } => match old.replace_all(&s, new.as_str()) {
                std::borrow::Cow::Borrowed(_) => s,
                std::borrow::Cow::Owned(o) => Str::from(o),
            },
            Op::TrimPrefix(p) => {
                if !p.is_empty() && s.starts_with(p.as_str()) {
                    Str::from(&s[p.len()..])
                } else {
                    s
                }
            }
            Op::TrimSuffix(p) => {
                if !p.is_empty() && s.ends_with(p.as_str()) {
                    s.truncate(s.len() - p.len());
                }
                s
            }
            Op::Title => Str::from(title(&s)),
            Op::ToLower => {
                if s.is_ascii() {
                    s.make_ascii_lowercase();
                    s
                } else {
                    Str::from(s.to_lowercase())
                }
            }
            Op::ToUpper => {
                if s.is_ascii() {
                    s.make_ascii_uppercase();
                    s
                } else {
                    Str::from(s.to_uppercase())
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
                    return Str::default();
                }
                Str::from(items[*first..n - *last].join(join))
            }
            Op::PathBase => path_base(s),
        }
    }

    /// [`Self::run`] on a string in place: path-base keeps the string when
    /// it is its own base and otherwise stores the base (no move of the pair
    /// it belongs to).
    #[inline]
    fn run_in_place(&self, s: &mut Str) {
        match self {
            Op::PathBase => {
                if let Some(base) = path_base_of(s) {
                    *s = base;
                }
            }
            _ => *s = self.run(std::mem::take(s)),
        }
    }
}

/// The result of [`path_base`] when it differs from `s`.
#[inline]
fn path_base_of(s: &str) -> Option<Str> {
    let bytes = s.as_bytes();
    let end = match bytes.last() {
        Some(b'/') | None => match bytes.iter().rposition(|&b| b != b'/') {
            Some(end) => end,
            // "" → ".", all slashes → "/".
            None => return Some(Str::const_new(if s.is_empty() { "." } else { "/" })),
        },
        Some(_) => bytes.len() - 1,
    };
    match last_slash(&bytes[..end]) {
        Some(slash) => Some(Str::from(&s[slash + 1..=end])),
        None if end + 1 == s.len() => None,
        None => Some(Str::from(&s[..=end])),
    }
}

/// Go's `filepath.Base` (Unix): the last element, trailing slashes removed;
/// `""` → `"."`, all slashes → `"/"`. The result of a typical value path is
/// short enough to be stored inline.
fn path_base(s: Str) -> Str {
    if s.is_empty() {
        return Str::const_new(".");
    }
    let trimmed = s.trim_end_matches('/');
    if trimmed.is_empty() {
        return Str::const_new("/");
    }
    match trimmed.rfind('/') {
        Some(i) => Str::from(&trimmed[i + 1..]),
        None if trimmed.len() == s.len() => s,
        None => Str::from(trimmed),
    }
}

impl Transform {
    /// One step on a (name, value) pair of a value.
    fn on_value(&self, k: Str, v: Val) -> (Str, Val) {
        match self.on {
            On::Name => (self.op.run(k), v),
            On::Value => match v {
                Val::Str(s) => (k, Val::Str(self.op.run(s))),
                other => (k, other),
            },
            On::Nothing => (k, v),
        }
    }

    /// One step on a tag.
    fn on_tag(&self, k: Str, v: Str) -> (Str, Str) {
        match self.on {
            On::Name => (self.op.run(k), v),
            On::Value => (k, self.op.run(v)),
            On::Nothing => (k, v),
        }
    }
}

/// The index of the last `/` in `bytes`, eight bytes at a time (value
/// names end in a base of about ten bytes after tens of bytes of path, and a
/// byte loop's exit costs a misprediction per name).
#[inline]
fn last_slash(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let mut end = bytes.len();
    while end >= 8 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[end - 8..end]);
        // Bytes equal to '/' become zero; the high bit of each zero byte is
        // then set, exactly (no carry between bytes).
        let x = u64::from_le_bytes(word) ^ (ONES * u64::from(b'/'));
        let zero = !(((x & LOW7) + LOW7) | x | LOW7);
        if zero != 0 {
            // The highest flagged byte is the last slash of the chunk.
            return Some(end - 1 - (zero.leading_zeros() / 8) as usize);
        }
        end -= 8;
    }
    bytes[..end].iter().rposition(|&b| b == b'/')
}

impl Transform {
    /// [`Self::on_value`] in place.
    #[inline]
    fn on_value_in_place(&self, k: &mut Str, v: &mut Val) {
        match (self.on, v) {
            (On::Name, _) => self.op.run_in_place(k),
            (On::Value, Val::Str(s)) => self.op.run_in_place(s),
            _ => {}
        }
    }

    /// [`Self::on_tag`] in place.
    #[inline]
    fn on_tag_in_place(&self, k: &mut Str, v: &mut Str) {
        match self.on {
            On::Name => self.op.run_in_place(k),
            On::Value => self.op.run_in_place(v),
            On::Nothing => {}
        }
    }
}

impl Strings {
    #[inline]
    fn value_selected(&self, k: &str, v: &Val) -> bool {
        self.sel.value_names.is_match(k) || self.sel.values.is_match_value(v)
    }

    #[inline]
    fn tag_selected(&self, k: &str, v: &str) -> bool {
        self.sel.tag_names.is_match(k) || self.sel.tags.is_match(v)
    }

    fn apply_values(&self, e: &mut Record) {
        if !e.values.iter().any(|(k, v)| self.value_selected(k, v)) {
            return;
        }
        if !self.any_keep {
            // Only the last name survives: transform each selected pair in
            // place, then restore the order. A name that now collides keeps
            // the pair that came last, as reinserting in order would.
            let entries = e.values.entries_mut();
            for (k, v) in entries.iter_mut() {
                if !self.value_selected(k, v) {
                    continue;
                }
                for t in &self.transforms {
                    t.on_value_in_place(k, v);
                }
            }
            e.values.restore_order();
            return;
        }
        // gnmic's sequence: each step removes the current name unless
        // `keep`, then stores the transformed pair.
        for (k, v) in std::mem::take(&mut e.values) {
            if !self.value_selected(&k, &v) {
                e.values.insert(k, v);
                continue;
            }
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
    }

    fn apply_tags(&self, e: &mut Record) {
        if !e.tags.iter().any(|(k, v)| self.tag_selected(k, v)) {
            return;
        }
        if !self.any_keep {
            let entries = e.tags.entries_mut();
            for (k, v) in entries.iter_mut() {
                if !self.tag_selected(k, v) {
                    continue;
                }
                for t in &self.transforms {
                    t.on_tag_in_place(k, v);
                }
            }
            e.tags.restore_order();
            return;
        }
        for (k, v) in std::mem::take(&mut e.tags) {
            if !self.tag_selected(&k, &v) {
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
    }
}

impl Pure for Strings {
    fn apply(&self, events: &mut Vec<Record>) {
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
        for s in [
            "/a/b/c",
            "/a/b/",
            "",
            "/",
            "///",
            "abc",
            "abc//",
            "/abc",
            "a//b//",
            "/interfaces/interface/state/counters/in-octets",
            "/é/ü",
        ] {
            let mut in_place = Str::from(s);
            Op::PathBase.run_in_place(&mut in_place);
            assert_eq!(in_place, path_base(s.into()), "{s:?}");
        }
    }

    #[test]
    fn last_slash_finds_what_a_byte_loop_finds() {
        // Every position of one or two slashes in strings of 0–40 bytes,
        // with '.' ('/' ^ 1) and '0' around them to catch carries.
        for len in 0..40 {
            for filler in [b'a', b'.', b'0', 0xff] {
                let mut bytes = vec![filler; len];
                assert_eq!(last_slash(&bytes), None);
                for i in 0..len {
                    for j in i..len {
                        bytes.fill(filler);
                        bytes[i] = b'/';
                        bytes[j] = b'/';
                        let expected = bytes.iter().rposition(|&b| b == b'/');
                        assert_eq!(last_slash(&bytes), expected, "{bytes:?}");
                    }
                }
            }
        }
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
