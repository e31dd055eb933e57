//! event-starlark: the examples of gnmic's event_starlark page.

mod common;

use common::{check_one, events};
use gnomon_processors::Processors;
use serde_json::json;

fn cfg(source: &str) -> serde_json::Value {
    json!({"sample-processor": {"event-starlark": {"source": source}}})
}

#[test]
fn doc_examples() {
    let cases = [
        (
            "doc: move a value to a tag",
            r#"
def apply(*events):
  dels = []
  for e in events:
    for k, v in e.values.items():
      if k == "val1":
        e.tags[k] = str(v)
        dels.append(k)
    for d in dels:
      e.values.pop(d)
  return events
"#,
            json!([{"name": "s", "tags": {"a": "1"}, "values": {"val1": 42, "val2": 1}}]),
            json!([{"name": "s", "tags": {"a": "1", "val1": "42"}, "values": {"val2": 1}}]),
        ),
        (
            "doc: rename values",
            r#"
val_map = {
  "val1": "new_val",
}

def apply(*events):
  for e in events:
    for k, v in e.values.items():
      if k in val_map:
        e.values[val_map[k]] = v
        e.values.pop(k)
  return events
"#,
            json!([{"name": "s", "values": {"val1": 1, "val2": 2}}]),
            json!([{"name": "s", "values": {"new_val": 1, "val2": 2}}]),
        ),
        (
            "doc: convert strings to integers",
            r#"
def apply(*events):
  for e in events:
    for k, v in e.values.items():
      if v.isdigit():
        e.values[k] = int(v)
  return events
"#,
            json!([{"name": "s", "values": {"a": "12", "b": "x1"}}]),
            json!([{"name": "s", "values": {"a": 12, "b": "x1"}}]),
        ),
        (
            "Event(), copy_event(), name/timestamp assignment, filtering",
            r#"
def apply(*events):
  out = []
  for e in events:
    if e.name == "drop":
      continue
    c = copy_event(e)
    c.name = e.name + "_copy"
    c.timestamp = e.timestamp + 1
    c.tags["copy"] = "yes"
    out.append(e)
    out.append(c)
  out.append(Event("new", 7, {"t": "v"}, {"x": 1.5}))
  return out
"#,
            json!([{"name": "keep", "timestamp": 10, "values": {"v": 1}}, {"name": "drop", "timestamp": 11}]),
            json!([{"name": "keep", "timestamp": 10, "values": {"v": 1}},
                   {"name": "keep_copy", "timestamp": 11, "tags": {"copy": "yes"}, "values": {"v": 1}},
                   {"name": "new", "timestamp": 7, "tags": {"t": "v"}, "values": {"x": 1.5}}]),
        ),
        (
            "math and time modules",
            r#"
load("math.star", "math")
load("time.star", "time")
def apply(*events):
  for e in events:
    e.values["sq"] = math.sqrt(e.values["n"])
    e.values["ceil"] = math.ceil(2.1)
    e.tags["when"] = time.from_timestamp(1743849000).in_location("UTC").format("2006-01-02T15:04:05Z07:00")
    e.values["d"] = time.parse_duration("1m30s")
  return events
"#,
            json!([{"name": "s", "values": {"n": 16}}]),
            json!([{"name": "s", "tags": {"when": "2025-04-05T10:30:00Z"},
                    "values": {"n": 16, "sq": 4.0, "ceil": 3, "d": 90000000000i64}}]),
        ),
    ];
    for (case, source, before, after) in cases {
        check_one(case, cfg(source), before, after);
    }
}

#[test]
fn doc_interface_description_cache_lives_across_batches() {
    let source = r#"
cache = {}

def apply(*events):
  evs = []
  # check if on the event messages contains an interface description
  # and store in th cache dict
  for e in events:
    if e.values.get("/interface/description"):
      target_if = e.tags["source"] + "_" + e.tags["interface_name"]
      cache[target_if] = e.values["/interface/description"]
  # for each event get the 'source' and 'interface_name', check
  # if a corresponding cache entry exists and set it as a
  # 'description' tag
  for e in events:
    if e.tags.get("source") and e.tags.get("interface_name"):
      target_if = e.tags["source"] + "_" + e.tags["interface_name"]
      if cache.get(target_if):
        e.tags["description"] = cache[target_if]
    evs.append(e)
  return evs
"#;
    let procs = Processors::from_config(&cfg(source)).unwrap();
    let mut chain = procs.chain(&["sample-processor"]).unwrap();
    let mut first = events(&json!([
        {"name": "s", "tags": {"source": "r1", "interface_name": "e1"}, "values": {"/interface/description": "uplink"}}
    ]));
    chain.apply(&mut first);
    assert_eq!(first[0].tags["description"], "uplink");
    let mut second = events(&json!([
        {"name": "s", "tags": {"source": "r1", "interface_name": "e1"}, "values": {"/interface/statistics/in-octets": 5}},
        {"name": "s", "tags": {"source": "r1", "interface_name": "e2"}, "values": {"/interface/statistics/in-octets": 6}}
    ]));
    chain.apply(&mut second);
    assert_eq!(
        second[0].tags["description"], "uplink",
        "doc: cache kept across calls"
    );
    assert!(!second[1].tags.contains_key("description"));
}

#[test]
fn doc_avg_min_max_over_last_values() {
    let source = r#"
cache = {}
values_names=[
  '/interface/statistics/out-octets',
  '/interface/statistics/in-octets'
]
N=10

def apply(*events):
  for e in events:
    for value_name in values_names:
      if e.values.get(value_name):
        val_key = e.tags["source"] + "_" + e.tags["interface_name"] + "_" + value_name
        if not cache.get(val_key):
          cache.update({val_key: []})
        if len(cache[val_key]) >= N:
          cache[val_key] = cache[val_key][1:]
        cache[val_key].append(int(e.values[value_name]))
  for e in events:
    for value_name in values_names:
      if e.values.get(value_name):
        val_key = e.tags["source"] + "_" + e.tags["interface_name"] + "_" + value_name
        val_list = cache[val_key]
        e.values[value_name+"_min"] = min(val_list)
        e.values[value_name+"_max"] = max(val_list)
        e.values[value_name+"_avg"] = avg(val_list)
  return events

def avg(vals):
  sum = 0
  for v in vals:
    sum = sum + v
  return sum/len(vals)
"#;
    let procs = Processors::from_config(&cfg(source)).unwrap();
    let mut chain = procs.chain(&["sample-processor"]).unwrap();
    let k = "/interface/statistics/in-octets";
    let mut last = Vec::new();
    for n in 1..=12 {
        let mut batch = events(
            &json!([{"name": "s", "tags": {"source": "r1", "interface_name": "e1"}, "values": {k: n.to_string()}}]),
        );
        chain.apply(&mut batch);
        last = batch;
    }
    // The last 10 values are 3..=12.
    let v = &last[0].values;
    assert_eq!(v[&format!("{k}_min")], json!(3));
    assert_eq!(v[&format!("{k}_max")], json!(12));
    assert_eq!(v[&format!("{k}_avg")], json!(7.5));
}

#[test]
fn runtime_error_passes_the_batch_and_later_batches_still_run() {
    let source = r#"
def apply(*events):
  for e in events:
    if e.name == "boom":
      fail("boom")
    e.tags["seen"] = "1"
  return events
"#;
    let procs = Processors::from_config(&cfg(source)).unwrap();
    let mut chain = procs.chain(&["sample-processor"]).unwrap();
    let mut bad = events(&json!([{"name": "boom"}]));
    chain.apply(&mut bad);
    assert_eq!(bad.len(), 1);
    let mut good = events(&json!([{"name": "ok"}]));
    chain.apply(&mut good);
    assert_eq!(good[0].tags["seen"], "1");
}

#[test]
fn heap_is_collected_between_batches() {
    // Every batch allocates; the interpreter's heap must not grow without
    // bound (GC between batches). Run enough batches to pass the GC floor.
    let source = r#"
def apply(*events):
  for e in events:
    e.values["big"] = "x" * 100000
  return events
"#;
    let procs = Processors::from_config(&cfg(source)).unwrap();
    let mut chain = procs.chain(&["sample-processor"]).unwrap();
    for _ in 0..600 {
        let mut batch = events(&json!([{"name": "s"}]));
        chain.apply(&mut batch);
        assert_eq!(batch[0].values["big"].as_str().map(str::len), Some(100000));
    }
}

#[test]
fn script_file() {
    let dir = std::env::temp_dir().join(format!("gnomon-proc-star-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("proc.star");
    std::fs::write(
        &path,
        "def apply(*events):\n  return [e for e in events if e.name != 'x']\n",
    )
    .unwrap();
    check_one(
        "script: from a file",
        json!({"p": {"event-starlark": {"script": path.to_str().unwrap()}}}),
        json!([{"name": "x"}, {"name": "y"}]),
        json!([{"name": "y"}]),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
