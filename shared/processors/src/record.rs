//! The processors' working form of an event: [`Record`].
//!
//! gnmic's event ([`gnomon_gnmi::event::Event`]) keeps tags and values in
//! `BTreeMap<String, …>` and values as `serde_json::Value`: every renamed,
//! added or deleted entry costs an allocation and a tree operation. A record
//! is built for the few operations processors do on events of 5–15 entries:
//!
//! * names and short texts are [`Str`] (`compact_str`): up to 24 bytes
//!   inline, so tag names, tag values, shortened value names and most value
//!   texts never touch the allocator, and cloning a configured tag is a copy;
//! * tags and values are [`FieldMap`]s: one vector of (name, value) pairs
//!   sorted by name, so lookups are a binary search over a few cache lines,
//!   iteration is in gnmic's (sorted) order, and a rename is done in place
//!   followed by one sort of a handful of entries;
//! * values are a small enum, [`Val`]: numbers, booleans and strings stay
//!   unboxed; JSON (arrays, objects, null) only when the value is one.
//!
//! Conversions: [`Record::from`] / [`Event::from`] for gnmic's events (used
//! by the JSON formats and by tests), [`FieldMap::from_pairs`] for builders
//! that already hold sorted borrowed strings (the exporter's decoded
//! messages).

use std::borrow::Borrow;
use std::fmt;

use gnomon_gnmi::event::Event;
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// An inline-when-short string (≤ 24 bytes without allocation).
pub type Str = compact_str::CompactString;

/// Room left in a converted record's maps, so that the tags and values
/// processors add (add-tag, to-tag, value-tag…) do not reallocate.
pub const SPARE: usize = 4;

/// One event as processors see it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    /// The subscription name.
    pub name: Str,
    /// Notification timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Tags (path keys, meta tags), sorted by name.
    pub tags: FieldMap<Str>,
    /// Values by key-less path, sorted by name.
    pub values: FieldMap<Val>,
    /// Deleted paths.
    pub deletes: Vec<Str>,
}

/// An event value.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    /// JSON `true` / `false`.
    Bool(bool),
    /// An integer that fits an `i64`.
    Int(i64),
    /// An integer above `i64::MAX` (smaller ones are [`Val::Int`], as
    /// `serde_json` keeps them).
    Uint(u64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(Str),
    /// `null`, an array or an object.
    Json(Box<Value>),
}

impl Val {
    /// An unsigned integer, as [`Val::Int`] when it fits.
    pub fn from_u64(u: u64) -> Self {
        match i64::try_from(u) {
            Ok(i) => Val::Int(i),
            Err(_) => Val::Uint(u),
        }
    }

    /// The value of a decoded JSON value.
    pub fn from_json(v: Value) -> Self {
        match v {
            Value::Bool(b) => Val::Bool(b),
            Value::String(s) => Val::Str(Str::from(s)),
            Value::Number(n) => Self::from_number(&n),
            other => Val::Json(Box::new(other)),
        }
    }

    /// Like [`Val::from_json`], from a reference.
    pub fn from_json_ref(v: &Value) -> Self {
        match v {
            Value::Bool(b) => Val::Bool(*b),
            Value::String(s) => Val::Str(Str::from(s.as_str())),
            Value::Number(n) => Self::from_number(n),
            other => Val::Json(Box::new(other.clone())),
        }
    }

    fn from_number(n: &serde_json::Number) -> Self {
        if let Some(i) = n.as_i64() {
            Val::Int(i)
        } else if let Some(u) = n.as_u64() {
            Val::Uint(u)
        } else {
            Val::Float(n.as_f64().unwrap_or(f64::NAN))
        }
    }

    /// The JSON form (a non-finite float, which JSON cannot hold, is `null`).
    pub fn to_json(&self) -> Value {
        match self {
            Val::Bool(b) => Value::Bool(*b),
            Val::Int(i) => Value::from(*i),
            Val::Uint(u) => Value::from(*u),
            Val::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Val::Str(s) => Value::String(s.to_string()),
            Val::Json(v) => (**v).clone(),
        }
    }

    /// [`Val::to_json`], consuming the value.
    pub fn into_json(self) -> Value {
        match self {
            Val::Str(s) => Value::String(s.into_string()),
            Val::Json(v) => *v,
            other => other.to_json(),
        }
    }

    /// The text of a string value.
    #[inline]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number of a numeric value (integers widened).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Uint(u) => Some(*u as f64),
            Val::Float(f) => Some(*f),
            _ => None,
        }
    }
}

impl From<&str> for Val {
    fn from(s: &str) -> Self {
        Val::Str(Str::from(s))
    }
}

impl From<i64> for Val {
    fn from(i: i64) -> Self {
        Val::Int(i)
    }
}

impl From<f64> for Val {
    fn from(f: f64) -> Self {
        Val::Float(f)
    }
}

impl From<bool> for Val {
    fn from(b: bool) -> Self {
        Val::Bool(b)
    }
}

impl Serialize for Val {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Val::Bool(b) => s.serialize_bool(*b),
            Val::Int(i) => s.serialize_i64(*i),
            Val::Uint(u) => s.serialize_u64(*u),
            Val::Float(f) if f.is_finite() => s.serialize_f64(*f),
            Val::Float(_) => s.serialize_unit(),
            Val::Str(t) => s.serialize_str(t),
            Val::Json(v) => v.serialize(s),
        }
    }
}

/// Name → value pairs kept sorted by name, names unique: the map type of
/// [`Record`]. Operations mirror `BTreeMap`'s (insert replaces, `extend`
/// lets later pairs win, iteration is in name order).
#[derive(Clone, PartialEq)]
pub struct FieldMap<V> {
    entries: Vec<(Str, V)>,
}

impl<V> Default for FieldMap<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<V: fmt::Debug> fmt::Debug for FieldMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V> FieldMap<V> {
    /// An empty map.
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// An empty map with room for `n` pairs.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
        }
    }

    /// Builds a map from pairs; already sorted, unique names (the usual
    /// case: decoded maps are sorted) cost one comparison per pair. When a
    /// name repeats, the last pair wins.
    pub fn from_pairs<K: Into<Str>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let pairs = pairs.into_iter();
        let mut map = Self::with_capacity(pairs.size_hint().0 + SPARE);
        map.entries.extend(pairs.map(|(k, v)| (k.into(), v)));
        map.restore_order();
        map
    }

    #[inline]
    fn find(&self, key: &str) -> Result<usize, usize> {
        // Linear search is faster than bisection on the few entries events
        // carry; bisect beyond that.
        if self.entries.len() <= 8 {
            for (i, (k, _)) in self.entries.iter().enumerate() {
                match k.as_str().cmp(key) {
                    std::cmp::Ordering::Less => continue,
                    std::cmp::Ordering::Equal => return Ok(i),
                    std::cmp::Ordering::Greater => return Err(i),
                }
            }
            return Err(self.entries.len());
        }
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// Number of pairs.
    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key`.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&V> {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    /// The value of `key`, mutable.
    #[inline]
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        match self.find(key) {
            Ok(i) => Some(&mut self.entries[i].1),
            Err(_) => None,
        }
    }

    /// True when `key` is present.
    #[inline]
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`, returning the value it replaces.
    pub fn insert(&mut self, key: impl Into<Str> + Borrow<str>, value: V) -> Option<V> {
        match self.find(key.borrow()) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key.into(), value));
                None
            }
        }
    }

    /// Sets `key` to `make()` unless present; true when it was inserted.
    #[inline]
    pub fn insert_if_absent(&mut self, key: &Str, make: impl FnOnce() -> V) -> bool {
        match self.find(key) {
            Ok(_) => false,
            Err(i) => {
                self.entries.insert(i, (key.clone(), make()));
                true
            }
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        match self.find(key) {
            Ok(i) => Some(self.entries.remove(i).1),
            Err(_) => None,
        }
    }

    /// Pairs in name order.
    #[inline]
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Str, &V)> + ExactSizeIterator + Clone {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// Pairs in name order, values mutable.
    #[inline]
    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = (&Str, &mut V)> {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// Names in order.
    #[inline]
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Str> + Clone {
        self.entries.iter().map(|(k, _)| k)
    }

    /// Values in name order.
    #[inline]
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + Clone {
        self.entries.iter().map(|(_, v)| v)
    }

    /// Values in name order, mutable.
    #[inline]
    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    /// Keeps the pairs `keep` accepts (it may change values).
    #[inline]
    pub fn retain(&mut self, mut keep: impl FnMut(&Str, &mut V) -> bool) {
        self.entries.retain_mut(|(k, v)| keep(k, v));
    }

    /// Removes every pair.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The pairs, in name order.
    pub fn as_slice(&self) -> &[(Str, V)] {
        &self.entries
    }

    /// The pairs, in name order, by value.
    pub fn into_vec(self) -> Vec<(Str, V)> {
        self.entries
    }

    /// The pairs for in-place changes of names; callers must call
    /// [`Self::restore_order`] after changing a name.
    pub(crate) fn entries_mut(&mut self) -> &mut Vec<(Str, V)> {
        &mut self.entries
    }

    /// Sorts by name after names changed in place; of pairs that now share a
    /// name, the one that came last wins (as successive inserts would).
    pub(crate) fn restore_order(&mut self) {
        if self.entries.windows(2).all(|w| w[0].0 < w[1].0) {
            return;
        }
        // Stable: equal names keep their order, so the last one is kept.
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut write = 0;
        for read in 0..self.entries.len() {
            if write > 0 && self.entries[write - 1].0 == self.entries[read].0 {
                self.entries.swap(write - 1, read);
            } else {
                self.entries.swap(write, read);
                write += 1;
            }
        }
        self.entries.truncate(write);
    }
}

impl<K: Into<Str> + Borrow<str>, V> Extend<(K, V)> for FieldMap<V> {
    fn extend<T: IntoIterator<Item = (K, V)>>(&mut self, iter: T) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K: Into<Str>, V> FromIterator<(K, V)> for FieldMap<V> {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        Self::from_pairs(iter)
    }
}

impl<V> IntoIterator for FieldMap<V> {
    type Item = (Str, V);
    type IntoIter = std::vec::IntoIter<(Str, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a, V> IntoIterator for &'a FieldMap<V> {
    type Item = (&'a Str, &'a V);
    type IntoIter =
        std::iter::Map<std::slice::Iter<'a, (Str, V)>, fn(&'a (Str, V)) -> (&'a Str, &'a V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl<V: Serialize> Serialize for FieldMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            m.serialize_entry(k.as_str(), v)?;
        }
        m.end()
    }
}

/// gnmic's JSON rendering of an event (the same bytes as [`Event`]'s): empty
/// fields left out.
impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fields = usize::from(!self.name.is_empty())
            + usize::from(self.timestamp != 0)
            + usize::from(!self.tags.is_empty())
            + usize::from(!self.values.is_empty())
            + usize::from(!self.deletes.is_empty());
        let mut st = s.serialize_struct("Event", fields)?;
        if !self.name.is_empty() {
            st.serialize_field("name", self.name.as_str())?;
        }
        if self.timestamp != 0 {
            st.serialize_field("timestamp", &self.timestamp)?;
        }
        if !self.tags.is_empty() {
            st.serialize_field("tags", &self.tags)?;
        }
        if !self.values.is_empty() {
            st.serialize_field("values", &self.values)?;
        }
        if !self.deletes.is_empty() {
            let deletes: Vec<&str> = self.deletes.iter().map(Str::as_str).collect();
            st.serialize_field("deletes", &deletes)?;
        }
        st.end()
    }
}

/// A vector of `items` with [`SPARE`] more room.
fn spacious<T>(items: impl ExactSizeIterator<Item = T>) -> Vec<T> {
    let mut v = Vec::with_capacity(items.len() + SPARE);
    v.extend(items);
    v
}

impl From<Event> for Record {
    /// Moves the strings over (a `String` longer than 24 bytes keeps its
    /// buffer).
    fn from(e: Event) -> Self {
        Record {
            name: Str::from(e.name),
            timestamp: e.timestamp,
            tags: FieldMap {
                entries: spacious(
                    e.tags
                        .into_iter()
                        .map(|(k, v)| (Str::from(k), Str::from(v))),
                ),
            },
            values: FieldMap {
                entries: spacious(
                    e.values
                        .into_iter()
                        .map(|(k, v)| (Str::from(k), Val::from_json(v))),
                ),
            },
            deletes: e.deletes.into_iter().map(Str::from).collect(),
        }
    }
}

impl From<&Event> for Record {
    fn from(e: &Event) -> Self {
        Record {
            name: Str::from(e.name.as_str()),
            timestamp: e.timestamp,
            tags: FieldMap {
                entries: spacious(
                    e.tags
                        .iter()
                        .map(|(k, v)| (Str::from(k.as_str()), Str::from(v.as_str()))),
                ),
            },
            values: FieldMap {
                entries: spacious(
                    e.values
                        .iter()
                        .map(|(k, v)| (Str::from(k.as_str()), Val::from_json_ref(v))),
                ),
            },
            deletes: e.deletes.iter().map(|d| Str::from(d.as_str())).collect(),
        }
    }
}

impl From<Record> for Event {
    fn from(r: Record) -> Self {
        Event {
            name: r.name.into_string(),
            timestamp: r.timestamp,
            tags: r
                .tags
                .into_iter()
                .map(|(k, v)| (k.into_string(), v.into_string()))
                .collect(),
            values: r
                .values
                .into_iter()
                .map(|(k, v)| (k.into_string(), v.into_json()))
                .collect(),
            deletes: r.deletes.into_iter().map(Str::into_string).collect(),
        }
    }
}

impl Record {
    /// The tag `key`.
    #[inline]
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(Str::as_str)
    }

    /// gnmic's inputs decode event JSON with Go's `encoding/json`, which
    /// makes every number a float64: this turns integer values into floats
    /// so processors see what gnmic's see (`fmt.Sprint`, conversions).
    pub fn numbers_as_floats(&mut self) {
        for v in self.values.values_mut() {
            match v {
                Val::Int(i) => *v = Val::Float(*i as f64),
                Val::Uint(u) => *v = Val::Float(*u as f64),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_map_behaves_like_a_btree_map() {
        let mut m: FieldMap<i32> = FieldMap::new();
        assert_eq!(m.insert("b", 1), None);
        assert_eq!(m.insert("a", 2), None);
        assert_eq!(m.insert("c", 3), None);
        assert_eq!(m.insert("b", 4), Some(1));
        assert_eq!(
            m.keys().map(Str::as_str).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(m.remove("a"), Some(2));
        assert_eq!(m.get("b"), Some(&4));
        assert!(!m.contains_key("a"));
        m.extend([("z", 9), ("b", 5)]);
        assert_eq!(m.get("b"), Some(&5));
        let big: FieldMap<usize> = (0..40).rev().map(|i| (format!("k{i:02}"), i)).collect();
        assert_eq!(big.len(), 40);
        assert_eq!(big.get("k17"), Some(&17));
        assert_eq!(big.keys().next().map(Str::as_str), Some("k00"));
    }

    #[test]
    fn renames_keep_the_last_pair_of_a_name() {
        let mut m: FieldMap<i32> = FieldMap::from_pairs([("/a/x", 1), ("/b/x", 2), ("y", 3)]);
        for (k, _) in m.entries_mut().iter_mut() {
            if let Some(i) = k.rfind('/') {
                *k = Str::from(&k[i + 1..]);
            }
        }
        m.restore_order();
        assert_eq!(
            m.iter().map(|(k, v)| (k.as_str(), *v)).collect::<Vec<_>>(),
            [("x", 2), ("y", 3)]
        );
        let dup: FieldMap<i32> = FieldMap::from_pairs([("a", 1), ("a", 2), ("0", 0)]);
        assert_eq!(dup.get("a"), Some(&2));
        assert_eq!(dup.len(), 2);
    }

    #[test]
    fn events_round_trip_with_the_same_json() {
        let e: Event = serde_json::from_value(json!({
            "name": "sub", "timestamp": 5,
            "tags": {"source": "r1", "interface_name": "e1"},
            "values": {"/a": 1, "/b": -2, "/c": 1.5, "/d": "x", "/e": true,
                       "/f": [1, 2], "/g": null, "/h": 18446744073709551615u64},
            "deletes": ["/z"]
        }))
        .unwrap();
        let r = Record::from(&e);
        assert_eq!(r.values.get("/h"), Some(&Val::Uint(u64::MAX)));
        assert_eq!(r.values.get("/a"), Some(&Val::Int(1)));
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::to_value(&e).unwrap()
        );
        assert_eq!(Event::from(r.clone()), e);
        assert_eq!(Record::from(e.clone()), r);
        assert_eq!(
            serde_json::to_string(&Record::default()).unwrap(),
            serde_json::to_string(&Event::default()).unwrap()
        );
    }

    #[test]
    fn short_strings_are_inline() {
        let s = Str::from("interface_name");
        assert!(!s.is_heap_allocated());
        assert!(Str::from("/interfaces/interface/state/counters/in-octets").is_heap_allocated());
    }
}
