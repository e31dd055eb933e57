//! Environment overrides, as gnmic does them: `GNMIC_<PATH>` where the path is the key
//! path upper-cased with `/` and `-` turned into `_` (`GNMIC_CLUSTERING_INSTANCE_NAME`,
//! `GNMIC_OUTPUTS_OUTPUT1_LISTEN`, `GNMIC_API`). `GNOMON_<PATH>` works the same and wins.
//! Because `_` is ambiguous, the variable is matched against the keys the file already
//! has plus the keys gnomon knows, longest match first.

use serde_json::{Map, Value};

/// Prefixes read, weakest first.
pub const ENV_PREFIXES: [&str; 2] = ["GNMIC_", "GNOMON_"];

/// What the keys below a node look like.
#[derive(Clone, Copy)]
enum Shape {
    /// A value (string, number, list given as one string).
    Leaf,
    /// A section with known keys.
    Fixed(&'static [(&'static str, Shape)]),
    /// A map of user-chosen names to entries of one shape.
    Named(&'static Shape),
    /// A free-form map (outputs, inputs, lockers): unknown keys are created from the name.
    Free,
}

const TARGET_KEYS: &[(&str, Shape)] = &[
    ("name", Shape::Leaf),
    ("address", Shape::Leaf),
    ("username", Shape::Leaf),
    ("password", Shape::Leaf),
    ("token", Shape::Leaf),
    ("timeout", Shape::Leaf),
    ("insecure", Shape::Leaf),
    ("skip-verify", Shape::Leaf),
    ("tls-ca", Shape::Leaf),
    ("tls-cert", Shape::Leaf),
    ("tls-key", Shape::Leaf),
    ("tls-server-name", Shape::Leaf),
    ("encoding", Shape::Leaf),
    ("subscriptions", Shape::Leaf),
    ("outputs", Shape::Leaf),
    ("tags", Shape::Leaf),
    ("event-tags", Shape::Free),
    ("retry-timer", Shape::Leaf),
    ("buffer-size", Shape::Leaf),
];
const TARGET: Shape = Shape::Fixed(TARGET_KEYS);

const SUBSCRIPTION_KEYS: &[(&str, Shape)] = &[
    ("name", Shape::Leaf),
    ("paths", Shape::Leaf),
    ("prefix", Shape::Leaf),
    ("target", Shape::Leaf),
    ("set-target", Shape::Leaf),
    ("models", Shape::Leaf),
    ("mode", Shape::Leaf),
    ("stream-mode", Shape::Leaf),
    ("encoding", Shape::Leaf),
    ("qos", Shape::Leaf),
    ("sample-interval", Shape::Leaf),
    ("heartbeat-interval", Shape::Leaf),
    ("suppress-redundant", Shape::Leaf),
    ("updates-only", Shape::Leaf),
    ("outputs", Shape::Leaf),
    ("poll-interval", Shape::Leaf),
];
const SUBSCRIPTION: Shape = Shape::Fixed(SUBSCRIPTION_KEYS);
const FREE: Shape = Shape::Free;

const TLS_KEYS: &[(&str, Shape)] = &[
    ("ca-file", Shape::Leaf),
    ("cert-file", Shape::Leaf),
    ("key-file", Shape::Leaf),
    ("skip-verify", Shape::Leaf),
    ("client-auth", Shape::Leaf),
];

const CLUSTERING_KEYS: &[(&str, Shape)] = &[
    ("cluster-name", Shape::Leaf),
    ("instance-name", Shape::Leaf),
    ("service-address", Shape::Leaf),
    ("services-watch-timer", Shape::Leaf),
    ("targets-watch-timer", Shape::Leaf),
    ("target-assignment-timeout", Shape::Leaf),
    ("leader-wait-timer", Shape::Leaf),
    ("tags", Shape::Leaf),
    ("rebalance-threshold", Shape::Leaf),
    ("locker", Shape::Free),
    ("tls", Shape::Fixed(TLS_KEYS)),
];

const API_SERVER_KEYS: &[(&str, Shape)] = &[
    ("address", Shape::Leaf),
    ("timeout", Shape::Leaf),
    ("tls", Shape::Fixed(TLS_KEYS)),
    ("enable-metrics", Shape::Leaf),
    ("enable-profiling", Shape::Leaf),
    ("debug", Shape::Leaf),
    ("healthz-disable-logging", Shape::Leaf),
    ("expose-target-secrets", Shape::Leaf),
    ("token", Shape::Leaf),
];

const ROOT_KEYS: &[(&str, Shape)] = &[
    ("address", Shape::Leaf),
    ("username", Shape::Leaf),
    ("password", Shape::Leaf),
    ("token", Shape::Leaf),
    ("port", Shape::Leaf),
    ("encoding", Shape::Leaf),
    ("insecure", Shape::Leaf),
    ("skip-verify", Shape::Leaf),
    ("tls-ca", Shape::Leaf),
    ("tls-cert", Shape::Leaf),
    ("tls-key", Shape::Leaf),
    ("tls-server-name", Shape::Leaf),
    ("timeout", Shape::Leaf),
    ("retry", Shape::Leaf),
    ("log", Shape::Leaf),
    ("log-file", Shape::Leaf),
    ("log-format", Shape::Leaf),
    ("debug", Shape::Leaf),
    ("format", Shape::Leaf),
    ("cluster-name", Shape::Leaf),
    ("instance-name", Shape::Leaf),
    ("api", Shape::Leaf),
    ("targets", Shape::Named(&TARGET)),
    ("subscriptions", Shape::Named(&SUBSCRIPTION)),
    ("outputs", Shape::Named(&FREE)),
    ("inputs", Shape::Named(&FREE)),
    ("clustering", Shape::Fixed(CLUSTERING_KEYS)),
    ("api-server", Shape::Fixed(API_SERVER_KEYS)),
];

fn normalize(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '-' | '/' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// Applies every `GNMIC_*` / `GNOMON_*` variable of `vars` to `root` (GNOMON_ last, so it wins).
pub fn apply_env_overrides(root: &mut Value, vars: &[(String, String)]) {
    for prefix in ENV_PREFIXES {
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix(prefix) else {
                continue;
            };
            if rest.is_empty() {
                continue;
            }
            if !apply(root, rest, Shape::Fixed(ROOT_KEYS), value) {
                tracing::debug!(variable = %name, "environment variable matches no configuration key");
            }
        }
    }
}

/// Finds the longest candidate key whose normalized form is `rest` or a `_`-prefix of it.
fn best_match<'k>(
    rest: &str,
    candidates: impl Iterator<Item = &'k str>,
) -> Option<(&'k str, bool)> {
    candidates
        .filter_map(|key| {
            let normalized = normalize(key);
            if rest == normalized {
                Some((key, true, normalized.len()))
            } else if rest.len() > normalized.len()
                && rest.starts_with(&normalized)
                && rest.as_bytes()[normalized.len()] == b'_'
            {
                Some((key, false, normalized.len()))
            } else {
                None
            }
        })
        .max_by_key(|(_, exact, len)| (*len, *exact))
        .map(|(key, exact, _)| (key, exact))
}

/// Sets the key `rest` names below `node`; `false` (and `node` untouched) when it names none.
fn apply(node: &mut Value, rest: &str, shape: Shape, value: &str) -> bool {
    if matches!(shape, Shape::Leaf) {
        return false;
    }
    if node.is_null() {
        *node = Value::Object(Map::new());
    }
    // A key set to a plain value (e.g. `api: ":7890"`) has no keys below it to override.
    let Value::Object(map) = node else {
        return false;
    };
    let existing: Vec<String> = map.keys().cloned().collect();
    let (key, exact, child_shape) = match shape {
        Shape::Leaf => return false,
        Shape::Fixed(known) => {
            let candidates = known
                .iter()
                .map(|(k, _)| *k)
                .chain(existing.iter().map(String::as_str));
            let Some((key, exact)) = best_match(rest, candidates) else {
                return false;
            };
            let child = known
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, s)| *s)
                .unwrap_or(Shape::Free);
            (key.to_string(), exact, child)
        }
        Shape::Named(entry) => {
            let Some((key, exact)) = best_match(rest, existing.iter().map(String::as_str)) else {
                return false;
            };
            (key.to_string(), exact, *entry)
        }
        Shape::Free => match best_match(rest, existing.iter().map(String::as_str)) {
            Some((key, exact)) => (key.to_string(), exact, Shape::Free),
            None => (
                rest.to_ascii_lowercase().replace('_', "-"),
                true,
                Shape::Leaf,
            ),
        },
    };
    if exact {
        map.insert(key, Value::String(value.to_string()));
        return true;
    }
    let remaining = &rest[normalize(&key).len() + 1..];
    let created = !map.contains_key(&key);
    let child = map.entry(key.clone()).or_insert(Value::Null);
    let applied = apply(child, remaining, child_shape, value);
    if created && !applied {
        // Do not leave an empty section behind: it could switch a feature on.
        map.remove(&key);
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_variables_change_nothing() {
        let mut root = json!({"api": ":7890", "outputs": {"o1": {"type": "nats"}}});
        let before = root.clone();
        apply_env_overrides(
            &mut root,
            &vars(&[
                ("GNOMON_API_FOO", "x"),
                ("GNOMON_API_SERVER_BOGUS", "y"),
                ("GNMIC_TARGETS_T1_NOPE", "z"),
            ]),
        );
        assert_eq!(root, before);
    }

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_follow_gnmic_names() {
        let mut root = json!({
            "outputs": {"output1": {"type": "prometheus"}},
            "targets": {"10.0.0.1:57400": {"username": "a"}},
        });
        apply_env_overrides(
            &mut root,
            &vars(&[
                ("GNMIC_CLUSTERING_INSTANCE_NAME", "gnmic1"),
                ("GNMIC_OUTPUTS_OUTPUT1_LISTEN", ":9804"),
                ("GNMIC_API", ":7890"),
                ("GNMIC_SKIP_VERIFY", "true"),
                ("GNMIC_TARGETS_10_0_0_1:57400_USERNAME", "b"),
                ("GNOMON_API", ":7891"),
                ("GNMIC_OUTPUTS_OUTPUT1_SUBJECT_PREFIX", "tele"),
                ("HOME", "/root"),
            ]),
        );
        assert_eq!(root["clustering"]["instance-name"], "gnmic1");
        assert_eq!(root["outputs"]["output1"]["listen"], ":9804");
        assert_eq!(root["outputs"]["output1"]["subject-prefix"], "tele");
        assert_eq!(root["api"], ":7891");
        assert_eq!(root["skip-verify"], "true");
        assert_eq!(root["targets"]["10.0.0.1:57400"]["username"], "b");
    }
}
