//! What arrives over NATS, in both formats, on every decoder that reads it:
//! * `event` JSON: the shared owned and zero-copy decoders and the exporter's wire decoder,
//!   then the exporter's Prometheus naming of each decoded event and, for one
//!   notification's events read as plain events, the learnt shapes against the general path;
//! * `proto`: prost decoding of `gnmi.SubscribeResponse`, the shared event conversion (and
//!   its plain shortcuts, from the decoded notification and straight from the wire, which
//!   must give the same events), the exporter's proto path and the
//!   collector's raw top-level scan.
//!
//! None may panic. Cheap cross-checks: owned and zero-copy JSON decoders agree, the
//! exporter's scanner and serde_json decode the same events (or fail alike), decoded
//! events survive an encode/decode round trip, the direct response→JSON encoder matches
//! encoding the converted events, and every series the exporter would expose is valid
//! Prometheus text.
#![no_main]

use bytes::Bytes;
use gnomon_collector::codec::RawResponse;
use gnomon_exporter::naming::{NamingOptions, SampleValue, SeriesBuilder};
use gnomon_exporter::output::{plain_runs, PrometheusOutput};
use gnomon_exporter::wire::{
    decode_events, decode_events_without_scanner, decode_proto, meta_from_subject, WireEvent,
};
use gnomon_gnmi::event::{
    event_views_from_json, events_from_json, events_to_json, plain_events, plain_events_from_wire, response_to_events,
    response_to_json, Event, EventMeta, PlainEvents,
};
use gnomon_gnmi::proto::gnmi::{subscribe_response::Response, SubscribeResponse};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    json_payload(data);
    proto_payload(data);
});

fn json_payload(data: &[u8]) {
    let owned = events_from_json(data);
    if let Ok(events) = &owned {
        let encoded = events_to_json(events);
        let again = events_from_json(&encoded).expect("re-decoding encoded events failed");
        assert_eq!(again.len(), events.len());
        for (after, before) in again.iter().zip(events) {
            assert_same_event(after, before);
        }
    }
    if let (Ok(views), Ok(events)) = (event_views_from_json(data), &owned) {
        let from_views: Vec<_> = views.into_iter().map(|v| v.into_event()).collect();
        assert_eq!(&from_views, events, "zero-copy and owned decoders disagree");
    }
    let decoded = decode_events(data);
    match (&decoded, decode_events_without_scanner(data)) {
        (Ok(scanned), Ok(serde)) => assert_eq!(scanned, &serde, "scanner and serde_json disagree"),
        (Err(scanned), Err(serde)) => assert_eq!(scanned.to_string(), serde.to_string()),
        (scanned, serde) => panic!("scanner and serde_json disagree: {scanned:?} / {serde:?}"),
    }
    if let Ok(events) = decoded {
        for options in naming_variants() {
            expose(options, &events);
        }
        // One notification's events, read as plain events, store alike through learnt shapes.
        if let Some((plain, samples)) = gnomon_exporter::wire::plain_events(&events) {
            let values: usize = events.iter().map(|e| e.values.len()).sum();
            assert_eq!(samples.len(), values, "plain events lost or added a value");
            assert_eq!(plain.entries().len(), values);
            learnt_shape_stores_the_same(&plain);
        }
    }
}

/// Events equal up to float parsing: serde_json (without `float_roundtrip`) may read a
/// printed float back one ULP off, so floats compare within a relative 1e-14.
fn assert_same_event(after: &Event, before: &Event) {
    assert_eq!(after.name, before.name);
    assert_eq!(after.timestamp, before.timestamp);
    assert_eq!(after.tags, before.tags);
    assert_eq!(after.deletes, before.deletes);
    assert!(
        after.values.len() == before.values.len()
            && after
                .values
                .iter()
                .zip(&before.values)
                .all(|((ka, va), (kb, vb))| ka == kb && same_json(va, vb)),
        "values changed in an encode/decode round trip: {:?} vs {:?}",
        after.values,
        before.values
    );
}

fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= 1e-14 * x.abs().max(y.abs()),
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same_json(vx, vy))
        }
        _ => a == b,
    }
}

fn proto_payload(data: &[u8]) {
    let meta = EventMeta::new("router1", "ifcounters");
    // What the wire reader takes, prost reads as the same plain notification.
    if let Some(wire) = plain_events_from_wire(data, &meta) {
        let response = SubscribeResponse::decode(data).expect("prost reads what the wire reader took");
        let Some(Response::Update(notification)) = &response.response else {
            panic!("the wire reader took a response that is not a notification");
        };
        let plain = plain_events(notification, &meta).expect("prost's notification is plain too");
        assert_eq!(wire.events(), plain.events(), "the wire reader's events differ from prost's");
        learnt_shape_stores_the_same(&wire);
    }
    if let Ok(response) = SubscribeResponse::decode(data) {
        let events = response_to_events(&response, &meta);
        if let Some(Response::Update(notification)) = &response.response {
            if let Some(plain) = plain_events(notification, &meta) {
                assert_eq!(
                    plain.events(),
                    events,
                    "plain events differ from the general conversion"
                );
            }
        }
        match response_to_json(&response, &meta) {
            Some(json) => assert_eq!(
                json,
                events_to_json(&events),
                "direct JSON encoding differs from encoding the events"
            ),
            None => assert!(events.is_empty(), "events dropped by the direct encoder"),
        }
    }
    let subject_meta = meta_from_subject("telemetry.router-1.ifcounters");
    if let Ok(events) = decode_proto(data, &subject_meta) {
        let views: Vec<WireEvent<'_>> = events.iter().map(WireEvent::borrowed).collect();
        expose(NamingOptions::default(), &views);
    }
    if let Ok(raw) = RawResponse::scan(Bytes::copy_from_slice(data)) {
        let _ = raw.update_count();
        let _ = raw.decoded();
    }
}

/// The notification stored three times through an output's learnt shapes (the third time
/// through the locations learnt from the second) and three times the general way: the
/// same outcomes and the same exposition.
fn learnt_shape_stores_the_same(plain: &PlainEvents<'_>) {
    let config = || serde_json::from_value(serde_json::json!({})).expect("default config");
    let (learning, general) = (
        PrometheusOutput::new("learning", config()),
        PrometheusOutput::new("general", config()),
    );
    let samples: Vec<(&str, SampleValue<'_>)> = plain
        .entries()
        .iter()
        .map(|entry| (plain.key(entry), SampleValue::from(entry.value)))
        .collect();
    for round in 0..3 {
        let learnt = learning.ingest_plain(plain, &samples);
        let runs = plain_runs(plain, &samples);
        let general_counts = general.ingest_runs(plain.name, plain.timestamp, runs);
        assert_eq!(learnt, general_counts, "round {round}: a learnt shape stores otherwise");
    }
    assert_eq!(learning.render(), general.render(), "a learnt shape exposes otherwise");
}

fn naming_variants() -> [NamingOptions; 2] {
    [
        NamingOptions::default(),
        NamingOptions {
            metric_prefix: "gnmic".to_string(),
            append_subscription_name: true,
            strings_as_labels: true,
        },
    ]
}

/// Runs the exporter's naming over `events` (tags and values sorted by key, as the exporter
/// does) and checks every series text.
fn expose(options: NamingOptions, events: &[WireEvent<'_>]) {
    let mut builder = SeriesBuilder::new(options);
    for event in events {
        let mut tags: Vec<(&str, &str)> = event
            .tags
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
            .collect();
        tags.sort_by(|a, b| a.0.cmp(b.0));
        let mut values: Vec<(&str, SampleValue<'_>)> = event
            .values
            .iter()
            .map(|(k, v)| (k.as_ref(), v.clone()))
            .collect();
        values.sort_by(|a, b| a.0.cmp(b.0));
        builder.start_event(tags.into_iter(), &values);
        for (key, value) in &values {
            if let Some(series) = builder.series(&event.name, key, value) {
                check_series(series.text, series.name_len);
            }
        }
    }
}

fn is_name(bytes: &[u8]) -> bool {
    match bytes.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        }
        None => false,
    }
}

/// `name` or `name{label="value",...}` with valid names, escaped values, unique labels.
fn check_series(text: &[u8], name_len: usize) {
    let shown = String::from_utf8_lossy(text);
    assert!(
        std::str::from_utf8(text).is_ok(),
        "series is not UTF-8: {shown}"
    );
    let (name, labels) = text.split_at(name_len);
    assert!(is_name(name), "bad metric name in {shown}");
    if labels.is_empty() {
        return;
    }
    assert!(
        labels.first() == Some(&b'{') && labels.last() == Some(&b'}'),
        "bad label block in {shown}"
    );
    let mut rest = &labels[1..labels.len() - 1];
    let mut seen: Vec<&[u8]> = Vec::new();
    loop {
        let eq = rest
            .iter()
            .position(|&b| b == b'=')
            .unwrap_or_else(|| panic!("label without '=' in {shown}"));
        let label = &rest[..eq];
        assert!(is_name(label), "bad label name in {shown}");
        assert!(!seen.contains(&label), "duplicate label in {shown}");
        seen.push(label);
        rest = &rest[eq + 1..];
        assert_eq!(rest.first(), Some(&b'"'), "unquoted label value in {shown}");
        let mut i = 1;
        loop {
            match rest.get(i) {
                Some(b'\\') => {
                    assert!(
                        matches!(rest.get(i + 1), Some(b'\\' | b'"' | b'n')),
                        "bad escape in {shown}"
                    );
                    i += 2;
                }
                Some(b'"') => break,
                Some(b'\n') => panic!("raw newline in label value of {shown}"),
                Some(_) => i += 1,
                None => panic!("unterminated label value in {shown}"),
            }
        }
        rest = &rest[i + 1..];
        match rest.split_first() {
            None => break,
            Some((b',', after)) => rest = after,
            Some(_) => panic!("junk after label value in {shown}"),
        }
    }
}
