//! Configuration errors: each is one line naming the key, the bad value and what was expected.

use std::path::PathBuf;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    /// The file is not valid YAML / JSON / TOML.
    #[error("cannot parse {source_name}: {reason}")]
    Parse { source_name: String, reason: String },
    /// A value has the wrong type or form.
    #[error("{key}: {value} {problem}")]
    Invalid {
        key: String,
        value: String,
        problem: String,
    },
    /// A required value is missing.
    #[error("{key}: missing ({expected})")]
    Missing { key: String, expected: String },
    /// A name refers to something that is not defined (a subscription, an output).
    #[error("{key}: {name:?} is not a defined {kind} (defined: {known})")]
    UnknownReference {
        key: String,
        name: String,
        kind: &'static str,
        known: String,
    },
    /// A complete message from a section parser that names the key itself.
    #[error("{0}")]
    Message(String),
}

impl ConfigError {
    /// An `Invalid` error; `value` is shown as JSON so strings are quoted — except under a
    /// secret key (`password`, `token`), whose value is never repeated.
    pub fn invalid(
        key: impl Into<String>,
        value: &serde_json::Value,
        problem: impl Into<String>,
    ) -> Self {
        let key = key.into();
        let secret = key
            .rsplit('.')
            .next()
            .is_some_and(super::secret::is_secret_key);
        Self::Invalid {
            value: if secret {
                super::REDACTED.to_string()
            } else {
                value.to_string()
            },
            key,
            problem: problem.into(),
        }
    }

    /// The key path the error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. }
            | Self::Missing { key, .. }
            | Self::UnknownReference { key, .. } => Some(key),
            Self::Read { .. } | Self::Parse { .. } | Self::Message(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ConfigError;

    #[test]
    fn secret_values_are_not_repeated_in_errors() {
        let value = serde_json::json!({"nested": "hunter2"});
        for key in ["targets.r1.password", "token", "outputs.o.password"] {
            let message = ConfigError::invalid(key, &value, "is not a string").to_string();
            assert_eq!(message, format!("{key}: **** is not a string"));
        }
        let message = ConfigError::invalid("timeout", &value, "is not a duration").to_string();
        assert!(message.contains("hunter2"), "{message}");
    }
}
