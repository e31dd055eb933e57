//! Decoding NATS payloads into events: gnmic's `event` JSON (decoded in place, borrowing
//! from the payload, because this is the exporter's hot path) and binary
//! `gnmi.SubscribeResponse` (`proto`, converted with the shared event conversion).

use crate::naming::SampleValue;
use gnomon_gnmi::event::{arbitrary_precision_number, response_to_events, Event, EventMeta};
use gnomon_gnmi::proto::gnmi::SubscribeResponse;
use prost::Message;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

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
pub fn decode_events(payload: &[u8]) -> Result<Vec<WireEvent<'_>>, DecodeError> {
    match payload.iter().copied().find(|b| !b.is_ascii_whitespace()) {
        None => Ok(Vec::new()),
        Some(b'[') => serde_json::from_slice(payload).map_err(json_error),
        Some(b'{') => serde_json::from_slice(payload)
            .map(|e| vec![e])
            .map_err(json_error),
        Some(other) => Err(DecodeError::Shape(format!(
            "expected a JSON array of events, found {:?} at the start",
            char::from(other)
        ))),
    }
}

/// Decodes a binary `gnmi.SubscribeResponse` into events with the given meta. A
/// sync response gives no events.
pub fn decode_proto(payload: &[u8], meta: &EventMeta) -> Result<Vec<Event>, DecodeError> {
    let response =
        SubscribeResponse::decode(payload).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    Ok(response_to_events(&response, meta))
}

/// gnmic's fallback meta for proto messages without headers: split the subject into at
/// most 3 parts on `.`; part 2 with `-`→`.` is the source, part 3 the subscription name.
pub fn meta_from_subject(subject: &str) -> EventMeta {
    let mut parts = subject.splitn(3, '.');
    let _prefix = parts.next();
    let source = parts
        .next()
        .map(|s| s.replace('-', "."))
        .unwrap_or_default();
    let subscription = parts.next().unwrap_or_default();
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
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = SampleValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(SampleValue::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(SampleValue::Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(SampleValue::Number(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(SampleValue::Number(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(SampleValue::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(SampleValue::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(SampleValue::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(SampleValue::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                // A number, when serde_json's arbitrary precision is on (starlark, linked
                // in for event-starlark, turns it on for the whole binary); else an object.
                Ok(arbitrary_precision_number(map)?
                    .and_then(|text| text.parse::<f64>().ok())
                    .map_or(SampleValue::Other, SampleValue::Number))
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
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
    if !pairs.is_sorted_by(|a, b| a.0 <= b.0) {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
    }
    Ok(pairs)
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
                        "timestamp" => event.timestamp = map.next_value::<Timestamp>()?.0,
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

/// gnmic's integer nanoseconds; floats and null accepted as Go's decoder does.
struct Timestamp(i64);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimestampVisitor;
        impl<'de> Visitor<'de> for TimestampVisitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a timestamp in nanoseconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Ok(Timestamp(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                i64::try_from(v)
                    .map(Timestamp)
                    .map_err(|_| E::custom(format!("timestamp {v} is beyond int64")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
                if v.is_finite() && v >= i64::MIN as f64 && v < i64::MAX as f64 {
                    Ok(Timestamp(v as i64))
                } else {
                    Err(E::custom(format!("timestamp {v} is not a valid int64")))
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<Timestamp, E> {
                Ok(Timestamp(0))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Timestamp, A::Error> {
                // serde_json's arbitrary-precision numbers (see `SampleValue`).
                let Some(text) = arbitrary_precision_number(map)? else {
                    return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
                };
                match text.parse::<i64>() {
                    Ok(v) => Ok(Timestamp(v)),
                    Err(_) => match text.parse::<f64>() {
                        Ok(v) => self.visit_f64(v),
                        Err(_) => Err(de::Error::custom(format!(
                            "timestamp {text} is not a valid int64"
                        ))),
                    },
                }
            }
        }
        deserializer.deserialize_any(TimestampVisitor)
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
