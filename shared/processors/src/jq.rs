//! jq programs (gnmic uses gojq; gnomon uses jaq, a Rust jq) for `condition`
//! fields and event-jq, compiled once at startup.
//!
//! The input of a condition is one event as gnmic renders it for jq: an object
//! with `name`, `timestamp`, `tags`, `values`, `deletes`, empty fields left
//! out. `halt` cannot stop the process: it is an error like any other.

use jaq_core::load::{lex, parse, Arena, File, Loader};
use jaq_core::{compile, data, load, Compiler, Ctx, Vars};
use jaq_json::{Map, Num, Val};
use serde_json::Value as Json;

use crate::record::{FieldMap, Record, Str, Val as Value};

type Filter = jaq_core::Filter<data::JustLut<Val>>;

/// A compiled jq program.
pub(crate) struct Jq {
    filter: Filter,
    source: String,
}

impl std::fmt::Debug for Jq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "jq({:?})", self.source)
    }
}

impl Jq {
    /// Parses and compiles `code` (leading/trailing blanks trimmed, as gnmic
    /// does). The error is one line.
    pub(crate) fn compile(code: &str) -> Result<Self, String> {
        let code = code.trim();
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errs| load_errors(code, errs))?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(compile_errors)?;
        Ok(Self {
            filter,
            source: code.to_string(),
        })
    }

    /// The program text.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Runs the program on `input`, collecting outputs until the first error.
    pub(crate) fn run(&self, input: Val) -> Result<Vec<Val>, String> {
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut out = Vec::new();
        for v in self.filter.id.run((ctx, input)) {
            out.push(v.map_err(exn_text)?);
        }
        Ok(out)
    }

    /// gnmic's condition rule: the first output must be a boolean; no output
    /// is `false`; anything else is an error.
    pub(crate) fn check(&self, event: &Record) -> Result<bool, String> {
        self.check_val(event_to_val(event))
    }

    /// [`Self::check`] on an already converted event.
    pub(crate) fn check_val(&self, input: Val) -> Result<bool, String> {
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let first = self.filter.id.run((ctx, input)).next();
        match first {
            None => Ok(false),
            Some(Err(e)) => Err(exn_text(e)),
            Some(Ok(Val::Bool(b))) => Ok(b),
            Some(Ok(other)) => Err(format!(
                "unexpected condition result {other}, expected a boolean"
            )),
        }
    }
}

fn exn_text(e: jaq_core::Exn<'_, Val>) -> String {
    match e.get_err() {
        Ok(err) => err.to_string(),
        Err(_) => "halt is not allowed in a processor".to_string(),
    }
}

fn load_errors(code: &str, errs: load::Errors<&str, ()>) -> String {
    let mut parts = Vec::new();
    for (_, err) in errs {
        match err {
            load::Error::Io(items) => {
                for (path, e) in items {
                    parts.push(format!("cannot load {path}: {e}"));
                }
            }
            load::Error::Lex(items) => {
                for (expect, at) in items {
                    parts.push(format!(
                        "expected {} {}",
                        lex_expect(&expect),
                        position(code, at)
                    ));
                }
            }
            load::Error::Parse(items) => {
                for (expect, at) in items {
                    parts.push(format!(
                        "expected {} {}",
                        parse_expect(&expect),
                        position(code, at)
                    ));
                }
            }
        }
    }
    if parts.is_empty() {
        "does not parse".to_string()
    } else {
        format!("jq does not parse: {}", parts.join("; "))
    }
}

fn lex_expect(e: &lex::Expect<&str>) -> String {
    match e {
        lex::Expect::Delim(d) => format!("closing delimiter for {d}"),
        lex::Expect::Digit => "digit".into(),
        lex::Expect::Ident => "identifier".into(),
        lex::Expect::Escape => "string escape sequence".into(),
        lex::Expect::Unicode => "4-digit hexadecimal code point".into(),
        lex::Expect::Token => "token".into(),
        other => format!("{other:?}"),
    }
}

fn parse_expect(e: &parse::Expect<&str>) -> String {
    e.as_str().to_string()
}

/// "at end" or "at `rest…`" for an error position inside `code`.
fn position(code: &str, at: &str) -> String {
    if at.is_empty() {
        return "at end of program".to_string();
    }
    let rest: String = at.chars().take(24).collect();
    let offset = (at.as_ptr() as usize).wrapping_sub(code.as_ptr() as usize);
    if offset <= code.len() {
        format!("at offset {offset} ({rest:?})")
    } else {
        format!("at {rest:?}")
    }
}

fn compile_errors(errs: compile::Errors<&str, ()>) -> String {
    let mut parts = Vec::new();
    for (_, errs) in errs {
        for (name, undefined) in errs {
            parts.push(format!("undefined {} {name}", undefined.as_str()));
        }
    }
    format!("jq does not compile: {}", parts.join("; "))
}

/// gnmic's jq view of an event (empty fields left out).
pub(crate) fn event_to_val(e: &Record) -> Val {
    let mut m = Map::default();
    if !e.name.is_empty() {
        m.insert(key("name"), text(&e.name));
    }
    if e.timestamp != 0 {
        m.insert(key("timestamp"), Val::Num(Num::from_integral(e.timestamp)));
    }
    if !e.tags.is_empty() {
        let tags = e.tags.iter().map(|(k, v)| (key(k), text(v))).collect();
        m.insert(key("tags"), Val::obj(tags));
    }
    if !e.values.is_empty() {
        let values = e
            .values
            .iter()
            .map(|(k, v)| (key(k), value_to_val(v)))
            .collect();
        m.insert(key("values"), Val::obj(values));
    }
    if !e.deletes.is_empty() {
        let deletes = e.deletes.iter().map(|d| text(d)).collect();
        m.insert(key("deletes"), deletes);
    }
    Val::obj(m)
}

fn text(s: &str) -> Val {
    Val::utf8_str(s.as_bytes().to_vec())
}

/// An event value as a jq value.
pub(crate) fn value_to_val(v: &Value) -> Val {
    match v {
        Value::Bool(b) => Val::Bool(*b),
        Value::Int(i) => Val::Num(Num::from_integral(*i)),
        Value::Uint(u) => Val::Num(Num::from_integral(*u)),
        Value::Float(f) => Val::from(*f),
        Value::Str(s) => text(s),
        Value::Json(j) => json_to_val(j),
    }
}

/// A jq value as an event value.
pub(crate) fn val_to_value(v: &Val) -> Value {
    match v {
        Val::Bool(b) => Value::Bool(*b),
        Val::TStr(b) | Val::BStr(b) => Value::Str(Str::from(String::from_utf8_lossy(b))),
        other => Value::from_json(val_to_json(other)),
    }
}

fn key(k: &str) -> Val {
    Val::utf8_str(k.as_bytes().to_vec())
}

/// serde_json → jaq.
pub(crate) fn json_to_val(v: &Json) -> Val {
    match v {
        Json::Null => Val::Null,
        Json::Bool(b) => Val::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Val::Num(Num::from_integral(i))
            } else if let Some(u) = n.as_u64() {
                Val::Num(Num::from_integral(u))
            } else {
                Val::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Val::utf8_str(s.clone().into_bytes()),
        Json::Array(items) => items.iter().map(json_to_val).collect(),
        Json::Object(m) => Val::obj(m.iter().map(|(k, v)| (key(k), json_to_val(v))).collect()),
    }
}

/// jaq → serde_json. Non-finite floats become `null` (JSON has none);
/// non-string object keys are rendered as text.
pub(crate) fn val_to_json(v: &Val) -> Json {
    match v {
        Val::Null => Json::Null,
        Val::Bool(b) => Json::Bool(*b),
        Val::Num(n) => num_to_json(n),
        Val::TStr(b) | Val::BStr(b) => Json::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(items) => Json::Array(items.iter().map(val_to_json).collect()),
        Val::Obj(m) => Json::Object(
            m.iter()
                .map(|(k, v)| (val_key(k), val_to_json(v)))
                .collect(),
        ),
    }
}

fn num_to_json(n: &Num) -> Json {
    match n {
        Num::Int(i) => Json::from(*i as i64),
        Num::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        other => {
            // Big integers and decimal literals: keep them exact when they fit.
            let text = other.to_string();
            if let Ok(i) = text.parse::<i64>() {
                Json::from(i)
            } else if let Ok(u) = text.parse::<u64>() {
                Json::from(u)
            } else {
                text.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Json::Null, Json::Number)
            }
        }
    }
}

/// Text of an object key.
pub(crate) fn val_key(k: &Val) -> String {
    match k {
        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
        other => other.to_string(),
    }
}

/// Text of a jaq value used as a tag (strings verbatim, others as JSON).
pub(crate) fn val_tag(v: &Val) -> String {
    match v {
        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
        other => crate::gofmt::sprint_json(&val_to_json(other)),
    }
}

/// gnmic's EventFromMap: a jq output object back to an event. A field of the
/// wrong type makes the whole output invalid.
pub(crate) fn val_to_event(v: &Val) -> Result<Record, String> {
    let Val::Obj(m) = v else {
        return Err(format!("jq output {v} is not an event object"));
    };
    let mut e = Record::default();
    for (k, v) in m.iter() {
        match val_key(k).as_str() {
            "name" => match v {
                Val::TStr(b) | Val::BStr(b) => e.name = Str::from(String::from_utf8_lossy(b)),
                Val::Null => {}
                _ => return Err("event name is not a string".into()),
            },
            "timestamp" => match v {
                Val::Num(n) => {
                    e.timestamp = match num_to_json(n) {
                        Json::Number(n) => n
                            .as_i64()
                            .or_else(|| n.as_f64().map(|f| f as i64))
                            .ok_or("event timestamp is not an int64")?,
                        _ => return Err("event timestamp is not an int64".into()),
                    }
                }
                Val::Null => {}
                _ => return Err("event timestamp is not an int64".into()),
            },
            "tags" => match v {
                Val::Obj(tags) => {
                    e.tags = tags
                        .iter()
                        .map(|(k, v)| (val_key(k), Str::from(val_tag(v))))
                        .collect();
                }
                Val::Null => {}
                _ => return Err("event tags are not a map".into()),
            },
            "values" => match v {
                Val::Obj(values) => {
                    e.values = values
                        .iter()
                        .map(|(k, v)| (val_key(k), val_to_value(v)))
                        .collect::<FieldMap<_>>();
                }
                Val::Null => {}
                _ => return Err("event values are not a map".into()),
            },
            "deletes" => match v {
                Val::Arr(items) => {
                    e.deletes = items.iter().map(|d| Str::from(val_tag(d))).collect();
                }
                Val::Null => {}
                _ => return Err("event deletes are not a list".into()),
            },
            _ => {}
        }
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_programs_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Jq>();
    }

    #[test]
    fn condition_on_event() {
        let mut e = Record {
            name: "sub1".into(),
            timestamp: 5,
            ..Default::default()
        };
        e.tags.insert("interface_name", "1/1/1".into());
        e.values.insert("counter1", Value::Int(91));
        let q =
            Jq::compile(r#".tags.interface_name == "1/1/1" and .values.counter1 > 90"#).unwrap();
        assert_eq!(q.check(&e), Ok(true));
        let q = Jq::compile(".name").unwrap();
        assert!(q.check(&e).is_err());
        let q = Jq::compile("empty").unwrap();
        assert_eq!(q.check(&e), Ok(false));
        assert!(Jq::compile(".tags[").is_err());
        assert!(Jq::compile("nosuchfn(1)").is_err());
        let q = Jq::compile("halt").unwrap();
        assert!(q.check(&e).is_err());
    }
}
