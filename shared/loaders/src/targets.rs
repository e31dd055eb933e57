//! Building `TargetConfig`s from what a loader read, with the rules of the `targets`
//! section (globals applied, names checked, unknown keys warned about), and logging each
//! distinct warning once rather than at every read.

use crate::LoadError;
use gnomon_config::reader::Section;
use gnomon_config::{warning, ConfigWarning, GlobalConfig, TargetConfig};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};

/// gnmic's targets map (`name: {config}`) read from a document.
pub(crate) fn from_document(
    document: Value,
    source_name: &str,
    globals: &GlobalConfig,
    expand_env: bool,
) -> Result<(BTreeMap<String, TargetConfig>, Vec<ConfigWarning>), LoadError> {
    let mut document = match document {
        // An empty document defines no targets (gnmic reads it as an empty map).
        Value::Null => Value::Object(Map::new()),
        Value::Object(map) => Value::Object(map),
        other => {
            return Err(LoadError::Parse {
                source_name: source_name.to_string(),
                reason: format!(
                    "the top level is {}, expected a map of targets",
                    gnomon_config::reader::type_name(&other)
                ),
            })
        }
    };
    if expand_env {
        let mut wrapped = Value::Object(Map::from_iter([("targets".to_string(), document)]));
        gnomon_config::expand::expand_tree(&mut wrapped).map_err(|error| LoadError::Target {
            source_name: source_name.to_string(),
            error,
        })?;
        document = wrapped
            .as_object_mut()
            .and_then(|m| m.remove("targets"))
            .unwrap_or(Value::Null);
    }
    let Value::Object(entries) = document else {
        return Ok((BTreeMap::new(), Vec::new()));
    };
    let (result, warnings) = warning::collect(|| {
        let mut targets = BTreeMap::new();
        let empty = Value::Object(Map::new());
        for (key, value) in &entries {
            let value = if value.is_null() { &empty } else { value };
            let section = Section::from_value(key.clone(), value)?;
            let target = TargetConfig::from_section(Some(key), &section, globals)?;
            targets.insert(target.name.clone(), target);
        }
        Ok(targets)
    });
    let targets = result.map_err(|error| LoadError::Target {
        source_name: source_name.to_string(),
        error,
    })?;
    Ok((targets, warnings))
}

/// One discovered target: `block` (a loader's per-target `config`) with `name` and
/// `address` set by the loader. Warnings about the block were reported at start.
pub(crate) fn discovered(
    name: &str,
    address: &str,
    block: &Map<String, Value>,
    globals: &GlobalConfig,
) -> Result<TargetConfig, gnomon_config::ConfigError> {
    let mut block = block.clone();
    block.insert("address".into(), Value::String(address.to_string()));
    block.remove("name");
    let value = Value::Object(block);
    let (result, _already_reported) = warning::collect(|| {
        let section = Section::from_value(name.to_string(), &value)?;
        TargetConfig::from_section(Some(name), &section, globals)
    });
    result
}

/// `host:port`, bracketing an IPv6 host (Go's `net.JoinHostPort`).
pub(crate) fn join_host_port(host: &str, port: impl std::fmt::Display) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Logs each distinct warning once (bounded: forgets everything past 1024 distinct texts).
#[derive(Default)]
pub(crate) struct WarnOnce {
    seen: HashSet<String>,
}

impl WarnOnce {
    pub fn log(&mut self, loader: &'static str, text: String) {
        if self.seen.len() >= 1024 {
            self.seen.clear();
        }
        if self.seen.insert(text.clone()) {
            tracing::warn!(loader, "{text}");
        }
    }
}
