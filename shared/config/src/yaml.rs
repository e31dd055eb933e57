//! gnmic's YAML, read from parser events into a JSON tree: merge keys (`<<: *a`,
//! `<<: [*a, *b]`) merge as Go's yaml.v3 does (keys written in the mapping win over merged
//! ones; in a list, earlier maps win over later ones), and alias expansion is bounded so a
//! few hundred bytes of nested aliases ("billion laughs") are refused instead of filling
//! memory.

use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::TScalarStyle;
use yaml_rust2::Yaml;

/// Nodes that alias expansion may add, at least (more for big documents: twice their own).
pub const MIN_ALIAS_NODE_BUDGET: u64 = 200_000;
/// Scalar bytes that alias expansion may add, at least (more for big documents: twice their size).
pub const MIN_ALIAS_BYTE_BUDGET: u64 = 16 << 20;
/// Deepest nesting of maps and lists.
pub const MAX_DEPTH: usize = 64;

/// What a node costs: nodes and scalar bytes below and including it.
#[derive(Clone, Copy, Default)]
struct Cost {
    nodes: u64,
    bytes: u64,
}

impl Cost {
    fn add(&mut self, other: Cost) {
        self.nodes += other.nodes;
        self.bytes += other.bytes;
    }
}

enum Frame {
    Seq {
        anchor: usize,
        items: Vec<Value>,
        cost: Cost,
    },
    Map {
        anchor: usize,
        map: Map<String, Value>,
        /// Maps to merge in after the mapping ends, earliest first.
        merges: Vec<Map<String, Value>>,
        key: Option<Key>,
        cost: Cost,
    },
}

enum Key {
    Name(String),
    Merge,
}

struct Loader {
    anchors: HashMap<usize, (Value, Cost)>,
    stack: Vec<Frame>,
    root: Option<Value>,
    documents: usize,
    aliased: Cost,
    budget: Cost,
}

fn scalar_value(text: String, style: TScalarStyle, tag: Option<Tag>) -> Result<Value, String> {
    if style != TScalarStyle::Plain {
        return Ok(Value::String(text));
    }
    let resolved = match tag {
        Some(Tag { handle, suffix }) if handle == "tag:yaml.org,2002:" => match suffix.as_str() {
            "str" => return Ok(Value::String(text)),
            "int" => match text.parse::<i64>() {
                Ok(i) => Yaml::Integer(i),
                Err(_) => return Err(format!("{text:?} is not an !!int")),
            },
            "bool" | "float" | "null" => match Yaml::from_str(&text) {
                y @ (Yaml::Boolean(_) | Yaml::Null) if suffix != "float" => y,
                y @ (Yaml::Real(_) | Yaml::Integer(_)) if suffix == "float" => y,
                _ => return Err(format!("{text:?} is not an !!{suffix}")),
            },
            _ => return Ok(Value::String(text)),
        },
        Some(_) => return Ok(Value::String(text)),
        None => Yaml::from_str(&text),
    };
    Ok(match resolved {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Integer(i) => Value::Number(i.into()),
        Yaml::Real(real) => match real.parse::<f64>().ok().and_then(Number::from_f64) {
            Some(n) => Value::Number(n),
            // .inf / .nan have no JSON number: keep the text.
            None => Value::String(real),
        },
        _ => Value::String(text),
    })
}

fn key_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

impl Loader {
    fn new(text_len: usize) -> Self {
        Self {
            anchors: HashMap::new(),
            stack: Vec::new(),
            root: None,
            documents: 0,
            aliased: Cost::default(),
            budget: Cost {
                nodes: MIN_ALIAS_NODE_BUDGET,
                bytes: MIN_ALIAS_BYTE_BUDGET.max(2 * text_len as u64),
            },
        }
    }

    /// Adds a finished node (with its cost and anchor) to the node being built.
    fn insert(&mut self, value: Value, cost: Cost, anchor: usize) -> Result<(), String> {
        if anchor != 0 {
            self.anchors.insert(anchor, (value.clone(), cost));
        }
        match self.stack.last_mut() {
            None => {
                self.root = Some(value);
                Ok(())
            }
            Some(Frame::Seq { items, cost: c, .. }) => {
                c.add(cost);
                items.push(value);
                Ok(())
            }
            Some(Frame::Map {
                map,
                merges,
                key,
                cost: c,
                ..
            }) => {
                c.add(cost);
                match key.take() {
                    None => {
                        let text = match &value {
                            Value::String(s) if s == "<<" => {
                                *key = Some(Key::Merge);
                                return Ok(());
                            }
                            other => key_text(other).ok_or_else(|| {
                                "a map or list used as a key is not supported".to_string()
                            })?,
                        };
                        if map.contains_key(&text) {
                            return Err(format!("key {text:?} is defined twice in one map"));
                        }
                        *key = Some(Key::Name(text));
                        Ok(())
                    }
                    Some(Key::Name(name)) => {
                        map.insert(name, value);
                        Ok(())
                    }
                    Some(Key::Merge) => match value {
                        Value::Object(source) => {
                            merges.push(source);
                            Ok(())
                        }
                        Value::Array(list) => {
                            for item in list {
                                match item {
                                    Value::Object(source) => merges.push(source),
                                    _ => return Err("<< takes a map or a list of maps".into()),
                                }
                            }
                            Ok(())
                        }
                        _ => Err("<< takes a map or a list of maps".into()),
                    },
                }
            }
        }
    }

    fn on_event(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err("more than one YAML document (expected one)".into());
                }
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _)
                if self.stack.len() >= MAX_DEPTH =>
            {
                let _ = anchor;
                return Err(format!("nested deeper than {MAX_DEPTH} levels"));
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                anchor,
                items: Vec::new(),
                cost: Cost { nodes: 1, bytes: 0 },
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                anchor,
                map: Map::new(),
                merges: Vec::new(),
                key: None,
                cost: Cost { nodes: 1, bytes: 0 },
            }),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    anchor,
                    items,
                    cost,
                }) => self.insert(Value::Array(items), cost, anchor)?,
                Some(Frame::Map {
                    anchor,
                    mut map,
                    merges,
                    cost,
                    ..
                }) => {
                    for source in merges {
                        for (key, value) in source {
                            map.entry(key).or_insert(value);
                        }
                    }
                    self.insert(Value::Object(map), cost, anchor)?
                }
                None => return Err("unbalanced YAML structure".into()),
            },
            Event::Scalar(text, style, anchor, tag) => {
                let cost = Cost {
                    nodes: 1,
                    bytes: text.len() as u64,
                };
                let value = scalar_value(text, style, tag)?;
                self.insert(value, cost, anchor)?;
            }
            Event::Alias(id) => {
                let Some((value, cost)) = self.anchors.get(&id) else {
                    return Err("an alias refers to a node that contains it".into());
                };
                let cost = *cost;
                self.aliased.add(cost);
                if self.aliased.nodes > self.budget.nodes {
                    return Err(format!(
                        "aliases expand to more than {} nodes (an alias bomb?)",
                        self.budget.nodes
                    ));
                }
                if self.aliased.bytes > self.budget.bytes {
                    return Err(format!(
                        "aliases expand to more than {} bytes of text (an alias bomb?)",
                        self.budget.bytes
                    ));
                }
                let value = value.clone();
                self.insert(value, cost, 0)?;
            }
        }
        Ok(())
    }
}

/// Parses one YAML document into a JSON value (`Null` for an empty document). The error is
/// one line (with the line and column where the parser stopped).
pub fn parse(text: &str) -> Result<Value, String> {
    let mut parser = Parser::new_from_str(text);
    let mut loader = Loader::new(text.len());
    // Nodes written in the document itself raise the alias budget (twice their number).
    let mut own_nodes: u64 = 0;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| e.to_string())?;
        if matches!(
            event,
            Event::Scalar(..) | Event::SequenceStart(..) | Event::MappingStart(..)
        ) {
            own_nodes += 1;
            loader.budget.nodes = MIN_ALIAS_NODE_BUDGET.max(2 * own_nodes);
        }
        let end = event == Event::StreamEnd;
        loader
            .on_event(event)
            .map_err(|e| format!("{e} at line {} column {}", mark.line(), mark.col() + 1))?;
        if end {
            break;
        }
    }
    Ok(loader.root.unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_keys_follow_go_yaml() {
        let value = parse(
            "base: &base {a: 1, b: 1, c: 1}\nother: &other {b: 2, d: 2}\n\
             one: {a: 9, <<: *base}\n\
             two:\n  <<: [*other, *base]\n  c: 3\n\
             three: {<<: {x: 1}, x: 2}\n",
        )
        .unwrap();
        assert_eq!(value["one"], json!({"a": 9, "b": 1, "c": 1}));
        assert_eq!(value["two"], json!({"a": 1, "b": 2, "c": 3, "d": 2}));
        assert_eq!(value["three"], json!({"x": 2}));
    }

    #[test]
    fn scalars_resolve_like_yaml_core() {
        let value = parse(
            "i: 42\nf: 1.5\nb: true\nn: ~\ns: '42'\nt: !!str 7\nh: 0x10\nk: 10.0.0.1\nempty:\n",
        )
        .unwrap();
        assert_eq!(
            value,
            json!({"i": 42, "f": 1.5, "b": true, "n": null, "s": "42", "t": "7", "h": 16,
                   "k": "10.0.0.1", "empty": null})
        );
    }

    #[test]
    fn errors_are_one_line_with_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(!err.contains('\n'), "{err}");
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert!(
            err.contains("defined twice") && err.contains("line 2"),
            "{err}"
        );
        assert!(parse("a: 1\n---\nb: 2\n")
            .unwrap_err()
            .contains("more than one"));
        assert!(parse(&"[".repeat(100))
            .unwrap_err()
            .contains("nested deeper"));
    }
}
