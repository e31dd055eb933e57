//! Go `time.Duration` text, as gnmic's files, Consul's API and gnmic's REST bodies use it:
//! strings such as `"10s"`, `"1m30s"`, `"500ms"`, `"-1s"` in files, integer nanoseconds in
//! JSON bodies and wherever Go's decoders read a bare number. The one parser and formatter
//! every part of gnomon shares, plus the serde helpers built on them.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// Parses a non-negative Go duration string: a sequence of decimal numbers, each with a unit
/// (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), e.g. `"1h2m3.5s"`; a lone `"0"` is zero. A
/// leading `-` is refused (see [`GoDuration`] for keys that give negatives a meaning).
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(format!("negative duration {trimmed:?}"));
    }
    let nanos = parse_signed_nanos(text)?;
    // Not negative (no `-`) and at most u64::MAX (checked by the parser).
    Ok(Duration::from_nanos(nanos as u64))
}

/// Parses Go's duration syntax with an optional sign into signed nanoseconds whose
/// magnitude fits a `u64`.
fn parse_signed_nanos(text: &str) -> Result<i128, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".to_string());
    }
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if body == "0" {
        return Ok(0);
    }
    if body.is_empty() {
        return Err(format!("invalid duration {text:?}: expected a number"));
    }
    let mut total_nanos: f64 = 0.0;
    let mut rest = body;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(format!(
                "invalid duration {text:?}: expected a number at {rest:?}"
            ));
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| {
            format!(
                "invalid duration {text:?}: bad number {:?}",
                &rest[..number_len]
            )
        })?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => {
                return Err(format!(
                    "invalid duration {text:?}: missing unit (ns, us, ms, s, m, h)"
                ))
            }
            other => return Err(format!("invalid duration {text:?}: unknown unit {other:?}")),
        };
        rest = &rest[unit_len..];
        total_nanos += number * unit_nanos;
    }
    if !total_nanos.is_finite() || total_nanos > u64::MAX as f64 {
        return Err(format!("duration {text:?} is too large"));
    }
    let nanos = i128::from(total_nanos.round() as u64);
    Ok(if negative { -nanos } else { nanos })
}

/// Formats a duration in whole units Go and Consul both read back: `"10s"`, `"1500ms"`,
/// `"250us"`, `"7ns"`, `"0s"`.
pub fn format_go_duration(duration: Duration) -> String {
    format_nanos(duration.as_nanos())
}

fn format_nanos(nanos: u128) -> String {
    if nanos == 0 {
        "0s".to_string()
    } else if nanos.is_multiple_of(1_000_000_000) {
        format!("{}s", nanos / 1_000_000_000)
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{nanos}ns")
    }
}

/// A Go `time.Duration` as written in gnmic files: a string such as `"60s"`, `"1m30s"`,
/// `"1.5h"`, `"-1s"`, `"0"`, or a bare integer (nanoseconds, as Go's decoder reads it).
/// Negative values are kept because some keys give them a meaning (expiration: never).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration {
    nanos: i128,
}

impl GoDuration {
    /// A non-negative duration.
    pub const fn from_std(duration: Duration) -> Self {
        Self {
            nanos: duration.as_nanos() as i128,
        }
    }

    /// From signed nanoseconds.
    pub const fn from_nanos(nanos: i128) -> Self {
        Self { nanos }
    }

    /// Signed nanoseconds.
    pub const fn as_nanos(&self) -> i128 {
        self.nanos
    }

    pub const fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    pub const fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// The duration if it is not negative.
    pub fn to_std(&self) -> Option<Duration> {
        u64::try_from(self.nanos).ok().map(Duration::from_nanos)
    }

    /// Parses Go's duration syntax with an optional sign; the magnitude is limited to
    /// Go's (`i64` nanoseconds, about 292 years).
    pub fn parse(text: &str) -> Result<Self, String> {
        let nanos = parse_signed_nanos(text)?;
        if nanos.unsigned_abs() > i64::MAX as u128 {
            return Err(format!("duration {:?} is too large", text.trim()));
        }
        Ok(Self { nanos })
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        write!(f, "{sign}{}", format_nanos(self.nanos.unsigned_abs()))
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct GoDurationVisitor;
        impl Visitor<'_> for GoDurationVisitor {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Go duration such as \"60s\" or \"1m30s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
                GoDuration::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoDuration, E> {
                Ok(GoDuration::from_nanos(v as i128))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoDuration, E> {
                Ok(GoDuration::from_nanos(v as i128))
            }
        }
        deserializer.deserialize_any(GoDurationVisitor)
    }
}

/// A non-negative duration as a config value: Go duration text or integer nanoseconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Text(String),
    Nanos(u64),
}

impl RawDuration {
    fn into_duration(self) -> Result<Duration, String> {
        match self {
            RawDuration::Text(text) => parse_go_duration(&text),
            RawDuration::Nanos(nanos) => Ok(Duration::from_nanos(nanos)),
        }
    }
}

/// `#[serde(with = "duration")]` (deserializing) for a required [`Duration`].
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    RawDuration::deserialize(deserializer)?
        .into_duration()
        .map_err(de::Error::custom)
}

/// `#[serde(with = "duration::option")]` (deserializing) for an optional [`Duration`].
pub mod option {
    use super::RawDuration;
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<RawDuration>::deserialize(deserializer)?
            .map(RawDuration::into_duration)
            .transpose()
            .map_err(serde::de::Error::custom)
    }
}

/// Serializes a duration as integer nanoseconds (gnmic's JSON form).
pub fn serialize_ns<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(duration.as_nanos().min(u64::MAX as u128) as u64)
}

/// Serializes an optional duration as integer nanoseconds.
pub fn serialize_opt_ns<S: Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(d) => serialize_ns(d, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_go_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(
            parse_go_duration("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("1.5h").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_go_duration("+0").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_go_duration("250us").unwrap(),
            Duration::from_micros(250)
        );
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("10x").is_err());
        assert!(parse_go_duration("-1s").is_err());
        assert!(parse_go_duration("-0").is_err());
        assert!(parse_go_duration("5 parsecs").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("s").is_err());
        assert!(parse_go_duration("99999999999h").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for text in ["10s", "1500ms", "0s", "250us", "7ns"] {
            assert_eq!(format_go_duration(parse_go_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn go_durations_keep_their_sign() {
        assert_eq!(
            GoDuration::parse("60s").unwrap().to_std(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(GoDuration::parse("0").unwrap(), GoDuration::default());
        assert_eq!(GoDuration::parse("-0").unwrap(), GoDuration::default());
        let negative = GoDuration::parse("-1s").unwrap();
        assert!(negative.is_negative());
        assert_eq!(negative.to_std(), None);
        assert_eq!(negative.to_string(), "-1s");
        assert_eq!(GoDuration::parse("1500ms").unwrap().to_string(), "1500ms");
        assert!(GoDuration::parse("10").is_err());
        assert!(GoDuration::parse("-").is_err());
        // Beyond Go's int64 nanoseconds, though within u64.
        assert!(GoDuration::parse("3000000h").is_err());
        assert!(GoDuration::parse("2000000h").is_ok());
    }
}
