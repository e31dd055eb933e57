//! JSON encoding and decoding of events: the bytes that travel over NATS.

use std::collections::BTreeMap;

use super::{insert_values, Context, Event, EventMeta};
use crate::proto::gnmi::{
    subscribe_response::Response, typed_value, Notification, SubscribeResponse, TypedValue,
};
use crate::value::update_value;

/// Encodes events as one JSON array (gnmic's `event` format payload).
pub fn events_to_json(events: &[Event]) -> Vec<u8> {
    // Only string-keyed maps and finite numbers: serializing into a Vec
    // cannot fail, but a failure must not take the caller down either.
    serde_json::to_vec(events).unwrap_or_else(|err| {
        tracing::error!(%err, "encoding events as JSON failed");
        b"[]".to_vec()
    })
}

/// Encodes one event as a JSON object (gnmic's `split-events` payload).
pub fn event_to_json(event: &Event) -> Vec<u8> {
    serde_json::to_vec(event).unwrap_or_else(|err| {
        tracing::error!(%err, "encoding an event as JSON failed");
        b"{}".to_vec()
    })
}

/// Why an event payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    /// The payload is JSON of the wrong shape (or not JSON at all).
    #[error("event payload must be a JSON array of event objects, but it starts with {found:?}")]
    NotEvents {
        /// The first non-blank character of the payload.
        found: char,
    },
    /// The payload is not valid event JSON.
    #[error("invalid event JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Decodes a payload of gnmic's `event` format: a JSON array of events. A
/// single event object (gnmic's `split-events`) is accepted too, and a blank
/// payload gives no events.
pub fn events_from_json(bytes: &[u8]) -> Result<Vec<Event>, EventDecodeError> {
    Ok(match payload_shape(bytes)? {
        PayloadShape::Blank => Vec::new(),
        PayloadShape::Array => serde_json::from_slice(bytes)?,
        PayloadShape::Object => vec![serde_json::from_slice(bytes)?],
    })
}

/// What an event payload holds, judged by its first non-blank byte.
pub(super) enum PayloadShape {
    Blank,
    Array,
    Object,
}

pub(super) fn payload_shape(bytes: &[u8]) -> Result<PayloadShape, EventDecodeError> {
    match bytes.iter().copied().find(|b| !b.is_ascii_whitespace()) {
        None => Ok(PayloadShape::Blank),
        Some(b'[') => Ok(PayloadShape::Array),
        Some(b'{') => Ok(PayloadShape::Object),
        Some(other) => Err(EventDecodeError::NotEvents {
            found: char::from(other),
        }),
    }
}

/// Encodes the events of a Subscribe response straight into gnmic's event
/// JSON array: byte for byte what
/// `events_to_json(&response_to_events(resp, meta))` gives, without building
/// [`Event`]s (the collector's hot path). `None` when the response yields no
/// events (a sync_response, an empty notification), as gnmic then publishes
/// nothing.
pub fn response_to_json(resp: &SubscribeResponse, meta: &EventMeta) -> Option<Vec<u8>> {
    match &resp.response {
        Some(Response::Update(n)) => notification_to_json(n, meta),
        _ => None,
    }
}

/// [`response_to_json`] for a bare notification.
pub fn notification_to_json(n: &Notification, meta: &EventMeta) -> Option<Vec<u8>> {
    if n.update.is_empty() && n.delete.is_empty() {
        return None;
    }
    match encode_notification(n, meta) {
        Ok(bytes) => Some(bytes),
        Err(err) => {
            // Writing strings and numbers into a Vec does not fail; should it
            // ever, the notification is dropped rather than the caller.
            tracing::error!(%err, "encoding a notification as event JSON failed");
            None
        }
    }
}

fn encode_notification(n: &Notification, meta: &EventMeta) -> serde_json::Result<Vec<u8>> {
    let ctx = Context::new(n, meta);
    // `{"name":…,"timestamp":…` is the same for every event; so are the tags
    // of every event whose own path has no keys.
    let mut head = Vec::with_capacity(32 + ctx.name.len());
    head.extend_from_slice(br#"{"name":"#);
    serde_json::to_writer(&mut head, ctx.name)?;
    if ctx.timestamp != 0 {
        head.extend_from_slice(br#","timestamp":"#);
        serde_json::to_writer(&mut head, &ctx.timestamp)?;
    }
    let mut shared_tags = Vec::new();
    write_tags(&mut shared_tags, &ctx.shared_tags)?;

    let per_event = head.len() + shared_tags.len() + ctx.prefix_key.len() + 64;
    let mut out = Vec::with_capacity(2 + per_event * (n.update.len() + n.delete.len()));
    out.push(b'[');
    let mut first = true;
    let mut start_event = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        out.extend_from_slice(&head);
    };
    for u in &n.update {
        let (key, own_tags) = ctx.key_and_tags(u.path.as_ref());
        start_event(&mut out);
        match &own_tags {
            None => out.extend_from_slice(&shared_tags),
            Some(tags) => write_tags(&mut out, tags)?,
        }
        if let Some(v) = update_value(u) {
            write_values(&mut out, key, &v)?;
        }
        out.push(b'}');
    }
    for d in &n.delete {
        let (key, own_tags) = ctx.key_and_tags(Some(d));
        start_event(&mut out);
        match &own_tags {
            None => out.extend_from_slice(&shared_tags),
            Some(tags) => write_tags(&mut out, tags)?,
        }
        out.extend_from_slice(br#","deletes":["#);
        serde_json::to_writer(&mut out, &key)?;
        out.extend_from_slice(b"]}");
    }
    out.push(b']');
    Ok(out)
}

fn write_tags(out: &mut Vec<u8>, tags: &BTreeMap<String, String>) -> serde_json::Result<()> {
    if tags.is_empty() {
        return Ok(());
    }
    out.extend_from_slice(br#","tags":"#);
    serde_json::to_writer(out, tags)
}

fn write_values(out: &mut Vec<u8>, key: String, v: &TypedValue) -> serde_json::Result<()> {
    use typed_value::Value as V;
    let scalar = match &v.value {
        None => return Ok(()),
        Some(V::JsonVal(_)) | Some(V::JsonIetfVal(_)) => {
            let mut values = BTreeMap::new();
            insert_values(key, v, &mut values);
            if !values.is_empty() {
                out.extend_from_slice(br#","values":"#);
                serde_json::to_writer(out, &values)?;
            }
            return Ok(());
        }
        Some(scalar) => scalar,
    };
    out.extend_from_slice(br#","values":{"#);
    serde_json::to_writer(&mut *out, &key)?;
    out.push(b':');
    // The common kinds directly; the rest through the general conversion
    // (which also turns non-finite doubles into strings).
    match scalar {
        V::UintVal(u) => serde_json::to_writer(&mut *out, u)?,
        V::IntVal(i) => serde_json::to_writer(&mut *out, i)?,
        V::BoolVal(b) => serde_json::to_writer(&mut *out, b)?,
        V::StringVal(s) | V::AsciiVal(s) => serde_json::to_writer(&mut *out, s)?,
        _ => serde_json::to_writer(&mut *out, &crate::value::to_json(v))?,
    }
    out.push(b'}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{notification_to_events, response_to_events};
    use crate::path::parse_path;
    use crate::proto::gnmi::{Decimal64, Path, PathElem, Update};
    use serde_json::json;
    use typed_value::Value as V;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn upd(path: Option<&str>, v: Option<V>) -> Update {
        Update {
            path: path.map(|s| parse_path(s).unwrap()),
            val: v.map(|v| TypedValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn assert_direct_encoding_matches(n: &Notification, meta: &EventMeta) {
        let via_events = events_to_json(&notification_to_events(n, meta));
        let direct = notification_to_json(n, meta).unwrap();
        assert_eq!(
            String::from_utf8(direct).unwrap(),
            String::from_utf8(via_events).unwrap()
        );
    }

    #[test]
    #[allow(deprecated)]
    fn direct_encoding_equals_encoding_built_events() {
        let mut prefix = parse_path("oc:/interfaces/interface[name=\"e1\"\n]").unwrap();
        prefix.target = "dev\u{1}1".into();
        let mut bare = parse_path("/x").unwrap();
        bare.elem.push(PathElem {
            name: String::new(),
            key: [("source".to_string(), "from-path".to_string())].into(),
        });
        let n = Notification {
            timestamp: -5,
            prefix: Some(prefix),
            update: vec![
                upd(Some("state/counters/in-octets"), Some(V::UintVal(u64::MAX))),
                upd(Some("state/x"), Some(V::IntVal(i64::MIN))),
                upd(Some("state/b"), Some(V::BoolVal(false))),
                upd(Some("state/s"), Some(V::StringVal("a\"b\\c\u{7f}é".into()))),
                upd(Some("state/a"), Some(V::AsciiVal("txt".into()))),
                upd(Some("state/d"), Some(V::DoubleVal(f64::NAN))),
                upd(Some("state/f"), Some(V::FloatVal(0.1))),
                upd(
                    Some("state/dec"),
                    Some(V::DecimalVal(Decimal64 {
                        digits: 1,
                        precision: 1,
                    })),
                ),
                upd(Some("state/bytes"), Some(V::BytesVal(vec![0, 1]))),
                upd(
                    Some("sub[index=1]/j"),
                    Some(V::JsonVal(br#"{"a":[1,null],"b":{}}"#.to_vec())),
                ),
                upd(
                    Some("/interface[name=e2]/j"),
                    Some(V::JsonIetfVal(b"[null]".to_vec())),
                ),
                upd(Some("empty"), Some(V::JsonIetfVal(Vec::new()))),
                upd(Some("bad"), Some(V::JsonVal(b"{".to_vec()))),
                upd(Some("none"), None),
                upd(None, Some(V::UintVal(1))),
                Update {
                    path: Some(bare),
                    val: Some(TypedValue::default()),
                    ..Default::default()
                },
            ],
            delete: vec![
                parse_path("/d[k=v]").unwrap(),
                parse_path("/plain").unwrap(),
                Path::default(),
            ],
            atomic: false,
        };
        let mut meta = EventMeta::new("10.0.0.1:57400", "sub\tname");
        meta.subscription_target = Some("t".into());
        meta.extra_tags = tags(&[("site", "lab"), ("interface_name", "clash")]);
        assert_direct_encoding_matches(&n, &meta);
        assert_direct_encoding_matches(&n, &EventMeta::default());

        let deletes_only = Notification {
            timestamp: 0,
            delete: vec![parse_path("/a").unwrap()],
            ..Default::default()
        };
        assert_direct_encoding_matches(&deletes_only, &EventMeta::default());
    }

    #[test]
    fn direct_encoding_yields_nothing_when_there_are_no_events() {
        let meta = EventMeta::new("r1", "s");
        let sync = SubscribeResponse {
            response: Some(Response::SyncResponse(true)),
            ..Default::default()
        };
        assert_eq!(response_to_json(&sync, &meta), None);
        assert!(response_to_events(&sync, &meta).is_empty());
        let empty = SubscribeResponse {
            response: Some(Response::Update(Notification::default())),
            ..Default::default()
        };
        assert_eq!(response_to_json(&empty, &meta), None);
        let one = SubscribeResponse {
            response: Some(Response::Update(Notification {
                timestamp: 7,
                update: vec![upd(Some("/a"), Some(V::UintVal(3)))],
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(response_to_json(&one, &meta).unwrap()).unwrap(),
            r#"[{"name":"s","timestamp":7,"tags":{"source":"r1","subscription-name":"s"},"values":{"/a":3}}]"#
        );
    }

    #[test]
    fn json_omits_empty_fields_and_round_trips() {
        let empty = Event::default();
        assert_eq!(event_to_json(&empty), b"{}");
        let ev = Event {
            name: "n".into(),
            timestamp: 1,
            tags: tags(&[("b", "2"), ("a", "1")]),
            values: [("/x".to_string(), json!(u64::MAX))].into(),
            deletes: vec![],
        };
        let bytes = events_to_json(std::slice::from_ref(&ev));
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"[{"name":"n","timestamp":1,"tags":{"a":"1","b":"2"},"values":{"/x":18446744073709551615}}]"#
        );
        assert_eq!(events_from_json(&bytes).unwrap(), vec![ev.clone()]);
        assert_eq!(events_from_json(&event_to_json(&ev)).unwrap(), vec![ev]);
    }

    #[test]
    fn decoding_is_lenient_like_go_but_names_problems() {
        let ev = events_from_json(
            br#" [{"name":"n","timestamp":1.7e18,"tags":null,"values":null,"deletes":null,"extra":1}]"#,
        )
        .unwrap();
        assert_eq!(ev[0].timestamp, 1_700_000_000_000_000_000);
        assert!(ev[0].tags.is_empty());
        assert_eq!(events_from_json(b"  \n").unwrap(), vec![]);
        assert_eq!(events_from_json(b"[]").unwrap(), vec![]);

        let err = events_from_json(b"\"text\"").unwrap_err();
        assert!(matches!(err, EventDecodeError::NotEvents { found: '"' }));
        assert!(err.to_string().contains("JSON array"), "{err}");
        let err = events_from_json(br#"[{"tags":{"a":1}}]"#).unwrap_err();
        assert!(
            err.to_string().contains("invalid type: integer `1`"),
            "{err}"
        );
        assert!(err.to_string().contains("column"), "{err}");
        let err = events_from_json(br#"[{"timestamp":"5"}]"#).unwrap_err();
        assert!(err.to_string().contains("timestamp"), "{err}");
        let err = events_from_json(br#"[{"timestamp":9223372036854775808}]"#).unwrap_err();
        assert!(err.to_string().contains("beyond int64"), "{err}");
        assert!(events_from_json(b"[{").is_err());
    }
}
