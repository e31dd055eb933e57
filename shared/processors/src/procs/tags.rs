//! Processors that create tags: event-add-tag, event-extract-tags,
//! event-to-tag, event-value-tag, event-value-tag-v2.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;

use crate::build::{pure, Build, Pure, Resolve};
use crate::chain::Apply;
use crate::config::Fields;
use crate::error::ProcessorError;
use crate::gofmt::sprint;
use crate::record::{FieldMap, Record, Str, Val};
use crate::select::{Condition, Matcher, Selectors};

/// event-add-tag: adds `add` when the condition holds or (without one) any
/// selector — or a `deletes` pattern — matches.
struct AddTag {
    cond: Option<Condition>,
    sel: Selectors,
    deletes: Matcher,
    overwrite: bool,
    add: Vec<(Str, Str)>,
}

pub(crate) fn add_tag(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    // gnmic reads its config through viper, which lower-cases every map key:
    // `add: {Site: x}` yields the tag `site` there, so it does here too.
    let add = f
        .string_map("add")?
        .into_iter()
        .map(|(k, v)| (Str::from(k.to_lowercase()), Str::from(v)))
        .collect();
    Ok(pure(AddTag {
        cond: Condition::from_field(f)?,
        sel: Selectors::from_fields(f)?,
        deletes: Matcher::from_field(f, "deletes")?,
        overwrite: f.bool("overwrite")?,
        add,
    }))
}

impl AddTag {
    fn hit(&self, e: &Record) -> bool {
        match &self.cond {
            Some(c) => c.check(e).unwrap_or(false),
            None => {
                self.sel.any_match(e)
                    || (!self.deletes.is_empty()
                        && e.deletes.iter().any(|d| self.deletes.is_match(d)))
            }
        }
    }
}

impl Pure for AddTag {
    fn apply(&self, events: &mut Vec<Record>) {
        if self.add.is_empty() {
            return;
        }
        for e in events.iter_mut() {
            if !self.hit(e) {
                continue;
            }
            for (k, v) in &self.add {
                if self.overwrite {
                    e.tags.insert(k.clone(), v.clone());
                } else {
                    e.tags.insert_if_absent(k, || v.clone());
                }
            }
        }
    }
}

/// event-extract-tags: named capture groups of the selector regexes become
/// tags (group name → captured text).
struct ExtractTags {
    tag_names: Vec<Regex>,
    tags: Vec<Regex>,
    value_names: Vec<Regex>,
    values: Vec<Regex>,
    overwrite: bool,
}

pub(crate) fn extract_tags(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    Ok(pure(ExtractTags {
        tag_names: f.regexes("tag-names")?,
        tags: f.regexes("tags")?,
        value_names: f.regexes("value-names")?,
        values: f.regexes("values")?,
        overwrite: f.bool("overwrite")?,
    }))
}

impl ExtractTags {
    fn extract(&self, re: &Regex, s: &str, out: &mut Vec<(Str, Str)>) {
        let Some(caps) = re.captures(s) else {
            return;
        };
        for (i, name) in re.capture_names().enumerate() {
            if let Some(name) = name {
                let text = caps.get(i).map_or("", |m| m.as_str());
                out.push((Str::from(name), Str::from(text)));
            }
        }
    }
}

impl Pure for ExtractTags {
    fn apply(&self, events: &mut Vec<Record>) {
        let mut found = Vec::new();
        for e in events.iter_mut() {
            found.clear();
            for (k, v) in &e.values {
                for re in &self.value_names {
                    self.extract(re, k, &mut found);
                }
                if let Val::Str(s) = v {
                    for re in &self.values {
                        self.extract(re, s, &mut found);
                    }
                }
            }
            for (k, v) in &e.tags {
                for re in &self.tag_names {
                    self.extract(re, k, &mut found);
                }
                for re in &self.tags {
                    self.extract(re, v, &mut found);
                }
            }
            for (name, text) in found.drain(..) {
                if self.overwrite || !e.tags.contains_key(&name) {
                    e.tags.insert(name, text);
                }
            }
        }
    }
}

/// event-to-tag: moves values whose name (or string value) matches into the
/// tags (`keep: true` leaves them in the values too). Non-string values are
/// rendered as Go's `fmt.Sprint` does.
struct ToTag {
    value_names: Matcher,
    values: Matcher,
    keep: bool,
}

pub(crate) fn to_tag(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    Ok(pure(ToTag {
        value_names: Matcher::from_field(f, "value-names")?,
        values: Matcher::from_field(f, "values")?,
        keep: f.bool("keep")?,
    }))
}

impl Pure for ToTag {
    fn apply(&self, events: &mut Vec<Record>) {
        if self.value_names.is_empty() && self.values.is_empty() {
            return;
        }
        for e in events.iter_mut() {
            let Record { tags, values, .. } = e;
            // Usually nothing matches: one read-only scan, no retain.
            if !values
                .iter()
                .any(|(k, v)| self.value_names.is_match(k) || self.values.is_match_value(v))
            {
                continue;
            }
            let keep = self.keep;
            values.retain(|k, v| {
                let tag = if self.value_names.is_match(k) {
                    sprint(v)
                } else if let Val::Str(s) = v {
                    if !self.values.is_match(s) {
                        return true;
                    }
                    s.clone()
                } else {
                    return true;
                };
                tags.insert(k.clone(), tag);
                keep
            });
        }
    }
}

/// event-value-tag: within one batch, the value `value-name` of an event
/// becomes the tag `tag-name` of every event whose tags include all of that
/// event's tags (the event itself included).
struct ValueTag {
    value_name: String,
    tag_name: Str,
    consume: bool,
}

pub(crate) fn value_tag(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    let value_name = f.string_or("value-name", "")?;
    let tag_name = f
        .string("tag-name")?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| value_name.clone());
    Ok(pure(ValueTag {
        value_name,
        tag_name: Str::from(tag_name),
        consume: f.bool("consume")?,
    }))
}

impl Pure for ValueTag {
    fn apply(&self, events: &mut Vec<Record>) {
        if !events
            .iter()
            .any(|e| e.values.contains_key(&self.value_name))
        {
            return;
        }
        let mut rules: Vec<(FieldMap<Str>, Str)> = Vec::new();
        for e in events.iter_mut() {
            let value = if self.consume {
                e.values.remove(&self.value_name)
            } else {
                e.values.get(&self.value_name).cloned()
            };
            if let Some(v) = value {
                rules.push((e.tags.clone(), sprint(&v)));
            }
        }
        for (rule_tags, value) in &rules {
            for e in events.iter_mut() {
                if included_in(rule_tags, &e.tags) {
                    e.tags.insert(self.tag_name.clone(), value.clone());
                }
            }
        }
    }
}

fn included_in(a: &FieldMap<Str>, b: &FieldMap<Str>) -> bool {
    a.len() <= b.len() && a.iter().all(|(k, v)| b.get(k) == Some(v))
}

/// Default cap on the entries event-value-tag-v2 remembers per rule.
pub const VALUE_TAG_V2_MAX_RULES: usize = 100_000;

/// event-value-tag-v2: like event-value-tag, but values are remembered
/// across batches, so a description received once tags later counters.
/// Each rule keeps at most `cache-size` (gnomon field, default
/// [`VALUE_TAG_V2_MAX_RULES`]) remembered values; the oldest is evicted.
struct ValueTagV2Spec {
    processor: String,
    rules: Vec<Rule>,
    cap: usize,
}

#[derive(Clone)]
struct Rule {
    value_name: String,
    tag_name: Str,
    consume: bool,
}

pub(crate) fn value_tag_v2(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    let mut rules = Vec::new();
    if let Some(raw) = f.raw("rules") {
        let Value::Array(items) = raw else {
            return Err(f.err(
                "rules",
                raw,
                "expected a list of {value-name, tag-name, consume}",
            ));
        };
        for (i, item) in items.iter().enumerate() {
            let Value::Object(m) = item else {
                return Err(f.err(&format!("rules[{i}]"), item, "expected a map"));
            };
            let value_name = match m.get("value-name") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                other => {
                    return Err(f.err(
                        &format!("rules[{i}].value-name"),
                        other.unwrap_or(&Value::Null),
                        "expected a non-empty string",
                    ))
                }
            };
            let tag_name = match m.get("tag-name") {
                None | Some(Value::Null) => value_name.clone(),
                Some(Value::String(s)) if s.is_empty() => value_name.clone(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => {
                    return Err(f.err(&format!("rules[{i}].tag-name"), other, "expected a string"))
                }
            };
            let consume = match m.get("consume") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
                Some(other) => {
                    return Err(f.err(
                        &format!("rules[{i}].consume"),
                        other,
                        "expected true or false",
                    ))
                }
            };
            rules.push(Rule {
                value_name,
                tag_name: Str::from(tag_name),
                consume,
            });
        }
    }
    let cap = match f.i64("cache-size")? {
        None => VALUE_TAG_V2_MAX_RULES,
        Some(n) if n > 0 => n as usize,
        Some(n) => return Err(f.err("cache-size", &Value::from(n), "expected a positive integer")),
    };
    Ok(Arc::new(ValueTagV2Spec {
        processor: f.processor.to_string(),
        rules,
        cap,
    }))
}

impl Build for ValueTagV2Spec {
    fn build(&self, _: &dyn Resolve) -> Result<Box<dyn Apply>, ProcessorError> {
        Ok(Box::new(ValueTagV2 {
            rules: self.rules.clone(),
            caches: self.rules.iter().map(|_| RuleCache::default()).collect(),
            cap: self.cap,
            evictions: metrics::counter!("gnomon_processor_evictions_total", "processor" => self.processor.clone()),
        }))
    }
}

struct ValueTagV2 {
    rules: Vec<Rule>,
    caches: Vec<RuleCache>,
    cap: usize,
    evictions: metrics::Counter,
}

/// Remembered values of one rule, indexed by the set of tag names of the
/// event that carried them ("shape"), then by those tags' values, so a
/// lookup costs one hash probe per shape instead of a scan of every entry.
#[derive(Default)]
struct RuleCache {
    shapes: Vec<Shape>,
    order: VecDeque<(usize, Vec<Str>)>,
    len: usize,
}

struct Shape {
    names: Vec<Str>,
    entries: HashMap<Vec<Str>, Str>,
}

impl RuleCache {
    fn remember(&mut self, tags: &FieldMap<Str>, value: Str, cap: usize) -> u64 {
        let names: Vec<&Str> = tags.keys().collect();
        let idx = match self
            .shapes
            .iter()
            .position(|s| s.names.iter().eq(names.iter().copied()))
        {
            Some(i) => i,
            None => {
                self.shapes.push(Shape {
                    names: names.iter().map(|s| (*s).clone()).collect(),
                    entries: HashMap::new(),
                });
                self.shapes.len() - 1
            }
        };
        let key: Vec<Str> = tags.values().cloned().collect();
        let shape = &mut self.shapes[idx];
        if let Some(v) = shape.entries.get_mut(&key) {
            *v = value;
            return 0;
        }
        shape.entries.insert(key.clone(), value);
        self.order.push_back((idx, key));
        self.len += 1;
        let mut evicted = 0;
        while self.len > cap {
            let Some((i, k)) = self.order.pop_front() else {
                break;
            };
            if self.shapes[i].entries.remove(&k).is_some() {
                self.len -= 1;
                evicted += 1;
            }
        }
        evicted
    }

    /// The remembered value whose tags are all present in `tags`.
    fn lookup(&self, tags: &FieldMap<Str>, key: &mut Vec<Str>) -> Option<&Str> {
        let mut found = None;
        for shape in &self.shapes {
            if shape.names.len() > tags.len() || shape.entries.is_empty() {
                continue;
            }
            key.clear();
            let mut complete = true;
            for n in &shape.names {
                match tags.get(n) {
                    Some(v) => key.push(v.clone()),
                    None => {
                        complete = false;
                        break;
                    }
                }
            }
            if complete {
                if let Some(v) = shape.entries.get(key.as_slice()) {
                    found = Some(v);
                }
            }
        }
        found
    }
}

impl Apply for ValueTagV2 {
    fn apply(&mut self, events: &mut Vec<Record>) {
        let mut key = Vec::new();
        for e in events.iter_mut() {
            for (rule, cache) in self.rules.iter().zip(self.caches.iter_mut()) {
                let value = if rule.consume {
                    e.values.remove(&rule.value_name)
                } else {
                    e.values.get(&rule.value_name).cloned()
                };
                if let Some(v) = value {
                    let evicted = cache.remember(&e.tags, sprint(&v), self.cap);
                    if evicted > 0 {
                        self.evictions.increment(evicted);
                    }
                }
                if cache.len == 0 {
                    continue;
                }
                if let Some(v) = cache.lookup(&e.tags, &mut key) {
                    let v = v.clone();
                    e.tags.insert(rule.tag_name.clone(), v);
                }
            }
        }
    }
}
