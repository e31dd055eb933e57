//! The HTTP side: `/api/v1/namespaces/{ns}/{resource}[/{name}]` and
//! `/apis/{group}/{version}/namespaces/{ns}/{resource}[/{name}]`.

use crate::model::{self, status, FieldSelector, Kind, LabelSelector, TokenConfig};
use crate::Shared;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

type Shr = Arc<Shared>;

/// The API server's default watch length when `timeoutSeconds` is not given.
const DEFAULT_WATCH: Duration = Duration::from_secs(1800);
/// Largest request body accepted.
const MAX_BODY: usize = 3 * 1024 * 1024;

pub fn router(shared: Shr) -> Router {
    Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/version",
            axum::routing::get(|| async {
                axum::Json(
                    json!({"major": "1", "minor": "30", "gitVersion": "v1.30.0-gnomon-double"}),
                )
            }),
        )
        .fallback(serve)
        .with_state(shared)
}

fn answer(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn failure(code: u16, reason: &str, message: &str, details: Option<Value>) -> Response {
    answer(code, &status(code, reason, message, details))
}

fn details(kind: &Kind, name: &str) -> Value {
    let mut details = json!({"name": name, "kind": kind.plural});
    if !kind.group.is_empty() {
        details["group"] = json!(kind.group);
    }
    details
}

fn not_found(kind: &Kind, name: &str) -> Response {
    failure(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", kind.qualified()),
        Some(details(kind, name)),
    )
}

fn conflict(kind: &Kind, name: &str, why: &str) -> Response {
    failure(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            kind.qualified()
        ),
        Some(details(kind, name)),
    )
}

fn bad_request(message: &str) -> Response {
    failure(400, "BadRequest", message, None)
}

fn invalid(kind: &Kind, name: &str, causes: Vec<(String, String)>) -> Response {
    let text: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
    let message = format!(
        "{}.{} \"{name}\" is invalid: {}",
        kind.kind,
        if kind.group.is_empty() {
            "core"
        } else {
            kind.group
        },
        match text.len() {
            1 => text[0].clone(),
            _ => format!("[{}]", text.join(", ")),
        }
    );
    let mut details = details(kind, name);
    details["kind"] = json!(kind.kind);
    details["causes"] = Value::Array(
        causes
            .into_iter()
            .map(|(field, message)| {
                json!({"reason": "FieldValueInvalid", "message": message, "field": field})
            })
            .collect(),
    );
    failure(422, "Invalid", &message, Some(details))
}

/// What a request is about.
struct Target {
    kind: Kind,
    namespace: String,
    name: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, plural, name) = match rest {
        ["namespaces", ns, plural] => (*ns, *plural, None),
        ["namespaces", ns, plural, name] => (*ns, *plural, Some(name.to_string())),
        _ => return None,
    };
    Some(Target {
        kind: model::kind(group, version, plural)?,
        namespace: namespace.to_string(),
        name,
    })
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding (and `+` as space) of a query component.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn authenticate<'a>(shared: &'a Shared, request: &Request) -> Result<&'a TokenConfig, Response> {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    token
        .and_then(|t| shared.cfg.tokens.iter().find(|c| c.token == t))
        .ok_or_else(|| failure(401, "Unauthorized", "Unauthorized", None))
}

fn authorize(token: &TokenConfig, target: &Target, verb: &str) -> Result<(), Response> {
    if token.allows(target.kind.group, target.kind.plural, verb) {
        return Ok(());
    }
    let subject = match &target.name {
        Some(name) => format!("{} \"{name}\"", target.kind.qualified()),
        None => target.kind.qualified(),
    };
    let message = format!(
        "{subject} is forbidden: User \"{}\" cannot {verb} resource \"{}\" in API group \"{}\" in the namespace \"{}\"",
        token.user, target.kind.plural, target.kind.group, target.namespace
    );
    Err(failure(
        403,
        "Forbidden",
        &message,
        Some(details(&target.kind, target.name.as_deref().unwrap_or(""))),
    ))
}

async fn serve(State(shared): State<Shr>, request: Request) -> Response {
    match route(shared, request).await {
        Ok(response) | Err(response) => response,
    }
}

async fn route(shared: Shr, request: Request) -> Result<Response, Response> {
    let Some(target) = parse_path(request.uri().path()) else {
        return Err(failure(
            404,
            "NotFound",
            "the server could not find the requested resource",
            Some(json!({})),
        ));
    };
    let params = query_pairs(request.uri().query().unwrap_or_default());
    let token = authenticate(&shared, &request)?.clone();
    let method = request.method().clone();
    let watching = param(&params, "watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match (&method, &target.name) {
        (&Method::GET, Some(_)) => "get",
        (&Method::GET, None) if watching => "watch",
        (&Method::GET, None) => "list",
        (&Method::POST, None) => "create",
        (&Method::PUT, Some(_)) => "update",
        (&Method::DELETE, Some(_)) => "delete",
        _ => {
            return Err(failure(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                None,
            ))
        }
    };
    authorize(&token, &target, verb)?;
    let body = axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|e| bad_request(&format!("reading the body: {e}")))?;
    match verb {
        "get" => get(&shared, &target),
        "list" => list(&shared, &target, &params),
        "watch" => watch(&shared, &target, &params),
        "create" => create(&shared, &target, &body),
        "update" => replace(&shared, &target, &body),
        _ => delete(&shared, &target, &body),
    }
}

/// The object as the API returns it: with `apiVersion` and `kind`.
fn typed(kind: &Kind, object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), json!(kind.api_version()));
        map.insert("kind".into(), json!(kind.kind));
    }
    object
}

fn get(shared: &Shared, target: &Target) -> Result<Response, Response> {
    let name = target.name.clone().unwrap_or_default();
    let store = shared.store();
    match store.get(&target.kind, &target.namespace, &name) {
        Some(object) => Ok(answer(200, &typed(&target.kind, object))),
        None => Err(not_found(&target.kind, &name)),
    }
}

fn selectors(params: &[(String, String)]) -> Result<(LabelSelector, FieldSelector), Response> {
    let labels = LabelSelector::parse(param(params, "labelSelector").unwrap_or_default())
        .map_err(|e| bad_request(&e))?;
    let fields = FieldSelector::parse(param(params, "fieldSelector").unwrap_or_default())
        .map_err(|e| bad_request(&e))?;
    Ok((labels, fields))
}

fn list(
    shared: &Shared,
    target: &Target,
    params: &[(String, String)],
) -> Result<Response, Response> {
    let (labels, fields) = selectors(params)?;
    let store = shared.store();
    let items: Vec<Value> = store
        .list(&target.kind, &target.namespace)
        .into_iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
        .collect();
    Ok(answer(
        200,
        &json!({
            "kind": format!("{}List", target.kind.kind),
            "apiVersion": target.kind.api_version(),
            "metadata": {"resourceVersion": store.version().to_string()},
            "items": items,
        }),
    ))
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn parse_object(target: &Target, body: &Bytes) -> Result<Value, Response> {
    let object: Value = serde_json::from_slice(body).map_err(|e| {
        bad_request(&format!(
            "the body of the request was in an unknown format: {e}"
        ))
    })?;
    if !object.is_object() {
        return Err(bad_request(
            "the body of the request was in an unknown format",
        ));
    }
    for (field, expected) in [
        ("kind", target.kind.kind.to_string()),
        ("apiVersion", target.kind.api_version()),
    ] {
        if let Some(value) = object.get(field).and_then(Value::as_str) {
            if value != expected {
                return Err(bad_request(&format!(
                    "the API version in the data ({}) does not match the expected API version ({})",
                    object
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    target.kind.api_version()
                )));
            }
        }
    }
    if let Some(ns) = object
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        if ns != target.namespace {
            return Err(bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    Ok(object)
}

fn meta_str(object: &Value, field: &str) -> Option<String> {
    object
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Sets the server-owned metadata on a stored object.
fn stamp(object: &mut Value, namespace: &str, uid: &str, created: &str) {
    if let Some(map) = object.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
        let meta = map.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("namespace".into(), json!(namespace));
            meta.insert("uid".into(), json!(uid));
            meta.insert("creationTimestamp".into(), json!(created));
            meta.remove("resourceVersion");
            meta.remove("managedFields");
            meta.remove("deletionTimestamp");
            meta.remove("selfLink");
        }
    }
}

fn create(shared: &Shared, target: &Target, body: &Bytes) -> Result<Response, Response> {
    let mut object = parse_object(target, body)?;
    let name = meta_str(&object, "name").unwrap_or_default();
    if meta_str(&object, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
        return Err(failure(
            500,
            "InternalError",
            "Internal error occurred: resourceVersion should not be set on objects to be created",
            None,
        ));
    }
    if !shared.cfg.namespaces.iter().any(|n| n == &target.namespace) {
        return Err(failure(
            404,
            "NotFound",
            &format!("namespaces \"{}\" not found", target.namespace),
            Some(json!({"name": target.namespace, "kind": "namespaces"})),
        ));
    }
    model::validate(&target.kind, &object).map_err(|c| invalid(&target.kind, &name, c))?;
    let mut store = shared.store();
    if store.get(&target.kind, &target.namespace, &name).is_some() {
        return Err(failure(
            409,
            "AlreadyExists",
            &format!("{} \"{name}\" already exists", target.kind.qualified()),
            Some(details(&target.kind, &name)),
        ));
    }
    let uid = uuid::Uuid::new_v4().to_string();
    stamp(&mut object, &target.namespace, &uid, &now_rfc3339());
    let change = store.write(&target.kind, &target.namespace, &name, object, "ADDED");
    let _ = shared.changes.send(change.clone());
    Ok(answer(201, &typed(&target.kind, &change.object)))
}

fn replace(shared: &Shared, target: &Target, body: &Bytes) -> Result<Response, Response> {
    let mut object = parse_object(target, body)?;
    let name = target.name.clone().unwrap_or_default();
    let body_name = meta_str(&object, "name").unwrap_or_default();
    if body_name != name {
        return Err(bad_request(&format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    model::validate(&target.kind, &object).map_err(|c| invalid(&target.kind, &name, c))?;
    let mut store = shared.store();
    let Some(current) = store.get(&target.kind, &target.namespace, &name).cloned() else {
        return Err(not_found(&target.kind, &name));
    };
    let current_version = meta_str(&current, "resourceVersion").unwrap_or_default();
    if let Some(version) = meta_str(&object, "resourceVersion").filter(|v| !v.is_empty()) {
        if version != current_version {
            return Err(conflict(
                &target.kind,
                &name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
    }
    let uid = meta_str(&current, "uid").unwrap_or_default();
    let created = meta_str(&current, "creationTimestamp").unwrap_or_default();
    stamp(&mut object, &target.namespace, &uid, &created);
    // A no-op update changes nothing, not even the resourceVersion.
    let mut unchanged = current.clone();
    if let Some(meta) = unchanged.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    if unchanged == object {
        return Ok(answer(200, &typed(&target.kind, &current)));
    }
    let change = store.write(&target.kind, &target.namespace, &name, object, "MODIFIED");
    let _ = shared.changes.send(change.clone());
    Ok(answer(200, &typed(&target.kind, &change.object)))
}

fn delete(shared: &Shared, target: &Target, body: &Bytes) -> Result<Response, Response> {
    let name = target.name.clone().unwrap_or_default();
    let options: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| bad_request(&format!("DeleteOptions: {e}")))?
    };
    let mut store = shared.store();
    let Some(current) = store.get(&target.kind, &target.namespace, &name).cloned() else {
        return Err(not_found(&target.kind, &name));
    };
    let preconditions = options.get("preconditions").cloned().unwrap_or(Value::Null);
    for (field, label) in [("resourceVersion", "ResourceVersion"), ("uid", "UID")] {
        if let Some(expected) = preconditions.get(field).and_then(Value::as_str) {
            let actual = meta_str(&current, field).unwrap_or_default();
            if expected != actual {
                return Err(conflict(
                    &target.kind,
                    &name,
                    &format!(
                        "Precondition failed: {label} in precondition: {expected}, {label} in object meta: {actual}"
                    ),
                ));
            }
        }
    }
    let uid = meta_str(&current, "uid").unwrap_or_default();
    let change = store.write(&target.kind, &target.namespace, &name, current, "DELETED");
    let _ = shared.changes.send(change);
    let mut details = details(&target.kind, &name);
    details["uid"] = json!(uid);
    Ok(answer(200, &status(200, "", "", Some(details))))
}

/// The event a watcher with these selectors sees for `change`, if any.
fn event_for(
    target: &Target,
    labels: &LabelSelector,
    fields: &FieldSelector,
    change: &model::Change,
) -> Option<Value> {
    if change.plural != target.kind.plural || change.namespace != target.namespace {
        return None;
    }
    let matches = |o: &Value| labels.matches(o) && fields.matches(o);
    let now = matches(&change.object);
    let kind = match change.kind {
        "MODIFIED" => {
            let before = change.previous.as_ref().is_some_and(matches);
            match (before, now) {
                (true, true) => "MODIFIED",
                (false, true) => "ADDED",
                (true, false) => "DELETED",
                (false, false) => return None,
            }
        }
        other if now => other,
        _ => return None,
    };
    Some(json!({"type": kind, "object": typed(&target.kind, &change.object)}))
}

fn watch(shared: &Shr, target: &Target, params: &[(String, String)]) -> Result<Response, Response> {
    let (labels, fields) = selectors(params)?;
    let timeout = param(params, "timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WATCH);
    let requested = param(params, "resourceVersion")
        .unwrap_or_default()
        .to_string();
    // Subscribe before reading, so nothing falls between the two.
    let live = shared.changes.subscribe();
    let mut first: Vec<Value> = Vec::new();
    let from: u64;
    {
        let store = shared.store();
        if requested.is_empty() || requested == "0" {
            first.extend(
                store
                    .list(&target.kind, &target.namespace)
                    .into_iter()
                    .filter(|o| labels.matches(o) && fields.matches(o))
                    .map(|o| json!({"type": "ADDED", "object": typed(&target.kind, &o)})),
            );
            from = store.version();
        } else {
            let version: u64 = requested
                .parse()
                .map_err(|_| bad_request(&format!("invalid resource version: {requested:?}")))?;
            if version < store.compacted() {
                let gone = status(
                    410,
                    "Expired",
                    &format!(
                        "too old resource version: {version} ({})",
                        store.compacted() + 1
                    ),
                    None,
                );
                let line = format!("{}\n", json!({"type": "ERROR", "object": gone}));
                return Ok(stream_response(Body::from(line)));
            }
            first.extend(
                store
                    .since(version)
                    .iter()
                    .filter_map(|c| event_for(target, &labels, &fields, c)),
            );
            from = store.version().max(version);
        }
    }
    let target = Target {
        kind: target.kind,
        namespace: target.namespace.clone(),
        name: None,
    };
    let mut epoch = shared.epoch.subscribe();
    epoch.borrow_and_update();
    let stream = async_stream(first, from, target, labels, fields, timeout, live)
        .take_until(async move {
            let _ = epoch.changed().await;
        })
        .boxed();
    Ok(stream_response(Body::from_stream(stream)))
}

fn stream_response(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The watch stream: `first`, then live changes after `from`, until `timeout` or until the
/// watcher falls behind.
fn async_stream(
    first: Vec<Value>,
    from: u64,
    target: Target,
    labels: LabelSelector,
    fields: FieldSelector,
    timeout: Duration,
    live: tokio::sync::broadcast::Receiver<std::sync::Arc<model::Change>>,
) -> futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let initial = futures::stream::iter(
        first
            .into_iter()
            .map(|event| Ok(Bytes::from(format!("{event}\n")))),
    );
    let changes = futures::stream::unfold(
        (live, target, labels, fields),
        move |(mut live, target, labels, fields)| async move {
            loop {
                let change = tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return None,
                    change = live.recv() => change,
                };
                match change {
                    Ok(change) if change.version <= from => continue,
                    Ok(change) => {
                        if let Some(event) = event_for(&target, &labels, &fields, &change) {
                            let line = Bytes::from(format!("{event}\n"));
                            return Some((Ok(line), (live, target, labels, fields)));
                        }
                    }
                    // Too slow, or the double stopped: the API server closes the watch.
                    Err(_) => return None,
                }
            }
        },
    );
    initial.chain(changes).boxed()
}
