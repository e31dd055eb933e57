//! A reader for the shape gnmic's event JSON nearly always has, tried before serde_json.
//!
//! Why: decoding is most of the exporter's cost per update, and serde_json's general
//! machinery (a visitor call per key, a raw-value pass per value) does several times the
//! work this one shape needs. The scanner reads only what it is sure of — an array of event
//! objects (or one object) with the five gnmic fields, strings without escapes or control
//! characters, integer timestamps, values that are strings, numbers, booleans or null — and
//! gives up (`None`) on anything else, so that serde_json decides: the result, or the
//! error, is then serde_json's. Wherever the scanner answers, it answers what serde_json
//! would (the tests below and the `nats_message` fuzz target compare the two).
//!
//! What it costs: a payload the scanner gives up on (an escaped string, a nested value, a
//! float timestamp, an unknown field) is read twice, the second time by serde_json.

use super::{sort_pairs, WireEvent};
use crate::naming::SampleValue;
use std::borrow::Cow;

/// The events of `text` (a whole payload, already valid UTF-8), or `None` when it leaves
/// the common shape.
pub(super) fn events(text: &str) -> Option<Vec<WireEvent<'_>>> {
    let mut s = Scanner {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        last_tags_text: "",
        last_tags: Vec::new(),
    };
    s.ws();
    let events = match s.peek()? {
        b'[' => {
            s.pos += 1;
            let mut events = Vec::new();
            s.ws();
            if !s.eat(b']') {
                loop {
                    events.push(s.event()?);
                    if s.separator(b']')? {
                        break;
                    }
                }
            }
            events
        }
        b'{' => vec![s.event()?],
        _ => return None,
    };
    s.ws();
    (s.pos == s.bytes.len()).then_some(events)
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// The text of the last tags object read, and its pairs: the events of a message
    /// mostly repeat their neighbour's tags byte for byte, and the same bytes read the same.
    last_tags_text: &'a str,
    last_tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn eat(&mut self, b: u8) -> bool {
        let found = self.peek() == Some(b);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        self.eat(b).then_some(())
    }

    /// JSON's whitespace.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// After an element: `,` (more follow; `Some(false)`) or `close` (`Some(true)`).
    fn separator(&mut self, close: u8) -> Option<bool> {
        self.ws();
        match self.next()? {
            b',' => {
                self.ws();
                Some(false)
            }
            b if b == close => Some(true),
            _ => None,
        }
    }

    /// `"key"` then `:`, with the whitespace around.
    fn key(&mut self) -> Option<&'a str> {
        let key = self.string()?;
        self.ws();
        self.expect(b':')?;
        self.ws();
        Some(key)
    }

    fn event(&mut self) -> Option<WireEvent<'a>> {
        self.expect(b'{')?;
        let mut event = WireEvent::default();
        self.ws();
        if self.eat(b'}') {
            return Some(event);
        }
        loop {
            match self.key()? {
                "name" => event.name = Cow::Borrowed(self.string()?),
                "timestamp" => event.timestamp = self.integer()?,
                "tags" => event.tags = self.tags()?,
                "values" => event.values = self.object(Self::sample)?,
                "deletes" => event.deletes = self.strings()?,
                _ => return None,
            }
            if self.separator(b'}')? {
                return Some(event);
            }
        }
    }

    /// A tags object: the last one's pairs again when its text repeats.
    fn tags(&mut self) -> Option<Vec<(Cow<'a, str>, Cow<'a, str>)>> {
        let start = self.pos;
        if !self.last_tags_text.is_empty()
            && self.bytes[start..].starts_with(self.last_tags_text.as_bytes())
        {
            self.pos += self.last_tags_text.len();
            return Some(self.last_tags.clone());
        }
        let tags = self.object(|s| s.string().map(Cow::Borrowed))?;
        self.last_tags_text = self.text.get(start..self.pos)?;
        self.last_tags.clone_from(&tags);
        Some(tags)
    }

    /// An object of `value`s, as key-sorted pairs (repeated keys kept, as serde_json's
    /// map access gives them).
    fn object<T>(
        &mut self,
        value: impl Fn(&mut Self) -> Option<T>,
    ) -> Option<Vec<(Cow<'a, str>, T)>> {
        self.expect(b'{')?;
        let mut pairs = Vec::with_capacity(4);
        self.ws();
        if !self.eat(b'}') {
            loop {
                let key = self.key()?;
                pairs.push((Cow::Borrowed(key), value(self)?));
                if self.separator(b'}')? {
                    break;
                }
            }
        }
        sort_pairs(&mut pairs);
        Some(pairs)
    }

    fn strings(&mut self) -> Option<Vec<Cow<'a, str>>> {
        self.expect(b'[')?;
        let mut strings = Vec::new();
        self.ws();
        if !self.eat(b']') {
            loop {
                strings.push(Cow::Borrowed(self.string()?));
                if self.separator(b']')? {
                    break;
                }
            }
        }
        Some(strings)
    }

    /// A string without escapes or control characters (serde_json refuses the latter).
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.pos;
        let rest = &self.bytes[start..];
        let len = string_end(rest)?;
        if rest[len] != b'"' {
            return None;
        }
        self.pos = start + len + 1;
        self.text.get(start..start + len)
    }

    /// A value as `sample_from_json_text` reads its JSON text.
    fn sample(&mut self) -> Option<SampleValue<'a>> {
        match self.peek()? {
            b'"' => self.string().map(|s| SampleValue::Text(Cow::Borrowed(s))),
            b'-' | b'0'..=b'9' => {
                let number = self.number()?;
                Some(
                    number
                        .parse::<f64>()
                        .map_or(SampleValue::Other, SampleValue::Number),
                )
            }
            b't' => self.literal("true").then_some(SampleValue::Bool(true)),
            b'f' => self.literal("false").then_some(SampleValue::Bool(false)),
            b'n' => self.literal("null").then_some(SampleValue::Other),
            _ => None,
        }
    }

    fn literal(&mut self, word: &str) -> bool {
        let found = self.bytes[self.pos..].starts_with(word.as_bytes());
        if found {
            self.pos += word.len();
        }
        found
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// The integer part of a JSON number: `-?(0|[1-9][0-9]*)`.
    fn integer_part(&mut self) -> Option<()> {
        self.eat(b'-');
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        Some(())
    }

    /// A JSON number's text (grammar checked).
    fn number(&mut self) -> Option<&'a str> {
        let start = self.pos;
        self.integer_part()?;
        if self.eat(b'.') && self.digits() == 0 {
            return None;
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return None;
            }
        }
        self.text.get(start..self.pos)
    }

    /// A timestamp that is a JSON integer within i64 (anything else is serde_json's).
    fn integer(&mut self) -> Option<i64> {
        let start = self.pos;
        self.integer_part()?;
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.text.get(start..self.pos)?.parse().ok()
    }
}

/// The index of the first `"`, `\` or control character, 8 bytes at a time (names and
/// values are short: a general search's setup would cost more than the search).
fn string_end(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    // A byte of `x` is zero → its high bit is set in `zero(x)`; bits above the first such
    // byte may be set wrongly, so only the lowest set bit is used.
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let quote = zero(word ^ (ONES * u64::from(b'"')));
        let backslash = zero(word ^ (ONES * u64::from(b'\\')));
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
        let found = quote | backslash | control;
        if found != 0 {
            return Some(offset + found.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| offset + i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::decode_events_without_scanner;

    /// The scanner answers `expected_answer` and, when it does, what serde_json answers.
    fn same_as_serde(payload: &str, expected_answer: bool) {
        let scanned = events(payload);
        assert_eq!(scanned.is_some(), expected_answer, "{payload}");
        if let Some(scanned) = scanned {
            let serde = decode_events_without_scanner(payload.as_bytes()).unwrap_or_else(|e| {
                panic!("serde_json refused what the scanner read: {e}: {payload}")
            });
            assert_eq!(scanned, serde, "{payload}");
        }
    }

    #[test]
    fn the_common_shape_is_read_as_serde_json_reads_it() {
        for payload in [
            "[]",
            " [ ] ",
            "{}",
            "[{}]",
            r#"[{"name":"port-stats","timestamp":1700000000123456789,"tags":{"source":"r1:57400","interface_name":"e1","subscription-name":"s"},"values":{"/a/b":"123","/c":1.5e3,"/d":-0,"/e":true,"/f":false,"/g":null,"/h":-12.25E-2},"deletes":["/x","/y"]}]"#,
            "[ {\"name\" : \"s\" ,\n\t\"timestamp\":-0, \"values\":{ \"b\":1 , \"a\":2 ,\"a\":3}},\r\n{\"name\":\"t\"} ]",
            r#"{"name":"one","timestamp":0,"tags":{},"values":{},"deletes":[]}"#,
            r#"[{"timestamp":-9223372036854775808},{"timestamp":9223372036854775807}]"#,
            r#"[{"name":"a","name":"b","tags":{"z":"1"},"tags":{"y":"2"}}]"#,
            r#"[{"values":{"n":1e400,"m":-1e-400,"u":"ünïcode ✓"}}]"#,
            // Neighbours repeating, extending and changing their tags' text.
            r#"[{"tags":{"b":"2","a":"1"},"values":{"x":1}},{"tags":{"b":"2","a":"1"},"values":{"y":2}},{"tags":{"b":"2","a":"1","c":"3"}},{"tags":{"b":"2","a":"1"}},{"tags":{ "b":"2","a":"1"}},{"tags":{}},{"tags":{}},{"tags":{"b":"2"}}]"#,
        ] {
            same_as_serde(payload, true);
        }
    }

    #[test]
    fn string_ends_are_found_at_every_offset() {
        for len in 0..40 {
            for stop in [b'"', b'\\', 0x00, 0x1f] {
                let mut bytes = vec![b'a'; len];
                bytes.extend_from_slice("é€".as_bytes());
                let at = bytes.len();
                bytes.push(stop);
                bytes.extend_from_slice(b"\"x\x01");
                assert_eq!(string_end(&bytes), Some(at), "len {len}, stop {stop:#x}");
            }
            assert_eq!(string_end(&vec![b' '; len]), None);
        }
        assert_eq!(string_end(&[0x20, 0x7f, 0x80, 0xff]), None);
    }

    #[test]
    fn anything_else_is_left_to_serde_json() {
        for payload in [
            r#"[{"name":"a\"b"}]"#,
            r#"[{"na\u006de":"x"}]"#,
            r#"[{"name":null}]"#,
            r#"[{"timestamp":1.5}]"#,
            r#"[{"timestamp":1e3}]"#,
            r#"[{"timestamp":9223372036854775808}]"#,
            r#"[{"timestamp":9999999999999999999}]"#,
            r#"[{"timestamp":-9223372036854775809}]"#,
            r#"[{"timestamp":12345678901234567890}]"#,
            r#"[{"timestamp":null}]"#,
            r#"[{"tags":{"a":1}}]"#,
            r#"[{"tags":null}]"#,
            r#"[{"values":{"a":[1]}}]"#,
            r#"[{"values":{"a":{"b":1}}}]"#,
            r#"[{"values":{"a":01}}]"#,
            r#"[{"values":{"a":1.}}]"#,
            r#"[{"values":{"a":1e}}]"#,
            r#"[{"values":{"a":-}}]"#,
            r#"[{"values":{"a":tru}}]"#,
            r#"[{"values":{"a":nul}}]"#,
            r#"[{"values":{"a":"x"},}]"#,
            r#"[{"deletes":null}]"#,
            r#"[{"unknown":1}]"#,
            "[{\"name\":\"tab\there\"}]",
            r#"[{}]x"#,
            r#"[{},]"#,
            r#"[{} {}]"#,
            r#"[{"name":"a"}"#,
            r#"[{"tags":{"a":"1"}},{"tags":{"a":"1"}x}]"#,
            r#"[{"tags":{"a":"1"}},{"tags":{"a":"1"}"#,
            r#"[{"name":"a"#,
            r#"[1]"#,
            "",
            "null",
        ] {
            same_as_serde(payload, false);
        }
    }
}
