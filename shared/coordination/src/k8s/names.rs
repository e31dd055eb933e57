//! Object names for keys: a reversible escaping of gnomon's keys into DNS-1123 subdomains
//! (what a Lease name must be: at most 253 characters, dot-separated labels of `[a-z0-9-]`
//! that start and end with a letter or digit).
//!
//! Each `/`-separated segment of the key becomes one label:
//! * `a`–`z` (except `q`) and `0`–`9` stay as they are;
//! * `-` stays, except as a segment's first or last character;
//! * every other byte (`q`, `.`, `_`, `:`, upper case, UTF-8 bytes, a leading or trailing
//!   `-`) becomes `q` and two lowercase hex digits (`q`: the rarest letter in names).
//!
//! `gnmic/lab/targets/router1.example.com:57400` → `gnmic.lab.targets.router1q2eexampleq2ecomq3a57400`.
//! A key that cannot be written that way (an empty segment, or longer than 253 characters
//! escaped) gets `q.<sha-256 of the key in hex>` instead: never the result of the escaping (an
//! escaped label never is a lone `q`), and the key is always kept in the object's
//! `original-key` annotation, which listings read.

/// Longest name of a Kubernetes object in a DNS-1123 subdomain.
pub(crate) const MAX_NAME: usize = 253;

fn literal(byte: u8) -> bool {
    (byte.is_ascii_lowercase() && byte != b'q') || byte.is_ascii_digit()
}

/// The escaped form of `key`, if it fits (see the module docs).
fn escaped(key: &str) -> Option<String> {
    let mut out = String::with_capacity(key.len() + 8);
    for (i, segment) in key.split('/').enumerate() {
        if segment.is_empty() {
            return None;
        }
        if i > 0 {
            out.push('.');
        }
        let bytes = segment.as_bytes();
        for (j, &byte) in bytes.iter().enumerate() {
            let inner_dash = byte == b'-' && j != 0 && j != bytes.len() - 1;
            if literal(byte) || inner_dash {
                out.push(byte as char);
            } else {
                out.push_str(&format!("q{byte:02x}"));
            }
        }
        if out.len() > MAX_NAME {
            return None;
        }
    }
    Some(out)
}

/// The object name of `key`.
pub(crate) fn object_name(key: &str) -> String {
    escaped(key).unwrap_or_else(|| {
        let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("q.{hex}")
    })
}

#[cfg(test)]
/// The key an escaped name stands for (`None` for a hashed name or a name not made by
/// [`object_name`]).
pub(crate) fn key_of(name: &str) -> Option<String> {
    let mut out = Vec::with_capacity(name.len());
    for (i, label) in name.split('.').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        let bytes = label.as_bytes();
        let mut j = 0;
        while j < bytes.len() {
            if bytes[j] == b'q' {
                let hex = std::str::from_utf8(bytes.get(j + 1..j + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                j += 3;
            } else {
                out.push(bytes[j]);
                j += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `name` is a valid DNS-1123 subdomain (what the API server checks).
#[cfg(test)]
fn is_dns1123_subdomain(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && alnum(bytes[0])
                && alnum(bytes[bytes.len() - 1])
                && bytes.iter().all(|&b| alnum(b) || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gnmic_keys_escape_readably_and_reversibly() {
        let key = "gnmic/lab/targets/router1.example.com:57400";
        let name = object_name(key);
        assert_eq!(name, "gnmic.lab.targets.router1q2eexampleq2ecomq3a57400");
        assert!(is_dns1123_subdomain(&name));
        assert_eq!(key_of(&name).as_deref(), Some(key));
        assert_eq!(object_name("gnmic/lab/leader"), "gnmic.lab.leader");
        assert_eq!(
            object_name("gnmic-services/lab-gnmic-api/g1-api"),
            "gnmic-services.lab-gnmic-api.g1-api"
        );
    }

    #[test]
    fn every_key_gets_a_valid_distinct_name() {
        let keys = [
            "a",
            "-",
            "-a-",
            "a--b",
            "x",
            "qq/q71",
            "UPPER/lower",
            "a.b/c_d",
            "ünïcode/ key",
            "gnmic/c/targets/10.0.0.1:57400",
            "/leading",
            "trailing/",
            "double//slash",
            "",
        ];
        let long = "k/".repeat(200);
        let mut names = std::collections::BTreeSet::new();
        for key in keys.iter().copied().chain([long.as_str()]) {
            let name = object_name(key);
            assert!(is_dns1123_subdomain(&name), "{key:?} -> {name:?}");
            assert!(names.insert(name.clone()), "{key:?} collides");
            match key_of(&name) {
                Some(back) => assert_eq!(back, key, "{name}"),
                None => assert!(name.starts_with("q."), "{name}"),
            }
        }
        assert!(object_name(&long).starts_with("q."));
        assert!(object_name("").starts_with("q."));
        // Hashed names never decode to a key: they cannot be taken for an escaped one.
        assert_eq!(key_of(&object_name("a//b")), None);
    }
}
