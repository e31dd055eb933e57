//! The compiled `processors:` section and the chains built from it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::build::{Build, Resolve};
use crate::chain::{Chain, Step};
use crate::config::Fields;
use crate::error::{show, ProcessorError};
use crate::procs;

/// The processor types gnomon runs (gnmic's, less plugins and triggers).
pub const SUPPORTED_TYPES: &[&str] = &[
    "event-add-tag",
    "event-allow",
    "event-combine",
    "event-convert",
    "event-data-convert",
    "event-date-string",
    "event-delete",
    "event-drop",
    "event-duration-convert",
    "event-extract-tags",
    "event-group-by",
    "event-ieeefloat32",
    "event-jq",
    "event-keep",
    "event-merge",
    "event-override-ts",
    "event-rate-limit",
    "event-starlark",
    "event-strings",
    "event-time-epoch",
    "event-to-tag",
    "event-value-tag",
    "event-value-tag-v2",
    "event-write",
];

struct Definition {
    name: String,
    kind: &'static str,
    debug: bool,
    builder: Arc<dyn Build>,
}

/// The compiled `processors:` section. Build it once at startup with
/// [`Processors::from_config`], then one [`Chain`] per output or input with
/// [`Processors::chain`]. `Send + Sync`; cheap to share behind an `Arc`.
#[derive(Default)]
pub struct Processors {
    defs: BTreeMap<String, Definition>,
}

impl std::fmt::Debug for Processors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.defs.values().map(|d| (d.name.as_str(), d.kind)))
            .finish()
    }
}

impl Processors {
    /// No processors defined.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses, validates and compiles the raw `processors:` map (as the
    /// config loader keeps it; `null` means none). Every definition is
    /// compiled, referenced or not, so a bad one stops startup.
    pub fn from_config(raw: &Value) -> Result<Self, ProcessorError> {
        let map = match raw {
            Value::Null => return Ok(Self::default()),
            Value::Object(m) => m,
            other => {
                return Err(ProcessorError::Section {
                    reason: format!(
                        "expected a map of processor names to definitions, got {}",
                        show(other)
                    ),
                })
            }
        };
        let mut defs = BTreeMap::new();
        for (name, def) in map {
            let key = name.to_lowercase();
            if let Some(prev) = defs.get(&key) {
                let prev: &Definition = prev;
                return Err(ProcessorError::Definition {
                    processor: name.clone(),
                    reason: format!(
                        "defined twice (as {:?} too; names are case-insensitive)",
                        prev.name
                    ),
                });
            }
            defs.insert(key, compile_definition(name, def)?);
        }
        let reg = Self { defs };
        reg.check_references()?;
        Ok(reg)
    }

    /// [`Self::from_config`] for a configuration whose outputs and inputs
    /// list processors: `users` holds each one's key (`outputs.prom`) and
    /// `event-processors` list. An error about a definition also names the
    /// lists that use it, and every list is checked (an unknown name is an
    /// error naming the list), so a bad configuration stops the start with
    /// one line.
    pub fn from_config_for<S: AsRef<str>>(
        raw: &Value,
        users: &[(String, Vec<S>)],
    ) -> Result<Self, ProcessorError> {
        let procs = Self::from_config(raw).map_err(|error| {
            let Some(name) = error.processor().map(str::to_lowercase) else {
                return error;
            };
            let listing: Vec<String> = users
                .iter()
                .filter(|(_, names)| names.iter().any(|n| n.as_ref().to_lowercase() == name))
                .map(|(owner, _)| format!("{owner}.event-processors"))
                .collect();
            if listing.is_empty() {
                error
            } else {
                ProcessorError::Listed {
                    error: Box::new(error),
                    users: listing.join(", "),
                }
            }
        })?;
        for (owner, names) in users {
            procs.check_names(owner, names)?;
        }
        Ok(procs)
    }

    /// Checks that every name of `owner`'s `event-processors` list is
    /// defined, without building anything.
    pub fn check_names<S: AsRef<str>>(
        &self,
        owner: &str,
        names: &[S],
    ) -> Result<(), ProcessorError> {
        for name in names {
            if !self.contains(name.as_ref()) {
                return Err(ProcessorError::UnknownName {
                    name: name.as_ref().to_string(),
                    context: listed_by(owner),
                });
            }
        }
        Ok(())
    }

    /// The chain of `owner`'s `event-processors` list (`owner` is its key,
    /// e.g. `outputs.prom`, used in errors). Fresh state, as [`Self::chain`].
    pub fn chain_for<S: AsRef<str>>(
        &self,
        owner: &str,
        names: &[S],
    ) -> Result<Chain, ProcessorError> {
        let context = listed_by(owner);
        let steps = names
            .iter()
            .map(|n| self.step(n.as_ref(), &context))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Chain { steps })
    }

    /// True when no processor is defined.
    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// True when `name` (case-insensitive) is defined.
    pub fn contains(&self, name: &str) -> bool {
        self.defs.contains_key(&name.to_lowercase())
    }

    /// The defined names, as written in the config.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.defs.values().map(|d| d.name.as_str())
    }

    /// The type of a defined processor.
    pub fn kind(&self, name: &str) -> Option<&'static str> {
        self.defs.get(&name.to_lowercase()).map(|d| d.kind)
    }

    /// A chain for an `event-processors:` list, applied in list order. Each
    /// call builds new instances (fresh state).
    pub fn chain<S: AsRef<str>>(&self, names: &[S]) -> Result<Chain, ProcessorError> {
        let steps = names
            .iter()
            .map(|n| self.step(n.as_ref(), ""))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Chain { steps })
    }

    /// Every name an event-combine refers to exists, and no combine reaches
    /// itself.
    fn check_references(&self) -> Result<(), ProcessorError> {
        for def in self.defs.values() {
            for r in def.builder.refs() {
                if !self.defs.contains_key(&r.to_lowercase()) {
                    return Err(ProcessorError::UnknownName {
                        name: r,
                        context: format!(" (referenced by processors.{}.{})", def.name, def.kind),
                    });
                }
            }
        }
        for (key, def) in &self.defs {
            let mut path = vec![key.clone()];
            self.find_cycle(key, &mut path)
                .map_err(|cycle| ProcessorError::Cycle {
                    processor: def.name.clone(),
                    path: cycle,
                })?;
        }
        Ok(())
    }

    fn find_cycle(&self, key: &str, path: &mut Vec<String>) -> Result<(), String> {
        let Some(def) = self.defs.get(key) else {
            return Ok(());
        };
        for r in def.builder.refs() {
            let r = r.to_lowercase();
            if path.contains(&r) {
                path.push(r);
                return Err(path.join(" → "));
            }
            path.push(r.clone());
            self.find_cycle(&r, path)?;
            path.pop();
        }
        Ok(())
    }
}

fn compile_definition(name: &str, def: &Value) -> Result<Definition, ProcessorError> {
    let Value::Object(outer) = def else {
        return Err(ProcessorError::Definition {
            processor: name.to_string(),
            reason: format!("expected a map with one processor type, got {}", show(def)),
        });
    };
    let mut kinds = outer.keys();
    let (Some(kind), None) = (kinds.next(), kinds.next()) else {
        return Err(ProcessorError::Definition {
            processor: name.to_string(),
            reason: format!(
                "expected exactly one processor type, got {}",
                if outer.is_empty() {
                    "none".to_string()
                } else {
                    outer.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ),
        });
    };
    let empty = Map::new();
    let fields_map = match &outer[kind] {
        Value::Object(m) => m,
        Value::Null => &empty,
        other => {
            return Err(ProcessorError::Definition {
                processor: name.to_string(),
                reason: format!("{kind}: expected a map of fields, got {}", show(other)),
            })
        }
    };
    let kind_lc = kind.to_lowercase();
    let Some(&kind_static) = SUPPORTED_TYPES.iter().find(|k| **k == kind_lc) else {
        return Err(
            refused(name, &kind_lc).unwrap_or_else(|| ProcessorError::UnknownType {
                processor: name.to_string(),
                kind: kind.clone(),
                known: SUPPORTED_TYPES.join(", "),
            }),
        );
    };
    let fields = Fields::new(name, kind_static, fields_map);
    let debug = fields.bool("debug")?;
    let builder = procs::compile(kind_static, &fields)?;
    fields.warn_unknown();
    Ok(Definition {
        name: name.to_string(),
        kind: kind_static,
        debug,
        builder,
    })
}

fn listed_by(owner: &str) -> String {
    format!(" (listed by {owner}.event-processors)")
}

fn refused(name: &str, kind: &str) -> Option<ProcessorError> {
    let reason = match kind {
        "event-plugin" => {
            "plugin processors are Go binaries that gnmic loads at run time; \
             express the transformation with event-starlark or event-jq instead"
        }
        "event-trigger" => {
            "event-trigger runs gnmic actions (HTTP calls, gNMI Set, scripts) when a condition holds; \
             gnomon does not run actions from processors"
        }
        _ => return None,
    };
    Some(ProcessorError::Unsupported {
        processor: name.to_string(),
        kind: kind.to_string(),
        reason: reason.to_string(),
    })
}

impl Resolve for Processors {
    fn step(&self, name: &str, context: &str) -> Result<Step, ProcessorError> {
        let def =
            self.defs
                .get(&name.to_lowercase())
                .ok_or_else(|| ProcessorError::UnknownName {
                    name: name.to_string(),
                    context: context.to_string(),
                })?;
        Ok(Step {
            name: def.name.clone(),
            kind: def.kind,
            debug: def.debug,
            proc: def.builder.build(self)?,
        })
    }
}
