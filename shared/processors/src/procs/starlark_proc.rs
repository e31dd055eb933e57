//! event-starlark: a Starlark `apply(*events)` function over each batch.
//!
//! The interpreter of one chain lives on its own thread: Starlark values are
//! not `Send`, and gnmic's scripts keep state in module globals (the
//! documented `cache = {}` idiom), so the module must outlive a batch. A
//! batch crosses to that thread and back through two bounded channels. The
//! heap is garbage-collected between batches once it has doubled (16 MiB at
//! least), so only what the script keeps (its globals) stays in memory.

// `time.time(...)` takes Go's eight calendar arguments.
#![allow(clippy::too_many_arguments)]
// starlark's derives of its unsafe traits (`ProvidesStaticType`, `Trace`) expand to
// `unsafe impl`s at module level; no unsafe code is written here by hand.
#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use allocative::Allocative;
use serde_json::Value as Json;
use starlark::any::ProvidesStaticType;
use starlark::environment::{
    FrozenModule, Globals, GlobalsBuilder, LibraryExtension, Methods, MethodsBuilder,
    MethodsStatic, Module,
};
use starlark::eval::{Evaluator, FileLoader};
use starlark::starlark_module;
use starlark::syntax::{AstModule, Dialect};
use starlark::values::dict::{AllocDict, DictRef};
use starlark::values::list::{AllocList, ListRef};
use starlark::values::{
    starlark_value, Heap, NoSerialize, StarlarkValue, Trace, UnpackValue, Value, ValueLike as _,
};

use crate::build::{Build, Resolve};
use crate::chain::Apply;
use crate::config::{one_line, Fields};
use crate::error::ProcessorError;
use crate::golayout::{Layout, RFC3339};
use crate::record::{FieldMap, Record, Str, Val};

struct StarlarkSpec {
    processor: String,
    file: String,
    source: String,
}

pub(crate) fn starlark(f: &Fields<'_>) -> Result<Arc<dyn Build>, ProcessorError> {
    let source = f.string("source")?.filter(|s| !s.trim().is_empty());
    let script = f.string("script")?.filter(|s| !s.trim().is_empty());
    let (key, file, source) = match (source, script) {
        (Some(_), Some(path)) => {
            return Err(f.err_str("script", &path, "only one of source and script can be set"));
        }
        (None, None) => {
            return Err(f.err_str("source", "", "one of source or script must be set"));
        }
        (Some(src), None) => ("source", format!("{}.star", f.processor), src),
        (None, Some(path)) => {
            let src = std::fs::read_to_string(&path)
                .map_err(|e| f.err_str("script", &path, format!("cannot read: {e}")))?;
            ("script", path, src)
        }
    };
    // Compile and run the top level once now, so a broken script stops
    // startup instead of every batch.
    check_program(&file, &source).map_err(|e| {
        let shown = if key == "script" {
            file.clone()
        } else {
            source.clone()
        };
        f.err_str(key, &shown, e)
    })?;
    Ok(Arc::new(StarlarkSpec {
        processor: f.processor.to_string(),
        file,
        source,
    }))
}

fn dialect() -> Dialect {
    // gnmic enables sets, global reassignment and recursion; the extended
    // dialect is the closest (top-level if/for, lambdas, nested defs).
    Dialect {
        enable_f_strings: true,
        ..Dialect::Extended
    }
}

fn globals() -> Globals {
    GlobalsBuilder::extended_by(&[
        LibraryExtension::StructType,
        LibraryExtension::Print,
        LibraryExtension::Json,
        LibraryExtension::Map,
        LibraryExtension::Filter,
        LibraryExtension::SetType,
    ])
    .with(event_builtins)
    .build()
}

/// `load("math.star", "math")` and `load("time.star", "time")`.
struct Loader {
    math: FrozenModule,
    time: FrozenModule,
}

impl Loader {
    fn new() -> Result<Self, String> {
        let one = |name: &str, build: fn(&mut GlobalsBuilder)| -> Result<FrozenModule, String> {
            let globals = GlobalsBuilder::new().with_namespace(name, build).build();
            Module::with_temp_heap(|module| {
                module.frozen_heap().add_reference(globals.heap());
                for (n, v) in globals.iter() {
                    if n == name {
                        module.set(name, v.to_value());
                    }
                }
                module.freeze().map_err(|e| format!("{e:?}"))
            })
        };
        Ok(Self {
            math: one("math", math_members)?,
            time: one("time", time_members)?,
        })
    }
}

impl FileLoader for Loader {
    fn load(&self, path: &str) -> starlark::Result<FrozenModule> {
        match path {
            "math.star" => Ok(self.math.dupe_module()),
            "time.star" => Ok(self.time.dupe_module()),
            other => Err(starlark::Error::new_other(anyhow::anyhow!(
                "module {other:?} unknown (math.star and time.star are available)"
            ))),
        }
    }
}

trait DupeModule {
    fn dupe_module(&self) -> FrozenModule;
}

impl DupeModule for FrozenModule {
    fn dupe_module(&self) -> FrozenModule {
        self.clone()
    }
}

struct Printer {
    processor: String,
}

impl starlark::PrintHandler for Printer {
    fn println(&self, text: &str) -> starlark::Result<()> {
        tracing::info!(
            processor = self.processor.as_str(),
            "starlark print: {text}"
        );
        Ok(())
    }
}

/// Starlark's multi-line diagnostics as one line: message and location.
fn error_line(e: &dyn fmt::Display) -> String {
    let text = e.to_string();
    let mut message = None;
    let mut at = None;
    for line in text.lines() {
        let t = line.trim();
        if message.is_none() && !t.is_empty() {
            message = Some(t.trim_start_matches("error:").trim().to_string());
        } else if at.is_none() {
            if let Some(loc) = t.strip_prefix("-->") {
                at = Some(loc.trim().to_string());
            }
        }
    }
    match (message, at) {
        (Some(m), Some(a)) => format!("{m} at {a}"),
        (Some(m), None) => m,
        _ => one_line(&text),
    }
}

fn check_program(file: &str, source: &str) -> Result<(), String> {
    let ast = AstModule::parse(file, source.to_string(), &dialect()).map_err(|e| error_line(&e))?;
    let globals = globals();
    let loader = Loader::new().map_err(|e| one_line(&e))?;
    Module::with_temp_heap(|module| {
        module.set("cache", module.heap().alloc(AllocDict::EMPTY));
        let mut eval = Evaluator::new(&module);
        eval.set_loader(&loader);
        eval.eval_module(ast, &globals)
            .map_err(|e| error_line(&e))?;
        match module.get("apply") {
            Some(f) if f.get_type() == "function" => Ok(()),
            Some(other) => Err(format!("apply is a {}, not a function", other.get_type())),
            None => Err("missing global function apply(*events)".to_string()),
        }
    })
}

impl Build for StarlarkSpec {
    fn build(&self, _: &dyn Resolve) -> Result<Box<dyn Apply>, ProcessorError> {
        let (job_tx, job_rx) = mpsc::sync_channel::<Vec<Record>>(1);
        let (out_tx, out_rx) = mpsc::sync_channel::<Vec<Record>>(1);
        let processor = self.processor.clone();
        let file = self.file.clone();
        let source = self.source.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("starlark-{}", self.processor))
            .spawn(move || worker(processor, file, source, job_rx, out_tx));
        if let Err(e) = spawned {
            return Err(ProcessorError::Definition {
                processor: self.processor.clone(),
                reason: format!("cannot start the Starlark thread: {e}"),
            });
        }
        Ok(Box::new(StarlarkProc {
            processor: self.processor.clone(),
            jobs: job_tx,
            results: out_rx,
            dead: false,
        }))
    }
}

struct StarlarkProc {
    processor: String,
    jobs: SyncSender<Vec<Record>>,
    results: Receiver<Vec<Record>>,
    dead: bool,
}

impl Apply for StarlarkProc {
    fn apply(&mut self, events: &mut Vec<Record>) {
        if self.dead || events.is_empty() {
            return;
        }
        let batch = std::mem::take(events);
        if let Err(mpsc::SendError(batch)) = self.jobs.send(batch) {
            *events = batch;
            self.dead = true;
            tracing::error!(
                processor = self.processor.as_str(),
                "starlark thread is gone; events pass unchanged"
            );
            return;
        }
        match self.results.recv() {
            Ok(out) => *events = out,
            Err(_) => {
                self.dead = true;
                tracing::error!(
                    processor = self.processor.as_str(),
                    "starlark thread stopped; batch lost"
                );
            }
        }
    }
}

/// Each batch runs as one top-level statement of the script's module, so
/// Starlark's own collector may run before it (it only collects at
/// top-level statements, where every live value is reachable from the
/// module). Inputs and outputs stay in module slots, never in Rust locals,
/// across the evaluation.
const CALL: &str = "__gnomon_out = apply(*__gnomon_in)\n";

fn worker(
    processor: String,
    file: String,
    source: String,
    jobs: Receiver<Vec<Record>>,
    results: SyncSender<Vec<Record>>,
) {
    let globals = globals();
    let printer = Printer {
        processor: processor.clone(),
    };
    let loader = match Loader::new() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                processor = processor.as_str(),
                error = e.as_str(),
                "starlark modules failed"
            );
            passthrough(jobs, results);
            return;
        }
    };
    let ast = match AstModule::parse(&file, source, &dialect()) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(processor = processor.as_str(), error = %e, "starlark script does not parse");
            passthrough(jobs, results);
            return;
        }
    };
    Module::with_temp_heap(|module| {
        module.set("cache", module.heap().alloc(AllocDict::EMPTY));
        let mut eval = Evaluator::new(&module);
        eval.set_loader(&loader);
        eval.set_print_handler(&printer);
        if let Err(e) = eval.eval_module(ast, &globals) {
            tracing::error!(processor = processor.as_str(), error = %e, "starlark script failed");
            drop(eval);
            passthrough(jobs, results);
            return;
        }
        for batch in jobs.iter() {
            let out = run_batch(&processor, &mut eval, &module, &globals, batch);
            if results.send(out).is_err() {
                return;
            }
        }
    });
}

fn passthrough(jobs: Receiver<Vec<Record>>, results: SyncSender<Vec<Record>>) {
    for batch in jobs.iter() {
        if results.send(batch).is_err() {
            return;
        }
    }
}

fn run_batch<'v>(
    processor: &str,
    eval: &mut Evaluator<'v, '_, '_>,
    module: &Module<'v>,
    globals: &Globals,
    batch: Vec<Record>,
) -> Vec<Record> {
    let heap = module.heap();
    let input: Vec<Value<'v>> = batch
        .into_iter()
        .map(|e| heap.alloc(StarEvent::from_event(heap, e)))
        .collect();
    module.set("__gnomon_in", heap.alloc(AllocList(input)));
    module.set("__gnomon_out", Value::new_none());
    let ran = AstModule::parse("gnomon-call.star", CALL.to_string(), &dialect())
        .map_err(|e| error_line(&e))
        .and_then(|call| {
            eval.eval_module(call, globals)
                .map(|_| ())
                .map_err(|e| error_line(&e))
        });
    // Values are re-read from the module: a collection may have moved them.
    let inputs = || -> Vec<Record> {
        module
            .get("__gnomon_in")
            .and_then(ListRef::from_value)
            .map(|l| l.iter().filter_map(|v| to_event(processor, v)).collect())
            .unwrap_or_default()
    };
    let out = match ran {
        Err(e) => {
            tracing::warn!(
                processor,
                error = e.as_str(),
                "starlark apply failed; batch passed as the script left it"
            );
            inputs()
        }
        Ok(()) => {
            let result = module.get("__gnomon_out").unwrap_or_else(Value::new_none);
            let items: Option<Vec<Value<'v>>> = if let Some(list) = ListRef::from_value(result) {
                Some(list.content().to_vec())
            } else {
                starlark::values::tuple::TupleRef::from_value(result).map(|t| t.content().to_vec())
            };
            match items {
                Some(items) => items
                    .into_iter()
                    .filter_map(|v| {
                        let e = to_event(processor, v);
                        if e.is_none() && v.downcast_ref::<StarEvent>().is_none() {
                            tracing::warn!(
                                processor,
                                kind = v.get_type(),
                                "starlark apply returned a non-Event item; skipped"
                            );
                        }
                        e
                    })
                    .collect(),
                None => {
                    tracing::warn!(
                        processor,
                        kind = result.get_type(),
                        "starlark apply must return a list of events; batch unchanged"
                    );
                    inputs()
                }
            }
        }
    };
    module.set("__gnomon_in", Value::new_none());
    module.set("__gnomon_out", Value::new_none());
    out
}

/// An event as Starlark sees it: `name`, `timestamp`, `tags` (dict),
/// `values` (dict), `deletes` (list), all assignable.
#[derive(Debug, Trace, ProvidesStaticType, NoSerialize, Allocative)]
struct StarEvent<'v> {
    #[allocative(skip)]
    name: RefCell<String>,
    #[allocative(skip)]
    timestamp: Cell<i64>,
    tags: RefCell<Value<'v>>,
    values: RefCell<Value<'v>>,
    deletes: RefCell<Value<'v>>,
}

impl<'v> StarEvent<'v> {
    fn from_event(heap: Heap<'v>, e: Record) -> Self {
        let tags = heap.alloc(AllocDict(
            e.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ));
        let values = heap.alloc(AllocDict(
            e.values
                .iter()
                .map(|(k, v)| (k.as_str(), alloc_value(heap, v))),
        ));
        let deletes = heap.alloc(AllocList(e.deletes.iter().map(|d| d.as_str())));
        Self {
            name: RefCell::new(e.name.into_string()),
            timestamp: Cell::new(e.timestamp),
            tags: RefCell::new(tags),
            values: RefCell::new(values),
            deletes: RefCell::new(deletes),
        }
    }
}

impl fmt::Display for StarEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match to_event_ref(self) {
            Ok(e) => write!(f, "{}", serde_json::to_string(&e).unwrap_or_default()),
            Err(_) => write!(f, "Event({:?})", self.name.borrow()),
        }
    }
}

impl<'v> starlark::values::AllocValue<'v> for StarEvent<'v> {
    fn alloc_value(self, heap: Heap<'v>) -> Value<'v> {
        heap.alloc_complex_no_freeze(self)
    }
}

#[starlark_value(type = "Event")]
impl<'v> StarlarkValue<'v> for StarEvent<'v> {
    fn get_attr(&self, attribute: &str, heap: Heap<'v>) -> Option<Value<'v>> {
        match attribute {
            "name" => Some(heap.alloc(self.name.borrow().as_str())),
            "timestamp" => Some(heap.alloc(self.timestamp.get())),
            "tags" => Some(*self.tags.borrow()),
            "values" => Some(*self.values.borrow()),
            "deletes" => Some(*self.deletes.borrow()),
            _ => None,
        }
    }

    fn has_attr(&self, attribute: &str, _: Heap<'v>) -> bool {
        matches!(
            attribute,
            "name" | "timestamp" | "tags" | "values" | "deletes"
        )
    }

    fn dir_attr(&self) -> Vec<String> {
        ["name", "timestamp", "tags", "values", "deletes"]
            .map(String::from)
            .to_vec()
    }

    fn set_attr(&self, attribute: &str, value: Value<'v>) -> starlark::Result<()> {
        let fail = |what: &str| -> starlark::Result<()> {
            Err(starlark::Error::new_other(anyhow::anyhow!(
                "Event.{attribute} must be {what}, got {}",
                value.get_type()
            )))
        };
        match attribute {
            "name" => match value.unpack_str() {
                Some(s) => *self.name.borrow_mut() = s.to_string(),
                None => return fail("a string"),
            },
            "timestamp" => match i64::unpack_value(value) {
                Ok(Some(ts)) => self.timestamp.set(ts),
                _ => return fail("an int64"),
            },
            "tags" | "values" => {
                if DictRef::from_value(value).is_none() {
                    return fail("a dict");
                }
                if attribute == "tags" {
                    *self.tags.borrow_mut() = value;
                } else {
                    *self.values.borrow_mut() = value;
                }
            }
            "deletes" => {
                if ListRef::from_value(value).is_none() {
                    return fail("a list of strings");
                }
                *self.deletes.borrow_mut() = value;
            }
            _ => {
                return Err(starlark::Error::new_other(anyhow::anyhow!(
                    "Event has no field {attribute:?} (name, timestamp, tags, values, deletes)"
                )))
            }
        }
        Ok(())
    }
}

/// An event value as a Starlark value (numbers, strings and booleans
/// directly; JSON as Starlark lists and dicts).
fn alloc_value<'v>(heap: Heap<'v>, v: &Val) -> Value<'v> {
    match v {
        Val::Bool(b) => Value::new_bool(*b),
        Val::Int(i) => heap.alloc(*i),
        Val::Uint(u) => heap.alloc(*u),
        Val::Float(f) => heap.alloc(*f),
        Val::Str(s) => heap.alloc(s.as_str()),
        Val::Json(j) => heap.alloc(&**j),
    }
}

fn to_event(processor: &str, v: Value<'_>) -> Option<Record> {
    let se = v.downcast_ref::<StarEvent>()?;
    match to_event_ref(se) {
        Ok(e) => Some(e),
        Err(err) => {
            tracing::warn!(
                processor,
                error = err.as_str(),
                "starlark event has invalid fields; dropped"
            );
            None
        }
    }
}

fn to_event_ref(se: &StarEvent<'_>) -> Result<Record, String> {
    let mut e = Record {
        name: Str::from(se.name.borrow().as_str()),
        timestamp: se.timestamp.get(),
        ..Default::default()
    };
    let tags = *se.tags.borrow();
    let dict = DictRef::from_value(tags).ok_or("tags is not a dict")?;
    for (k, v) in dict.iter() {
        let k = k.unpack_str().ok_or("a tag name is not a string")?;
        let v = match v.unpack_str() {
            Some(s) => Str::from(s),
            None => Str::from(v.to_str()),
        };
        e.tags.insert(k, v);
    }
    let values = *se.values.borrow();
    let dict = DictRef::from_value(values).ok_or("values is not a dict")?;
    let mut out: FieldMap<Val> = FieldMap::new();
    for (k, v) in dict.iter() {
        let k = k.unpack_str().ok_or("a value name is not a string")?;
        let j: Json = v.to_json_value().map_err(|e| format!("value {k:?}: {e}"))?;
        out.insert(k, Val::from_json(j));
    }
    e.values = out;
    let deletes = *se.deletes.borrow();
    let list = ListRef::from_value(deletes).ok_or("deletes is not a list")?;
    for d in list.iter() {
        e.deletes
            .push(Str::from(d.unpack_str().ok_or("a delete is not a string")?));
    }
    Ok(e)
}

#[starlark_module]
fn event_builtins(builder: &mut GlobalsBuilder) {
    /// `Event(name, timestamp=0, tags={}, values={}, deletes=[])`.
    fn Event<'v>(
        #[starlark(require = pos)] name: &str,
        #[starlark(default = 0)] timestamp: i64,
        tags: Option<Value<'v>>,
        values: Option<Value<'v>>,
        deletes: Option<Value<'v>>,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        let ev = StarEvent {
            name: RefCell::new(name.to_string()),
            timestamp: Cell::new(timestamp),
            tags: RefCell::new(heap.alloc(AllocDict::EMPTY)),
            values: RefCell::new(heap.alloc(AllocDict::EMPTY)),
            deletes: RefCell::new(heap.alloc(AllocList::EMPTY)),
        };
        for (field, v) in [("tags", tags), ("values", values), ("deletes", deletes)] {
            if let Some(v) = v.filter(|v| !v.is_none()) {
                ev.set_attr(field, v).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        Ok(heap.alloc(ev))
    }

    /// A copy of an event (its tags, values and deletes copied too).
    fn copy_event<'v>(
        #[starlark(require = pos)] event: Value<'v>,
        heap: Heap<'v>,
    ) -> anyhow::Result<Value<'v>> {
        let se = event.downcast_ref::<StarEvent>().ok_or_else(|| {
            anyhow::anyhow!("copy_event expects an Event, got {}", event.get_type())
        })?;
        let copy_dict = |v: Value<'v>| -> Value<'v> {
            match DictRef::from_value(v) {
                Some(d) => heap.alloc(AllocDict(d.iter().collect::<Vec<_>>())),
                None => heap.alloc(AllocDict::EMPTY),
            }
        };
        let deletes = match ListRef::from_value(*se.deletes.borrow()) {
            Some(l) => heap.alloc(AllocList(l.iter().collect::<Vec<_>>())),
            None => heap.alloc(AllocList::EMPTY),
        };
        Ok(heap.alloc(StarEvent {
            name: RefCell::new(se.name.borrow().clone()),
            timestamp: Cell::new(se.timestamp.get()),
            tags: RefCell::new(copy_dict(*se.tags.borrow())),
            values: RefCell::new(copy_dict(*se.values.borrow())),
            deletes: RefCell::new(deletes),
        }))
    }
}

#[starlark_module]
fn math_members(builder: &mut GlobalsBuilder) {
    const e: f64 = std::f64::consts::E;
    const pi: f64 = std::f64::consts::PI;

    fn ceil(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<i64> {
        Ok(x.0.ceil() as i64)
    }
    fn floor(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<i64> {
        Ok(x.0.floor() as i64)
    }
    fn round(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.round())
    }
    fn fabs(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.abs())
    }
    fn copysign(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
        #[starlark(require = pos)] y: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.copysign(y.0))
    }
    fn r#mod(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
        #[starlark(require = pos)] y: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0 % y.0)
    }
    fn remainder(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
        #[starlark(require = pos)] y: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        let n = (x.0 / y.0).round_ties_even();
        Ok(x.0 - n * y.0)
    }
    fn pow(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
        #[starlark(require = pos)] y: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.powf(y.0))
    }
    fn exp(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.exp())
    }
    fn sqrt(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.sqrt())
    }
    fn acos(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.acos())
    }
    fn asin(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.asin())
    }
    fn atan(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.atan())
    }
    fn atan2(
        #[starlark(require = pos)] y: starlark::values::float::UnpackFloat,
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(y.0.atan2(x.0))
    }
    fn cos(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.cos())
    }
    fn sin(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.sin())
    }
    fn tan(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.tan())
    }
    fn hypot(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
        #[starlark(require = pos)] y: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.hypot(y.0))
    }
    fn degrees(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.to_degrees())
    }
    fn radians(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.to_radians())
    }
    fn acosh(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.acosh())
    }
    fn asinh(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.asinh())
    }
    fn atanh(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.atanh())
    }
    fn cosh(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.cosh())
    }
    fn sinh(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.sinh())
    }
    fn tanh(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(x.0.tanh())
    }
    fn log(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
        #[starlark(require = pos)] base: Option<starlark::values::float::UnpackFloat>,
    ) -> anyhow::Result<f64> {
        Ok(match base {
            Some(b) => x.0.ln() / b.0.ln(),
            None => x.0.ln(),
        })
    }
    fn gamma(
        #[starlark(require = pos)] x: starlark::values::float::UnpackFloat,
    ) -> anyhow::Result<f64> {
        Ok(gamma_fn(x.0))
    }
}

/// Lanczos approximation of Γ(x) (Go's math.Gamma to ~15 digits).
fn gamma_fn(x: f64) -> f64 {
    if x < 0.5 {
        return std::f64::consts::PI / ((std::f64::consts::PI * x).sin() * gamma_fn(1.0 - x));
    }
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    (2.0 * std::f64::consts::PI).sqrt() * t.powf(x + 0.5) * (-t).exp() * a
}

/// A point in time for scripts (`time` module).
#[derive(Debug, ProvidesStaticType, NoSerialize, Allocative, Clone)]
struct StarTime {
    #[allocative(skip)]
    zoned: jiff::Zoned,
}

starlark::starlark_simple_value!(StarTime);

impl fmt::Display for StarTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            Layout::new("2006-01-02 15:04:05.999999999 -0700 MST").format(&self.zoned)
        )
    }
}

static TIME_METHODS: MethodsStatic = MethodsStatic::new("time.time", time_methods);

#[starlark_value(type = "time.time")]
impl<'v> StarlarkValue<'v> for StarTime {
    fn get_methods() -> Option<&'static Methods> {
        Some(TIME_METHODS.methods())
    }

    fn get_attr(&self, attribute: &str, heap: Heap<'v>) -> Option<Value<'v>> {
        let z = &self.zoned;
        let v = match attribute {
            "year" => heap.alloc(z.year() as i32),
            "month" => heap.alloc(z.month() as i32),
            "day" => heap.alloc(z.day() as i32),
            "hour" => heap.alloc(z.hour() as i32),
            "minute" => heap.alloc(z.minute() as i32),
            "second" => heap.alloc(z.second() as i32),
            "nanosecond" => heap.alloc(z.subsec_nanosecond()),
            "unix" => heap.alloc(z.timestamp().as_second()),
            "unix_nano" => heap.alloc(z.timestamp().as_nanosecond() as i64),
            _ => return None,
        };
        Some(v)
    }

    fn has_attr(&self, attribute: &str, _: Heap<'v>) -> bool {
        matches!(
            attribute,
            "year"
                | "month"
                | "day"
                | "hour"
                | "minute"
                | "second"
                | "nanosecond"
                | "unix"
                | "unix_nano"
        )
    }
}

#[starlark_module]
fn time_methods(builder: &mut MethodsBuilder) {
    /// Renders the time with a Go layout.
    fn format(this: &StarTime, #[starlark(require = pos)] layout: &str) -> anyhow::Result<String> {
        Ok(Layout::new(layout).format(&this.zoned))
    }

    /// The same instant in another time zone.
    fn in_location(
        this: &StarTime,
        #[starlark(require = pos)] location: &str,
    ) -> anyhow::Result<StarTime> {
        let tz = jiff::tz::TimeZone::get(location)?;
        Ok(StarTime {
            zoned: this.zoned.with_time_zone(tz),
        })
    }
}

fn zone(location: Option<&str>) -> anyhow::Result<jiff::tz::TimeZone> {
    Ok(match location {
        None | Some("") | Some("UTC") => jiff::tz::TimeZone::UTC,
        Some("Local") => jiff::tz::TimeZone::system(),
        Some(name) => jiff::tz::TimeZone::get(name)?,
    })
}

#[starlark_module]
fn time_members(builder: &mut GlobalsBuilder) {
    /// The current local time.
    fn now() -> anyhow::Result<StarTime> {
        Ok(StarTime {
            zoned: jiff::Zoned::now(),
        })
    }

    /// The time `sec` seconds and `nsec` nanoseconds after the Unix epoch.
    fn from_timestamp(
        #[starlark(require = pos)] sec: i64,
        #[starlark(require = pos, default = 0)] nsec: i64,
    ) -> anyhow::Result<StarTime> {
        let ns = sec as i128 * 1_000_000_000 + nsec as i128;
        Ok(StarTime {
            zoned: jiff::Timestamp::from_nanosecond(ns)?.to_zoned(jiff::tz::TimeZone::system()),
        })
    }

    /// True when `loc` names a known time zone.
    fn is_valid_timezone(#[starlark(require = pos)] loc: &str) -> anyhow::Result<bool> {
        Ok(zone(Some(loc)).is_ok())
    }

    /// A Go duration string (`1h30m`, `250ms`) in nanoseconds.
    fn parse_duration(#[starlark(require = pos)] d: &str) -> anyhow::Result<i64> {
        parse_go_duration(d).ok_or_else(|| anyhow::anyhow!("invalid duration {d:?}"))
    }

    /// Parses a time with a Go layout (default RFC 3339) in a location
    /// (default UTC).
    fn parse_time(
        #[starlark(require = pos)] x: &str,
        #[starlark(default = RFC3339)] format: &str,
        #[starlark(default = "UTC")] location: &str,
    ) -> anyhow::Result<StarTime> {
        let ts = Layout::new(format)
            .parse(x)
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(StarTime {
            zoned: ts.to_zoned(zone(Some(location))?),
        })
    }

    /// The time at the given calendar fields (all optional) in a location.
    fn time(
        #[starlark(default = 1970)] year: i32,
        #[starlark(default = 1)] month: i32,
        #[starlark(default = 1)] day: i32,
        #[starlark(default = 0)] hour: i32,
        #[starlark(default = 0)] minute: i32,
        #[starlark(default = 0)] second: i32,
        #[starlark(default = 0)] nanosecond: i32,
        #[starlark(default = "UTC")] location: &str,
    ) -> anyhow::Result<StarTime> {
        let dt = jiff::civil::DateTime::new(
            year as i16,
            month as i8,
            day as i8,
            hour as i8,
            minute as i8,
            second as i8,
            nanosecond,
        )?;
        Ok(StarTime {
            zoned: dt.to_zoned(zone(Some(location))?)?,
        })
    }
}

/// Go's `time.ParseDuration`: a sequence of decimal numbers with units
/// (ns, us, µs, ms, s, m, h), optionally signed.
fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let n = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        if n == 0 {
            return None;
        }
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .bytes()
            .take_while(|b| !b.is_ascii_digit() && *b != b'.')
            .count();
        let unit = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[u..];
        total += num * unit;
    }
    let total = if neg { -total } else { total };
    (total.abs() < 9.2e18).then_some(total as i64)
}
