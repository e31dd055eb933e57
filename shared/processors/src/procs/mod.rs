//! One module per family of processor types.

use std::sync::Arc;

use crate::build::Build;
use crate::config::Fields;
use crate::error::ProcessorError;

pub(crate) mod combine;
pub(crate) mod convert;
pub(crate) mod filter;
pub(crate) mod group;
pub(crate) mod jq_proc;
pub(crate) mod starlark_proc;
pub(crate) mod strings;
pub(crate) mod tags;
pub(crate) mod time;

/// Compiles one definition of a supported type.
pub(crate) fn compile(
    kind: &'static str,
    f: &Fields<'_>,
) -> Result<Arc<dyn Build>, ProcessorError> {
    match kind {
        "event-add-tag" => tags::add_tag(f),
        "event-allow" => filter::allow(f),
        "event-combine" => combine::combine(f),
        "event-convert" => convert::convert(f),
        "event-data-convert" => convert::data_convert(f),
        "event-date-string" => time::date_string(f),
        "event-delete" => filter::delete(f),
        "event-drop" => filter::drop(f),
        "event-duration-convert" => convert::duration_convert(f),
        "event-extract-tags" => tags::extract_tags(f),
        "event-group-by" => group::group_by(f),
        "event-ieeefloat32" => convert::ieeefloat32(f),
        "event-jq" => jq_proc::jq(f),
        "event-keep" => filter::keep(f),
        "event-merge" => group::merge(f),
        "event-override-ts" => time::override_ts(f),
        "event-rate-limit" => group::rate_limit(f),
        "event-starlark" => starlark_proc::starlark(f),
        "event-strings" => strings::strings(f),
        "event-time-epoch" => time::time_epoch(f),
        "event-to-tag" => tags::to_tag(f),
        "event-value-tag" => tags::value_tag(f),
        "event-value-tag-v2" => tags::value_tag_v2(f),
        "event-write" => filter::write(f),
        other => Err(ProcessorError::Definition {
            processor: f.processor.to_string(),
            reason: format!("no compiler for {other}"),
        }),
    }
}
