//! event-combine: other processors run in sequence, each on the events its
//! condition selects.

use std::sync::Arc;

use serde_json::Value;

use crate::build::{Build, Resolve};
use crate::chain::{Apply, Step};
use crate::config::Fields;
use crate::error::ProcessorError;
use crate::record::Record;
use crate::select::Condition;

struct CombineSpec {
    processor: String,
    steps: Vec<(String, Option<Arc<Condition>>)>,
}

pub(crate) fn combine(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    let Some(raw) = f.raw("processors") else {
        return Err(f.err(
            "processors",
            &Value::Null,
            "missing; expected a list of {name, condition}",
        ));
    };
    let Value::Array(items) = raw else {
        return Err(f.err("processors", raw, "expected a list of {name, condition}"));
    };
    if items.is_empty() {
        return Err(f.err("processors", raw, "expected at least one processor"));
    }
    let mut steps = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Object(m) = item else {
            return Err(f.err(
                &format!("processors[{i}]"),
                item,
                "expected a map with name and condition",
            ));
        };
        let name = match m.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            other => {
                return Err(f.err(
                    &format!("processors[{i}].name"),
                    other.unwrap_or(&Value::Null),
                    "missing processor name",
                ))
            }
        };
        let condition = match m.get("condition") {
            None | Some(Value::Null) => None,
            Some(Value::String(c)) if c.trim().is_empty() => None,
            Some(Value::String(c)) => Some(Arc::new(
                Condition::compile(f.processor, c)
                    .map_err(|e| f.err_str(&format!("processors[{i}].condition"), c, e))?,
            )),
            Some(other) => {
                return Err(f.err(
                    &format!("processors[{i}].condition"),
                    other,
                    "expected a jq expression",
                ))
            }
        };
        steps.push((name, condition));
    }
    Ok(Arc::new(CombineSpec {
        processor: f.processor.to_string(),
        steps,
    }))
}

impl Build for CombineSpec {
    fn build(&self, reg: &dyn Resolve) -> Result<Box<dyn Apply>, ProcessorError> {
        let context = format!(
            " (referenced by processors.{}.event-combine)",
            self.processor
        );
        let steps = self
            .steps
            .iter()
            .map(|(name, cond)| Ok((reg.step(name, &context)?, cond.clone())))
            .collect::<Result<Vec<_>, ProcessorError>>()?;
        Ok(Box::new(Combine { steps }))
    }

    fn refs(&self) -> Vec<String> {
        self.steps.iter().map(|(n, _)| n.clone()).collect()
    }
}

struct Combine {
    steps: Vec<(Step, Option<Arc<Condition>>)>,
}

impl Apply for Combine {
    fn apply(&mut self, events: &mut Vec<Record>) {
        for (step, cond) in &mut self.steps {
            if events.is_empty() {
                return;
            }
            match cond {
                None => step.run(events),
                Some(c) => {
                    let (mut selected, rest): (Vec<Record>, Vec<Record>) = std::mem::take(events)
                        .into_iter()
                        .partition(|e| c.check(e).unwrap_or(false));
                    step.run(&mut selected);
                    events.extend(selected);
                    events.extend(rest);
                }
            }
            // gnmic re-sorts the batch by timestamp after each step.
            if events.len() > 1 {
                events.sort_by_key(|e| e.timestamp);
            }
        }
    }
}
