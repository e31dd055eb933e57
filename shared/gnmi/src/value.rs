//! Conversions of gNMI values (`TypedValue`, and the deprecated `Value`) into
//! JSON, numbers and display text, with gnmic's conventions:
//! bytes are base64 (as Go's JSON encoder writes `[]byte`), decimals are
//! `digits / 10^precision`, JSON and JSON_IETF payloads are parsed.
//!
//! 64-bit integers stay exact: they become JSON integers, never floats.
//! Non-finite floats cannot be JSON numbers; they become the strings `"NaN"`,
//! `"+Inf"` and `"-Inf"` (which [`str_to_f64`] reads back).

use std::borrow::Cow;

use base64::Engine as _;
use serde_json::{Map, Number, Value as Json};

use crate::proto::gnmi::{typed_value, Decimal64, Encoding, TypedValue, Update, Value};

/// A value that could not be turned into JSON.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// A JSON or JSON_IETF value whose payload is not valid JSON.
    #[error("{encoding} value is not valid JSON: {source}")]
    InvalidJson {
        /// `JSON` or `JSON_IETF`.
        encoding: &'static str,
        /// The parser's complaint (with line and column).
        source: serde_json::Error,
    },
    /// A JSON or JSON_IETF value with an empty (or all-blank) payload.
    #[error("{encoding} value is empty")]
    EmptyJson {
        /// `JSON` or `JSON_IETF`.
        encoding: &'static str,
    },
}

/// Converts a value to JSON; JSON payloads that do not parse are an error.
/// A `TypedValue` without any value gives `null`.
pub fn try_to_json(v: &TypedValue) -> Result<Json, ValueError> {
    use typed_value::Value as V;
    #[allow(deprecated)]
    let json = match &v.value {
        None => Json::Null,
        Some(V::StringVal(s)) | Some(V::AsciiVal(s)) => Json::String(s.clone()),
        Some(V::IntVal(i)) => Json::Number((*i).into()),
        Some(V::UintVal(u)) => Json::Number((*u).into()),
        Some(V::BoolVal(b)) => Json::Bool(*b),
        Some(V::BytesVal(b)) | Some(V::ProtoBytes(b)) => Json::String(base64_encode(b)),
        Some(V::FloatVal(f)) => f32_to_json(*f),
        Some(V::DoubleVal(d)) => f64_to_json(*d),
        Some(V::DecimalVal(d)) => f64_to_json(decimal_to_f64(d)),
        Some(V::LeaflistVal(list)) => Json::Array(
            list.element
                .iter()
                .map(try_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Some(V::AnyVal(any)) => {
            // Go's encoding/json view of anypb.Any (both fields omitempty).
            let mut m = Map::new();
            if !any.type_url.is_empty() {
                m.insert("type_url".into(), Json::String(any.type_url.clone()));
            }
            if !any.value.is_empty() {
                m.insert("value".into(), Json::String(base64_encode(&any.value)));
            }
            Json::Object(m)
        }
        Some(V::JsonVal(raw)) => parse_json(raw, "JSON")?,
        Some(V::JsonIetfVal(raw)) => parse_json(raw, "JSON_IETF")?,
    };
    Ok(json)
}

/// Like [`try_to_json`], but never fails: a JSON payload that does not parse
/// is returned as a JSON string holding its text, an empty one as `null`.
pub fn to_json(v: &TypedValue) -> Json {
    match try_to_json(v) {
        Ok(json) => json,
        Err(ValueError::EmptyJson { .. }) => Json::Null,
        Err(ValueError::InvalidJson { .. }) => Json::String(raw_json_text(v).into_owned()),
    }
}

/// The text of a JSON/JSON_IETF payload (lossy UTF-8); empty for other kinds.
fn raw_json_text(v: &TypedValue) -> Cow<'_, str> {
    match &v.value {
        Some(typed_value::Value::JsonVal(raw)) | Some(typed_value::Value::JsonIetfVal(raw)) => {
            String::from_utf8_lossy(raw)
        }
        _ => Cow::Borrowed(""),
    }
}

/// Parses a JSON payload; an all-blank payload is [`ValueError::EmptyJson`].
pub(crate) fn parse_json(raw: &[u8], encoding: &'static str) -> Result<Json, ValueError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(ValueError::EmptyJson { encoding });
    }
    serde_json::from_slice(raw).map_err(|source| ValueError::InvalidJson { encoding, source })
}

/// The numeric reading of a value, as gnmic's Prometheus output does it:
/// integers and floats as they are, bool as 1/0, decimals as
/// digits/10^precision, strings (and JSON string scalars, e.g. JSON_IETF
/// uint64) when they parse as a float. Anything else is `None`.
pub fn to_f64(v: &TypedValue) -> Option<f64> {
    use typed_value::Value as V;
    #[allow(deprecated)]
    match v.value.as_ref()? {
        V::IntVal(i) => Some(*i as f64),
        V::UintVal(u) => Some(*u as f64),
        V::FloatVal(f) => Some(f32_to_f64(*f)),
        V::DoubleVal(d) => Some(*d),
        V::DecimalVal(d) => Some(decimal_to_f64(d)),
        V::BoolVal(b) => Some(bool_to_f64(*b)),
        V::StringVal(s) | V::AsciiVal(s) => str_to_f64(s),
        V::JsonVal(raw) | V::JsonIetfVal(raw) => {
            let parsed: Json = serde_json::from_slice(raw).ok()?;
            json_to_f64(&parsed)
        }
        V::BytesVal(_) | V::ProtoBytes(_) | V::LeaflistVal(_) | V::AnyVal(_) => None,
    }
}

/// The numeric reading of an event value (a JSON scalar): numbers, bool as
/// 1/0, strings that parse as floats. Arrays, objects and null are `None`.
pub fn json_to_f64(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::Bool(b) => Some(bool_to_f64(*b)),
        Json::String(s) => str_to_f64(s),
        Json::Null | Json::Array(_) | Json::Object(_) => None,
    }
}

/// Parses a number written as text (`"123"`, `"1.5e3"`, `"-0.2"`, `"NaN"`,
/// `"+Inf"`); no surrounding blanks allowed, like Go's `ParseFloat`.
pub fn str_to_f64(s: &str) -> Option<f64> {
    s.parse().ok()
}

fn bool_to_f64(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// `digits / 10^precision`.
pub fn decimal_to_f64(d: &Decimal64) -> f64 {
    const MAX_EXACT_INT: u64 = 1 << 53;
    // Both operands exact ⇒ the quotient is correctly rounded.
    if d.precision <= 22 && d.digits.unsigned_abs() <= MAX_EXACT_INT {
        return d.digits as f64 / 10f64.powi(d.precision as i32);
    }
    format!("{}e-{}", d.digits, d.precision)
        .parse()
        .unwrap_or(f64::NAN)
}

/// A decimal as exact text: digits 12345, precision 2 → `123.45`.
pub fn decimal_to_string(d: &Decimal64) -> String {
    let magnitude = d.digits.unsigned_abs().to_string();
    let sign = if d.digits < 0 { "-" } else { "" };
    let precision = d.precision as usize;
    if precision == 0 {
        return format!("{sign}{magnitude}");
    }
    if magnitude.len() > precision {
        let (int, frac) = magnitude.split_at(magnitude.len() - precision);
        format!("{sign}{int}.{frac}")
    } else {
        let zeros = "0".repeat(precision - magnitude.len());
        format!("{sign}0.{zeros}{magnitude}")
    }
}

/// An f32 widened the way a reader expects: 0.1f32 → 0.1 (its shortest
/// decimal form), not 0.10000000149011612.
fn f32_to_f64(f: f32) -> f64 {
    if !f.is_finite() {
        return f as f64;
    }
    f.to_string().parse().unwrap_or(f as f64)
}

fn f32_to_json(f: f32) -> Json {
    f64_to_json(f32_to_f64(f))
}

fn f64_to_json(d: f64) -> Json {
    match Number::from_f64(d) {
        Some(n) => Json::Number(n),
        None => Json::String(non_finite_text(d).to_owned()),
    }
}

fn non_finite_text(d: f64) -> &'static str {
    if d.is_nan() {
        "NaN"
    } else if d > 0.0 {
        "+Inf"
    } else {
        "-Inf"
    }
}

fn base64_encode(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Human-readable text of a value: strings as they are, numbers in decimal,
/// decimals exactly, bytes in base64, JSON payloads as their text, leaf-lists
/// and `Any` as JSON. A `TypedValue` without a value gives `""`.
pub fn to_display_string(v: &TypedValue) -> String {
    use typed_value::Value as V;
    #[allow(deprecated)]
    match &v.value {
        None => String::new(),
        Some(V::StringVal(s)) | Some(V::AsciiVal(s)) => s.clone(),
        Some(V::IntVal(i)) => i.to_string(),
        Some(V::UintVal(u)) => u.to_string(),
        Some(V::BoolVal(b)) => b.to_string(),
        Some(V::BytesVal(b)) | Some(V::ProtoBytes(b)) => base64_encode(b),
        Some(V::FloatVal(f)) if f.is_finite() => f.to_string(),
        Some(V::FloatVal(f)) => non_finite_text(*f as f64).to_owned(),
        Some(V::DoubleVal(d)) if d.is_finite() => d.to_string(),
        Some(V::DoubleVal(d)) => non_finite_text(*d).to_owned(),
        Some(V::DecimalVal(d)) => decimal_to_string(d),
        Some(V::JsonVal(raw)) | Some(V::JsonIetfVal(raw)) => {
            String::from_utf8_lossy(raw).trim().to_owned()
        }
        Some(V::LeaflistVal(_)) | Some(V::AnyVal(_)) => to_json(v).to_string(),
    }
}

/// Reads the deprecated `Update.value` (`Value{value, type}`) as a
/// `TypedValue` of the matching kind; unknown encodings are kept as bytes.
pub fn from_deprecated_value(v: &Value) -> TypedValue {
    use typed_value::Value as V;
    let bytes = v.value.clone();
    let value = match Encoding::try_from(v.r#type) {
        Ok(Encoding::Json) => V::JsonVal(bytes),
        Ok(Encoding::JsonIetf) => V::JsonIetfVal(bytes),
        Ok(Encoding::Proto) => V::ProtoBytes(bytes),
        Ok(Encoding::Ascii) => V::AsciiVal(String::from_utf8_lossy(&bytes).into_owned()),
        Ok(Encoding::Bytes) | Err(_) => V::BytesVal(bytes),
    };
    TypedValue { value: Some(value) }
}

/// The value of an update: `val`, or else the deprecated `value` converted
/// with [`from_deprecated_value`]. `None` when the update carries neither.
pub fn update_value(u: &Update) -> Option<Cow<'_, TypedValue>> {
    if let Some(v) = &u.val {
        return Some(Cow::Borrowed(v));
    }
    #[allow(deprecated)]
    let legacy = u.value.as_ref();
    legacy.map(|v| Cow::Owned(from_deprecated_value(v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use typed_value::Value as V;

    fn tv(v: V) -> TypedValue {
        TypedValue { value: Some(v) }
    }

    #[test]
    fn scalars_to_json_keep_64_bit_integers_exact() {
        assert_eq!(to_json(&tv(V::StringVal("up".into()))), json!("up"));
        assert_eq!(to_json(&tv(V::AsciiVal("a b".into()))), json!("a b"));
        assert_eq!(to_json(&tv(V::IntVal(i64::MIN))), json!(i64::MIN));
        assert_eq!(to_json(&tv(V::UintVal(u64::MAX))), json!(u64::MAX));
        assert_eq!(
            serde_json::to_string(&to_json(&tv(V::UintVal(18446744073709551615)))).unwrap(),
            "18446744073709551615"
        );
        assert_eq!(to_json(&tv(V::BoolVal(true))), json!(true));
        assert_eq!(to_json(&tv(V::DoubleVal(2.5))), json!(2.5));
        assert_eq!(to_json(&TypedValue::default()), Json::Null);
    }

    #[test]
    #[allow(deprecated)]
    fn float_and_decimal() {
        assert_eq!(to_json(&tv(V::FloatVal(0.1))), json!(0.1));
        assert_eq!(to_f64(&tv(V::FloatVal(0.1))), Some(0.1));
        let d = Decimal64 {
            digits: 12345,
            precision: 2,
        };
        assert_eq!(to_json(&tv(V::DecimalVal(d))), json!(123.45));
        assert_eq!(to_f64(&tv(V::DecimalVal(d))), Some(123.45));
        assert_eq!(to_display_string(&tv(V::DecimalVal(d))), "123.45");
        let small = Decimal64 {
            digits: -5,
            precision: 3,
        };
        assert_eq!(decimal_to_string(&small), "-0.005");
        assert_eq!(decimal_to_f64(&small), -0.005);
        let whole = Decimal64 {
            digits: 42,
            precision: 0,
        };
        assert_eq!(decimal_to_string(&whole), "42");
        let huge_precision = Decimal64 {
            digits: 1,
            precision: 30,
        };
        assert_eq!(decimal_to_f64(&huge_precision), 1e-30);
    }

    #[test]
    fn non_finite_floats_become_strings_that_read_back() {
        for (d, text) in [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            let j = to_json(&tv(V::DoubleVal(d)));
            assert_eq!(j, json!(text));
            assert_eq!(to_display_string(&tv(V::DoubleVal(d))), text);
            let back = json_to_f64(&j).unwrap();
            assert!(back.is_nan() == d.is_nan() && (d.is_nan() || back == d));
        }
    }

    #[test]
    fn bytes_are_base64_like_go() {
        assert_eq!(
            to_json(&tv(V::BytesVal(vec![0, 1, 2, 255]))),
            json!("AAEC/w==")
        );
        assert_eq!(to_json(&tv(V::ProtoBytes(b"hi".to_vec()))), json!("aGk="));
        assert_eq!(to_display_string(&tv(V::BytesVal(b"hi".to_vec()))), "aGk=");
        assert_eq!(to_f64(&tv(V::BytesVal(b"1".to_vec()))), None);
    }

    #[test]
    fn json_payloads_are_parsed() {
        let v = tv(V::JsonIetfVal(
            br#"{"a":{"b":"18446744073709551615"},"c":[1,2]}"#.to_vec(),
        ));
        assert_eq!(
            to_json(&v),
            json!({"a": {"b": "18446744073709551615"}, "c": [1, 2]})
        );
        assert_eq!(
            to_f64(&tv(V::JsonIetfVal(br#""18446744073709551615""#.to_vec()))),
            Some(1.8446744073709552e19)
        );
        assert_eq!(to_f64(&tv(V::JsonVal(b"42".to_vec()))), Some(42.0));
        assert_eq!(to_f64(&tv(V::JsonVal(b"true".to_vec()))), Some(1.0));
        assert_eq!(to_f64(&tv(V::JsonVal(b"{}".to_vec()))), None);
        assert_eq!(
            to_display_string(&tv(V::JsonVal(b" {\"a\":1}\n".to_vec()))),
            "{\"a\":1}"
        );
    }

    #[test]
    fn invalid_and_empty_json() {
        let bad = tv(V::JsonVal(b"{not json".to_vec()));
        let err = try_to_json(&bad).unwrap_err();
        assert!(matches!(
            err,
            ValueError::InvalidJson {
                encoding: "JSON",
                ..
            }
        ));
        assert!(
            err.to_string().starts_with("JSON value is not valid JSON"),
            "{err}"
        );
        assert_eq!(to_json(&bad), json!("{not json"));
        assert_eq!(to_f64(&bad), None);
        let empty = tv(V::JsonIetfVal(b"  ".to_vec()));
        assert!(matches!(
            try_to_json(&empty),
            Err(ValueError::EmptyJson {
                encoding: "JSON_IETF"
            })
        ));
        assert_eq!(to_json(&empty), Json::Null);
    }

    #[test]
    fn leaflist_and_any() {
        let list = tv(V::LeaflistVal(crate::proto::gnmi::ScalarArray {
            element: vec![tv(V::StringVal("a".into())), tv(V::UintVal(7))],
        }));
        assert_eq!(to_json(&list), json!(["a", 7]));
        assert_eq!(to_display_string(&list), r#"["a",7]"#);
        assert_eq!(to_f64(&list), None);
        let bad_inside = tv(V::LeaflistVal(crate::proto::gnmi::ScalarArray {
            element: vec![tv(V::JsonVal(b"[".to_vec()))],
        }));
        assert!(try_to_json(&bad_inside).is_err());
        let any = tv(V::AnyVal(prost_types::Any {
            type_url: "type.googleapis.com/x.Y".into(),
            value: vec![1],
        }));
        assert_eq!(
            to_json(&any),
            json!({"type_url": "type.googleapis.com/x.Y", "value": "AQ=="})
        );
    }

    #[test]
    fn numeric_readings() {
        assert_eq!(to_f64(&tv(V::IntVal(-3))), Some(-3.0));
        assert_eq!(to_f64(&tv(V::UintVal(9))), Some(9.0));
        assert_eq!(to_f64(&tv(V::BoolVal(true))), Some(1.0));
        assert_eq!(to_f64(&tv(V::BoolVal(false))), Some(0.0));
        assert_eq!(to_f64(&tv(V::StringVal("1.5e3".into()))), Some(1500.0));
        assert_eq!(to_f64(&tv(V::StringVal("UP".into()))), None);
        assert_eq!(to_f64(&tv(V::StringVal(" 1".into()))), None);
        assert_eq!(to_f64(&TypedValue::default()), None);
        assert_eq!(json_to_f64(&json!("12")), Some(12.0));
        assert_eq!(json_to_f64(&json!(null)), None);
        assert_eq!(json_to_f64(&json!([1])), None);
    }

    #[test]
    #[allow(deprecated)]
    fn deprecated_update_value_is_read() {
        let legacy = |enc: Encoding, bytes: &[u8]| Update {
            value: Some(Value {
                value: bytes.to_vec(),
                r#type: enc as i32,
            }),
            ..Default::default()
        };
        let u = legacy(Encoding::Json, b"{\"a\":1}");
        assert_eq!(to_json(&update_value(&u).unwrap()), json!({"a": 1}));
        let u = legacy(Encoding::JsonIetf, b"\"5\"");
        assert_eq!(to_f64(&update_value(&u).unwrap()), Some(5.0));
        let u = legacy(Encoding::Ascii, b"text");
        assert_eq!(to_json(&update_value(&u).unwrap()), json!("text"));
        let u = legacy(Encoding::Bytes, b"hi");
        assert_eq!(to_json(&update_value(&u).unwrap()), json!("aGk="));
        let u = legacy(Encoding::Proto, b"hi");
        assert!(matches!(
            update_value(&u).unwrap().value,
            Some(V::ProtoBytes(_))
        ));
        let unknown = Update {
            value: Some(Value {
                value: b"x".to_vec(),
                r#type: 99,
            }),
            ..Default::default()
        };
        assert!(matches!(
            update_value(&unknown).unwrap().value,
            Some(V::BytesVal(_))
        ));
        // val wins over value.
        let both = Update {
            val: Some(tv(V::IntVal(1))),
            value: Some(Value {
                value: b"2".to_vec(),
                r#type: Encoding::Json as i32,
            }),
            ..Default::default()
        };
        assert_eq!(to_json(&update_value(&both).unwrap()), json!(1));
        assert!(update_value(&Update::default()).is_none());
    }
}
