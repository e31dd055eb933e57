//! The double's data model: one global index, KV entries with tombstones, sessions, per-key
//! lock-delay deadlines, agent services and their checks.

use crate::Shared;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Knobs of the double.
#[derive(Clone, Debug)]
pub struct DoubleConfig {
    /// Lowest accepted session TTL (Consul's `session_ttl_min`, 10s by default).
    pub session_ttl_min: Duration,
    /// Reject KV keys the way Consul ≥ 1.21.5 does.
    pub strict_keys: bool,
    /// When set, every call must carry this ACL token (`X-Consul-Token`, bearer or `?token=`).
    pub acl_token: Option<String>,
    pub datacenter: String,
    pub node: String,
}

impl Default for DoubleConfig {
    fn default() -> Self {
        Self {
            session_ttl_min: Duration::from_secs(10),
            strict_keys: true,
            acl_token: None,
            datacenter: "dc1".to_string(),
            node: "consul-double".to_string(),
        }
    }
}

/// Consul multiplies session TTLs by this before invalidating (`SessionTTLMultiplier`).
pub const SESSION_TTL_MULTIPLIER: u32 = 2;
/// Consul caps lock-delay here.
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);
/// Consul's floor for `DeregisterCriticalServiceAfter`.
pub const MIN_DEREGISTER_AFTER: Duration = Duration::from_secs(60);
/// The node-level check every session binds to by default.
pub const SERF_HEALTH: &str = "serfHealth";
const REAP_INTERVAL: Duration = Duration::from_millis(50);

pub struct KvEntry {
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    pub flags: u64,
    pub value: Vec<u8>,
    pub session: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    Release,
    Delete,
}

impl Behavior {
    pub fn as_str(self) -> &'static str {
        match self {
            Behavior::Release => "release",
            Behavior::Delete => "delete",
        }
    }
}

pub struct Session {
    pub id: String,
    pub name: String,
    pub node: String,
    pub lock_delay: Duration,
    pub behavior: Behavior,
    pub ttl: Option<Duration>,
    pub checks: Vec<String>,
    pub create_index: u64,
    pub modify_index: u64,
    /// Invalidation time: last renew + TTL × 2.
    pub deadline: Option<Instant>,
}

pub struct Service {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub meta: BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}

pub struct Check {
    pub id: String,
    pub name: String,
    pub service_id: String,
    pub status: String,
    pub output: String,
    pub notes: String,
    pub ttl: Option<Duration>,
    pub deadline: Option<Instant>,
    pub deregister_after: Option<Duration>,
    pub critical_since: Option<Instant>,
}

pub struct State {
    pub index: u64,
    /// Index of the last KV write anywhere (what a missing key reports).
    pub kv_index: u64,
    /// Index of the last service or check status change.
    pub services_index: u64,
    pub kv: BTreeMap<String, KvEntry>,
    pub tombstones: BTreeMap<String, u64>,
    pub lock_delays: HashMap<String, Instant>,
    pub sessions: HashMap<String, Session>,
    pub services: BTreeMap<String, Service>,
    pub checks: BTreeMap<String, Check>,
    pub stopped: bool,
}

impl State {
    pub fn new() -> Self {
        Self {
            index: 1,
            kv_index: 1,
            services_index: 1,
            kv: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            lock_delays: HashMap::new(),
            sessions: HashMap::new(),
            services: BTreeMap::new(),
            checks: BTreeMap::new(),
            stopped: false,
        }
    }

    /// Next global index.
    pub fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    pub fn bump_kv(&mut self) -> u64 {
        let index = self.bump();
        self.kv_index = index;
        index
    }

    pub fn bump_services(&mut self) -> u64 {
        let index = self.bump();
        self.services_index = index;
        index
    }

    pub fn delete_key(&mut self, key: &str, index: u64) -> bool {
        if self.kv.remove(key).is_some() {
            self.tombstones.insert(key.to_string(), index);
            true
        } else {
            false
        }
    }

    /// Index a blocking query on one key waits on.
    pub fn key_index(&self, key: &str) -> u64 {
        match self.kv.get(key) {
            Some(entry) => entry.modify_index,
            None => self.kv_index,
        }
    }

    /// Index a blocking recurse query waits on: highest ModifyIndex in the prefix,
    /// tombstones included; the KV table index when the prefix is empty.
    pub fn prefix_index(&self, prefix: &str) -> u64 {
        let live = self
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.modify_index);
        let dead = self
            .tombstones
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i);
        live.chain(dead).max().unwrap_or(self.kv_index)
    }

    /// Invalidates a session: its keys are released or deleted per `Behavior`, and each gets a
    /// lock-delay of `min(LockDelay, 60s)`.
    pub fn invalidate_session(&mut self, id: &str, now: Instant) -> bool {
        let Some(session) = self.sessions.remove(id) else {
            return false;
        };
        let index = self.bump();
        let held: Vec<String> = self
            .kv
            .iter()
            .filter(|(_, e)| e.session.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        let delay = session.lock_delay.min(MAX_LOCK_DELAY);
        for key in held {
            match session.behavior {
                Behavior::Delete => {
                    self.delete_key(&key, index);
                }
                Behavior::Release => {
                    if let Some(entry) = self.kv.get_mut(&key) {
                        entry.session = None;
                        entry.modify_index = index;
                    }
                }
            }
            self.kv_index = index;
            if !delay.is_zero() {
                self.lock_delays.insert(key, now + delay);
            }
        }
        true
    }

    /// Invalidates every session bound to `check_id` (it went critical or was removed).
    pub fn invalidate_sessions_bound_to(&mut self, check_id: &str, now: Instant) {
        let bound: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.checks.iter().any(|c| c == check_id))
            .map(|s| s.id.clone())
            .collect();
        for id in bound {
            self.invalidate_session(&id, now);
        }
    }

    /// Sets a check's status; a change bumps the services index, critical invalidates sessions.
    pub fn set_check_status(&mut self, check_id: &str, status: &str, output: &str, now: Instant) {
        let Some(check) = self.checks.get_mut(check_id) else {
            return;
        };
        if let Some(ttl) = check.ttl {
            check.deadline = Some(now + ttl);
        }
        check.output = output.to_string();
        if check.status == status {
            return;
        }
        check.status = status.to_string();
        check.critical_since = (status == "critical").then_some(now);
        self.bump_services();
        if status == "critical" {
            self.invalidate_sessions_bound_to(check_id, now);
        }
    }

    pub fn remove_service(&mut self, service_id: &str, now: Instant) -> bool {
        if self.services.remove(service_id).is_none() {
            return false;
        }
        let checks: Vec<String> = self
            .checks
            .values()
            .filter(|c| c.service_id == service_id)
            .map(|c| c.id.clone())
            .collect();
        for check in checks {
            self.checks.remove(&check);
            self.invalidate_sessions_bound_to(&check, now);
        }
        self.bump_services();
        true
    }

    /// Time-driven transitions: session expiry, TTL checks going critical, critical services
    /// being reaped, lock-delays ending.
    pub fn reap(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.deadline.is_some_and(|d| d <= now))
            .map(|s| s.id.clone())
            .collect();
        for id in expired {
            tracing::debug!(session = %id, "consul double: session TTL expired");
            self.invalidate_session(&id, now);
        }
        let overdue: Vec<String> = self
            .checks
            .values()
            .filter(|c| c.status != "critical" && c.deadline.is_some_and(|d| d <= now))
            .map(|c| c.id.clone())
            .collect();
        for id in overdue {
            self.set_check_status(&id, "critical", "TTL expired", now);
        }
        let reapable: Vec<String> = self
            .checks
            .values()
            .filter_map(|c| {
                let after = c.deregister_after?.max(MIN_DEREGISTER_AFTER);
                c.critical_since
                    .filter(|since| *since + after <= now)
                    .map(|_| c.service_id.clone())
            })
            .collect();
        for service in reapable {
            self.remove_service(&service, now);
        }
        self.lock_delays.retain(|_, until| *until > now);
    }
}

pub async fn reap_forever(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(REAP_INTERVAL).await;
        shared.write(|state| state.reap(Instant::now()));
    }
}

/// Consul ≥ 1.21.5's strict KV key validation (PR #22682): only `[A-Za-z0-9,-_./]`, no leading
/// `/`, no `..`, no "suspicious" file extension at the end.
pub fn validate_key(key: &str) -> Result<(), String> {
    const SUSPICIOUS: &[&str] = &[
        ".json", ".txt", ".log", ".com", ".sh", ".js", ".html", ".htm", ".zip", ".png", ".jpg",
        ".jpeg", ".gif", ".exe", ".php", ".xml", ".yaml", ".yml", ".bat", ".cmd", ".ps1", ".tar",
        ".gz", ".pdf", ".csv", ".sql", ".bak", ".conf", ".ini", ".env",
    ];
    if key.starts_with('/') {
        return Err(format!("invalid key name {key:?}: leading '/'"));
    }
    if key.contains("..") {
        return Err(format!("invalid key name {key:?}: contains '..'"));
    }
    if let Some(bad) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ",-_./".contains(*c)))
    {
        return Err(format!(
            "invalid key name {key:?}: character {bad:?} is not allowed"
        ));
    }
    let lower = key.to_ascii_lowercase();
    if let Some(ext) = SUSPICIOUS.iter().find(|ext| lower.ends_with(*ext)) {
        return Err(format!(
            "invalid key name {key:?}: suspicious extension {ext}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(state: &mut State, id: &str, behavior: Behavior, delay: Duration) {
        let index = state.bump();
        state.sessions.insert(
            id.to_string(),
            Session {
                id: id.to_string(),
                name: String::new(),
                node: "n".into(),
                lock_delay: delay,
                behavior,
                ttl: Some(Duration::from_secs(1)),
                checks: vec![],
                create_index: index,
                modify_index: index,
                deadline: Some(Instant::now() + Duration::from_secs(2)),
            },
        );
    }

    fn held_key(state: &mut State, key: &str, session: &str) {
        let index = state.bump_kv();
        state.kv.insert(
            key.to_string(),
            KvEntry {
                create_index: index,
                modify_index: index,
                lock_index: 1,
                flags: 0,
                value: b"v".to_vec(),
                session: Some(session.to_string()),
            },
        );
    }

    #[test]
    fn invalidation_follows_behavior_and_sets_lock_delay() {
        let mut state = State::new();
        let now = Instant::now();
        session(&mut state, "a", Behavior::Delete, Duration::from_secs(5));
        session(&mut state, "b", Behavior::Release, Duration::from_secs(90));
        held_key(&mut state, "k/a", "a");
        held_key(&mut state, "k/b", "b");
        let before = state.prefix_index("k/");
        assert!(state.invalidate_session("a", now));
        assert!(!state.kv.contains_key("k/a"));
        assert!(
            state.prefix_index("k/") > before,
            "a tombstone moves the recurse index"
        );
        assert_eq!(state.lock_delays["k/a"], now + Duration::from_secs(5));
        assert!(state.invalidate_session("b", now));
        let entry = &state.kv["k/b"];
        assert!(entry.session.is_none());
        assert_eq!(entry.lock_index, 1);
        assert_eq!(
            state.lock_delays["k/b"],
            now + MAX_LOCK_DELAY,
            "capped at 60s"
        );
        assert!(!state.invalidate_session("b", now));
    }

    #[test]
    fn sessions_expire_at_twice_the_ttl() {
        let mut state = State::new();
        session(&mut state, "a", Behavior::Delete, Duration::ZERO);
        let start = Instant::now();
        state.reap(start + Duration::from_millis(1500));
        assert!(
            state.sessions.contains_key("a"),
            "still alive after 1.5×TTL"
        );
        state.reap(start + Duration::from_millis(2100));
        assert!(!state.sessions.contains_key("a"));
    }

    #[test]
    fn strict_key_validation() {
        assert!(validate_key("gnmic/c1/targets/router1_2eexample_2ecom_3a57400").is_ok());
        assert!(validate_key("gnmic/c1/targets/10.0.0.1:57400").is_err());
        assert!(validate_key("gnmic/c1/targets/router1.example.com").is_err());
        assert!(validate_key("/leading").is_err());
        assert!(validate_key("a/../b").is_err());
        assert!(validate_key("a b").is_err());
    }
}
