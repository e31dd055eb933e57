//! The loaders against real sources on loopback and in temporary directories: files that
//! change and break, an HTTP endpoint (auth, timeout, TLS), the Consul double, the Docker
//! double, and http actions. Conditions are awaited, never slept for.

use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use gnomon_config::actions::ActionsConfig;
use gnomon_config::loader::LoaderConfig;
use gnomon_config::reader::Section;
use gnomon_config::GlobalConfig;
use gnomon_docker_double::{Container, DockerDouble, Network};
use gnomon_loaders::{ActionRunner, Diff, Sink, SinkError, WatchOptions};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn loader_config(value: Value) -> LoaderConfig {
    let section = Section::from_value("loader", &value).unwrap();
    LoaderConfig::from_section(&section, &GlobalConfig::default()).unwrap()
}

struct ChannelSink(mpsc::Sender<Diff>);

#[async_trait::async_trait]
impl Sink for ChannelSink {
    async fn apply(&self, diff: Diff) -> Result<(), SinkError> {
        self.0.send(diff).await.map_err(|e| e.to_string().into())
    }
}

/// Starts the watcher of `config`; diffs arrive on the returned channel.
fn watch(
    config: &LoaderConfig,
    actions: Option<ActionRunner>,
) -> (mpsc::Receiver<Diff>, CancellationToken) {
    let (tx, rx) = mpsc::channel(16);
    let shutdown = CancellationToken::new();
    let loader = gnomon_loaders::build(config).unwrap();
    tokio::spawn(gnomon_loaders::run(
        loader,
        actions,
        Arc::new(ChannelSink(tx)),
        WatchOptions::from_config(config),
        shutdown.clone(),
    ));
    (rx, shutdown)
}

async fn next(rx: &mut mpsc::Receiver<Diff>) -> Diff {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no diff within 10 s")
        .expect("watcher ended")
}

fn names<V>(map: &std::collections::BTreeMap<String, V>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

/// Replaces `path` atomically (a reader never sees a half-written file).
fn write(path: &std::path::Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

#[tokio::test]
async fn file_changes_are_applied_and_a_broken_file_keeps_the_last_targets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("targets.yaml");
    write(
        &path,
        "10.0.0.1:\n  username: admin\nr2:\n  address: 10.0.0.2:6030\n",
    );
    let config = loader_config(json!({"type": "file", "path": path, "interval": "50ms"}));
    let (mut rx, shutdown) = watch(&config, None);

    let first = next(&mut rx).await;
    assert_eq!(
        names(&first.added),
        ["10.0.0.1:", "r2"].map(|n| n.trim_end_matches(':'))
    );
    assert_eq!(first.added["10.0.0.1"].address, "10.0.0.1:57400");
    assert_eq!(first.added["10.0.0.1"].username.as_deref(), Some("admin"));

    write(
        &path,
        "r2:\n  address: 10.0.0.2:6031\nr3:\n  address: 10.0.0.3\n",
    );
    let second = next(&mut rx).await;
    assert_eq!(second.removed, ["10.0.0.1"]);
    assert_eq!(names(&second.added), ["r3"]);
    assert_eq!(second.changed["r2"].address, "10.0.0.2:6031");

    // Broken: nothing is removed; the direct read says where the file is broken.
    write(&path, "r2:\n  address: [unclosed\n");
    let mut loader = gnomon_loaders::build(&config).unwrap();
    let error = loader.load().await.unwrap_err().to_string();
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("line"), "{error}");
    write(
        &path,
        "r2:\n  address: 10.0.0.2:6031\nr3:\n  address: 10.0.0.3\nr4:\n",
    );
    let third = next(&mut rx).await;
    assert_eq!(names(&third.added), ["r4"]);
    assert!(
        third.removed.is_empty() && third.changed.is_empty(),
        "{third:?}"
    );

    // An invalid target is an error naming it, not a smaller set.
    write(&path, "r2:\n  timeout: soon\n");
    let error = loader.load().await.unwrap_err().to_string();
    assert!(
        error.contains("r2.timeout: \"soon\" is not a duration"),
        "{error}"
    );
    // A missing file is an error, never an empty set.
    std::fs::remove_file(&path).unwrap();
    let error = loader.load().await.unwrap_err().to_string();
    assert!(error.starts_with("cannot read"), "{error}");
    shutdown.cancel();
}

#[tokio::test]
async fn json_file_over_http_is_read_with_a_timeout() {
    let router = axum::Router::new()
        .route(
            "/targets.json",
            get(|| async { r#"{"r1": {"insecure": true}}"# }),
        )
        .route(
            "/missing.json",
            get(|| async { (StatusCode::NOT_FOUND, "no") }),
        );
    let base = serve(router).await;
    let mut loader = gnomon_loaders::build(&loader_config(
        json!({"type": "file", "path": format!("{base}/targets.json")}),
    ))
    .unwrap();
    let targets = loader.load().await.unwrap();
    assert!(targets["r1"].insecure);
    let mut loader = gnomon_loaders::build(&loader_config(
        json!({"type": "file", "path": format!("{base}/missing.json")}),
    ))
    .unwrap();
    let error = loader.load().await.unwrap_err().to_string();
    assert!(error.contains("/missing.json: HTTP 404"), "{error}");
}

fn auth_router() -> axum::Router {
    axum::Router::new()
        .route(
            "/targets",
            get(|headers: HeaderMap| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                // "admin:pw" in base64.
                if auth == "Bearer tok-1" || auth == "Basic YWRtaW46cHc=" {
                    (
                        StatusCode::OK,
                        r#"{"r1": {"address": "10.0.0.1:6030"}, "r2": null}"#,
                    )
                } else {
                    (StatusCode::UNAUTHORIZED, "who are you")
                }
            }),
        )
        .route("/broken", get(|| async { "{\"r1\": {\n  \"address\": }" }))
        .route("/hang", get(std::future::pending::<&'static str>))
}

#[tokio::test]
async fn http_loader_sends_credentials_checks_status_and_times_out() {
    let base = serve(auth_router()).await;
    let load = |value: Value| async move {
        gnomon_loaders::build(&loader_config(value))
            .unwrap()
            .load()
            .await
    };
    let url = format!("{base}/targets");
    let bearer = load(json!({"type": "http", "url": url, "token": "tok-1"}))
        .await
        .unwrap();
    assert_eq!(names(&bearer), ["r1", "r2"]);
    assert_eq!(bearer["r1"].address, "10.0.0.1:6030");
    let basic = load(json!({"type": "http", "url": url, "username": "admin", "password": "pw"}))
        .await
        .unwrap();
    assert_eq!(names(&basic), ["r1", "r2"]);

    let error = load(json!({"type": "http", "url": url, "token": "wrong-tok"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("HTTP 401: who are you"), "{error}");
    assert!(!error.contains("wrong-tok"), "{error}");

    let error = load(json!({"type": "http", "url": format!("{base}/broken")}))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("line 2 column"), "{error}");

    let started = std::time::Instant::now();
    let error = load(json!({"type": "http", "url": format!("{base}/hang"), "timeout": "300ms"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("/hang: no answer within 300ms"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn http_loader_verifies_the_server_with_the_configured_ca() {
    gnomon_testkit::install_crypto_provider();
    let pki = gnomon_testkit::TestPki::new("loader-http").unwrap();
    let identity = pki.issue("127.0.0.1").unwrap();
    let mut options = gnomon_api_server::ApiServerOptions::at("127.0.0.1:0");
    options.tls = Some(gnomon_common::tls::ServerTlsOptions {
        cert_file: Some(identity.cert_file.clone()),
        key_file: Some(identity.key_file.clone()),
        ..Default::default()
    });
    let shutdown = CancellationToken::new();
    let server = gnomon_api_server::serve_api(&options, auth_router(), shutdown.clone())
        .await
        .unwrap();
    let url = format!("https://127.0.0.1:{}/targets", server.local_addr.port());
    let trusting = json!({"type": "http", "url": url, "token": "tok-1",
                          "tls": {"ca-file": pki.ca_file()}});
    let targets = gnomon_loaders::build(&loader_config(trusting))
        .unwrap()
        .load()
        .await
        .unwrap();
    assert_eq!(names(&targets), ["r1", "r2"]);
    let other = gnomon_testkit::TestPki::new("other").unwrap();
    let distrusting = json!({"type": "http", "url": url, "token": "tok-1",
                             "tls": {"ca-file": other.ca_file()}});
    let error = gnomon_loaders::build(&loader_config(distrusting))
        .unwrap()
        .load()
        .await
        .unwrap_err();
    assert!(
        matches!(error, gnomon_loaders::LoadError::Request { .. }),
        "{error}"
    );
    shutdown.cancel();
}

async fn consul_register(base: &str, body: Value) {
    let response = gnomon_testkit::http_client()
        .put(format!("{base}/v1/agent/service/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

#[tokio::test]
async fn consul_loader_follows_services_filtered_by_tag() {
    let consul = gnomon_consul_double::ConsulDouble::start().await.unwrap();
    let base = consul.url();
    consul_register(
        &base,
        json!({"ID": "r1", "Name": "gnmi", "Address": "10.0.0.1", "Port": 57400,
        "Tags": ["site=dub"], "Meta": {"host": "router1"}}),
    )
    .await;
    consul_register(
        &base,
        json!({"ID": "r2", "Name": "gnmi", "Address": "10.0.0.2", "Port": 57400,
        "Tags": ["site=ams"]}),
    )
    .await;
    consul_register(
        &base,
        json!({"ID": "x", "Name": "other", "Address": "10.0.0.9", "Port": 1}),
    )
    .await;
    let config = loader_config(json!({
        "type": "consul", "address": consul.address().to_string(),
        "services": [{"name": "gnmi", "tags": ["site=dub"],
                      "config": {"name": "{{ .Meta.host }}", "insecure": true,
                                 "event-tags": {"consul-id": "{{ .ID }}"}}}],
    }));
    // Consul's interval is its blocking wait (60 s): every change below must arrive through
    // the blocking query, not a poll.
    let (mut rx, shutdown) = watch(&config, None);
    let first = next(&mut rx).await;
    assert_eq!(names(&first.added), ["router1"]);
    let router1 = &first.added["router1"];
    assert_eq!(router1.address, "10.0.0.1:57400");
    assert!(router1.insecure);
    assert_eq!(router1.event_tags["consul-id"], "r1");

    consul_register(
        &base,
        json!({"ID": "r3", "Name": "gnmi", "Address": "10.0.0.3", "Port": 6030,
        "Tags": ["site=dub", "spine"]}),
    )
    .await;
    let added = next(&mut rx).await;
    // No `host` in its Meta: Go's template prints <no value>.
    assert_eq!(names(&added.added), ["<no value>"]);
    assert_eq!(added.added["<no value>"].address, "10.0.0.3:6030");

    let response = gnomon_testkit::http_client()
        .put(format!("{base}/v1/agent/service/deregister/r1"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let removed = next(&mut rx).await;
    assert_eq!(removed.removed, ["router1"]);
    shutdown.cancel();
}

#[tokio::test]
async fn consul_loader_reports_refusals() {
    let consul =
        gnomon_consul_double::ConsulDouble::start_with(gnomon_consul_double::DoubleConfig {
            acl_token: Some("acl-1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let config = |token: &str| {
        loader_config(json!({
            "type": "consul", "address": consul.url(), "token": token,
            "services": [{"name": "gnmi"}],
        }))
    };
    let error = gnomon_loaders::build(&config("nope"))
        .unwrap()
        .load()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("HTTP 403: Permission denied"), "{error}");
    assert!(!error.contains("nope"), "{error}");
    let targets = gnomon_loaders::build(&config("acl-1"))
        .unwrap()
        .load()
        .await
        .unwrap();
    assert!(targets.is_empty());
}

#[tokio::test]
async fn docker_loader_selects_by_label_and_network_and_drops_stopped_containers() {
    let dir = tempfile::tempdir().unwrap();
    let docker = DockerDouble::start(dir.path()).await.unwrap();
    docker.add_network(Network::bridge("clab-mgmt").label("containerlab", ""));
    docker.add_network(Network::bridge("other"));
    docker.add_container(
        Container::running("srl1", "other", "10.9.0.2")
            .on_network("clab-mgmt", "172.20.0.2")
            .label("clab-node-kind", "srl"),
    );
    docker.add_container(
        Container::running("srl2", "clab-mgmt", "172.20.0.3")
            .label("clab-node-kind", "srl")
            .label("gnmi-port", "6030"),
    );
    docker.add_container(
        Container::running("ceos1", "clab-mgmt", "172.20.0.4").label("clab-node-kind", "ceos"),
    );
    let config = loader_config(json!({
        "type": "docker", "address": docker.address(),
        "filters": [
            {"containers": [{"label": "clab-node-kind=srl"}], "network": {"label": "containerlab"},
             "port": "label=gnmi-port", "config": {"username": "admin", "skip-verify": true}},
        ],
    }));
    let mut loader = gnomon_loaders::build(&config).unwrap();
    let targets = loader.load().await.unwrap();
    assert_eq!(names(&targets), ["srl1", "srl2"]);
    // srl1 is reached on the selected network, not on "other"; it has no port label, so the
    // global port applies.
    assert_eq!(targets["srl1"].address, "172.20.0.2:57400");
    assert_eq!(targets["srl2"].address, "172.20.0.3:6030");
    assert_eq!(targets["srl2"].username.as_deref(), Some("admin"));
    assert!(targets["srl2"].skip_verify);

    docker.set_state("srl1", "exited");
    let targets = loader.load().await.unwrap();
    assert_eq!(names(&targets), ["srl2"]);

    // The double is Docker: an unknown filter is refused, and the loader says so.
    let bad = loader_config(json!({"type": "docker", "address": docker.address(),
        "filters": [{"containers": [{"volume": "x"}]}]}));
    let error = gnomon_loaders::build(&bad)
        .unwrap()
        .load()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("HTTP 400") && error.contains("invalid filter 'volume'"),
        "{error}"
    );
    drop(docker);
    let error = loader.load().await.unwrap_err().to_string();
    assert!(error.contains("/networks"), "{error}");
}

#[tokio::test]
async fn actions_run_with_the_rendered_body_and_a_failing_on_add_holds_the_target_back() {
    let calls: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let seen = calls.clone();
    let router = axum::Router::new()
        .route(
            "/hook/{kind}/{name}",
            post(
                move |axum::extract::Path((kind, name)): axum::extract::Path<(String, String)>,
                      body: String| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push((format!("{kind}/{name}"), body));
                        if name == "bad" {
                            StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            StatusCode::OK
                        }
                    }
                },
            ),
        )
        .route("/unused", put(|| async { "" }));
    let base = serve(router).await;
    let actions_value = json!({
        "added": {"type": "http", "method": "post", "url": format!("{base}/hook/add/{{{{ .Input }}}}"),
                  "body": "{\"target\": \"{{ .Input }}\", \"site\": \"{{ .Vars.site }}\", \"address\": \"{{ index .Targets .Input \"address\" }}\"}"},
        "deleted": {"type": "http", "method": "POST", "url": format!("{base}/hook/del/{{{{ .Input }}}}")},
    });
    let section = Section::from_value("actions", &actions_value).unwrap();
    let actions = ActionsConfig::from_section(&section).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("targets.yaml");
    write(
        &path,
        "r1:\n  address: 10.0.0.1\nbad:\n  address: 10.0.0.9\n",
    );
    let config = loader_config(json!({"type": "file", "path": path, "interval": "50ms",
        "on-add": ["added"], "on-delete": ["deleted"], "vars": {"site": "dub"}}));
    let resolved = config.resolve_actions(&actions).unwrap();
    let runner = ActionRunner::new(&resolved, &config).unwrap();
    let (mut rx, shutdown) = watch(&config, Some(runner));

    let first = next(&mut rx).await;
    assert_eq!(
        names(&first.added),
        ["r1"],
        "the target whose on-add failed is held back"
    );
    {
        let calls = calls.lock().unwrap();
        let r1 = calls
            .iter()
            .find(|(p, _)| p == "add/r1")
            .expect("on-add for r1");
        assert_eq!(
            r1.1,
            r#"{"target": "r1", "site": "dub", "address": "10.0.0.1:57400"}"#
        );
    }
    write(&path, "bad:\n  address: 10.0.0.9\n");
    let second = next(&mut rx).await;
    assert_eq!(second.removed, ["r1"]);
    let calls = calls.lock().unwrap();
    let deleted = calls
        .iter()
        .find(|(p, _)| p == "del/r1")
        .expect("on-delete for r1");
    // The default body is the whole context as JSON.
    let body: Value = serde_json::from_str(&deleted.1).unwrap();
    assert_eq!(body["Input"], "r1");
    assert_eq!(body["Vars"]["site"], "dub");
    assert!(
        calls.iter().filter(|(p, _)| p == "add/bad").count() >= 2,
        "retried at each read"
    );
    drop(calls);
    shutdown.cancel();
}

#[tokio::test]
async fn an_action_error_names_the_action_url_and_status() {
    let router = axum::Router::new().route(
        "/x",
        post(|| async { (StatusCode::BAD_GATEWAY, "upstream down") }),
    );
    let base = serve(router).await;
    let value = json!({"a1": {"type": "http", "method": "POST", "url": format!("{base}/x"), "timeout": "2s"}});
    let section = Section::from_value("actions", &value).unwrap();
    let actions = ActionsConfig::from_section(&section).unwrap();
    let gnomon_config::actions::ActionKind::Http(http) = &actions.actions["a1"].kind else {
        panic!("not http")
    };
    let action = gnomon_loaders::HttpAction::new("a1", http).unwrap();
    let error = action
        .run(&json!({"Input": "r1"}))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!("action \"a1\": POST {base}/x: HTTP 502: upstream down")
    );
}
