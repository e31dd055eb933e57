//! Regex selectors (`tags`, `tag-names`, `values`, `value-names`) and jq
//! conditions, shared by most processor types.

use regex::{Regex, RegexSet};

use crate::record::{Record, Val};

use crate::config::Fields;
use crate::error::ProcessorError;
use crate::jq::Jq;

/// A list of patterns, matched as "any of them". Patterns that are plain
/// text with anchors (`^x$`, `x$`, `^x`, `x`, `.*x.*`, `.*x$`) are matched as
/// string comparisons, which is what most gnmic configs use and several
/// times cheaper than a regex search; the rest go through one `RegexSet`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Matcher {
    regexes: Vec<Regex>,
    how: How,
}

/// How a [`Matcher`] decides, chosen once from its patterns so that the
/// common cases (no pattern, `.*`, one literal) are one branch on the hot
/// path.
#[derive(Debug, Clone, Default)]
enum How {
    /// No pattern: nothing matches.
    #[default]
    Nothing,
    /// Some pattern matches every string (`.*`, `^.*$`, empty pattern).
    All,
    /// One pattern, literal text between optional anchors.
    One(Literal),
    /// Literal patterns compared first, then the others as one regex (or
    /// one `RegexSet` for several).
    Any {
        literal: Vec<Literal>,
        set: Option<RegexSet>,
        single: Option<Regex>,
    },
}

/// A pattern that is literal text between optional anchors.
#[derive(Debug, Clone)]
enum Literal {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
}

impl Literal {
    fn parse(pattern: &str) -> Option<Self> {
        let (anchored_start, rest) = match pattern.strip_prefix('^') {
            Some(r) => (true, r),
            None => (false, pattern.strip_prefix(".*").unwrap_or(pattern)),
        };
        let (anchored_end, body) = match rest.strip_suffix('$') {
            // `\$` is an escaped dollar, not an anchor.
            Some(b) if !b.ends_with('\\') => (true, b),
            _ => (false, rest.strip_suffix(".*").unwrap_or(rest)),
        };
        if body.is_empty() || body.chars().any(|c| "\\.+*?()|[]{}^$".contains(c)) {
            return None;
        }
        let body = body.to_string();
        Some(match (anchored_start, anchored_end) {
            (true, true) => Literal::Exact(body),
            (true, false) => Literal::Prefix(body),
            (false, true) => Literal::Suffix(body),
            (false, false) => Literal::Contains(body),
        })
    }

    #[inline(always)]
    fn is_match(&self, s: &str) -> bool {
        match self {
            Literal::Exact(l) => s == l,
            Literal::Prefix(l) => s.starts_with(l.as_str()),
            Literal::Suffix(l) => s.ends_with(l.as_str()),
            Literal::Contains(l) => s.contains(l.as_str()),
        }
    }
}

impl Matcher {
    pub(crate) fn new(regexes: Vec<Regex>) -> Self {
        let how = if regexes.is_empty() {
            How::Nothing
        } else if regexes.iter().any(|r| matches_everything(r.as_str())) {
            How::All
        } else {
            let mut literal = Vec::new();
            let mut rest = Vec::new();
            for r in &regexes {
                match Literal::parse(r.as_str()) {
                    Some(l) => literal.push(l),
                    None => rest.push(r.clone()),
                }
            }
            if rest.is_empty() && literal.len() == 1 {
                How::One(literal.remove(0))
            } else {
                let (set, single) = match rest.len() {
                    0 => (None, None),
                    1 => (None, rest.pop()),
                    _ => (RegexSet::new(rest.iter().map(Regex::as_str)).ok(), None),
                };
                How::Any {
                    literal,
                    set,
                    single,
                }
            }
        };
        Self { regexes, how }
    }

    pub(crate) fn from_field(f: &Fields<'_>, key: &'static str) -> Result<Self, ProcessorError> {
        Ok(Self::new(f.regexes(key)?))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.regexes.is_empty()
    }

    #[inline]
    pub(crate) fn is_match(&self, s: &str) -> bool {
        match &self.how {
            How::Nothing => false,
            How::All => true,
            How::One(l) => l.is_match(s),
            How::Any {
                literal,
                set,
                single,
            } => {
                literal.iter().any(|l| l.is_match(s))
                    || single.as_ref().is_some_and(|r| r.is_match(s))
                    || set.as_ref().is_some_and(|set| set.is_match(s))
            }
        }
    }

    /// True when the value is a string one pattern matches (gnmic only
    /// matches `values` patterns against string values).
    #[inline]
    pub(crate) fn is_match_value(&self, v: &Val) -> bool {
        match v {
            Val::Str(s) => self.is_match(s),
            _ => false,
        }
    }
}

fn matches_everything(pattern: &str) -> bool {
    matches!(
        pattern,
        "" | ".*" | "^.*" | ".*$" | "^.*$" | "(.*)" | "^(.*)$"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &[&str]) -> Matcher {
        Matcher::new(p.iter().map(|p| Regex::new(p).unwrap()).collect())
    }

    #[test]
    fn literal_patterns_agree_with_regex() {
        let patterns = [
            "^decommissioned$",
            "octets$",
            "^/interfaces",
            "multicast",
            ".*multicast.*",
            ".*-state$",
            "^.*x",
            "a\\$",
            "a.b",
            "172.23.23.2*",
            "^(resource_id|source)$",
            ".",
            "x$",
        ];
        let inputs = [
            "decommissioned",
            "xdecommissioned",
            "/a/in-octets",
            "octets-x",
            "/interfaces/i",
            "in-multicast-pkts",
            "oper-state",
            "oper-state-x",
            "a$",
            "axb",
            "172.23.23.2:57400",
            "source",
            "",
            "x",
            "\n",
        ];
        for p in patterns {
            let re = Regex::new(p).unwrap();
            let fast = m(&[p]);
            for s in inputs {
                assert_eq!(fast.is_match(s), re.is_match(s), "pattern {p:?} on {s:?}");
            }
        }
        assert!(m(&["^a$", "b$"]).is_match("xb"));
        assert!(!m(&[]).is_match("x"));
        assert!(m(&["^a$", ".*"]).is_match("x"));
        let patterns = ["^a$", "b.c", "x+y$", "^(p|q)"];
        let mixed = m(&patterns);
        let res: Vec<Regex> = patterns.iter().map(|p| Regex::new(p).unwrap()).collect();
        for s in ["a", "ba", "bxc", "xxy", "xxyz", "q1", "1q", ""] {
            assert_eq!(
                mixed.is_match(s),
                res.iter().any(|r| r.is_match(s)),
                "{patterns:?} on {s:?}"
            );
        }
    }
}

/// The four selector lists most processors take.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selectors {
    pub(crate) tag_names: Matcher,
    pub(crate) tags: Matcher,
    pub(crate) value_names: Matcher,
    pub(crate) values: Matcher,
}

impl Selectors {
    pub(crate) fn from_fields(f: &Fields<'_>) -> Result<Self, ProcessorError> {
        Ok(Self {
            tag_names: Matcher::from_field(f, "tag-names")?,
            tags: Matcher::from_field(f, "tags")?,
            value_names: Matcher::from_field(f, "value-names")?,
            values: Matcher::from_field(f, "values")?,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tag_names.is_empty()
            && self.tags.is_empty()
            && self.value_names.is_empty()
            && self.values.is_empty()
    }

    /// Some value name, string value, tag name or tag value matches.
    pub(crate) fn any_match(&self, e: &Record) -> bool {
        let (vn, vv) = (!self.value_names.is_empty(), !self.values.is_empty());
        if vn && e.values.keys().any(|k| self.value_names.is_match(k)) {
            return true;
        }
        if vv && e.values.values().any(|v| self.values.is_match_value(v)) {
            return true;
        }
        let (tn, tv) = (!self.tag_names.is_empty(), !self.tags.is_empty());
        if tn && e.tags.keys().any(|k| self.tag_names.is_match(k)) {
            return true;
        }
        tv && e.tags.values().any(|v| self.tags.is_match(v))
    }
}

/// A jq `condition`, evaluated per event.
#[derive(Debug)]
pub(crate) struct Condition {
    jq: Jq,
    processor: String,
}

impl Condition {
    /// Reads and compiles the `condition` field; empty means none.
    pub(crate) fn from_field(f: &Fields<'_>) -> Result<Option<Self>, ProcessorError> {
        Self::from_key(f, "condition")
    }

    pub(crate) fn from_key(
        f: &Fields<'_>,
        key: &'static str,
    ) -> Result<Option<Self>, ProcessorError> {
        match f.string(key)? {
            None => Ok(None),
            Some(code) if code.trim().is_empty() => Ok(None),
            Some(code) => Jq::compile(&code)
                .map(|jq| {
                    Some(Self {
                        jq,
                        processor: f.processor.to_string(),
                    })
                })
                .map_err(|e| f.err_str(key, &code, e)),
        }
    }

    pub(crate) fn compile(processor: &str, code: &str) -> Result<Self, String> {
        Ok(Self {
            jq: Jq::compile(code)?,
            processor: processor.to_string(),
        })
    }

    /// The condition's verdict; an evaluation error is logged and returned.
    pub(crate) fn check(&self, e: &Record) -> Result<bool, ()> {
        self.jq.check(e).map_err(|err| {
            tracing::warn!(
                processor = self.processor.as_str(),
                condition = self.jq.source(),
                error = err.as_str(),
                "condition check failed"
            );
        })
    }
}
