//! Configuration errors: each is one line naming the processor, the key
//! and the value.

use gnomon_processors::{ProcessorError, Processors};
use serde_json::{json, Value};

fn error(config: Value) -> String {
    let err = Processors::from_config(&config).expect_err("config must be refused");
    let line = err.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    line
}

fn assert_mentions(line: &str, parts: &[&str]) {
    for p in parts {
        assert!(line.contains(p), "{line:?} should mention {p:?}");
    }
}

#[test]
fn unknown_type() {
    let line = error(json!({"p1": {"event-frobnicate": {}}}));
    assert_mentions(
        &line,
        &[
            "processors.p1",
            "unknown processor type",
            "event-frobnicate",
            "event-drop",
        ],
    );
}

#[test]
fn unknown_name_in_a_list() {
    let procs =
        Processors::from_config(&json!({"known": {"event-drop": {"tags": ["x"]}}})).unwrap();
    let err = procs
        .chain(&["known", "missing"])
        .expect_err("unknown name");
    assert!(matches!(err, ProcessorError::UnknownName { .. }));
    let line = err.to_string();
    assert!(!line.contains('\n'));
    assert_mentions(&line, &["\"missing\"", "not defined under processors"]);
    // Names are case-insensitive.
    assert!(procs.chain(&["KNOWN"]).is_ok());
}

#[test]
fn unknown_name_in_combine() {
    let line = error(json!({"c": {"event-combine": {"processors": [{"name": "ghost"}]}}}));
    assert_mentions(&line, &["\"ghost\"", "processors.c.event-combine"]);
}

#[test]
fn combine_cycle() {
    let line = error(json!({
        "a": {"event-combine": {"processors": [{"name": "b"}]}},
        "b": {"event-combine": {"processors": [{"name": "a"}]}}
    }));
    assert_mentions(&line, &["refers back to itself", "a → b → a"]);
}

#[test]
fn bad_regex() {
    let line = error(json!({"d": {"event-delete": {"value-names": ["ok", "(unclosed"]}}}));
    assert_mentions(
        &line,
        &[
            "processors.d.event-delete.value-names[1]",
            "\"(unclosed\"",
            "invalid value",
        ],
    );
    let line = error(
        json!({"s": {"event-strings": {"value-names": ["."], "transforms": [{"replace": {"apply-on": "name", "old": "a(", "new": "b"}}]}}}),
    );
    assert_mentions(
        &line,
        &[
            "processors.s.event-strings.transforms[0].replace.old",
            "\"a(\"",
        ],
    );
}

#[test]
fn bad_jq() {
    let line = error(json!({"a": {"event-allow": {"condition": ".tags.x == "}}}));
    assert_mentions(
        &line,
        &[
            "processors.a.event-allow.condition",
            "\".tags.x == \"",
            "jq",
        ],
    );
    let line = error(json!({"j": {"event-jq": {"expression": ".[] | nosuchfunction(1)"}}}));
    assert_mentions(
        &line,
        &["processors.j.event-jq.expression", "nosuchfunction"],
    );
    // gnmic's doc page escapes quotes inside a single-quoted YAML string,
    // which leaves backslashes in the program: refused, as by gojq.
    let line = error(json!({"c": {"event-combine": {"processors": [
        {"condition": ".tags[\\\"subscription-name\\\"] == \\\"sub2\\\"", "name": "c2"}]}},
        "c2": {"event-merge": {}}}));
    assert_mentions(
        &line,
        &["processors.c.event-combine.processors[0].condition"],
    );
}

#[test]
fn bad_starlark() {
    let line = error(
        json!({"st": {"event-starlark": {"source": "def apply(*events)\n  return events\n"}}}),
    );
    assert_mentions(&line, &["processors.st.event-starlark.source", "def apply"]);
    let line = error(json!({"st": {"event-starlark": {"source": "x = 1\n"}}}));
    assert_mentions(&line, &["processors.st.event-starlark.source", "apply"]);
    let line = error(
        json!({"st": {"event-starlark": {"source": "def apply(*e):\n  return e\nundefined_name()\n"}}}),
    );
    assert_mentions(
        &line,
        &["processors.st.event-starlark.source", "undefined_name"],
    );
    let line = error(json!({"st": {"event-starlark": {"script": "/nonexistent/gnomon.star"}}}));
    assert_mentions(
        &line,
        &[
            "processors.st.event-starlark.script",
            "/nonexistent/gnomon.star",
            "cannot read",
        ],
    );
}

#[test]
fn plugin_refused() {
    let line = error(json!({"p": {"event-plugin": {"path": "/bin/x"}}}));
    assert_mentions(
        &line,
        &["processors.p", "event-plugin is not supported by gnomon"],
    );
}

#[test]
fn trigger_refused() {
    let line = error(json!({"t": {"event-trigger": {"condition": "true", "actions": ["a"]}}}));
    assert_mentions(
        &line,
        &[
            "processors.t",
            "event-trigger is not supported by gnomon",
            "actions",
        ],
    );
}

#[test]
fn invalid_fields() {
    let cases = [
        (
            json!({"c": {"event-convert": {"value-names": ["."], "type": "integer"}}}),
            vec![
                "processors.c.event-convert.type",
                "\"integer\"",
                "int, uint, float, string or bool",
            ],
        ),
        (
            json!({"c": {"event-convert": {"value-names": ["."]}}}),
            vec!["processors.c.event-convert.type", "missing"],
        ),
        (
            json!({"r": {"event-rate-limit": {"per-second": 0}}}),
            vec!["processors.r.event-rate-limit.per-second", "greater than 0"],
        ),
        (
            json!({"d": {"event-drop": {"tags": {"a": 1}}}}),
            vec!["processors.d.event-drop.tags", "list of strings"],
        ),
        (
            json!({"d": {"event-drop": {"debug": "maybe"}}}),
            vec!["processors.d.event-drop.debug", "\"maybe\""],
        ),
        (
            json!({"u": {"event-data-convert": {"value-names": ["."], "to": "PB"}}}),
            vec![
                "processors.u.event-data-convert.to",
                "\"PB\"",
                "unknown unit",
            ],
        ),
        (
            json!({"t": {"event-date-string": {"value-names": ["."], "location": "Mars/Olympus"}}}),
            vec!["processors.t.event-date-string.location", "Mars/Olympus"],
        ),
        (
            json!({"t": {"event-override-ts": {"precision": "minutes"}}}),
            vec!["processors.t.event-override-ts.precision", "\"minutes\""],
        ),
        (
            json!({"s": {"event-strings": {"value-names": ["."], "transforms": [{"reverse": {"apply-on": "name"}}]}}}),
            vec![
                "processors.s.event-strings.transforms[0]",
                "reverse",
                "unknown transform",
            ],
        ),
        (
            json!({"s": {"event-strings": {"value-names": ["."], "transforms": [{"title": {"apply-on": "both"}}]}}}),
            vec!["transforms[0].title.apply-on", "\"both\""],
        ),
        (
            json!({"p": {"event-drop": {}, "event-allow": {}}}),
            vec!["processors.p", "exactly one processor type"],
        ),
        (
            json!({"p": "event-drop"}),
            vec!["processors.p", "expected a map"],
        ),
        (
            json!({"P": {"event-drop": {}}, "p": {"event-allow": {}}}),
            vec!["defined twice"],
        ),
        (
            json!({"v": {"event-value-tag-v2": {"rules": [{"tag-name": "x"}]}}}),
            vec!["processors.v.event-value-tag-v2.rules[0].value-name"],
        ),
    ];
    for (config, parts) in cases {
        let line = error(config);
        assert_mentions(&line, &parts);
    }
    let err = Processors::from_config(&json!(["not", "a", "map"])).expect_err("not a map");
    assert_mentions(&err.to_string(), &["processors:", "expected a map"]);
}

#[test]
fn empty_and_null_sections() {
    assert!(Processors::from_config(&Value::Null).unwrap().is_empty());
    let procs = Processors::from_config(&json!({"m": {"event-merge": null}})).unwrap();
    assert_eq!(procs.kind("M"), Some("event-merge"));
    let mut chain = procs.chain::<&str>(&[]).unwrap();
    assert!(chain.is_empty());
    let mut batch = vec![gnomon_processors::Event::default()];
    chain.apply(&mut batch);
    assert_eq!(batch.len(), 1);
}

#[test]
fn thread_safety_for_the_integrator() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Processors>();
    send::<gnomon_processors::Chain>();
    send_sync::<ProcessorError>();
}
