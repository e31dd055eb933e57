//! Go time layouts (`2006-01-02T15:04:05Z07:00`), as gnmic's event-date-string
//! (format) and event-time-epoch (parse) take them. The layout is split into
//! chunks once, at startup.

use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};
use jiff::{Timestamp, Zoned};

/// Go's `time.RFC3339`.
pub(crate) const RFC3339: &str = "2006-01-02T15:04:05Z07:00";

#[derive(Debug, Clone, PartialEq)]
enum Chunk {
    Lit(String),
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    UnderYearDay,
    ZeroYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    PM,
    Pm,
    TzAbbrev,
    /// Numeric zone: `Z` prefix (ISO 8601: UTC is written `Z`), colons,
    /// whether minutes and seconds are written.
    Tz {
        iso: bool,
        colon: bool,
        minutes: bool,
        seconds: bool,
    },
    /// Fractional seconds: separator, digits, trailing zeros trimmed (`9`s).
    Frac {
        sep: char,
        digits: usize,
        trim: bool,
    },
}

const LONG_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const LONG_DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// A parsed Go layout.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    chunks: Vec<Chunk>,
}

impl Layout {
    pub(crate) fn new(layout: &str) -> Self {
        Self {
            chunks: split(layout),
        }
    }

    /// Go's `t.Format(layout)`.
    pub(crate) fn format(&self, t: &Zoned) -> String {
        let mut out = String::with_capacity(32);
        for chunk in &self.chunks {
            match chunk {
                Chunk::Lit(s) => out.push_str(s),
                Chunk::LongMonth => out.push_str(LONG_MONTHS[t.month() as usize - 1]),
                Chunk::Month => out.push_str(&LONG_MONTHS[t.month() as usize - 1][..3]),
                Chunk::NumMonth => out.push_str(&t.month().to_string()),
                Chunk::ZeroMonth => out.push_str(&format!("{:02}", t.month())),
                Chunk::LongWeekDay => {
                    out.push_str(LONG_DAYS[t.weekday().to_sunday_zero_offset() as usize])
                }
                Chunk::WeekDay => {
                    out.push_str(&LONG_DAYS[t.weekday().to_sunday_zero_offset() as usize][..3])
                }
                Chunk::Day => out.push_str(&t.day().to_string()),
                Chunk::UnderDay => out.push_str(&format!("{:>2}", t.day())),
                Chunk::ZeroDay => out.push_str(&format!("{:02}", t.day())),
                Chunk::UnderYearDay => out.push_str(&format!("{:>3}", t.day_of_year())),
                Chunk::ZeroYearDay => out.push_str(&format!("{:03}", t.day_of_year())),
                Chunk::Hour => out.push_str(&format!("{:02}", t.hour())),
                Chunk::Hour12 => out.push_str(&hour12(t.hour()).to_string()),
                Chunk::ZeroHour12 => out.push_str(&format!("{:02}", hour12(t.hour()))),
                Chunk::Minute => out.push_str(&t.minute().to_string()),
                Chunk::ZeroMinute => out.push_str(&format!("{:02}", t.minute())),
                Chunk::Second => out.push_str(&t.second().to_string()),
                Chunk::ZeroSecond => out.push_str(&format!("{:02}", t.second())),
                Chunk::LongYear => out.push_str(&format!("{:04}", t.year())),
                Chunk::Year => out.push_str(&format!("{:02}", t.year().rem_euclid(100))),
                Chunk::PM => out.push_str(if t.hour() >= 12 { "PM" } else { "AM" }),
                Chunk::Pm => out.push_str(if t.hour() >= 12 { "pm" } else { "am" }),
                Chunk::TzAbbrev => {
                    let info = t.time_zone().to_offset_info(t.timestamp());
                    let abbr = info.abbreviation();
                    if abbr.is_empty() || abbr.starts_with(['+', '-']) {
                        write_offset(&mut out, t.offset(), false, false, true, false);
                    } else {
                        out.push_str(abbr);
                    }
                }
                Chunk::Tz {
                    iso,
                    colon,
                    minutes,
                    seconds,
                } => write_offset(&mut out, t.offset(), *iso, *colon, *minutes, *seconds),
                Chunk::Frac { sep, digits, trim } => {
                    let nanos = t.subsec_nanosecond().max(0) as u32;
                    let full = format!("{nanos:09}");
                    let mut digits_str = full[..(*digits).min(9)].to_string();
                    if *trim {
                        while digits_str.ends_with('0') {
                            digits_str.pop();
                        }
                        if digits_str.is_empty() {
                            continue;
                        }
                    }
                    out.push(*sep);
                    out.push_str(&digits_str);
                }
            }
        }
        out
    }

    /// Go's `time.Parse(layout, value)`: UTC unless the value carries a zone.
    pub(crate) fn parse(&self, value: &str) -> Result<Timestamp, String> {
        let mut p = Parsed::default();
        let mut rest = value;
        let chunks = &self.chunks;
        for (i, chunk) in chunks.iter().enumerate() {
            match chunk {
                Chunk::Lit(s) => {
                    rest = rest
                        .strip_prefix(s.as_str())
                        .ok_or_else(|| format!("cannot parse {rest:?} as {s:?}"))?;
                }
                Chunk::LongMonth => p.month = Some(name(&mut rest, &LONG_MONTHS, None)? as i8 + 1),
                Chunk::Month => p.month = Some(name(&mut rest, &LONG_MONTHS, Some(3))? as i8 + 1),
                Chunk::NumMonth => p.month = Some(num(&mut rest, 1, 2)? as i8),
                Chunk::ZeroMonth => p.month = Some(num(&mut rest, 2, 2)? as i8),
                Chunk::LongWeekDay => {
                    name(&mut rest, &LONG_DAYS, None)?;
                }
                Chunk::WeekDay => {
                    name(&mut rest, &LONG_DAYS, Some(3))?;
                }
                Chunk::Day => p.day = Some(num(&mut rest, 1, 2)? as i8),
                Chunk::UnderDay => {
                    rest = rest.strip_prefix(' ').unwrap_or(rest);
                    p.day = Some(num(&mut rest, 1, 2)? as i8);
                }
                Chunk::ZeroDay => p.day = Some(num(&mut rest, 2, 2)? as i8),
                Chunk::UnderYearDay => {
                    rest = rest.trim_start_matches(' ');
                    p.yday = Some(num(&mut rest, 1, 3)? as i16);
                }
                Chunk::ZeroYearDay => p.yday = Some(num(&mut rest, 3, 3)? as i16),
                Chunk::Hour => p.hour = num(&mut rest, 1, 2)? as i8,
                Chunk::Hour12 => p.hour = num(&mut rest, 1, 2)? as i8,
                Chunk::ZeroHour12 => p.hour = num(&mut rest, 2, 2)? as i8,
                Chunk::Minute => p.minute = num(&mut rest, 1, 2)? as i8,
                Chunk::ZeroMinute => p.minute = num(&mut rest, 2, 2)? as i8,
                Chunk::Second | Chunk::ZeroSecond => {
                    let width = if *chunk == Chunk::ZeroSecond { 2 } else { 1 };
                    p.second = num(&mut rest, width, 2)? as i8;
                    // Go accepts a fraction after the seconds even when the
                    // layout has none.
                    let next_is_frac = matches!(chunks.get(i + 1), Some(Chunk::Frac { .. }));
                    if !next_is_frac
                        && rest.len() > 1
                        && rest.starts_with(['.', ','])
                        && rest.as_bytes()[1].is_ascii_digit()
                    {
                        let digits = rest[1..].bytes().take_while(u8::is_ascii_digit).count();
                        p.nanos = frac(&rest[1..1 + digits]);
                        rest = &rest[1 + digits..];
                    }
                }
                Chunk::LongYear => p.year = Some(num(&mut rest, 4, 4)? as i16),
                Chunk::Year => {
                    let y = num(&mut rest, 2, 2)? as i16;
                    p.year = Some(if y >= 69 { 1900 + y } else { 2000 + y });
                }
                Chunk::PM | Chunk::Pm => {
                    let ampm = rest.get(..2).ok_or("missing AM/PM")?.to_ascii_uppercase();
                    match ampm.as_str() {
                        "PM" => p.pm = Some(true),
                        "AM" => p.pm = Some(false),
                        _ => return Err(format!("cannot parse {rest:?} as AM/PM")),
                    }
                    rest = &rest[2..];
                }
                Chunk::TzAbbrev => {
                    let n = rest.bytes().take_while(u8::is_ascii_uppercase).count();
                    if n < 3 {
                        return Err(format!("cannot parse {rest:?} as a time zone abbreviation"));
                    }
                    if &rest[..n] == "UTC" || &rest[..n] == "GMT" {
                        p.offset = Some(0);
                    }
                    rest = &rest[n..];
                }
                Chunk::Tz {
                    iso,
                    colon,
                    minutes,
                    seconds,
                } => {
                    if *iso && rest.starts_with('Z') {
                        rest = &rest[1..];
                        p.offset = Some(0);
                        continue;
                    }
                    let sign = match rest.as_bytes().first() {
                        Some(b'+') => 1,
                        Some(b'-') => -1,
                        _ => return Err(format!("cannot parse {rest:?} as a zone offset")),
                    };
                    rest = &rest[1..];
                    let h = num(&mut rest, 2, 2)? as i32;
                    let mut m = 0;
                    let mut s = 0;
                    if *minutes {
                        if *colon {
                            rest = rest.strip_prefix(':').ok_or("missing ':' in zone offset")?;
                        }
                        m = num(&mut rest, 2, 2)? as i32;
                    }
                    if *seconds {
                        if *colon {
                            rest = rest.strip_prefix(':').ok_or("missing ':' in zone offset")?;
                        }
                        s = num(&mut rest, 2, 2)? as i32;
                    }
                    p.offset = Some(sign * (h * 3600 + m * 60 + s));
                }
                Chunk::Frac {
                    sep: _,
                    digits,
                    trim,
                } => {
                    if rest.starts_with(['.', ',']) {
                        let n = rest[1..].bytes().take_while(u8::is_ascii_digit).count();
                        if !*trim && n != *digits {
                            return Err(format!(
                                "cannot parse {rest:?} as a {digits}-digit fraction"
                            ));
                        }
                        p.nanos = frac(&rest[1..1 + n]);
                        rest = &rest[1 + n..];
                    } else if !*trim {
                        return Err(format!("cannot parse {rest:?} as a fraction"));
                    }
                }
            }
        }
        if !rest.is_empty() {
            return Err(format!("extra text {rest:?}"));
        }
        p.timestamp()
    }
}

#[derive(Default)]
struct Parsed {
    year: Option<i16>,
    month: Option<i8>,
    day: Option<i8>,
    yday: Option<i16>,
    hour: i8,
    minute: i8,
    second: i8,
    nanos: i32,
    pm: Option<bool>,
    offset: Option<i32>,
}

impl Parsed {
    fn timestamp(&self) -> Result<Timestamp, String> {
        let year = self.year.unwrap_or(0);
        let mut hour = self.hour;
        match self.pm {
            Some(true) if hour < 12 => hour += 12,
            Some(false) if hour == 12 => hour = 0,
            _ => {}
        }
        let date = match (self.yday, self.month, self.day) {
            (Some(yday), None, None) => jiff::civil::Date::new(year, 1, 1)
                .and_then(|d| d.with().day_of_year(yday).build())
                .map_err(|e| e.to_string())?,
            _ => jiff::civil::Date::new(year, self.month.unwrap_or(1), self.day.unwrap_or(1))
                .map_err(|e| e.to_string())?,
        };
        let dt = DateTime::from_parts(
            date,
            jiff::civil::Time::new(hour, self.minute, self.second, self.nanos)
                .map_err(|e| e.to_string())?,
        );
        let offset = Offset::from_seconds(self.offset.unwrap_or(0)).map_err(|e| e.to_string())?;
        dt.to_zoned(TimeZone::fixed(offset))
            .map(|z| z.timestamp())
            .map_err(|e| e.to_string())
    }
}

fn hour12(h: i8) -> i8 {
    match h % 12 {
        0 => 12,
        x => x,
    }
}

fn write_offset(
    out: &mut String,
    offset: Offset,
    iso: bool,
    colon: bool,
    minutes: bool,
    seconds: bool,
) {
    let total = offset.seconds();
    if iso && total == 0 {
        out.push('Z');
        return;
    }
    out.push(if total < 0 { '-' } else { '+' });
    let abs = total.unsigned_abs();
    out.push_str(&format!("{:02}", abs / 3600));
    if minutes {
        if colon {
            out.push(':');
        }
        out.push_str(&format!("{:02}", (abs / 60) % 60));
    }
    if seconds {
        if colon {
            out.push(':');
        }
        out.push_str(&format!("{:02}", abs % 60));
    }
}

fn num(rest: &mut &str, min: usize, max: usize) -> Result<u32, String> {
    let n = rest
        .bytes()
        .take(max)
        .take_while(u8::is_ascii_digit)
        .count();
    if n < min {
        return Err(format!("cannot parse {rest:?} as a number"));
    }
    let v = rest[..n].parse::<u32>().map_err(|e| e.to_string())?;
    *rest = &rest[n..];
    Ok(v)
}

fn name(rest: &mut &str, names: &[&str], short: Option<usize>) -> Result<usize, String> {
    for (i, full) in names.iter().enumerate() {
        let want = match short {
            Some(n) => &full[..n],
            None => full,
        };
        if rest.len() >= want.len()
            && rest.is_char_boundary(want.len())
            && rest[..want.len()].eq_ignore_ascii_case(want)
        {
            *rest = &rest[want.len()..];
            return Ok(i);
        }
    }
    Err(format!("cannot parse {rest:?} as a name"))
}

fn frac(digits: &str) -> i32 {
    let mut nanos = 0i32;
    for (i, b) in digits.bytes().take(9).enumerate() {
        nanos += (b - b'0') as i32 * 10i32.pow(8 - i as u32);
    }
    nanos
}

/// Splits a layout the way Go's `nextStdChunk` does.
fn split(layout: &str) -> Vec<Chunk> {
    let b = layout.as_bytes();
    let mut chunks = Vec::new();
    let mut lit = String::new();
    let mut i = 0;
    let starts = |i: usize, s: &str| layout[i..].starts_with(s);
    while i < b.len() {
        let (chunk, len) = match b[i] {
            b'J' if starts(i, "January") => (Some(Chunk::LongMonth), 7),
            b'J' if starts(i, "Jan") => (Some(Chunk::Month), 3),
            b'M' if starts(i, "Monday") => (Some(Chunk::LongWeekDay), 6),
            b'M' if starts(i, "Mon") => (Some(Chunk::WeekDay), 3),
            b'M' if starts(i, "MST") => (Some(Chunk::TzAbbrev), 3),
            b'0' if starts(i, "002") => (Some(Chunk::ZeroYearDay), 3),
            b'0' if i + 1 < b.len() && (b'1'..=b'6').contains(&b[i + 1]) => {
                let c = match b[i + 1] {
                    b'1' => Chunk::ZeroMonth,
                    b'2' => Chunk::ZeroDay,
                    b'3' => Chunk::ZeroHour12,
                    b'4' => Chunk::ZeroMinute,
                    b'5' => Chunk::ZeroSecond,
                    _ => Chunk::Year,
                };
                (Some(c), 2)
            }
            b'1' if starts(i, "15") => (Some(Chunk::Hour), 2),
            b'1' => (Some(Chunk::NumMonth), 1),
            b'2' if starts(i, "2006") => (Some(Chunk::LongYear), 4),
            b'2' => (Some(Chunk::Day), 1),
            b'_' if starts(i, "_2006") => {
                lit.push('_');
                (Some(Chunk::LongYear), 5)
            }
            b'_' if starts(i, "__2") => (Some(Chunk::UnderYearDay), 3),
            b'_' if starts(i, "_2") => (Some(Chunk::UnderDay), 2),
            b'3' => (Some(Chunk::Hour12), 1),
            b'4' => (Some(Chunk::Minute), 1),
            b'5' => (Some(Chunk::Second), 1),
            b'P' if starts(i, "PM") => (Some(Chunk::PM), 2),
            b'p' if starts(i, "pm") => (Some(Chunk::Pm), 2),
            b'-' | b'Z' => {
                let iso = b[i] == b'Z';
                let forms: [(&str, bool, bool, bool); 5] = [
                    ("070000", false, true, true),
                    ("07:00:00", true, true, true),
                    ("0700", false, true, false),
                    ("07:00", true, true, false),
                    ("07", false, false, false),
                ];
                let found = forms.iter().find(|(f, ..)| starts(i + 1, f));
                match found {
                    Some((f, colon, minutes, seconds)) => (
                        Some(Chunk::Tz {
                            iso,
                            colon: *colon,
                            minutes: *minutes,
                            seconds: *seconds,
                        }),
                        1 + f.len(),
                    ),
                    None => (None, 1),
                }
            }
            b'.' | b',' if i + 1 < b.len() && (b[i + 1] == b'0' || b[i + 1] == b'9') => {
                let ch = b[i + 1];
                let mut j = i + 1;
                while j < b.len() && b[j] == ch {
                    j += 1;
                }
                if j < b.len() && b[j].is_ascii_digit() {
                    (None, 1)
                } else {
                    (
                        Some(Chunk::Frac {
                            sep: b[i] as char,
                            digits: j - i - 1,
                            trim: ch == b'9',
                        }),
                        j - i,
                    )
                }
            }
            _ => (None, 1),
        };
        match chunk {
            Some(c) => {
                if !lit.is_empty() {
                    chunks.push(Chunk::Lit(std::mem::take(&mut lit)));
                }
                chunks.push(c);
                i += len;
            }
            None => {
                // Copy one whole character.
                let ch_len = layout[i..].chars().next().map_or(1, char::len_utf8);
                lit.push_str(&layout[i..i + ch_len]);
                i += ch_len;
            }
        }
    }
    if !lit.is_empty() {
        chunks.push(Chunk::Lit(lit));
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ts: i64, tz: &str) -> Zoned {
        Timestamp::from_second(ts)
            .unwrap()
            .to_zoned(TimeZone::get(tz).unwrap())
    }

    #[test]
    fn formats_go_layouts() {
        let z = at(1743849000, "UTC");
        assert_eq!(Layout::new(RFC3339).format(&z), "2025-04-05T10:30:00Z");
        assert_eq!(
            Layout::new("Mon Jan _2 15:04:05 MST 2006").format(&z),
            "Sat Apr  5 10:30:00 UTC 2025"
        );
        assert_eq!(Layout::new("3:04PM").format(&z), "10:30AM");
        let taipei = at(1743849000, "Asia/Taipei");
        assert_eq!(
            Layout::new(RFC3339).format(&taipei),
            "2025-04-05T18:30:00+08:00"
        );
        assert_eq!(
            Layout::new("2006-01-02 15:04:05.000 -0700").format(&taipei),
            "2025-04-05 18:30:00.000 +0800"
        );
    }

    #[test]
    fn parses_go_layouts() {
        let l = Layout::new(RFC3339);
        assert_eq!(
            l.parse("2025-04-05T10:30:00Z").unwrap().as_second(),
            1743849000
        );
        assert_eq!(
            l.parse("2025-04-05T18:30:00+08:00").unwrap().as_second(),
            1743849000
        );
        let t = l.parse("2025-04-05T10:30:00.25Z").unwrap();
        assert_eq!(t.as_millisecond(), 1743849000250);
        assert!(l.parse("2025-04-05 10:30:00").is_err());
        let l = Layout::new("Jan 2, 2006 at 3:04pm (MST)");
        assert_eq!(
            l.parse("Apr 5, 2025 at 10:30am (UTC)").unwrap().as_second(),
            1743849000
        );
    }
}
