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
    assert_eq!(err, "outputs.out1.type: \"kafka\" is not a supported output type (expected nats, file or prometheus)");
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
    assert_eq!(clustering.locker["type"], "consul");
    let err = error_of("clustering:\n  cluster-name: c\n");
    assert!(err.starts_with("clustering.locker: missing"), "{err}");
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
    assert_eq!(clustering.locker["password"], "hunter2");
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
