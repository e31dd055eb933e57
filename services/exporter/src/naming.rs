//! gnmic's Prometheus naming: metric names from (prefix, subscription, value key), labels
//! from event tags, numeric conversion of values and the strings-as-labels rule.
//!
//! [`SeriesBuilder`] turns one event into series texts (`name{labels}`) and values, reusing
//! its buffers so steady-state ingest does not allocate.

use gnomon_gnmi::event::PlainValue;
use std::borrow::Cow;

/// One value of an event, as decoded from the wire.
#[derive(Clone, Debug, PartialEq)]
pub enum SampleValue<'a> {
    Number(f64),
    Bool(bool),
    Text(Cow<'a, str>),
    /// Arrays, objects, null: never a sample.
    Other,
}

impl SampleValue<'_> {
    /// gnmic's `toFloat`: numbers, bool as 1/0, strings that parse as floats.
    pub fn to_f64(&self) -> Option<f64> {
        match self {
            SampleValue::Number(n) => Some(*n),
            SampleValue::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            SampleValue::Text(s) => gnomon_gnmi::value::str_to_f64(s),
            SampleValue::Other => None,
        }
    }
}

impl<'a> From<PlainValue<'a>> for SampleValue<'a> {
    fn from(value: PlainValue<'a>) -> Self {
        match value {
            PlainValue::Int(i) => SampleValue::Number(i as f64),
            PlainValue::Uint(u) => SampleValue::Number(u as f64),
            PlainValue::Bool(b) => SampleValue::Bool(b),
            PlainValue::Text(s) => SampleValue::Text(Cow::Borrowed(s)),
            PlainValue::Float(f) => SampleValue::Number(f),
        }
    }
}

impl<'a> From<&'a serde_json::Value> for SampleValue<'a> {
    fn from(value: &'a serde_json::Value) -> Self {
        match value {
            serde_json::Value::Number(n) => {
                n.as_f64().map_or(SampleValue::Other, SampleValue::Number)
            }
            serde_json::Value::Bool(b) => SampleValue::Bool(*b),
            serde_json::Value::String(s) => SampleValue::Text(Cow::Borrowed(s)),
            _ => SampleValue::Other,
        }
    }
}

/// Appends `text` with every run of characters outside `[a-zA-Z0-9_]` replaced by one `_`.
pub fn sanitize_into(out: &mut Vec<u8>, text: &str) {
    let mut in_run = false;
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' {
            out.push(byte);
            in_run = false;
        } else if !in_run {
            out.push(b'_');
            in_run = true;
        }
    }
}

/// [`sanitize_into`] as a new `String`.
pub fn sanitize(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    sanitize_into(&mut out, text);
    String::from_utf8(out).unwrap_or_default()
}

/// Go's `filepath.Base`: the last `/`-separated element, trailing slashes ignored.
fn base_name(key: &str) -> &str {
    let trimmed = key.trim_end_matches('/');
    if trimmed.is_empty() {
        return if key.is_empty() { "." } else { "/" };
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// Appends `value` escaped for a label value (`\`, `"`, newline).
fn escape_label_value_into(out: &mut Vec<u8>, value: &[u8]) {
    for &byte in value {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            other => out.push(other),
        }
    }
}

/// Naming options of one Prometheus output.
#[derive(Clone, Debug, Default)]
pub struct NamingOptions {
    pub metric_prefix: String,
    pub append_subscription_name: bool,
    pub strings_as_labels: bool,
}

/// One series produced from an event value.
#[derive(Debug, Clone, Copy)]
pub struct SeriesRef<'b> {
    /// `name{labels}` (or `name` without labels).
    pub text: &'b [u8],
    /// Length of the name part of `text`.
    pub name_len: usize,
    pub value: f64,
}

/// Builds series texts from events, gnmic-style, with reusable buffers.
pub struct SeriesBuilder {
    options: NamingOptions,
    /// `sanitize(prefix) + "_"`, or empty.
    prefix: Vec<u8>,
    /// Label names (sanitized) back to back; `labels` index into it.
    names: Vec<u8>,
    /// Label values (raw) back to back.
    values: Vec<u8>,
    /// (name range, value range) per label.
    labels: Vec<(usize, usize, usize, usize)>,
    /// Rendered `{a="x",b="y"}` of the current event.
    label_text: Vec<u8>,
    /// The series text being built.
    series: Vec<u8>,
    order: Vec<usize>,
    /// Length-prefixed tags of the current and previous event, to reuse `label_text`.
    tags_key: Vec<u8>,
    previous_tags_key: Vec<u8>,
    labels_cached: bool,
}

/// Splits a length-prefixed part off `bytes` (see `SeriesBuilder::tags_key`).
fn take_part(bytes: &[u8]) -> (&str, &[u8]) {
    let (len, rest) = bytes.split_at(4);
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let (part, rest) = rest.split_at(len.min(rest.len()));
    (std::str::from_utf8(part).unwrap_or_default(), rest)
}

impl SeriesBuilder {
    pub fn new(options: NamingOptions) -> Self {
        let mut prefix = Vec::new();
        if !options.metric_prefix.is_empty() {
            sanitize_into(&mut prefix, &options.metric_prefix);
            prefix.push(b'_');
        }
        Self {
            options,
            prefix,
            names: Vec::new(),
            values: Vec::new(),
            labels: Vec::new(),
            label_text: Vec::new(),
            series: Vec::new(),
            order: Vec::new(),
            tags_key: Vec::new(),
            previous_tags_key: Vec::new(),
            labels_cached: false,
        }
    }

    fn has_label(&self, name: &[u8]) -> bool {
        self.labels
            .iter()
            .any(|&(start, end, _, _)| &self.names[start..end] == name)
    }

    fn push_label_name_checked(&mut self, start: usize) -> bool {
        // Label names must not start with a digit; gnmic's would be rejected, ours get `_`.
        if self.names.get(start).is_some_and(u8::is_ascii_digit) {
            self.names.insert(start, b'_');
        }
        let name = &self.names[start..];
        if name.is_empty() || self.has_label(name) {
            self.names.truncate(start);
            return false;
        }
        true
    }

    fn push_label_value(&mut self, name_start: usize, value: &str) {
        let value_start = self.values.len();
        self.values.extend_from_slice(value.as_bytes());
        self.labels
            .push((name_start, self.names.len(), value_start, self.values.len()));
    }

    /// Prepares the labels of an event: its tags (label = sanitized last path segment of the
    /// key, first wins in key order) and, with strings-as-labels, its non-numeric string
    /// values. `tags` and `values` must be sorted by key (events are maps; sorting makes
    /// "first wins" deterministic).
    pub fn start_event<'v>(
        &mut self,
        tags: impl Iterator<Item = (&'v str, &'v str)>,
        values: &[(impl AsRef<str>, SampleValue<'_>)],
    ) {
        // Events of one notification usually share their tags: keep the rendered labels
        // when the tags are the same as the previous event's (and no value adds labels).
        std::mem::swap(&mut self.tags_key, &mut self.previous_tags_key);
        self.tags_key.clear();
        for (key, value) in tags {
            for part in [key, value] {
                self.tags_key
                    .extend_from_slice(&(part.len() as u32).to_le_bytes());
                self.tags_key.extend_from_slice(part.as_bytes());
            }
        }
        if !self.options.strings_as_labels
            && self.labels_cached
            && self.tags_key == self.previous_tags_key
        {
            return;
        }
        self.labels_cached = !self.options.strings_as_labels;
        self.names.clear();
        self.values.clear();
        self.labels.clear();
        let tags_key = std::mem::take(&mut self.tags_key);
        let mut rest = &tags_key[..];
        while rest.len() >= 4 {
            let (key, after) = take_part(rest);
            let (value, after) = take_part(after);
            rest = after;
            let start = self.names.len();
            sanitize_into(&mut self.names, base_name(key));
            if self.push_label_name_checked(start) {
                self.push_label_value(start, value);
            }
        }
        self.tags_key = tags_key;
        if self.options.strings_as_labels {
            for (key, value) in values {
                let SampleValue::Text(text) = value else {
                    continue;
                };
                if value.to_f64().is_some() {
                    continue;
                }
                let fields: Vec<&str> = key.as_ref().split('/').collect();
                for take in 1..=fields.len() {
                    let start = self.names.len();
                    sanitize_into(&mut self.names, &fields[fields.len() - take..].join("_"));
                    if self.push_label_name_checked(start) {
                        self.push_label_value(start, text);
                        break;
                    }
                }
            }
        }
        self.order.clear();
        self.order.extend(0..self.labels.len());
        let (names, labels) = (&self.names, &self.labels);
        self.order.sort_by(|&a, &b| {
            names[labels[a].0..labels[a].1].cmp(&names[labels[b].0..labels[b].1])
        });
        self.label_text.clear();
        if self.labels.is_empty() {
            return;
        }
        self.label_text.push(b'{');
        for (i, &index) in self.order.iter().enumerate() {
            let (ns, ne, vs, ve) = self.labels[index];
            if i > 0 {
                self.label_text.push(b',');
            }
            self.label_text.extend_from_slice(&self.names[ns..ne]);
            self.label_text.extend_from_slice(b"=\"");
            escape_label_value_into(&mut self.label_text, &self.values[vs..ve]);
            self.label_text.push(b'"');
        }
        self.label_text.push(b'}');
    }

    /// [`Self::start_event`] for an event the caller knows has the previous event's tags
    /// (events of one message usually do): the labels rendered for those are kept without
    /// comparing the tags again.
    pub fn start_event_with_previous_tags<'v>(
        &mut self,
        tags: impl Iterator<Item = (&'v str, &'v str)>,
        values: &[(impl AsRef<str>, SampleValue<'_>)],
    ) {
        if !self.labels_cached || self.options.strings_as_labels {
            self.start_event(tags, values);
        }
    }

    /// The series for one value of the event prepared by [`Self::start_event`]; None when the
    /// value is not numeric (and strings-as-labels is off) or the name would be empty.
    pub fn series(
        &mut self,
        subscription: &str,
        value_key: &str,
        value: &SampleValue<'_>,
    ) -> Option<SeriesRef<'_>> {
        let number = match value.to_f64() {
            Some(number) => number,
            None if self.options.strings_as_labels => 1.0,
            None => return None,
        };
        self.series.clear();
        self.series.extend_from_slice(&self.prefix);
        if self.options.append_subscription_name {
            let start = self.series.len();
            sanitize_into(&mut self.series, subscription);
            while self.series.len() > start && self.series.last() == Some(&b'_') {
                self.series.pop();
            }
            self.series.push(b'_');
        }
        let start = self.series.len();
        // Leading separators and underscores would become underscores that are dropped.
        let first = value_key
            .bytes()
            .position(|b| b.is_ascii_alphanumeric())
            .unwrap_or(value_key.len());
        sanitize_into(&mut self.series, &value_key[first..]);
        if self.series.len() == start
            && self.prefix.is_empty()
            && !self.options.append_subscription_name
        {
            return None;
        }
        if self.series.first().is_some_and(u8::is_ascii_digit) {
            self.series.insert(0, b'_');
        }
        let name_len = self.series.len();
        self.series.extend_from_slice(&self.label_text);
        Some(SeriesRef {
            text: &self.series,
            name_len,
            value: number,
        })
    }
}

impl SeriesBuilder {
    /// [`Self::series`] together with the event's labels (sanitized names, raw values),
    /// sorted by name: what remote write sends instead of the rendered text.
    pub fn series_and_labels(
        &mut self,
        subscription: &str,
        value_key: &str,
        value: &SampleValue<'_>,
    ) -> Option<(SeriesRef<'_>, impl Iterator<Item = (&str, &str)> + '_)> {
        let (name_len, number) = {
            let series = self.series(subscription, value_key, value)?;
            (series.name_len, series.value)
        };
        let this = &*self;
        let labels = this.order.iter().map(move |&index| {
            let (ns, ne, vs, ve) = this.labels[index];
            (
                std::str::from_utf8(&this.names[ns..ne]).unwrap_or_default(),
                std::str::from_utf8(&this.values[vs..ve]).unwrap_or_default(),
            )
        });
        Some((
            SeriesRef {
                text: &this.series,
                name_len,
                value: number,
            },
            labels,
        ))
    }
}

/// The metric name gnmic builds for a value (for tests and docs).
pub fn metric_name(options: &NamingOptions, subscription: &str, value_key: &str) -> Option<String> {
    let mut builder = SeriesBuilder::new(options.clone());
    builder.start_event(std::iter::empty(), &[] as &[(&str, SampleValue<'_>)]);
    let series = builder.series(subscription, value_key, &SampleValue::Number(0.0))?;
    Some(String::from_utf8_lossy(&series.text[..series.name_len]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(
        options: NamingOptions,
        tags: &[(&str, &str)],
        values: &[(&str, SampleValue<'_>)],
        sub: &str,
    ) -> Vec<String> {
        let mut builder = SeriesBuilder::new(options);
        builder.start_event(tags.iter().copied(), values);
        let mut out = Vec::new();
        for (key, value) in values {
            if let Some(s) = builder.series(sub, key, value) {
                out.push(format!("{} {}", String::from_utf8_lossy(s.text), s.value));
            }
        }
        out
    }

    #[test]
    fn metric_names_drop_what_sanitizes_to_leading_underscores() {
        let prefixed = NamingOptions {
            metric_prefix: "p".into(),
            ..Default::default()
        };
        let plain = NamingOptions::default();
        for key in [
            "/a/b", "_a", "/_/a", "é1", "//", "", "a//b", "1abc", "__x_", "ü-é/c",
        ] {
            let stripped = sanitize(key).trim_start_matches('_').to_string();
            let expected = format!("p_{stripped}");
            assert_eq!(metric_name(&prefixed, "s", key), Some(expected), "{key:?}");
            let expected = match stripped.as_bytes().first() {
                None => None,
                Some(b) if b.is_ascii_digit() => Some(format!("_{stripped}")),
                Some(_) => Some(stripped.clone()),
            };
            assert_eq!(metric_name(&plain, "s", key), expected, "{key:?}");
        }
        assert_eq!(sanitize("a-/é_b"), "a__b");
    }

    #[test]
    fn sanitize_replaces_runs() {
        assert_eq!(sanitize("port-stats"), "port_stats");
        assert_eq!(sanitize("/a/b-c:d//e"), "_a_b_c_d_e");
        assert_eq!(sanitize("a_/b"), "a__b");
        assert_eq!(sanitize("état"), "_tat");
    }

    #[test]
    fn names_follow_the_gnmic_docs_example() {
        let options = NamingOptions {
            metric_prefix: "gnmic".into(),
            append_subscription_name: true,
            ..Default::default()
        };
        assert_eq!(
            metric_name(&options, "port-stats", "/interfaces/interface/subinterfaces/subinterface/state/counters/in-octets")
                .unwrap(),
            "gnmic_port_stats_interfaces_interface_subinterfaces_subinterface_state_counters_in_octets"
        );
        let plain = NamingOptions::default();
        assert_eq!(
            metric_name(
                &plain,
                "port-stats",
                "/interfaces/interface/state/counters/in-octets"
            )
            .unwrap(),
            "interfaces_interface_state_counters_in_octets"
        );
        assert_eq!(
            metric_name(&plain, "s", "openconfig:/a/b").unwrap(),
            "openconfig_a_b"
        );
        let sub_trailing = NamingOptions {
            append_subscription_name: true,
            ..Default::default()
        };
        assert_eq!(metric_name(&sub_trailing, "sub-", "/x").unwrap(), "sub_x");
    }

    #[test]
    fn labels_from_tags_use_the_last_segment_first_wins_sorted() {
        let tags = [
            ("interface_name", "ethernet-1/1"),
            ("source", "10.0.0.1:57400"),
            ("subscription-name", "port-stats"),
            ("x/y/source", "ignored-duplicate"),
        ];
        let values = [(
            "/interfaces/interface/state/counters/in-octets",
            SampleValue::Text("123456".into()),
        )];
        assert_eq!(
            render(NamingOptions::default(), &tags, &values, "port-stats"),
            vec![
                "interfaces_interface_state_counters_in_octets{interface_name=\"ethernet-1/1\",source=\"10.0.0.1:57400\",subscription_name=\"port-stats\"} 123456"
            ]
        );
    }

    #[test]
    fn labels_follow_each_event_when_reused() {
        let mut builder = SeriesBuilder::new(NamingOptions::default());
        let value = [("/c", SampleValue::Number(1.0))];
        let mut rendered = Vec::new();
        for tags in [
            [("a", "1"), ("b", "2")],
            [("a", "1"), ("b", "2")],
            [("a", "1"), ("b", "3")],
            [("a", "1"), ("b", "2")],
        ] {
            builder.start_event(tags.iter().copied(), &value);
            let series = builder.series("s", "/c", &value[0].1).unwrap();
            rendered.push(String::from_utf8_lossy(series.text).into_owned());
        }
        assert_eq!(
            rendered,
            [
                "c{a=\"1\",b=\"2\"}",
                "c{a=\"1\",b=\"2\"}",
                "c{a=\"1\",b=\"3\"}",
                "c{a=\"1\",b=\"2\"}"
            ]
        );
    }

    #[test]
    fn value_conversion_skips_non_numbers() {
        let values = [
            ("/a", SampleValue::Bool(true)),
            ("/b", SampleValue::Text("UP".into())),
            ("/c", SampleValue::Number(-2.5)),
            ("/d", SampleValue::Other),
            ("/e", SampleValue::Text("1e3".into())),
        ];
        assert_eq!(
            render(NamingOptions::default(), &[], &values, "s"),
            vec!["a 1", "c -2.5", "e 1000"]
        );
    }

    #[test]
    fn strings_as_labels_adds_labels_and_emits_one() {
        let options = NamingOptions {
            strings_as_labels: true,
            ..Default::default()
        };
        let tags = [("interface_name", "e1"), ("oper-status", "tag")];
        let values = [
            (
                "/interfaces/interface/state/oper-status",
                SampleValue::Text("UP".into()),
            ),
            (
                "/interfaces/interface/state/counters/in-octets",
                SampleValue::Number(5.0),
            ),
        ];
        let series = render(options, &tags, &values, "s");
        // `oper_status` collides with the tag label, so the next path element is joined in.
        assert_eq!(
            series,
            vec![
                "interfaces_interface_state_oper_status{interface_name=\"e1\",oper_status=\"tag\",state_oper_status=\"UP\"} 1",
                "interfaces_interface_state_counters_in_octets{interface_name=\"e1\",oper_status=\"tag\",state_oper_status=\"UP\"} 5",
            ]
        );
    }

    #[test]
    fn label_values_are_escaped_and_names_start_validly() {
        let tags = [("desc", "a\"b\\c\nd"), ("1st", "x")];
        let values = [("/1/x", SampleValue::Number(1.0))];
        assert_eq!(
            render(NamingOptions::default(), &tags, &values, "s"),
            vec!["_1_x{_1st=\"x\",desc=\"a\\\"b\\\\c\\nd\"} 1"]
        );
    }
}
