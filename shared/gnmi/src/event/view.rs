//! Zero-copy decoding of event payloads for readers (the exporter): names,
//! tags and keys borrow from the payload unless they contain JSON escapes,
//! which roughly halves decoding cost compared to building [`Event`]s.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value as Json;

use super::codec::{payload_shape, PayloadShape};
use super::{timestamp_from_number, Event, EventDecodeError};

/// A decoded event that borrows from the payload. Tags and values keep the
/// payload's order (sorted by key when written by gnomon or gnmic) and any
/// duplicate keys; [`EventView::into_event`] keeps the last of duplicates.
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
pub struct EventView<'a> {
    /// See [`Event::name`].
    #[serde(borrow, default, deserialize_with = "text")]
    pub name: Cow<'a, str>,
    /// See [`Event::timestamp`].
    #[serde(default, deserialize_with = "timestamp_from_number")]
    pub timestamp: i64,
    /// See [`Event::tags`].
    #[serde(borrow, default, deserialize_with = "text_pairs")]
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// See [`Event::values`].
    #[serde(borrow, default, deserialize_with = "json_pairs")]
    pub values: Vec<(Cow<'a, str>, Json)>,
    /// See [`Event::deletes`].
    #[serde(borrow, default, deserialize_with = "text_list")]
    pub deletes: Vec<Cow<'a, str>>,
}

impl EventView<'_> {
    /// The owned [`Event`] with the same content.
    pub fn into_event(self) -> Event {
        Event {
            name: self.name.into_owned(),
            timestamp: self.timestamp,
            tags: self
                .tags
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            values: self
                .values
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v))
                .collect(),
            deletes: self.deletes.into_iter().map(Cow::into_owned).collect(),
        }
    }
}

/// Like [`super::events_from_json`], but borrowing from `bytes`.
pub fn event_views_from_json(bytes: &[u8]) -> Result<Vec<EventView<'_>>, EventDecodeError> {
    Ok(match payload_shape(bytes)? {
        PayloadShape::Blank => Vec::new(),
        PayloadShape::Array => serde_json::from_slice(bytes)?,
        PayloadShape::Object => vec![serde_json::from_slice(bytes)?],
    })
}

/// A string that borrows when it can; JSON `null` reads as `""` (as Go does).
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(s)))
            }
            fn visit_unit<E>(self) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed("")))
            }
        }
        d.deserialize_any(TextVisitor(PhantomData))
    }
}

/// A JSON object read as (key, value) pairs in order; `null` reads as none.
struct Pairs<'a, V>(Vec<(Cow<'a, str>, V)>);

impl<'de: 'a, 'a, V: Deserialize<'de>> Deserialize<'de> for Pairs<'a, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PairsVisitor<'a, V>(PhantomData<(&'a (), V)>);
        impl<'de: 'a, 'a, V: Deserialize<'de>> Visitor<'de> for PairsVisitor<'a, V> {
            type Value = Pairs<'a, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Text(key)) = map.next_key::<Text<'a>>()? {
                    pairs.push((key, map.next_value::<V>()?));
                }
                Ok(Pairs(pairs))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Pairs(Vec::new()))
            }
        }
        d.deserialize_any(PairsVisitor(PhantomData))
    }
}

/// A JSON array of strings; `null` reads as empty.
struct TextList<'a>(Vec<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for TextList<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ListVisitor<'a> {
            type Value = TextList<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON array of strings")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                while let Some(Text(item)) = seq.next_element::<Text<'a>>()? {
                    items.push(item);
                }
                Ok(TextList(items))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(TextList(Vec::new()))
            }
        }
        d.deserialize_any(ListVisitor(PhantomData))
    }
}

fn text<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Cow<'a, str>, D::Error> {
    Text::deserialize(d).map(|t| t.0)
}

type TextPairs<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

fn text_pairs<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<TextPairs<'a>, D::Error> {
    let pairs = Pairs::<Text<'a>>::deserialize(d)?;
    Ok(pairs.0.into_iter().map(|(k, v)| (k, v.0)).collect())
}

fn json_pairs<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<(Cow<'a, str>, Json)>, D::Error> {
    Pairs::<Json>::deserialize(d).map(|p| p.0)
}

fn text_list<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Vec<Cow<'a, str>>, D::Error> {
    TextList::deserialize(d).map(|l| l.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{events_from_json, events_to_json};
    use serde_json::json;

    #[test]
    fn views_borrow_and_match_owned_decoding() {
        let payload = br#"[{"name":"port-stats","timestamp":5,"tags":{"interface_name":"e1","source":"r1"},"values":{"/a/b":1,"/a/c":"x"},"deletes":["/d"]},{"name":"n\"q","tags":null,"values":null,"deletes":null}]"#;
        let views = event_views_from_json(payload).unwrap();
        assert_eq!(views.len(), 2);
        assert!(matches!(views[0].name, Cow::Borrowed("port-stats")));
        assert!(matches!(
            views[0].tags[0].0,
            Cow::Borrowed("interface_name")
        ));
        assert_eq!(views[0].values[1], (Cow::Borrowed("/a/c"), json!("x")));
        assert_eq!(views[1].name, "n\"q");
        assert!(views[1].tags.is_empty() && views[1].values.is_empty());
        let owned: Vec<Event> = views.into_iter().map(EventView::into_event).collect();
        assert_eq!(owned, events_from_json(payload).unwrap());
        assert_eq!(
            event_views_from_json(&events_to_json(&owned))
                .unwrap()
                .into_iter()
                .map(EventView::into_event)
                .collect::<Vec<_>>(),
            owned
        );
    }

    #[test]
    fn views_accept_single_objects_and_blank_payloads_and_name_errors() {
        let one = event_views_from_json(br#"{"name":"n","timestamp":1.0}"#).unwrap();
        assert_eq!(one[0].timestamp, 1);
        assert!(event_views_from_json(b" ").unwrap().is_empty());
        let err = event_views_from_json(b"42").unwrap_err();
        assert!(matches!(err, EventDecodeError::NotEvents { found: '4' }));
        let err = event_views_from_json(br#"[{"tags":["a"]}]"#).unwrap_err();
        assert!(err.to_string().contains("expected a JSON object"), "{err}");
        let err = event_views_from_json(br#"[{"tags":{"a":1}}]"#).unwrap_err();
        assert!(err.to_string().contains("expected a string"), "{err}");
        let err = event_views_from_json(br#"[{"deletes":"x"}]"#).unwrap_err();
        assert!(
            err.to_string().contains("expected a JSON array of strings"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_keys_are_kept_in_views_and_last_wins_in_events() {
        let views = event_views_from_json(br#"[{"tags":{"a":"1","a":"2"}}]"#).unwrap();
        assert_eq!(views[0].tags.len(), 2);
        let ev = views.into_iter().next().unwrap().into_event();
        assert_eq!(ev.tags["a"], "2");
    }
}
