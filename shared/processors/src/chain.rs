//! A list of processors applied in order to each batch.

use gnomon_gnmi::event::Event;

use crate::record::Record;

/// One processor instance with its own state.
pub(crate) trait Apply: Send {
    /// Transforms one batch in place (may drop, add or reorder events).
    fn apply(&mut self, events: &mut Vec<Record>);
}

pub(crate) struct Step {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) debug: bool,
    pub(crate) proc: Box<dyn Apply>,
}

impl Step {
    pub(crate) fn run(&mut self, events: &mut Vec<Record>) {
        if self.debug && tracing::enabled!(tracing::Level::DEBUG) {
            log_events(&self.name, self.kind, "before", events);
            self.proc.apply(events);
            log_events(&self.name, self.kind, "after", events);
        } else {
            self.proc.apply(events);
        }
    }
}

fn log_events(name: &str, kind: &str, when: &str, events: &[Record]) {
    for (i, e) in events.iter().enumerate() {
        let json = serde_json::to_string(e).unwrap_or_default();
        tracing::debug!(
            processor = name,
            kind,
            index = i,
            event = json.as_str(),
            "{when}"
        );
    }
    if events.is_empty() {
        tracing::debug!(processor = name, kind, "{when}: no events");
    }
}

/// The processors named by one `event-processors:` list, applied in list
/// order. Built by [`crate::Processors::chain`]; each output or input owns
/// its chain (state is per chain, as gnmic keeps it per output).
pub struct Chain {
    pub(crate) steps: Vec<Step>,
}

impl Chain {
    /// A chain that does nothing.
    pub fn empty() -> Self {
        Self { steps: Vec::new() }
    }

    /// True when the list was empty: callers can skip building batches.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Number of processors.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// The processor names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(|s| s.name.as_str())
    }

    /// Applies every processor in order to one batch (the events of one
    /// notification). Stops early once the batch is empty. This is the hot
    /// path: records are the processors' own representation.
    pub fn apply_records(&mut self, events: &mut Vec<Record>) {
        for step in &mut self.steps {
            if events.is_empty() {
                return;
            }
            step.run(events);
        }
    }

    /// [`Self::apply_records`] on gnmic events: converted to records and
    /// back (the strings are moved, not copied). Nothing happens, and
    /// nothing is converted, when the chain is empty.
    pub fn apply(&mut self, events: &mut Vec<Event>) {
        if self.steps.is_empty() || events.is_empty() {
            return;
        }
        let mut records: Vec<Record> = events.drain(..).map(Record::from).collect();
        self.apply_records(&mut records);
        events.extend(records.into_iter().map(Event::from));
    }
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.steps
                    .iter()
                    .map(|s| format!("{} ({})", s.name, s.kind)),
            )
            .finish()
    }
}
