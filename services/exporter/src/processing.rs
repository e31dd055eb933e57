//! gnmic's event processors in the exporter: conversions between the decoded messages and
//! the processors' [`Record`]s, and the two places gnmic applies them.
//!
//! * The NATS input applies its `event-processors` to the events of each message after
//!   decoding, before handing them to its outputs.
//! * The Prometheus output applies its own before turning events into series (at ingest,
//!   never at scrape). gnmic's Prometheus output receives an input's events one at a time
//!   (`WriteEvent`), so its processors see one event per batch for event-format messages
//!   ([`Batching::PerEvent`]); proto messages reach it as whole notifications
//!   ([`Batching::Message`]).
//!
//! Numbers in event JSON become floats, as Go's `encoding/json` makes them in gnmic's input
//! (so `fmt.Sprint` renderings and conversions match gnmic's). The collector's
//! `gnomon_target_up` status events are gnomon's own and never go through processors.
//! Nothing here runs for an input or output without processors.

use crate::naming::SampleValue;
use crate::wire::WireEvent;
use gnomon_processors::{Chain, FieldMap, LiveChain, Record, Str, Val};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

/// How events reach an output's processors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batching {
    /// One event per batch (event-format messages, as gnmic's `WriteEvent`).
    PerEvent,
    /// The events of one message per batch (proto messages: one notification).
    Message,
}

/// A chain owned by one input or output, shared by its workers (state per output, as
/// gnmic keeps it).
pub struct SharedChain(LiveChain);

impl SharedChain {
    /// `None` for an empty list: no processors, nothing to pay.
    pub fn new(chain: Chain) -> Option<Self> {
        (!chain.is_empty()).then(|| Self(Arc::new(Mutex::new(chain))))
    }

    /// The chain as a SIGHUP rebuilds it (see `gnomon_processors::ChainSet`).
    pub fn live(&self) -> &LiveChain {
        &self.0
    }

    /// Applies the chain to `records` in batches of `batching`.
    pub fn apply(&self, records: &mut Vec<Record>, batching: Batching) {
        // A panic in a processor leaves plain data behind; keep going.
        let mut chain = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match batching {
            Batching::Message => chain.apply_records(records),
            Batching::PerEvent => {
                let mut out = Vec::with_capacity(records.len());
                let mut one = Vec::with_capacity(1);
                for record in records.drain(..) {
                    one.push(record);
                    chain.apply_records(&mut one);
                    out.append(&mut one);
                }
                *records = out;
            }
        }
    }

    /// The processor names, in order (for logs).
    pub fn names(&self) -> Vec<String> {
        let chain = self.0.lock().unwrap_or_else(|p| p.into_inner());
        chain.names().map(str::to_string).collect()
    }
}

impl std::fmt::Debug for SharedChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedChain").field(&self.names()).finish()
    }
}

/// A decoded event as a record (strings copied; ≤ 24 bytes stay inline). A value that is
/// not a number, bool or string (array, object, null) becomes JSON `null`: callers that
/// need it exact use [`records_of_message`].
pub fn record_from_wire(event: &WireEvent<'_>) -> Record {
    Record {
        name: Str::from(event.name.as_ref()),
        timestamp: event.timestamp,
        tags: FieldMap::from_pairs(
            event
                .tags
                .iter()
                .map(|(k, v)| (Str::from(k.as_ref()), Str::from(v.as_ref()))),
        ),
        values: FieldMap::from_pairs(
            event
                .values
                .iter()
                .map(|(k, v)| (Str::from(k.as_ref()), sample_to_val(v))),
        ),
        deletes: event
            .deletes
            .iter()
            .map(|d| Str::from(d.as_ref()))
            .collect(),
    }
}

fn sample_to_val(value: &SampleValue<'_>) -> Val {
    match value {
        SampleValue::Number(n) => Val::Float(*n),
        SampleValue::Bool(b) => Val::Bool(*b),
        SampleValue::Text(t) => Val::Str(Str::from(t.as_ref())),
        SampleValue::Other => Val::Json(Box::new(serde_json::Value::Null)),
    }
}

/// The records of an event-format message already decoded into `events`: converted from
/// them, or, when a value is an array or object (which the decoded form does not keep),
/// decoded again from `payload` in full. Numbers are floats either way (gnmic's input).
pub fn records_of_message(payload: &[u8], events: &[WireEvent<'_>]) -> Vec<Record> {
    let lossy = events.iter().any(|e| {
        e.values
            .iter()
            .any(|(_, v)| matches!(v, SampleValue::Other))
    });
    if lossy {
        if let Ok(full) = gnomon_gnmi::event::events_from_json(payload) {
            return full
                .into_iter()
                .map(|e| {
                    let mut record = Record::from(e);
                    record.numbers_as_floats();
                    record
                })
                .collect();
        }
    }
    events.iter().map(record_from_wire).collect()
}

/// A record's value as the naming code reads it.
pub fn val_to_sample(value: &Val) -> SampleValue<'_> {
    match value {
        Val::Bool(b) => SampleValue::Bool(*b),
        Val::Int(i) => SampleValue::Number(*i as f64),
        Val::Uint(u) => SampleValue::Number(*u as f64),
        Val::Float(f) => SampleValue::Number(*f),
        Val::Str(s) => SampleValue::Text(Cow::Borrowed(s.as_str())),
        Val::Json(_) => SampleValue::Other,
    }
}

/// A borrowed view of a record in the decoded form (rare paths: target status).
pub fn wire_view(record: &Record) -> WireEvent<'_> {
    WireEvent {
        name: Cow::Borrowed(record.name.as_str()),
        timestamp: record.timestamp,
        tags: record
            .tags
            .iter()
            .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
            .collect(),
        values: record
            .values
            .iter()
            .map(|(k, v)| (Cow::Borrowed(k.as_str()), val_to_sample(v)))
            .collect(),
        deletes: record
            .deletes
            .iter()
            .map(|d| Cow::Borrowed(d.as_str()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::decode_events;

    #[test]
    fn decoded_events_become_records_with_gnmic_input_numbers() {
        let payload = br#"[{"name":"s","timestamp":7,"tags":{"b":"2","a":"1"},
            "values":{"/x":"UP","/n":5,"/f":1.5,"/t":true},"deletes":["/d"]}]"#;
        let events = decode_events(payload).unwrap();
        let records = records_of_message(payload, &events);
        let r = &records[0];
        assert_eq!(r.name, "s");
        assert_eq!(r.timestamp, 7);
        assert_eq!(r.tag("a"), Some("1"));
        assert_eq!(r.values.get("/n"), Some(&Val::Float(5.0)));
        assert_eq!(r.values.get("/x"), Some(&Val::Str("UP".into())));
        assert_eq!(r.values.get("/t"), Some(&Val::Bool(true)));
        assert_eq!(r.deletes, ["/d"]);
        assert_eq!(wire_view(r), events[0]);
    }

    #[test]
    fn arrays_are_kept_by_decoding_again() {
        let payload = br#"[{"name":"s","values":{"/list":[1,"a"],"/n":2}}]"#;
        let events = decode_events(payload).unwrap();
        let records = records_of_message(payload, &events);
        assert_eq!(
            records[0].values.get("/list"),
            Some(&Val::Json(Box::new(serde_json::json!([1, "a"]))))
        );
        assert_eq!(records[0].values.get("/n"), Some(&Val::Float(2.0)));
    }
}
