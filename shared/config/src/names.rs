//! The one rule for names of targets, subscriptions, outputs, inputs and processors: a
//! name must survive a URL path segment (`/api/v1/targets/{name}`) and a coordination store
//! key (`gnmic/<cluster>/targets/<name>`) unchanged, so it is checked once, where it enters
//! (config file, REST body, loader).

use super::ConfigError;
use serde_json::Value;

/// Longest name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// What a name is for (shown in messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    Target,
    Subscription,
    Output,
    Input,
    Processor,
}

impl NameKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Target => "target",
            Self::Subscription => "subscription",
            Self::Output => "output",
            Self::Input => "input",
            Self::Processor => "processor",
        }
    }
}

/// Why `name` cannot be used, if it cannot.
pub fn problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        return Some("is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!("is longer than {MAX_NAME_LEN} bytes"));
    }
    if name == "." || name == ".." {
        return Some("is a relative path element".into());
    }
    if name.contains('/') {
        return Some("contains '/'".into());
    }
    if name.chars().any(char::is_control) {
        return Some("contains a control character".into());
    }
    None
}

/// Checks a name given at `key`, naming the key, the value and the rule when it fails.
pub fn check(kind: NameKind, key: &str, name: &str) -> Result<(), ConfigError> {
    match problem(name) {
        None => Ok(()),
        Some(why) => Err(ConfigError::invalid(
            key,
            &Value::String(name.to_string()),
            format!(
                "{why} (expected a {} name: 1-{MAX_NAME_LEN} bytes, no '/', no control \
                 characters, not \".\" or \"..\")",
                kind.as_str()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_fit_a_path_segment_and_a_store_key() {
        for good in ["r1", "10.0.0.1:57400", "leaf-1.lab", "a b", "é"] {
            assert!(problem(good).is_none(), "{good:?}");
        }
        let long = "x".repeat(129);
        for bad in ["", " ", ".", "..", "a/b", "a\nb", "x\u{7f}", long.as_str()] {
            assert!(problem(bad).is_some(), "{bad:?}");
        }
        let err = check(NameKind::Target, "targets", "a/b")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("targets: \"a/b\" contains '/'"), "{err}");
    }
}
