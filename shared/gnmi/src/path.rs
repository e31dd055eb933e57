//! gnmic's textual path syntax, e.g.
//! `openconfig:/interfaces/interface[name=Ethernet1/1]/state/counters`.
//!
//! Syntax accepted by [`parse_path`]:
//! * An optional origin: the text before the first `:` when that `:` comes
//!   before any `/` or `[` and is followed by `/` or by the end of the input
//!   (`openconfig:/a`, `openconfig:`). So `srl_nokia-if:interface/x` has no
//!   origin; its first element is named `srl_nokia-if:interface`.
//! * Elements separated by `/`; leading, trailing and doubled `/` are ignored.
//! * Keys after an element name: `[k=v]`, repeated for several keys. A value
//!   runs up to the next unescaped `]`, so `/`, `=`, `:` and spaces need no
//!   escaping inside brackets.
//! * `\` escapes the next character everywhere (`\]`, `\[`, `\\`, `\/` in
//!   names, `\=` in key names). Unlike gnmic, escapes in element names are
//!   resolved rather than kept verbatim, so any name survives a round trip.
//! * Wildcards are ordinary text here: element `*`, element `...`, key value
//!   `*`; [`path_matches`] gives them their meaning.
//!
//! [`path_to_string`] prints the canonical form (keys sorted by name, minimal
//! escaping), so `path_to_string(&parse_path(s)?) == s` for canonical `s`.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::proto::gnmi::{Path, PathElem};

/// Why a path string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid gNMI path {input:?} at byte {position}: {reason}")]
pub struct PathError {
    /// The whole text that was being parsed.
    pub input: String,
    /// Byte offset of the offending character.
    pub position: usize,
    /// What is wrong there.
    pub reason: PathErrorReason,
}

/// The specific problem found by [`parse_path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathErrorReason {
    /// A `]` outside of any key.
    #[error("']' without a matching '['")]
    UnexpectedCloseBracket,
    /// A key started with `[` but has no `=` before its `]` or the end.
    #[error("key has no '=' (expected [name=value])")]
    KeyWithoutEquals,
    /// `[=value]`.
    #[error("key name is empty")]
    EmptyKeyName,
    /// The input ended inside a key.
    #[error("missing ']' to close the key")]
    UnclosedKey,
    /// The same key name twice on one element.
    #[error("duplicate key name on the same element")]
    DuplicateKey,
    /// Text right after a key's `]` that is neither `[`, `/` nor the end.
    #[error("expected '/', '[' or the end after ']'")]
    TextAfterKey,
    /// A `\` as the very last character.
    #[error("'\\' at the end of the input escapes nothing")]
    DanglingEscape,
}

/// Parses gnmic's path syntax into a gNMI `Path` (using `elem`, never the
/// deprecated `element`).
pub fn parse_path(s: &str) -> Result<Path, PathError> {
    let (origin, rest_start) = split_origin(s);
    let mut parser = Parser {
        input: s,
        bytes: s.as_bytes(),
        pos: rest_start,
    };
    let elem = parser.elems()?;
    Ok(Path {
        origin: origin.to_owned(),
        elem,
        ..Default::default()
    })
}

/// Returns the origin and the byte offset where the element part starts.
fn split_origin(s: &str) -> (&str, usize) {
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'/' | b'[' | b'\\' => break,
            b':' => {
                let next = s.as_bytes().get(i + 1);
                if next.is_none() || next == Some(&b'/') {
                    return (&s[..i], i + 1);
                }
                break;
            }
            _ => {}
        }
    }
    ("", 0)
}

struct Parser<'a> {
    input: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, position: usize, reason: PathErrorReason) -> PathError {
        PathError {
            input: self.input.to_owned(),
            position,
            reason,
        }
    }

    fn elems(&mut self) -> Result<Vec<PathElem>, PathError> {
        let mut elems = Vec::new();
        loop {
            while self.bytes.get(self.pos) == Some(&b'/') {
                self.pos += 1;
            }
            if self.pos >= self.bytes.len() {
                return Ok(elems);
            }
            elems.push(self.elem()?);
        }
    }

    /// One element: a name, then any number of `[k=v]`.
    fn elem(&mut self) -> Result<PathElem, PathError> {
        let name = self.text_until(b"/[", Some(b']'))?;
        let mut key = HashMap::new();
        while self.bytes.get(self.pos) == Some(&b'[') {
            let open = self.pos;
            self.pos += 1;
            let key_start = self.pos;
            let key_name = self.text_until(b"=[]", None)?;
            match self.bytes.get(self.pos) {
                Some(b'=') => {}
                None => return Err(self.error(open, PathErrorReason::KeyWithoutEquals)),
                Some(_) => return Err(self.error(self.pos, PathErrorReason::KeyWithoutEquals)),
            }
            if key_name.is_empty() {
                return Err(self.error(key_start, PathErrorReason::EmptyKeyName));
            }
            self.pos += 1;
            let value = self.text_until(b"]", None)?;
            if self.pos >= self.bytes.len() {
                return Err(self.error(open, PathErrorReason::UnclosedKey));
            }
            self.pos += 1;
            if key.insert(key_name, value).is_some() {
                return Err(self.error(key_start, PathErrorReason::DuplicateKey));
            }
        }
        match self.bytes.get(self.pos) {
            None | Some(b'/') => Ok(PathElem { name, key }),
            Some(_) => Err(self.error(self.pos, PathErrorReason::TextAfterKey)),
        }
    }

    /// Reads text up to (not including) one of `stops` or the end, resolving
    /// `\` escapes. `forbidden` is an unescaped byte that is an error here.
    fn text_until(&mut self, stops: &[u8], forbidden: Option<u8>) -> Result<String, PathError> {
        let start = self.pos;
        let mut out: Option<String> = None;
        let mut chunk_start = start;
        while let Some(&b) = self.bytes.get(self.pos) {
            if stops.contains(&b) {
                break;
            }
            if Some(b) == forbidden {
                return Err(self.error(self.pos, PathErrorReason::UnexpectedCloseBracket));
            }
            if b == b'\\' {
                let buf = out.get_or_insert_with(String::new);
                buf.push_str(&self.input[chunk_start..self.pos]);
                let escaped_at = self.pos + 1;
                let Some(ch) = self.input[escaped_at..].chars().next() else {
                    return Err(self.error(self.pos, PathErrorReason::DanglingEscape));
                };
                buf.push(ch);
                self.pos = escaped_at + ch.len_utf8();
                chunk_start = self.pos;
                continue;
            }
            // Delimiters are ASCII, so stepping one byte at a time never
            // matches inside a multi-byte character.
            self.pos += 1;
        }
        Ok(match out {
            Some(mut buf) => {
                buf.push_str(&self.input[chunk_start..self.pos]);
                buf
            }
            None => self.input[start..self.pos].to_owned(),
        })
    }
}

/// Prints a path in gnmic's syntax: `origin:` when the origin is set, then
/// `/name[k=v]…` per element with keys sorted by name; `/` for no elements.
/// The target is not part of the syntax and is not printed.
pub fn path_to_string(p: &Path) -> String {
    let elems = elems_of(p);
    let mut out = String::with_capacity(p.origin.len() + 1 + elems.len() * 16);
    if !p.origin.is_empty() {
        out.push_str(&p.origin);
        out.push(':');
    }
    if elems.is_empty() {
        out.push('/');
        return out;
    }
    for e in elems.iter() {
        out.push('/');
        push_escaped(&mut out, &e.name, &['\\', '/', '[', ']']);
        if e.key.len() == 1 {
            if let Some((k, v)) = e.key.iter().next() {
                push_key(&mut out, k, v);
            }
        } else if !e.key.is_empty() {
            let mut keys: Vec<(&String, &String)> = e.key.iter().collect();
            keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (k, v) in keys {
                push_key(&mut out, k, v);
            }
        }
    }
    out
}

fn push_key(out: &mut String, k: &str, v: &str) {
    out.push('[');
    push_escaped(out, k, &['\\', '=', '[', ']']);
    out.push('=');
    push_escaped(out, v, &['\\', '[', ']']);
    out.push(']');
}

fn push_escaped(out: &mut String, s: &str, special: &[char]) {
    if !s.contains(special) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// gnmic's key-less path text: `origin:` (if any) then `/name` for every
/// element with a non-empty name, names verbatim. An empty path gives `""`.
/// This is the event value key and the base of Prometheus metric names.
pub fn path_without_keys(p: &Path) -> String {
    let elems = elems_of(p);
    let mut out = String::with_capacity(keyless_len(&p.origin, &elems));
    push_without_keys(&mut out, &p.origin, elem_names(&elems));
    out
}

pub(crate) fn keyless_len(origin: &str, elems: &[PathElem]) -> usize {
    let origin_len = if origin.is_empty() {
        0
    } else {
        origin.len() + 1
    };
    origin_len + elems.iter().map(|e| e.name.len() + 1).sum::<usize>()
}

/// Appends [`path_without_keys`] of a path with `origin` and element `names` to `out`.
pub(crate) fn push_without_keys<'e>(
    out: &mut String,
    origin: &str,
    names: impl Iterator<Item = &'e str>,
) {
    if !origin.is_empty() {
        out.push_str(origin);
        out.push(':');
    }
    for name in names.filter(|name| !name.is_empty()) {
        out.push('/');
        out.push_str(name);
    }
}

/// The names of path elements, for [`push_without_keys`].
pub(crate) fn elem_names(elems: &[PathElem]) -> impl Iterator<Item = &str> {
    elems.iter().map(|e| e.name.as_str())
}

/// The elements of a path. Paths from old peers carry only the deprecated
/// `element` strings; those are read as elements too (each string may
/// itself be `name[k=v]`).
pub fn elems_of(p: &Path) -> Cow<'_, [PathElem]> {
    #[allow(deprecated)]
    let legacy = &p.element;
    if !p.elem.is_empty() || legacy.is_empty() {
        return Cow::Borrowed(&p.elem);
    }
    Cow::Owned(legacy.iter().map(|s| legacy_elem(s)).collect())
}

fn legacy_elem(s: &str) -> PathElem {
    let mut parser = Parser {
        input: s,
        bytes: s.as_bytes(),
        pos: 0,
    };
    match parser.elem() {
        Ok(e) if parser.pos == s.len() => e,
        _ => PathElem {
            name: s.to_owned(),
            key: HashMap::new(),
        },
    }
}

/// Joins a Notification/Request prefix and a path: elements are
/// concatenated; origin and target come from `path` when set there, else
/// from `prefix`.
pub fn join_paths(prefix: Option<&Path>, path: &Path) -> Path {
    let Some(prefix) = prefix else {
        return Path {
            origin: path.origin.clone(),
            elem: elems_of(path).into_owned(),
            target: path.target.clone(),
            ..Default::default()
        };
    };
    let prefix_elems = elems_of(prefix);
    let path_elems = elems_of(path);
    let mut elem = Vec::with_capacity(prefix_elems.len() + path_elems.len());
    elem.extend_from_slice(&prefix_elems);
    elem.extend_from_slice(&path_elems);
    let pick = |own: &String, inherited: &String| {
        if own.is_empty() {
            inherited.clone()
        } else {
            own.clone()
        }
    };
    Path {
        origin: pick(&path.origin, &prefix.origin),
        elem,
        target: pick(&path.target, &prefix.target),
        ..Default::default()
    }
}

/// Wildcard-aware prefix match, as used to answer Get and Subscribe:
/// does `concrete` lie at or below `pattern`?
///
/// * A pattern element named `*` matches any one element; `...` matches any
///   number of elements (including none).
/// * Names match when equal, or equal after dropping a `module:` prefix on
///   either side (`oc-if:interfaces` matches `interfaces`).
/// * A pattern key with value `*`, or a key the pattern leaves out, matches
///   anything; any other pattern key must be present with the same value.
/// * Origins must agree when both are set; targets are ignored.
pub fn path_matches(pattern: &Path, concrete: &Path) -> bool {
    if !pattern.origin.is_empty()
        && !concrete.origin.is_empty()
        && pattern.origin != concrete.origin
    {
        return false;
    }
    let pattern_elems = elems_of(pattern);
    let concrete_elems = elems_of(concrete);
    match_from(&pattern_elems, &concrete_elems)
}

fn match_from(pattern: &[PathElem], concrete: &[PathElem]) -> bool {
    let Some((first, rest)) = pattern.split_first() else {
        return true;
    };
    if first.name == "..." {
        // Try every depth the `...` could swallow.
        return (0..=concrete.len()).any(|skip| match_from(rest, &concrete[skip..]));
    }
    match concrete.split_first() {
        Some((c, concrete_rest)) => elem_matches(first, c) && match_from(rest, concrete_rest),
        None => false,
    }
}

fn elem_matches(pattern: &PathElem, concrete: &PathElem) -> bool {
    let name_ok = pattern.name == "*"
        || pattern.name == concrete.name
        || strip_module(&pattern.name) == strip_module(&concrete.name);
    name_ok
        && pattern.key.iter().all(|(k, v)| {
            v == "*"
                || concrete
                    .key
                    .get(k)
                    .is_some_and(|concrete_v| concrete_v == v)
        })
}

/// `module:name` → `name`.
pub(crate) fn strip_module(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// Formats a `Path` with [`path_to_string`] (for logs and error messages).
pub struct PathDisplay<'a>(pub &'a Path);

impl std::fmt::Display for PathDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&path_to_string(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elem(name: &str, keys: &[(&str, &str)]) -> PathElem {
        PathElem {
            name: name.to_owned(),
            key: keys
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn path(origin: &str, elems: Vec<PathElem>) -> Path {
        Path {
            origin: origin.to_owned(),
            elem: elems,
            ..Default::default()
        }
    }

    #[test]
    fn parses_interface_counters_path() {
        let p = parse_path("/interfaces/interface[name=Ethernet1/1]/state/counters").unwrap();
        assert_eq!(
            p,
            path(
                "",
                vec![
                    elem("interfaces", &[]),
                    elem("interface", &[("name", "Ethernet1/1")]),
                    elem("state", &[]),
                    elem("counters", &[]),
                ]
            )
        );
    }

    #[test]
    fn origin_needs_colon_before_slash_and_followed_by_slash_or_end() {
        assert_eq!(parse_path("openconfig:/a/b").unwrap().origin, "openconfig");
        assert_eq!(
            parse_path("openconfig-interfaces:/interfaces")
                .unwrap()
                .origin,
            "openconfig-interfaces"
        );
        let only = parse_path("origin:").unwrap();
        assert_eq!(only, path("origin", vec![]));
        assert_eq!(parse_path("origin:/").unwrap(), path("origin", vec![]));
        assert_eq!(parse_path(":").unwrap(), path("", vec![]));
        assert_eq!(parse_path(":/").unwrap(), path("", vec![]));
        // A module-qualified first element is not an origin.
        let p = parse_path("srl_nokia-interfaces:interface[name=ethernet-1/1]/statistics").unwrap();
        assert_eq!(p.origin, "");
        assert_eq!(p.elem[0].name, "srl_nokia-interfaces:interface");
        // A colon after the first '/' or inside a key is never an origin.
        let p = parse_path("/a:b/c").unwrap();
        assert_eq!((p.origin.as_str(), p.elem[0].name.as_str()), ("", "a:b"));
        let p = parse_path("e1[k=v:/x]").unwrap();
        assert_eq!(p.origin, "");
        assert_eq!(p.elem[0].key["k"], "v:/x");
        let p = parse_path("origin:/e1:e1[k=1.1.1.1/32]/e2:e3[k1=v2]").unwrap();
        assert_eq!(p.origin, "origin");
        assert_eq!(p.elem[0].name, "e1:e1");
        assert_eq!(p.elem[1].name, "e2:e3");
    }

    #[test]
    fn empty_and_slash_only_paths_are_empty() {
        assert_eq!(parse_path("").unwrap(), Path::default());
        assert_eq!(parse_path("/").unwrap(), Path::default());
        assert_eq!(path_to_string(&Path::default()), "/");
        assert_eq!(path_to_string(&path("oc", vec![])), "oc:/");
    }

    #[test]
    fn leading_trailing_and_double_slashes_are_ignored() {
        let expected = path("", vec![elem("a", &[]), elem("b", &[])]);
        assert_eq!(parse_path("a/b").unwrap(), expected);
        assert_eq!(parse_path("/a/b/").unwrap(), expected);
        assert_eq!(parse_path("//a//b").unwrap(), expected);
    }

    #[test]
    fn several_keys_and_special_characters_in_values() {
        let p = parse_path(r"/e[b=2][a=x/y=z w:1]/f[k=\]\[\\]").unwrap();
        assert_eq!(p.elem[0].key["a"], "x/y=z w:1");
        assert_eq!(p.elem[0].key["b"], "2");
        assert_eq!(p.elem[1].key["k"], r"][\");
        assert_eq!(path_to_string(&p), r"/e[a=x/y=z w:1][b=2]/f[k=\]\[\\]");
    }

    #[test]
    fn unescaped_open_bracket_in_value_is_accepted() {
        let p = parse_path("/e[k=[v]").unwrap();
        assert_eq!(p.elem[0].key["k"], "[v");
        assert_eq!(path_to_string(&p), r"/e[k=\[v]");
    }

    #[test]
    fn escaped_key_names_and_element_names_round_trip() {
        let p = path(
            "",
            vec![elem("a/b[c]", &[("x=y", "1")]), elem(r"back\slash", &[])],
        );
        let s = path_to_string(&p);
        assert_eq!(s, r"/a\/b\[c\][x\=y=1]/back\\slash");
        assert_eq!(parse_path(&s).unwrap(), p);
    }

    #[test]
    fn empty_key_value_is_accepted() {
        let p = parse_path("/e[k=]").unwrap();
        assert_eq!(p.elem[0].key["k"], "");
        assert_eq!(path_to_string(&p), "/e[k=]");
    }

    #[test]
    fn wildcards_parse_as_plain_text() {
        let p = parse_path("/interfaces/interface[name=*]/.../*").unwrap();
        assert_eq!(p.elem[1].key["name"], "*");
        assert_eq!(p.elem[2].name, "...");
        assert_eq!(p.elem[3].name, "*");
        assert_eq!(path_to_string(&p), "/interfaces/interface[name=*]/.../*");
    }

    fn reason(s: &str) -> (PathErrorReason, usize) {
        let e = parse_path(s).unwrap_err();
        (e.reason, e.position)
    }

    #[test]
    fn malformed_paths_name_the_problem_and_position() {
        assert_eq!(reason("/e1/e2[k=v"), (PathErrorReason::UnclosedKey, 6));
        assert_eq!(
            reason("/e1/e2k=v]"),
            (PathErrorReason::UnexpectedCloseBracket, 9)
        );
        assert_eq!(reason("/e1/e2[k]"), (PathErrorReason::KeyWithoutEquals, 8));
        assert_eq!(reason("/e1/e2[k"), (PathErrorReason::KeyWithoutEquals, 6));
        assert_eq!(reason("/e[=v]"), (PathErrorReason::EmptyKeyName, 3));
        assert_eq!(reason("/e[k=1][k=2]"), (PathErrorReason::DuplicateKey, 8));
        assert_eq!(reason("/e[k=1]x/f"), (PathErrorReason::TextAfterKey, 7));
        assert_eq!(reason(r"/e\"), (PathErrorReason::DanglingEscape, 2));
        let msg = parse_path("/e1/e2[k=v").unwrap_err().to_string();
        assert!(msg.contains("\"/e1/e2[k=v\""), "{msg}");
        assert!(msg.contains("byte 6"), "{msg}");
        assert!(msg.contains("missing ']'"), "{msg}");
    }

    #[test]
    fn prints_keys_sorted_and_origin() {
        let p = path(
            "openconfig",
            vec![elem("n", &[("z", "1"), ("a", "2"), ("m", "3")])],
        );
        assert_eq!(path_to_string(&p), "openconfig:/n[a=2][m=3][z=1]");
    }

    #[test]
    #[allow(deprecated)]
    fn legacy_element_strings_are_read_as_elems() {
        let p = Path {
            element: vec![
                "interfaces".into(),
                "interface[name=eth0]".into(),
                "bad[".into(),
            ],
            ..Default::default()
        };
        let elems = elems_of(&p);
        assert_eq!(elems[1], elem("interface", &[("name", "eth0")]));
        assert_eq!(elems[2], elem("bad[", &[]));
        assert_eq!(
            path_to_string(&p),
            r"/interfaces/interface[name=eth0]/bad\["
        );
        // elem wins when both are present.
        let both = Path {
            element: vec!["old".into()],
            elem: vec![elem("new", &[])],
            ..Default::default()
        };
        assert_eq!(path_to_string(&both), "/new");
        // join output uses elem only.
        let joined = join_paths(Some(&p), &both);
        assert!(joined.element.is_empty());
        assert_eq!(
            path_to_string(&joined),
            r"/interfaces/interface[name=eth0]/bad\[/new"
        );
    }

    #[test]
    fn join_keeps_prefix_origin_and_target_unless_path_sets_them() {
        let mut prefix = parse_path("oc:/interfaces/interface[name=e1]").unwrap();
        prefix.target = "dev1".into();
        let p = parse_path("state/counters").unwrap();
        let j = join_paths(Some(&prefix), &p);
        assert_eq!(
            path_to_string(&j),
            "oc:/interfaces/interface[name=e1]/state/counters"
        );
        assert_eq!(j.target, "dev1");
        let mut own = parse_path("other:/x").unwrap();
        own.target = "dev2".into();
        let j = join_paths(Some(&prefix), &own);
        assert_eq!((j.origin.as_str(), j.target.as_str()), ("other", "dev2"));
        assert_eq!(join_paths(None, &own), own);
    }

    #[test]
    fn without_keys_is_gnmic_value_key() {
        let p = parse_path("oc:/interfaces/interface[name=e1]/state").unwrap();
        assert_eq!(path_without_keys(&p), "oc:/interfaces/interface/state");
        let p = parse_path("/srl:interface[name=e1]/x").unwrap();
        assert_eq!(path_without_keys(&p), "/srl:interface/x");
        assert_eq!(path_without_keys(&Path::default()), "");
        // Unnamed elements are skipped.
        let p = path("", vec![elem("", &[("k", "v")]), elem("a", &[])]);
        assert_eq!(path_without_keys(&p), "/a");
    }

    fn matches(pattern: &str, concrete: &str) -> bool {
        path_matches(
            &parse_path(pattern).unwrap(),
            &parse_path(concrete).unwrap(),
        )
    }

    #[test]
    fn matching_is_prefix_based_and_wildcard_aware() {
        let leaf = "/interfaces/interface[name=e1]/state/counters/in-octets";
        assert!(matches("/", leaf));
        assert!(matches("/interfaces", leaf));
        assert!(matches("/interfaces/interface[name=e1]", leaf));
        assert!(matches("/interfaces/interface", leaf));
        assert!(matches("/interfaces/interface[name=*]/state", leaf));
        assert!(matches("/interfaces/*/state", leaf));
        assert!(matches("/interfaces/.../in-octets", leaf));
        assert!(matches("/.../counters", leaf));
        assert!(matches("/...", leaf));
        assert!(matches(leaf, leaf));
        assert!(!matches("/interfaces/interface[name=e2]", leaf));
        assert!(!matches("/interfaces/interface[name=e1][unit=0]", leaf));
        assert!(matches("/interfaces/interface[name=e1][unit=*]", leaf));
        assert!(!matches("/system", leaf));
        assert!(!matches("/interfaces/.../out-octets", leaf));
        assert!(!matches(&format!("{leaf}/deeper"), leaf));
        assert!(matches("/oc-if:interfaces/interface", leaf));
        assert!(matches("oc:/interfaces", leaf));
        assert!(!matches("oc:/interfaces", &format!("other:{leaf}")));
        assert!(matches("/interfaces", &format!("other:{leaf}")));
    }
}
