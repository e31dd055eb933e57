//! Time processors: event-override-ts, event-date-string, event-time-epoch.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::build::{pure, Build, Pure};
use crate::config::Fields;
use crate::error::ProcessorError;
use crate::golayout::{Layout, RFC3339};
use crate::record::{Record, Str, Val};
use crate::select::Matcher;

#[derive(Debug, Clone, Copy)]
enum Precision {
    S,
    Ms,
    Us,
    Ns,
}

impl Precision {
    fn read(f: &Fields<'_>, key: &'static str) -> Result<Self, ProcessorError> {
        match f.string(key)?.as_deref() {
            None | Some("") | Some("ns") | Some("nanosecond") => Ok(Precision::Ns),
            Some("s") | Some("sec") | Some("second") => Ok(Precision::S),
            Some("ms") | Some("millisecond") => Ok(Precision::Ms),
            Some("us") | Some("microsecond") => Ok(Precision::Us),
            Some(other) => Err(f.err_str(key, other, "expected s, ms, us or ns")),
        }
    }

    /// Nanoseconds per unit.
    fn nanos(self) -> i128 {
        match self {
            Precision::S => 1_000_000_000,
            Precision::Ms => 1_000_000,
            Precision::Us => 1_000,
            Precision::Ns => 1,
        }
    }
}

/// event-override-ts: the event timestamp becomes the local clock, in the
/// configured precision (default ns).
struct OverrideTs {
    precision: Precision,
}

pub(crate) fn override_ts(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    Ok(pure(OverrideTs {
        precision: Precision::read(f, "precision")?,
    }))
}

impl Pure for OverrideTs {
    fn apply(&self, events: &mut Vec<Record>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let ts = (now / self.precision.nanos()) as i64;
        for e in events.iter_mut() {
            e.timestamp = ts;
        }
    }
}

/// event-date-string: integer timestamps (values or tags, in `precision`)
/// rendered as text with a Go layout in a time zone (default: local).
struct DateString {
    value_names: Matcher,
    tag_names: Matcher,
    precision: Precision,
    layout: Layout,
    zone: TimeZone,
}

pub(crate) fn date_string(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    let zone = match f.string("location")? {
        None => TimeZone::system(),
        Some(s) if s.is_empty() => TimeZone::system(),
        Some(s) if s == "Local" => TimeZone::system(),
        Some(s) => TimeZone::get(&s)
            .map_err(|e| f.err_str("location", &s, format!("unknown time zone: {e}")))?,
    };
    let format = f
        .string("format")?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| RFC3339.to_string());
    Ok(pure(DateString {
        value_names: Matcher::from_field(f, "value-names")?,
        tag_names: Matcher::from_field(f, "tag-names")?,
        precision: Precision::read(f, "precision")?,
        layout: Layout::new(&format),
        zone,
    }))
}

fn as_int(v: &Val) -> Option<i64> {
    match v {
        Val::Int(i) => Some(*i),
        // serde_json's as_i64 fails above i64::MAX; as_f64 then saturates.
        Val::Uint(u) => Some(*u as f64 as i64),
        Val::Float(f) => Some(*f as i64),
        Val::Str(s) => s.parse().ok(),
        _ => None,
    }
}

impl DateString {
    fn render(&self, n: i64) -> Option<String> {
        let nanos = (n as i128).checked_mul(self.precision.nanos())?;
        let ts = Timestamp::from_nanosecond(nanos).ok()?;
        Some(self.layout.format(&ts.to_zoned(self.zone.clone())))
    }
}

impl Pure for DateString {
    fn apply(&self, events: &mut Vec<Record>) {
        for e in events.iter_mut() {
            if !self.value_names.is_empty() {
                for (k, v) in e.values.iter_mut() {
                    if self.value_names.is_match(k) {
                        if let Some(s) = as_int(v).and_then(|n| self.render(n)) {
                            *v = Val::Str(Str::from(s));
                        }
                    }
                }
            }
            if !self.tag_names.is_empty() {
                for (k, v) in e.tags.iter_mut() {
                    if self.tag_names.is_match(k) {
                        if let Some(s) = v.parse::<i64>().ok().and_then(|n| self.render(n)) {
                            *v = Str::from(s);
                        }
                    }
                }
            }
        }
    }
}

/// event-time-epoch: date strings (Go layout, default RFC3339) to integer
/// timestamps in `precision` (default ns).
struct TimeEpoch {
    value_names: Matcher,
    precision: Precision,
    layout: Layout,
}

pub(crate) fn time_epoch(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    let format = f
        .string("format")?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| RFC3339.to_string());
    Ok(pure(TimeEpoch {
        value_names: Matcher::from_field(f, "value-names")?,
        precision: Precision::read(f, "precision")?,
        layout: Layout::new(&format),
    }))
}

impl Pure for TimeEpoch {
    fn apply(&self, events: &mut Vec<Record>) {
        if self.value_names.is_empty() {
            return;
        }
        for e in events.iter_mut() {
            for (k, v) in e.values.iter_mut() {
                if !self.value_names.is_match(k) {
                    continue;
                }
                let Val::Str(s) = v else {
                    continue;
                };
                match self.layout.parse(s) {
                    Ok(ts) => {
                        let n = ts.as_nanosecond() / self.precision.nanos();
                        *v = Val::Int(n as i64);
                    }
                    Err(err) => {
                        tracing::debug!(
                            value = s.as_str(),
                            error = err.as_str(),
                            "event-time-epoch: not a time"
                        );
                    }
                }
            }
        }
    }
}
