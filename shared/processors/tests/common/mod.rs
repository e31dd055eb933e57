//! Helpers for the table-driven tests: events written as gnmic's JSON.
#![allow(dead_code)]

use gnomon_processors::{Event, Processors};
use serde_json::Value;

/// Events from gnmic's JSON rendering (one object or an array).
pub fn events(v: &Value) -> Vec<Event> {
    match v {
        Value::Array(items) => items.iter().map(one).collect(),
        other => vec![one(other)],
    }
}

fn one(v: &Value) -> Event {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("bad test event {v}: {e}"))
}

/// Compiles `config`, runs the chain `names` over `before` and compares
/// with `after` (both through gnmic's JSON rendering).
pub fn check(case: &str, config: Value, names: &[&str], before: Value, after: Value) {
    let procs =
        Processors::from_config(&config).unwrap_or_else(|e| panic!("{case}: config refused: {e}"));
    let mut chain = procs
        .chain(names)
        .unwrap_or_else(|e| panic!("{case}: chain: {e}"));
    let mut batch = events(&before);
    chain.apply(&mut batch);
    let got = serde_json::to_value(&batch).unwrap();
    let want = serde_json::to_value(events(&after)).unwrap();
    assert_eq!(
        got,
        want,
        "{case}:\n got: {}\nwant: {}",
        pretty(&got),
        pretty(&want)
    );
}

/// Runs the only processor defined in `config`.
pub fn check_one(case: &str, config: Value, before: Value, after: Value) {
    let name = config
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .expect("one processor");
    check(case, config, &[name.as_str()], before, after);
}

pub fn apply(config: &Value, names: &[&str], before: Value) -> Vec<Event> {
    let procs = Processors::from_config(config).unwrap_or_else(|e| panic!("config refused: {e}"));
    let mut chain = procs.chain(names).unwrap_or_else(|e| panic!("chain: {e}"));
    let mut batch = events(&before);
    chain.apply(&mut batch);
    batch
}

pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// The SR Linux interface statistics event used by most gnmic doc pages.
pub fn srl_stats(source: &str, interface: &str) -> Value {
    let p = "/srl_nokia-interfaces:interface/statistics/";
    let mut values = serde_json::Map::new();
    for (k, v) in [
        ("carrier-transitions", "1"),
        ("in-broadcast-packets", "3797"),
        ("in-error-packets", "0"),
        ("in-fcs-error-packets", "0"),
        ("in-multicast-packets", "288033"),
        ("in-octets", "65382630"),
        ("in-unicast-packets", "107154"),
        ("out-broadcast-packets", "614"),
        ("out-error-packets", "0"),
        ("out-multicast-packets", "11"),
        ("out-octets", "64721394"),
        ("out-unicast-packets", "105876"),
    ] {
        values.insert(format!("{p}{k}"), Value::String(v.to_string()));
    }
    serde_json::json!({
        "name": "default",
        "timestamp": 1607291271894072397i64,
        "tags": {"interface_name": interface, "source": source, "subscription-name": "default"},
        "values": values
    })
}

/// `srl_stats` with the value names transformed by `f`.
pub fn srl_stats_renamed(
    source: &str,
    interface: &str,
    f: impl Fn(&str) -> Option<String>,
) -> Value {
    let mut v = srl_stats(source, interface);
    let values = v["values"].as_object().cloned().unwrap_or_default();
    let mut out = serde_json::Map::new();
    for (k, val) in values {
        if let Some(nk) = f(&k) {
            out.insert(nk, val);
        }
    }
    v["values"] = Value::Object(out);
    v
}
