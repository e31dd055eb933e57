//! Decoding NATS payloads into events: gnmic's `event` JSON (decoded in place, borrowing
//! from the payload, because this is the exporter's hot path: a [`scan`]ner for the shape
//! nearly every payload has, serde_json for the rest) and binary `gnmi.SubscribeResponse`
//! (`proto`, converted with the shared event conversion).

use crate::naming::SampleValue;
use gnomon_gnmi::event::{response_to_events, Event, EventMeta, Nanos};
use gnomon_gnmi::proto::gnmi::SubscribeResponse;
use prost::Message;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

mod plain;
mod scan;

pub use plain::plain_events;

/// Whether two events' tags are equal; neighbours' tags often borrow the very same text
/// (the scanner reads a repeated tags object once), which is equal without comparing bytes.
pub(crate) fn same_tags(
    a: &[(Cow<'_, str>, Cow<'_, str>)],
    b: &[(Cow<'_, str>, Cow<'_, str>)],
) -> bool {
    let same = |x: &str, y: &str| std::ptr::eq(x, y) || x == y;
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| same(ka, kb) && same(va, vb))
}

/// One event, borrowing from the payload where it can. Tags and values are kept in
/// key order (as gnmic's maps are iterated after sorting).
#[derive(Debug, Default, PartialEq)]
pub struct WireEvent<'a> {
    pub name: Cow<'a, str>,
    pub timestamp: i64,
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub values: Vec<(Cow<'a, str>, SampleValue<'a>)>,
    pub deletes: Vec<Cow<'a, str>>,
}

impl<'a> WireEvent<'a> {
    /// A view of a shared [`Event`] (from the proto path).
    pub fn borrowed(event: &'a Event) -> Self {
        Self {
            name: Cow::Borrowed(&event.name),
            timestamp: event.timestamp,
            tags: event
                .tags
                .iter()
                .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
                .collect(),
            values: event
                .values
                .iter()
                .map(|(k, v)| (Cow::Borrowed(k.as_str()), SampleValue::from(v)))
                .collect(),
            deletes: event
                .deletes
                .iter()
                .map(|d| Cow::Borrowed(d.as_str()))
                .collect(),
        }
    }

    /// The tag `key`, if present.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }
}

/// Why a payload was rejected; the reason is the `reason` label of the malformed counter.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is not JSON: {0}")]
    Json(String),
    #[error("JSON is not gnmic events: {0}")]
    Shape(String),
    #[error("payload is not a gnmi.SubscribeResponse: {0}")]
    Protobuf(String),
}

impl DecodeError {
    /// Short label value naming the kind of damage.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Json(_) => "json",
            DecodeError::Shape(_) => "shape",
            DecodeError::Protobuf(_) => "protobuf",
        }
    }
}

fn json_error(error: serde_json::Error) -> DecodeError {
    match error.classify() {
        serde_json::error::Category::Data => DecodeError::Shape(error.to_string()),
        _ => DecodeError::Json(error.to_string()),
    }
}

/// Decodes gnmic's `event` payload: a JSON array of events; a single event object
/// (`split-events`) is accepted too; a blank payload has no events.
///
/// The payload is checked as UTF-8 once, whole (serde_json would check every string on its
/// own), then read by the [`scan`]ner, and by serde_json when it leaves the common shape.
pub fn decode_events(payload: &[u8]) -> Result<Vec<WireEvent<'_>>, DecodeError> {
    let Some(text) = payload_text(payload)? else {
        return Ok(Vec::new());
    };
    match scan::events(text) {
        Some(events) => Ok(events),
        None => events_from_text(text),
    }
}

/// [`decode_events`] by serde_json alone: what the scanner must agree with (tests, fuzzing).
pub fn decode_events_without_scanner(payload: &[u8]) -> Result<Vec<WireEvent<'_>>, DecodeError> {
    match payload_text(payload)? {
        Some(text) => events_from_text(text),
        None => Ok(Vec::new()),
    }
}

/// The payload as text: `None` when blank; refused when it cannot be an event payload.
fn payload_text(payload: &[u8]) -> Result<Option<&str>, DecodeError> {
    let Some(first) = payload.iter().copied().find(|b| !b.is_ascii_whitespace()) else {
        return Ok(None);
    };
    if first != b'[' && first != b'{' {
        return Err(DecodeError::Shape(format!(
            "expected a JSON array of events, found {:?} at the start",
            char::from(first)
        )));
    }
    std::str::from_utf8(payload)
        .map(Some)
        .map_err(|e| DecodeError::Json(format!("invalid UTF-8 at byte {}", e.valid_up_to())))
}

/// serde_json's reading of a payload that starts with `[` or `{`.
fn events_from_text(text: &str) -> Result<Vec<WireEvent<'_>>, DecodeError> {
    if text.trim_start().starts_with('[') {
        serde_json::from_str(text).map_err(json_error)
    } else {
        serde_json::from_str(text)
            .map(|e| vec![e])
            .map_err(json_error)
    }
}

/// Decodes a binary `gnmi.SubscribeResponse` into events with the given meta. A
/// sync response gives no events.
pub fn decode_proto(payload: &[u8], meta: &EventMeta) -> Result<Vec<Event>, DecodeError> {
    Ok(response_to_events(&decode_response(payload)?, meta))
}

/// Decodes a binary `gnmi.SubscribeResponse`.
pub fn decode_response(payload: &[u8]) -> Result<SubscribeResponse, DecodeError> {
    SubscribeResponse::decode(payload).map_err(|e| DecodeError::Protobuf(e.to_string()))
}

/// gnmic's fallback meta for proto messages without headers: split the subject into at
/// most 3 parts on `.`; part 2 with `-`→`.` is the source, part 3 the subscription name.
pub fn meta_from_subject(subject: &str) -> EventMeta {
    let (source, subscription) = gnomon_bus::contract::source_from_subject(subject);
    EventMeta::new(source, subscription)
}

/// A string borrowed from the payload when it has no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CowStrVisitor;
        impl<'de> Visitor<'de> for CowStrVisitor {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(CowStrVisitor)
    }
}

impl<'de> Deserialize<'de> for SampleValue<'de> {
    /// Reads the value's JSON text and classifies it here rather than through
    /// `deserialize_any`: with serde_json's `arbitrary_precision` feature on (starlark, linked
    /// in for event-starlark, turns it on for the whole binary) that path copies every number
    /// into a new `String` first, and a number is what nearly every value is.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        sample_from_json_text(raw.get()).map_err(de::Error::custom)
    }
}

/// The sample of one JSON value's text (already validated by the JSON reader): a number
/// or a boolean as is, a string (borrowed unless it has escapes), anything else `Other`.
fn sample_from_json_text(text: &str) -> Result<SampleValue<'_>, serde_json::Error> {
    Ok(match text.as_bytes().first() {
        Some(b'"') => match text.get(1..text.len() - 1) {
            Some(inner) if !inner.contains('\\') => SampleValue::Text(Cow::Borrowed(inner)),
            _ => SampleValue::Text(Cow::Owned(serde_json::from_str::<String>(text)?)),
        },
        Some(b'-' | b'0'..=b'9') => text
            .parse::<f64>()
            .map_or(SampleValue::Other, SampleValue::Number),
        Some(b't') => SampleValue::Bool(true),
        Some(b'f') => SampleValue::Bool(false),
        _ => SampleValue::Other,
    })
}

/// A JSON object read into key-sorted pairs, each value converted by `convert`.
fn sorted_pairs<'de, A, V, T>(
    mut map: A,
    convert: impl Fn(V) -> T,
) -> Result<Vec<(Cow<'de, str>, T)>, A::Error>
where
    A: MapAccess<'de>,
    V: Deserialize<'de>,
{
    let mut pairs: Vec<(Cow<'de, str>, T)> = Vec::with_capacity(map.size_hint().unwrap_or(4));
    while let Some(CowStr(key)) = map.next_key::<CowStr<'de>>()? {
        pairs.push((key, convert(map.next_value()?)));
    }
    sort_pairs(&mut pairs);
    Ok(pairs)
}

/// Sorts pairs by key (stable: repeated keys keep their order), unless already sorted.
fn sort_pairs<T>(pairs: &mut [(Cow<'_, str>, T)]) {
    if !pairs.is_sorted_by(|a, b| a.0 <= b.0) {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
    }
}

impl<'de> Deserialize<'de> for WireEvent<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EventVisitor;
        impl<'de> Visitor<'de> for EventVisitor {
            type Value = WireEvent<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a gnmic event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut event = WireEvent::default();
                while let Some(CowStr(key)) = map.next_key::<CowStr<'de>>()? {
                    match key.as_ref() {
                        "name" => {
                            event.name = map
                                .next_value::<Option<CowStr<'de>>>()?
                                .map(|s| s.0)
                                .unwrap_or_default()
                        }
                        "timestamp" => event.timestamp = map.next_value::<Nanos>()?.0,
                        "tags" => {
                            event.tags = map
                                .next_value::<Option<TagMap<'de>>>()?
                                .map(|t| t.0)
                                .unwrap_or_default()
                        }
                        "values" => {
                            event.values = map
                                .next_value::<Option<ValueMap<'de>>>()?
                                .map(|v| v.0)
                                .unwrap_or_default()
                        }
                        "deletes" => {
                            let deletes: Option<Vec<CowStr<'de>>> = map.next_value()?;
                            event.deletes = deletes
                                .unwrap_or_default()
                                .into_iter()
                                .map(|d| d.0)
                                .collect();
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(event)
            }
        }
        deserializer.deserialize_map(EventVisitor)
    }
}

struct TagMap<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de> Deserialize<'de> for TagMap<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TagVisitor;
        impl<'de> Visitor<'de> for TagVisitor {
            type Value = TagMap<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string tags")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Ok(TagMap(sorted_pairs(map, |v: CowStr<'de>| v.0)?))
            }
        }
        deserializer.deserialize_map(TagVisitor)
    }
}

struct ValueMap<'a>(Vec<(Cow<'a, str>, SampleValue<'a>)>);

impl<'de> Deserialize<'de> for ValueMap<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValuesVisitor;
        impl<'de> Visitor<'de> for ValuesVisitor {
            type Value = ValueMap<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of values")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Ok(ValueMap(sorted_pairs(map, |v: SampleValue<'de>| v)?))
            }
        }
        deserializer.deserialize_map(ValuesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"[{"name":"port-stats","timestamp":1700000000123456789,
        "tags":{"source":"10.0.0.1:57400","interface_name":"ethernet-1/1","subscription-name":"port-stats"},
        "values":{"/interfaces/interface/state/counters/in-octets":"123456","/x":{"nested":1},"/y":null,"/z":1.5},
        "deletes":["/interfaces/interface/state/foo"],"unknown":[1,2]}]"#;

    #[test]
    fn invalid_utf8_is_refused_naming_where() {
        let mut payload = br#"[{"name":"s","values":{"/x":"ok"}}]"#.to_vec();
        payload[10] = 0xff;
        let err = decode_events(&payload).unwrap_err();
        assert_eq!(
            err.to_string(),
            "payload is not JSON: invalid UTF-8 at byte 10"
        );
        let err = decode_events(b"\xff\xff").unwrap_err();
        assert_eq!(err.reason(), "shape");
    }

    #[test]
    fn decodes_gnmic_events_borrowing_and_sorted() {
        let events = decode_events(SAMPLE.as_bytes()).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.name, "port-stats");
        assert_eq!(e.timestamp, 1_700_000_000_123_456_789);
        let keys: Vec<&str> = e.tags.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["interface_name", "source", "subscription-name"]);
        assert!(matches!(e.tags[0].1, Cow::Borrowed(_)));
        assert_eq!(e.values[0].1, SampleValue::Text(Cow::Borrowed("123456")));
        assert_eq!(e.values[1].1, SampleValue::Other);
        assert_eq!(e.values[3].1, SampleValue::Number(1.5));
        assert_eq!(
            e.deletes,
            vec![Cow::Borrowed("/interfaces/interface/state/foo")]
        );
        // Same content as the shared owned decoder.
        let shared: Vec<Event> = serde_json::from_str(SAMPLE).unwrap();
        let view = WireEvent::borrowed(&shared[0]);
        assert_eq!(view.tags, e.tags);
        assert_eq!(view.name, e.name);
    }

    #[test]
    fn every_kind_of_value_and_timestamp_reads_as_gnmic_reads_it() {
        let payload = br#"[{"timestamp":-5,"values":{"a":0,"b":-12,"c":18446744073709551615,
            "d":2.5e3,"e":-0.125,"f":"t\"q\u00e9","g":true,"h":false,"i":[1],"j":null,"k":"",
            "l":100000000000000000000000}}]"#;
        let events = decode_events(payload).unwrap();
        let e = &events[0];
        assert_eq!(e.timestamp, -5);
        let values: Vec<&SampleValue> = e.values.iter().map(|(_, v)| v).collect();
        assert_eq!(
            values,
            [
                &SampleValue::Number(0.0),
                &SampleValue::Number(-12.0),
                &SampleValue::Number(u64::MAX as f64),
                &SampleValue::Number(2500.0),
                &SampleValue::Number(-0.125),
                &SampleValue::Text(Cow::Owned("t\"q\u{e9}".to_string())),
                &SampleValue::Bool(true),
                &SampleValue::Bool(false),
                &SampleValue::Other,
                &SampleValue::Other,
                &SampleValue::Text(Cow::Borrowed("")),
                &SampleValue::Number(1e23),
            ]
        );
        for (json, expected) in [
            (r#"{"timestamp":1.9}"#, Some(1)),
            (r#"{"timestamp":null}"#, Some(0)),
            (r#"{"timestamp":9223372036854775807}"#, Some(i64::MAX)),
            (r#"{"timestamp":9223372036854775808}"#, None),
            (r#"{"timestamp":1e300}"#, None),
            (r#"{"timestamp":"5"}"#, None),
        ] {
            let decoded = decode_events(json.as_bytes()).map(|e| e[0].timestamp);
            assert_eq!(decoded.ok(), expected, "{json}");
        }
        assert_eq!(
            decode_events(br#"[{"values":{"a":01}}]"#)
                .unwrap_err()
                .reason(),
            "json"
        );
    }

    #[test]
    fn rejects_damage_with_a_reason() {
        assert_eq!(decode_events(b"[{\"name\":").unwrap_err().reason(), "json");
        assert_eq!(
            decode_events(b"[{\"tags\":{\"a\":1}}]")
                .unwrap_err()
                .reason(),
            "shape"
        );
        assert_eq!(decode_events(b"[1,2]").unwrap_err().reason(), "shape");
        assert_eq!(decode_events(b"hello").unwrap_err().reason(), "shape");
        assert_eq!(decode_events(b"  ").unwrap().len(), 0);
        assert_eq!(decode_events(b"{\"name\":\"a\"}").unwrap().len(), 1);
        assert_eq!(
            decode_proto(b"\xff\xff\xff", &EventMeta::default())
                .unwrap_err()
                .reason(),
            "protobuf"
        );
    }

    #[test]
    fn subject_fallback_meta_follows_gnmic() {
        let meta = meta_from_subject("telemetry.172-17-0-100:57400.port-stats");
        assert_eq!(meta.source, "172.17.0.100:57400");
        assert_eq!(meta.subscription_name, "port-stats");
        assert_eq!(meta_from_subject("telemetry").source, "");
    }
}
