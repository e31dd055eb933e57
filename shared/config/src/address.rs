//! Addresses checked at load: `host:port` (gNMI targets, the API, listeners, stores) and
//! NATS server lists, so a typo stops the start with the key named instead of a retry loop
//! later.

use super::ConfigError;
use serde_json::Value;

/// Splits `host:port` / `[v6]:port`; `None` when it is not of that form.
pub fn split_host_port(address: &str) -> Option<(&str, &str)> {
    if let Some(rest) = address.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        return Some((host, tail.strip_prefix(':')?));
    }
    let (host, port) = address.rsplit_once(':')?;
    if host.contains(':') {
        return None;
    }
    Some((host, port))
}

fn valid_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// Why `address` is not `host:port`. `allow_empty_host`: `:7890` means every interface;
/// `allow_port_zero`: a listener may ask for any free port.
pub fn host_port_problem(
    address: &str,
    allow_empty_host: bool,
    allow_port_zero: bool,
) -> Option<String> {
    let Some((host, port)) = split_host_port(address) else {
        return Some("is not host:port".into());
    };
    match port.parse::<u16>() {
        Ok(0) if !allow_port_zero => return Some("has port 0".into()),
        Ok(_) => {}
        Err(_) => return Some(format!("has port {port:?}, not a number from 1 to 65535")),
    }
    if host.is_empty() {
        return (!allow_empty_host).then(|| "has no host".into());
    }
    (!valid_host(host)).then(|| format!("has host {host:?}, not a host name or IP address"))
}

/// Checks a `host:port` value at `key`.
pub fn check_host_port(
    key: &str,
    address: &str,
    allow_empty_host: bool,
    allow_port_zero: bool,
) -> Result<(), ConfigError> {
    match host_port_problem(address.trim(), allow_empty_host, allow_port_zero) {
        None => Ok(()),
        Some(why) => Err(ConfigError::invalid(
            key,
            &Value::String(address.to_string()),
            format!("{why} (expected host:port)"),
        )),
    }
}

/// Checks a `host[:port]` value at `key` (the port may be left to a default).
pub fn check_host_optional_port(key: &str, address: &str) -> Result<(), ConfigError> {
    let address = address.trim();
    let problem = if address.starts_with('[') || address.contains(':') {
        host_port_problem(address, false, false)
    } else {
        (!valid_host(address))
            .then(|| format!("has host {address:?}, not a host name or IP address"))
    };
    match problem {
        None => Ok(()),
        Some(why) => Err(ConfigError::invalid(
            key,
            &Value::String(address.to_string()),
            format!("{why} (expected host or host:port)"),
        )),
    }
}

/// Checks a comma-separated list of NATS servers (`host[:port]`, optionally as a
/// `nats://`, `tls://`, `ws://` or `wss://` URL, `user:password@` allowed). Addresses
/// with credentials are never repeated in the error.
pub fn check_nats_servers(key: &str, servers: &str) -> Result<(), ConfigError> {
    let shown = |text: &str| {
        if text.contains('@') {
            super::REDACTED.to_string()
        } else {
            Value::String(text.to_string()).to_string()
        }
    };
    let fail = |why: String| {
        Err(ConfigError::Invalid {
            key: key.to_string(),
            value: shown(servers),
            problem: format!("{why} (expected host:port or nats://host:port, comma-separated)"),
        })
    };
    let mut any = false;
    for server in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        any = true;
        let rest = match server.split_once("://") {
            Some((scheme, rest)) => {
                if !matches!(
                    scheme.to_ascii_lowercase().as_str(),
                    "nats" | "tls" | "ws" | "wss"
                ) {
                    return fail(format!("has scheme {scheme:?}"));
                }
                rest
            }
            None => server,
        };
        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let rest = rest.trim_end_matches('/');
        let problem = if rest.starts_with('[') || rest.contains(':') {
            host_port_problem(rest, false, false)
        } else {
            (!valid_host(rest)).then(|| "has no valid host".to_string())
        };
        if let Some(why) = problem {
            return fail(format!("server {} {why}", shown(server)));
        }
    }
    if !any {
        return fail("names no server".into());
    }
    Ok(())
}

/// Splits `host[:port]` (IPv6 in brackets allowed) into the host and the port, None when
/// absent (what Go's `net.SplitHostPort` gives for an address that has a port).
pub fn host_optional_port(address: &str) -> (&str, Option<&str>) {
    if let Some(rest) = address.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            return (host, tail.strip_prefix(':'));
        }
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (address, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert!(host_port_problem("10.0.0.1:57400", false, false).is_none());
        assert!(host_port_problem("[::1]:57400", false, false).is_none());
        assert!(host_port_problem("router-1.lab:6030", false, false).is_none());
        assert!(host_port_problem(":7890", true, false).is_none());
        assert!(host_port_problem("127.0.0.1:0", false, true).is_none());
        assert!(host_port_problem(":7890", false, false).is_some());
        assert!(host_port_problem("notaport", true, false).is_some());
        assert!(host_port_problem("not an address:57400", false, false).is_some());
        assert!(host_port_problem("10.0.0.1:57s3cret", false, false).is_some());
        assert!(host_port_problem("::1:80", false, false).is_some());
    }

    #[test]
    fn nats_servers() {
        for good in [
            "localhost:4222",
            "nats://a:4222,nats://b:4222",
            "tls://u:p@h:4222",
            "nats1",
            "[::1]:4222",
        ] {
            check_nats_servers("k", good).unwrap();
        }
        for bad in [
            "nats://::::",
            "",
            "http://a:1",
            "a:b",
            "nats://u:secret@::::",
        ] {
            assert!(check_nats_servers("k", bad).is_err(), "{bad:?}");
        }
        let err = check_nats_servers("k", "nats://u:secret@::::")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
    }
}
