//! The coordination conformance suite, instantiated for every backend.
//!
//! Process-death tests use the `lock-holder` child process and SIGKILL it. The memory backend
//! lives inside one process, so there the "killed holder" is an in-process member that is
//! disconnected (`MemoryCoordination::disconnect`: renewals stop, calls fail), and "the store
//! goes away" is the same disconnection seen from the holder's side.

use futures::StreamExt;
use gnomon_consul_double::ConsulDouble;
use gnomon_coordination::{
    self as coordination, Coordination, LockGuard, LockerConfig, LockerType, MemoryCoordination,
    MemoryStore, ServiceHandle, ServiceInstance, ServiceRegistration, WatchEvent, WatchEvents,
};
use gnomon_k8s_double::K8sDouble;
use gnomon_testkit::{ChildProcess, EtcdServer};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Generous bound for anything that should happen "eventually" (never a speed assertion).
const PATIENCE: Duration = Duration::from_secs(40);

enum Store {
    Etcd(Mutex<EtcdServer>),
    Double {
        double: tokio::sync::Mutex<Option<ConsulDouble>>,
        address: SocketAddr,
    },
    Memory {
        name: String,
    },
    RealConsul {
        address: String,
    },
    /// The Kubernetes API: the double, or a real cluster when `KUBECONFIG` is set.
    K8s {
        double: tokio::sync::Mutex<Option<K8sDouble>>,
        kubeconfig: std::path::PathBuf,
        namespace: String,
    },
}

struct Harness {
    store: Store,
    ttl: Duration,
    logs: tempfile::TempDir,
}

enum Holder {
    Process {
        child: ChildProcess,
        token: u64,
    },
    Member {
        member: MemoryCoordination,
        token: u64,
        _guard: Option<LockGuard>,
        _service: Option<ServiceHandle>,
    },
}

impl Holder {
    fn token(&self) -> u64 {
        match self {
            Holder::Process { token, .. } | Holder::Member { token, .. } => *token,
        }
    }

    /// SIGKILL (processes) or disconnection (memory members).
    fn kill(&mut self) {
        match self {
            Holder::Process { child, .. } => child.kill(),
            Holder::Member { member, .. } => member.disconnect(),
        }
    }
}

impl Harness {
    async fn etcd() -> Option<Self> {
        let server = tokio::task::spawn_blocking(EtcdServer::start)
            .await
            .unwrap()
            .unwrap();
        Some(Self::new(
            Store::Etcd(Mutex::new(server)),
            Duration::from_secs(2),
        ))
    }

    async fn double() -> Option<Self> {
        let double = ConsulDouble::start().await.unwrap();
        let address = double.address();
        Some(Self::new(
            Store::Double {
                double: tokio::sync::Mutex::new(Some(double)),
                address,
            },
            Duration::from_secs(1),
        ))
    }

    async fn memory() -> Option<Self> {
        Some(Self::new(
            Store::Memory {
                name: uuid::Uuid::new_v4().to_string(),
            },
            Duration::from_secs(1),
        ))
    }

    async fn real_consul() -> Option<Self> {
        match std::env::var("CONSUL_HTTP_ADDR") {
            Ok(address) if !address.is_empty() => Some(Self::new(
                Store::RealConsul { address },
                Duration::from_secs(10),
            )),
            _ => {
                eprintln!("CONSUL_HTTP_ADDR is not set: skipping the real-Consul run");
                None
            }
        }
    }

    /// The Kubernetes API double, or the cluster of `KUBECONFIG` when it is set (namespace
    /// `GNOMON_K8S_NAMESPACE`, default `default`; the ServiceAccount needs the Role of
    /// compose/k8s/rbac.yaml).
    async fn k8s() -> Option<Self> {
        let logs = tempfile::tempdir().unwrap();
        let (double, kubeconfig, namespace, ttl) = match std::env::var("KUBECONFIG") {
            Ok(path) if !path.is_empty() => {
                let namespace =
                    std::env::var("GNOMON_K8S_NAMESPACE").unwrap_or_else(|_| "default".into());
                (None, path.into(), namespace, Duration::from_secs(5))
            }
            _ => {
                let double = K8sDouble::start().await.unwrap();
                let path = logs.path().join("kubeconfig");
                gnomon_k8s_double::write_kubeconfig(
                    &path,
                    &double.url(),
                    gnomon_k8s_double::ADMIN_TOKEN,
                    "default",
                )
                .unwrap();
                (
                    Some(double),
                    path,
                    "default".to_string(),
                    Duration::from_secs(2),
                )
            }
        };
        Some(Self {
            store: Store::K8s {
                double: tokio::sync::Mutex::new(double),
                kubeconfig,
                namespace,
            },
            ttl,
            logs,
        })
    }

    fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            logs: tempfile::tempdir().unwrap(),
        }
    }

    fn is_memory(&self) -> bool {
        matches!(self.store, Store::Memory { .. })
    }

    fn can_stop_store(&self) -> bool {
        match &self.store {
            Store::RealConsul { .. } => false,
            Store::K8s { double, .. } => double.try_lock().is_ok_and(|d| d.is_some()),
            _ => true,
        }
    }

    fn config(&self, delay: Duration) -> LockerConfig {
        let mut cfg = match &self.store {
            Store::Etcd(server) => {
                let mut cfg = LockerConfig::new(LockerType::Etcd);
                cfg.address = Some(server.lock().unwrap().address());
                cfg
            }
            Store::Double { address, .. } => {
                let mut cfg = LockerConfig::new(LockerType::Consul);
                cfg.address = Some(address.to_string());
                cfg
            }
            Store::Memory { name } => {
                let mut cfg = LockerConfig::new(LockerType::Memory);
                cfg.address = Some(name.clone());
                cfg
            }
            Store::RealConsul { address } => {
                let mut cfg = LockerConfig::new(LockerType::Consul);
                cfg.address = Some(address.clone());
                cfg.token = std::env::var("CONSUL_HTTP_TOKEN").ok().map(Into::into);
                cfg
            }
            Store::K8s {
                kubeconfig,
                namespace,
                ..
            } => {
                let mut cfg = LockerConfig::new(LockerType::K8s);
                cfg.kubeconfig = Some(kubeconfig.display().to_string());
                cfg.namespace = Some(namespace.clone());
                cfg
            }
        };
        cfg.session_ttl = self.ttl;
        cfg.delay = delay;
        cfg.retry_timer = Duration::from_millis(200);
        cfg.request_timeout = Duration::from_secs(3);
        cfg
    }

    fn config_json(&self, delay: Duration) -> String {
        let cfg = self.config(delay);
        if cfg.kind == LockerType::K8s {
            // What the k8s block shows is what it reads (no secrets in it).
            return serde_json::to_string(&cfg).unwrap();
        }
        let kind = cfg.kind.name();
        serde_json::json!({
            "type": kind,
            "address": cfg.address,
            "token": cfg.token,
            "session-ttl": format!("{}ms", cfg.session_ttl.as_millis()),
            "delay": format!("{}ms", cfg.delay.as_millis()),
            "retry-timer": "200ms",
            "request-timeout": "3s",
        })
        .to_string()
    }

    async fn member(&self, instance: &str, delay: Duration) -> Arc<dyn Coordination> {
        coordination::connect(&self.config(delay), instance)
            .await
            .unwrap()
    }

    fn memory_member(&self, instance: &str, delay: Duration) -> MemoryCoordination {
        let Store::Memory { name } = &self.store else {
            panic!("not a memory harness")
        };
        MemoryCoordination::with_store(MemoryStore::named(name), &self.config(delay), instance)
    }

    fn spawn_child(&self, name: &str, args: &[String]) -> ChildProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lock-holder"));
        command.args(args);
        ChildProcess::spawn(name, command, self.logs.path()).unwrap()
    }

    async fn wait_for_line(child: &ChildProcess, prefix: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = child.log();
            if let Some(line) = log.lines().find(|l| l.starts_with(prefix)) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{} never printed {prefix:?}; log:\n{log}",
                child.name()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A holder of `key` with value `instance` that can be killed.
    async fn lock_holder(&self, key: &str, instance: &str, delay: Duration) -> Holder {
        if self.is_memory() {
            let member = self.memory_member(instance, delay);
            let guard = member
                .acquire_blocking(key, instance, &CancellationToken::new())
                .await
                .unwrap()
                .unwrap();
            return Holder::Member {
                member,
                token: guard.fencing_token(),
                _guard: Some(guard),
                _service: None,
            };
        }
        let args = vec![
            "--config".to_string(),
            self.config_json(delay),
            "--instance".to_string(),
            instance.to_string(),
            "--lock".to_string(),
            key.to_string(),
        ];
        let child = self.spawn_child(instance, &args);
        let line = Self::wait_for_line(&child, "ACQUIRED ").await;
        let token = line.trim_start_matches("ACQUIRED ").trim().parse().unwrap();
        Holder::Process { child, token }
    }

    /// A process (or memory member) holding a service registration.
    async fn service_holder(&self, registration: &ServiceRegistration) -> Holder {
        if self.is_memory() {
            let member = self.memory_member(&registration.id, Duration::ZERO);
            let handle = member.register_service(registration.clone()).await.unwrap();
            return Holder::Member {
                member,
                token: 0,
                _guard: None,
                _service: Some(handle),
            };
        }
        let mut args = vec![
            "--config".to_string(),
            self.config_json(Duration::ZERO),
            "--instance".to_string(),
            registration.id.clone(),
            "--service".to_string(),
            registration.name.clone(),
            "--service-id".to_string(),
            registration.id.clone(),
            "--port".to_string(),
            registration.port.to_string(),
            "--service-ttl".to_string(),
            format!("{}ms", registration.ttl.as_millis()),
        ];
        for tag in &registration.tags {
            args.push("--tag".to_string());
            args.push(tag.clone());
        }
        let child = self.spawn_child(&registration.id, &args);
        Self::wait_for_line(&child, "REGISTERED ").await;
        Holder::Process { child, token: 0 }
    }

    async fn stop_store(&self) {
        match &self.store {
            Store::Etcd(server) => server.lock().unwrap().stop(),
            Store::Double { double, .. } => {
                if let Some(mut d) = double.lock().await.take() {
                    d.stop().await;
                }
            }
            Store::K8s { double, .. } => {
                if let Some(mut d) = double.lock().await.take() {
                    d.stop().await;
                }
            }
            Store::Memory { .. } | Store::RealConsul { .. } => {
                panic!("this store cannot be stopped")
            }
        }
    }

    async fn restart_store(&self) {
        match &self.store {
            Store::Etcd(server) => {
                let mut server = server.lock().unwrap();
                server.restart().unwrap();
            }
            _ => panic!("only etcd restarts with its data"),
        }
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

async fn next_event(
    events: &mut WatchEvents,
    what: &str,
    matches: impl Fn(&WatchEvent) -> bool,
) -> WatchEvent {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(event)) if matches(&event) => return event,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("watch ended while waiting for {what}"),
            Err(_) => panic!("no {what} within {PATIENCE:?}"),
        }
    }
}

async fn acquire_within(member: &Arc<dyn Coordination>, key: &str, value: &str) -> LockGuard {
    let cancel = CancellationToken::new();
    let attempt = member.acquire_blocking(key, value, &cancel);
    match tokio::time::timeout(PATIENCE, attempt).await {
        Ok(Ok(Some(guard))) => guard,
        Ok(Ok(None)) => panic!("acquire of {key} was cancelled"),
        Ok(Err(e)) => panic!("acquire of {key} failed: {e}"),
        Err(_) => panic!("{value} could not acquire {key} within {PATIENCE:?}"),
    }
}

mod suite {
    use super::*;

    /// 10 contenders, each with its own session, 2 rounds each: never two inside at once,
    /// and the store always names the one inside as the holder.
    pub async fn mutual_exclusion(h: &Harness) {
        let key = format!("gnmic/{}/leader", unique("mx"));
        let inside = Arc::new(AtomicUsize::new(0));
        let entries = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for n in 0..10 {
            let member = h
                .member(&format!("contender-{n}"), Duration::from_secs(1))
                .await;
            let (key, inside, entries) = (key.clone(), inside.clone(), entries.clone());
            tasks.push(tokio::spawn(async move {
                let me = format!("contender-{n}");
                let mut tokens = Vec::new();
                for _ in 0..2 {
                    let guard = acquire_within(&member, &key, &me).await;
                    assert_eq!(
                        inside.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two holders at once"
                    );
                    entries.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(
                        member.holder(&key).await.unwrap().as_deref(),
                        Some(me.as_str())
                    );
                    assert!(!guard.is_lost());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    tokens.push(guard.fencing_token());
                    guard.release().await.unwrap();
                }
                member.shutdown().await;
                tokens
            }));
        }
        let mut all_tokens = Vec::new();
        for task in tasks {
            all_tokens.extend(task.await.unwrap());
        }
        assert_eq!(entries.load(Ordering::SeqCst), 20);
        all_tokens.sort_unstable();
        all_tokens.dedup();
        assert_eq!(
            all_tokens.len(),
            20,
            "every tenure has its own fencing token"
        );
    }

    /// A SIGKILLed holder's lock expires and another contender gets it with a larger token.
    pub async fn expiry_after_holder_killed(h: &Harness) {
        let key = format!("gnmic/{}/leader", unique("exp"));
        let mut holder = h.lock_holder(&key, "doomed", Duration::ZERO).await;
        let survivor = h.member("survivor", Duration::ZERO).await;
        assert_eq!(
            survivor.holder(&key).await.unwrap().as_deref(),
            Some("doomed")
        );
        assert!(
            survivor.acquire(&key, "survivor").await.unwrap().is_none(),
            "held by the child"
        );
        holder.kill();
        let guard = acquire_within(&survivor, &key, "survivor").await;
        assert!(guard.fencing_token() > holder.token());
        assert_eq!(
            survivor.holder(&key).await.unwrap().as_deref(),
            Some("survivor")
        );
        guard.release().await.unwrap();
        survivor.shutdown().await;
    }

    /// After an involuntary loss nobody acquires during the lock-delay; afterwards one does.
    pub async fn lock_delay_honored(h: &Harness) {
        let delay = Duration::from_secs(3);
        let key = format!(
            "gnmic/{}/targets/router1.example.com:57400",
            unique("delay")
        );
        let contender = h.member("contender", delay).await;
        let mut events = contender.watch_prefix(&key).await.unwrap();
        let mut holder = h.lock_holder(&key, "doomed", delay).await;
        next_event(&mut events, "the holder's put", |e| {
            matches!(e, WatchEvent::Put { .. })
        })
        .await;
        holder.kill();
        next_event(&mut events, "the expiry delete", |e| {
            matches!(e, WatchEvent::Delete { .. })
        })
        .await;
        let observed = Instant::now();
        // Well inside the delay window: every attempt must fail.
        while observed.elapsed() < delay / 3 {
            assert!(
                contender
                    .acquire(&key, "contender")
                    .await
                    .unwrap()
                    .is_none(),
                "acquired {:?} after the holder died, inside a {delay:?} lock-delay",
                observed.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let guard = acquire_within(&contender, &key, "contender").await;
        assert!(guard.fencing_token() > holder.token());
        guard.release().await.unwrap();
        contender.shutdown().await;
    }

    /// A graceful release frees the key at once, even with a long lock-delay configured.
    pub async fn graceful_release_frees_at_once(h: &Harness) {
        let delay = Duration::from_secs(30);
        let key = format!("gnmic/{}/prometheus-output", unique("rel"));
        let first = h.member("first", delay).await;
        let second = h.member("second", delay).await;
        let guard = first
            .acquire(&key, "first")
            .await
            .unwrap()
            .expect("free key");
        assert!(first.is_locked(&key).await.unwrap());
        let lost = guard.lost_token();
        guard.release().await.unwrap();
        assert!(
            lost.is_cancelled(),
            "a released guard no longer claims the lock"
        );
        assert_eq!(second.holder(&key).await.unwrap(), None);
        let taken = second
            .acquire(&key, "second")
            .await
            .unwrap()
            .expect("released key is free at once");
        assert_eq!(first.holder(&key).await.unwrap().as_deref(), Some("second"));
        taken.release().await.unwrap();
        first.shutdown().await;
        second.shutdown().await;
    }

    /// ≥100 handovers between two sessions: the fencing token strictly grows every time, and
    /// `list_locks` shows readers the holder's token.
    pub async fn fencing_token_strictly_grows(h: &Harness) {
        let key = format!("gnmic/{}/targets/10.0.0.1:57400", unique("fence"));
        let members = [
            h.member("alpha", Duration::from_secs(2)).await,
            h.member("beta", Duration::from_secs(2)).await,
        ];
        let mut last = 0u64;
        for round in 0..110 {
            // Mostly alternate; every 5th round the same member takes it again.
            let who = if round % 5 == 4 {
                (round + 1) % 2
            } else {
                round % 2
            };
            let name = ["alpha", "beta"][who];
            let guard = acquire_within(&members[who], &key, name).await;
            assert!(
                guard.fencing_token() > last,
                "round {round}: token {} after {last}",
                guard.fencing_token()
            );
            last = guard.fencing_token();
            if round % 10 == 0 {
                // Readers see the holder and the token it was granted (what exporters
                // check data against).
                let locks = members[1 - who].list_locks(&key).await.unwrap();
                assert_eq!(
                    locks.get(&key),
                    Some(&coordination::LockInfo {
                        holder: name.to_string(),
                        fencing_token: guard.fencing_token(),
                    }),
                    "round {round}"
                );
            }
            guard.release().await.unwrap();
        }
        assert!(members[0].list_locks(&key).await.unwrap().is_empty());
        for m in members {
            m.shutdown().await;
        }
    }

    /// A prefix watcher sees the acquire (Put with the holder value) and the expiry (Delete).
    pub async fn watchers_see_acquire_and_expiry(h: &Harness) {
        let cluster = unique("watch");
        let prefix = coordination::keys::targets_prefix(&cluster);
        let key = coordination::keys::target(&cluster, "r1:57400");
        let observer = h.member("observer", Duration::ZERO).await;
        observer
            .put(&coordination::keys::target(&cluster, "preexisting"), "x")
            .await
            .unwrap();
        let mut events = observer.watch_prefix(&prefix).await.unwrap();
        next_event(&mut events, "the initial snapshot", |e| {
            e.key().ends_with("preexisting")
        })
        .await;
        let mut holder = h.lock_holder(&key, "holder-1", Duration::ZERO).await;
        let put = next_event(&mut events, "the acquire", |e| e.key() == key).await;
        assert_eq!(
            put,
            WatchEvent::Put {
                key: key.clone(),
                value: "holder-1".to_string()
            }
        );
        assert_eq!(
            observer
                .list(&prefix)
                .await
                .unwrap()
                .get(&key)
                .map(String::as_str),
            Some("holder-1")
        );
        holder.kill();
        let gone = next_event(&mut events, "the expiry", |e| e.key() == key).await;
        assert_eq!(gone, WatchEvent::Delete { key: key.clone() });
        assert!(!observer.list(&prefix).await.unwrap().contains_key(&key));
        observer.shutdown().await;
    }

    /// Hundreds of attempts at once from one member (as when it is given many targets): each
    /// free key is taken exactly once, even when two attempts race for it, keys another member
    /// holds are refused, and every guard names its key's holder and releases it.
    pub async fn many_attempts_at_once(h: &Harness) {
        let prefix = format!("gnmic/{}/targets/", unique("many"));
        let other = h.member("other", Duration::ZERO).await;
        let member = h.member("member", Duration::ZERO).await;
        let key = |n: usize| format!("{prefix}t{n}");
        let mut held = Vec::new();
        for n in 0..10 {
            held.push(other.acquire(&key(n), "other").await.unwrap().unwrap());
        }
        let attempts = (0..200).map(|i| {
            let (member, key) = (member.clone(), key(i % 100));
            tokio::spawn(async move { (key.clone(), member.acquire(&key, "member").await) })
        });
        let mut taken: std::collections::BTreeMap<String, Vec<LockGuard>> = Default::default();
        for attempt in futures::future::join_all(attempts).await {
            let (key, outcome) = attempt.unwrap();
            let guards = taken.entry(key).or_default();
            guards.extend(outcome.unwrap());
        }
        for n in 0..100 {
            let guards = &taken[&key(n)];
            let expected = if n < 10 { 0 } else { 1 };
            assert_eq!(guards.len(), expected, "guards of {}", key(n));
            let holder = member.holder(&key(n)).await.unwrap();
            let holder = holder.as_deref();
            assert_eq!(holder, Some(if n < 10 { "other" } else { "member" }));
        }
        let locks = other.list_locks(&prefix).await.unwrap();
        assert_eq!(locks.len(), 100);
        for guards in taken.into_values() {
            for guard in guards {
                assert!(!guard.is_lost());
                assert_eq!(locks[guard.key()].fencing_token, guard.fencing_token());
                let key = guard.key().to_string();
                guard.release().await.unwrap();
                assert_eq!(other.holder(&key).await.unwrap(), None);
            }
        }
        for guard in held {
            guard.release().await.unwrap();
        }
        member.shutdown().await;
        other.shutdown().await;
    }

    /// Many keys written at once (more than one etcd txn holds) are all there, values intact;
    /// keys that exist keep their values (only absent ones are written); and a key the store
    /// refuses fails the whole call before anything is written.
    pub async fn create_many_writes_every_absent_entry(h: &Harness) {
        let cluster = unique("many");
        let prefix = format!("gnmic/{cluster}/config/targets/");
        let member = h.member("writer", Duration::ZERO).await;
        let entries: Vec<(String, String)> = (0..300)
            .map(|i| (format!("{prefix}t{i}"), format!("{{\"n\":{i}}}")))
            .collect();
        // Two existing keys, in different chunks: their values stay.
        member.put(&entries[5].0, "kept-5").await.unwrap();
        member.put(&entries[200].0, "kept-200").await.unwrap();
        assert_eq!(member.create_many(&entries).await.unwrap(), 298);
        let stored = member.get_prefix(&prefix).await.unwrap();
        let mut expected: std::collections::BTreeMap<String, String> =
            entries.iter().cloned().collect();
        expected.insert(entries[5].0.clone(), "kept-5".into());
        expected.insert(entries[200].0.clone(), "kept-200".into());
        assert_eq!(stored, expected);
        assert_eq!(member.create_many(&entries).await.unwrap(), 0);
        let refused = vec![
            (format!("{prefix}fresh"), "x".to_string()),
            (String::new(), "y".to_string()),
        ];
        assert!(member.create_many(&refused).await.is_err());
        assert_eq!(member.get(&format!("{prefix}fresh")).await.unwrap(), None);
        member.shutdown().await;
    }

    /// A registered service is listed and watched while its process lives, and disappears
    /// from healthy listings when the process is killed.
    pub async fn service_disappears_when_holder_killed(h: &Harness) {
        let name = coordination::keys::api_service_name(&unique("svc"));
        let registration = ServiceRegistration {
            name: name.clone(),
            id: "gnmic1-api".to_string(),
            address: "127.0.0.1".to_string(),
            port: 7890,
            tags: vec![
                "cluster-name=c1".into(),
                "instance-name=gnmic1".into(),
                "__protocol=http".into(),
            ],
            // Real Consul agents need a few seconds of slack; the double and etcd do not.
            ttl: if matches!(h.store, Store::RealConsul { .. }) {
                Duration::from_secs(5)
            } else {
                Duration::from_secs(1)
            },
        };
        let observer = h.member("observer", Duration::ZERO).await;
        let mut watch = observer
            .watch_services(&name, &["__protocol=http".to_string()])
            .await
            .unwrap();
        let mut holder = h.service_holder(&registration).await;
        let expected = ServiceInstance {
            id: registration.id.clone(),
            name: name.clone(),
            address: "127.0.0.1".into(),
            port: 7890,
            tags: registration.tags.clone(),
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let list = tokio::time::timeout_at(deadline, watch.next())
                .await
                .expect("service never appeared")
                .unwrap();
            if list == vec![expected.clone()] {
                break;
            }
        }
        assert_eq!(
            observer.services(&name, &[]).await.unwrap(),
            vec![expected.clone()]
        );
        assert_eq!(expected.host_port(), "127.0.0.1:7890");
        assert!(observer
            .services(&name, &["instance-name=other".to_string()])
            .await
            .unwrap()
            .is_empty());
        holder.kill();
        loop {
            let list = tokio::time::timeout_at(deadline, watch.next())
                .await
                .expect("service never vanished")
                .unwrap();
            if list.is_empty() {
                break;
            }
        }
        assert!(observer.services(&name, &[]).await.unwrap().is_empty());
        observer.shutdown().await;
    }

    /// When the store goes away, the holder's guard reports the loss (it must not keep
    /// believing it holds the lock), and calls fail instead of hanging.
    pub async fn holder_learns_loss_when_store_goes_away(h: &Harness) {
        let key = format!("gnmic/{}/leader", unique("gone"));
        if h.is_memory() {
            let member = h.memory_member("holder", Duration::ZERO);
            let guard = member.acquire(&key, "holder").await.unwrap().unwrap();
            member.disconnect();
            tokio::time::timeout(PATIENCE, guard.lost())
                .await
                .expect("loss never reported");
            assert!(guard.is_lost());
            assert!(member.acquire(&key, "holder").await.is_err());
            return;
        }
        let member = h.member("holder", Duration::ZERO).await;
        let guard = member.acquire(&key, "holder").await.unwrap().unwrap();
        assert!(!guard.is_lost());
        h.stop_store().await;
        tokio::time::timeout(PATIENCE, guard.lost())
            .await
            .expect("loss never reported");
        assert!(guard.is_lost());
        let attempt = tokio::time::timeout(PATIENCE, member.acquire(&key, "holder"))
            .await
            .expect("acquire hung");
        assert!(
            attempt.is_err(),
            "acquire without a store must fail, got {attempt:?}"
        );
        drop(guard);
    }

    /// etcd stops long enough for the session to be lost, then restarts with its data: the
    /// instance gets the lock back under a new session with a larger token, the other
    /// instance is excluded, and a watch opened before the outage resynchronises.
    pub async fn recovery_after_store_restart(h: &Harness) {
        let key = format!("gnmic/{}/leader", unique("restart"));
        let member = h.member("phoenix", Duration::ZERO).await;
        let other = h.member("other", Duration::ZERO).await;
        let mut events = other.watch_prefix(&key).await.unwrap();
        let before = member.acquire(&key, "phoenix").await.unwrap().unwrap();
        next_event(&mut events, "the first acquire", |e| {
            matches!(e, WatchEvent::Put { .. })
        })
        .await;
        h.stop_store().await;
        tokio::time::timeout(PATIENCE, before.lost())
            .await
            .expect("loss never reported");
        h.restart_store().await;
        let after = acquire_within(&member, &key, "phoenix").await;
        assert!(!after.is_lost());
        assert!(after.fencing_token() > before.fencing_token());
        assert_eq!(
            other.holder(&key).await.unwrap().as_deref(),
            Some("phoenix")
        );
        assert!(other.acquire(&key, "other").await.unwrap().is_none());
        // The watch from before the outage catches up (resync or live events).
        after.release().await.unwrap();
        next_event(&mut events, "the delete after the restart", |e| {
            matches!(e, WatchEvent::Delete { .. })
        })
        .await;
        let again = other
            .acquire(&key, "other")
            .await
            .unwrap()
            .expect("released after restart");
        next_event(
            &mut events,
            "the put by the other member",
            |e| matches!(e, WatchEvent::Put { value, .. } if value == "other"),
        )
        .await;
        again.release().await.unwrap();
        drop(before);
    }
}

macro_rules! conformance {
    ($backend:ident, $harness:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn mutual_exclusion_among_10_contenders() {
                let Some(h) = $harness.await else { return };
                suite::mutual_exclusion(&h).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn expiry_after_holder_killed() {
                let Some(h) = $harness.await else { return };
                suite::expiry_after_holder_killed(&h).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn lock_delay_honored() {
                let Some(h) = $harness.await else { return };
                suite::lock_delay_honored(&h).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn graceful_release_frees_at_once() {
                let Some(h) = $harness.await else { return };
                suite::graceful_release_frees_at_once(&h).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn fencing_token_strictly_grows_over_100_handovers() {
                let Some(h) = $harness.await else { return };
                suite::fencing_token_strictly_grows(&h).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn watchers_see_acquire_and_expiry() {
                let Some(h) = $harness.await else { return };
                suite::watchers_see_acquire_and_expiry(&h).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn many_attempts_at_once() {
                let Some(h) = $harness.await else { return };
                suite::many_attempts_at_once(&h).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn create_many_writes_every_absent_entry() {
                let Some(h) = $harness.await else { return };
                suite::create_many_writes_every_absent_entry(&h).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn service_disappears_when_holder_killed() {
                let Some(h) = $harness.await else { return };
                suite::service_disappears_when_holder_killed(&h).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn holder_learns_loss_when_store_goes_away() {
                let Some(h) = $harness.await else { return };
                if !h.can_stop_store() {
                    eprintln!("cannot stop a real Consul from a test: skipped");
                    return;
                }
                suite::holder_learns_loss_when_store_goes_away(&h).await;
            }
        }
    };
}

conformance!(etcd, Harness::etcd());
conformance!(consul_double, Harness::double());
conformance!(memory, Harness::memory());
conformance!(real_consul, Harness::real_consul());
conformance!(k8s, Harness::k8s());

/// Only etcd keeps its data across a restart in these tests (the double starts empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_recovery_after_restart() {
    let Some(h) = Harness::etcd().await else {
        return;
    };
    suite::recovery_after_store_restart(&h).await;
}
