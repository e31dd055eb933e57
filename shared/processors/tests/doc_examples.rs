//! One table-driven test per processor type, built from the before/after
//! examples of gnmic's documentation (docs/user_guide/event_processors/).
//! Where a documented example contradicts what gnmic's code does, the case
//! says so and asserts gnmic's behaviour (that is what users migrate from).

mod common;

use common::{apply, check, check_one, srl_stats, srl_stats_renamed};
use serde_json::json;

const P: &str = "/srl_nokia-interfaces:interface/statistics/";

#[test]
fn event_add_tag() {
    let values = json!({
        "Carrier_Transitions": 1, "In_Broadcast_Packets": 448, "In_Error_Packets": 0,
        "In_Fcs_Error_Packets": 0, "In_Multicast_Packets": 47578, "In_Octets": 15557349,
        "In_Unicast_Packets": 6482, "Out_Broadcast_Packets": 110, "Out_Error_Packets": 0,
        "Out_Multicast_Packets": 10, "Out_Octets": 464766
    });
    let cases = [(
        "doc: add a tag when any value name matches",
        json!({"sample-processor": {"event-add-tag": {"value-names": ["."], "add": {"tag_name": "tag_value"}}}}),
        json!({"name": "sub1", "timestamp": 1607678293684962443i64,
               "tags": {"interface_name": "mgmt0", "source": "172.20.20.5:57400"}, "values": values}),
        json!({"name": "sub1", "timestamp": 1607678293684962443i64,
               "tags": {"interface_name": "mgmt0", "source": "172.20.20.5:57400", "tag_name": "tag_value"},
               "values": values}),
    )];
    for (case, config, before, after) in cases {
        check_one(case, config, before, after);
    }
    // Not overwritten unless asked; a condition replaces the selectors.
    let ev = json!({"name": "s", "tags": {"site": "old"}, "values": {"a": 1}});
    check_one(
        "existing tag kept without overwrite",
        json!({"p": {"event-add-tag": {"value-names": ["a"], "add": {"site": "new"}}}}),
        ev.clone(),
        ev.clone(),
    );
    check_one(
        "existing tag replaced with overwrite",
        json!({"p": {"event-add-tag": {"value-names": ["a"], "overwrite": true, "add": {"site": "new"}}}}),
        ev.clone(),
        json!({"name": "s", "tags": {"site": "new"}, "values": {"a": 1}}),
    );
    check_one(
        "condition",
        json!({"p": {"event-add-tag": {"condition": ".values.a > 0", "add": {"pos": "yes"}}}}),
        ev,
        json!({"name": "s", "tags": {"site": "old", "pos": "yes"}, "values": {"a": 1}}),
    );
}

#[test]
fn event_allow() {
    // The page writes the condition without quotes (`== 1/1/1`), which jq
    // reads as the number 1 and which then matches nothing (in gojq too);
    // the documented result needs the string.
    check_one(
        "doc: allow one interface",
        json!({"allow-processor": {"event-allow": {"condition": ".tags.interface_name == \"1/1/1\""}}}),
        json!([
            srl_stats("172.23.23.2:57400", "mgmt0"),
            srl_stats("172.23.23.3:57400", "1/1/1")
        ]),
        json!([srl_stats("172.23.23.3:57400", "1/1/1")]),
    );
    check_one(
        "doc condition as written matches nothing",
        json!({"allow-processor": {"event-allow": {"condition": ".tags.interface_name == 1/1/1"}}}),
        json!([
            srl_stats("172.23.23.2:57400", "mgmt0"),
            srl_stats("172.23.23.3:57400", "1/1/1")
        ]),
        json!([]),
    );
    check_one(
        "regex selectors",
        json!({"p": {"event-allow": {"tags": ["^1/1/1$"]}}}),
        json!([
            srl_stats("172.23.23.2:57400", "mgmt0"),
            srl_stats("172.23.23.3:57400", "1/1/1")
        ]),
        json!([srl_stats("172.23.23.3:57400", "1/1/1")]),
    );
}

#[test]
fn event_combine() {
    let config = json!({
        "proc1": {"event-allow": {"condition": ".tags.interface_name == \"ethernet-1/1\""}},
        "proc2": {"event-strings": {"value-names": [".*"], "transforms": [{"path-base": {"apply-on": "name"}}]}},
        "proc3": {"event-convert": {"value-names": [".*octets$"], "type": "int"}},
        "pipeline1": {"event-combine": {"processors": [
            {"name": "proc1"},
            {"condition": ".tags[\"subscription-name\"] == \"sub1\"", "name": "proc2"},
            {"name": "proc3"}
        ]}},
        "pipeline2": {"event-combine": {"processors": [
            {"condition": ".tags[\"subscription-name\"] == \"sub2\"", "name": "proc2"},
            {"name": "proc3"}
        ]}}
    });
    let ev = |ts: i64, sub: &str, intf: &str| {
        json!({"name": sub, "timestamp": ts,
               "tags": {"interface_name": intf, "subscription-name": sub},
               "values": {"interface/statistics/out-octets": "100"}})
    };
    let out = |ts: i64, sub: &str, intf: &str, key: &str| {
        json!({"name": sub, "timestamp": ts,
               "tags": {"interface_name": intf, "subscription-name": sub},
               "values": {key: 100}})
    };
    let before = json!([
        ev(1, "sub1", "ethernet-1/1"),
        ev(2, "sub2", "ethernet-1/1"),
        ev(3, "sub1", "ethernet-1/2")
    ]);
    check(
        "doc: pipeline1 = allow, path-base for sub1, convert",
        config.clone(),
        &["pipeline1"],
        before.clone(),
        json!([
            out(1, "sub1", "ethernet-1/1", "out-octets"),
            out(2, "sub2", "ethernet-1/1", "interface/statistics/out-octets")
        ]),
    );
    check(
        "doc: pipeline2 = path-base for sub2, convert",
        config,
        &["pipeline2"],
        before,
        json!([
            out(1, "sub1", "ethernet-1/1", "interface/statistics/out-octets"),
            out(2, "sub2", "ethernet-1/1", "out-octets"),
            out(3, "sub1", "ethernet-1/2", "interface/statistics/out-octets")
        ]),
    );
}

#[test]
fn event_convert() {
    let ev = |v: serde_json::Value| {
        json!({"name": "default", "timestamp": 1607290633806716620i64,
               "tags": {"port_port-id": "A/1", "source": "172.17.0.100:57400", "subscription-name": "default"},
               "values": {"/state/port/ethernet/statistics/in-octets": v}})
    };
    let cfg = |t: &str| json!({"convert-int-processor": {"event-convert": {"value-names": [".*octets$"], "type": t}}});
    let cases = [
        (
            "doc: string to int",
            cfg("int"),
            ev(json!("7753940")),
            ev(json!(7753940)),
        ),
        (
            "uint",
            cfg("uint"),
            ev(json!("7753940")),
            ev(json!(7753940u64)),
        ),
        ("float", cfg("float"), ev(json!("1.5")), ev(json!(1.5))),
        (
            "float to int truncates",
            cfg("int"),
            ev(json!(2.9)),
            ev(json!(2)),
        ),
        (
            "int to string",
            cfg("string"),
            ev(json!(12)),
            ev(json!("12")),
        ),
        (
            "float to string",
            cfg("string"),
            ev(json!(0.5)),
            ev(json!("0.5")),
        ),
        ("bool", cfg("bool"), ev(json!("true")), ev(json!(true))),
        (
            "not a number stays",
            cfg("int"),
            ev(json!("n/a")),
            ev(json!("n/a")),
        ),
    ];
    for (case, config, before, after) in cases {
        check_one(case, config, before, after);
    }
}

#[test]
fn event_data_convert() {
    let ev = |values: serde_json::Value| {
        json!({"name": "default", "timestamp": 1607290633806716620i64,
               "tags": {"port_port-id": "A/1", "source": "172.17.0.100:57400", "subscription-name": "default"},
               "values": values})
    };
    let k = "/state/port/ethernet/statistics/in-octets";
    let cases = [
        (
            "doc: simple conversion B → KB",
            json!({"convert-data-unit": {"event-data-convert": {"value-names": [".*-octets$"], "from": "B", "to": "KB", "keep": false}}}),
            ev(json!({k: "2048"})),
            ev(json!({k: 2.0})),
        ),
        (
            "doc: conversion with renaming",
            json!({"convert-data-unit": {"event-data-convert": {
                "value-names": [".*-octets$"], "from": "B", "to": "KB", "keep": true,
                "old": "^(\\S+)-octets$", "new": "${1}-kilobytes"}}}),
            ev(json!({k: "2048"})),
            ev(json!({k: "2048", "/state/port/ethernet/statistics/in-kilobytes": 2.0})),
        ),
        (
            "keep without rename adds _<to>",
            json!({"p": {"event-data-convert": {"value-names": ["_total$"], "to": "KB", "keep": true}}}),
            ev(json!({"data_total": 1024})),
            ev(json!({"data_total": 1024, "data_total_KB": 1.0})),
        ),
        (
            "unit in the value",
            json!({"p": {"event-data-convert": {"value-names": ["_total$"], "to": "B"}}}),
            ev(json!({"data_total": "1 KB", "bytes_total": "2KB"})),
            ev(json!({"data_total": 1024.0, "bytes_total": 2048.0})),
        ),
        (
            "bits",
            json!({"p": {"event-data-convert": {"value-names": ["rate"], "from": "b", "to": "kb"}}}),
            ev(json!({"rate": 8000})),
            ev(json!({"rate": 8.0})),
        ),
    ];
    for (case, config, before, after) in cases {
        check_one(case, config, before, after);
    }
}

#[test]
fn event_date_string() {
    // The page shows only the configuration; the value is in ms.
    let config = json!({"convert-timestamp-processor": {"event-date-string": {
        "value-names": ["timestamp"], "precision": "ms",
        "format": "2006-01-02T15:04:05Z07:00", "location": "Asia/Taipei"}}});
    check_one(
        "doc: ms timestamp to RFC 3339 in Asia/Taipei",
        config,
        json!({"name": "sub", "values": {"timestamp": 1607290633806i64, "other": 1}}),
        json!({"name": "sub", "values": {"timestamp": "2020-12-07T05:37:13+08:00", "other": 1}}),
    );
    check_one(
        "tags converted in place, custom layout, UTC",
        json!({"p": {"event-date-string": {"tag-names": ["^since$"], "precision": "s",
                                           "format": "Jan _2 2006 15:04:05", "location": "UTC"}}}),
        json!({"name": "sub", "tags": {"since": "1743849000"}}),
        json!({"name": "sub", "tags": {"since": "Apr  5 2025 10:30:00"}}),
    );
}

#[test]
fn event_delete() {
    let config = json!({"delete-processor": {"event-delete": {"value-names": [".*multicast.*", ".*broadcast.*"]}}});
    let after = srl_stats_renamed("172.23.23.2:57400", "mgmt0", |k| {
        (!k.contains("multicast") && !k.contains("broadcast")).then(|| k.to_string())
    });
    check_one(
        "doc: delete multicast and broadcast values",
        config.clone(),
        srl_stats("172.23.23.2:57400", "mgmt0"),
        after,
    );
    // intro.md: the same processor under a different name.
    let intro = json!({"my-processor": {"event-delete": {"value-names": [".*multicast.*", ".*broadcast.*"]}}});
    let after = srl_stats_renamed("172.23.23.2:57400", "mgmt0", |k| {
        (!k.contains("multicast") && !k.contains("broadcast")).then(|| k.to_string())
    });
    check_one(
        "intro: delete processor",
        intro,
        srl_stats("172.23.23.2:57400", "mgmt0"),
        after,
    );
    let mut no_sub = srl_stats("172.23.23.2:57400", "mgmt0");
    no_sub["tags"]
        .as_object_mut()
        .unwrap()
        .remove("subscription-name");
    check_one(
        "tag names",
        json!({"p": {"event-delete": {"tag-names": ["^subscription-name"]}}}),
        srl_stats("172.23.23.2:57400", "mgmt0"),
        no_sub,
    );
}

#[test]
fn event_drop() {
    check_one(
        "doc: drop by tag value",
        json!({"drop-processor": {"event-drop": {"tags": ["172.23.23.2*"]}}}),
        json!([srl_stats("172.23.23.2:57400", "mgmt0")]),
        json!([]),
    );
    check_one(
        "condition",
        json!({"p": {"event-drop": {"condition": ".tags.interface_name == \"mgmt0\""}}}),
        json!([
            srl_stats("172.23.23.2:57400", "mgmt0"),
            srl_stats("172.23.23.3:57400", "1/1/1")
        ]),
        json!([srl_stats("172.23.23.3:57400", "1/1/1")]),
    );
}

#[test]
fn event_duration_convert() {
    let ev = |v: serde_json::Value| {
        json!({"name": "default", "timestamp": 1607290633806716620i64,
               "tags": {"port_port-id": "A/1", "source": "172.17.0.100:57400", "subscription-name": "default"},
               "values": {"connection_uptime": v}})
    };
    let cfg = |keep: bool| json!({"convert-uptime": {"event-duration-convert": {"value-names": [".*_uptime$"], "keep": keep}}});
    check_one(
        "doc: 1w5s to seconds",
        cfg(false),
        ev(json!("1w5s")),
        ev(json!(604805)),
    );
    check_one(
        "keep adds _seconds",
        cfg(true),
        ev(json!("1d1h")),
        json!({"name": "default", "timestamp": 1607290633806716620i64,
               "tags": {"port_port-id": "A/1", "source": "172.17.0.100:57400", "subscription-name": "default"},
               "values": {"connection_uptime": "1d1h", "connection_uptime_seconds": 90000}}),
    );
}

#[test]
fn event_extract_tags() {
    let config = json!({"sample-processor": {"event-extract-tags": {
        "value-names": ["/([a-zA-Z0-9-_:]+)/(?P<group>[a-zA-Z0-9-_:]+)/([a-zA-Z0-9-_:]+)"]}}});
    let mut after = srl_stats("172.23.23.2:57400", "mgmt0");
    after["tags"]["group"] = json!("statistics");
    check_one(
        "doc: named group from value names",
        config,
        srl_stats("172.23.23.2:57400", "mgmt0"),
        after,
    );
    check_one(
        "existing tag kept without overwrite",
        json!({"p": {"event-extract-tags": {"tag-names": ["^(?P<source>x)$"]}}}),
        json!({"name": "s", "tags": {"x": "1", "source": "keep"}}),
        json!({"name": "s", "tags": {"x": "1", "source": "keep"}}),
    );
}

#[test]
fn event_group_by() {
    let tags = json!({"neighbor_peer-address": "2002::1:1:1:1", "network-instance_name": "default",
                      "source": "leaf1:57400", "subscription-name": "sub2"});
    let sent = json!({"bgp_neighbor_sent_messages_queue_depth": 0, "bgp_neighbor_sent_messages_total_messages": "423",
                      "bgp_neighbor_sent_messages_total_non_updates": "415", "bgp_neighbor_sent_messages_total_updates": "8"});
    let received = json!({"bgp_neighbor_received_messages_malformed_updates": "0", "bgp_neighbor_received_messages_queue_depth": 0,
                          "bgp_neighbor_received_messages_total_messages": "424",
                          "bgp_neighbor_received_messages_total_non_updates": "418",
                          "bgp_neighbor_received_messages_total_updates": "6"});
    let mut both = sent.as_object().unwrap().clone();
    both.extend(received.as_object().unwrap().clone());
    let ev = |values: &serde_json::Value| json!({"name": "sub2", "timestamp": 1615284691523204299i64, "tags": tags, "values": values});
    check_one(
        "doc: group by a single tag",
        json!({"group-by-source": {"event-group-by": {"tags": ["source"]}}}),
        json!([ev(&sent), ev(&received)]),
        json!([ev(&serde_json::Value::Object(both.clone()))]),
    );
    let q_tags = json!({"interface_name": "ethernet-1/1", "multicast-queue_queue-id": "5",
                        "source": "clab-ndk-srl1:57400", "subscription-name": "sub1"});
    let q = |values: serde_json::Value| json!({"name": "sub1", "timestamp": 1627997491187771616i64, "tags": q_tags, "values": values});
    check_one(
        "doc: group by multiple tags",
        json!({"group-by-queue-id": {"event-group-by": {"tags": ["source", "interface_name", "multicast-queue_queue-id"]}}}),
        json!([
            q(json!({"/interface/qos/output/multicast-queue/queue-depth/maximum-burst-size": "0"})),
            q(json!({"/interface/qos/output/multicast-queue/scheduling/peak-rate-bps": "0"}))
        ]),
        json!([q(json!({
            "/interface/qos/output/multicast-queue/queue-depth/maximum-burst-size": "0",
            "/interface/qos/output/multicast-queue/scheduling/peak-rate-bps": "0"
        }))]),
    );
    check_one(
        "events without the tags pass through first",
        json!({"p": {"event-group-by": {"tags": ["source"]}}}),
        json!([{"name": "a", "tags": {"source": "r1"}, "values": {"x": 1}},
               {"name": "b", "tags": {"other": "1"}, "values": {"y": 1}},
               {"name": "a", "tags": {"source": "r1"}, "values": {"z": 1}}]),
        json!([{"name": "b", "tags": {"other": "1"}, "values": {"y": 1}},
               {"name": "a", "tags": {"source": "r1"}, "values": {"x": 1, "z": 1}}]),
    );
}

#[test]
fn event_ieeefloat32() {
    let ev = |v: serde_json::Value| {
        json!({"name": "sub1", "timestamp": 1607678293684962443i64, "tags": {"source": "172.20.20.5:57400"},
               "values": {"components/component/power-supply/state/output-current": v}})
    };
    check_one(
        "doc: base64 float32",
        json!({"sample-processor": {"event-ieeefloat32": {"value-names": ["^components/component/power-supply/state/output-current$"]}}}),
        ev(json!("QEYAAA==")),
        ev(json!(3.09375)),
    );
    check_one(
        "condition false leaves the value",
        json!({"p": {"event-ieeefloat32": {"condition": ".name == \"other\"", "value-names": ["output-current$"]}}}),
        ev(json!("QEYAAA==")),
        ev(json!("QEYAAA==")),
    );
}

#[test]
fn event_jq() {
    let evs = json!([
        {"name": "sub1", "tags": {"tag1": "a", "tag2": "b", "tag3": "c"}, "values": {"counter1": 95, "counter2": 1, "value_name": "v1"}},
        {"name": "sub1", "tags": {"tag1": "a"}, "values": {"counter1": 50, "counter2": 2, "value_name": "v2"}},
        {"name": "sub2", "tags": {"tag1": "a"}, "values": {"counter1": 99, "counter2": 3, "value_name": "v3"}}
    ]);
    let cfg = |expr: &str| json!({"p": {"event-jq": {"expression": expr}}});
    let cases = [
        (
            "doc: select sub1 with counter1 > 90",
            cfg(".[] | select(.name==\"sub1\" and .values.counter1 > 90)"),
            json!([evs[0]]),
        ),
        (
            "doc: delete counter1",
            cfg(".[] | del(.values.counter1)"),
            json!([
                {"name": "sub1", "tags": {"tag1": "a", "tag2": "b", "tag3": "c"}, "values": {"counter2": 1, "value_name": "v1"}},
                {"name": "sub1", "tags": {"tag1": "a"}, "values": {"counter2": 2, "value_name": "v2"}},
                {"name": "sub2", "tags": {"tag1": "a"}, "values": {"counter2": 3, "value_name": "v3"}}
            ]),
        ),
        (
            "doc: delete counter1 and counter2",
            cfg(".[] | del(.values.[\"counter1\", \"counter2\"])"),
            json!([
                {"name": "sub1", "tags": {"tag1": "a", "tag2": "b", "tag3": "c"}, "values": {"value_name": "v1"}},
                {"name": "sub1", "tags": {"tag1": "a"}, "values": {"value_name": "v2"}},
                {"name": "sub2", "tags": {"tag1": "a"}, "values": {"value_name": "v3"}}
            ]),
        ),
        (
            "doc: delete tags tag1 and tag2",
            cfg(".[] | del(.tags.[\"tag1\", \"tag2\"])"),
            json!([
                {"name": "sub1", "tags": {"tag3": "c"}, "values": {"counter1": 95, "counter2": 1, "value_name": "v1"}},
                {"name": "sub1", "values": {"counter1": 50, "counter2": 2, "value_name": "v2"}},
                {"name": "sub2", "values": {"counter1": 99, "counter2": 3, "value_name": "v3"}}
            ]),
        ),
        (
            "doc: add a tag",
            cfg(".[] |= (.tags.my_new_tag = \"tag1\")"),
            json!([
                {"name": "sub1", "tags": {"tag1": "a", "tag2": "b", "tag3": "c", "my_new_tag": "tag1"}, "values": {"counter1": 95, "counter2": 1, "value_name": "v1"}},
                {"name": "sub1", "tags": {"tag1": "a", "my_new_tag": "tag1"}, "values": {"counter1": 50, "counter2": 2, "value_name": "v2"}},
                {"name": "sub2", "tags": {"tag1": "a", "my_new_tag": "tag1"}, "values": {"counter1": 99, "counter2": 3, "value_name": "v3"}}
            ]),
        ),
        (
            "doc: move a value to a tag",
            cfg(".[] |= (.tags.my_new_tag_name = .values.value_name)"),
            json!([
                {"name": "sub1", "tags": {"tag1": "a", "tag2": "b", "tag3": "c", "my_new_tag_name": "v1"}, "values": {"counter1": 95, "counter2": 1, "value_name": "v1"}},
                {"name": "sub1", "tags": {"tag1": "a", "my_new_tag_name": "v2"}, "values": {"counter1": 50, "counter2": 2, "value_name": "v2"}},
                {"name": "sub2", "tags": {"tag1": "a", "my_new_tag_name": "v3"}, "values": {"counter1": 99, "counter2": 3, "value_name": "v3"}}
            ]),
        ),
        (
            "condition: only sub2 goes through the expression",
            json!({"p": {"event-jq": {"condition": ".name == \"sub2\"", "expression": ".[] | del(.values)"}}}),
            json!([evs[0], evs[1], {"name": "sub2", "tags": {"tag1": "a"}}]),
        ),
    ];
    for (case, config, after) in cases {
        check_one(case, config, evs.clone(), after);
    }
}

#[test]
fn event_keep() {
    check_one(
        "doc: keep interface counters and two tags",
        json!({"keep-interface-counters": {"event-keep": {
            "value-names": ["^/interfaces/[^/]+/(in-octets|out-octets)$"],
            "tag-names": ["^(resource_id|source)$"]}}}),
        json!({"tags": {"resource_id": "leaf-1", "source": "192.0.2.1:57400", "subscription-name": "interfaces"},
               "values": {"/interfaces/ethernet-1/in-octets": 42, "/interfaces/ethernet-1/out-octets": 24, "/vendor/debug": "ignored"}}),
        json!({"tags": {"resource_id": "leaf-1", "source": "192.0.2.1:57400"},
               "values": {"/interfaces/ethernet-1/in-octets": 42, "/interfaces/ethernet-1/out-octets": 24}}),
    );
}

#[test]
fn event_merge() {
    let tags = json!({"neighbor_peer-address": "2002::1:1:1:1", "network-instance_name": "default",
                      "source": "leaf1:57400", "subscription-name": "sub2"});
    let ev = |ts: i64, values: serde_json::Value| json!({"name": "sub2", "timestamp": ts, "tags": tags, "values": values});
    let a = json!({"bgp_neighbor_sent_messages_queue_depth": 0, "bgp_neighbor_sent_messages_total_messages": "423"});
    let b = json!({"bgp_neighbor_received_messages_malformed_updates": "0", "bgp_neighbor_received_messages_total_messages": "424"});
    let ab = json!({"bgp_neighbor_sent_messages_queue_depth": 0, "bgp_neighbor_sent_messages_total_messages": "423",
                    "bgp_neighbor_received_messages_malformed_updates": "0", "bgp_neighbor_received_messages_total_messages": "424"});
    let t = 1615284691523204299i64;
    check_one(
        "doc: same timestamp merged",
        json!({"sample-processor": {"event-merge": {"always": false}}}),
        json!([ev(t, a.clone()), ev(t, b.clone())]),
        json!([ev(t, ab.clone())]),
    );
    check_one(
        "different timestamps kept apart",
        json!({"p": {"event-merge": {}}}),
        json!([ev(t, a.clone()), ev(t + 1, b.clone())]),
        json!([ev(t, a.clone()), ev(t + 1, b.clone())]),
    );
    check_one(
        "always: merged, latest timestamp",
        json!({"p": {"event-merge": {"always": true}}}),
        json!([ev(t, a), ev(t + 1, b)]),
        json!([ev(t + 1, ab)]),
    );
}

#[test]
fn event_override_ts() {
    let config = json!({"set-timestamp-processor": {"event-override-ts": {"precision": "ms"}}});
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let before = now_ms();
    let out = apply(
        &config,
        &["set-timestamp-processor"],
        json!([{"name": "a", "timestamp": 5}, {"name": "b"}]),
    );
    let after = now_ms();
    for e in &out {
        assert!(
            e.timestamp >= before && e.timestamp <= after,
            "doc: ms precision, got {}",
            e.timestamp
        );
    }
    let out = apply(
        &json!({"p": {"event-override-ts": {}}}),
        &["p"],
        json!({"name": "a"}),
    );
    assert!(out[0].timestamp > 1_000_000_000_000_000_000, "default ns");
}

#[test]
fn event_rate_limit() {
    let config = json!({"rate-limit-100pps": {"event-rate-limit": {"per-second": 100, "cache-size": 10000, "debug": true}}});
    let ms = 1_000_000i64;
    let base = 1_700_000_000_000_000_000i64;
    let ev = |t: i64, intf: &str| json!({"name": "s", "timestamp": base + t, "tags": {"interface_name": intf}});
    // 100/s: at most one event per 10 ms per tag set; the same timestamp as
    // the last one let through is not limited.
    check_one(
        "doc: 100 per second per tag set",
        config,
        json!([
            ev(0, "a"),
            ev(ms, "a"),
            ev(ms, "b"),
            ev(5 * ms, "a"),
            ev(10 * ms, "a"),
            ev(10 * ms, "a"),
            ev(15 * ms, "a"),
            ev(20 * ms, "a")
        ]),
        json!([
            ev(0, "a"),
            ev(ms, "b"),
            ev(10 * ms, "a"),
            ev(10 * ms, "a"),
            ev(20 * ms, "a")
        ]),
    );
}

#[test]
fn event_strings() {
    let short = json!({"carrier-transitions": "1", "in-error-packets": "0", "in-fcs-error-packets": "0",
                       "in-octets": "65382630", "in-unicast-packets": "107154", "out-error-packets": "0",
                       "out-octets": "64721394", "out-unicast-packets": "105876"});
    let ev = |values: serde_json::Value| {
        json!({"name": "default", "timestamp": 1607291271894072397i64,
               "tags": {"interface_name": "mgmt0", "source": "172.23.23.2:57400", "subscription-name": "default"},
               "values": values})
    };
    let replaced: serde_json::Map<String, serde_json::Value> = short
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.replace('-', "_"), v.clone()))
        .collect();
    let stats = srl_stats("172.23.23.2:57400", "mgmt0");
    let base_names = srl_stats_renamed("172.23.23.2:57400", "mgmt0", |k| {
        Some(k.trim_start_matches(P).to_string())
    });
    let mut upper = stats.clone();
    upper["tags"]["interface_name"] = json!("MGMT0");
    upper["tags"]["subscription-name"] = json!("DEFAULT");
    let split = srl_stats_renamed("172.23.23.2:57400", "mgmt0", |k| {
        Some(format!("statistics_{}", k.trim_start_matches(P)))
    });
    // gnmic's title casing (x/text cases) starts a word after '-', so
    // "carrier-transitions" → "Carrier-Transitions" → "Carrier_Transitions".
    // The page shows "Carrier_transitions", which gnmic does not produce.
    let titled = srl_stats_renamed("172.23.23.2:57400", "mgmt0", |k| {
        let base = k.trim_start_matches(P);
        let t: Vec<String> = base
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default()
            })
            .collect();
        Some(t.join("_"))
    });
    let cases = [
        (
            "doc: replace",
            json!({"sample-processor": {"event-strings": {"value-names": [".*"],
                "transforms": [{"replace": {"apply-on": "name", "old": "-", "new": "_"}}]}}}),
            ev(short.clone()),
            ev(serde_json::Value::Object(replaced)),
        ),
        (
            "doc: trim-prefix",
            json!({"sample-processor": {"event-strings": {"value-names": [".*"],
                "transforms": [{"trim-prefix": {"apply-on": "name", "prefix": P}}]}}}),
            stats.clone(),
            base_names.clone(),
        ),
        (
            "doc: to-upper on tag values",
            json!({"sample-processor": {"event-strings": {"tag-names": ["interface_name", "subscription-name"],
                "transforms": [{"to-upper": {"apply-on": "value"}}]}}}),
            stats.clone(),
            upper,
        ),
        (
            "doc: path-base",
            json!({"sample-processor": {"event-strings": {"value-names": [".*"],
                "transforms": [{"path-base": {"apply-on": "name"}}]}}}),
            stats.clone(),
            base_names,
        ),
        (
            // The page writes `on:` (gnmic ignores it) and ignore-first 1
            // (which keeps the module element); its result needs these.
            "doc: split (with apply-on and ignore-first 2)",
            json!({"sample-processor": {"event-strings": {"value-names": [".*"],
                "transforms": [{"split": {"apply-on": "name", "split-on": "/", "join-with": "_", "ignore-first": 2}}]}}}),
            stats.clone(),
            split,
        ),
        (
            "doc: split as written changes nothing in gnmic",
            json!({"sample-processor": {"event-strings": {"value-names": [".*"],
                "transforms": [{"split": {"on": "name", "split-on": "/", "join-with": "_", "ignore-first": 1}}]}}}),
            stats.clone(),
            stats.clone(),
        ),
        (
            "doc: multiple transforms (gnmic's title casing)",
            json!({"sample-processor": {"event-strings": {"value-names": [".*"], "transforms": [
                {"path-base": {"apply-on": "name"}},
                {"title": {"apply-on": "name"}},
                {"replace": {"apply-on": "name", "old": "-", "new": "_"}}
            ]}}}),
            stats.clone(),
            titled,
        ),
        (
            "keep leaves the old name",
            json!({"p": {"event-strings": {"value-names": ["^a-b$"],
                "transforms": [{"replace": {"apply-on": "name", "keep": true, "old": "-", "new": "_"}}]}}}),
            json!({"name": "x", "values": {"a-b": 1}}),
            json!({"name": "x", "values": {"a-b": 1, "a_b": 1}}),
        ),
        (
            "trim-suffix and to-lower on values",
            json!({"p": {"event-strings": {"value-names": ["state"], "transforms": [
                {"trim-suffix": {"apply-on": "value", "suffix": "_STATE"}},
                {"to-lower": {"apply-on": "value"}}
            ]}}}),
            json!({"name": "x", "values": {"oper-state": "UP_STATE", "n": 1}}),
            json!({"name": "x", "values": {"oper-state": "up", "n": 1}}),
        ),
    ];
    for (case, config, before, after) in cases {
        check_one(case, config, before, after);
    }
}

#[test]
fn event_time_epoch() {
    let ev = |v: serde_json::Value| {
        json!({"name": "default", "timestamp": 1607290633806716620i64,
               "tags": {"source": "172.17.0.100:57400", "subscription-name": "default"},
               "values": {"system/timestamp": v}})
    };
    let cfg = |precision: &str| {
        json!({"convert-timestamp": {"event-time-epoch": {"value-names": [".*timestamp", "lastSeen"],
            "format": "2006-01-02T15:04:05Z07:00", "precision": precision, "debug": true}}})
    };
    // The page's result (1743849000) is the value in seconds, shown under a
    // renamed key; gnmic keeps the key and honours the precision.
    check_one(
        "doc: RFC 3339 to epoch seconds",
        cfg("s"),
        ev(json!("2025-04-05T10:30:00Z")),
        ev(json!(1743849000)),
    );
    check_one(
        "doc config: ms precision",
        cfg("ms"),
        ev(json!("2025-04-05T10:30:00Z")),
        ev(json!(1743849000000i64)),
    );
    check_one(
        "unparsable stays",
        cfg("s"),
        ev(json!("yesterday")),
        ev(json!("yesterday")),
    );
}

#[test]
fn event_to_tag() {
    let i = "/srl_nokia-interfaces:interface/";
    let before = json!({"name": "default", "timestamp": 1607305284170936330i64,
        "tags": {"interface_name": "ethernet-1/1", "source": "172.23.23.2:57400", "subscription-name": "default"},
        "values": {format!("{i}admin-state"): "disable", format!("{i}ifindex"): 54,
                   format!("{i}last-change"): "2020-11-20T05:52:21.459Z",
                   format!("{i}oper-down-reason"): "port-admin-disabled", format!("{i}oper-state"): "down"}});
    let after = json!({"name": "default", "timestamp": 1607305284170936330i64,
        "tags": {"interface_name": "ethernet-1/1", "source": "172.23.23.2:57400", "subscription-name": "default",
                 format!("{i}admin-state"): "disable", format!("{i}oper-state"): "down"},
        "values": {format!("{i}ifindex"): 54, format!("{i}last-change"): "2020-11-20T05:52:21.459Z",
                   format!("{i}oper-down-reason"): "port-admin-disabled"}});
    check_one(
        "doc: values ending in -state become tags",
        json!({"sample-processor": {"event-to-tag": {"value-names": [".*-state$"]}}}),
        before.clone(),
        after,
    );
    check_one(
        "keep and non-string values",
        json!({"p": {"event-to-tag": {"value-names": ["ifindex$"], "keep": true}}}),
        json!({"name": "x", "values": {"ifindex": 54, "f": 1.5}}),
        json!({"name": "x", "tags": {"ifindex": "54"}, "values": {"ifindex": 54, "f": 1.5}}),
    );
}

#[test]
fn event_value_tag() {
    let tags =
        json!({"source": "leaf1:6030", "subscription-name": "sub1", "interface_name": "Ethernet1"});
    let mut tagged = tags.clone();
    tagged["description"] = json!("Uplink");
    let ev = |ts: i64, t: &serde_json::Value, values: serde_json::Value| json!({"name": "sub1", "timestamp": ts, "tags": t, "values": values});
    // gnmic also tags the event that carries the value (its own tags match);
    // the page leaves that one untagged, gnmic's tests and code do not.
    check_one(
        "doc: interface description",
        json!({"intf-description": {"event-value-tag": {"value-name": "/interfaces/interface/state/description",
                                                        "tag-name": "description", "consume": false}}}),
        json!([
            ev(
                1,
                &tags,
                json!({"/interfaces/interface/state/counters/in-octets": 100})
            ),
            ev(
                200,
                &tags,
                json!({"/interfaces/interface/state/counters/out-octets": 100})
            ),
            ev(
                200,
                &tags,
                json!({"/interfaces/interface/state/description": "Uplink"})
            )
        ]),
        json!([
            ev(
                1,
                &tagged,
                json!({"/interfaces/interface/state/counters/in-octets": 100})
            ),
            ev(
                200,
                &tagged,
                json!({"/interfaces/interface/state/counters/out-octets": 100})
            ),
            ev(
                200,
                &tagged,
                json!({"/interfaces/interface/state/description": "Uplink"})
            )
        ]),
    );
    let bgp = json!({"neighbor_peer-address": "2002::1:1:1:1", "network-instance_name": "default",
                     "source": "leaf1:57400", "subscription-name": "sub2"});
    let mut bgp_tagged = bgp.clone();
    bgp_tagged["neighbor_description"] = json!("PeerRouter");
    let t = 1615284691523204299i64;
    let b = |tags: &serde_json::Value, values: serde_json::Value| json!({"name": "sub2", "timestamp": t, "tags": tags, "values": values});
    let sent = json!({"bgp_neighbor_sent_messages_queue_depth": 0, "bgp_neighbor_sent_messages_total_messages": "423",
                      "bgp_neighbor_sent_messages_total_non_updates": "415", "bgp_neighbor_sent_messages_total_updates": "8"});
    check_one(
        "doc: bgp description consumed",
        json!({"bgp-description": {"event-value-tag": {"value-name": "neighbor_description", "consume": true}}}),
        json!([
            b(&bgp, sent.clone()),
            b(&bgp, json!({"neighbor_description": "PeerRouter"}))
        ]),
        json!([b(&bgp_tagged, sent), b(&bgp_tagged, json!({}))]),
    );
}

#[test]
fn event_value_tag_v2() {
    // No page in the docs; gnmic's code: like event-value-tag, but the
    // values are remembered across batches.
    let config = json!({"p": {"event-value-tag-v2": {"rules": [
        {"value-name": "/interfaces/interface/state/description", "tag-name": "description", "consume": true}]}}});
    let procs = gnomon_processors::Processors::from_config(&config).unwrap();
    let mut chain = procs.chain(&["p"]).unwrap();
    let mut first = common::events(&json!([
        {"name": "s", "tags": {"source": "r1", "interface_name": "e1"}, "values": {"/interfaces/interface/state/description": "Uplink"}}
    ]));
    chain.apply(&mut first);
    assert_eq!(
        first[0].tags.get("description").map(String::as_str),
        Some("Uplink")
    );
    assert!(first[0].values.is_empty());
    let mut later = common::events(&json!([
        {"name": "s", "tags": {"source": "r1", "interface_name": "e1", "subscription-name": "s"}, "values": {"in": 1}},
        {"name": "s", "tags": {"source": "r1", "interface_name": "e2"}, "values": {"in": 2}}
    ]));
    chain.apply(&mut later);
    assert_eq!(
        later[0].tags.get("description").map(String::as_str),
        Some("Uplink")
    );
    assert_eq!(later[1].tags.get("description"), None);
}

#[test]
fn event_write() {
    let dir = std::env::temp_dir().join(format!("gnomon-proc-write-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("file.log");
    let _ = std::fs::remove_file(&file);
    let config = json!({"write-processor": {"event-write": {
        "value-names": ["."], "dst": file.to_str().unwrap(), "separator": "\n####\n", "indent": "  "}}});
    let ev = json!({"name": "sub1", "timestamp": 1607582483868459381i64,
                    "tags": {"interface_name": "ethernet-1/1", "source": "172.20.20.5:57400", "subscription-name": "sub1"},
                    "values": {format!("{P}carrier-transitions"): "1"}});
    let out = apply(
        &config,
        &["write-processor"],
        json!([ev.clone(), ev.clone()]),
    );
    assert_eq!(out.len(), 2, "events pass on");
    let text = std::fs::read_to_string(&file).unwrap();
    let one = format!(
        "{{\n  \"name\": \"sub1\",\n  \"timestamp\": 1607582483868459381,\n  \"tags\": {{\n    \"interface_name\": \"ethernet-1/1\",\n    \"source\": \"172.20.20.5:57400\",\n    \"subscription-name\": \"sub1\"\n  }},\n  \"values\": {{\n    \"{P}carrier-transitions\": \"1\"\n  }}\n}}\n####\n"
    );
    assert_eq!(
        text,
        format!("{one}{one}"),
        "doc: indented events separated by ####"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn intro_output_chain() {
    // intro.md: convert everything to int, delete subscription-name tags,
    // delete out-unicast-packets values; applied in list order.
    let config = json!({
        "proc-convert-integer": {"event-convert": {"value-names": [".*"], "type": "int"}},
        "proc-delete-tag-name": {"event-delete": {"tag-names": ["^subscription-name"]}},
        "proc-delete-value-name": {"event-delete": {"value-names": [".*out-unicast-packets"]}}
    });
    let before = srl_stats("172.23.23.2:57400", "mgmt0");
    let mut after = srl_stats("172.23.23.2:57400", "mgmt0");
    after["tags"]
        .as_object_mut()
        .unwrap()
        .remove("subscription-name");
    let values = after["values"].as_object().unwrap().clone();
    let mut converted = serde_json::Map::new();
    for (k, v) in values {
        if k.ends_with("out-unicast-packets") {
            continue;
        }
        converted.insert(k, json!(v.as_str().unwrap().parse::<i64>().unwrap()));
    }
    after["values"] = serde_json::Value::Object(converted);
    check(
        "intro: three processors in order",
        config,
        &[
            "proc-convert-integer",
            "proc-delete-tag-name",
            "proc-delete-value-name",
        ],
        before,
        after,
    );
}

#[test]
fn value_tag_v2_is_bounded() {
    // gnomon's cap: with cache-size 2, the oldest remembered value goes.
    let config =
        json!({"p": {"event-value-tag-v2": {"cache-size": 2, "rules": [{"value-name": "desc"}]}}});
    let procs = gnomon_processors::Processors::from_config(&config).unwrap();
    let mut chain = procs.chain(&["p"]).unwrap();
    for i in 1..=3 {
        let mut b = common::events(
            &json!([{"name": "s", "tags": {"if": format!("e{i}")}, "values": {"desc": format!("d{i}")}}]),
        );
        chain.apply(&mut b);
    }
    let mut later = common::events(&json!([
        {"name": "s", "tags": {"if": "e1"}, "values": {"x": 1}},
        {"name": "s", "tags": {"if": "e3"}, "values": {"x": 1}}
    ]));
    chain.apply(&mut later);
    assert_eq!(later[0].tags.get("desc"), None, "evicted");
    assert_eq!(later[1].tags.get("desc").map(String::as_str), Some("d3"));
}
