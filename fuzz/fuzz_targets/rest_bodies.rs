//! REST request bodies that carry a target config (collector `POST /api/v1/config/targets`,
//! coordinator `POST /api/v1/configs`): arbitrary JSON through the same steps the handlers
//! take. Never panics, and:
//! * the name the store files an entry under is the one `target_name` gives, and both paths
//!   accept only names the one name rule allows (no '/', '.', '..', control characters,
//!   at most 128 bytes);
//! * a parsed target survives the wire form members exchange (`to_wire_json` → parse);
//! * the API form of a parsed target never shows its password or token.
#![no_main]

use futures::executor::block_on;
use gnomon_config::{load_config_with_env, ConfigFormat, GnomonConfig, REDACTED};
use gnomon_coordination::target_store::{target_name, target_tags, TargetConfigError};
use gnomon_coordination::{MemoryCoordination, TargetStore};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

const CONFIG: &str = r#"
username: admin
password: global-secret
insecure: true
subscriptions:
  ifcounters:
    paths: ["/interfaces/interface/state/counters"]
    stream-mode: sample
    sample-interval: 10s
outputs:
  prom:
    type: prometheus
    listen: "127.0.0.1:9804"
"#;

fn config() -> &'static GnomonConfig {
    static CONFIG_CELL: OnceLock<GnomonConfig> = OnceLock::new();
    CONFIG_CELL.get_or_init(|| {
        load_config_with_env(CONFIG, ConfigFormat::Yaml, &[]).expect("fuzz base config loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let name = target_name(&body);
    let _tags = target_tags(&body);
    coordinator_store(&body, name.as_deref());
    collector_parse(&body);
});

/// The coordinator's path: the store names and files the entry.
fn coordinator_store(body: &serde_json::Value, name: Option<&str>) {
    let store = TargetStore::new(Arc::new(MemoryCoordination::new("fuzz")), "fuzz-cluster");
    match block_on(store.put(body)) {
        Ok(stored) => {
            assert_eq!(Some(stored.as_str()), name, "stored under another name");
            assert!(
                gnomon_config::names::problem(&stored).is_none(),
                "a name the name rule refuses was stored: {stored:?}"
            );
            let listed = block_on(store.list()).expect("memory store lists");
            let config = listed
                .get(&stored)
                .unwrap_or_else(|| panic!("stored target {stored:?} is not listed"));
            assert_eq!(target_name(config).as_deref(), Some(stored.as_str()));
        }
        Err(TargetConfigError::MissingName) => assert!(name.is_none()),
        Err(TargetConfigError::InvalidName { name: bad, .. }) => {
            assert!(gnomon_config::names::problem(&bad).is_some())
        }
        Err(_) => {}
    }
}

/// The collector's path: parse with the configuration's globals.
fn collector_parse(body: &serde_json::Value) {
    let config = config();
    let Ok(target) = config.target_from_json(body) else {
        return;
    };
    assert!(
        gnomon_config::names::problem(&target.name).is_none(),
        "the collector accepted a name the name rule refuses: {:?}",
        target.name
    );
    let wire = target.to_wire_json();
    match config.target_from_json(&wire) {
        Ok(again) => assert_eq!(again, target, "target changed through its wire form {wire}"),
        Err(error) => panic!("wire form {wire} of an accepted target is rejected: {error}"),
    }
    let shown = serde_json::to_value(&target).expect("target serializes");
    for (key, secret) in [("password", &target.password), ("token", &target.token)] {
        if let Some(secret) = secret {
            if secret.expose() != REDACTED {
                assert_eq!(
                    shown.get(key).and_then(|v| v.as_str()),
                    Some(REDACTED),
                    "{key} shown in the API form"
                );
            }
        }
    }
}
