use super::*;
use std::time::Duration;

const GNMIC_YAML: &str = r#"
username: admin
password: hunter2pw
insecure: true
encoding: json_ietf
timeout: 5s
targets:
  10.0.0.1:
  router2:
    address: 10.0.0.2:6030
    username: other
    skip-verify: true
    insecure: false
    subscriptions: [port-stats]
    event-tags:
      site: dub
    retry-timer: 2s
subscriptions:
  port-stats:
    paths:
      - /interfaces/interface/state/counters
    stream-mode: sample
    sample-interval: 10s
  system:
    paths: ["/system/state"]
    mode: once
    outputs: [nats1]
outputs:
  nats1:
    type: nats
    address: 127.0.0.1:4222
    subject-prefix: telemetry
    format: proto
    num-workers: 2
  stdout:
    type: file
    file-type: stdout
api: 127.0.0.1:7890
"#;

fn load(text: &str) -> Result<GnomonConfig, ConfigError> {
    load_config_with_env(text, ConfigFormat::Yaml, &[])
}

#[test]
fn gnmic_yaml_resolves_targets_with_globals() {
    let config = load(GNMIC_YAML).unwrap();
    let first = &config.targets["10.0.0.1"];
    assert_eq!(first.address, "10.0.0.1:57400");
    assert_eq!(first.username.as_deref(), Some("admin"));
    assert_eq!(
        first.password.as_ref().map(Secret::expose),
        Some("hunter2pw")
    );
    assert!(first.insecure);
    assert_eq!(first.encoding, Encoding::JsonIetf);
    assert_eq!(first.timeout, Duration::from_secs(5));
    assert_eq!(first.retry_timer, DEFAULT_RETRY_TIMER);
    assert_eq!(first.buffer_size, 100);
    let second = &config.targets["router2"];
    assert_eq!(second.address, "10.0.0.2:6030");
    assert_eq!(second.username.as_deref(), Some("other"));
    assert!(!second.insecure && second.skip_verify);
    assert_eq!(
        second.event_tags.get("site").map(String::as_str),
        Some("dub")
    );
    assert_eq!(second.retry_timer, Duration::from_secs(2));
    assert_eq!(config.subscriptions_for(second).len(), 1);
    assert_eq!(config.subscriptions_for(first).len(), 2);
    let port_stats = &config.subscriptions["port-stats"];
    assert_eq!(port_stats.effective_stream_mode(), StreamMode::Sample);
    assert_eq!(port_stats.sample_interval, Some(Duration::from_secs(10)));
    assert_eq!(config.subscriptions["system"].mode, SubscriptionMode::Once);
    match &config.outputs["nats1"] {
        OutputConfig::Nats(nats) => {
            assert_eq!(nats.format, NatsFormat::Proto);
            assert_eq!(nats.subject_prefix.as_deref(), Some("telemetry"));
            assert_eq!(nats.num_workers, 2);
            assert_eq!(nats.write_timeout, Duration::from_secs(5));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        matches!(&config.outputs["stdout"], OutputConfig::File(f) if f.destination == FileDestination::Stdout)
    );
    assert_eq!(
        config.api.as_ref().map(|a| a.address.as_str()),
        Some("127.0.0.1:7890")
    );
}

#[test]
fn json_and_toml_give_the_same_model() {
    let json = r#"{"targets": {"r1": {"address": "10.0.0.1"}},
        "subscriptions": {"s": {"paths": ["/a"], "sample-interval": 1000000000}}}"#;
    let toml = "[targets.r1]\naddress = \"10.0.0.1\"\n[subscriptions.s]\npaths = [\"/a\"]\nsample-interval = \"1s\"\n";
    let a = load_config_with_env(json, ConfigFormat::Json, &[]).unwrap();
    let b = load_config_with_env(toml, ConfigFormat::Toml, &[]).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        a.subscriptions["s"].sample_interval,
        Some(Duration::from_secs(1))
    );
}

#[test]
fn secrets_are_redacted_in_debug_and_json() {
    let config = load(GNMIC_YAML).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2pw"), "{debug}");
    let json = serde_json::to_string(&config).unwrap();
    assert!(!json.contains("hunter2pw"), "{json}");
    assert!(json.contains("\"password\":\"****\""));
    // durations are integer nanoseconds in JSON, as gnmic's API renders them
    let target = serde_json::to_value(&config.targets["router2"]).unwrap();
    assert_eq!(target["retry-timer"], 2_000_000_000u64);
}

#[test]
fn wire_json_carries_secrets_and_parses_back_to_the_same_target() {
    let config = load(GNMIC_YAML).unwrap();
    let target = &config.targets["router2"];
    let wire = target.to_wire_json();
    assert_eq!(wire["password"], "hunter2pw");
    let parsed = config.target_from_json(&wire).unwrap();
    assert_eq!(&parsed, target);
}

#[test]
fn env_overrides_apply() {
    let env: Vec<(String, String)> = [
        ("GNMIC_API", ":7999"),
        ("GNMIC_OUTPUTS_NATS1_SUBJECT_PREFIX", "tele2"),
        ("GNOMON_USERNAME", "envuser"),
        ("GNMIC_SUBSCRIPTIONS_PORT_STATS_SAMPLE_INTERVAL", "2s"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = load_config_with_env(GNMIC_YAML, ConfigFormat::Yaml, &env).unwrap();
    assert_eq!(config.api.unwrap().address, ":7999");
    assert_eq!(
        config.targets["10.0.0.1"].username.as_deref(),
        Some("envuser")
    );
    assert_eq!(
        config.subscriptions["port-stats"].sample_interval,
        Some(Duration::from_secs(2))
    );
    match &config.outputs["nats1"] {
        OutputConfig::Nats(nats) => assert_eq!(nats.subject_prefix.as_deref(), Some("tele2")),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn outputs_expand_env_vars() {
    std::env::set_var("GNOMON_CONFIG_TEST_NATS_ADDR", "10.9.9.9:4222");
    let config =
        load("outputs:\n  n:\n    type: nats\n    address: ${GNOMON_CONFIG_TEST_NATS_ADDR}\n")
            .unwrap();
    match &config.outputs["n"] {
        OutputConfig::Nats(nats) => assert_eq!(nats.address, "10.9.9.9:4222"),
        other => panic!("unexpected {other:?}"),
    }
}

fn error_of(text: &str) -> String {
    load(text).unwrap_err().to_string()
}

#[test]
fn unknown_output_type_names_the_key() {
    let err = error_of("outputs:\n  out1:\n    type: kafka\n");
    assert_eq!(err, "outputs.out1.type: \"kafka\" is not a supported output type (expected nats, file, prometheus or prometheus_write)");
}

#[test]
fn malformed_duration_names_the_key() {
    let err =
        error_of("subscriptions:\n  port-stats:\n    paths: [/a]\n    sample-interval: 10x\n");
    assert!(
        err.starts_with("subscriptions.port-stats.sample-interval: \"10x\" is not a duration (expected e.g. \"10s\""),
        "{err}"
    );
}

#[test]
fn missing_address_names_the_key() {
    let err = error_of("targets:\n  r1:\n    address: \"\"\n");
    assert_eq!(
        err,
        "targets.r1.address: \"\" is empty (expected host:port)"
    );
    let config = load("").unwrap();
    let err = config
        .target_from_json(&serde_json::json!({"username": "x"}))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "address: missing (expected host:port)");
}

#[test]
fn broken_yaml_is_one_parse_error() {
    let err = error_of("targets:\n  r1: [\n    address: x\n");
    assert!(err.starts_with("cannot parse configuration:"), "{err}");
    assert!(!err.contains('\n'));
}

#[test]
fn unknown_subscription_name_is_an_error() {
    let err = error_of(
        "targets:\n  r1:\n    subscriptions: [nope]\nsubscriptions:\n  s1:\n    paths: [/a]\n",
    );
    assert_eq!(
        err,
        "targets.r1.subscriptions: \"nope\" is not a defined subscription (defined: s1)"
    );
}

#[test]
fn bad_values_name_key_value_and_expectation() {
    let err = error_of("subscriptions:\n  s:\n    paths: [/a]\n    mode: streaming\n");
    assert_eq!(err, "subscriptions.s.mode: \"streaming\" is not a subscription mode (expected stream, once or poll)");
    let err = error_of("insecure: sometimes\n");
    assert_eq!(
        err,
        "insecure: \"sometimes\" is not a boolean (expected true or false)"
    );
    let err = error_of("port: 99999\n");
    assert!(err.starts_with("port: 99999"), "{err}");
}

#[test]
fn posted_target_accepts_ns_integers() {
    let config = load(GNMIC_YAML).unwrap();
    let body = serde_json::json!({
        "name": "r9", "address": "10.0.0.9", "timeout": 3_000_000_000u64, "retry-timer": "1s",
        "subscriptions": ["system"], "password": "pw"
    });
    let target = config.target_from_json(&body).unwrap();
    assert_eq!(target.address, "10.0.0.9:57400");
    assert_eq!(target.timeout, Duration::from_secs(3));
    assert_eq!(target.retry_timer, Duration::from_secs(1));
    assert_eq!(target.username.as_deref(), Some("admin"));
    let err = config
        .target_from_json(&serde_json::json!({"name": "x", "timeout": "soon"}))
        .unwrap_err();
    assert_eq!(err.key(), Some("timeout"));
}

#[test]
fn clustering_defaults_and_short_timers() {
    let config = load(
        "instance-name: top\nclustering:\n  targets-watch-timer: 5s\n  locker:\n    type: consul\n    address: 127.0.0.1:8500\n",
    )
    .unwrap();
    let clustering = config.clustering.unwrap();
    assert_eq!(clustering.cluster_name, "default-cluster");
    assert_eq!(clustering.instance_name, "top");
    // gnomon allows timers below gnmic's floors (20 s here).
    assert_eq!(clustering.targets_watch_timer, Duration::from_secs(5));
    assert_eq!(clustering.leader_wait_timer, Duration::from_secs(5));
    assert_eq!(clustering.rebalance_threshold, 2);
    assert_eq!(clustering.output_failure_timeout, Duration::from_secs(10));
    assert_eq!(clustering.locker.kind, locker::LockerType::Consul);
    let err = error_of("clustering:\n  cluster-name: c\n");
    assert!(err.starts_with("clustering.locker: missing"), "{err}");
}

#[test]
fn output_failure_timeout_is_read_and_zero_turns_it_off() {
    let with = |value: &str| {
        load(&format!(
            "clustering:\n  output-failure-timeout: {value}\n  locker:\n    type: etcd\n    address: 127.0.0.1:2379\n"
        ))
        .map(|c| c.clustering.unwrap().output_failure_timeout)
    };
    assert_eq!(with("2s").unwrap(), Duration::from_secs(2));
    assert_eq!(with("0").unwrap(), Duration::ZERO);
    let err = error_of(
        "clustering:\n  output-failure-timeout: soon\n  locker:\n    type: etcd\n    address: 127.0.0.1:2379\n",
    );
    assert!(err.contains("clustering.output-failure-timeout"), "{err}");
}

#[test]
fn clustering_locker_secrets_never_displayed() {
    let config = load(
        "clustering:\n  locker:\n    type: etcd\n    address: 127.0.0.1:2379\n    username: root\n    password: hunter2\n    token: tok-secret\n",
    )
    .unwrap();
    let clustering = config.clustering.clone().unwrap();
    let shown = format!(
        "{clustering:?} {} {config:?}",
        serde_json::to_string(&clustering).unwrap()
    );
    assert!(
        !shown.contains("hunter2") && !shown.contains("tok-secret"),
        "{shown}"
    );
    assert!(shown.contains("root"), "{shown}");
    // The backend still gets the real values.
    assert_eq!(
        clustering.locker.password.as_ref().map(|p| p.expose()),
        Some("hunter2")
    );
}

#[test]
fn api_server_block_defaults() {
    let config = load("api-server:\n  enable-metrics: true\n").unwrap();
    let api = config.api.unwrap();
    assert_eq!(api.address, ":7890");
    assert_eq!(api.bind_address(), "0.0.0.0:7890");
    assert!(api.enable_metrics);
    assert_eq!(api.timeout, Duration::from_secs(10));
}

#[test]
fn malformed_paths_name_the_key() {
    let err = error_of("subscriptions:\n  s:\n    paths: [\"/a[name=x\"]\n");
    assert!(
        err.starts_with("subscriptions.s.paths[0]: \"/a[name=x\" is not a gNMI path"),
        "{err}"
    );
}

#[test]
fn load_config_reads_files_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("gnmic.json");
    std::fs::write(&json, r#"{"targets": {"r1": {"address": "10.0.0.1"}}}"#).unwrap();
    let config = load_config(Some(&json)).unwrap();
    assert_eq!(config.targets["r1"].address, "10.0.0.1:57400");
    let missing = dir.path().join("absent.yaml");
    let err = load_config(Some(&missing)).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("cannot read config file {}", missing.display())),
        "{err}"
    );
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "targets: [\n").unwrap();
    let err = load_config(Some(&broken)).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("cannot parse {}", broken.display())),
        "{err}"
    );
}

#[test]
fn locker_is_validated_at_load() {
    let err = error_of("clustering:\n  locker:\n    type: zookeeper\n");
    assert!(err.starts_with("clustering.locker"), "{err}");
}

// ---- issue 12.3: every key read is applied or warned about by name ----

fn warnings_of(text: &str) -> Vec<String> {
    load(text)
        .unwrap_or_else(|e| panic!("{e}"))
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn assert_warns(text: &str, key: &str, words: &str) {
    let warnings = warnings_of(text);
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with(&format!("{key}: ")) && w.contains(words)),
        "no warning for {key} containing {words:?}: {warnings:#?}"
    );
}

#[test]
fn unapplied_gnmic_keys_are_warned_about_by_name() {
    let target = |body: &str| format!("targets:\n  r1:\n    address: 10.0.0.1\n{body}");
    for (text, key, words) in [
        (
            target("    proxy: socks5://p:1080\n"),
            "targets.r1.proxy",
            "SOCKS5",
        ),
        (
            target("    proto-files: [a.proto]\n"),
            "targets.r1.proto-files",
            "not supported",
        ),
        (
            target("    proto-dirs: [/x]\n"),
            "targets.r1.proto-dirs",
            "not supported",
        ),
        (
            target("    log-tls-secret: true\n"),
            "targets.r1.log-tls-secret",
            "not supported",
        ),
        (
            target("    tunnel-target-type: x\n"),
            "targets.r1.tunnel-target-type",
            "tunnel",
        ),
        (
            target("    grpc-read-buffer-size: 1\n"),
            "targets.r1.grpc-read-buffer-size",
            "not supported",
        ),
        (
            target("    buffer-size: 500\n"),
            "targets.r1.buffer-size",
            "output's buffer-size",
        ),
        (
            target("    cipher-suites: [TLS_RSA_WITH_AES_128_CBC_SHA, TLS_AES_128_GCM_SHA256]\n"),
            "targets.r1.cipher-suites",
            "TLS_RSA_WITH_AES_128_CBC_SHA is not supported",
        ),
        ("log-file: /tmp/x.log\n".into(), "log-file", "stderr"),
        ("log: false\n".into(), "log", "stderr"),
        ("format: json\n".into(), "format", "own format"),
        ("no-prefix: true\n".into(), "no-prefix", "not supported"),
        ("proxy-from-env: true\n".into(), "proxy-from-env", "proxy"),
        (
            "subscriptions:\n  s:\n    paths: [/a]\n    history: {snapshot: x}\n".into(),
            "subscriptions.s.history",
            "not supported",
        ),
        (
            "outputs:\n  n:\n    type: nats\n    tls: {skip-verify: true}\n".into(),
            "outputs.n.tls.skip-verify",
            "always verified",
        ),
        (
            "outputs:\n  n:\n    type: nats\n    msg-template: x\n".into(),
            "outputs.n.msg-template",
            "templates",
        ),
        (
            "outputs:\n  n:\n    type: nats\n    debug: true\n".into(),
            "outputs.n.debug",
            "not supported",
        ),
        (
            "outputs:\n  p:\n    type: prometheus\n    num-workers: 4\n".into(),
            "outputs.p.num-workers",
            "without ingest workers",
        ),
        (
            "outputs:\n  p:\n    type: prometheus\n    buffer-size: 4\n".into(),
            "outputs.p.buffer-size",
            "without ingest workers",
        ),
        (
            "outputs:\n  p:\n    type: prometheus\n    lisen: x\n".into(),
            "outputs.p.lisen",
            "unknown",
        ),
        (
            "outputs:\n  p:\n    type: prometheus\n    service-registration: {adress: x}\n".into(),
            "outputs.p.service-registration.adress",
            "unknown",
        ),
        (
            "inputs:\n  i:\n    type: nats\n    tls: {skip-verify: true}\n".into(),
            "inputs.i.tls.skip-verify",
            "always verified",
        ),
        (
            "inputs:\n  i:\n    type: nats\n    subjekt: x\n".into(),
            "inputs.i.subjekt",
            "unknown",
        ),
        (
            "api-server:\n  enable-profiling: true\n".into(),
            "api-server.enable-profiling",
            "profiling",
        ),
        (
            "api-server:\n  debug: true\n".into(),
            "api-server.debug",
            "not logged",
        ),
        (
            "api-server:\n  healthz-disable-logging: false\n".into(),
            "api-server.healthz-disable-logging",
            "never logged",
        ),
        (
            "api-server:\n  expose-target-secrets: true\n".into(),
            "api-server.expose-target-secrets",
            "****",
        ),
        (
            "clustering:\n  locker: {type: memory, sesion-ttl: 1s}\n".into(),
            "clustering.locker.sesion-ttl",
            "unknown",
        ),
    ] {
        assert_warns(&text, key, words);
    }
}

#[test]
fn processors_and_event_processor_lists_are_kept_without_warnings() {
    let text = "processors:\n  up: {event-strings: {value-names: ['.*'], transforms: [{to-upper: {apply-on: name}}]}}\n\
                outputs:\n  n: {type: nats, event-processors: [up]}\n  f: {type: file, file-type: stdout, event-processors: [up]}\n  p: {type: prometheus, event-processors: [up]}\n\
                inputs:\n  i: {type: nats, event-processors: [up], outputs: [p]}\n";
    assert!(warnings_of(text).is_empty(), "{:#?}", warnings_of(text));
    let config = load(text).unwrap();
    assert_eq!(
        config.processors["up"]["event-strings"]["value-names"][0],
        ".*"
    );
    for output in config.outputs.values() {
        let lists = match output {
            OutputConfig::Nats(n) => &n.event_processors,
            OutputConfig::File(f) => &f.event_processors,
            OutputConfig::Prometheus(p) => &p.event_processors,
            OutputConfig::PrometheusWrite(p) => &p.event_processors,
        };
        assert_eq!(lists, &["up"]);
    }
    let InputConfig::Nats(input) = &config.inputs["i"];
    assert_eq!(input.event_processors, ["up"]);
    assert!(load("").unwrap().processors.is_null());
}

#[test]
fn harmless_values_of_unapplied_keys_are_quiet() {
    let warnings = warnings_of(
        "log: true\nproxy-from-env: false\ndebug: true\napi-server:\n  enable-profiling: false\n  healthz-disable-logging: true\n  enable-metrics: true\ntargets:\n  r1:\n    address: 10.0.0.1\n    log-tls-secret: false\n    buffer-size: 100\n",
    );
    assert!(warnings.is_empty(), "{warnings:#?}");
}

#[test]
fn previously_ignored_target_keys_are_applied() {
    let config = load(
        "gzip: true\nretry: 3s\nmax-msg-size: 1024\ntls-min-version: \"1.2\"\nauth-scheme: Basic\n\
         targets:\n  r1:\n    address: 10.0.0.1\n    metadata: {x-a: b}\n    tls-max-version: \"1.2\"\n\
         \x20   tcp-keepalive: -1s\n    grpc-keepalive: {time: 20s, timeout: 3s, permit-without-stream: true}\n\
         \x20   cipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n    grpc-window-size: 1048576\n\
         \x20 r2:\n    address: 10.0.0.2\n    gzip: false\n    tls-version: \"1.3\"\n",
    )
    .unwrap();
    let r1 = &config.targets["r1"];
    assert!(r1.gzip);
    assert_eq!(r1.retry_timer, Duration::from_secs(3));
    assert_eq!(r1.max_msg_size, 1024);
    assert_eq!(r1.auth_scheme.as_deref(), Some("Basic"));
    assert_eq!(r1.metadata["x-a"], "b");
    assert_eq!(r1.tls_min_version, Some(TlsVersion::V1_2));
    assert_eq!(r1.tls_max_version, Some(TlsVersion::V1_2));
    assert!(r1.tcp_keepalive.unwrap().is_negative());
    let keepalive = r1.grpc_keepalive.unwrap();
    assert_eq!(keepalive.time, Duration::from_secs(20));
    assert_eq!(keepalive.timeout, Duration::from_secs(3));
    assert!(keepalive.permit_without_stream);
    assert_eq!(r1.grpc_window_size, Some(1_048_576));
    let r2 = &config.targets["r2"];
    assert!(!r2.gzip);
    assert_eq!(
        (r2.tls_min_version, r2.tls_max_version),
        (Some(TlsVersion::V1_3), Some(TlsVersion::V1_3))
    );
    // The wire form members exchange carries the new keys.
    assert_eq!(&config.target_from_json(&r1.to_wire_json()).unwrap(), r1);
}

#[test]
fn bad_values_of_applied_target_keys_name_the_key() {
    let target = |body: &str| format!("targets:\n  r1:\n    address: 10.0.0.1\n{body}");
    for (body, key, words) in [
        (
            "    tls-version: \"1.0\"\n",
            "targets.r1.tls-version",
            "refuses TLS 1.0 and 1.1",
        ),
        (
            "    tls-min-version: \"1.1\"\n",
            "targets.r1.tls-min-version",
            "refuses TLS 1.0 and 1.1",
        ),
        (
            "    tls-max-version: \"2\"\n",
            "targets.r1.tls-max-version",
            "not a TLS version",
        ),
        (
            "    tls-min-version: \"1.3\"\n    tls-max-version: \"1.2\"\n",
            "targets.r1.tls-min-version",
            "above",
        ),
        (
            "    cipher-suites: [TLS_FANCY]\n",
            "targets.r1.cipher-suites",
            "not a cipher suite",
        ),
        (
            "    cipher-suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n",
            "targets.r1.cipher-suites",
            "no cipher suite",
        ),
        (
            "    tls-version: \"1.2\"\n    cipher-suites: [TLS_AES_128_GCM_SHA256]\n",
            "targets.r1.cipher-suites",
            "no cipher suite",
        ),
        (
            "    metadata: {\"bad key\": x}\n",
            "targets.r1.metadata.bad key",
            "not a gRPC metadata key",
        ),
        (
            "    metadata: {x-bin: x}\n",
            "targets.r1.metadata.x-bin",
            "binary",
        ),
        (
            "    tcp-keepalive: soon\n",
            "targets.r1.tcp-keepalive",
            "not a duration",
        ),
        (
            "    grpc-keepalive: {time: soon}\n",
            "targets.r1.grpc-keepalive.time",
            "not a duration",
        ),
    ] {
        let err = load(&target(body)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(key) && text.contains(words),
            "{body}: {text}"
        );
    }
}

// ---- issue 12.4 / 14.3: gnmic's YAML ----

#[test]
fn yaml_merge_keys_merge_like_go_yaml() {
    let config = load(
        "defaults: &defaults\n  username: admin\n  insecure: true\n  timeout: 5s\n\
         tls: &tls\n  insecure: false\n  skip-verify: true\n  timeout: 7s\n\
         targets:\n\
         \x20 r1:\n    <<: *defaults\n    address: 10.0.0.1\n    timeout: 2s\n\
         \x20 r2:\n    address: 10.0.0.2\n    <<: [*tls, *defaults]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r1 = &config.targets["r1"];
    assert_eq!(r1.username.as_deref(), Some("admin"));
    assert!(r1.insecure);
    // A key written in the map wins over the merged one.
    assert_eq!(r1.timeout, Duration::from_secs(2));
    let r2 = &config.targets["r2"];
    // In a list, the earlier map wins.
    assert!(!r2.insecure && r2.skip_verify);
    assert_eq!(r2.timeout, Duration::from_secs(7));
    assert_eq!(r2.username.as_deref(), Some("admin"));
}

#[test]
fn dollar_expansion_reads_like_gnmic() {
    std::env::set_var("GNOMON_TEST_EXPAND_PW", "from-env");
    let config = load(
        "password: pa$$w0rd\n\
         targets:\n  r1:\n    address: 10.0.0.1\n    password: pa$$w0rd\n\
         \x20 r2:\n    address: 10.0.0.2\n    password: $GNOMON_TEST_EXPAND_PW\n\
         outputs:\n  n:\n    type: nats\n    password: pa$$w0rd\n    username: u-${GNOMON_TEST_EXPAND_PW}-$1-${}-cost$\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let exposed = |s: &Option<Secret>| s.as_ref().map(|s| s.expose().to_string());
    // gnmic expands a target's (and the top-level) password only when it starts with `$`.
    assert_eq!(
        exposed(&config.targets["r1"].password).as_deref(),
        Some("pa$$w0rd")
    );
    assert_eq!(
        exposed(&config.targets["r2"].password).as_deref(),
        Some("from-env")
    );
    match &config.outputs["n"] {
        OutputConfig::Nats(nats) => {
            // Outputs are expanded whole: `$$` is the (unset) variable `$`.
            assert_eq!(exposed(&nats.password).as_deref(), Some("paw0rd"));
            assert_eq!(nats.username.as_deref(), Some("u-from-env---cost$"));
        }
        other => panic!("{other:?}"),
    }
}

/// 600 bytes of nested aliases would expand to 10^9 nodes.
const ALIAS_BOMB: &str = "a: &a [x,x,x,x,x,x,x,x,x,x]\n\
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n\
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n\
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n\
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n\
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n\
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\n\
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\n\
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";

/// The process's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn an_alias_bomb_is_refused_quickly_with_bounded_memory() {
    let started = std::time::Instant::now();
    let before = peak_rss_kib();
    let err = load(ALIAS_BOMB).unwrap_err().to_string();
    assert!(err.contains("alias bomb"), "{err}");
    assert!(!err.contains('\n'), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Other tests run in parallel in this process: allow them some growth too.
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(grown < 200 * 1024, "peak memory grew by {grown} KiB");
}

#[test]
fn a_huge_document_is_refused() {
    let huge = format!("# {}\n", "x".repeat((MAX_DOCUMENT_SIZE + 1) as usize));
    let err = load(&huge).unwrap_err().to_string();
    assert!(err.contains("larger than the 16 MiB"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    std::fs::write(&path, &huge).unwrap();
    let err = load_config(Some(&path)).unwrap_err().to_string();
    assert!(err.contains("larger than the 16 MiB"), "{err}");
    // Deep nesting is refused too (the parser's stack stays small).
    let deep = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
    assert!(load(&deep)
        .unwrap_err()
        .to_string()
        .contains("nested deeper"));
}

// ---- issue 14.5: fail closed ----

#[test]
fn security_settings_that_resolve_to_empty_stop_the_start() {
    std::env::remove_var("GNOMON_TEST_UNSET_SECRET");
    for (text, key) in [
        (
            "api-server:\n  token: ${GNOMON_TEST_UNSET_SECRET}\n",
            "api-server.token",
        ),
        (
            "outputs:\n  n:\n    type: nats\n    username: u\n    password: $GNOMON_TEST_UNSET_SECRET\n",
            "outputs.n.password",
        ),
        (
            "targets:\n  r1:\n    address: 10.0.0.1\n    password: ${GNOMON_TEST_UNSET_SECRET}\n",
            "targets.r1.password",
        ),
        (
            "targets:\n  r1:\n    address: 10.0.0.1\n    tls-ca: ${GNOMON_TEST_UNSET_SECRET}\n",
            "targets.r1.tls-ca",
        ),
        (
            "token: $GNOMON_TEST_UNSET_SECRET\n",
            "token",
        ),
        (
            "clustering:\n  locker:\n    type: etcd\n    address: a:2379\n    username: u\n    password: ${GNOMON_TEST_UNSET_SECRET}\n",
            "clustering.locker.password",
        ),
        (
            "clustering:\n  locker:\n    type: etcd\n    address: a:2379\n    tls: {ca-file: $GNOMON_TEST_UNSET_SECRET}\n",
            "clustering.locker.tls.ca-file",
        ),
        (
            "inputs:\n  i:\n    type: nats\n    credentials-file: ${GNOMON_TEST_UNSET_SECRET}\n",
            "inputs.i.credentials-file",
        ),
        (
            "outputs:\n  p:\n    type: prometheus\n    service-registration: {token: $GNOMON_TEST_UNSET_SECRET}\n",
            "outputs.p.service-registration.token",
        ),
    ] {
        let err = load(text).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{key}: refers to $GNOMON_TEST_UNSET_SECRET")),
            "{text}: {err}"
        );
        assert!(err.contains("must not resolve to empty"), "{err}");
    }
    // Written empty means unset (gnmic's zero value), not a mistake.
    let config = load("api-server:\n  token: \"\"\n").unwrap();
    assert_eq!(config.api.unwrap().token, None);
}

// ---- issue 13.5: parse once, one type per thing ----

#[test]
fn one_tls_files_type_and_one_secret_type_everywhere() {
    let config = load(
        "clustering:\n  tls: {ca-file: c.pem}\n  locker:\n    type: etcd\n    address: e:2379\n    tls: {ca-file: e.pem}\n\
         outputs:\n  n:\n    type: nats\n    tls: {ca-file: n.pem}\n\
         \x20 p:\n    type: prometheus\n    service-registration: {username: u, password: reg-pw, token: reg-tok}\n\
         inputs:\n  i:\n    type: nats\n    username: u\n    password: in-pw\n    token: in-tok\n    tls: {ca-file: i.pem}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let clustering = config.clustering.as_ref().unwrap();
    let files: [&TlsFiles; 4] = [
        clustering.tls.as_ref().unwrap(),
        clustering.locker.tls.as_ref().unwrap(),
        match &config.outputs["n"] {
            OutputConfig::Nats(n) => n.tls.as_ref().unwrap(),
            other => panic!("{other:?}"),
        },
        match &config.inputs["i"] {
            InputConfig::Nats(i) => i.tls.as_ref().unwrap(),
        },
    ];
    let cas: Vec<_> = files
        .iter()
        .map(|f| f.ca_file.as_deref().unwrap())
        .collect();
    assert_eq!(cas, ["c.pem", "e.pem", "n.pem", "i.pem"]);
    let InputConfig::Nats(input) = &config.inputs["i"];
    let secrets: [&Option<Secret>; 2] = [&input.password, &input.token];
    assert_eq!(secrets[0].as_ref().map(Secret::expose), Some("in-pw"));
    let OutputConfig::Prometheus(prom) = &config.outputs["p"] else {
        panic!()
    };
    let registration = prom.service_registration.as_ref().unwrap();
    assert_eq!(
        registration.token.as_ref().map(Secret::expose),
        Some("reg-tok")
    );
    let shown = format!("{config:?} {}", serde_json::to_string(&config).unwrap());
    for secret in ["in-pw", "in-tok", "reg-pw", "reg-tok"] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
}

// ---- issue 17.2: the prometheus_write output ----

#[test]
fn prometheus_write_reads_every_gnmic_key() {
    let config = load(
        "outputs:\n  rw:\n    type: prometheus_write\n    url: https://mimir:9009/api/v1/push\n\
         \x20   headers: {X-Scope-OrgID: tenant1}\n\
         \x20   authorization: {type: Bearer, credentials: tok-secret}\n\
         \x20   tls: {ca-file: /ca.pem, skip-verify: true}\n\
         \x20   timeout: 3s\n    interval: 2s\n    buffer-size: 50\n\
         \x20   max-time-series-per-write: 7\n    max-retries: 4\n\
         \x20   metadata: {include: true, interval: 30s, max-entries-per-write: 9}\n\
         \x20   metric-prefix: gnmic\n    append-subscription-name: true\n\
         \x20   strings-as-labels: true\n    add-target: if-not-present\n\
         \x20   event-processors: [p1]\n\
         processors:\n  p1: {event-drop: {condition: 'false'}}\n",
    )
    .unwrap();
    let OutputConfig::PrometheusWrite(rw) = &config.outputs["rw"] else {
        panic!("{:?}", config.outputs["rw"]);
    };
    assert_eq!(config.outputs["rw"].type_name(), "prometheus_write");
    assert_eq!(rw.url, "https://mimir:9009/api/v1/push");
    assert_eq!(rw.headers["X-Scope-OrgID"], "tenant1");
    let authz = rw.authorization.as_ref().unwrap();
    assert_eq!(
        (authz.kind.as_str(), authz.credentials.expose()),
        ("Bearer", "tok-secret")
    );
    assert!(rw.authentication.is_none());
    let tls = rw.tls.as_ref().unwrap();
    assert_eq!(
        (tls.ca_file.as_deref(), tls.skip_verify),
        (Some("/ca.pem"), true)
    );
    assert_eq!(
        (rw.timeout, rw.interval),
        (Duration::from_secs(3), Duration::from_secs(2))
    );
    assert_eq!(
        (rw.buffer_size, rw.max_time_series_per_write, rw.max_retries),
        (50, 7, 4)
    );
    assert!(rw.metadata.include);
    assert_eq!(rw.metadata.interval, Duration::from_secs(30));
    assert_eq!(rw.metadata.max_entries_per_write, 9);
    assert_eq!(rw.metric_prefix, "gnmic");
    assert!(rw.append_subscription_name && rw.strings_as_labels);
    assert_eq!(rw.add_target.as_deref(), Some("if-not-present"));
    assert_eq!(rw.event_processors, ["p1"]);
    // The credentials never show in the serialized (API) view.
    let json = serde_json::to_string(&config.outputs["rw"]).unwrap();
    assert!(!json.contains("tok-secret"), "{json}");
    assert!(json.contains("\"type\":\"prometheus_write\""), "{json}");
}

#[test]
fn prometheus_write_defaults_are_gnmics() {
    let config = load("outputs:\n  rw:\n    type: prometheus_write\n    url: http://p:9090/api/v1/write\n    authentication: {username: u, password: pw}\n").unwrap();
    let OutputConfig::PrometheusWrite(rw) = &config.outputs["rw"] else {
        panic!()
    };
    assert_eq!(rw.interval, Duration::from_secs(10));
    assert_eq!(rw.timeout, Duration::from_secs(10));
    assert_eq!(rw.buffer_size, 1000);
    assert_eq!(rw.max_time_series_per_write, 500);
    assert_eq!(rw.max_retries, 0);
    assert!(!rw.metadata.include);
    assert_eq!(rw.metadata.interval, Duration::from_secs(60));
    assert_eq!(rw.metadata.max_entries_per_write, 500);
    let auth = rw.authentication.as_ref().unwrap();
    assert_eq!(
        (auth.username.as_str(), auth.password.expose()),
        ("u", "pw")
    );
}

#[test]
fn prometheus_write_refuses_bad_values_naming_the_key() {
    let base = "outputs:\n  rw:\n    type: prometheus_write\n";
    let err = error_of(base);
    assert!(err.starts_with("outputs.rw.url"), "{err}");
    let err = error_of(&format!("{base}    url: mimir:9009/push\n"));
    assert!(
        err.starts_with("outputs.rw.url") && err.contains("scheme"),
        "{err}"
    );
    let url = "    url: http://m/push\n";
    for (extra, key) in [
        ("    max-retries: 1000\n", "outputs.rw.max-retries"),
        ("    buffer-size: 2000000\n", "outputs.rw.buffer-size"),
        ("    interval: soon\n", "outputs.rw.interval"),
        (
            "    headers: {\"bad header\": x}\n",
            "outputs.rw.headers.bad header",
        ),
        ("    add-target: always\n", "outputs.rw.add-target"),
        (
            "    target-template: '{{ range .x }}{{ end }}'\n",
            "outputs.rw.target-template",
        ),
        ("    tls: {cert-file: /c.pem}\n", "outputs.rw.tls.key-file"),
    ] {
        let err = error_of(&format!("{base}{url}{extra}"));
        assert!(err.starts_with(key), "{extra}: {err}");
    }
    let err = error_of(&format!(
        "{base}{url}    authentication: {{username: u, password: p}}\n    authorization: {{credentials: t}}\n"
    ));
    assert!(err.contains("authorization"), "{err}");
}

#[test]
fn prometheus_write_warns_about_keys_it_does_not_apply() {
    let base = "outputs:\n  rw:\n    type: prometheus_write\n    url: http://m/push\n";
    for (extra, key, words) in [
        (
            "num-workers: 2",
            "outputs.rw.num-workers",
            "without conversion workers",
        ),
        ("num-writers: 2", "outputs.rw.num-writers", "one writer"),
        (
            "input-buffer-size: 9",
            "outputs.rw.input-buffer-size",
            "input queue",
        ),
        ("debug: true", "outputs.rw.debug", "RUST_LOG"),
        (
            "enable-metrics: false",
            "outputs.rw.enable-metrics",
            "always records",
        ),
        (
            "metadata: {includ: true}",
            "outputs.rw.metadata.includ",
            "unknown",
        ),
        ("urll: x", "outputs.rw.urll", "unknown"),
    ] {
        assert_warns(&format!("{base}    {extra}\n"), key, words);
    }
    assert!(warnings_of(&format!(
        "{base}    debug: false\n    enable-metrics: true\n"
    ))
    .is_empty());
}

#[test]
fn prometheus_write_credentials_fail_closed() {
    let err = error_of(
        "outputs:\n  rw:\n    type: prometheus_write\n    url: http://m/push\n    authorization:\n      credentials: ${GNOMON_TEST_UNSET_RW_TOKEN}\n",
    );
    assert!(
        err.starts_with("outputs.rw.authorization.credentials")
            && err.contains("GNOMON_TEST_UNSET_RW_TOKEN"),
        "{err}"
    );
}
