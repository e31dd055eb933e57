//! How a compiled processor definition produces instances. Kept apart from the
//! registry so the processor families depend on this contract only, not on the
//! registry that compiles them.

use std::sync::Arc;

use crate::chain::{Apply, Step};
use crate::error::ProcessorError;

/// Resolves a processor name to a fresh step (event-combine refers to others
/// by name).
pub(crate) trait Resolve {
    fn step(&self, name: &str, context: &str) -> Result<Step, ProcessorError>;
}

/// A compiled definition that can produce fresh instances.
pub(crate) trait Build: Send + Sync {
    /// A new instance with its own state. `reg` resolves names (event-combine).
    fn build(&self, reg: &dyn Resolve) -> Result<Box<dyn Apply>, ProcessorError>;

    /// Processor names this definition refers to (event-combine steps).
    fn refs(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Processors that keep no state: every instance shares the compiled form.
pub(crate) trait Pure: Send + Sync + 'static {
    fn apply(&self, events: &mut Vec<crate::record::Record>);
}

struct PureBuild<T>(Arc<T>);
struct PureInstance<T>(Arc<T>);

impl<T: Pure> Apply for PureInstance<T> {
    fn apply(&mut self, events: &mut Vec<crate::record::Record>) {
        self.0.apply(events)
    }
}

impl<T: Pure> Build for PureBuild<T> {
    fn build(&self, _: &dyn Resolve) -> Result<Box<dyn Apply>, ProcessorError> {
        Ok(Box::new(PureInstance(self.0.clone())))
    }
}

/// Wraps a stateless processor.
pub(crate) fn pure<T: Pure>(p: T) -> Arc<dyn Build> {
    Arc::new(PureBuild(Arc::new(p)))
}
