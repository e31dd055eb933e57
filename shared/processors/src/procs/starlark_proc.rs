//! event-starlark (placeholder while the interpreter is wired).

use std::sync::Arc;

use crate::config::Fields;
use crate::error::ProcessorError;
use crate::registry::Build;

pub(crate) fn starlark(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    Err(f.err_str("source", "", "not yet"))
}
