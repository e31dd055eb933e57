//! Configuration errors: one line each, naming the processor, the key and the
//! value, so a user can fix the file without reading code.

/// Why a `processors:` section (or an `event-processors:` list) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessorError {
    /// `processors:` is not a map of name → definition.
    #[error("processors: {reason}")]
    Section {
        /// What is wrong with the section.
        reason: String,
    },
    /// A definition that is not a map with exactly one processor type.
    #[error("processors.{processor}: {reason}")]
    Definition {
        /// Processor name as written.
        processor: String,
        /// What is wrong.
        reason: String,
    },
    /// A type gnmic does not have.
    #[error("processors.{processor}: unknown processor type {kind:?} (known: {known}; gnmic plugin processors are not supported)")]
    UnknownType {
        /// Processor name as written.
        processor: String,
        /// The type key found.
        kind: String,
        /// The supported types, comma separated.
        known: String,
    },
    /// A gnmic type gnomon refuses on purpose.
    #[error("processors.{processor}: {kind} is not supported by gnomon: {reason}")]
    Unsupported {
        /// Processor name as written.
        processor: String,
        /// The refused type.
        kind: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// A field with a bad value (regex, jq, Starlark, type, range…).
    #[error("processors.{processor}.{kind}.{key}: invalid value {value}: {reason}")]
    Field {
        /// Processor name as written.
        processor: String,
        /// Processor type.
        kind: String,
        /// Field name (with an index for list items, e.g. `value-names[1]`).
        key: String,
        /// The offending value, quoted as it appeared.
        value: String,
        /// What is expected or why it failed.
        reason: String,
    },
    /// A name in an `event-processors` list (or an event-combine step) that is
    /// not defined under `processors`.
    #[error("event processor {name:?} is not defined under processors{context}")]
    UnknownName {
        /// The name that was referenced.
        name: String,
        /// Where it was referenced (empty for output/input lists).
        context: String,
    },
    /// event-combine processors that refer to each other in a loop.
    #[error("processors.{processor}: event-combine refers back to itself through {path}")]
    Cycle {
        /// The combine processor where the loop was found.
        processor: String,
        /// The chain of names forming the loop.
        path: String,
    },
    /// A definition error, with the outputs and inputs whose lists name that
    /// processor.
    #[error("{error} (listed by {users})")]
    Listed {
        /// The error about the definition.
        error: Box<ProcessorError>,
        /// `outputs.<name>.event-processors`, … comma separated.
        users: String,
    },
}

impl ProcessorError {
    /// The processor whose definition is at fault, when the error is about one.
    pub fn processor(&self) -> Option<&str> {
        match self {
            ProcessorError::Definition { processor, .. }
            | ProcessorError::UnknownType { processor, .. }
            | ProcessorError::Unsupported { processor, .. }
            | ProcessorError::Field { processor, .. }
            | ProcessorError::Cycle { processor, .. } => Some(processor),
            ProcessorError::Listed { error, .. } => error.processor(),
            ProcessorError::Section { .. } | ProcessorError::UnknownName { .. } => None,
        }
    }
}

/// Quotes a config value for an error line (JSON rendering, short).
pub(crate) fn show(value: &serde_json::Value) -> String {
    let mut s = value.to_string();
    if s.len() > 200 {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}
