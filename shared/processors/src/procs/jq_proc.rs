//! event-jq: a jq expression over the batch (as a JSON array of events).

use std::sync::Arc;

use jaq_json::Val;

use crate::build::{pure, Build, Pure};
use crate::config::Fields;
use crate::error::ProcessorError;
use crate::jq::{event_to_val, val_to_event, Jq};
use crate::record::Record;

/// The events whose `condition` holds (default: all) are passed to
/// `expression` as one array; its outputs (event objects, or arrays of
/// them) replace them. Events the condition rejects pass unchanged, first.
struct JqProc {
    processor: String,
    condition: Option<Jq>,
    expression: Jq,
}

pub(crate) fn jq(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    let condition = match f.string("condition")? {
        Some(c) if !c.trim().is_empty() => {
            Some(Jq::compile(&c).map_err(|e| f.err_str("condition", &c, e))?)
        }
        _ => None,
    };
    let expr = f
        .string("expression")?
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| ".".into());
    let expression = Jq::compile(&expr).map_err(|e| f.err_str("expression", &expr, e))?;
    Ok(pure(JqProc {
        processor: f.processor.to_string(),
        condition,
        expression,
    }))
}

impl Pure for JqProc {
    fn apply(&self, events: &mut Vec<Record>) {
        let input = std::mem::take(events);
        let mut selected = Vec::new();
        for e in input {
            let v = event_to_val(&e);
            let ok = match &self.condition {
                None => Ok(true),
                Some(c) => c.check_val(v.clone()),
            };
            match ok {
                Ok(true) => selected.push(v),
                Ok(false) => events.push(e),
                Err(err) => tracing::warn!(
                    processor = self.processor.as_str(),
                    error = err.as_str(),
                    "event-jq: condition failed; event dropped"
                ),
            }
        }
        if selected.is_empty() {
            return;
        }
        let outputs = match self.expression.run(selected.into_iter().collect::<Val>()) {
            Ok(o) => o,
            Err(err) => {
                // gnmic drops the whole batch when the expression fails.
                tracing::warn!(
                    processor = self.processor.as_str(),
                    error = err.as_str(),
                    "event-jq: expression failed; batch dropped"
                );
                events.clear();
                return;
            }
        };
        for out in outputs {
            let items: Vec<&Val> = match &out {
                Val::Arr(items) => items.iter().collect(),
                other => vec![other],
            };
            for item in items {
                match val_to_event(item) {
                    Ok(e) => events.push(e),
                    Err(err) => {
                        tracing::warn!(
                            processor = self.processor.as_str(),
                            error = err.as_str(),
                            "event-jq: output is not an event"
                        );
                    }
                }
            }
        }
    }
}
