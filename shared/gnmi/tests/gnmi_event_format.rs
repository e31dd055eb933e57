//! End-to-end checks of the event format: realistic notifications give
//! exactly the JSON gnmic would publish, and that JSON decodes back.

use std::collections::BTreeMap;

use gnomon_gnmi::event::{
    event_views_from_json, events_from_json, events_to_json, notification_to_events,
    notification_to_json, response_to_events, Event, EventMeta, EventView,
};
use gnomon_gnmi::path::parse_path;
use gnomon_gnmi::proto::gnmi::{
    subscribe_response::Response, typed_value::Value as V, Notification, Path, PathElem,
    SubscribeResponse, TypedValue, Update,
};
use proptest::prelude::*;

fn update(path: &str, v: V) -> Update {
    Update {
        path: Some(parse_path(path).unwrap()),
        val: Some(TypedValue { value: Some(v) }),
        ..Default::default()
    }
}

fn meta() -> EventMeta {
    EventMeta {
        source: "10.0.0.1:57400".into(),
        subscription_name: "port-stats".into(),
        subscription_target: None,
        extra_tags: BTreeMap::from([("site".to_string(), "lab1".to_string())]),
    }
}

#[test]
fn interface_counters_notification_gives_exact_gnmic_json() {
    let mut prefix = parse_path("/interfaces/interface[name=ethernet-1/1]/state/counters").unwrap();
    prefix.target = "leaf1".into();
    let resp = SubscribeResponse {
        response: Some(Response::Update(Notification {
            timestamp: 1_700_000_000_123_456_789,
            prefix: Some(prefix),
            update: vec![
                update("in-octets", V::UintVal(18_446_744_073_709_551_615)),
                update("out-octets", V::UintVal(654_321)),
                update("in-errors", V::UintVal(0)),
            ],
            delete: vec![],
            atomic: false,
        })),
        ..Default::default()
    };
    let events = response_to_events(&resp, &meta());
    let json = String::from_utf8(events_to_json(&events)).unwrap();
    let tags = r#""tags":{"interface_name":"ethernet-1/1","site":"lab1","source":"10.0.0.1:57400","subscription-name":"port-stats","target":"leaf1"}"#;
    let expected = format!(
        concat!(
            "[",
            r#"{{"name":"port-stats","timestamp":1700000000123456789,{tags},"values":{{"/interfaces/interface/state/counters/in-octets":18446744073709551615}}}},"#,
            r#"{{"name":"port-stats","timestamp":1700000000123456789,{tags},"values":{{"/interfaces/interface/state/counters/out-octets":654321}}}},"#,
            r#"{{"name":"port-stats","timestamp":1700000000123456789,{tags},"values":{{"/interfaces/interface/state/counters/in-errors":0}}}}"#,
            "]"
        ),
        tags = tags
    );
    assert_eq!(json, expected);
    assert_eq!(events_from_json(json.as_bytes()).unwrap(), events);
}

#[test]
fn json_ietf_subtree_with_delete_gives_exact_gnmic_json() {
    let counters = br#"{"openconfig-interfaces:in-octets":"123","out-octets":"456","carrier-transitions":[null]}"#;
    let resp = SubscribeResponse {
        response: Some(Response::Update(Notification {
            timestamp: 5,
            prefix: Some(parse_path("openconfig:/interfaces/interface[name=Ethernet1]").unwrap()),
            update: vec![update("state/counters", V::JsonIetfVal(counters.to_vec()))],
            delete: vec![parse_path("subinterfaces/subinterface[index=2]").unwrap()],
            atomic: false,
        })),
        ..Default::default()
    };
    let json = String::from_utf8(events_to_json(&response_to_events(&resp, &meta()))).unwrap();
    let expected = concat!(
        "[",
        r#"{"name":"port-stats","timestamp":5,"tags":{"interface_name":"Ethernet1","site":"lab1","source":"10.0.0.1:57400","subscription-name":"port-stats"},"#,
        r#""values":{"openconfig:/interfaces/interface/state/counters/carrier-transitions":true,"#,
        r#""openconfig:/interfaces/interface/state/counters/openconfig-interfaces:in-octets":"123","#,
        r#""openconfig:/interfaces/interface/state/counters/out-octets":"456"}},"#,
        r#"{"name":"port-stats","timestamp":5,"tags":{"interface_name":"Ethernet1","site":"lab1","source":"10.0.0.1:57400","subinterface_index":"2","subscription-name":"port-stats"},"#,
        r#""deletes":["openconfig:/interfaces/interface/subinterfaces/subinterface"]}"#,
        "]"
    );
    assert_eq!(json, expected);
}

#[test]
fn sync_response_encodes_to_empty_array() {
    let sync = SubscribeResponse {
        response: Some(Response::SyncResponse(true)),
        ..Default::default()
    };
    let events = response_to_events(&sync, &meta());
    assert!(events.is_empty());
    assert_eq!(events_to_json(&events), b"[]");
}

fn json_scalar() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        any::<u64>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
        // Binary-exact fractions: serde_json's default float parsing may be
        // off by one ulp for arbitrary doubles.
        (-1_000_000i64..1_000_000).prop_map(|i| serde_json::Value::from(i as f64 / 4.0)),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    (
        "[a-z-]{0,8}",
        any::<i64>(),
        prop::collection::btree_map("[a-z_/-]{1,10}", "\\PC{0,10}", 0..4),
        prop::collection::btree_map("/[a-z/:.-]{1,20}", json_scalar(), 0..4),
        prop::collection::vec("/[a-z/]{1,10}", 0..2),
    )
        .prop_map(|(name, timestamp, tags, values, deletes)| Event {
            name,
            timestamp,
            tags,
            values,
            deletes,
        })
}

proptest! {
    #[test]
    fn events_survive_a_json_round_trip(events in prop::collection::vec(event(), 0..4)) {
        let bytes = events_to_json(&events);
        prop_assert_eq!(events_from_json(&bytes).unwrap(), events);
    }
}

fn small_path() -> impl Strategy<Value = Path> {
    prop::collection::vec(
        (
            prop_oneof!["[a-z]{1,4}", "[a-z]{1,3}:[a-z]{1,4}", Just(String::new())],
            prop::collection::hash_map("[a-z]{1,3}", "[a-z0-9/\" ]{0,4}", 0..2),
        ),
        0..4,
    )
    .prop_flat_map(|elems| {
        (
            prop_oneof![Just(String::new()), "[a-z]{1,3}"],
            prop_oneof![3 => Just(String::new()), 1 => "[a-z]{1,3}"],
            Just(elems),
        )
    })
    .prop_map(|(origin, target, elems)| Path {
        origin,
        target,
        elem: elems
            .into_iter()
            .map(|(name, key)| PathElem { name, key })
            .collect(),
        ..Default::default()
    })
}

/// Doubles whose shortest decimal form serde_json's default (fast) float
/// parser reads back exactly, plus the non-finite ones; arbitrary doubles
/// can come back one ulp off (see the `float_roundtrip` feature).
fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<i32>().prop_map(|i| f64::from(i) / 8.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
    ]
}

fn typed_value() -> impl Strategy<Value = Option<TypedValue>> {
    let kind = prop_oneof![
        any::<u64>().prop_map(V::UintVal),
        any::<i64>().prop_map(V::IntVal),
        any::<bool>().prop_map(V::BoolVal),
        "\\PC{0,6}".prop_map(V::StringVal),
        double().prop_map(V::DoubleVal),
        prop::collection::vec(any::<u8>(), 0..4).prop_map(V::BytesVal),
        prop_oneof![
            Just(r#"{"a":{"b":[1,null,{"c":"d"}]},"e":[null]}"#),
            Just("[null]"),
            Just("null"),
            Just("\"12\""),
            Just("{oops"),
            Just(""),
        ]
        .prop_map(|s| V::JsonIetfVal(s.as_bytes().to_vec())),
    ];
    prop_oneof![
        1 => Just(None),
        8 => kind.prop_map(|v| Some(TypedValue { value: Some(v) })),
    ]
}

fn notification() -> impl Strategy<Value = Notification> {
    (
        any::<i64>(),
        prop::option::of(small_path()),
        prop::collection::vec((prop::option::of(small_path()), typed_value()), 0..5),
        prop::collection::vec(small_path(), 0..3),
    )
        .prop_map(|(timestamp, prefix, updates, delete)| Notification {
            timestamp,
            prefix,
            update: updates
                .into_iter()
                .map(|(path, val)| Update {
                    path,
                    val,
                    ..Default::default()
                })
                .collect(),
            delete,
            atomic: false,
        })
}

fn event_meta() -> impl Strategy<Value = EventMeta> {
    (
        "[a-z0-9.:]{0,6}",
        "[a-z -]{0,6}",
        prop::option::of("[a-z]{0,3}"),
        prop::collection::btree_map("[a-z_]{1,5}", "[a-z]{0,3}", 0..3),
    )
        .prop_map(
            |(source, subscription_name, subscription_target, extra_tags)| EventMeta {
                source,
                subscription_name,
                subscription_target,
                extra_tags,
            },
        )
}

proptest! {
    #[test]
    fn direct_encoding_matches_for_any_double(d in any::<f64>()) {
        let n = Notification {
            update: vec![update("/x", V::DoubleVal(d))],
            ..Default::default()
        };
        let meta = EventMeta::default();
        let direct = notification_to_json(&n, &meta).unwrap();
        prop_assert_eq!(direct, events_to_json(&notification_to_events(&n, &meta)));
    }

    #[test]
    fn direct_encoding_matches_built_events_and_decodes_back(
        n in notification(),
        meta in event_meta(),
    ) {
        let events = notification_to_events(&n, &meta);
        let via_events = events_to_json(&events);
        match notification_to_json(&n, &meta) {
            None => prop_assert!(events.is_empty()),
            Some(direct) => prop_assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(via_events.clone()).unwrap()
            ),
        }
        prop_assert_eq!(events_from_json(&via_events).unwrap(), events.clone());
        let views: Vec<Event> = event_views_from_json(&via_events)
            .unwrap()
            .into_iter()
            .map(EventView::into_event)
            .collect();
        prop_assert_eq!(views, events);
    }
}
