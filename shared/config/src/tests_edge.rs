//! Issue 14.2 / 14.10 / 14.11: names and values checked once, at load. Each test here failed
//! on the code before the fix (the report lists how); they use only APIs that existed then.

use super::*;

fn load(text: &str) -> Result<GnomonConfig, ConfigError> {
    load_config_with_env(text, ConfigFormat::Yaml, &[])
}

fn error_of(text: &str) -> String {
    match load(text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn names_that_break_a_url_segment_or_a_store_key_are_refused() {
    for (text, key) in [
        ("targets:\n  a/b:\n    address: 10.0.0.1\n", "targets.a/b"),
        (
            "targets:\n  r1:\n    name: ..\n    address: 10.0.0.1\n",
            "targets.r1.name",
        ),
        (
            "subscriptions:\n  \"s/1\":\n    paths: [/a]\n",
            "subscriptions.s/1",
        ),
        (
            "outputs:\n  \"o\\n1\":\n    type: file\n    file-type: stdout\n",
            "outputs.o\n1",
        ),
        ("inputs:\n  \".\":\n    type: nats\n", "inputs.."),
    ] {
        let err = error_of(text);
        assert!(err.starts_with(&format!("{key}: ")), "{text}: {err}");
        assert!(err.contains("name"), "{err}");
    }
    let long = format!("targets:\n  {}:\n    address: 10.0.0.1\n", "t".repeat(129));
    assert!(error_of(&long).contains("longer than 128 bytes"));
}

#[test]
fn a_posted_target_with_wrong_json_types_is_refused_naming_the_fields() {
    let config = load("").unwrap();
    let err = config
        .target_from_json(&serde_json::json!({"name": 123, "address": true}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("name: 123 is a number"), "{err}");
    assert!(err.contains("address: true is a boolean"), "{err}");
    let err = config
        .target_from_json(
            &serde_json::json!({"name": "r1", "address": "10.0.0.1", "insecure": "yes"}),
        )
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("insecure: \"yes\""), "{err}");
    let err = config
        .target_from_json(&serde_json::json!({"name": "a/b", "address": "10.0.0.1"}))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("name: \"a/b\" contains '/'"), "{err}");
}

#[test]
fn addresses_are_host_port_at_load() {
    for (text, key) in [
        (
            "targets:\n  r1:\n    address: not an address\n",
            "targets.r1.address",
        ),
        (
            "targets:\n  r1:\n    address: \"10.0.0.1:57s3cret\"\n",
            "targets.r1.address",
        ),
        ("address: [\"bad host\"]\n", "address"),
        (
            "targets:\n  r1:\n    address: \"10.0.0.1:1,::::\"\n",
            "targets.r1.address",
        ),
    ] {
        let err = error_of(text);
        assert!(err.starts_with(&format!("{key}: ")), "{text}: {err}");
        assert!(err.contains("expected host:port"), "{err}");
    }
    let config = load("").unwrap();
    let err = config
        .target_from_json(&serde_json::json!({"name": "r1", "address": "not an address"}))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("address: "), "{err}");
}

#[test]
fn an_api_address_from_the_environment_is_checked_at_load() {
    let env = vec![("GNMIC_API".to_string(), "notaport".to_string())];
    let err = load_config_with_env("", ConfigFormat::Yaml, &env)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("api: \"notaport\""), "{err}");
    let err = error_of("api-server:\n  address: \"127.0.0.1:http\"\n");
    assert!(err.starts_with("api-server.address: "), "{err}");
    // gnmic's forms stay valid.
    load("api: \":7890\"\n").unwrap();
    load("api-server:\n  address: \"[::1]:7890\"\n").unwrap();
}

#[test]
fn a_nats_address_that_cannot_be_dialed_is_refused_at_load() {
    let err = error_of("outputs:\n  n:\n    type: nats\n    address: \"nats://::::\"\n");
    assert!(err.starts_with("outputs.n.address: "), "{err}");
    let err = error_of("inputs:\n  i:\n    type: nats\n    address: \"nats://::::\"\n");
    assert!(err.starts_with("inputs.i.address: "), "{err}");
    load("outputs:\n  n:\n    type: nats\n    address: \"nats://a:4222,b:4223\"\n").unwrap();
}

#[test]
fn a_bad_locker_duration_names_its_own_key() {
    for value in ["-1s", "banana"] {
        let err = error_of(&format!(
            "clustering:\n  locker:\n    type: consul\n    session-ttl: {value}\n"
        ));
        assert!(
            err.starts_with(&format!("clustering.locker.session-ttl: \"{value}\"")),
            "{err}"
        );
    }
}

#[test]
fn an_input_feeding_an_undefined_output_is_refused() {
    let err = error_of(
        "outputs:\n  prom:\n    type: prometheus\ninputs:\n  in:\n    type: nats\n    outputs: [promm]\n",
    );
    assert_eq!(
        err,
        "inputs.in.outputs: \"promm\" is not a defined output (defined: prom)"
    );
}

#[test]
fn file_rotation_reads_gnmic_units_and_defaults() {
    let config = load(
        "outputs:\n  f:\n    type: file\n    filename: /tmp/out.json\n    rotation:\n      max-size: 5\n      max-age: 2\n      max-backups: 3\n      compress: true\n",
    )
    .unwrap();
    let OutputConfig::File(file) = &config.outputs["f"] else {
        panic!("not a file output");
    };
    assert_eq!(
        file.rotation,
        Some(FileRotation {
            max_size: 5 * 1024 * 1024,
            max_age: Some(std::time::Duration::from_secs(2 * 24 * 3600)),
            max_backups: 3,
            compress: true,
        })
    );
    // An empty block rotates at gnmic's 100 MB and keeps every backup, of any age.
    let config =
        load("outputs:\n  f:\n    type: file\n    filename: /tmp/out.json\n    rotation: {}\n")
            .unwrap();
    let OutputConfig::File(file) = &config.outputs["f"] else {
        panic!("not a file output");
    };
    let rotation = file.rotation.as_ref().unwrap();
    assert_eq!(rotation.max_size, 100 * 1024 * 1024);
    assert_eq!(
        (rotation.max_age, rotation.max_backups, rotation.compress),
        (None, 0, false)
    );
}

#[test]
fn file_rotation_is_refused_where_it_cannot_apply() {
    let error = error_of(
        "outputs:\n  f:\n    type: file\n    file-type: stdout\n    rotation: {max-size: 1}\n",
    );
    assert!(
        error.contains("outputs.f.rotation") && error.contains("stdout"),
        "{error}"
    );
    let error = error_of(
        "outputs:\n  f:\n    type: file\n    filename: o.json\n    rotation: {max-size: big}\n",
    );
    assert!(error.contains("outputs.f.rotation.max-size"), "{error}");
    let error = error_of(
        "outputs:\n  f:\n    type: file\n    filename: o.json\n    rotation: {max-age: 99999999}\n",
    );
    assert!(error.contains("outputs.f.rotation.max-age"), "{error}");
}

#[test]
fn a_json_number_too_large_for_a_float_is_an_error_not_a_panic() {
    // Found by the config_loader fuzz target: with serde_json's arbitrary_precision (turned
    // on by the starlark crate) such a number used to panic the loader.
    let result = load_config_with_env("44444444E4444444444444\n", ConfigFormat::Json, &[]);
    assert!(result.is_err(), "{result:?}");
}

#[test]
fn a_subscription_survives_the_trip_through_json() {
    // The cluster store and the REST API carry subscriptions as the JSON gnomon serializes.
    let config = load(
        "outputs:\n  o:\n    type: file\n    file-type: stdout\nsubscriptions:\n  s:\n    paths: [/a/b, '/c[name=x]']\n    prefix: /p\n    mode: stream\n    stream-mode: sample\n    sample-interval: 2s\n    heartbeat-interval: 1m\n    encoding: proto\n    qos: 5\n    updates-only: true\n    outputs: [o]\n  t:\n    paths: [/x]\n    mode: poll\n    poll-interval: 3s\n",
    )
    .unwrap();
    for subscription in config.subscriptions.values() {
        let json = serde_json::to_value(subscription).unwrap();
        let back = config.subscription_from_json(&json).unwrap();
        assert_eq!(&back, subscription, "{json}");
    }
}

#[test]
fn a_posted_subscription_names_what_is_wrong() {
    let config = load("outputs:\n  o:\n    type: file\n    file-type: stdout\n").unwrap();
    let cases = [
        (serde_json::json!({"paths": ["/a"]}), "name"),
        (serde_json::json!({"name": "s"}), "paths"),
        (
            serde_json::json!({"name": "s", "paths": ["/a"], "mode": "sometimes"}),
            "mode",
        ),
        (
            serde_json::json!({"name": "s", "paths": ["/a"], "outputs": ["nope"]}),
            "nope",
        ),
        (
            serde_json::json!({"name": "s", "paths": ["/a"], "sampel-interval": "1s"}),
            "sampel-interval",
        ),
    ];
    for (body, named) in cases {
        let error = config
            .subscription_from_json(&body)
            .unwrap_err()
            .to_string();
        assert!(error.contains(named), "{body}: {error}");
    }
}

#[test]
fn prometheus_cache_is_the_exposition_and_remote_caches_are_refused() {
    let base = "processors:\n  up:\n    event-strings:\n      value-names: [\".*\"]\n      transforms: [{to-upper: {apply-on: name}}]\noutputs:\n  p:\n    type: prometheus\n    event-processors: [up]\n";
    // `cache:` left empty is no cache block at all (as in gnmic).
    for cache in [
        "    cache: {}\n",
        "    cache: {type: oc, expiration: 10s}\n",
    ] {
        let config = load(&format!("{base}{cache}")).unwrap();
        let keys: Vec<&str> = config.warnings.iter().map(|w| w.key.as_str()).collect();
        assert!(keys.contains(&"outputs.p.cache"), "{cache}: {keys:?}");
        assert_eq!(
            keys.contains(&"outputs.p.cache.expiration"),
            cache.contains("expiration"),
            "{keys:?}"
        );
    }
    let err = error_of(&format!(
        "{base}    cache: {{type: redis, address: r:6379}}\n"
    ));
    assert!(
        err.starts_with("outputs.p.cache.type: \"redis\" is a remote cache"),
        "{err}"
    );
}

#[test]
fn prometheus_listener_tls_is_read_and_checked() {
    let config = load(
        "outputs:\n  p:\n    type: prometheus\n    tls:\n      cert-file: /c.pem\n      key-file: /k.pem\n      ca-file: /ca.pem\n",
    )
    .unwrap();
    let crate::output::OutputConfig::Prometheus(prom) = &config.outputs["p"] else {
        panic!("not a prometheus output: {:?}", config.outputs["p"]);
    };
    let tls = prom.listener_tls("p").unwrap().unwrap();
    let options = tls.server_options();
    assert_eq!(
        options.ca_file.as_deref(),
        Some(std::path::Path::new("/ca.pem"))
    );
    assert!(
        options.client_auth.is_none(),
        "gnmic's default follows ca-file"
    );
    for (tls, key) in [
        ("{cert-file: /c.pem}", "outputs.p.tls.cert-file"),
        ("{client-auth: sometimes}", "outputs.p.tls.client-auth"),
    ] {
        let err = error_of(&format!(
            "outputs:\n  p:\n    type: prometheus\n    tls: {tls}\n"
        ));
        assert!(err.starts_with(key), "{err}");
    }
}
