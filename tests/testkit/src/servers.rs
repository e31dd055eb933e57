//! Real third-party servers for tests: nats-server, etcd and Prometheus, each on
//! random loopback ports with its own temporary directory; optionally with TLS (certificates
//! from a throwaway [`TestPki`]) and authentication.

use crate::process::{free_port, wait_for_tcp, ChildProcess};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A throwaway certificate authority whose certificates and keys are PEM files in a
/// temporary directory (removed on drop).
pub struct TestPki {
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_file: PathBuf,
    dir: TempDir,
}

/// A certificate and its private key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestPki {
    /// Creates a CA named `name` and writes its certificate to `<name>-ca.pem`.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let ca_file = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, ca.pem())?;
        Ok(Self { ca, ca_file, dir })
    }

    /// The CA certificate (what clients and servers trust).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Issues a certificate for `127.0.0.1` and `localhost` with common name `name`, usable
    /// by servers and clients, written to `<name>.pem` / `<name>-key.pem`.
    pub fn issue(&self, name: &str) -> anyhow::Result<CertFiles> {
        let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        let files = CertFiles {
            cert_file: self.dir.path().join(format!("{name}.pem")),
            key_file: self.dir.path().join(format!("{name}-key.pem")),
        };
        std::fs::write(&files.cert_file, cert.pem())?;
        std::fs::write(&files.key_file, key.serialize_pem())?;
        Ok(files)
    }
}

/// Server-side TLS for a test server.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The server's certificate and key.
    pub identity: CertFiles,
    /// The CA that signed it (and that client certificates must chain to).
    pub ca_file: PathBuf,
    /// Require clients to present a certificate signed by `ca_file`.
    pub verify_clients: bool,
}

impl ServerTls {
    /// A server certificate issued by `pki`, without client verification.
    pub fn issued_by(pki: &TestPki, name: &str) -> anyhow::Result<Self> {
        Ok(Self {
            identity: pki.issue(name)?,
            ca_file: pki.ca_file().to_path_buf(),
            verify_clients: false,
        })
    }

    /// The same, requiring client certificates.
    pub fn verifying_clients(mut self) -> Self {
        self.verify_clients = true;
        self
    }
}

/// How a nats-server is set up beyond its defaults.
#[derive(Clone, Debug, Default)]
pub struct NatsServerOptions {
    pub tls: Option<ServerTls>,
    /// Only this user / password may connect.
    pub user: Option<(String, String)>,
    /// Only this token may connect.
    pub token: Option<String>,
    /// Operator-mode configuration text (`operator`, `resolver`, ...), added verbatim.
    pub extra_config: Option<String>,
    /// Enables JetStream with its store in the server's temporary directory (kept across
    /// [`NatsServer::restart`], so file-backed streams survive it).
    pub jetstream: bool,
}

/// A quoted string for nats-server's configuration format.
fn nats_quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

fn nats_quoted_path(path: &Path) -> String {
    nats_quoted(&path.display().to_string())
}

impl NatsServerOptions {
    fn config_text(&self, port: u16, dir: &Path) -> String {
        let mut text = format!("listen: \"127.0.0.1:{port}\"\nserver_name: gnomon-test\n");
        if self.jetstream {
            text.push_str(&format!(
                "jetstream {{\n  store_dir: {}\n}}\n",
                nats_quoted_path(&dir.join("jetstream"))
            ));
        }
        if let Some(tls) = &self.tls {
            text.push_str(&format!(
                "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: {}\n  timeout: 2\n}}\n",
                nats_quoted_path(&tls.identity.cert_file),
                nats_quoted_path(&tls.identity.key_file),
                nats_quoted_path(&tls.ca_file),
                tls.verify_clients
            ));
        }
        if let Some((user, password)) = &self.user {
            text.push_str(&format!(
                "authorization {{\n  user: {}\n  password: {}\n}}\n",
                nats_quoted(user),
                nats_quoted(password)
            ));
        }
        if let Some(token) = &self.token {
            text.push_str(&format!(
                "authorization {{\n  token: {}\n}}\n",
                nats_quoted(token)
            ));
        }
        if let Some(extra) = &self.extra_config {
            text.push_str(extra);
            text.push('\n');
        }
        text
    }
}

/// A nats-server on 127.0.0.1 with a random client port.
pub struct NatsServer {
    process: ChildProcess,
    port: u16,
    dir: TempDir,
    config: Option<PathBuf>,
}

impl NatsServer {
    /// Starts nats-server and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let process = Self::spawn(port, &dir, None)?;
        Ok(Self {
            process,
            port,
            dir,
            config: None,
        })
    }

    /// Starts nats-server with JetStream (store in its temporary directory).
    pub fn start_jetstream() -> anyhow::Result<Self> {
        Self::start_with(NatsServerOptions {
            jetstream: true,
            ..Default::default()
        })
    }

    /// Starts nats-server with TLS and / or authentication, from a configuration file in
    /// its temporary directory.
    pub fn start_with(options: NatsServerOptions) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let config = dir.path().join("nats-server.conf");
        std::fs::write(&config, options.config_text(port, dir.path()))?;
        let process = Self::spawn(port, &dir, Some(&config))?;
        Ok(Self {
            process,
            port,
            dir,
            config: Some(config),
        })
    }

    fn spawn(port: u16, dir: &TempDir, config: Option<&Path>) -> anyhow::Result<ChildProcess> {
        let mut cmd = Command::new("nats-server");
        match config {
            Some(config) => {
                cmd.arg("-c").arg(config);
            }
            None => {
                cmd.args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-n",
                    "gnomon-test",
                ]);
            }
        }
        let process = ChildProcess::spawn("nats-server", cmd, dir.path())?;
        wait_for_tcp(&format!("127.0.0.1:{port}"), Duration::from_secs(10))?;
        Ok(process)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>` (gnmic's `address` form).
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL).
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port (and configuration).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.kill();
        self.process = Self::spawn(self.port, &self.dir, self.config.as_deref())?;
        Ok(())
    }

    /// The server's log so far (stderr), for diagnosing failed tests.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// NATS decentralized authentication (operator mode) without the `nsc` tool: an operator,
/// one account preloaded into a memory resolver, and users whose `.creds` files (user JWT
/// signed by the account, plus the user's nkey seed) clients present.
pub struct NatsOperator {
    operator_jwt: String,
    account: nkeys::KeyPair,
    account_jwt: String,
}

/// Encodes and signs a NATS JWT (`ed25519-nkey`) with `claims` issued by `issuer`.
fn nats_jwt(
    issuer: &nkeys::KeyPair,
    subject: &str,
    name: &str,
    nats: serde_json::Value,
) -> anyhow::Result<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let issued_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let claims = serde_json::json!({
        "jti": format!("{}{issued_at}", &subject[..16]),
        "iat": issued_at,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?)
    );
    let signature = issuer
        .sign(signed.as_bytes())
        .map_err(|e| anyhow::anyhow!("signing a NATS JWT: {e}"))?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

impl NatsOperator {
    /// A new operator with one unrestricted account.
    pub fn new() -> anyhow::Result<Self> {
        let operator = nkeys::KeyPair::new_operator();
        let account = nkeys::KeyPair::new_account();
        let operator_jwt = nats_jwt(
            &operator,
            &operator.public_key(),
            "gnomon-test-operator",
            serde_json::json!({"type": "operator", "version": 2}),
        )?;
        let unlimited = serde_json::json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1
        });
        let account_jwt = nats_jwt(
            &operator,
            &account.public_key(),
            "gnomon-test-account",
            serde_json::json!({"limits": unlimited, "type": "account", "version": 2}),
        )?;
        Ok(Self {
            operator_jwt,
            account,
            account_jwt,
        })
    }

    /// Server configuration for [`NatsServerOptions::extra_config`].
    pub fn server_config(&self) -> String {
        format!(
            "operator: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {}\n}}\n",
            nats_quoted(&self.operator_jwt),
            self.account.public_key(),
            nats_quoted(&self.account_jwt)
        )
    }

    /// Writes the `.creds` file of a new user `name` of the account to `path`.
    pub fn user_credentials(&self, name: &str, path: &Path) -> anyhow::Result<()> {
        let user = nkeys::KeyPair::new_user();
        let jwt = nats_jwt(
            &self.account,
            &user.public_key(),
            name,
            serde_json::json!({
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                "type": "user", "version": 2
            }),
        )?;
        let seed = user.seed().map_err(|e| anyhow::anyhow!("user seed: {e}"))?;
        let text = format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        );
        std::fs::write(path, text)?;
        Ok(())
    }
}

/// How an etcd is set up beyond its defaults.
#[derive(Clone, Debug, Default)]
pub struct EtcdServerOptions {
    /// Serve clients over TLS (`https://`); with `verify_clients`, `--client-cert-auth`.
    pub tls: Option<ServerTls>,
    /// `--auth-token-ttl`: lifetime of the simple auth tokens (etcd's default is 300 s).
    pub auth_token_ttl: Option<Duration>,
}

/// A single-member etcd on 127.0.0.1 with random client and peer ports.
pub struct EtcdServer {
    process: ChildProcess,
    client_port: u16,
    peer_port: u16,
    dir: TempDir,
    options: EtcdServerOptions,
}

impl EtcdServer {
    /// Starts etcd and waits until its client port answers.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(EtcdServerOptions::default())
    }

    /// Starts etcd with TLS and / or a short auth-token TTL and waits until its client
    /// port answers. Authentication is switched on afterwards with [`EtcdServer::enable_auth`].
    pub fn start_with(options: EtcdServerOptions) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        // A port found free can be taken before etcd binds it; etcd then exits, and a fresh
        // pair of ports is tried.
        let mut attempt = 1;
        loop {
            let client_port = free_port();
            let peer_port = free_port();
            match Self::spawn(client_port, peer_port, &dir, &options)? {
                EtcdStart::Ready(process) => {
                    return Ok(Self {
                        process,
                        client_port,
                        peer_port,
                        dir,
                        options,
                    })
                }
                EtcdStart::Exited(log) if attempt < 3 => {
                    eprintln!(
                        "etcd exited at start (attempt {attempt}), trying other ports:\n{log}"
                    );
                    let _ = std::fs::remove_dir_all(dir.path().join("data"));
                    attempt += 1;
                }
                EtcdStart::Exited(log) => {
                    anyhow::bail!("etcd exited before serving clients:\n{log}")
                }
            }
        }
    }

    fn spawn(
        client_port: u16,
        peer_port: u16,
        dir: &TempDir,
        options: &EtcdServerOptions,
    ) -> anyhow::Result<EtcdStart> {
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let client = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = Command::new("etcd");
        cmd.arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("default={peer}")])
            .args(["--listen-metrics-urls", ""]);
        if let Some(tls) = &options.tls {
            cmd.arg("--cert-file")
                .arg(&tls.identity.cert_file)
                .arg("--key-file")
                .arg(&tls.identity.key_file);
            // etcd demands client certificates whenever a trusted CA is given.
            if tls.verify_clients {
                cmd.arg("--trusted-ca-file")
                    .arg(&tls.ca_file)
                    .arg("--client-cert-auth");
            }
        }
        if let Some(ttl) = options.auth_token_ttl {
            cmd.arg(format!("--auth-token-ttl={}", ttl.as_secs().max(1)));
        }
        let mut process = ChildProcess::spawn("etcd", cmd, dir.path())?;
        // etcd binds its client port well before it serves: wait for the line it logs once
        // it does, so a test's first request meets a server, not a listener that may still die.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = process.log();
            if log.contains("ready to serve client requests") {
                return Ok(EtcdStart::Ready(process));
            }
            if !process.is_running() {
                return Ok(EtcdStart::Exited(log_tail(&log, 20)));
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "etcd not ready to serve on port {client_port} after 20 s:\n{}",
                    log_tail(&log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `http://127.0.0.1:<client port>` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// `127.0.0.1:<client port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// An administrative client (no credentials, so only usable before
    /// [`EtcdServer::enable_auth`]): trusts the server's CA and, when client certificates are
    /// required, presents the server's own certificate (it is issued for client use too).
    /// Every call is bounded by a 10 s timeout.
    async fn admin_client(&self) -> anyhow::Result<gnomon_etcd::Client> {
        let mut options = gnomon_etcd::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10));
        if let Some(tls) = &self.options.tls {
            let mut tls_options =
                gnomon_etcd::TlsOptions::new().with_ca_pem(std::fs::read(&tls.ca_file)?);
            if tls.verify_clients {
                tls_options = tls_options.with_identity_pem(
                    std::fs::read(&tls.identity.cert_file)?,
                    std::fs::read(&tls.identity.key_file)?,
                );
            }
            options = options.with_tls(tls_options);
        }
        Ok(gnomon_etcd::Client::connect([self.endpoint()], options).await?)
    }

    /// Creates user `root` (role `root`) with `root_password` and switches authentication
    /// on: from then on every client must log in.
    pub async fn enable_auth(&self, root_password: &str) -> anyhow::Result<()> {
        let client = self.admin_client().await?;
        client.user_add("root", root_password).await?;
        client.user_grant_role("root", "root").await?;
        client.auth_enable().await?;
        Ok(())
    }

    /// The etcd process, e.g. to pause it with a signal.
    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }

    /// Adds user `name` whose role (also `name`) may read and write only the keys under
    /// `prefixes` (none: a user without any rights). Call it before
    /// [`EtcdServer::enable_auth`].
    pub async fn add_user(
        &self,
        name: &str,
        password: &str,
        prefixes: &[&str],
    ) -> anyhow::Result<()> {
        let client = self.admin_client().await?;
        client.role_add(name).await?;
        for prefix in prefixes {
            let permission = gnomon_etcd::Permission::read_write(*prefix).with_prefix();
            client.role_grant_permission(name, permission).await?;
        }
        client.user_add(name, password).await?;
        client.user_grant_role(name, name).await?;
        Ok(())
    }

    /// Kills etcd (SIGKILL); its data directory is kept for [`EtcdServer::restart`].
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Starts etcd again on the same ports, options and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.kill();
        self.process =
            match Self::spawn(self.client_port, self.peer_port, &self.dir, &self.options)? {
                EtcdStart::Ready(process) => process,
                EtcdStart::Exited(log) => anyhow::bail!("etcd exited at restart:\n{log}"),
            };
        Ok(())
    }

    /// The server's log so far, for diagnosing failed tests.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// A Prometheus server on 127.0.0.1 with the given configuration file text.
pub struct PrometheusServer {
    process: ChildProcess,
    port: u16,
    _dir: TempDir,
}

impl PrometheusServer {
    /// Writes `config_yaml` and starts Prometheus with it.
    pub fn start(config_yaml: &str) -> anyhow::Result<Self> {
        Self::start_with(config_yaml, &[], None)
    }

    /// A Prometheus that accepts remote writes at `<url>/api/v1/write`
    /// (`--web.enable-remote-write-receiver`), on `port` when given (to restart one on the
    /// same address), else on a free one.
    pub fn start_remote_write_receiver(port: Option<u16>) -> anyhow::Result<Self> {
        Self::start_with(
            "global: {}\n",
            &["--web.enable-remote-write-receiver"],
            port,
        )
    }

    /// [`Self::start`] with extra command-line flags, on `port` or a free one.
    pub fn start_with(
        config_yaml: &str,
        extra_args: &[&str],
        port: Option<u16>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = port.unwrap_or_else(free_port);
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config_yaml)?;
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .args(extra_args);
        let mut process = ChildProcess::spawn("prometheus", cmd, dir.path())?;
        wait_for_tcp(&format!("127.0.0.1:{port}"), Duration::from_secs(20))?;
        // The port answering is not enough: another process may have taken it first.
        anyhow::ensure!(
            process.is_running(),
            "prometheus exited at start:\n{}",
            process.log()
        );
        Ok(Self {
            process,
            port,
            _dir: dir,
        })
    }

    /// Prometheus' log so far, for diagnosing failed tests.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `data.result` of an instant PromQL query (`None` while Prometheus does not answer
    /// or answers something else).
    pub async fn query(
        &self,
        http: &reqwest::Client,
        promql: &str,
    ) -> Option<Vec<serde_json::Value>> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/query", self.url())).ok()?;
        url.query_pairs_mut().append_pair("query", promql);
        let body: serde_json::Value = http.get(url).send().await.ok()?.json().await.ok()?;
        body["data"]["result"].as_array().cloned()
    }
}

/// How an etcd start ended.
enum EtcdStart {
    Ready(ChildProcess),
    /// It exited before serving (the end of its log).
    Exited(String),
}

/// The last `lines` lines of `log`.
fn log_tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
