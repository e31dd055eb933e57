//! `$VAR` / `${VAR}` expansion exactly as Go's `os.ExpandEnv` does it, applied where gnmic
//! applies it, and the fail-closed rule for security settings.
//!
//! Go's rules (`os.Expand`): `${name}` and `$name` (name: ASCII letters, digits, `_`) are
//! replaced by the variable's value, empty when unset; `$` followed by one of the shell's
//! special characters (`*#$@!?-` or a digit) names that one-character variable, so `$$` is
//! the variable `$` (normally unset, hence `pa$$w0rd` reads `paw0rd`) and `$1` the variable
//! `1`; `${}` and an unclosed `${` are bad syntax and dropped; a `$` followed by anything
//! else (or at the end) stays as it is.
//!
//! Where gnmic expands: outputs, inputs (except `msg-template` and `target-template`),
//! `clustering` (its locker included) and `api-server` completely; top-level settings
//! (`password` and `token` only when they start with `$`); targets' `name`, `address`,
//! `username`, `token`, `tls-ca`, `tls-cert`, `tls-key`, `subscriptions`, `outputs`, and
//! `password` only when it starts with `$`. Subscriptions are not expanded.

use super::ConfigError;
use serde_json::{Map, Value};

fn is_special(c: u8) -> bool {
    matches!(
        c,
        b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
    )
}

fn is_name(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphanumeric()
}

/// What follows a `$`: the variable name (None: leave the `$`; Some(""): bad syntax, drop)
/// and how many bytes after the `$` it used.
fn shell_name(s: &[u8]) -> (Option<&[u8]>, usize) {
    if s[0] == b'{' {
        if s.len() > 2 && is_special(s[1]) && s[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        return match s.iter().skip(1).position(|&c| c == b'}') {
            Some(0) => (Some(b""), 2),
            Some(end) => (Some(&s[1..=end]), end + 2),
            None => (Some(b""), 1),
        };
    }
    if is_special(s[0]) {
        return (Some(&s[..1]), 1);
    }
    let len = s.iter().take_while(|&&c| is_name(c)).count();
    if len == 0 {
        (None, 0)
    } else {
        (Some(&s[..len]), len)
    }
}

/// Go's `os.Expand` with `lookup` as the mapping.
pub fn go_expand(text: &str, lookup: impl Fn(&str) -> String) -> String {
    if !text.contains('$') {
        return text.to_string();
    }
    let bytes = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(text.len());
    let mut copied = 0;
    let mut j = 0;
    while j < bytes.len() {
        if bytes[j] == b'$' && j + 1 < bytes.len() {
            out.extend_from_slice(&bytes[copied..j]);
            let (name, used) = shell_name(&bytes[j + 1..]);
            match name {
                None => out.push(b'$'),
                Some(b"") => {}
                // Names are ASCII (or the bytes between braces of a UTF-8 string, which
                // end at an ASCII `}`), so this is valid UTF-8.
                Some(name) => {
                    out.extend_from_slice(lookup(&String::from_utf8_lossy(name)).as_bytes())
                }
            }
            j += used;
            copied = j + 1;
        }
        j += 1;
    }
    out.extend_from_slice(&bytes[copied.min(bytes.len())..]);
    String::from_utf8_lossy(&out).into_owned()
}

/// Go's `os.ExpandEnv`: unset variables read as empty.
pub fn expand_env_vars(text: &str) -> String {
    go_expand(text, |name| std::env::var(name).unwrap_or_default())
}

/// The variables `text` refers to (for messages: their names, never their values).
fn referenced_names(text: &str) -> Vec<String> {
    let names = std::cell::RefCell::new(Vec::new());
    go_expand(text, |name| {
        names.borrow_mut().push(name.to_string());
        String::new()
    });
    names.into_inner()
}

/// Keys whose value turns a security feature on: when written but expanded to nothing,
/// the start is refused instead of running with the feature off.
pub fn is_security_key(key: &str) -> bool {
    matches!(
        key,
        "password"
            | "token"
            | "tls-ca"
            | "tls-cert"
            | "tls-key"
            | "ca-file"
            | "cert-file"
            | "key-file"
            | "credentials-file"
            | "credentials"
    )
}

/// Expands one string value at `path` (`key` is its last element), failing closed.
fn expand_string(path: &str, key: &str, text: &str) -> Result<String, ConfigError> {
    let expanded = expand_env_vars(text);
    if is_security_key(key) && !text.trim().is_empty() && expanded.trim().is_empty() {
        let names = referenced_names(text);
        let what = match names.as_slice() {
            [] => "expands to nothing".to_string(),
            [one] => format!("refers to ${one}, which is unset or empty"),
            many => format!(
                "refers to {}, which expand to nothing",
                many.iter()
                    .map(|n| format!("${n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        return Err(ConfigError::Message(format!(
            "{path}: {what}; a configured security setting must not resolve to empty \
             (gnomon refuses to start with it silently off)"
        )));
    }
    Ok(expanded)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Expands every string below `value` (maps and lists, at any depth).
fn expand_all(path: &str, key: &str, value: &mut Value) -> Result<(), ConfigError> {
    match value {
        Value::String(text) => *text = expand_string(path, key, text)?,
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_all(&format!("{path}[{i}]"), key, item)?;
            }
        }
        Value::Object(map) => expand_map(path, map, &[])?,
        _ => {}
    }
    Ok(())
}

fn expand_map(
    path: &str,
    map: &mut Map<String, Value>,
    except: &[&str],
) -> Result<(), ConfigError> {
    for (key, value) in map.iter_mut() {
        if !except.contains(&key.as_str()) {
            expand_all(&join(path, key), key, value)?;
        }
    }
    Ok(())
}

/// gnmic's rule for `password` (and the top-level `token`): expanded only when it starts
/// with `$`, so a literal password containing `$` is kept as written.
fn expand_if_leading_dollar(path: &str, key: &str, value: &mut Value) -> Result<(), ConfigError> {
    if let Value::String(text) = value {
        if text.starts_with('$') {
            *text = expand_string(path, key, text)?;
        }
    }
    Ok(())
}

const TARGET_EXPANDED: [&str; 9] = [
    "name",
    "address",
    "username",
    "token",
    "tls-ca",
    "tls-cert",
    "tls-key",
    "subscriptions",
    "outputs",
];

/// Expands `$VAR` in the tree where gnmic does (see the module docs).
pub fn expand_tree(tree: &mut Value) -> Result<(), ConfigError> {
    let Value::Object(root) = tree else {
        return Ok(());
    };
    for (key, value) in root.iter_mut() {
        let path = key.clone();
        match key.as_str() {
            "outputs" | "inputs" => {
                if let Value::Object(entries) = value {
                    for (name, entry) in entries.iter_mut() {
                        if let Value::Object(map) = entry {
                            expand_map(
                                &join(&path, name),
                                map,
                                &["msg-template", "target-template"],
                            )?;
                        }
                    }
                }
            }
            "clustering" | "api-server" => expand_all(&path, key, value)?,
            "targets" => {
                if let Value::Object(targets) = value {
                    for (name, target) in targets.iter_mut() {
                        let Value::Object(map) = target else { continue };
                        let target_path = join(&path, name);
                        for (field, value) in map.iter_mut() {
                            let field_path = join(&target_path, field);
                            if field == "password" {
                                expand_if_leading_dollar(&field_path, field, value)?;
                            } else if TARGET_EXPANDED.contains(&field.as_str()) {
                                expand_all(&field_path, field, value)?;
                            }
                        }
                    }
                }
            }
            "password" | "token" => expand_if_leading_dollar(&path, key, value)?,
            // Top-level settings (gnmic's global flags); sections not listed keep their text.
            _ if !value.is_object() => expand_all(&path, key, value)?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> String {
        match name {
            "HOME" => "/home/u".into(),
            "A" => "x".into(),
            "a-b" => "dash".into(),
            "1" => "one".into(),
            "-" => "minus".into(),
            _ => String::new(),
        }
    }

    /// Each case was checked against Go's `os.Expand` with the mapping above.
    #[test]
    fn matches_go_os_expand() {
        for (input, expected) in [
            ("plain", "plain"),
            ("$HOME/x", "/home/u/x"),
            ("${HOME}x", "/home/ux"),
            ("pa$$w0rd", "paw0rd"),
            ("$$", ""),
            ("$1abc", "oneabc"),
            ("${1}", "one"),
            ("$-", "minus"),
            ("${-}", "minus"),
            ("${a-b}", "dash"),
            ("${}", ""),
            ("x${}y", "xy"),
            ("${A", "A"),
            ("a${", "a"),
            ("cost $", "cost $"),
            ("$ 5", "$ 5"),
            ("$%x", "$%x"),
            ("$Aé", "xé"),
            ("$é", "$é"),
            ("${é}", ""),
            ("$UNSET-x", "-x"),
            ("$A$A", "xx"),
            ("$", "$"),
        ] {
            assert_eq!(go_expand(input, env), expected, "{input:?}");
        }
    }

    #[test]
    fn expands_where_gnmic_does() {
        std::env::set_var("GNOMON_EXPAND_TEST_X", "val");
        let mut tree = json!({
            "username": "$GNOMON_EXPAND_TEST_X",
            "password": "pa$$w0rd",
            "targets": {"t": {"address": "${GNOMON_EXPAND_TEST_X}:1", "password": "p$GNOMON_EXPAND_TEST_X",
                               "event-tags": {"k": "$GNOMON_EXPAND_TEST_X"}}},
            "subscriptions": {"s": {"paths": ["/$GNOMON_EXPAND_TEST_X"]}},
            "outputs": {"o": {"password": "pa$$w0rd", "msg-template": "$GNOMON_EXPAND_TEST_X"}},
            "clustering": {"locker": {"address": "$GNOMON_EXPAND_TEST_X"}},
        });
        expand_tree(&mut tree).unwrap();
        assert_eq!(tree["username"], "val");
        assert_eq!(tree["password"], "pa$$w0rd");
        assert_eq!(tree["targets"]["t"]["address"], "val:1");
        assert_eq!(tree["targets"]["t"]["password"], "p$GNOMON_EXPAND_TEST_X");
        assert_eq!(
            tree["targets"]["t"]["event-tags"]["k"],
            "$GNOMON_EXPAND_TEST_X"
        );
        assert_eq!(
            tree["subscriptions"]["s"]["paths"][0],
            "/$GNOMON_EXPAND_TEST_X"
        );
        assert_eq!(tree["outputs"]["o"]["password"], "paw0rd");
        assert_eq!(
            tree["outputs"]["o"]["msg-template"],
            "$GNOMON_EXPAND_TEST_X"
        );
        assert_eq!(tree["clustering"]["locker"]["address"], "val");
    }
}
