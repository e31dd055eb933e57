//! The events of a notification in the shape most telemetry has — every update an integer,
//! boolean or string, nothing deleted — without a map per event: the tag sets the events
//! share, and one `(value key, value, tag set)` per update with the value keys written back
//! to back into one string.
//!
//! Two producers give the same [`PlainEvents`]: [`plain_events`] from a decoded
//! `Notification`, and [`plain_events_from_wire`] straight from an encoded
//! `SubscribeResponse`. Why the second: decoding a response into prost's types costs a
//! `String` per path element name, key and value and a `HashMap` per keyed element — about
//! a dozen allocations per update, most of the exporter's work on a NATS message — and the
//! plain conversion then reads only borrowed strings from them. Reading the wire directly
//! borrows every string from the message and keeps one scratch path per notification.
//! What it costs: a second reader of the gNMI wire format, kept exact by refusing (`None`:
//! the caller decodes with prost) everything whose prost reading is not the plain one —
//! repeated singular messages (prost merges them), legacy `element` paths, the deprecated
//! `Update.value`, deletes, extensions, other value kinds, invalid UTF-8, malformed bytes.
//! Tests and the `nats_message` fuzz target hold the two producers to the same events.

use std::ops::Range;

use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
use prost::Message;

use super::{elem_keys, elems_of, key_tags, value, Context, Event, EventMeta};
use crate::path::elem_names;
use crate::proto::gnmi::{typed_value, Notification, Path, TypedValue};

/// A value the plain shape carries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PlainValue<'n> {
    Int(i64),
    Uint(u64),
    Bool(bool),
    /// A `string_val` or `ascii_val`.
    Text(&'n str),
    /// A number of gnmic's event JSON (read as a float there); the gNMI readers never
    /// give one (they leave float and double updates to the general conversion).
    Float(f64),
}

impl<'n> PlainValue<'n> {
    fn of(value: &'n typed_value::Value) -> Option<Self> {
        use typed_value::Value as V;
        match value {
            V::IntVal(i) => Some(Self::Int(*i)),
            V::UintVal(u) => Some(Self::Uint(*u)),
            V::BoolVal(b) => Some(Self::Bool(*b)),
            V::StringVal(s) | V::AsciiVal(s) => Some(Self::Text(s)),
            _ => None,
        }
    }

    fn to_typed(self) -> typed_value::Value {
        use typed_value::Value as V;
        match self {
            Self::Int(i) => V::IntVal(i),
            Self::Uint(u) => V::UintVal(u),
            Self::Bool(b) => V::BoolVal(b),
            Self::Text(s) => V::StringVal(s.to_owned()),
            Self::Float(f) => V::DoubleVal(f),
        }
    }
}

/// One update of [`PlainEvents`]: the event `{name, timestamp, tags: tag_sets[tag_set],
/// values: {key: value}}`.
#[derive(Debug)]
pub struct PlainEntry<'n> {
    key: Range<usize>,
    pub value: PlainValue<'n>,
    /// An index into [`PlainEvents::tag_sets`].
    pub tag_set: usize,
}

impl PlainEntry<'_> {
    /// Where the entry's value key ends in [`PlainEvents::keys_text`] (keys are back to
    /// back: it starts where the previous entry's ends).
    pub fn key_end(&self) -> usize {
        self.key.end
    }
}

/// The events of a plain notification; updates under the same keyed path elements (the
/// counters of one interface) share one tag set.
#[derive(Debug)]
pub struct PlainEvents<'n> {
    pub name: &'n str,
    pub timestamp: i64,
    /// The distinct tag sets of the events, each sorted by name; the first is the tags of
    /// every event whose path has no keys and no target.
    pub tag_sets: Vec<Vec<(String, String)>>,
    /// The value keys, back to back.
    keys: String,
    entries: Vec<PlainEntry<'n>>,
}

impl<'n> PlainEvents<'n> {
    /// One entry per update, in update order.
    pub fn entries(&self) -> &[PlainEntry<'n>] {
        &self.entries
    }

    /// The value key of `entry`.
    pub fn key(&self, entry: &PlainEntry<'_>) -> &str {
        self.keys.get(entry.key.clone()).unwrap_or_default()
    }

    /// Every entry's value key, back to back in entry order (each ends where
    /// [`PlainEntry::key_end`] says): with the tag sets and the entries' sets, what makes
    /// two notifications' events the same series.
    pub fn keys_text(&self) -> &str {
        &self.keys
    }

    /// Plain events assembled by a reader of another encoding (the exporter's event JSON):
    /// every event named `name` at `timestamp`, with tag sets and entries added by
    /// [`Self::push_tag_set`] and [`Self::push_entry`].
    pub fn assembled(name: &'n str, timestamp: i64, entries: usize) -> Self {
        PlainEvents {
            name,
            timestamp,
            tag_sets: Vec::new(),
            keys: String::with_capacity(entries * 48),
            entries: Vec::with_capacity(entries),
        }
    }

    /// Adds a tag set (sorted by name, as every event's tags are); returns its index.
    pub fn push_tag_set(&mut self, tags: Vec<(String, String)>) -> usize {
        self.tag_sets.push(tags);
        self.tag_sets.len() - 1
    }

    /// Adds an entry: the event `{values: {key: value}}` with the tags of `tag_set`;
    /// `false`, adding nothing, when there is no such set.
    pub fn push_entry(&mut self, key: &str, value: PlainValue<'n>, tag_set: usize) -> bool {
        if tag_set >= self.tag_sets.len() {
            return false;
        }
        let start = self.keys.len();
        self.keys.push_str(key);
        self.entries.push(PlainEntry {
            key: start..self.keys.len(),
            value,
            tag_set,
        });
        true
    }

    /// The events these stand for (what `notification_to_events` gives): for checks, the
    /// readers of plain events never build them.
    pub fn events(&self) -> Vec<Event> {
        self.entries
            .iter()
            .map(|entry| Event {
                name: self.name.to_string(),
                timestamp: self.timestamp,
                tags: self.tag_sets[entry.tag_set].iter().cloned().collect(),
                values: [(
                    self.key(entry).to_owned(),
                    value::to_json(&TypedValue {
                        value: Some(entry.value.to_typed()),
                    }),
                )]
                .into(),
                deletes: Vec::new(),
            })
            .collect()
    }
}

/// Builds [`PlainEvents`] update by update.
struct Builder<'n> {
    context: Context<'n>,
    tag_sets: Vec<Vec<(String, String)>>,
    keys: String,
    entries: Vec<PlainEntry<'n>>,
}

impl<'n> Builder<'n> {
    fn new(context: Context<'n>, updates: usize) -> Self {
        let tag_sets = vec![context.shared_tags.clone().into_iter().collect()];
        Builder {
            context,
            tag_sets,
            keys: String::with_capacity(updates * 48),
            entries: Vec::with_capacity(updates),
        }
    }

    /// Appends the value key of a path with `origin` and element `names`; returns where.
    fn push_key<'e>(&mut self, origin: &str, names: impl Iterator<Item = &'e str>) -> Range<usize> {
        let start = self.keys.len();
        self.context.push_value_key(&mut self.keys, origin, names);
        start..self.keys.len()
    }

    /// Adds an update at a path with `origin` and element `names` whose tags are
    /// `tag_set`'s.
    fn push<'e>(
        &mut self,
        value: PlainValue<'n>,
        origin: &str,
        names: impl Iterator<Item = &'e str>,
        tag_set: usize,
    ) {
        let key = self.push_key(origin, names);
        self.entries.push(PlainEntry {
            key,
            value,
            tag_set,
        });
    }

    /// Adds an update whose path gives `own_tags`, with a tag set of its own; returns the
    /// set and whether a tag was renamed after the value key (then no other update may
    /// share the set).
    fn push_tagged<'e>(
        &mut self,
        value: PlainValue<'n>,
        origin: &str,
        names: impl Iterator<Item = &'e str>,
        own_tags: Vec<(String, String)>,
    ) -> (usize, bool) {
        let key = self.push_key(origin, names);
        let (tags, renamed) = self.context.tags_with(&self.keys[key.clone()], own_tags);
        let tag_set = match tags {
            Some(tags) => {
                self.tag_sets.push(tags.into_iter().collect());
                self.tag_sets.len() - 1
            }
            None => 0,
        };
        self.entries.push(PlainEntry {
            key,
            value,
            tag_set,
        });
        (tag_set, renamed)
    }

    fn finish(self) -> PlainEvents<'n> {
        PlainEvents {
            name: self.context.name,
            timestamp: self.context.timestamp,
            tag_sets: self.tag_sets,
            keys: self.keys,
            entries: self.entries,
        }
    }
}

/// `notification_to_events` of `n` as [`PlainEvents`] when every update carries an int,
/// uint, bool or string value and nothing is deleted; `None` otherwise (the caller then
/// takes `notification_to_events`).
pub fn plain_events<'n>(n: &'n Notification, meta: &'n EventMeta) -> Option<PlainEvents<'n>> {
    if !n.delete.is_empty() {
        return None;
    }
    let mut builder = Builder::new(Context::new(n, meta), n.update.len());
    // The last update with tags of its own, when they may be shared (nothing renamed).
    let mut previous: Option<(&'n Path, usize)> = None;
    for u in &n.update {
        let value = PlainValue::of(u.val.as_ref()?.value.as_ref()?)?;
        let Some(path) = u.path.as_ref() else {
            builder.push(value, "", std::iter::empty(), 0);
            continue;
        };
        let elems = elems_of(path);
        let names = elem_names(&elems);
        if path.target.is_empty() && elems.iter().all(|e| e.key.is_empty()) {
            builder.push(value, &path.origin, names, 0);
            continue;
        }
        if let Some((_, set)) = previous.filter(|(before, _)| same_key_tags(before, path)) {
            builder.push(value, &path.origin, names, set);
            continue;
        }
        let own_tags = key_tags(elem_keys(&elems), &path.target);
        let (set, renamed) = builder.push_tagged(value, &path.origin, names, own_tags);
        previous = (!renamed).then_some((path, set));
    }
    Some(builder.finish())
}

/// Whether two paths give the same tags from their keys and target: the same target and
/// the same keyed elements in the same order.
fn same_key_tags(a: &Path, b: &Path) -> bool {
    let (a_elems, b_elems) = (elems_of(a), elems_of(b));
    let keyed = |e: &&crate::proto::gnmi::PathElem| !e.key.is_empty();
    a.target == b.target
        && a_elems
            .iter()
            .filter(keyed)
            .eq(b_elems.iter().filter(keyed))
}

/// [`plain_events`] of the notification in `response`, an encoded `SubscribeResponse`,
/// read without decoding it into gNMI types; `None` when it is not a plain notification or
/// not one this reader takes (see the module doc): decoding it then tells which.
pub fn plain_events_from_wire<'n>(
    response: &'n [u8],
    meta: &'n EventMeta,
) -> Option<PlainEvents<'n>> {
    let mut notification = None;
    for field in Fields(response) {
        match field? {
            (1, Field::Bytes(bytes)) if notification.is_none() => notification = Some(bytes),
            // A second notification (prost merges them), a sync response or error (the
            // response is not an update then), extensions.
            (1 | 3 | 4 | 5, _) => return None,
            _ => {}
        }
    }
    let notification = notification?;
    // The prefix and timestamp may follow the updates on the wire.
    let (mut timestamp, mut prefix, mut updates) = (0, None, 0);
    for field in Fields(notification) {
        match field? {
            (1, Field::Varint(v)) => timestamp = v as i64,
            (2, Field::Bytes(bytes)) if prefix.is_none() => {
                prefix = Some(Path::decode(bytes).ok()?)
            }
            (4, Field::Bytes(_)) => updates += 1,
            (6, Field::Varint(_)) => {}
            (1 | 2 | 4 | 5 | 6, _) => return None,
            _ => {}
        }
    }
    let mut builder = Builder::new(Context::of(prefix.as_ref(), timestamp, meta), updates);
    let (mut path, mut previous) = (WirePath::default(), WirePath::default());
    // The tag set of `previous`, when it may be shared (nothing renamed).
    let mut previous_set = None;
    for field in Fields(notification) {
        let (4, Field::Bytes(update)) = field? else {
            continue;
        };
        let (has_path, value) = read_update(update, &mut path)?;
        let names = path.names.iter().copied();
        if !has_path {
            builder.push(value, "", std::iter::empty(), 0);
        } else if path.target.is_none() && path.keyed.is_empty() {
            builder.push(value, path.origin, names, 0);
        } else if let Some(set) = previous_set.filter(|_| path.same_key_tags(&previous)) {
            builder.push(value, path.origin, names, set);
        } else {
            let own_tags = key_tags(path.keys()?.into_iter(), path.target.unwrap_or_default());
            let (set, renamed) = builder.push_tagged(value, path.origin, names, own_tags);
            previous_set = (!renamed).then_some(set);
            std::mem::swap(&mut path, &mut previous);
        }
    }
    Some(builder.finish())
}

/// An update's path as read from the wire, its strings borrowed from the message.
#[derive(Default)]
struct WirePath<'n> {
    origin: &'n str,
    /// `None` when empty. Why not `""`: comparing two empty strings calls `memcmp` with
    /// their dangling pointers, and glibc's vectorised `memcmp` then loads through them
    /// under an empty mask, which costs the CPU a slow assist every time (measured: an
    /// eighth of the exporter's time per message went to comparing empty targets).
    target: Option<&'n str>,
    names: Vec<&'n str>,
    /// The encoded elements that have keys, with their names: their keys are read only when
    /// the tags are built (most updates share the previous update's).
    keyed: Vec<(&'n str, &'n [u8])>,
}

impl<'n> WirePath<'n> {
    /// Whether both give the same tags from their keys and target (the same encoded keyed
    /// elements: keys written in another order make a tag set of their own, with the same
    /// tags).
    fn same_key_tags(&self, other: &Self) -> bool {
        self.target == other.target && self.keyed == other.keyed
    }

    /// The keys as `(element name, key, value)`, in wire order; `None` for invalid UTF-8.
    fn keys(&self) -> Option<Vec<(&'n str, &'n str, &'n str)>> {
        let mut keys = Vec::with_capacity(self.keyed.len());
        for (name, elem) in &self.keyed {
            for field in Fields(elem) {
                let (2, Field::Bytes(entry)) = field? else {
                    continue;
                };
                let (mut key, mut value) = ("", "");
                for field in Fields(entry) {
                    match field? {
                        (1, Field::Bytes(text)) => key = utf8(text)?,
                        (2, Field::Bytes(text)) => value = utf8(text)?,
                        (1 | 2, _) => return None,
                        _ => {}
                    }
                }
                keys.push((*name, key, value));
            }
        }
        Some(keys)
    }
}

/// Reads an `Update` into `path`; returns whether it has a path, and its value.
fn read_update<'n>(update: &'n [u8], path: &mut WirePath<'n>) -> Option<(bool, PlainValue<'n>)> {
    let (mut path_bytes, mut value) = (None, None);
    for field in Fields(update) {
        match field? {
            (1, Field::Bytes(bytes)) if path_bytes.is_none() => path_bytes = Some(bytes),
            (3, Field::Bytes(bytes)) if value.is_none() => value = Some(read_value(bytes)?),
            (4, Field::Varint(_)) => {}
            // The deprecated `value` too: prost would check its contents.
            (1..=4, _) => return None,
            _ => {}
        }
    }
    path.origin = "";
    path.target = None;
    path.names.clear();
    path.keyed.clear();
    if let Some(bytes) = path_bytes {
        read_path(bytes, path)?;
    }
    Some((path_bytes.is_some(), value?))
}

/// Reads a `TypedValue` that holds a plain value (the last one, as prost keeps).
fn read_value(bytes: &[u8]) -> Option<PlainValue<'_>> {
    let mut value = None;
    for field in Fields(bytes) {
        value = Some(match field? {
            (1 | 12, Field::Bytes(text)) => PlainValue::Text(utf8(text)?),
            (2, Field::Varint(v)) => PlainValue::Int(v as i64),
            (3, Field::Varint(v)) => PlainValue::Uint(v),
            (4, Field::Varint(v)) => PlainValue::Bool(v != 0),
            (1..=14, _) => return None,
            _ => continue,
        });
    }
    value
}

fn read_path<'n>(bytes: &'n [u8], path: &mut WirePath<'n>) -> Option<()> {
    for field in Fields(bytes) {
        match field? {
            (2, Field::Bytes(origin)) => path.origin = utf8(origin)?,
            (3, Field::Bytes(elem)) => read_elem(elem, path)?,
            (4, Field::Bytes(target)) => {
                path.target = Some(utf8(target)?).filter(|t| !t.is_empty())
            }
            // Legacy `element` strings (read by prost's types) and wrong wire types.
            (1..=4, _) => return None,
            _ => {}
        }
    }
    Some(())
}

/// Reads a `PathElem`'s name (the last, as prost keeps) and whether it has keys.
fn read_elem<'n>(bytes: &'n [u8], path: &mut WirePath<'n>) -> Option<()> {
    let (mut name, mut has_keys) = ("", false);
    for field in Fields(bytes) {
        match field? {
            (1, Field::Bytes(text)) => name = utf8(text)?,
            (2, Field::Bytes(_)) => has_keys = true,
            (1 | 2, _) => return None,
            _ => {}
        }
    }
    if has_keys {
        path.keyed.push((name, bytes));
    }
    path.names.push(name);
    Some(())
}

fn utf8(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// A field's payload as the reader needs it.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// Fixed-width and group fields, skipped.
    Other,
}

/// The fields of an encoded message in wire order; `None` for malformed bytes.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Option<(u32, Field<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        Some(self.read())
    }
}

impl<'a> Fields<'a> {
    fn read(&mut self) -> Option<(u32, Field<'a>)> {
        let malformed = |fields: &mut Self| {
            fields.0 = &[];
            None
        };
        let Ok((number, wire_type)) = decode_key(&mut self.0) else {
            return malformed(self);
        };
        let field = match wire_type {
            WireType::Varint => match decode_varint(&mut self.0) {
                Ok(v) => Field::Varint(v),
                Err(_) => return malformed(self),
            },
            WireType::LengthDelimited => {
                let len = decode_varint(&mut self.0)
                    .ok()
                    .and_then(|len| usize::try_from(len).ok());
                match len.and_then(|len| self.0.split_at_checked(len)) {
                    Some((bytes, rest)) => {
                        self.0 = rest;
                        Field::Bytes(bytes)
                    }
                    None => return malformed(self),
                }
            }
            other => match skip_field(other, number, &mut self.0, DecodeContext::default()) {
                Ok(()) => Field::Other,
                Err(_) => return malformed(self),
            },
        };
        Some((number, field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::parse_path;
    use crate::proto::gnmi::{subscribe_response::Response, SubscribeResponse, Update};
    use prost::encoding::{encode_key, encode_varint};

    fn bytes_field(number: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_key(number, WireType::LengthDelimited, &mut out);
        encode_varint(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }

    fn varint_field(number: u32, value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_key(number, WireType::Varint, &mut out);
        encode_varint(value, &mut out);
        out
    }

    fn path(text: &str) -> Vec<u8> {
        parse_path(text).expect("path").encode_to_vec()
    }

    fn update(path_text: &str, value: &[u8]) -> Vec<u8> {
        [bytes_field(1, &path(path_text)), bytes_field(3, value)].concat()
    }

    fn response(notification: &[u8]) -> Vec<u8> {
        bytes_field(1, notification)
    }

    /// What the prost reading of `bytes` gives as plain events, if anything.
    fn decoded_plain(bytes: &[u8], meta: &EventMeta) -> Option<(Vec<Event>, Vec<usize>)> {
        let decoded = SubscribeResponse::decode(bytes).ok()?;
        let Some(Response::Update(n)) = &decoded.response else {
            return None;
        };
        let plain = plain_events(n, meta)?;
        Some((plain.events(), sets(&plain)))
    }

    fn sets(plain: &PlainEvents<'_>) -> Vec<usize> {
        plain.entries().iter().map(|e| e.tag_set).collect()
    }

    fn wire_plain(bytes: &[u8], meta: &EventMeta) -> Option<(Vec<Event>, Vec<usize>)> {
        let plain = plain_events_from_wire(bytes, meta)?;
        Some((plain.events(), sets(&plain)))
    }

    #[test]
    fn the_wire_reads_as_prost_does_whatever_the_field_order_and_unknown_fields() {
        let meta = EventMeta::new("r1:57400", "sub");
        let counter = varint_field(3, 7);
        let unknown = [varint_field(99, 1), bytes_field(98, b"x")].concat();
        let elem_with_keys = |entries: &[(&str, &str)], name: &str| {
            let mut elem = Vec::new();
            for (k, v) in entries {
                let entry = [bytes_field(1, k.as_bytes()), bytes_field(2, v.as_bytes())].concat();
                elem.extend(bytes_field(2, &entry));
            }
            // The name after the keys, and an unknown field inside.
            elem.extend(bytes_field(1, name.as_bytes()));
            elem.extend(&unknown);
            elem
        };
        let keyed_path = |entries: &[(&str, &str)]| {
            [
                bytes_field(3, &elem_with_keys(&[], "interfaces")),
                bytes_field(3, &elem_with_keys(entries, "interface")),
                bytes_field(3, &elem_with_keys(&[], "in")),
                bytes_field(4, b"dev"),
                bytes_field(2, b"oc"),
                unknown.clone(),
            ]
            .concat()
        };
        let keyed_update = |entries: &[(&str, &str)], value: &[u8]| {
            [
                bytes_field(3, value),
                unknown.clone(),
                bytes_field(1, &keyed_path(entries)),
                varint_field(4, 2),
            ]
            .concat()
        };
        let two_values = [varint_field(3, 1), bytes_field(1, b"last")].concat();
        let notification = [
            // Updates before the prefix and the timestamp; the timestamp twice (the last
            // counts), unknown fields at every level.
            bytes_field(4, &update("/a/b", &counter)),
            bytes_field(4, &keyed_update(&[("name", "e1"), ("unit", "0")], &counter)),
            bytes_field(
                4,
                &keyed_update(&[("name", "e1"), ("unit", "0")], &two_values),
            ),
            // One key twice in an element: the last value counts, as in prost's map.
            bytes_field(
                4,
                &keyed_update(&[("name", "e2"), ("name", "e3")], &counter),
            ),
            bytes_field(4, &bytes_field(3, &varint_field(4, 1))),
            varint_field(1, 5),
            bytes_field(2, &path("/system[id=1]/state")),
            varint_field(6, 1),
            unknown.clone(),
            varint_field(1, 42),
        ]
        .concat();
        let bytes = [unknown.clone(), response(&notification)].concat();
        let want = decoded_plain(&bytes, &meta).expect("prost reads a plain notification");
        assert_eq!(wire_plain(&bytes, &meta), Some(want.clone()));
        assert_eq!(want.0.len(), 5);
        assert_eq!(want.0[0].timestamp, 42);
        assert_eq!(want.0[3].tags["interface_name"], "e3");
        // The two updates under the same keys share a tag set.
        assert_eq!(want.1[1], want.1[2]);
    }

    #[test]
    fn what_prost_reads_otherwise_is_left_to_it() {
        let meta = EventMeta::new("r1", "sub");
        let counter = varint_field(3, 7);
        let plain_update = bytes_field(4, &update("/a", &counter));
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "a second prefix (prost merges them)",
                response(
                    &[
                        bytes_field(2, &path("/x")),
                        bytes_field(2, &path("/y")),
                        plain_update.clone(),
                    ]
                    .concat(),
                ),
            ),
            (
                "a second path in an update",
                response(&bytes_field(
                    4,
                    &[update("/a", &counter), bytes_field(1, &path("/b"))].concat(),
                )),
            ),
            (
                "legacy element strings",
                response(&bytes_field(
                    4,
                    &[
                        bytes_field(1, &bytes_field(1, b"a")),
                        bytes_field(3, &counter),
                    ]
                    .concat(),
                )),
            ),
            (
                "a delete",
                response(&[plain_update.clone(), bytes_field(5, &path("/b"))].concat()),
            ),
            (
                "a double",
                response(&bytes_field(
                    4,
                    &update("/a", &{
                        let mut double = Vec::new();
                        encode_key(14, WireType::SixtyFourBit, &mut double);
                        double.extend(1.5f64.to_le_bytes());
                        double
                    }),
                )),
            ),
            (
                "a JSON value",
                response(&bytes_field(4, &update("/a", &bytes_field(10, b"{}")))),
            ),
            (
                "no value",
                response(&bytes_field(4, &bytes_field(1, &path("/a")))),
            ),
            (
                "invalid UTF-8 in a name",
                response(&bytes_field(
                    4,
                    &[
                        bytes_field(1, &bytes_field(3, &bytes_field(1, &[0xff, 0xfe]))),
                        bytes_field(3, &counter),
                    ]
                    .concat(),
                )),
            ),
            (
                "invalid UTF-8 in a key's value",
                response(&bytes_field(
                    4,
                    &[
                        bytes_field(
                            1,
                            &bytes_field(
                                3,
                                &[
                                    bytes_field(1, b"interface"),
                                    bytes_field(
                                        2,
                                        &[bytes_field(1, b"name"), bytes_field(2, &[0xc3])]
                                            .concat(),
                                    ),
                                ]
                                .concat(),
                            ),
                        ),
                        bytes_field(3, &counter),
                    ]
                    .concat(),
                )),
            ),
            (
                "a deprecated value next to val",
                response(&bytes_field(
                    4,
                    &[update("/a", &counter), bytes_field(2, &varint_field(2, 1))].concat(),
                )),
            ),
            (
                "an extension",
                [response(&plain_update), bytes_field(5, b"")].concat(),
            ),
            (
                "a sync response after the notification",
                [response(&plain_update), varint_field(3, 1)].concat(),
            ),
            ("a sync response", varint_field(3, 1)),
            (
                "a timestamp with the wrong wire type",
                response(&[bytes_field(1, b"x"), plain_update.clone()].concat()),
            ),
            (
                "truncated bytes",
                response(&plain_update)[..plain_update.len() - 1].to_vec(),
            ),
        ];
        for (case, bytes) in cases {
            assert!(plain_events_from_wire(&bytes, &meta).is_none(), "{case}");
        }
        // The plain update alone is read (the cases above fail for their own reason).
        assert!(plain_events_from_wire(&response(&plain_update), &meta).is_some());
    }

    #[test]
    fn a_response_prost_encodes_reads_the_same_both_ways() {
        let meta = EventMeta::new("r1", "sub");
        let mut update_target = parse_path("/c[k=1]/d").expect("path");
        update_target.target = "t".into();
        let notification = Notification {
            timestamp: 9,
            prefix: Some(parse_path("/interfaces/interface[name=e1]").expect("path")),
            update: vec![
                Update {
                    path: Some(parse_path("/x/interface[name=e2]/a").expect("path")),
                    val: Some(TypedValue {
                        value: Some(typed_value::Value::AsciiVal("x".into())),
                    }),
                    ..Default::default()
                },
                Update {
                    path: Some(update_target),
                    val: Some(TypedValue {
                        value: Some(typed_value::Value::IntVal(-4)),
                    }),
                    ..Default::default()
                },
                Update {
                    path: None,
                    val: Some(TypedValue {
                        value: Some(typed_value::Value::BoolVal(true)),
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let bytes = SubscribeResponse {
            response: Some(Response::Update(notification)),
            ..Default::default()
        }
        .encode_to_vec();
        let want = decoded_plain(&bytes, &meta).expect("plain");
        assert_eq!(wire_plain(&bytes, &meta), Some(want));
    }
}
