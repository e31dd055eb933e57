//! Warnings found while loading a configuration (a key gnomon reads but does not apply, an
//! unknown key, …), returned with the configuration as data: the binary logs them, tests
//! assert on them.
//!
//! Parsers call [`warn`]; inside [`collect`] the warnings are gathered, elsewhere (e.g. a
//! target posted to the REST API) they are logged at once.

use std::cell::RefCell;
use std::fmt;

/// One warning about one configuration key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The dotted key path (`targets.r1.proxy`).
    pub key: String,
    /// What gnomon does instead, in one line.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl ConfigWarning {
    /// Logs the warning (the key as a field, the message as the text).
    pub fn log(&self) {
        tracing::warn!(key = %self.key, "{}", self.message);
    }
}

thread_local! {
    static COLLECTING: RefCell<Option<Vec<ConfigWarning>>> = const { RefCell::new(None) };
}

/// Reports a warning about `key`: collected inside [`collect`], logged otherwise.
pub fn warn(key: impl Into<String>, message: impl Into<String>) {
    let warning = ConfigWarning {
        key: key.into(),
        message: message.into(),
    };
    let unclaimed = COLLECTING.with(|cell| match cell.borrow_mut().as_mut() {
        Some(list) => {
            if !list.contains(&warning) {
                list.push(warning);
            }
            None
        }
        None => Some(warning),
    });
    if let Some(warning) = unclaimed {
        warning.log();
    }
}

/// Runs `f`, returning what it returned and the warnings it reported.
pub fn collect<T>(f: impl FnOnce() -> T) -> (T, Vec<ConfigWarning>) {
    let outer = COLLECTING.with(|cell| cell.borrow_mut().replace(Vec::new()));
    let result = f();
    let warnings = COLLECTING.with(|cell| {
        let mut slot = cell.borrow_mut();
        let mine = slot.take().unwrap_or_default();
        *slot = outer;
        mine
    });
    (result, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_inside_and_nests() {
        let ((), outer) = collect(|| {
            warn("a", "one");
            let ((), inner) = collect(|| warn("b", "two"));
            assert_eq!(inner.len(), 1);
            warn("a", "one");
        });
        assert_eq!(
            outer,
            vec![ConfigWarning {
                key: "a".into(),
                message: "one".into()
            }]
        );
    }
}
