//! event-drop, event-allow, event-keep, event-delete, event-write: select
//! events or fields by regex or jq condition.

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use crate::build::{pure, Build, Pure};
use crate::config::Fields;
use crate::error::ProcessorError;
use crate::record::Record;
use crate::select::{Condition, Selectors};

/// event-drop: drops an event when the condition holds (a condition that
/// fails to evaluate drops too, as in gnmic) or, without a condition, when
/// any selector matches.
struct Drop {
    cond: Option<Condition>,
    sel: Selectors,
}

pub(crate) fn drop(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    Ok(pure(Drop {
        cond: Condition::from_field(f)?,
        sel: Selectors::from_fields(f)?,
    }))
}

impl Pure for Drop {
    fn apply(&self, events: &mut Vec<Record>) {
        match &self.cond {
            Some(c) => events.retain(|e| !c.check(e).unwrap_or(true)),
            None if self.sel.is_empty() => {}
            None => events.retain(|e| !self.sel.any_match(e)),
        }
    }
}

/// event-allow: keeps only the events the condition (or, without one, any
/// selector) accepts.
struct Allow {
    cond: Option<Condition>,
    sel: Selectors,
}

pub(crate) fn allow(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    Ok(pure(Allow {
        cond: Condition::from_field(f)?,
        sel: Selectors::from_fields(f)?,
    }))
}

impl Pure for Allow {
    fn apply(&self, events: &mut Vec<Record>) {
        match &self.cond {
            Some(c) => events.retain(|e| c.check(e).unwrap_or(false)),
            None => events.retain(|e| self.sel.any_match(e)),
        }
    }
}

/// event-keep: removes the values (tags) that no value (tag) selector
/// matches; a category without selectors is left alone.
struct Keep {
    sel: Selectors,
}

pub(crate) fn keep(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    Ok(pure(Keep {
        sel: Selectors::from_fields(f)?,
    }))
}

impl Pure for Keep {
    fn apply(&self, events: &mut Vec<Record>) {
        let s = &self.sel;
        let values = !s.value_names.is_empty() || !s.values.is_empty();
        let tags = !s.tag_names.is_empty() || !s.tags.is_empty();
        for e in events.iter_mut() {
            if values {
                e.values
                    .retain(|k, v| s.value_names.is_match(k) || s.values.is_match_value(v));
            }
            if tags {
                e.tags
                    .retain(|k, v| s.tag_names.is_match(k) || s.tags.is_match(v));
            }
        }
    }
}

/// event-delete: removes every value (tag) whose name or (string) value
/// matches.
struct Delete {
    sel: Selectors,
}

pub(crate) fn delete(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    Ok(pure(Delete {
        sel: Selectors::from_fields(f)?,
    }))
}

impl Pure for Delete {
    fn apply(&self, events: &mut Vec<Record>) {
        let s = &self.sel;
        let values = !s.value_names.is_empty() || !s.values.is_empty();
        let tags = !s.tag_names.is_empty() || !s.tags.is_empty();
        for e in events.iter_mut() {
            // BTreeMap::retain does not allocate; nothing matched, nothing moved.
            if values {
                e.values
                    .retain(|k, v| !(s.value_names.is_match(k) || s.values.is_match_value(v)));
            }
            if tags {
                e.tags
                    .retain(|k, v| !(s.tag_names.is_match(k) || s.tags.is_match(v)));
            }
        }
    }
}

/// event-write: writes matching events as JSON to stdout, stderr or a file
/// (appended), followed by the separator. The events pass on unchanged.
struct Write {
    cond: Option<Condition>,
    sel: Selectors,
    dst: Arc<Mutex<Box<dyn std::io::Write + Send>>>,
    separator: Vec<u8>,
    indent: Option<Vec<u8>>,
}

pub(crate) fn write(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    let dst_name = f.string_or("dst", "stdout")?;
    let dst: Box<dyn std::io::Write + Send> = match dst_name.as_str() {
        "" | "stdout" => Box::new(std::io::stdout()),
        "stderr" => Box::new(std::io::stderr()),
        path => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| f.err_str("dst", path, format!("cannot open for appending: {e}")))?,
        ),
    };
    let separator = match f.string("separator")? {
        Some(s) if !s.is_empty() => s.into_bytes(),
        _ => b"\n".to_vec(),
    };
    let indent = f
        .string("indent")?
        .filter(|s| !s.is_empty())
        .map(String::into_bytes);
    Ok(pure(Write {
        cond: Condition::from_field(f)?,
        sel: Selectors::from_fields(f)?,
        dst: Arc::new(Mutex::new(dst)),
        separator,
        indent,
    }))
}

impl Write {
    fn render(&self, e: &Record) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let written = match &self.indent {
            Some(indent) => {
                let fmt = serde_json::ser::PrettyFormatter::with_indent(indent);
                let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
                serde::Serialize::serialize(e, &mut ser)
            }
            None => serde_json::to_writer(&mut out, e),
        };
        if written.is_err() {
            out.clear();
        }
        out.extend_from_slice(&self.separator);
        out
    }
}

impl Pure for Write {
    fn apply(&self, events: &mut Vec<Record>) {
        for e in events.iter() {
            let hit = self
                .cond
                .as_ref()
                .is_some_and(|c| c.check(e).unwrap_or(false))
                || self.sel.any_match(e);
            if !hit {
                continue;
            }
            let bytes = self.render(e);
            let Ok(mut dst) = self.dst.lock() else {
                return;
            };
            if let Err(err) = dst.write_all(&bytes).and_then(|_| dst.flush()) {
                tracing::warn!(error = %err, "event-write: failed to write to destination");
            }
        }
    }
}
