//! Go's text renderings where gnmic's output depends on them: `fmt.Sprint`
//! of a value (tags made from values), `strconv.FormatFloat(f, 'f', -1)`
//! (event-convert to string) and title casing (`cases.Title`).

use serde_json::Value;

use crate::record::{Str, Val};

/// `fmt.Sprint(v)` of an event value (see [`sprint_json`]); short results
/// (all numbers, most strings) need no allocation.
pub(crate) fn sprint(v: &Val) -> Str {
    match v {
        Val::Str(s) => s.clone(),
        Val::Bool(b) => Str::const_new(if *b { "true" } else { "false" }),
        Val::Int(i) => Str::from(itoa::Buffer::new().format(*i)),
        Val::Uint(u) => Str::from(itoa::Buffer::new().format(*u)),
        Val::Float(f) => Str::from(format_float_v(*f)),
        Val::Json(j) => Str::from(sprint_json(j)),
    }
}

/// `fmt.Sprint(v)` for a decoded JSON value: strings verbatim, integers in
/// decimal, floats as Go's `%v` (shortest digits, exponent form below 1e-4
/// and from 1e6 up), `<nil>`, `[a b]`, `map[k:v]`.
pub(crate) fn sprint_json(v: &Value) -> String {
    let mut out = String::new();
    sprint_into(v, &mut out);
    out
}

fn sprint_into(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(itoa(i).as_str());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                out.push_str(&format_float_v(n.as_f64().unwrap_or(f64::NAN)));
            }
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                sprint_into(item, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push_str("map[");
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                sprint_into(v, out);
            }
            out.push(']');
        }
    }
}

fn itoa(i: i64) -> String {
    i.to_string()
}

/// Go's `%v` for a float64: `strconv.FormatFloat(f, 'g', -1, 64)`, i.e. the
/// shortest digits that round-trip, in exponent form when the decimal
/// exponent is < -4 or ≥ 6 (strconv uses precision 6 for that decision when
/// printing the shortest form), so 1234567.0 prints as `1.234567e+06`.
pub(crate) fn format_float_v(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "d.ddde±x".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format_float_f(f)
    }
}

/// `strconv.FormatFloat(f, 'f', -1, 64)`: shortest digits, never an exponent.
pub(crate) fn format_float_f(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    // Rust's Display prints the shortest round-trip digits without exponent.
    format!("{f}")
}

/// Title casing as golang.org/x/text/cases.Title(language.English): the first
/// letter of each word upper-cased, the rest lower-cased. A word goes on
/// through letters, digits, `_`, combining marks and single "mid-word"
/// punctuation (`'`, `.`, `:`); anything else (`-`, `/`, space…) starts a new
/// word. So `carrier-transitions` → `Carrier-Transitions`, `in_octets` →
/// `In_octets`.
pub(crate) fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_word = false;
    let mut prev_mid = false;
    for c in s.chars() {
        let mid = matches!(
            c,
            '\'' | '.'
                | ':'
                | '·'
                | '\u{2019}'
                | '\u{2027}'
                | '\u{FE13}'
                | '\u{FE52}'
                | '\u{FE55}'
                | '\u{FF07}'
                | '\u{FF0E}'
                | '\u{FF1A}'
        );
        if prev_mid && mid {
            // Two mid-word marks in a row end the word.
            in_word = false;
        }
        if c.is_alphabetic() && (c.is_lowercase() || c.is_uppercase() || has_case(c)) {
            if in_word {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
                in_word = true;
            }
        } else {
            out.push(c);
            let joins = c.is_alphanumeric() || c == '_' || mid || is_mark(c);
            if !joins {
                in_word = false;
            }
        }
        prev_mid = mid;
    }
    out
}

fn has_case(c: char) -> bool {
    c.to_lowercase().next() != Some(c) || c.to_uppercase().next() != Some(c)
}

fn is_mark(c: char) -> bool {
    // Combining diacritical marks and a few other extend ranges.
    matches!(c as u32, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F | 0x200D)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `fmt.Sprint` of a value, checked to be the same for JSON and event
    /// values.
    fn sprint(v: Value) -> String {
        let text = sprint_json(&v);
        assert_eq!(super::sprint(&Val::from_json(v)), text.as_str());
        text
    }

    #[test]
    fn go_sprint() {
        assert_eq!(sprint(json!("x")), "x");
        assert_eq!(sprint(json!(54)), "54");
        assert_eq!(sprint(json!(-3)), "-3");
        assert_eq!(
            sprint(json!(18446744073709551615u64)),
            "18446744073709551615"
        );
        assert_eq!(sprint(json!(1.5)), "1.5");
        assert_eq!(sprint(json!(2.0)), "2");
        assert_eq!(sprint(json!(1e21)), "1e+21");
        assert_eq!(sprint(json!(1234567.0)), "1.234567e+06");
        assert_eq!(sprint(json!(123456.5)), "123456.5");
        assert_eq!(sprint(json!(0.00001)), "1e-05");
        assert_eq!(sprint(json!(true)), "true");
        assert_eq!(sprint(json!(null)), "<nil>");
        assert_eq!(sprint(json!([1, "a"])), "[1 a]");
    }

    #[test]
    fn go_format_f() {
        assert_eq!(format_float_f(1.0), "1");
        assert_eq!(format_float_f(0.1), "0.1");
        assert_eq!(format_float_f(1e21), "1000000000000000000000");
    }

    #[test]
    fn title_like_x_text_cases() {
        assert_eq!(title("carrier-transitions"), "Carrier-Transitions");
        assert_eq!(title("in_octets"), "In_octets");
        assert_eq!(title("HELLO world"), "Hello World");
        assert_eq!(title("a4a"), "A4a");
        assert_eq!(title("foo.bar"), "Foo.bar");
        assert_eq!(title("/a/b"), "/A/B");
        assert_eq!(title("title"), "Title");
    }
}
