//! Value conversions: event-convert, event-data-convert,
//! event-duration-convert, event-ieeefloat32.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use regex::Regex;
use serde_json::Value;

use crate::build::{pure, Build, Pure};
use crate::config::Fields;
use crate::error::ProcessorError;
use crate::gofmt::format_float_f;
use crate::record::{FieldMap, Record, Str, Val};
use crate::select::{Condition, Matcher};

#[derive(Debug, Clone, Copy)]
enum Target {
    Int,
    Uint,
    Float,
    String,
    Bool,
}

/// event-convert: converts the values whose name matches to one type; a
/// value that does not convert is left as it is.
struct Convert {
    value_names: Matcher,
    target: Target,
}

pub(crate) fn convert(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    let target = match f.string("type")? {
        None => {
            return Err(f.err(
                "type",
                &Value::Null,
                "missing; expected int, uint, float, string or bool",
            ))
        }
        Some(t) => match t.as_str() {
            "int" => Target::Int,
            "uint" => Target::Uint,
            "float" => Target::Float,
            "string" => Target::String,
            "bool" => Target::Bool,
            _ => {
                return Err(f.err_str(
                    "type",
                    &t,
                    "unknown type; expected int, uint, float, string or bool",
                ))
            }
        },
    };
    Ok(pure(Convert {
        value_names: Matcher::from_field(f, "value-names")?,
        target,
    }))
}

/// Go's `strconv.Atoi` (optional sign, decimal digits, 64-bit; out of range
/// is an error). One pass over the bytes: counters arrive as strings and this
/// runs for each one event-convert selects.
#[inline]
fn atoi(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        all => (false, all),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    if negative {
        0i64.checked_sub_unsigned(n)
    } else {
        i64::try_from(n).ok()
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A float value; JSON has no NaN or infinities, so those are refused.
fn float_value(f: f64) -> Option<Val> {
    f.is_finite().then_some(Val::Float(f))
}

impl Target {
    fn convert(self, v: &Val) -> Option<Val> {
        match (self, v) {
            (Target::Int, Val::Str(s)) => atoi(s).map(Val::Int),
            (Target::Int, Val::Int(_)) => None, // already an int
            (Target::Int, Val::Uint(u)) => Some(Val::Int(*u as i64)),
            (Target::Int, Val::Float(f)) => Some(Val::Int(*f as i64)),
            (Target::Uint, Val::Str(s)) => atoi(s).map(|i| Val::from_u64(i as u64)),
            (Target::Uint, Val::Int(i)) => (*i < 0).then_some(Val::Int(0)),
            (Target::Uint, Val::Uint(_)) => None,
            (Target::Uint, Val::Float(f)) => {
                Some(Val::from_u64(if *f < 0.0 { 0 } else { *f as u64 }))
            }
            (Target::Float, Val::Str(s)) => s.parse::<f64>().ok().and_then(float_value),
            (Target::Float, Val::Int(i)) => float_value(*i as f64),
            (Target::Float, Val::Uint(u)) => float_value(*u as f64),
            (Target::Float, Val::Float(_)) => None,
            (Target::String, Val::Str(_)) => None,
            (Target::String, Val::Int(i)) => {
                Some(Val::Str(Str::from(itoa::Buffer::new().format(*i))))
            }
            (Target::String, Val::Uint(u)) => {
                Some(Val::Str(Str::from(itoa::Buffer::new().format(*u))))
            }
            (Target::String, Val::Float(f)) => Some(Val::Str(Str::from(format_float_f(*f)))),
            (Target::String, Val::Bool(b)) => {
                Some(Val::Str(Str::const_new(if *b { "true" } else { "false" })))
            }
            (Target::Bool, Val::Str(s)) => parse_bool(s).map(Val::Bool),
            (Target::Bool, Val::Int(i)) => Some(Val::Bool(*i != 0)),
            (Target::Bool, Val::Uint(u)) => Some(Val::Bool(*u != 0)),
            (Target::Bool, Val::Float(f)) => Some(Val::Bool(*f != 0.0)),
            _ => None,
        }
    }
}

impl Pure for Convert {
    fn apply(&self, events: &mut Vec<Record>) {
        if self.value_names.is_empty() {
            return;
        }
        for e in events.iter_mut() {
            for (k, v) in e.values.iter_mut() {
                if self.value_names.is_match(k) {
                    if let Some(new) = self.target.convert(v) {
                        *v = new;
                    }
                }
            }
        }
    }
}

/// Data units and their size in bytes (gnmic's table; bits are decimal
/// multiples, bytes binary multiples as in the go-units package it uses).
const UNITS: &[(&str, f64)] = &[
    ("b", 1.0 / 8.0),
    ("kb", 1e3 / 8.0),
    ("mb", 1e6 / 8.0),
    ("gb", 1e9 / 8.0),
    ("tb", 1e12 / 8.0),
    ("eb", 1e18 / 8.0),
    ("B", 1.0),
    ("KB", 1024.0),
    ("MB", 1048576.0),
    ("GB", 1073741824.0),
    ("TB", 1099511627776.0),
    ("EB", 1152921504606846976.0),
    ("ZB", 1180591620717411303424.0),
    ("YB", 1208925819614629174706176.0),
    ("KiB", 1024.0),
    ("MiB", 1048576.0),
    ("GiB", 1073741824.0),
    ("TiB", 1099511627776.0),
    ("EiB", 1152921504606846976.0),
    ("ZiB", 1180591620717411303424.0),
    ("YiB", 1208925819614629174706176.0),
];

/// A unit written in a value; unknown symbols count as bytes (gnmic).
fn unit_bytes(symbol: &str) -> f64 {
    UNITS
        .iter()
        .find(|(s, _)| *s == symbol)
        .map_or(1.0, |(_, b)| *b)
}

/// event-data-convert: converts sizes between data units.
struct DataConvert {
    value_names: Matcher,
    from: Option<f64>,
    to: f64,
    to_symbol: String,
    keep: bool,
    rename: Option<(Regex, String)>,
}

pub(crate) fn data_convert(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    let unit = |key: &'static str| -> Result<Option<(String, f64)>, ProcessorError> {
        match f.string(key)? {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => match UNITS.iter().find(|(sym, _)| *sym == s) {
                Some((_, b)) => Ok(Some((s, *b))),
                None => Err(f.err_str(
                    key,
                    &s,
                    format!(
                        "unknown unit; expected one of {}",
                        UNITS.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", ")
                    ),
                )),
            },
        }
    };
    let from = unit("from")?.map(|(_, b)| b);
    let (to_symbol, to) = unit("to")?.unwrap_or_else(|| ("B".to_string(), 1.0));
    let rename = match f.regex("old")? {
        Some(re) => Some((re, f.string_or("new", "")?)),
        None => {
            f.string("new")?;
            None
        }
    };
    Ok(pure(DataConvert {
        value_names: Matcher::from_field(f, "value-names")?,
        from,
        to,
        to_symbol,
        keep: f.bool("keep")?,
        rename,
    }))
}

fn string_unit_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"([+-]?([0-9]*[.])?[0-9]+)\s?(\S+)").expect("constant regex compiles")
    })
}

impl DataConvert {
    fn convert(&self, v: &Val) -> Option<f64> {
        // gnmic: without `from`, the unit is derived from the name (`-octets`
        // …), which is bytes — the default anyway.
        let from = self.from.unwrap_or(1.0);
        let (amount, from) = match v {
            Val::Int(_) | Val::Uint(_) | Val::Float(_) => (v.as_f64()?, from),
            Val::Str(s) => match atoi(s) {
                Some(i) => (i as f64, from),
                None => {
                    let caps = string_unit_regex().captures(s)?;
                    if caps.get(0)?.as_str() != s {
                        return None;
                    }
                    (
                        caps.get(1)?.as_str().parse().ok()?,
                        unit_bytes(caps.get(3)?.as_str()),
                    )
                }
            },
            _ => return None,
        };
        let out = amount * from / self.to;
        out.is_finite().then_some(out)
    }
}

impl Pure for DataConvert {
    fn apply(&self, events: &mut Vec<Record>) {
        if self.value_names.is_empty() {
            return;
        }
        for e in events.iter_mut() {
            let mut added: FieldMap<Val> = FieldMap::new();
            let mut removed = Vec::new();
            for (k, v) in e.values.iter_mut() {
                if !self.value_names.is_match(k) {
                    continue;
                }
                let Some(out) = self.convert(v).and_then(float_value) else {
                    continue;
                };
                if let Some((re, new)) = &self.rename {
                    added.insert(Str::from(re.replace_all(k, new.as_str())), out);
                    if !self.keep {
                        removed.push(k.clone());
                    }
                } else if self.keep {
                    added.insert(Str::from(format!("{k}_{}", self.to_symbol)), out);
                } else {
                    *v = out;
                }
            }
            for k in removed {
                e.values.remove(&k);
            }
            e.values.extend(added);
        }
    }
}

/// event-duration-convert: `1w3d5h2m1s` style durations to seconds.
struct DurationConvert {
    value_names: Matcher,
    keep: bool,
}

pub(crate) fn duration_convert(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    Ok(pure(DurationConvert {
        value_names: Matcher::from_field(f, "value-names")?,
        keep: f.bool("keep")?,
    }))
}

fn duration_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"((?P<weeks>\d+)w)?((?P<days>\d+)d)?((?P<hours>\d+)h)?((?P<minutes>\d+)m)?((?P<seconds>\d+)s)?")
            .expect("constant regex compiles")
    })
}

fn duration_seconds(v: &Val) -> Option<i64> {
    match v {
        Val::Int(i) => Some(*i),
        Val::Uint(u) => Some(*u as i64),
        Val::Float(f) => Some(*f as i64),
        Val::Str(s) => {
            if let Some(i) = atoi(s) {
                return Some(i);
            }
            let caps = duration_regex().captures(s)?;
            let mut total: i64 = 0;
            for (name, secs) in [
                ("weeks", 604800),
                ("days", 86400),
                ("hours", 3600),
                ("minutes", 60),
                ("seconds", 1),
            ] {
                if let Some(m) = caps.name(name) {
                    let n: i64 = m.as_str().parse().ok()?;
                    total = total.checked_add(n.checked_mul(secs)?)?;
                }
            }
            Some(total)
        }
        _ => None,
    }
}

impl Pure for DurationConvert {
    fn apply(&self, events: &mut Vec<Record>) {
        if self.value_names.is_empty() {
            return;
        }
        for e in events.iter_mut() {
            let mut added = Vec::new();
            for (k, v) in e.values.iter_mut() {
                if !self.value_names.is_match(k) {
                    continue;
                }
                let Some(secs) = duration_seconds(v) else {
                    continue;
                };
                if self.keep {
                    added.push((Str::from(format!("{k}_seconds")), Val::Int(secs)));
                } else {
                    *v = Val::Int(secs);
                }
            }
            e.values.extend(added);
        }
    }
}

/// event-ieeefloat32: base64 of 4 big-endian bytes → the IEEE-754 float32
/// they encode (widened to float64, as gnmic's outputs widen it).
struct IeeeFloat32 {
    cond: Option<Condition>,
    value_names: Matcher,
}

pub(crate) fn ieeefloat32(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    Ok(pure(IeeeFloat32 {
        cond: Condition::from_field(f)?,
        value_names: Matcher::from_field(f, "value-names")?,
    }))
}

fn decode_f32(v: &Val) -> Option<f32> {
    let Val::Str(s) = v else {
        return None;
    };
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    let four: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(f32::from_be_bytes(four))
}

impl Pure for IeeeFloat32 {
    fn apply(&self, events: &mut Vec<Record>) {
        if self.value_names.is_empty() {
            return;
        }
        for e in events.iter_mut() {
            if !e.values.keys().any(|k| self.value_names.is_match(k)) {
                continue;
            }
            if let Some(c) = &self.cond {
                if !c.check(e).unwrap_or(false) {
                    continue;
                }
            }
            for (k, v) in e.values.iter_mut() {
                if self.value_names.is_match(k) {
                    if let Some(x) = decode_f32(v).and_then(|f| float_value(f as f64)) {
                        *v = x;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_atoi() {
        assert_eq!(atoi("+12"), Some(12));
        assert_eq!(atoi("-3"), Some(-3));
        assert_eq!(atoi("1.5"), None);
        assert_eq!(atoi(" 1"), None);
        assert_eq!(atoi(""), None);
        for text in [
            "0",
            "-0",
            "+0",
            "007",
            "1000",
            "+",
            "-",
            "--1",
            "+-1",
            "1 ",
            "1_000",
            "0x10",
            "١",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            // What the two-pass version (validate, then `str::parse`) gave.
            let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
            let expected = if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                text.parse::<i64>().ok()
            };
            assert_eq!(atoi(text), expected, "{text:?}");
        }
    }

    #[test]
    fn durations() {
        let duration_seconds = |v: serde_json::Value| duration_seconds(&Val::from_json(v));
        assert_eq!(duration_seconds(json!("1w5s")), Some(604805));
        assert_eq!(
            duration_seconds(json!("2d3h4m")),
            Some(2 * 86400 + 3 * 3600 + 240)
        );
        assert_eq!(duration_seconds(json!("42")), Some(42));
        assert_eq!(duration_seconds(json!(7.9)), Some(7));
        assert_eq!(duration_seconds(json!(true)), None);
    }
}
