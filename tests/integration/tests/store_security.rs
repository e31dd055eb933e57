//! Transport security of the stores against real servers: etcd over TLS (server-verified and
//! mutual) and with user / password authentication (including auth-token expiry), Consul ACL
//! tokens (the test double, or a real Consul when `CONSUL_HTTP_ADDR` and `CONSUL_HTTP_TOKEN`
//! are set), and NATS with TLS, mutual TLS, user / password and tokens through the collector's
//! NATS output and the exporter's NATS input.
//!
//! Every failure case checks that the error names the cause and never contains the secret. A
//! refused credential (etcd permission denied or wrong password, Consul ACL token refused)
//! must fail a lock attempt at once, naming the credential to check, instead of being retried
//! until the caller gives up.

use futures::StreamExt;
use gnomon_bus::{NatsBus, NatsOptions, NatsTls};
use gnomon_collector::codec::RawResponse;
use gnomon_collector::outputs::{Collected, Outputs, StreamInfo};
use gnomon_config::{load_config_with_env, ConfigFormat};
use gnomon_consul_double::{ConsulDouble, DoubleConfig};
use gnomon_coordination::{
    self as coordination, Coordination, CoordinationError, Credential, LockerConfig,
    ServiceRegistration, WatchEvent, WatchEvents,
};
use gnomon_exporter::{Exporter, ExporterDeps, ExporterSettings};
use gnomon_gnmi::event::EventMeta;
use gnomon_gnmi::path::parse_path;
use gnomon_gnmi::proto::gnmi::{
    subscribe_response, typed_value, Notification, SubscribeResponse, TypedValue, Update,
};
use gnomon_testkit::{
    eventually, EtcdServer, EtcdServerOptions, NatsOperator, NatsServer, NatsServerOptions,
    ServerTls, TestPki,
};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Bound for anything that should happen "eventually" (never a speed assertion).
const PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Log capture: failures are reported in logs, which must name the cause and hide the secret.

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once) a process-wide subscriber recording every log line at debug level.
fn capture_logs() {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("debug,h2=info,hyper=info,hyper_util=info,tower=info,rustls=info")
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        // Another test may have installed one first; then nothing is captured here and the
        // log assertions below would fail loudly rather than pass silently.
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in this test binary");
        buffer
    });
}

/// Everything logged so far.
fn logs() -> String {
    let buffer = LOGS.get().expect("capture_logs() was called");
    String::from_utf8_lossy(&buffer.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// Log lines containing `needle`.
fn log_lines_with(needle: &str) -> Vec<String> {
    logs()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

fn assert_secret_absent(secret: &str, text: &str) {
    assert!(
        !text.contains(secret),
        "secret {secret:?} leaked into:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// etcd

fn etcd_locker(yaml: &str) -> LockerConfig {
    let mut cfg: LockerConfig = serde_yaml::from_str(yaml).unwrap();
    cfg.session_ttl = Duration::from_secs(2);
    cfg.retry_timer = Duration::from_millis(200);
    cfg.request_timeout = Duration::from_secs(3);
    cfg.delay = Duration::ZERO;
    cfg
}

/// The test locker for `etcd` over TLS with `tls_block(ca, identity)`.
fn etcd_tls_locker(
    etcd: &EtcdServer,
    ca: Option<&std::path::Path>,
    identity: Option<&gnomon_testkit::CertFiles>,
) -> LockerConfig {
    etcd_locker(&format!(
        "type: etcd\naddress: {}\n{}",
        etcd.address(),
        tls_block(ca, identity)
    ))
}

fn tls_block(ca: Option<&std::path::Path>, identity: Option<&gnomon_testkit::CertFiles>) -> String {
    let mut text = "tls:\n".to_string();
    if let Some(ca) = ca {
        text.push_str(&format!("  ca-file: {}\n", ca.display()));
    }
    if let Some(identity) = identity {
        text.push_str(&format!(
            "  cert-file: {}\n  key-file: {}\n",
            identity.cert_file.display(),
            identity.key_file.display()
        ));
    }
    if ca.is_none() && identity.is_none() {
        text.push_str("  skip-verify: false\n");
    }
    text
}

/// Connects and makes one store call, returning the first error (connect is lazy for
/// etcd without credentials, so the call is where TLS problems surface).
async fn first_error(cfg: &LockerConfig, instance: &str) -> Option<String> {
    let coordination = match coordination::connect(cfg, instance).await {
        Ok(c) => c,
        Err(e) => return Some(e.to_string()),
    };
    let result = coordination.get("gnmic/lab/probe").await.err();
    coordination.shutdown().await;
    result.map(|e| e.to_string())
}

async fn next_event(events: &mut WatchEvents, what: &str) -> WatchEvent {
    tokio::time::timeout(PATIENCE, events.next())
        .await
        .unwrap_or_else(|_| panic!("no watch event: {what}"))
        .unwrap_or_else(|| panic!("watch ended: {what}"))
}

async fn next_put_of(events: &mut WatchEvents, key: &str) -> String {
    loop {
        if let WatchEvent::Put { key: k, value } = next_event(events, key).await {
            if k == key {
                return value;
            }
        }
    }
}

/// Locks with fencing, a watch and a service round trip on `a` / `b` (two instances).
async fn exercise_coordination(a: &Arc<dyn Coordination>, b: &Arc<dyn Coordination>) {
    let key = "gnmic/lab/targets/leaf1";
    let mut events = a.watch_prefix("gnmic/lab/targets/").await.unwrap();
    let first = a.acquire(key, "a").await.unwrap().expect("free lock");
    assert!(first.fencing_token() > 0);
    assert_eq!(next_put_of(&mut events, key).await, "a");
    assert!(b.acquire(key, "b").await.unwrap().is_none(), "lock is held");
    assert_eq!(b.holder(key).await.unwrap().as_deref(), Some("a"));
    first.release().await.unwrap();
    let second = b.acquire(key, "b").await.unwrap().expect("released lock");
    assert!(second.fencing_token() > 0);
    assert_eq!(next_put_of(&mut events, key).await, "b");

    let registration = ServiceRegistration {
        name: "lab-gnmic-api".into(),
        id: "a-api".into(),
        address: "127.0.0.1".into(),
        port: 7890,
        tags: vec!["cluster-name=lab".into()],
        ttl: Duration::from_secs(2),
    };
    let handle = a.register_service(registration).await.unwrap();
    let seen = eventually("the service to be listed", PATIENCE, || async {
        let list = b.services("lab-gnmic-api", &[]).await.ok()?;
        (list.len() == 1).then_some(list)
    })
    .await
    .unwrap();
    assert_eq!(seen[0].id, "a-api");
    handle.deregister().await.unwrap();
    second.release().await.unwrap();
}

fn tls_server(pki: &TestPki) -> ServerTls {
    ServerTls::issued_by(pki, "etcd").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_locks_watches_and_registers_with_the_right_ca() {
    let pki = TestPki::new("etcd").unwrap();
    let etcd = EtcdServer::start_with(EtcdServerOptions {
        tls: Some(tls_server(&pki)),
        ..Default::default()
    })
    .unwrap();
    // No scheme: `tls` makes it https.
    let cfg = etcd_tls_locker(&etcd, Some(pki.ca_file()), None);
    assert_eq!(cfg.etcd_endpoints(), vec![etcd.endpoint()]);
    let a = coordination::connect(&cfg, "a").await.unwrap();
    let b = coordination::connect(&cfg, "b").await.unwrap();
    exercise_coordination(&a, &b).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_rejects_a_client_without_or_with_the_wrong_ca() {
    let pki = TestPki::new("etcd").unwrap();
    let other = TestPki::new("other").unwrap();
    let etcd = EtcdServer::start_with(EtcdServerOptions {
        tls: Some(tls_server(&pki)),
        ..Default::default()
    })
    .unwrap();

    // A `tls` block without ca-file: the system roots do not know the test CA.
    let no_ca = etcd_tls_locker(&etcd, None, None);
    let error = first_error(&no_ca, "no-ca").await.expect("must fail");
    assert!(error.contains("certificate"), "{error}");
    assert!(error.contains("TLS") || error.contains("tls"), "{error}");

    let wrong_ca = etcd_tls_locker(&etcd, Some(other.ca_file()), None);
    let error = first_error(&wrong_ca, "wrong-ca").await.expect("must fail");
    assert!(error.contains("certificate"), "{error}");
    assert!(error.contains("ca-file"), "{error}");

    // Plain HTTP to a TLS port.
    let plain = etcd_locker(&format!("type: etcd\naddress: {}\n", etcd.address()));
    let error = first_error(&plain, "plain").await.expect("must fail");
    assert!(error.contains("tls"), "{error}");
}

/// Set in the child process of the test below.
const SYSTEM_ROOTS_CHILD: &str = "GNOMON_TEST_SYSTEM_ROOTS_CHILD";

/// Without `tls.ca-file`, etcd's certificate is verified against the system's trusted CAs
/// (here `SSL_CERT_FILE`, set in a child process so other tests keep the real roots).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_tls_without_ca_file_trusts_the_system_roots() {
    if std::env::var_os(SYSTEM_ROOTS_CHILD).is_none() {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "etcd_tls_without_ca_file_trusts_the_system_roots",
                "--exact",
                "--nocapture",
            ])
            .env(SYSTEM_ROOTS_CHILD, "1")
            .output()
            .unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{printed}");
        assert!(printed.contains("1 passed"), "{printed}");
        return;
    }
    let pki = TestPki::new("system").unwrap();
    std::env::set_var("SSL_CERT_FILE", pki.ca_file());
    let etcd = EtcdServer::start_with(EtcdServerOptions {
        tls: Some(tls_server(&pki)),
        ..Default::default()
    })
    .unwrap();
    let cfg = etcd_tls_locker(&etcd, None, None);
    let a = coordination::connect(&cfg, "a").await.unwrap();
    a.put("gnmic/lab/config/probe", "ok").await.unwrap();
    assert_eq!(
        a.get("gnmic/lab/config/probe").await.unwrap().as_deref(),
        Some("ok")
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_client_certificates_requires_one() {
    let pki = TestPki::new("etcd").unwrap();
    let etcd = EtcdServer::start_with(EtcdServerOptions {
        tls: Some(tls_server(&pki).verifying_clients()),
        ..Default::default()
    })
    .unwrap();

    let without_cert = etcd_tls_locker(&etcd, Some(pki.ca_file()), None);
    let error = first_error(&without_cert, "no-cert")
        .await
        .expect("must fail");
    assert!(error.contains("certificate"), "{error}");

    let client = pki.issue("gnomon-client").unwrap();
    let with_cert = etcd_tls_locker(&etcd, Some(pki.ca_file()), Some(&client));
    let a = coordination::connect(&with_cert, "a").await.unwrap();
    let b = coordination::connect(&with_cert, "b").await.unwrap();
    exercise_coordination(&a, &b).await;
    a.shutdown().await;
    b.shutdown().await;

    // Client certificates and user / password together.
    etcd.enable_auth("Root-Pass-41").await.unwrap();
    let with_cert_only = first_error(&with_cert, "cert-only")
        .await
        .expect("auth is on");
    assert!(!with_cert_only.contains("TLS is on"), "{with_cert_only}");
    let both = etcd_locker(&format!(
        "type: etcd\naddress: {}\nusername: root\npassword: Root-Pass-41\n{}",
        etcd.address(),
        tls_block(Some(pki.ca_file()), Some(&client))
    ));
    let a = coordination::connect(&both, "a").await.unwrap();
    let guard = a
        .acquire("gnmic/lab/leader", "a")
        .await
        .unwrap()
        .expect("free lock");
    assert!(guard.fencing_token() > 0);
    guard.release().await.unwrap();
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_auth_rejects_a_wrong_password_without_echoing_it() {
    capture_logs();
    let etcd = EtcdServer::start().unwrap();
    etcd.enable_auth("Root-Pass-41").await.unwrap();

    let wrong = etcd_locker(&format!(
        "type: etcd\naddress: {}\nusername: root\npassword: Not-The-Pass-97\n",
        etcd.address()
    ));
    let error = first_error(&wrong, "wrong").await.expect("must fail");
    assert!(error.contains("authentication failed"), "{error}");
    assert_secret_absent("Not-The-Pass-97", &error);
    assert_secret_absent("Root-Pass-41", &error);

    // Without credentials every call is refused.
    let anonymous = etcd_locker(&format!("type: etcd\naddress: {}\n", etcd.address()));
    let error = first_error(&anonymous, "anonymous")
        .await
        .expect("must fail");
    assert!(error.contains("username and password"), "{error}");
    assert_secret_absent("Not-The-Pass-97", &logs());
    assert_secret_absent("Root-Pass-41", &logs());
}

/// What a non-root etcd user needs: read-write on `gnmic/`, `gnmic-services/` and, with a
/// lock-delay, `__gnomon/`. Without the last, acquiring is refused and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_user_limited_to_gnomon_prefixes_is_enough() {
    let etcd = EtcdServer::start().unwrap();
    etcd.add_user(
        "gnomon",
        "Gnomon-Pass-12",
        &["gnmic/", "gnmic-services/", "__gnomon/"],
    )
    .await
    .unwrap();
    etcd.add_user("narrow", "Narrow-Pass-34", &["gnmic/"])
        .await
        .unwrap();
    etcd.enable_auth("Root-Pass-41").await.unwrap();

    let user = |name: &str, password: &str| {
        let mut cfg = etcd_locker(&format!(
            "type: etcd\naddress: {}\nusername: {name}\npassword: {password}\n",
            etcd.address()
        ));
        cfg.delay = Duration::from_secs(1);
        cfg
    };
    let gnomon = user("gnomon", "Gnomon-Pass-12");
    let a = coordination::connect(&gnomon, "a").await.unwrap();
    let b = coordination::connect(&gnomon, "b").await.unwrap();
    exercise_coordination(&a, &b).await;
    a.shutdown().await;
    b.shutdown().await;

    let narrow = coordination::connect(&user("narrow", "Narrow-Pass-34"), "n")
        .await
        .unwrap();
    let error = narrow
        .acquire("gnmic/lab/targets/leaf1", "n")
        .await
        .expect_err("__gnomon/ is not granted")
        .to_string();
    assert!(error.contains("permission denied"), "{error}");
    assert_secret_absent("Narrow-Pass-34", &error);
    narrow.shutdown().await;
}

/// The retry timer of the refusal tests: a refused lock attempt must fail well before one
/// retry would even start.
const REFUSAL_RETRY_TIMER: Duration = Duration::from_secs(2);

/// `acquire_blocking` of `key`, given up (cancelled) after 10 retry timers: returns the
/// outcome and how long it took.
async fn blocking_acquire(
    backend: &Arc<dyn Coordination>,
    key: &str,
) -> (
    Result<Option<coordination::LockGuard>, CoordinationError>,
    Duration,
) {
    let cancel = CancellationToken::new();
    let give_up = cancel.clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(REFUSAL_RETRY_TIMER * 10).await;
        give_up.cancel();
    });
    let started = std::time::Instant::now();
    let outcome = backend.acquire_blocking(key, "refused", &cancel).await;
    let took = started.elapsed();
    timer.abort();
    (outcome, took)
}

/// Fails unless `outcome` is a refusal of `credential` that came before one retry timer.
fn assert_refused_fast(
    outcome: Result<Option<coordination::LockGuard>, CoordinationError>,
    took: Duration,
    credential: &Credential,
) -> String {
    let error = match outcome {
        Err(error) => error,
        Ok(Some(guard)) => panic!("lock acquired despite the refusal: {guard:?}"),
        Ok(None) => panic!("acquire_blocking kept retrying a refusal until cancelled ({took:?})"),
    };
    assert_eq!(error.credential(), Some(credential), "{error}");
    assert!(!error.is_transient(), "{error}");
    assert!(
        took < REFUSAL_RETRY_TIMER,
        "the refusal took {took:?} (retry timer {REFUSAL_RETRY_TIMER:?}): {error}"
    );
    eprintln!("refused after {took:?}: {error}");
    error.to_string()
}

/// An etcd user without rights on the lock prefix: acquiring fails at once with an error that
/// names the user's roles, and so do watches and service registrations; a wrong password
/// fails at connect and names the user name and password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_permission_denied_fails_fast_and_names_the_role() {
    capture_logs();
    let etcd = EtcdServer::start().unwrap();
    // Rights on the service records only, none on gnmic/ (the locks).
    etcd.add_user("outsider", "Outsider-Pass-58", &["gnmic-services/"])
        .await
        .unwrap();
    etcd.enable_auth("Root-Pass-41").await.unwrap();
    let config = |password: &str| {
        let mut cfg = etcd_locker(&format!(
            "type: etcd\naddress: {}\nusername: outsider\npassword: {password}\n",
            etcd.address()
        ));
        cfg.retry_timer = REFUSAL_RETRY_TIMER;
        cfg
    };
    let outsider = coordination::connect(&config("Outsider-Pass-58"), "o")
        .await
        .unwrap();
    let role = Credential::EtcdRole {
        user: Some("outsider".into()),
    };

    let key = "gnmic/lab/targets/refused-etcd";
    let (outcome, took) = blocking_acquire(&outsider, key).await;
    let error = assert_refused_fast(outcome, took, &role);
    assert!(error.contains("permission denied"), "{error}");
    assert!(error.contains("\"outsider\""), "{error}");
    assert!(error.contains("clustering.locker.username"), "{error}");
    assert_secret_absent("Outsider-Pass-58", &error);
    // Reported once, at error level.
    let reports = log_lines_with("lock refused")
        .into_iter()
        .filter(|l| l.contains("refused-etcd"))
        .collect::<Vec<_>>();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(reports[0].contains("ERROR"), "{}", reports[0]);

    // A single attempt, a watch and a registration of a denied key fail the same way.
    let error = outsider.acquire(key, "o").await.unwrap_err();
    assert_eq!(error.credential(), Some(&role), "{error}");
    let error = outsider.watch_prefix("gnmic/lab/").await.err().unwrap();
    assert_eq!(error.credential(), Some(&role), "{error}");
    outsider.shutdown().await;

    // A wrong password is refused when connecting.
    let started = std::time::Instant::now();
    let error = coordination::connect(&config("Not-The-Pass-23"), "o")
        .await
        .err()
        .expect("wrong password");
    assert!(
        started.elapsed() < REFUSAL_RETRY_TIMER,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        error.credential(),
        Some(&Credential::EtcdPassword),
        "{error}"
    );
    let error = error.to_string();
    assert!(error.contains("authentication failed"), "{error}");
    assert!(
        error.contains("clustering.locker.username and password"),
        "{error}"
    );
    assert_secret_absent("Not-The-Pass-23", &error);
    assert_secret_absent("Outsider-Pass-58", &logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_auth_keeps_locks_and_loss_signal_working_across_token_expiry() {
    capture_logs();
    let mut etcd = EtcdServer::start_with(EtcdServerOptions {
        auth_token_ttl: Some(Duration::from_secs(1)),
        ..Default::default()
    })
    .unwrap();
    etcd.enable_auth("Root-Pass-41").await.unwrap();
    let cfg = etcd_locker(&format!(
        "type: etcd\naddress: {}\nusername: root\npassword: Root-Pass-41\n",
        etcd.address()
    ));
    let a = coordination::connect(&cfg, "a").await.unwrap();
    let b = coordination::connect(&cfg, "b").await.unwrap();
    exercise_coordination(&a, &b).await;

    // Hold a lock and watch well past the auth token's lifetime: the session (lease) keeps
    // being renewed, the watch keeps delivering, and later calls log in again by themselves.
    let key = "gnmic/lab/targets/leaf2";
    let mut events = b.watch_prefix("gnmic/lab/").await.unwrap();
    let guard = a.acquire(key, "a").await.unwrap().expect("free lock");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !guard.is_lost(),
        "lock lost while only the auth token expired"
    );
    assert_eq!(b.holder(key).await.unwrap().as_deref(), Some("a"));
    a.put("gnmic/lab/config/marker", "after-expiry")
        .await
        .unwrap();
    assert_eq!(
        next_put_of(&mut events, "gnmic/lab/config/marker").await,
        "after-expiry"
    );
    guard.release().await.unwrap();

    // The loss signal: the store goes away, the holder learns it within the TTL; after the
    // restart the same instance locks again. (Replaying its log, etcd restores the simple
    // tokens it issued since its last snapshot, so the old token may still work; if it does
    // not, the client logs in again by itself.)
    let guard = a.acquire(key, "a").await.unwrap().expect("free lock");
    etcd.stop();
    tokio::time::timeout(PATIENCE, guard.lost())
        .await
        .expect("loss signal while etcd is down");
    etcd.restart().unwrap();
    let again = eventually("re-acquire after the restart", PATIENCE, || async {
        a.acquire(key, "a").await.ok().flatten()
    })
    .await
    .unwrap();
    assert!(again.fencing_token() > guard.fencing_token());
    again.release().await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
    assert_secret_absent("Root-Pass-41", &logs());
}

// ---------------------------------------------------------------------------------------------
// Consul ACL tokens

const ACL_TOKEN: &str = "acl-3f9c1e7a-secret";
const WRONG_TOKEN: &str = "acl-0000-wrong";

/// Where the Consul tests run: the double requiring [`ACL_TOKEN`], and a real Consul when
/// `CONSUL_HTTP_ADDR` and `CONSUL_HTTP_TOKEN` (a token allowed to write KV, sessions and
/// services) are both set.
async fn consul_targets() -> Vec<(ConsulTarget, String, String)> {
    let double = ConsulDouble::start_with(DoubleConfig {
        acl_token: Some(ACL_TOKEN.to_string()),
        session_ttl_min: Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let address = double.address().to_string();
    let mut targets = vec![(ConsulTarget::Double(double), address, ACL_TOKEN.to_string())];
    match (
        std::env::var("CONSUL_HTTP_ADDR"),
        std::env::var("CONSUL_HTTP_TOKEN"),
    ) {
        (Ok(address), Ok(token)) if !address.is_empty() && !token.is_empty() => {
            targets.push((ConsulTarget::Real, address, token));
        }
        _ => eprintln!(
            "CONSUL_HTTP_ADDR / CONSUL_HTTP_TOKEN not both set: skipping the real-Consul ACL run"
        ),
    }
    targets
}

enum ConsulTarget {
    Double(#[allow(dead_code)] ConsulDouble),
    Real,
}

fn consul_locker(address: &str, token: Option<&str>) -> LockerConfig {
    let mut yaml = format!("type: consul\naddress: {address}\nsession-ttl: 10s\n");
    if let Some(token) = token {
        yaml.push_str(&format!("token: {token}\n"));
    }
    let mut cfg: LockerConfig = serde_yaml::from_str(&yaml).unwrap();
    cfg.retry_timer = Duration::from_millis(200);
    cfg.delay = Duration::ZERO;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_locker_token_is_sent_and_a_wrong_or_missing_one_is_reported() {
    for (target, address, token) in consul_targets().await {
        let real = matches!(target, ConsulTarget::Real);
        let cfg = consul_locker(&address, Some(&token));
        let a = coordination::connect(&cfg, "a").await.unwrap();
        let b = coordination::connect(&cfg, "b").await.unwrap();
        exercise_coordination(&a, &b).await;
        a.shutdown().await;
        b.shutdown().await;

        for given in [Some(WRONG_TOKEN), None] {
            let cfg = consul_locker(&address, given);
            let c = coordination::connect(&cfg, "c").await.unwrap();
            let error = c
                .acquire("gnmic/lab/targets/leaf1", "c")
                .await
                .err()
                .unwrap_or_else(|| panic!("acquire with token {given:?} must fail (real: {real})"))
                .to_string();
            assert!(error.contains("permission denied"), "{error}");
            assert!(error.contains("token"), "{error}");
            assert_secret_absent(WRONG_TOKEN, &error);
            assert_secret_absent(&token, &error);
            let error = c.get("gnmic/lab/leader").await.unwrap_err().to_string();
            assert!(error.contains("permission denied"), "{error}");
            c.shutdown().await;
        }
    }
}

/// The double answers a wrong or missing ACL token like Consul: 403 `Permission denied`.
/// A lock attempt with such a token fails at once (one refused request, no retries) with an
/// error naming the token setting; so do watches and service registrations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_refused_token_fails_fast_and_names_the_token() {
    let double = ConsulDouble::start_with(DoubleConfig {
        acl_token: Some(ACL_TOKEN.to_string()),
        session_ttl_min: Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let http = gnomon_testkit::http_client();
    for token in [Some(WRONG_TOKEN), None] {
        let mut request = http.put(format!("{}/v1/kv/gnmic/lab/probe", double.url()));
        if let Some(token) = token {
            request = request.header("X-Consul-Token", token);
        }
        let response = request.body("x").send().await.unwrap();
        assert_eq!(response.status(), 403, "token {token:?}");
        assert_eq!(response.text().await.unwrap(), "Permission denied");
    }
    let right = http
        .put(format!("{}/v1/kv/gnmic/lab/probe", double.url()))
        .header("X-Consul-Token", ACL_TOKEN)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);

    let mut cfg = consul_locker(&double.address().to_string(), Some(WRONG_TOKEN));
    cfg.retry_timer = REFUSAL_RETRY_TIMER;
    let refused = coordination::connect(&cfg, "c").await.unwrap();
    let before = double.refused_requests();
    let (outcome, took) = blocking_acquire(&refused, "gnmic/lab/targets/refused-consul").await;
    let error = assert_refused_fast(outcome, took, &Credential::ConsulToken);
    assert_eq!(
        double.refused_requests() - before,
        1,
        "a refused call must not be repeated"
    );
    assert!(error.contains("permission denied"), "{error}");
    assert!(error.contains("clustering.locker.token"), "{error}");
    assert_secret_absent(WRONG_TOKEN, &error);
    assert_secret_absent(ACL_TOKEN, &error);

    let error = refused.watch_prefix("gnmic/lab/").await.err().unwrap();
    assert_eq!(
        error.credential(),
        Some(&Credential::ConsulToken),
        "{error}"
    );
    let registration = ServiceRegistration {
        name: "lab-gnmic-api".into(),
        id: "c-api".into(),
        address: "127.0.0.1".into(),
        port: 7890,
        tags: Vec::new(),
        ttl: Duration::from_secs(2),
    };
    let error = refused.register_service(registration).await.err().unwrap();
    assert_eq!(
        error.credential(),
        Some(&Credential::ConsulToken),
        "{error}"
    );
    assert!(
        error.to_string().contains("service-registration.token"),
        "{error}"
    );
    refused.shutdown().await;
}

#[tokio::test]
async fn consul_token_unfit_for_a_header_is_a_config_error_naming_the_key() {
    let mut cfg = consul_locker("127.0.0.1:1", None);
    cfg.token = Some("bad\ntoken-value".into());
    let error = coordination::connect(&cfg, "a")
        .await
        .err()
        .expect("must be refused")
        .to_string();
    assert!(error.contains("token"), "{error}");
    assert_secret_absent("token-value", &error);
}

fn exporter_settings(nats: &NatsServer, registration: &str) -> ExporterSettings {
    let mut settings = ExporterSettings {
        instance_name: "e1".into(),
        cluster_name: "lab".into(),
        ..Default::default()
    };
    settings.inputs.insert(
        "in".into(),
        serde_yaml::from_str(&format!(
            "address: {}\nsubject: telemetry.>",
            nats.address()
        ))
        .unwrap(),
    );
    settings.outputs.insert(
        "prom".into(),
        serde_yaml::from_str(&format!(
            "listen: 127.0.0.1:0\nservice-registration:\n{registration}"
        ))
        .unwrap(),
    );
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_registration_uses_its_own_token() {
    capture_logs();
    let nats = NatsServer::start().unwrap();
    for (_target, address, token) in consul_targets().await {
        let settings = exporter_settings(
            &nats,
            &format!(
                "  address: {address}\n  token: {token}\n  name: secured-{}\n",
                std::process::id()
            ),
        );
        let exporter = Exporter::start(settings, ExporterDeps::default(), CancellationToken::new())
            .await
            .unwrap();
        eventually("registered with the token", PATIENCE, || {
            let registered = exporter.is_registered("prom");
            async move { registered.then_some(()) }
        })
        .await
        .unwrap();
        let mut observer = consul_locker(&address, Some(&token));
        observer.session_ttl = Duration::from_secs(10);
        let observer = coordination::connect(&observer, "observer").await.unwrap();
        let name = format!("secured-{}", std::process::id());
        eventually("the registration listed", PATIENCE, || async {
            let list = observer.services(&name, &[]).await.ok()?;
            (list.len() == 1).then_some(())
        })
        .await
        .unwrap();
        exporter.stop().await;
        observer.shutdown().await;

        // The wrong token: the exporter serves, is never registered, and says why.
        let wrong_name = format!("refused-{}", std::process::id());
        let settings = exporter_settings(
            &nats,
            &format!("  address: {address}\n  token: {WRONG_TOKEN}\n  name: {wrong_name}\n"),
        );
        let exporter = Exporter::start(settings, ExporterDeps::default(), CancellationToken::new())
            .await
            .unwrap();
        let listen = exporter.listen_addr("prom").unwrap();
        let lines = eventually("the registration failure logged", PATIENCE, || async {
            let lines: Vec<String> = log_lines_with("service registration failed")
                .into_iter()
                .filter(|l| l.contains(&wrong_name))
                .collect();
            (!lines.is_empty()).then_some(lines)
        })
        .await
        .unwrap();
        assert!(lines[0].contains("permission denied"), "{}", lines[0]);
        assert!(!exporter.is_registered("prom"));
        let response = gnomon_testkit::http_get(format!("http://{listen}/metrics"))
            .await
            .unwrap();
        assert!(response.status().is_success());
        exporter.stop().await;
    }
    assert_secret_absent(WRONG_TOKEN, &logs());
    assert_secret_absent(ACL_TOKEN, &logs());
}

// ---------------------------------------------------------------------------------------------
// NATS

const NATS_USER: &str = "gnomon";
const NATS_PASSWORD: &str = "Nats-Pass-5d2";
const NATS_TOKEN: &str = "nats-token-8e1b";

/// A gNMI update of `in-octets` of interface `interface`.
fn response(interface: &str, octets: u64) -> SubscribeResponse {
    let update = Update {
        path: Some(parse_path("in-octets").unwrap()),
        val: Some(TypedValue {
            value: Some(typed_value::Value::UintVal(octets)),
        }),
        ..Default::default()
    };
    SubscribeResponse {
        response: Some(subscribe_response::Response::Update(Notification {
            timestamp: 1_700_000_000_000_000_000,
            prefix: Some(
                parse_path(&format!(
                    "/interfaces/interface[name={interface}]/state/counters"
                ))
                .unwrap(),
            ),
            update: vec![update],
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The collector's NATS outputs of a gnmic config whose `nats-out` block ends with `extra`
/// (indented by four spaces).
fn collector_outputs(nats: &NatsServer, name: &str, extra: &str) -> Outputs {
    let yaml = format!(
        "outputs:\n  {name}:\n    type: nats\n    address: {}\n    subject-prefix: telemetry\n    connect-time-wait: 200ms\n{extra}",
        nats.address()
    );
    let config = load_config_with_env(&yaml, ConfigFormat::Yaml, &[]).unwrap();
    Outputs::start(&config.outputs, None).unwrap()
}

async fn write_sample(outputs: &Outputs, target: &str, octets: u64) {
    let stream = Arc::new(StreamInfo::new(
        EventMeta::new(target, "port-stats"),
        Some(7),
        outputs.slot_count(),
    ));
    let item = Arc::new(Collected {
        stream,
        response: RawResponse::from_message(&response("Ethernet1", octets)),
    });
    for sender in outputs.select(&[]) {
        sender.write(&item).await;
    }
}

/// An exporter whose NATS input `in` ends with `extra` (YAML lines).
async fn exporter_with_input(nats: &NatsServer, extra: &str) -> Exporter {
    let mut settings = ExporterSettings {
        instance_name: "e1".into(),
        cluster_name: "lab".into(),
        ..Default::default()
    };
    settings.inputs.insert(
        "in".into(),
        serde_yaml::from_str(&format!(
            "address: {}\nsubject: telemetry.>\nconnect-time-wait: 200ms\n{extra}",
            nats.address()
        ))
        .unwrap(),
    );
    settings.outputs.insert(
        "prom".into(),
        serde_yaml::from_str("listen: 127.0.0.1:0").unwrap(),
    );
    Exporter::start(settings, ExporterDeps::default(), CancellationToken::new())
        .await
        .unwrap()
}

async fn scrape(addr: SocketAddr) -> Option<String> {
    let response = gnomon_testkit::http_client()
        .get(format!("http://{addr}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    response.status().is_success().then_some(())?;
    response.text().await.ok()
}

/// Writes samples through `outputs` until the exporter serves the series of `target`
/// (the exporter and the output connect independently, so early samples may be dropped).
async fn flows_end_to_end(outputs: &Outputs, exporter: &Exporter, target: &str) {
    let addr = exporter.listen_addr("prom").unwrap();
    let mut octets = 1000;
    let text = eventually("the sample at the exporter", PATIENCE, || {
        octets += 1;
        let value = octets;
        async move {
            write_sample(outputs, target, value).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let text = scrape(addr).await?;
            text.lines()
                .any(|l| l.contains(&format!("source=\"{target}\"")) && l.contains("in_octets"))
                .then_some(text)
        }
    })
    .await
    .unwrap();
    assert!(text.contains("interface_name=\"Ethernet1\""), "{text}");
}

fn tls_yaml(
    indent: &str,
    ca: &std::path::Path,
    identity: Option<&gnomon_testkit::CertFiles>,
) -> String {
    let mut text = format!("{indent}tls:\n{indent}  ca-file: {}\n", ca.display());
    if let Some(identity) = identity {
        text.push_str(&format!(
            "{indent}  cert-file: {}\n{indent}  key-file: {}\n",
            identity.cert_file.display(),
            identity.key_file.display()
        ));
    }
    text
}

fn dropped_not_connected(output: &str) -> f64 {
    let rendered = gnomon_telemetry::metrics_handle().render();
    rendered
        .lines()
        .filter(|l| {
            l.starts_with("gnomon_output_dropped_total")
                && l.contains(&format!("output=\"{output}\""))
                && l.contains("reason=\"not_connected\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// nats-server requiring a client certificate from `pki` and the test user's password.
fn nats_with_mtls_and_user(pki: &TestPki) -> NatsServer {
    NatsServer::start_with(NatsServerOptions {
        tls: Some(
            ServerTls::issued_by(pki, "nats")
                .unwrap()
                .verifying_clients(),
        ),
        user: Some((NATS_USER.into(), NATS_PASSWORD.into())),
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_mutual_tls_with_user_and_password_carries_collector_data_to_the_exporter() {
    let pki = TestPki::new("nats").unwrap();
    let nats = nats_with_mtls_and_user(&pki);
    let collector_cert = pki.issue("collector").unwrap();
    let exporter_cert = pki.issue("exporter").unwrap();

    let outputs = collector_outputs(
        &nats,
        "mtls-out",
        &format!(
            "    username: {NATS_USER}\n    password: {NATS_PASSWORD}\n{}",
            tls_yaml("    ", pki.ca_file(), Some(&collector_cert))
        ),
    );
    let exporter = exporter_with_input(
        &nats,
        &format!(
            "username: {NATS_USER}\npassword: {NATS_PASSWORD}\n{}",
            tls_yaml("", pki.ca_file(), Some(&exporter_cert))
        ),
    )
    .await;
    flows_end_to_end(&outputs, &exporter, "leaf-mtls").await;
    outputs.close(Duration::from_secs(2)).await;
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_tls_with_a_token_carries_collector_data_to_the_exporter() {
    let pki = TestPki::new("nats").unwrap();
    let nats = NatsServer::start_with(NatsServerOptions {
        tls: Some(ServerTls::issued_by(&pki, "nats").unwrap()),
        token: Some(NATS_TOKEN.into()),
        ..Default::default()
    })
    .unwrap();
    let outputs = collector_outputs(
        &nats,
        "token-out",
        &format!(
            "    token: {NATS_TOKEN}\n{}",
            tls_yaml("    ", pki.ca_file(), None)
        ),
    );
    let exporter = exporter_with_input(
        &nats,
        &format!("token: {NATS_TOKEN}\n{}", tls_yaml("", pki.ca_file(), None)),
    )
    .await;
    flows_end_to_end(&outputs, &exporter, "leaf-token").await;
    outputs.close(Duration::from_secs(2)).await;
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_credentials_files_over_tls_carry_collector_data_to_the_exporter() {
    let pki = TestPki::new("nats").unwrap();
    let operator = NatsOperator::new().unwrap();
    let nats = NatsServer::start_with(NatsServerOptions {
        tls: Some(ServerTls::issued_by(&pki, "nats").unwrap()),
        extra_config: Some(operator.server_config()),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let collector_creds = dir.path().join("collector.creds");
    let exporter_creds = dir.path().join("exporter.creds");
    operator
        .user_credentials("collector", &collector_creds)
        .unwrap();
    operator
        .user_credentials("exporter", &exporter_creds)
        .unwrap();

    let outputs = collector_outputs(
        &nats,
        "creds-out",
        &format!(
            "    credentials-file: {}\n{}",
            collector_creds.display(),
            tls_yaml("    ", pki.ca_file(), None)
        ),
    );
    let exporter = exporter_with_input(
        &nats,
        &format!(
            "credentials-file: {}\n{}",
            exporter_creds.display(),
            tls_yaml("", pki.ca_file(), None)
        ),
    )
    .await;
    flows_end_to_end(&outputs, &exporter, "leaf-creds").await;
    outputs.close(Duration::from_secs(2)).await;
    exporter.stop().await;

    // A user of another operator is refused; a missing file is named.
    let stranger = dir.path().join("stranger.creds");
    NatsOperator::new()
        .unwrap()
        .user_credentials("stranger", &stranger)
        .unwrap();
    let mut options = bus_options(&nats);
    options.tls = Some(NatsTls {
        ca_file: Some(pki.ca_file().to_path_buf()),
        cert_file: None,
        key_file: None,
    });
    options.credentials_file = Some(stranger);
    let error = NatsBus::connect(&options).await.err().unwrap().to_string();
    assert!(error.contains("authorization"), "{error}");
    options.credentials_file = Some(dir.path().join("missing.creds"));
    let error = NatsBus::connect(&options).await.err().unwrap().to_string();
    assert!(error.contains("credentials-file"), "{error}");
    assert!(error.contains("missing.creds"), "{error}");
}

fn bus_options(nats: &NatsServer) -> NatsOptions {
    let mut options = NatsOptions::new(nats.address());
    options.connect_timeout = Duration::from_secs(3);
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_connection_errors_name_the_cause_and_hide_the_secret() {
    let pki = TestPki::new("nats").unwrap();
    let other = TestPki::new("other").unwrap();
    let nats = nats_with_mtls_and_user(&pki);
    let client = pki.issue("client").unwrap();
    let tls = |ca: &std::path::Path, with_cert: bool| NatsTls {
        ca_file: Some(ca.to_path_buf()),
        cert_file: with_cert.then(|| client.cert_file.clone()),
        key_file: with_cert.then(|| client.key_file.clone()),
    };

    let mut wrong_password = bus_options(&nats);
    wrong_password.username = Some(NATS_USER.into());
    wrong_password.password = Some("Wrong-Pass-77".into());
    wrong_password.tls = Some(tls(pki.ca_file(), true));
    let error = NatsBus::connect(&wrong_password)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("authorization"), "{error}");
    assert_secret_absent("Wrong-Pass-77", &error);

    let mut wrong_ca = bus_options(&nats);
    wrong_ca.username = Some(NATS_USER.into());
    wrong_ca.password = Some(NATS_PASSWORD.into());
    wrong_ca.tls = Some(tls(other.ca_file(), true));
    let error = NatsBus::connect(&wrong_ca).await.err().unwrap().to_string();
    assert!(error.contains("certificate"), "{error}");
    assert!(error.contains("tls.ca-file"), "{error}");
    assert_secret_absent(NATS_PASSWORD, &error);

    let mut no_client_cert = bus_options(&nats);
    no_client_cert.username = Some(NATS_USER.into());
    no_client_cert.password = Some(NATS_PASSWORD.into());
    no_client_cert.tls = Some(tls(pki.ca_file(), false));
    let error = NatsBus::connect(&no_client_cert)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("Certificate"), "{error}");
    assert!(error.contains("tls.cert-file"), "{error}");

    let mut no_tls = bus_options(&nats);
    no_tls.username = Some(NATS_USER.into());
    no_tls.password = Some(NATS_PASSWORD.into());
    let error = NatsBus::connect(&no_tls).await.err().unwrap().to_string();
    assert!(error.contains("certificate"), "{error}");
    assert!(error.contains("tls.ca-file"), "{error}");

    let mut right = bus_options(&nats);
    right.username = Some(NATS_USER.into());
    right.password = Some(NATS_PASSWORD.into());
    right.tls = Some(tls(pki.ca_file(), true));
    NatsBus::connect(&right).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_wrong_password_keeps_the_output_and_input_running_and_logs_the_cause() {
    capture_logs();
    gnomon_telemetry::metrics_handle();
    let pki = TestPki::new("nats").unwrap();
    let nats = NatsServer::start_with(NatsServerOptions {
        tls: Some(ServerTls::issued_by(&pki, "nats").unwrap()),
        user: Some((NATS_USER.into(), NATS_PASSWORD.into())),
        ..Default::default()
    })
    .unwrap();
    const WRONG: &str = "Wrong-Pass-31";
    let outputs = collector_outputs(
        &nats,
        "refused-out",
        &format!(
            "    username: {NATS_USER}\n    password: {WRONG}\n{}",
            tls_yaml("    ", pki.ca_file(), None)
        ),
    );
    let exporter = exporter_with_input(
        &nats,
        &format!(
            "username: {NATS_USER}\npassword: {WRONG}\n{}",
            tls_yaml("", pki.ca_file(), None)
        ),
    )
    .await;
    let other = TestPki::new("other").unwrap();
    let untrusting = collector_outputs(
        &nats,
        "untrusting-out",
        &format!(
            "    username: {NATS_USER}\n    password: {NATS_PASSWORD}\n{}",
            tls_yaml("    ", other.ca_file(), None)
        ),
    );

    // The output keeps taking samples and counts them as dropped while not connected.
    eventually("samples dropped as not connected", PATIENCE, || async {
        write_sample(&outputs, "leaf-refused", 1).await;
        (dropped_not_connected("refused-out") > 0.0).then_some(())
    })
    .await
    .unwrap();
    let output_lines = eventually(
        "the output's connection failure logged",
        PATIENCE,
        || async {
            let lines: Vec<String> = log_lines_with("NATS connection failed")
                .into_iter()
                .filter(|l| l.contains("refused-out"))
                .collect();
            (!lines.is_empty()).then_some(lines)
        },
    )
    .await
    .unwrap();
    assert!(
        output_lines[0].contains("authorization"),
        "{}",
        output_lines[0]
    );
    let input_lines = eventually(
        "the input's subscription failure logged",
        PATIENCE,
        || async {
            let lines: Vec<String> = log_lines_with("NATS subscription failed")
                .into_iter()
                .filter(|l| l.contains("input=in") && l.contains("authorization"))
                .collect();
            (!lines.is_empty()).then_some(lines)
        },
    )
    .await
    .unwrap();
    assert!(!input_lines.is_empty());
    let untrusting_lines = eventually("the wrong CA logged", PATIENCE, || async {
        let lines: Vec<String> = log_lines_with("NATS connection failed")
            .into_iter()
            .filter(|l| l.contains("untrusting-out"))
            .collect();
        (!lines.is_empty()).then_some(lines)
    })
    .await
    .unwrap();
    assert!(
        untrusting_lines[0].contains("UnknownIssuer")
            && untrusting_lines[0].contains("tls.ca-file"),
        "{}",
        untrusting_lines[0]
    );
    // The exporter still serves.
    let addr = exporter.listen_addr("prom").unwrap();
    assert!(scrape(addr).await.is_some());
    assert_secret_absent(WRONG, &logs());
    assert_secret_absent(NATS_PASSWORD, &logs());
    outputs.close(Duration::from_secs(2)).await;
    untrusting.close(Duration::from_secs(2)).await;
    exporter.stop().await;
}
