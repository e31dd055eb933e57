//! How leaf values go on the wire in the three supported encodings, and how Get builds
//! JSON subtrees (OpenConfig style: lists are arrays of objects that include their keys).

use gnomon_gnmi::proto::gnmi::{typed_value, Encoding, Path, PathElem, TypedValue};
use serde_json::{Map, Value as Json};
use tonic::Status;

use crate::model::LeafValue;

/// The encodings the simulator advertises and accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireEncoding {
    Json,
    JsonIetf,
    Proto,
}

impl WireEncoding {
    pub const ADVERTISED: [Encoding; 3] = [Encoding::Json, Encoding::JsonIetf, Encoding::Proto];

    /// Maps a request's encoding field; anything else is INVALID_ARGUMENT.
    pub fn from_request(raw: i32) -> Result<WireEncoding, Status> {
        match Encoding::try_from(raw) {
            Ok(Encoding::Json) => Ok(WireEncoding::Json),
            Ok(Encoding::JsonIetf) => Ok(WireEncoding::JsonIetf),
            Ok(Encoding::Proto) => Ok(WireEncoding::Proto),
            Ok(other) => Err(Status::invalid_argument(format!(
                "encoding {} is not supported; use JSON, JSON_IETF or PROTO",
                other.as_str_name()
            ))),
            Err(_) => Err(Status::invalid_argument(format!(
                "unknown encoding value {raw}; use JSON, JSON_IETF or PROTO"
            ))),
        }
    }

    /// One leaf as a TypedValue: typed scalars for PROTO (counters as `uint_val`), a JSON
    /// scalar for the JSON encodings.
    pub fn leaf(self, value: &LeafValue) -> TypedValue {
        let value = match self {
            WireEncoding::Proto => match value {
                LeafValue::Text(text) => typed_value::Value::StringVal(text.to_string()),
                LeafValue::Status(status) => typed_value::Value::StringVal((*status).to_string()),
                LeafValue::Uint(number) => typed_value::Value::UintVal(*number),
            },
            WireEncoding::Json | WireEncoding::JsonIetf => {
                return self.json(&json_scalar(value));
            }
        };
        TypedValue { value: Some(value) }
    }

    /// A JSON document in this encoding's JSON field. Only call for the JSON encodings.
    pub fn json(self, document: &Json) -> TypedValue {
        let bytes = document.to_string().into_bytes();
        let value = match self {
            WireEncoding::JsonIetf => typed_value::Value::JsonIetfVal(bytes),
            _ => typed_value::Value::JsonVal(bytes),
        };
        TypedValue { value: Some(value) }
    }

    pub fn is_json(self) -> bool {
        !matches!(self, WireEncoding::Proto)
    }
}

/// Numbers stay JSON numbers in both JSON encodings (as most devices send them), strings
/// are strings.
pub fn json_scalar(value: &LeafValue) -> Json {
    match value {
        LeafValue::Text(text) => Json::String(text.to_string()),
        LeafValue::Status(status) => Json::String((*status).to_string()),
        LeafValue::Uint(number) => Json::from(*number),
    }
}

/// Builds the JSON value of a subtree from leaves given relative to its root.
#[derive(Default)]
pub struct SubtreeBuilder {
    root: Option<Json>,
}

impl SubtreeBuilder {
    /// Adds one leaf; `relative` is empty when the subtree root is the leaf itself.
    pub fn insert(&mut self, relative: &[PathElem], value: Json) {
        if relative.is_empty() {
            self.root = Some(value);
            return;
        }
        let root = self.root.get_or_insert_with(|| Json::Object(Map::new()));
        if let Json::Object(object) = root {
            insert_into(object, relative, value);
        }
    }

    pub fn finish(self) -> Json {
        self.root.unwrap_or(Json::Object(Map::new()))
    }
}

fn insert_into(object: &mut Map<String, Json>, relative: &[PathElem], value: Json) {
    let Some((first, rest)) = relative.split_first() else {
        return;
    };
    if rest.is_empty() {
        object.insert(first.name.clone(), value);
        return;
    }
    if first.key.is_empty() {
        let child = object
            .entry(first.name.clone())
            .or_insert_with(|| Json::Object(Map::new()));
        if let Json::Object(child) = child {
            insert_into(child, rest, value);
        }
        return;
    }
    // A list entry: find (or add) the array element whose key fields match.
    let list = object
        .entry(first.name.clone())
        .or_insert_with(|| Json::Array(Vec::new()));
    let Json::Array(entries) = list else {
        return;
    };
    let position = entries.iter().position(|entry| {
        first
            .key
            .iter()
            .all(|(key, wanted)| entry.get(key).and_then(Json::as_str) == Some(wanted.as_str()))
    });
    let index = match position {
        Some(index) => index,
        None => {
            let mut keys: Vec<_> = first.key.iter().collect();
            keys.sort();
            let entry: Map<String, Json> = keys
                .into_iter()
                .map(|(key, value)| (key.clone(), Json::String(value.clone())))
                .collect();
            entries.push(Json::Object(entry));
            entries.len() - 1
        }
    };
    if let Some(Json::Object(entry)) = entries.get_mut(index) {
        insert_into(entry, rest, value);
    }
}

/// Groups leaf paths by their first `depth` elements (the concrete instance of the request
/// path they fall under), keeping first-seen order.
pub fn group_by_instance<'a>(
    paths: impl Iterator<Item = (usize, &'a Path)>,
    depth: usize,
) -> Vec<(Vec<PathElem>, Vec<usize>)> {
    let mut groups: Vec<(Vec<PathElem>, Vec<usize>)> = Vec::new();
    for (index, path) in paths {
        let head = &path.elem[..depth.min(path.elem.len())];
        match groups
            .iter_mut()
            .find(|(existing, _)| existing.as_slice() == head)
        {
            Some((_, members)) => members.push(index),
            None => groups.push((head.to_vec(), vec![index])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use gnomon_gnmi::path::parse_path;
    use serde_json::json;

    #[test]
    fn lists_become_arrays_with_their_keys() {
        let mut builder = SubtreeBuilder::default();
        for (path, value) in [
            ("interface[name=E1]/state/oper-status", json!("UP")),
            ("interface[name=E1]/state/counters/in-octets", json!(5)),
            ("interface[name=E2]/state/oper-status", json!("DOWN")),
        ] {
            builder.insert(&parse_path(path).unwrap().elem, value);
        }
        assert_eq!(
            builder.finish(),
            json!({"interface": [
                {"name": "E1", "state": {"oper-status": "UP", "counters": {"in-octets": 5}}},
                {"name": "E2", "state": {"oper-status": "DOWN"}}
            ]})
        );
    }

    #[test]
    fn a_leaf_subtree_is_the_bare_value() {
        let mut builder = SubtreeBuilder::default();
        builder.insert(&[], json!(42));
        assert_eq!(builder.finish(), json!(42));
    }

    #[test]
    fn encodings_pick_the_right_field() {
        let value = LeafValue::Uint(7);
        assert_eq!(
            WireEncoding::Proto.leaf(&value).value,
            Some(typed_value::Value::UintVal(7))
        );
        assert_eq!(
            WireEncoding::JsonIetf.leaf(&value).value,
            Some(typed_value::Value::JsonIetfVal(b"7".to_vec()))
        );
        assert_eq!(
            WireEncoding::Json.leaf(&LeafValue::Status("UP")).value,
            Some(typed_value::Value::JsonVal(b"\"UP\"".to_vec()))
        );
        assert!(WireEncoding::from_request(Encoding::Ascii as i32).is_err());
        assert!(WireEncoding::from_request(99).is_err());
    }
}
