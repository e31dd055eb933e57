//! The events of one event-format message as plain events (`gnomon_gnmi::event::PlainEvents`),
//! when they have that shape.
//!
//! Why: a Prometheus output stores a plain notification through the series locations it
//! learnt from an earlier notification of the same shape (`crate::shape_cache`), skipping
//! the series text, its hash and the index lookup — half of the work per update. gnmic's
//! event JSON of one notification is that shape nearly always: every event with the
//! notification's name and timestamp, the events of one keyed element sharing their tags.
//! What it costs: the tag texts copied once per tag set of the message and the value keys
//! once per message, against a series text rendered per value on the general path.
//!
//! A message takes the plain path only if reading it so stores exactly what the general
//! path stores: one name (not gnomon's target status), one timestamp, no deletes, scalar
//! values. Events with equal tags in a row share one tag set; a set's tags keep the
//! event's order (sorted by name, as decoded), so the series are the same.

use super::{same_tags, WireEvent};
use crate::naming::SampleValue;
use gnomon_gnmi::event::{PlainEvents, PlainValue};
use std::borrow::Cow;

/// `events` as plain events with each entry's value key and value, in entry order; `None`
/// when they are not of that shape (the caller stores them the general way).
pub fn plain_events<'e>(
    events: &'e [WireEvent<'_>],
) -> Option<(PlainEvents<'e>, Vec<(&'e str, SampleValue<'e>)>)> {
    let first = events.first()?;
    if first.name == gnomon_bus::contract::TARGET_STATUS {
        return None;
    }
    let updates = events.iter().map(|e| e.values.len()).sum();
    let mut plain = PlainEvents::assembled(&first.name, first.timestamp, updates);
    let mut samples = Vec::with_capacity(updates);
    // The previous event and its tag set.
    let mut previous: Option<(&WireEvent<'_>, usize)> = None;
    for event in events {
        if event.name != first.name || event.timestamp != first.timestamp {
            return None;
        }
        if !event.deletes.is_empty() {
            return None;
        }
        let tag_set = match previous {
            Some((before, set)) if same_tags(&before.tags, &event.tags) => set,
            _ => plain.push_tag_set(
                event
                    .tags
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        };
        previous = Some((event, tag_set));
        for (key, value) in &event.values {
            let (plain_value, sample) = match value {
                SampleValue::Number(n) => (PlainValue::Float(*n), SampleValue::Number(*n)),
                SampleValue::Bool(b) => (PlainValue::Bool(*b), SampleValue::Bool(*b)),
                SampleValue::Text(text) => (
                    PlainValue::Text(text),
                    SampleValue::Text(Cow::Borrowed(text)),
                ),
                SampleValue::Other => return None,
            };
            if !plain.push_entry(key, plain_value, tag_set) {
                return None;
            }
            samples.push((key.as_ref(), sample));
        }
    }
    Some((plain, samples))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::decode_events;

    #[test]
    fn one_notifications_events_are_plain_with_shared_tag_sets() {
        let json = br#"[
            {"name":"s","timestamp":5,"tags":{"a":"1","b":"x"},"values":{"k1":7}},
            {"name":"s","timestamp":5,"tags":{"a":"1","b":"x"},"values":{"k2":"up","k3":true}},
            {"name":"s","timestamp":5,"tags":{"a":"2"},"values":{"k1":1.5}},
            {"name":"s","timestamp":5,"tags":{"a":"1","b":"x"},"values":{"k1":8}}
        ]"#;
        let events = decode_events(json).unwrap();
        let (plain, samples) = plain_events(&events).expect("plain shape");
        assert_eq!((plain.name, plain.timestamp), ("s", 5));
        let set = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        // Equal tags in a row share a set; equal tags later get a set of their own.
        assert_eq!(
            plain.tag_sets,
            vec![
                set(&[("a", "1"), ("b", "x")]),
                set(&[("a", "2")]),
                set(&[("a", "1"), ("b", "x")])
            ]
        );
        let entries: Vec<(&str, usize)> = plain
            .entries()
            .iter()
            .map(|e| (plain.key(e), e.tag_set))
            .collect();
        assert_eq!(
            entries,
            vec![("k1", 0), ("k2", 0), ("k3", 0), ("k1", 1), ("k1", 2)]
        );
        assert_eq!(
            samples,
            vec![
                ("k1", SampleValue::Number(7.0)),
                ("k2", SampleValue::Text("up".into())),
                ("k3", SampleValue::Bool(true)),
                ("k1", SampleValue::Number(1.5)),
                ("k1", SampleValue::Number(8.0)),
            ]
        );
        // The events they stand for are the decoded ones, value for value.
        let values: Vec<serde_json::Value> = plain
            .events()
            .into_iter()
            .map(|e| e.values.into_values().next().unwrap())
            .collect();
        assert_eq!(
            values,
            vec![
                serde_json::json!(7.0),
                serde_json::json!("up"),
                serde_json::json!(true),
                serde_json::json!(1.5),
                serde_json::json!(8.0)
            ]
        );
    }

    #[test]
    fn events_of_another_shape_are_left_to_the_general_path() {
        for json in [
            // Two names, two timestamps, a delete, a value that is not a scalar.
            r#"[{"name":"s","timestamp":5,"values":{"k":1}},{"name":"t","timestamp":5,"values":{"k":1}}]"#,
            r#"[{"name":"s","timestamp":5,"values":{"k":1}},{"name":"s","timestamp":6,"values":{"k":1}}]"#,
            r#"[{"name":"s","timestamp":5,"values":{"k":1},"deletes":["/x"]}]"#,
            r#"[{"name":"s","timestamp":5,"values":{"k":[1]}}]"#,
            r#"[{"name":"s","timestamp":5,"values":{"k":null}}]"#,
            // gnomon's target status, and no events at all.
            r#"[{"name":"gnomon_target_up","timestamp":5,"tags":{"target":"r1"},"values":{"gnomon_target_up":1}}]"#,
            r#"[]"#,
        ] {
            let events = decode_events(json.as_bytes()).unwrap();
            assert!(plain_events(&events).is_none(), "{json}");
        }
    }
}
