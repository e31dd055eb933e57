//! gnmic's "event" message format: one flat record per gNMI update, with
//! path keys as tags and leaf values keyed by their key-less path. This is
//! the NATS payload between collector and exporter, and what Prometheus
//! metric names and labels are built from.
//!
//! Conversion rules (gnmic `pkg/formatters/event.go`):
//! * `name` = subscription name (`default` if none); `timestamp` = the
//!   notification's (ns).
//! * Each key of a path element becomes the tag `<elem>_<key>`, `<elem>`
//!   without any `module:` prefix (`interface_name`); keys of an unnamed
//!   element keep their bare name; a path `target` becomes the tag `target`.
//!   Within one path a later element's tag replaces an earlier one.
//! * Update tags = prefix tags + update path tags; when an update tag exists
//!   already with another value it is stored as `<value-key>_<tag>`.
//! * Value key = prefix key-less path (trailing `/` trimmed) + `/` + update
//!   key-less path (leading `/` trimmed); names keep module prefixes.
//! * JSON/JSON_IETF values are parsed; an object is flattened into one value
//!   per leaf (`<key>/<child>`, array items `<key>.<index>`); JSON `null` and
//!   `[null]` (YANG `empty`) become `true`; other values stay under the key.
//!   An update with an empty path gets the key `<prefix>/`, so its JSON
//!   children read `<prefix>//child`, exactly as in gnmic.
//! * One event per update; one event per delete path (`deletes: [<key>]`).
//! * Meta tags (`source`, `subscription-name`, `subscription-target`, target
//!   `event-tags`) are added last; one whose key is taken is stored as
//!   `meta_<key>`.
//!
//! Differences from gnmic, on purpose: an update whose JSON does not parse
//! keeps its text as a string value instead of failing the whole response;
//! 64-bit integers inside JSON stay exact; non-finite doubles become the
//! strings `"NaN"`, `"+Inf"`, `"-Inf"` (gnmic fails to marshal them); the
//! deprecated `Update.value` is read when `val` is absent.
//!
//! Wire side: [`events_to_json`] / [`events_from_json`] for [`Event`]s;
//! [`response_to_json`] encodes a response without building events (same
//! bytes, several times faster: the collector's path); [`event_views_from_json`]
//! decodes without copying strings (the exporter's path).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value as Json;

mod codec;
mod plain;
mod view;

pub use codec::{
    event_to_json, events_from_json, events_to_json, notification_to_json, response_to_json,
    EventDecodeError,
};
pub use plain::{plain_events, plain_events_from_wire, PlainEntry, PlainEvents, PlainValue};
pub use view::{event_views_from_json, EventView};

use super::path::{elem_names, elems_of, keyless_len, push_without_keys, strip_module};
use super::value::{self, update_value, ValueError};
use crate::proto::gnmi::{
    subscribe_response::Response, typed_value, Notification, Path, PathElem, SubscribeResponse,
    TypedValue,
};

/// Event name used when the subscription has no name.
pub const DEFAULT_EVENT_NAME: &str = "default";
/// Tag holding the target (device) name the data came from.
pub const TAG_SOURCE: &str = "source";
/// Tag holding the subscription name.
pub const TAG_SUBSCRIPTION_NAME: &str = "subscription-name";
/// Tag holding the subscription's own `target` setting, when it has one.
pub const TAG_SUBSCRIPTION_TARGET: &str = "subscription-target";
/// Tag holding a path's `target` field.
pub const TAG_TARGET: &str = "target";
/// Meta key gnmic never turns into a tag.
const META_FORMAT: &str = "format";

/// One gnmic event. Every field is left out of the JSON when empty, and
/// missing (or `null`) when decoding means empty.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Event {
    /// The subscription name (measurement / metric-name part).
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub name: String,
    /// Notification timestamp, ns since the Unix epoch.
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "timestamp_from_number"
    )]
    pub timestamp: i64,
    /// Path keys, target and meta tags.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub tags: BTreeMap<String, String>,
    /// Key-less path of each leaf → its value.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub values: BTreeMap<String, Json>,
    /// Key-less paths deleted by the notification.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub deletes: Vec<String>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The key under which serde_json hands a number over as a one-entry map when
/// its `arbitrary_precision` feature is on. Features are unified per build:
/// starlark (linked in for gnmic's event-starlark) turns it on for the whole
/// binary, so visitors of numbers must accept this form too.
const ARBITRARY_PRECISION_KEY: &str = "$serde_json::private::Number";

/// For a `visit_map` of a visitor that expects a number: the number's text
/// when the map is serde_json's arbitrary-precision form (see above), `None`
/// for any other map (its entries are skipped).
pub fn arbitrary_precision_number<'de, A: serde::de::MapAccess<'de>>(
    mut map: A,
) -> Result<Option<String>, A::Error> {
    use serde::de::IgnoredAny;
    let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? else {
        return Ok(None);
    };
    if key == ARBITRARY_PRECISION_KEY {
        let text: String = map.next_value()?;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        return Ok(Some(text));
    }
    map.next_value::<IgnoredAny>()?;
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(None)
}

fn timestamp_from_number<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Nanos::deserialize(d).map(|n| n.0)
}

/// An event timestamp as gnmic writes it, integer nanoseconds; a float is truncated and
/// `null` reads as 0, as Go's decoder does.
///
/// Read with `deserialize_i64` behind `deserialize_option`: serde_json then parses the
/// digits in place, where `deserialize_any` copies every number into a new `String` while
/// its `arbitrary_precision` feature is on (a hot path: every event has a timestamp).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nanos(pub i64);

impl<'de> Deserialize<'de> for Nanos {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Number(i64);
        impl<'de> Deserialize<'de> for Number {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_i64(TimestampVisitor).map(Number)
            }
        }
        Ok(Nanos(Option::<Number>::deserialize(d)?.map_or(0, |n| n.0)))
    }
}

struct TimestampVisitor;

impl<'de> serde::de::Visitor<'de> for TimestampVisitor {
    type Value = i64;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a timestamp in nanoseconds (integer)")
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom(format!("timestamp {v} is beyond int64")))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
        // i64::MAX as f64 rounds up to 2^63, which is out of range.
        if v.is_finite() && v >= i64::MIN as f64 && v < i64::MAX as f64 {
            Ok(v as i64)
        } else {
            Err(E::custom(format!("timestamp {v} is not a valid int64")))
        }
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<i64, E> {
        Ok(0)
    }
    /// A number from a `serde_json::Value` under `arbitrary_precision`.
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<i64, A::Error> {
        use serde::de::Error as _;
        match arbitrary_precision_number(map)? {
            Some(text) => match text.parse::<i64>() {
                Ok(v) => Ok(v),
                Err(_) => match text.parse::<f64>() {
                    Ok(v) => self.visit_f64(v),
                    Err(_) => Err(A::Error::custom(format!(
                        "timestamp {text} is not a valid int64"
                    ))),
                },
            },
            None => Err(A::Error::invalid_type(serde::de::Unexpected::Map, &self)),
        }
    }
}

/// Where a notification came from; becomes the event name and meta tags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventMeta {
    /// Target name (tag `source`).
    pub source: String,
    /// Subscription name (event `name` and tag `subscription-name`).
    pub subscription_name: String,
    /// The subscription's own `target` setting (tag `subscription-target`).
    pub subscription_target: Option<String>,
    /// The target's `event-tags`. A key equal to one of the tags above, or
    /// `format`, is ignored.
    pub extra_tags: BTreeMap<String, String>,
}

impl EventMeta {
    /// Meta for `source` and `subscription_name`, without extras.
    pub fn new(source: impl Into<String>, subscription_name: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            subscription_name: subscription_name.into(),
            ..Default::default()
        }
    }

    fn event_name(&self) -> &str {
        if self.subscription_name.is_empty() {
            DEFAULT_EVENT_NAME
        } else {
            &self.subscription_name
        }
    }

    /// Meta tags in application order; empty values are left out.
    fn tag_pairs(&self) -> Vec<(&str, &str)> {
        let builtin = [
            (TAG_SOURCE, self.source.as_str()),
            (TAG_SUBSCRIPTION_NAME, self.subscription_name.as_str()),
            (
                TAG_SUBSCRIPTION_TARGET,
                self.subscription_target.as_deref().unwrap_or(""),
            ),
        ];
        let mut pairs = Vec::with_capacity(self.extra_tags.len() + builtin.len());
        for (k, v) in &self.extra_tags {
            let reserved =
                k == META_FORMAT || builtin.iter().any(|(builtin_key, _)| builtin_key == k);
            if !reserved {
                pairs.push((k.as_str(), v.as_str()));
            }
        }
        pairs.extend(builtin.into_iter().filter(|(_, v)| !v.is_empty()));
        pairs
    }
}

/// Events of one Subscribe response: those of its notification; a
/// sync_response (or the deprecated error) yields none.
pub fn response_to_events(resp: &SubscribeResponse, meta: &EventMeta) -> Vec<Event> {
    match &resp.response {
        Some(Response::Update(n)) => notification_to_events(n, meta),
        _ => Vec::new(),
    }
}

/// Events of one notification: one per update, then one per delete path.
pub fn notification_to_events(n: &Notification, meta: &EventMeta) -> Vec<Event> {
    let context = Context::new(n, meta);
    let mut events = Vec::with_capacity(n.update.len() + n.delete.len());
    for u in &n.update {
        let (key, own_tags) = context.key_and_tags(u.path.as_ref());
        let mut values = BTreeMap::new();
        if let Some(v) = update_value(u) {
            insert_values(key, &v, &mut values);
        }
        events.push(context.event(own_tags, values, Vec::new()));
    }
    for d in &n.delete {
        let (key, own_tags) = context.key_and_tags(Some(d));
        events.push(context.event(own_tags, BTreeMap::new(), vec![key]));
    }
    events
}

/// What every event of one notification shares, computed once.
struct Context<'a> {
    name: &'a str,
    timestamp: i64,
    /// The prefix's key-less path, trailing `/` trimmed.
    prefix_key: String,
    prefix_tags: BTreeMap<String, String>,
    meta_tags: Vec<(&'a str, &'a str)>,
    /// Prefix tags plus meta tags: the tags of every event whose own path
    /// has no keys (the common case).
    shared_tags: BTreeMap<String, String>,
}

impl<'a> Context<'a> {
    fn new(n: &Notification, meta: &'a EventMeta) -> Self {
        Self::of(n.prefix.as_ref(), n.timestamp, meta)
    }

    /// The context of a notification with `prefix` and `timestamp`.
    fn of(prefix: Option<&Path>, timestamp: i64, meta: &'a EventMeta) -> Self {
        let (mut prefix_key, prefix_tags) = match prefix {
            Some(p) => {
                let elems = elems_of(p);
                let mut key = String::with_capacity(keyless_len(&p.origin, &elems));
                push_without_keys(&mut key, &p.origin, elem_names(&elems));
                (key, key_tags(elem_keys(&elems), &p.target))
            }
            None => (String::new(), Vec::new()),
        };
        prefix_key.truncate(prefix_key.trim_end_matches('/').len());
        let prefix_tags: BTreeMap<String, String> = prefix_tags.into_iter().collect();
        let meta_tags = meta.tag_pairs();
        let mut shared_tags = prefix_tags.clone();
        add_meta_tags(&mut shared_tags, &meta_tags);
        Context {
            name: meta.event_name(),
            timestamp,
            prefix_key,
            prefix_tags,
            meta_tags,
            shared_tags,
        }
    }

    fn event(
        &self,
        own_tags: Option<BTreeMap<String, String>>,
        values: BTreeMap<String, Json>,
        deletes: Vec<String>,
    ) -> Event {
        Event {
            name: self.name.to_owned(),
            timestamp: self.timestamp,
            tags: own_tags.unwrap_or_else(|| self.shared_tags.clone()),
            values,
            deletes,
        }
    }

    /// Value key and tags for an update or delete at `path`; `None` tags
    /// means "exactly `shared_tags`".
    fn key_and_tags(&self, path: Option<&Path>) -> (String, Option<BTreeMap<String, String>>) {
        let Some(path) = path else {
            return (self.value_key(None, &[]), None);
        };
        let elems = elems_of(path);
        let key = self.value_key(Some(path), &elems);
        let (tags, _) = self.tags_with(&key, key_tags(elem_keys(&elems), &path.target));
        (key, tags)
    }

    /// The tags of a value at `key` whose path gives `own_tags` (see [`key_tags`]): the
    /// prefix's, the path's (one clashing with a prefix tag of another value renamed
    /// `<key>_<tag>`), then the meta tags; `None` when the path gives none (then they are
    /// `shared_tags`). Also whether a tag was renamed (then the tags belong to `key` alone).
    fn tags_with(
        &self,
        key: &str,
        own_tags: Vec<(String, String)>,
    ) -> (Option<BTreeMap<String, String>>, bool) {
        if own_tags.is_empty() {
            return (None, false);
        }
        let mut tags = self.prefix_tags.clone();
        let mut renamed = false;
        for (tag, v) in own_tags {
            match tags.get(&tag) {
                Some(existing) if *existing == v => {}
                Some(_) => {
                    renamed = true;
                    tags.insert(format!("{key}_{tag}"), v);
                }
                None => {
                    tags.insert(tag, v);
                }
            }
        }
        add_meta_tags(&mut tags, &self.meta_tags);
        (Some(tags), renamed)
    }
}

impl Context<'_> {
    /// The value key of an update at `path` (whose elements are `elems`): the prefix's
    /// key-less path, `/`, the path's own without leading slashes.
    fn value_key(&self, path: Option<&Path>, elems: &[PathElem]) -> String {
        let Some(path) = path else {
            let mut key = String::with_capacity(self.prefix_key.len() + 1);
            self.push_value_key(&mut key, "", std::iter::empty());
            return key;
        };
        let mut key =
            String::with_capacity(self.prefix_key.len() + 1 + keyless_len(&path.origin, elems));
        self.push_value_key(&mut key, &path.origin, elem_names(elems));
        key
    }

    /// Appends [`Self::value_key`] of a path with `origin` and element `names` to `out`.
    fn push_value_key<'e>(
        &self,
        out: &mut String,
        origin: &str,
        names: impl Iterator<Item = &'e str>,
    ) {
        out.push_str(&self.prefix_key);
        out.push('/');
        let own_start = out.len();
        push_without_keys(out, origin, names);
        let leading_slashes = out[own_start..].bytes().take_while(|b| *b == b'/').count();
        out.drain(own_start..own_start + leading_slashes);
    }
}

/// The keys of path elements as `(element name, key, value)`, in order.
fn elem_keys(elems: &[PathElem]) -> impl Iterator<Item = (&str, &str, &str)> {
    elems.iter().flat_map(|e| {
        e.key
            .iter()
            .map(move |(k, v)| (e.name.as_str(), k.as_str(), v.as_str()))
    })
}

/// Tags from a path's keys (`(element name, key, value)`, see [`elem_keys`]) and target; a
/// later key's tag replaces an earlier one of the same name.
fn key_tags<'k>(
    keys: impl Iterator<Item = (&'k str, &'k str, &'k str)>,
    target: &str,
) -> Vec<(String, String)> {
    let mut tags: Vec<(String, String)> = Vec::new();
    let mut put = |name: String, value: &str| {
        if let Some(slot) = tags.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value.to_owned();
        } else {
            tags.push((name, value.to_owned()));
        }
    };
    for (elem, k, v) in keys {
        let name = if elem.is_empty() {
            k.to_owned()
        } else {
            let elem = strip_module(elem);
            let mut name = String::with_capacity(elem.len() + 1 + k.len());
            name.push_str(elem);
            name.push('_');
            name.push_str(k);
            name
        };
        put(name, v);
    }
    if !target.is_empty() {
        put(TAG_TARGET.to_owned(), target);
    }
    tags
}

fn add_meta_tags(tags: &mut BTreeMap<String, String>, meta: &[(&str, &str)]) {
    for (k, v) in meta {
        if tags.contains_key(*k) {
            tags.insert(format!("meta_{k}"), (*v).to_owned());
        } else {
            tags.insert((*k).to_owned(), (*v).to_owned());
        }
    }
}

/// Adds the value(s) of one update under `key`.
fn insert_values(key: String, v: &TypedValue, out: &mut BTreeMap<String, Json>) {
    let (raw, encoding) = match &v.value {
        None => return,
        Some(typed_value::Value::JsonVal(raw)) => (raw, "JSON"),
        Some(typed_value::Value::JsonIetfVal(raw)) => (raw, "JSON_IETF"),
        Some(_) => {
            out.insert(key, value::to_json(v));
            return;
        }
    };
    match value::parse_json(raw, encoding) {
        Ok(Json::Object(members)) => {
            let mut key = key;
            for (child, child_value) in members {
                let len = key.len();
                key.push('/');
                key.push_str(&child);
                flatten_into(&mut key, child_value, out);
                key.truncate(len);
            }
        }
        Ok(other) => {
            out.insert(key, empty_as_true(other));
        }
        Err(ValueError::EmptyJson { .. }) => {}
        Err(ValueError::InvalidJson { .. }) => {
            out.insert(key, Json::String(String::from_utf8_lossy(raw).into_owned()));
        }
    }
}

/// True for JSON `[null]`, RFC 7951's encoding of YANG `empty`.
fn is_null_singleton(items: &[Json]) -> bool {
    matches!(items, [Json::Null])
}

/// Flattens a value below an object member: objects by `/child`, arrays by
/// `.index`; `null` and `[null]` become `true`.
fn flatten_into(key: &mut String, v: Json, out: &mut BTreeMap<String, Json>) {
    match v {
        Json::Null => {
            out.insert(key.clone(), Json::Bool(true));
        }
        Json::Array(items) if is_null_singleton(&items) => {
            out.insert(key.clone(), Json::Bool(true));
        }
        Json::Array(items) => {
            for (i, item) in items.into_iter().enumerate() {
                let len = key.len();
                let _ = write!(key, ".{i}");
                flatten_into(key, item, out);
                key.truncate(len);
            }
        }
        Json::Object(members) => {
            for (child, child_value) in members {
                let len = key.len();
                key.push('/');
                key.push_str(&child);
                flatten_into(key, child_value, out);
                key.truncate(len);
            }
        }
        scalar => {
            out.insert(key.clone(), scalar);
        }
    }
}

/// `null` and `[null]` → `true`, recursively (for values kept whole).
fn empty_as_true(v: Json) -> Json {
    match v {
        Json::Null => Json::Bool(true),
        Json::Array(items) if is_null_singleton(&items) => Json::Bool(true),
        Json::Array(items) => Json::Array(items.into_iter().map(empty_as_true).collect()),
        Json::Object(members) => Json::Object(
            members
                .into_iter()
                .map(|(k, v)| (k, empty_as_true(v)))
                .collect(),
        ),
        scalar => scalar,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::parse_path;
    use crate::proto::gnmi::{Decimal64, Update};
    use prost::Message;
    use serde_json::json;
    use typed_value::Value as V;

    fn p(s: &str) -> Path {
        parse_path(s).unwrap()
    }

    fn upd(path: &str, v: V) -> Update {
        Update {
            path: Some(p(path)),
            val: Some(TypedValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn notif(prefix: Option<Path>, updates: Vec<Update>, deletes: Vec<Path>) -> Notification {
        Notification {
            timestamp: 42,
            prefix,
            update: updates,
            delete: deletes,
            atomic: false,
        }
    }

    fn meta() -> EventMeta {
        EventMeta::new("r1:57400", "sub")
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_events_are_notification_to_events_without_the_maps() {
        let mut with_target = p("/interfaces/interface[name=e1]/state");
        with_target.target = "dev1".into();
        let mut origin = p("/system/state");
        origin.origin = "openconfig".into();
        let mut meta_with_extras = meta();
        meta_with_extras
            .extra_tags
            .insert("source".into(), "ignored".into());
        meta_with_extras
            .extra_tags
            .insert("site".into(), "dc1".into());
        let plain = [
            notif(
                Some(p("/interfaces/interface[name=e1]/state/counters")),
                vec![
                    upd("in-octets", V::UintVal(u64::MAX)),
                    upd("/out-octets", V::IntVal(-3)),
                    upd("oper", V::StringVal("UP".into())),
                    upd("enabled", V::BoolVal(true)),
                    upd("a/b", V::AsciiVal("x".into())),
                ],
                vec![],
            ),
            notif(
                Some(with_target),
                vec![upd("counters/x", V::UintVal(1))],
                vec![],
            ),
            notif(
                Some(origin),
                vec![upd("hostname", V::StringVal("h".into()))],
                vec![],
            ),
            notif(None, vec![upd("/a/b/c", V::UintVal(7))], vec![]),
            notif(
                Some(p("/a")),
                vec![Update {
                    path: None,
                    val: Some(TypedValue {
                        value: Some(V::UintVal(2)),
                    }),
                    ..Default::default()
                }],
                vec![],
            ),
            notif(Some(p("/a")), vec![], vec![]),
            // Keys on the updates' paths: each interface's counters share one tag set.
            notif(
                None,
                [
                    ("interface[name=e1]/state/counters/in", 1),
                    ("interface[name=e1]/state/counters/out", 2),
                    ("interface[name=e2]/state/counters/in", 3),
                    ("", 0),
                    ("interface[name=e2]/state/counters/out", 4),
                    ("interface[name=e1]/state/counters/in", 5),
                    (
                        "interface[name=e1]/subinterfaces/subinterface[index=0]/x",
                        6,
                    ),
                ]
                .map(|(path, n)| match path {
                    "" => upd("/system/state/hostname", V::StringVal("h".into())),
                    _ => upd(&format!("/interfaces/{path}"), V::UintVal(n)),
                })
                .to_vec(),
                vec![],
            ),
            // A path key clashing with a prefix key of another value is renamed after each
            // update's value key: no tag set is shared then.
            notif(
                Some(p("/interfaces/interface[name=e1]")),
                vec![
                    upd("/x/interface[name=e2]/a", V::UintVal(1)),
                    upd("/x/interface[name=e2]/b", V::UintVal(2)),
                    upd("/x/interface[name=e1]/c", V::UintVal(3)),
                    upd("/y[k=1]/d", V::UintVal(4)),
                ],
                vec![],
            ),
            // A target on an update's path is a tag of its own.
            notif(
                None,
                vec![
                    Update {
                        path: Some(Path {
                            target: "t".into(),
                            ..p("/a")
                        }),
                        val: Some(TypedValue {
                            value: Some(V::UintVal(1)),
                        }),
                        ..Default::default()
                    },
                    upd("/b", V::UintVal(2)),
                ],
                vec![],
            ),
        ];
        for meta in [meta(), meta_with_extras, EventMeta::new("r1", "")] {
            for n in &plain {
                let got = plain_events(n, &meta).unwrap_or_else(|| panic!("{n:?}"));
                let want = notification_to_events(n, &meta);
                assert_eq!(got.events(), want, "{n:?}");
                // Read straight from the wire: the same events in the same tag sets.
                let encoded = SubscribeResponse {
                    response: Some(Response::Update(n.clone())),
                    ..Default::default()
                }
                .encode_to_vec();
                let wire =
                    plain_events_from_wire(&encoded, &meta).unwrap_or_else(|| panic!("{n:?}"));
                assert_eq!(wire.events(), want, "{n:?}");
                assert_eq!(wire.tag_sets, got.tag_sets, "{n:?}");
                for tags in &got.tag_sets {
                    assert!(tags.is_sorted(), "{tags:?}");
                }
            }
        }
        // Tag sets are shared by consecutive updates under the same keys, not rebuilt.
        let plain_meta = meta();
        let shared = plain_events(&plain[6], &plain_meta).unwrap();
        let sets: Vec<usize> = shared.entries().iter().map(|e| e.tag_set).collect();
        assert_eq!(sets, [1, 1, 2, 0, 2, 3, 4]);
        let renamed = plain_events(&plain[7], &plain_meta).unwrap();
        let sets: Vec<usize> = renamed.entries().iter().map(|e| e.tag_set).collect();
        assert_eq!(sets, [1, 2, 3, 4]);
        // Anything else takes the general conversion.
        let not_plain = [
            notif(None, vec![upd("/a", V::DoubleVal(1.5))], vec![]),
            notif(None, vec![upd("/a", V::JsonVal(b"{}".to_vec()))], vec![]),
            notif(None, vec![upd("/a", V::UintVal(1))], vec![p("/b")]),
        ];
        for n in &not_plain {
            assert!(plain_events(n, &meta()).is_none(), "{n:?}");
            let encoded = SubscribeResponse {
                response: Some(Response::Update(n.clone())),
                ..Default::default()
            }
            .encode_to_vec();
            assert!(plain_events_from_wire(&encoded, &meta()).is_none(), "{n:?}");
        }
    }

    #[test]
    fn prefix_and_path_keys_become_tags_and_value_key_is_keyless() {
        let n = notif(
            Some(p("/interfaces/interface[name=e1]")),
            vec![upd(
                "/subinterfaces/subinterface[index=0]/state/counters/in-octets",
                V::UintVal(7),
            )],
            vec![],
        );
        let ev = notification_to_events(&n, &meta());
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].name, "sub");
        assert_eq!(ev[0].timestamp, 42);
        assert_eq!(
            ev[0].tags,
            tags(&[
                ("interface_name", "e1"),
                ("subinterface_index", "0"),
                ("source", "r1:57400"),
                ("subscription-name", "sub"),
            ])
        );
        assert_eq!(
            ev[0].values,
            BTreeMap::from([(
                "/interfaces/interface/subinterfaces/subinterface/state/counters/in-octets"
                    .to_string(),
                json!(7)
            )])
        );
    }

    #[test]
    fn module_prefix_is_stripped_from_tag_names_only() {
        let n = notif(
            None,
            vec![upd(
                "/srl_nokia-interfaces:interface[name=ethernet-1/1]/statistics/in-octets",
                V::UintVal(1),
            )],
            vec![],
        );
        let ev = &notification_to_events(&n, &meta())[0];
        assert_eq!(ev.tags["interface_name"], "ethernet-1/1");
        assert!(ev
            .values
            .contains_key("/srl_nokia-interfaces:interface/statistics/in-octets"));
    }

    #[test]
    fn origin_and_targets() {
        let mut prefix = p("openconfig:/interfaces/interface[name=e1]");
        prefix.target = "dev1".into();
        let n = notif(
            Some(prefix),
            vec![upd("state/oper-status", V::StringVal("UP".into()))],
            vec![],
        );
        let mut m = meta();
        m.subscription_target = Some("dev-sub".into());
        let ev = &notification_to_events(&n, &m)[0];
        assert_eq!(ev.tags["target"], "dev1");
        assert_eq!(ev.tags["subscription-target"], "dev-sub");
        assert_eq!(
            ev.values["openconfig:/interfaces/interface/state/oper-status"],
            json!("UP")
        );
    }

    #[test]
    fn no_prefix_and_origin_only_paths() {
        let n = notif(
            None,
            vec![upd("/system/state/hostname", V::StringVal("r1".into()))],
            vec![],
        );
        let ev = &notification_to_events(&n, &meta())[0];
        assert!(ev.values.contains_key("/system/state/hostname"));
        let n = notif(Some(p("oc:")), vec![upd("/a", V::IntVal(1))], vec![]);
        assert!(notification_to_events(&n, &meta())[0]
            .values
            .contains_key("oc:/a"));
        // An update without a path sits at the prefix.
        let n = notif(
            Some(p("/a/b")),
            vec![Update {
                val: Some(TypedValue {
                    value: Some(V::IntVal(1)),
                }),
                ..Default::default()
            }],
            vec![],
        );
        assert!(notification_to_events(&n, &meta())[0]
            .values
            .contains_key("/a/b/"));
    }

    #[test]
    fn differing_key_tag_is_stored_under_full_path() {
        let n = notif(
            Some(p("/a[name=x]")),
            vec![
                upd("/b/a[name=y]/c", V::IntVal(1)),
                upd("/b/a[name=x]/d", V::IntVal(2)),
            ],
            vec![],
        );
        let ev = notification_to_events(&n, &meta());
        assert_eq!(ev[0].tags["a_name"], "x");
        assert_eq!(ev[0].tags["/a/b/a/c_a_name"], "y");
        // Same value: no extra tag.
        assert_eq!(ev[1].tags.len(), 3);
        assert_eq!(ev[1].tags["a_name"], "x");
    }

    #[test]
    fn later_element_wins_within_one_path_and_unnamed_keys_are_bare() {
        let path = with_bare_key(p("/x[k=1]/y/x[k=2]"), "bare", "v");
        let n = notif(
            None,
            vec![Update {
                path: Some(path),
                val: Some(TypedValue {
                    value: Some(V::BoolVal(true)),
                }),
                ..Default::default()
            }],
            vec![],
        );
        let ev = &notification_to_events(&n, &meta())[0];
        assert_eq!(ev.tags["x_k"], "2");
        assert_eq!(ev.tags["bare"], "v");
        assert!(ev.values.contains_key("/x/y/x"));
    }

    #[test]
    fn meta_tags_collide_into_meta_prefix() {
        let mut path = p("/a");
        path.elem[0].key.insert("k".into(), "v".into());
        let n = notif(
            None,
            vec![Update {
                path: Some(with_bare_key(path, "source", "from-path")),
                val: Some(TypedValue {
                    value: Some(V::IntVal(1)),
                }),
                ..Default::default()
            }],
            vec![],
        );
        let mut m = meta();
        m.extra_tags = tags(&[("site", "lab"), ("format", "event"), ("source", "ignored")]);
        let ev = &notification_to_events(&n, &m)[0];
        assert_eq!(ev.tags["source"], "from-path");
        assert_eq!(ev.tags["meta_source"], "r1:57400");
        assert_eq!(ev.tags["site"], "lab");
        assert!(!ev.tags.contains_key("format"));
        assert_eq!(ev.tags["a_k"], "v");
    }

    /// Adds an unnamed element carrying one key (its tag is the bare key).
    fn with_bare_key(mut path: Path, k: &str, v: &str) -> Path {
        path.elem.push(PathElem {
            name: String::new(),
            key: [(k.to_string(), v.to_string())].into(),
        });
        path
    }

    #[test]
    fn json_objects_are_flattened_with_arrays_indexed_and_null_true() {
        let json_text = br#"{"counters":{"in-octets":"18446744073709551615","out":12},
            "flags":[{"a":1},{"a":null}],"empty-leaf":[null],"nothing":null,"e":{},"list":["x","y"]}"#;
        let n = notif(
            Some(p("/interfaces/interface[name=e1]")),
            vec![upd("/state", V::JsonIetfVal(json_text.to_vec()))],
            vec![],
        );
        let ev = &notification_to_events(&n, &meta())[0];
        let expected: BTreeMap<String, Json> = [
            (
                "/interfaces/interface/state/counters/in-octets",
                json!("18446744073709551615"),
            ),
            ("/interfaces/interface/state/counters/out", json!(12)),
            ("/interfaces/interface/state/flags.0/a", json!(1)),
            ("/interfaces/interface/state/flags.1/a", json!(true)),
            ("/interfaces/interface/state/empty-leaf", json!(true)),
            ("/interfaces/interface/state/nothing", json!(true)),
            ("/interfaces/interface/state/list.0", json!("x")),
            ("/interfaces/interface/state/list.1", json!("y")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(ev.values, expected);
    }

    #[test]
    fn empty_update_path_keeps_gnmic_double_slash() {
        // gnmic joins prefix + "/" + "" and the flattener adds "/child".
        let n = notif(
            Some(p("/system")),
            vec![upd("/", V::JsonVal(br#"{"hostname":"r1"}"#.to_vec()))],
            vec![],
        );
        let ev = &notification_to_events(&n, &meta())[0];
        assert_eq!(ev.values["/system//hostname"], json!("r1"));
    }

    #[test]
    fn non_object_json_stays_whole_under_the_key() {
        let cases: [(&[u8], Json); 5] = [
            (b"[1,null,[null]]", json!([1, true, true])),
            (b"[null]", json!(true)),
            (b"null", json!(true)),
            (b"\"up\"", json!("up")),
            (b"12345678901234567890", json!(12345678901234567890u64)),
        ];
        for (raw, expected) in cases {
            let n = notif(None, vec![upd("/a/b", V::JsonVal(raw.to_vec()))], vec![]);
            let ev = &notification_to_events(&n, &meta())[0];
            assert_eq!(
                ev.values["/a/b"],
                expected,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn bad_or_empty_json_and_valueless_updates() {
        let n = notif(
            None,
            vec![
                upd("/bad", V::JsonVal(b"{oops".to_vec())),
                upd("/empty", V::JsonIetfVal(Vec::new())),
                Update {
                    path: Some(p("/none")),
                    ..Default::default()
                },
                Update {
                    path: Some(p("/novalue")),
                    val: Some(TypedValue::default()),
                    ..Default::default()
                },
            ],
            vec![],
        );
        let ev = notification_to_events(&n, &meta());
        assert_eq!(ev.len(), 4, "one event per update, even without values");
        assert_eq!(ev[0].values["/bad"], json!("{oops"));
        assert!(ev[1].values.is_empty());
        assert!(ev[2].values.is_empty());
        assert!(ev[3].values.is_empty());
    }

    #[test]
    #[allow(deprecated)]
    fn scalar_kinds() {
        let n = notif(
            None,
            vec![
                upd(
                    "/d",
                    V::DecimalVal(Decimal64 {
                        digits: 125,
                        precision: 2,
                    }),
                ),
                upd("/b", V::BytesVal(vec![1, 2])),
                upd("/i", V::IntVal(-9_000_000_000_000_000_000)),
            ],
            vec![],
        );
        let ev = notification_to_events(&n, &meta());
        assert_eq!(ev[0].values["/d"], json!(1.25));
        assert_eq!(ev[1].values["/b"], json!("AQI="));
        assert_eq!(ev[2].values["/i"], json!(-9_000_000_000_000_000_000i64));
    }

    #[test]
    fn each_delete_is_its_own_event_after_the_updates() {
        let n = notif(
            Some(p("/interfaces/interface[name=e1]")),
            vec![upd("/state/mtu", V::UintVal(1500))],
            vec![
                p("/subinterfaces/subinterface[index=3]"),
                p("/state/description"),
            ],
        );
        let ev = notification_to_events(&n, &meta());
        assert_eq!(ev.len(), 3);
        assert_eq!(
            ev[1].deletes,
            vec!["/interfaces/interface/subinterfaces/subinterface".to_string()]
        );
        assert!(ev[1].values.is_empty());
        assert_eq!(ev[1].tags["subinterface_index"], "3");
        assert_eq!(ev[1].tags["interface_name"], "e1");
        assert_eq!(ev[1].tags["subscription-name"], "sub");
        assert_eq!(
            ev[2].deletes,
            vec!["/interfaces/interface/state/description".to_string()]
        );
    }

    #[test]
    fn sync_response_and_nameless_subscription() {
        let sync = SubscribeResponse {
            response: Some(Response::SyncResponse(true)),
            ..Default::default()
        };
        assert!(response_to_events(&sync, &meta()).is_empty());
        assert!(response_to_events(&SubscribeResponse::default(), &meta()).is_empty());
        let n = notif(None, vec![upd("/a", V::IntVal(1))], vec![]);
        let resp = SubscribeResponse {
            response: Some(Response::Update(n)),
            ..Default::default()
        };
        let ev = response_to_events(&resp, &EventMeta::new("r1", ""));
        assert_eq!(ev[0].name, "default");
        assert_eq!(ev[0].tags, tags(&[("source", "r1")]));
    }
}
