//! gnmic's key layout, and the reversible escaping the Consul backend applies to key segments.
//!
//! Layout (as gnmic writes it):
//! * `gnmic/<cluster>/leader` — leader lock, value = instance name
//! * `gnmic/<cluster>/targets/<target>` — target ownership lock, value = owner instance name
//! * `gnmic/<cluster>/prometheus-output` — Prometheus-output registration lock
//! * services: name `<cluster>-gnmic-api`; on etcd and memory stored as
//!   `gnmic-services/<service name>/<service id>` under the instance's session.

/// Leader lock key.
pub fn leader(cluster: &str) -> String {
    format!("gnmic/{cluster}/leader")
}

/// Target ownership lock key.
pub fn target(cluster: &str, target_name: &str) -> String {
    format!("gnmic/{cluster}/targets/{target_name}")
}

/// Prefix of all target locks (no trailing slash, as gnmic uses it for listing).
pub fn targets_prefix(cluster: &str) -> String {
    format!("gnmic/{cluster}/targets")
}

/// Target name from a target lock key (its last segment), as gnmic recovers it.
pub fn target_name_from_key(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Prometheus-output registration lock key.
pub fn prometheus_output(cluster: &str) -> String {
    format!("gnmic/{cluster}/prometheus-output")
}

/// gNMI-server registration lock key (gnomon: gnmic registers every gNMI server).
pub fn gnmi_server(cluster: &str) -> String {
    format!("gnmic/{cluster}/gnmi-server")
}

/// Service name under which every instance's REST API registers.
pub fn api_service_name(cluster: &str) -> String {
    format!("{cluster}-gnmic-api")
}

/// Service ID of an instance's REST API registration (subscribe mode).
pub fn api_service_id(instance: &str) -> String {
    format!("{instance}-api")
}

/// The tag a member adds to its API registration while its outputs fail (gnomon's
/// health-driven failover): the leader places nothing on a member carrying it, and the
/// member holds no target lock meanwhile. gnmic ignores unknown tags, so its members and
/// tools still see the instance. Tags are the one part of a registration every backend
/// stores and lists the same way (etcd and memory records, Consul service tags, the
/// registration record next to a Kubernetes EndpointSlice), hence a tag and not a field.
pub const UNHEALTHY_TAG: &str = "gnomon-output-health=failing";

/// Keys gnomon keeps for itself (the etcd backend's lock-delay emulation); callers may not
/// use them, and listings and watches leave them out.
pub const INTERNAL_PREFIX: &str = "__gnomon/";

/// Whether `key` is one of gnomon's own (see [`INTERNAL_PREFIX`]).
pub fn is_internal(key: &str) -> bool {
    key.starts_with(INTERNAL_PREFIX)
}

/// Where the etcd and memory backends keep a service registration.
pub fn service(name: &str, id: &str) -> String {
    format!("{}{id}", services_prefix(name))
}

/// Prefix of every registration of service `name` (etcd and memory backends).
pub fn services_prefix(name: &str) -> String {
    format!("gnmic-services/{name}/")
}

fn keeps_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-'
}

/// Escapes every segment of `key` (split on `/`): each byte outside `[A-Za-z0-9-]` becomes
/// `_XX` (lowercase hex). `router1.example.com:57400` → `router1_2eexample_2ecom_3a57400`,
/// valid even for Consul ≥ 1.21.5's strict key validation. Escaping is prefix-preserving,
/// so an escaped prefix still selects the escaped keys.
pub fn escape_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte == b'/' || keeps_byte(byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("_{byte:02x}"));
        }
    }
    out
}

/// Reverses [`escape_key`]. Keys that were not written escaped come back unchanged
/// when they contain no `_XX` sequence.
pub fn unescape_key(escaped: &str) -> String {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(value) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(value);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_gnmic() {
        assert_eq!(leader("c1"), "gnmic/c1/leader");
        assert_eq!(target("c1", "r1:57400"), "gnmic/c1/targets/r1:57400");
        assert_eq!(targets_prefix("c1"), "gnmic/c1/targets");
        assert_eq!(prometheus_output("c1"), "gnmic/c1/prometheus-output");
        assert_eq!(api_service_name("c1"), "c1-gnmic-api");
        assert_eq!(
            target_name_from_key("gnmic/c1/targets/r1:57400"),
            "r1:57400"
        );
    }

    #[test]
    fn escaping_is_reversible_and_consul_safe() {
        let key = target("c_1", "router1.example.com:57400");
        let escaped = escape_key(&key);
        assert_eq!(
            escaped,
            "gnmic/c_5f1/targets/router1_2eexample_2ecom_3a57400"
        );
        assert!(escaped
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_/".contains(&b)));
        assert_eq!(unescape_key(&escaped), key);
        for odd in ["a_b", "x/_", "_", "10.0.0.1:57400", "ünïcode/ key", "_zz_2"] {
            assert_eq!(unescape_key(&escape_key(odd)), odd, "{odd}");
        }
        assert!(escape_key(&key).starts_with(&escape_key(&targets_prefix("c_1"))));
    }
}
