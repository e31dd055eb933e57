//! A secret string (password, token) that never shows up in logs or API responses.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// What a secret looks like wherever it is displayed.
pub const REDACTED: &str = "****";

/// A password or token. `Debug`, `Display` and `Serialize` all print `****`;
/// [`Secret::expose`] is the only way to read it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for the one place that must send it (gRPC metadata, NATS auth).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

/// Read from a plain string (configuration files and bodies carry secrets in clear).
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// Whether a config key names a secret (its value is never displayed).
pub fn is_secret_key(key: &str) -> bool {
    matches!(key, "password" | "token")
}

/// A copy of `value` with every secret key's value replaced by `****`, at any depth; for
/// free-form maps (e.g. `clustering.locker`) that are displayed or serialized.
pub fn redact_json(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .map(|(key, inner)| {
                    let shown = if is_secret_key(key) && !inner.is_null() {
                        serde_json::Value::String(REDACTED.to_string())
                    } else {
                        redact_json(inner)
                    };
                    (key.clone(), shown)
                })
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(redact_json).collect())
        }
        other => other.clone(),
    }
}

/// `serialize_with` for free-form maps that may hold secrets.
pub fn serialize_redacted<S: Serializer>(
    value: &serde_json::Value,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    redact_json(value).serialize(serializer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secret_keys_at_any_depth() {
        let value = serde_json::json!({"type": "etcd", "password": "hunter2",
            "nested": [{"token": "tok-1", "username": "root"}]});
        let shown = redact_json(&value).to_string();
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok-1"),
            "{shown}"
        );
        assert!(shown.contains("root") && shown.contains("etcd"), "{shown}");
    }

    #[test]
    fn never_prints_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "**** ****");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"****\"");
        assert_eq!(secret.expose(), "hunter2");
        let read: Secret = serde_json::from_str("\"hunter2\"").unwrap();
        assert_eq!(read, secret);
        assert_eq!(Secret::from("hunter2"), secret);
    }
}
