//! Interop with a third-party gNMI client: pygnmi (from the project venv made by
//! `scripts/setup`) runs `tests/pygnmi/interop.py` scenarios against an in-process simulator,
//! plaintext and with TLS + credentials.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use gnomon_simulator::{Simulator, SimulatorArgs};

const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python; a missing venv is a failure (the suite needs it), not a skip.
fn venv_python() -> PathBuf {
    let python = workspace_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup to create the Python venv with pygnmi",
        python.display()
    );
    python
}

struct Secure {
    certificate: tempfile::NamedTempFile,
}

const USERNAME: &str = "gnomon";
const PASSWORD: &str = "interop-secret";

async fn simulator(secure: bool) -> (Simulator, Option<Secure>) {
    let mut args = SimulatorArgs {
        interfaces: 4,
        update_rate: Duration::from_millis(100),
        flap_period: Duration::from_millis(700),
        ..SimulatorArgs::on_free_ports(1)
    };
    if secure {
        args.tls = true;
        args.username = Some(USERNAME.into());
        args.password = Some(PASSWORD.into());
    }
    let simulator = Simulator::start(args).await.unwrap();
    let secure = simulator.certificate_pem().map(|pem| {
        let certificate = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(certificate.path(), pem).unwrap();
        Secure { certificate }
    });
    (simulator, secure)
}

/// Runs one scenario and fails the test with pygnmi's output unless it passes.
async fn scenario(name: &str, secure: bool) {
    let python = venv_python();
    let (simulator, material) = simulator(secure).await;
    let port = simulator.device_addresses()[0].port();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pygnmi/interop.py");
    let mut command = tokio::process::Command::new(python);
    command
        .arg(&script)
        .arg(name)
        .arg("--port")
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(material) = &material {
        command
            .arg("--tls-cert")
            .arg(material.certificate.path())
            .arg("--username")
            .arg(USERNAME)
            .arg("--password")
            .arg(PASSWORD);
    }
    let output = tokio::time::timeout(SCENARIO_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("pygnmi scenario {name} did not finish in {SCENARIO_TIMEOUT:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(&format!("PASS {name}")),
        "pygnmi scenario {name} (secure: {secure}) failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    println!("{}", stdout.trim());
    simulator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygnmi_capabilities() {
    scenario("capabilities", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygnmi_get() {
    scenario("get", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygnmi_subscribe_once() {
    scenario("once", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygnmi_subscribe_poll_twice() {
    scenario("poll", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygnmi_subscribe_stream_sample() {
    scenario("stream", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygnmi_subscribe_on_change_sees_only_status_changes() {
    scenario("on_change", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygnmi_tls_credentials_capabilities() {
    scenario("capabilities", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygnmi_tls_credentials_get() {
    scenario("get", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygnmi_tls_credentials_subscribe_once() {
    scenario("once", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygnmi_tls_credentials_subscribe_poll_twice() {
    scenario("poll", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygnmi_tls_credentials_subscribe_stream_sample() {
    scenario("stream", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygnmi_tls_wrong_password_is_unauthenticated() {
    scenario("wrong_password", true).await;
}
