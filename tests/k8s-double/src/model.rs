//! The double's state: objects by (resource, namespace, name), the global
//! `resourceVersion`, the retained changes for watches, tokens and their rules, selectors
//! and validation.

use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// A resource the double serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
}

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `leases.coordination.k8s.io`, `configmaps`: how the API server names it in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

pub const KINDS: [Kind; 4] = [
    Kind {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
    },
    Kind {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        kind: "EndpointSlice",
    },
    Kind {
        group: "",
        version: "v1",
        plural: "endpoints",
        kind: "Endpoints",
    },
    Kind {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
    },
];

/// The kind served at `group/version/plural`.
pub fn kind(group: &str, version: &str, plural: &str) -> Option<Kind> {
    KINDS
        .iter()
        .copied()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// One RBAC-like rule: verbs on a resource of an API group (`*` matches anything).
#[derive(Debug, Clone)]
pub struct Rule {
    pub group: String,
    pub resource: String,
    pub verbs: Vec<String>,
}

impl Rule {
    pub fn new(group: &str, resource: &str, verbs: &[&str]) -> Self {
        Self {
            group: group.to_string(),
            resource: resource.to_string(),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn allows(&self, group: &str, resource: &str, verb: &str) -> bool {
        let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
        matches(&self.group, group)
            && matches(&self.resource, resource)
            && self.verbs.iter().any(|v| matches(v, verb))
    }
}

/// A bearer token, the user it authenticates and what that user may do.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub token: String,
    pub user: String,
    pub rules: Vec<Rule>,
}

impl TokenConfig {
    /// A token allowed everything.
    pub fn admin(token: &str, user: &str) -> Self {
        Self {
            token: token.to_string(),
            user: user.to_string(),
            rules: vec![Rule::new("*", "*", &["*"])],
        }
    }

    pub fn allows(&self, group: &str, resource: &str, verb: &str) -> bool {
        self.rules.iter().any(|r| r.allows(group, resource, verb))
    }
}

/// A write, as watches see it.
#[derive(Debug)]
pub struct Change {
    pub version: u64,
    pub plural: &'static str,
    pub namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    pub object: Value,
    /// The object before a modification.
    pub previous: Option<Value>,
}

type Id = (&'static str, String, String);

pub struct Store {
    version: u64,
    objects: BTreeMap<Id, Value>,
    history: VecDeque<Arc<Change>>,
    limit: usize,
    /// Changes at or below this version are gone from the history.
    compacted: u64,
}

impl Store {
    pub fn new(limit: usize) -> Self {
        Self {
            version: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            limit: limit.max(1),
            compacted: 0,
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.version;
    }

    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    pub fn get(&self, kind: &Kind, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(kind.plural, namespace.to_string(), name.to_string()))
    }

    pub fn list(&self, kind: &Kind, namespace: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((plural, ns, _), _)| *plural == kind.plural && ns == namespace)
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Changes after `version` (for a resuming watch).
    pub fn since(&self, version: u64) -> Vec<Arc<Change>> {
        self.history
            .iter()
            .filter(|c| c.version > version)
            .cloned()
            .collect()
    }

    /// Stamps the next version on `object` and stores it; returns the change.
    pub fn write(
        &mut self,
        kind: &Kind,
        namespace: &str,
        name: &str,
        mut object: Value,
        change: &'static str,
    ) -> Arc<Change> {
        self.version += 1;
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert(
                "resourceVersion".into(),
                Value::String(self.version.to_string()),
            );
        }
        let id = (kind.plural, namespace.to_string(), name.to_string());
        let previous = if change == "DELETED" {
            self.objects.remove(&id)
        } else {
            self.objects.insert(id, object.clone())
        };
        let record = Arc::new(Change {
            version: self.version,
            plural: kind.plural,
            namespace: namespace.to_string(),
            kind: change,
            object,
            previous: if change == "MODIFIED" { previous } else { None },
        });
        self.history.push_back(record.clone());
        while self.history.len() > self.limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.version;
            }
        }
        record
    }
}

/// A Kubernetes `Status` object.
pub fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": if code < 400 { "Success" } else { "Failure" },
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(details) = details {
        status["details"] = details;
    }
    if code < 400 {
        if let Some(map) = status.as_object_mut() {
            map.remove("message");
            map.remove("reason");
        }
    }
    status
}

/// Whether `name` is a DNS-1123 subdomain.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && alnum(bytes[0])
                && alnum(bytes[bytes.len() - 1])
                && bytes.iter().all(|&b| alnum(b) || b == b'-')
        })
}

/// Label values: at most 63 characters, alphanumerics with `-_.` inside.
fn valid_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    value.is_empty()
        || (bytes.len() <= 63
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b)))
}

/// Label and annotation keys: `[prefix/]name`, name ≤ 63 of the label-value alphabet,
/// prefix a DNS-1123 subdomain.
fn valid_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    !name.is_empty() && valid_label_value(name) && prefix.is_none_or(is_dns1123_subdomain)
}

/// The API server's validation of the fields the double knows; `Err` holds the causes
/// (`field`, message) of a 422.
pub fn validate(kind: &Kind, object: &Value) -> Result<(), Vec<(String, String)>> {
    let mut causes = Vec::new();
    let meta = object.get("metadata").cloned().unwrap_or(Value::Null);
    let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
    if !is_dns1123_subdomain(name) {
        causes.push((
            "metadata.name".to_string(),
            format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ),
        ));
    }
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        for (key, value) in labels {
            let value = value.as_str().unwrap_or_default();
            if !valid_qualified_name(key) {
                causes.push((
                    "metadata.labels".to_string(),
                    format!("Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.'"),
                ));
            }
            if !valid_label_value(value) {
                causes.push((
                    "metadata.labels".to_string(),
                    format!("Invalid value: {value:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
                ));
            }
        }
    }
    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        let size: usize = annotations
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if size > 256 * 1024 {
            causes.push((
                "metadata.annotations".to_string(),
                "Too long: must have at most 262144 bytes".to_string(),
            ));
        }
        for key in annotations.keys().filter(|k| !valid_qualified_name(k)) {
            causes.push((
                "metadata.annotations".to_string(),
                format!("Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.'"),
            ));
        }
    }
    if kind.plural == "leases" {
        let spec = object.get("spec").cloned().unwrap_or(Value::Null);
        if let Some(seconds) = spec.get("leaseDurationSeconds").and_then(Value::as_i64) {
            if seconds <= 0 {
                causes.push((
                    "spec.leaseDurationSeconds".to_string(),
                    format!("Invalid value: {seconds}: must be greater than 0"),
                ));
            }
        }
        if let Some(transitions) = spec.get("leaseTransitions").and_then(Value::as_i64) {
            if transitions < 0 {
                causes.push((
                    "spec.leaseTransitions".to_string(),
                    format!("Invalid value: {transitions}: must be greater than or equal to 0"),
                ));
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(causes)
    }
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses Kubernetes' label selector syntax; `Err` names the problem.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let (mut depth, mut start) = (0i32, 0usize);
        for (i, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&text[start..]);
        let mut requirements = Vec::new();
        for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            let set = |rest: &str| -> Result<Vec<String>, String> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("unable to parse requirement: {part:?}"))?;
                Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
            };
            let requirement = if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) = part.split_once("==") {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) = part.split_once('=') {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else if let Some((key, rest)) = part.split_once(" notin ") {
                Requirement::NotIn(key.trim().into(), set(rest)?)
            } else if let Some((key, rest)) = part.split_once(" in ") {
                Requirement::In(key.trim().into(), set(rest)?)
            } else if let Some(key) = part.strip_prefix('!') {
                Requirement::NotExists(key.trim().into())
            } else {
                Requirement::Exists(part.into())
            };
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = object
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(Map::new);
        let get = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector (`metadata.name`, `metadata.namespace`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// `Err` carries the API server's message for an unsupported field.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if field != "metadata.name" && field != "metadata.namespace" {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(Self(terms))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let key = field.trim_start_matches("metadata.");
            let actual = object
                .get("metadata")
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .unwrap_or_default();
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_follow_kubernetes_syntax() {
        let object = json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"app": "gnomon", "tier": "x"}}});
        for (selector, expected) in [
            ("", true),
            ("app=gnomon", true),
            ("app==gnomon,tier", true),
            ("app!=gnomon", false),
            ("tier in (x, y)", true),
            ("tier notin (x)", false),
            ("!missing", true),
            ("missing", false),
            ("app=gnomon,tier in (y,z)", false),
        ] {
            assert_eq!(
                LabelSelector::parse(selector).unwrap().matches(&object),
                expected,
                "{selector}"
            );
        }
        assert!(FieldSelector::parse("metadata.name=a")
            .unwrap()
            .matches(&object));
        assert!(!FieldSelector::parse("metadata.name!=a")
            .unwrap()
            .matches(&object));
        assert_eq!(
            FieldSelector::parse("spec.holderIdentity=x").unwrap_err(),
            "field label not supported: spec.holderIdentity"
        );
    }

    #[test]
    fn validation_names_the_fields() {
        let kind = KINDS[0];
        assert!(validate(&kind, &json!({"metadata": {"name": "gnmic.lab.leader"}})).is_ok());
        let causes = validate(
            &kind,
            &json!({"metadata": {"name": "Bad_Name", "labels": {"k": "-x"}}, "spec": {"leaseDurationSeconds": 0}}),
        )
        .unwrap_err();
        let fields: Vec<&str> = causes.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "metadata.labels",
                "spec.leaseDurationSeconds"
            ]
        );
        let big = "v".repeat(300 * 1024);
        assert!(validate(
            &kind,
            &json!({"metadata": {"name": "a", "annotations": {"k": big}}})
        )
        .is_err());
    }
}
