//! A secret string (password, token) that never shows up in logs or API responses.

use serde::{Serialize, Serializer};
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "**** ****");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"****\"");
        assert_eq!(secret.expose(), "hunter2");
    }
}
