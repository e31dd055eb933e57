//! HTTP handlers of the double, one per Consul endpoint in the subset.

// Errors here *are* the HTTP answers (status + Consul's body), so they are `Response`s.
#![allow(clippy::result_large_err)]

use crate::model::{
    validate_key, Behavior, Check, KvEntry, Service, Session, State, SERF_HEALTH,
    SESSION_TTL_MULTIPLIER,
};
use crate::Shared;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as Ax};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use base64::Engine;
use gnomon_common::duration::{format_go_duration, parse_go_duration};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Shr = Arc<Shared>;
type Params = Query<Vec<(String, String)>>;
type Reply = Result<Response, Response>;

const MAX_VALUE_SIZE: usize = 512 * 1024;
const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);
const MAX_SESSION_TTL: Duration = Duration::from_secs(86400);
const NODE_ID: &str = "6f1e1c7e-0000-4000-8000-00000000d0b1";

pub fn router(shared: Shr) -> Router {
    Router::new()
        .route("/v1/session/create", put(session_create))
        .route("/v1/session/renew/{id}", put(session_renew))
        .route("/v1/session/destroy/{id}", put(session_destroy))
        .route("/v1/session/info/{id}", get(session_info))
        .route("/v1/session/list", get(session_list))
        .route("/v1/session/node/{node}", get(session_node))
        .route("/v1/kv/", get(kv_get_root))
        .route("/v1/kv/{*key}", get(kv_get).put(kv_put).delete(kv_delete))
        .route("/v1/agent/service/register", put(service_register))
        .route("/v1/agent/service/deregister/{id}", put(service_deregister))
        .route("/v1/agent/check/update/{id}", put(check_update))
        .route("/v1/agent/check/{verb}/{id}", put(check_pass_warn_fail))
        .route("/v1/health/service/{name}", get(health_service))
        .route("/v1/catalog/service/{name}", get(catalog_service))
        .route("/v1/catalog/services", get(catalog_services))
        .route("/v1/status/leader", get(status_leader))
        .with_state(shared)
}

fn first<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn has(params: &[(String, String)], name: &str) -> bool {
    first(params, name).is_some()
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

fn with_index(mut response: Response, index: u64) -> Response {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&index.max(1).to_string()) {
        headers.insert("X-Consul-Index", value);
    }
    headers.insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
    headers.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
    response
}

fn json_reply(value: Value) -> Response {
    axum::Json(value).into_response()
}

fn bool_reply(value: bool) -> Response {
    json_reply(Value::Bool(value))
}

/// Checks what every endpoint checks: stopped, ACL token, datacenter.
fn gate(shared: &Shared, headers: &HeaderMap, params: &[(String, String)]) -> Result<(), Response> {
    if shared.read(|s| s.stopped) {
        return Err(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "consul double stopped",
        ));
    }
    if let Some(required) = &shared.cfg.acl_token {
        let header_token = headers.get("X-Consul-Token").and_then(|v| v.to_str().ok());
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let given = header_token.or(bearer).or(first(params, "token"));
        if given != Some(required.as_str()) {
            // What Consul answers when the token (or the anonymous token) may not do this.
            shared
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(plain(StatusCode::FORBIDDEN, "Permission denied"));
        }
    }
    if let Some(dc) = first(params, "dc") {
        if dc != shared.cfg.datacenter {
            return Err(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "No path to datacenter",
            ));
        }
    }
    Ok(())
}

/// Parks a blocking query until `relevant` exceeds `?index=` or `?wait=` passes.
async fn block(
    shared: &Shared,
    params: &[(String, String)],
    relevant: impl Fn(&State) -> u64,
) -> Result<(), Response> {
    let requested: u64 = match first(params, "index") {
        None => return Ok(()),
        Some(text) => text
            .parse()
            .map_err(|_| plain(StatusCode::BAD_REQUEST, format!("Invalid index {text:?}")))?,
    };
    if requested == 0 {
        return Ok(());
    }
    let wait = match first(params, "wait") {
        Some(text) => parse_go_duration(text)
            .map_err(|e| plain(StatusCode::BAD_REQUEST, format!("Invalid wait time: {e}")))?,
        None => DEFAULT_WAIT,
    }
    .min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = shared.changes.subscribe();
    loop {
        let (stopped, index) = shared.read(|s| (s.stopped, relevant(s)));
        if stopped {
            return Err(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "consul double stopped",
            ));
        }
        if index > requested {
            return Ok(());
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return Ok(()) },
            _ = tokio::time::sleep_until(deadline) => return Ok(()),
        }
    }
}

fn field<'a>(value: &'a Value, names: &[&str]) -> Option<&'a Value> {
    names
        .iter()
        .find_map(|n| value.get(*n))
        .filter(|v| !v.is_null())
}

fn field_str<'a>(value: &'a Value, names: &[&str]) -> Option<&'a str> {
    field(value, names).and_then(Value::as_str)
}

fn decode_body(body: &Bytes) -> Result<Value, Response> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| {
        plain(
            StatusCode::BAD_REQUEST,
            format!("Request decode failed: {e}"),
        )
    })
}

fn duration_field(value: &Value, names: &[&str]) -> Result<Option<Duration>, Response> {
    match field(value, names) {
        None => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => parse_go_duration(text).map(Some).map_err(|e| {
            plain(
                StatusCode::BAD_REQUEST,
                format!("Request decode failed: {e}"),
            )
        }),
        Some(Value::Number(n)) => Ok(n.as_u64().map(Duration::from_nanos)),
        Some(other) => Err(plain(
            StatusCode::BAD_REQUEST,
            format!("Request decode failed: bad duration {other}"),
        )),
    }
}

// ----------------------------------------------------------------------------------- sessions

fn session_json(s: &Session) -> Value {
    json!({
        "ID": s.id,
        "Name": s.name,
        "Node": s.node,
        "LockDelay": s.lock_delay.as_nanos() as u64,
        "Behavior": s.behavior.as_str(),
        "TTL": s.ttl.map(format_go_duration).unwrap_or_default(),
        "Checks": s.checks,
        "NodeChecks": s.checks,
        "ServiceChecks": Value::Null,
        "CreateIndex": s.create_index,
        "ModifyIndex": s.modify_index,
    })
}

async fn session_create(
    Ax(shared): Ax<Shr>,
    headers: HeaderMap,
    Query(params): Params,
    body: Bytes,
) -> Reply {
    gate(&shared, &headers, &params)?;
    let body = decode_body(&body)?;
    let node = field_str(&body, &["Node"])
        .unwrap_or(&shared.cfg.node)
        .to_string();
    if node != shared.cfg.node {
        return Err(plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Missing node registration",
        ));
    }
    let lock_delay = match field(&body, &["LockDelay"]) {
        None => DEFAULT_LOCK_DELAY,
        // Consul's quirk: small numbers are seconds, large ones nanoseconds.
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v < 1000 => Duration::from_secs(v),
            Some(v) => Duration::from_nanos(v),
            None => {
                return Err(plain(
                    StatusCode::BAD_REQUEST,
                    "Request decode failed: bad LockDelay",
                ))
            }
        },
        Some(_) => duration_field(&body, &["LockDelay"])?.unwrap_or_default(),
    };
    let behavior = match field_str(&body, &["Behavior"]).unwrap_or("") {
        "" | "release" => Behavior::Release,
        "delete" => Behavior::Delete,
        other => {
            return Err(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Invalid Behavior setting '{other}'"),
            ))
        }
    };
    let ttl = duration_field(&body, &["TTL"])?.filter(|t| !t.is_zero());
    if let Some(ttl) = ttl {
        let min = shared.cfg.session_ttl_min;
        if ttl < min || ttl > MAX_SESSION_TTL {
            return Err(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "Invalid Session TTL '{}', must be between [{}={}]",
                    ttl.as_nanos(),
                    format_go_duration(min),
                    "24h0m0s"
                ),
            ));
        }
    }
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let checks = match (body.get("Checks"), body.get("NodeChecks")) {
        (Some(checks), _) => strings(checks),
        (None, Some(node_checks)) => {
            let mut list = strings(node_checks);
            if let Some(service_checks) = body.get("ServiceChecks").and_then(Value::as_array) {
                list.extend(
                    service_checks
                        .iter()
                        .filter_map(|c| field_str(c, &["ID"]).map(str::to_string)),
                );
            }
            list
        }
        (None, None) => vec![SERF_HEALTH.to_string()],
    };
    let name = field_str(&body, &["Name"]).unwrap_or("").to_string();
    let id = uuid::Uuid::new_v4().to_string();
    let reply_id = id.clone();
    shared.write(move |state| {
        for check in &checks {
            if check == SERF_HEALTH {
                continue;
            }
            match state.checks.get(check) {
                None => {
                    return Err(plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("Missing check '{check}' registration"),
                    ))
                }
                Some(c) if c.status == "critical" => {
                    return Err(plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("Check '{check}' is in critical state"),
                    ))
                }
                Some(_) => {}
            }
        }
        let index = state.bump();
        let now = Instant::now();
        state.sessions.insert(
            id.clone(),
            Session {
                id,
                name,
                node,
                lock_delay,
                behavior,
                ttl,
                checks,
                create_index: index,
                modify_index: index,
                deadline: ttl.map(|t| now + t * SESSION_TTL_MULTIPLIER),
            },
        );
        Ok(())
    })?;
    Ok(json_reply(json!({ "ID": reply_id })))
}

async fn session_renew(
    Ax(shared): Ax<Shr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
) -> Reply {
    gate(&shared, &headers, &params)?;
    let renewed = shared.write(|state| {
        let now = Instant::now();
        let index = state.index;
        state.sessions.get_mut(&id).map(|session| {
            session.deadline = session.ttl.map(|t| now + t * SESSION_TTL_MULTIPLIER);
            (session_json(session), index)
        })
    });
    match renewed {
        Some((entry, index)) => Ok(with_index(json_reply(json!([entry])), index)),
        None => Err(plain(
            StatusCode::NOT_FOUND,
            format!("Session id '{id}' not found"),
        )),
    }
}

async fn session_destroy(
    Ax(shared): Ax<Shr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
) -> Reply {
    gate(&shared, &headers, &params)?;
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            format!("Session ID {id:?} is not a valid UUID"),
        ));
    }
    shared.write(|state| state.invalidate_session(&id, Instant::now()));
    Ok(bool_reply(true))
}

async fn session_info(
    Ax(shared): Ax<Shr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
) -> Reply {
    gate(&shared, &headers, &params)?;
    block(&shared, &params, |s| s.index).await?;
    let (list, index) = shared.read(|s| {
        (
            s.sessions
                .get(&id)
                .map(session_json)
                .into_iter()
                .collect::<Vec<_>>(),
            s.index,
        )
    });
    Ok(with_index(json_reply(Value::Array(list)), index))
}

async fn session_list(Ax(shared): Ax<Shr>, headers: HeaderMap, Query(params): Params) -> Reply {
    gate(&shared, &headers, &params)?;
    block(&shared, &params, |s| s.index).await?;
    let (list, index) = shared.read(|s| {
        (
            s.sessions.values().map(session_json).collect::<Vec<_>>(),
            s.index,
        )
    });
    Ok(with_index(json_reply(Value::Array(list)), index))
}

async fn session_node(
    Ax(shared): Ax<Shr>,
    headers: HeaderMap,
    Path(node): Path<String>,
    Query(params): Params,
) -> Reply {
    gate(&shared, &headers, &params)?;
    block(&shared, &params, |s| s.index).await?;
    let (list, index) = shared.read(|s| {
        (
            s.sessions
                .values()
                .filter(|x| x.node == node)
                .map(session_json)
                .collect::<Vec<_>>(),
            s.index,
        )
    });
    Ok(with_index(json_reply(Value::Array(list)), index))
}

// ----------------------------------------------------------------------------------------- KV

fn kv_json(key: &str, entry: &KvEntry) -> Value {
    let mut value = json!({
        "LockIndex": entry.lock_index,
        "Key": key,
        "Flags": entry.flags,
        "Value": if entry.value.is_empty() {
            Value::Null
        } else {
            Value::String(base64::engine::general_purpose::STANDARD.encode(&entry.value))
        },
        "CreateIndex": entry.create_index,
        "ModifyIndex": entry.modify_index,
    });
    if let Some(session) = &entry.session {
        value["Session"] = Value::String(session.clone());
    }
    value
}

async fn kv_get_root(shared: Ax<Shr>, headers: HeaderMap, params: Params) -> Reply {
    kv_get(shared, headers, Path(String::new()), params).await
}

async fn kv_get(
    Ax(shared): Ax<Shr>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(params): Params,
) -> Reply {
    gate(&shared, &headers, &params)?;
    if has(&params, "keys") {
        block(&shared, &params, |s| s.prefix_index(&key)).await?;
        let separator = first(&params, "separator").filter(|s| !s.is_empty());
        let (keys, index) = shared.read(|s| {
            let mut keys: Vec<String> = Vec::new();
            for k in
                s.kv.range(key.clone()..)
                    .take_while(|(k, _)| k.starts_with(&key))
                    .map(|(k, _)| k)
            {
                let listed =
                    match separator.and_then(|sep| k[key.len()..].find(sep).map(|at| (sep, at))) {
                        Some((sep, at)) => k[..key.len() + at + sep.len()].to_string(),
                        None => k.clone(),
                    };
                if keys.last() != Some(&listed) {
                    keys.push(listed);
                }
            }
            (keys, s.prefix_index(&key))
        });
        if keys.is_empty() && !key.is_empty() {
            return Ok(with_index(StatusCode::NOT_FOUND.into_response(), index));
        }
        return Ok(with_index(json_reply(json!(keys)), index));
    }
    if has(&params, "recurse") {
        block(&shared, &params, |s| s.prefix_index(&key)).await?;
        let (entries, index) = shared.read(|s| {
            let entries: Vec<Value> =
                s.kv.range(key.clone()..)
                    .take_while(|(k, _)| k.starts_with(&key))
                    .map(|(k, e)| kv_json(k, e))
                    .collect();
            (entries, s.prefix_index(&key))
        });
        if entries.is_empty() {
            return Ok(with_index(StatusCode::NOT_FOUND.into_response(), index));
        }
        return Ok(with_index(json_reply(Value::Array(entries)), index));
    }
    if key.is_empty() {
        return Err(plain(StatusCode::BAD_REQUEST, "Missing key name"));
    }
    block(&shared, &params, |s| s.key_index(&key)).await?;
    let (found, index) = shared.read(|s| {
        (
            s.kv.get(&key).map(|e| (kv_json(&key, e), e.value.clone())),
            s.key_index(&key),
        )
    });
    match found {
        None => Ok(with_index(StatusCode::NOT_FOUND.into_response(), index)),
        Some((_, raw)) if has(&params, "raw") => Ok(with_index(
            ([(header::CONTENT_TYPE, "text/plain")], raw).into_response(),
            index,
        )),
        Some((entry, _)) => Ok(with_index(json_reply(json!([entry])), index)),
    }
}

fn check_writable_key(shared: &Shared, key: &str) -> Result<(), Response> {
    if key.is_empty() {
        return Err(plain(StatusCode::BAD_REQUEST, "Missing key name"));
    }
    if shared.cfg.strict_keys {
        validate_key(key).map_err(|e| plain(StatusCode::BAD_REQUEST, e))?;
    }
    Ok(())
}

fn parse_u64(params: &[(String, String)], name: &str) -> Result<Option<u64>, Response> {
    first(params, name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                plain(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid {name} value {v:?}"),
                )
            })
        })
        .transpose()
}

async fn kv_put(
    Ax(shared): Ax<Shr>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Reply {
    gate(&shared, &headers, &params)?;
    check_writable_key(&shared, &key)?;
    let modes = ["cas", "acquire", "release"]
        .iter()
        .filter(|m| has(&params, m))
        .count();
    if modes > 1 {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            "Conflicting flags: cas=, acquire=, release=",
        ));
    }
    if body.len() > MAX_VALUE_SIZE {
        return Err(plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body(value) too large, max size: {MAX_VALUE_SIZE} bytes"),
        ));
    }
    let flags = parse_u64(&params, "flags")?.unwrap_or(0);
    let cas = parse_u64(&params, "cas")?;
    let acquire = first(&params, "acquire").map(str::to_string);
    let release = first(&params, "release").map(str::to_string);
    let value = body.to_vec();
    let now = Instant::now();
    shared.write(move |state| {
        if let Some(session) = acquire {
            if !state.sessions.contains_key(&session) {
                return Err(plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("invalid session \"{session}\""),
                ));
            }
            let holder = state.kv.get(&key).and_then(|e| e.session.clone());
            match holder {
                Some(h) if h != session => return Ok(bool_reply(false)),
                Some(_) => {
                    let index = state.bump_kv();
                    if let Some(entry) = state.kv.get_mut(&key) {
                        entry.value = value;
                        entry.flags = flags;
                        entry.modify_index = index;
                    }
                    return Ok(bool_reply(true));
                }
                None => {}
            }
            if state
                .lock_delays
                .get(&key)
                .is_some_and(|until| *until > now)
            {
                return Ok(bool_reply(false));
            }
            let index = state.bump_kv();
            let entry = state.kv.entry(key).or_insert(KvEntry {
                create_index: index,
                modify_index: index,
                lock_index: 0,
                flags,
                value: Vec::new(),
                session: None,
            });
            entry.lock_index += 1;
            entry.session = Some(session);
            entry.value = value;
            entry.flags = flags;
            entry.modify_index = index;
            return Ok(bool_reply(true));
        }
        if let Some(session) = release {
            let ours = state
                .kv
                .get(&key)
                .is_some_and(|e| e.session.as_deref() == Some(session.as_str()));
            if !ours {
                return Ok(bool_reply(false));
            }
            let index = state.bump_kv();
            if let Some(entry) = state.kv.get_mut(&key) {
                entry.session = None;
                entry.value = value;
                entry.flags = flags;
                entry.modify_index = index;
            }
            return Ok(bool_reply(true));
        }
        if let Some(cas) = cas {
            let matches = match state.kv.get(&key) {
                None => cas == 0,
                Some(entry) => cas != 0 && entry.modify_index == cas,
            };
            if !matches {
                return Ok(bool_reply(false));
            }
        }
        let index = state.bump_kv();
        let entry = state.kv.entry(key).or_insert(KvEntry {
            create_index: index,
            modify_index: index,
            lock_index: 0,
            flags,
            value: Vec::new(),
            session: None,
        });
        entry.value = value;
        entry.flags = flags;
        entry.modify_index = index;
        Ok(bool_reply(true))
    })
}

async fn kv_delete(
    Ax(shared): Ax<Shr>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(params): Params,
) -> Reply {
    gate(&shared, &headers, &params)?;
    let recurse = has(&params, "recurse");
    let cas = parse_u64(&params, "cas")?;
    if recurse && cas.is_some() {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            "Conflicting flags: cas=, recurse",
        ));
    }
    if !recurse {
        check_writable_key(&shared, &key)?;
    }
    shared.write(|state| {
        if recurse {
            let doomed: Vec<String> = state
                .kv
                .range(key.clone()..)
                .take_while(|(k, _)| k.starts_with(&key))
                .map(|(k, _)| k.clone())
                .collect();
            if !doomed.is_empty() {
                let index = state.bump_kv();
                for k in doomed {
                    state.delete_key(&k, index);
                }
            }
            return Ok(bool_reply(true));
        }
        if let Some(cas) = cas {
            match state.kv.get(&key) {
                None => return Ok(bool_reply(true)),
                Some(entry) if entry.modify_index != cas => return Ok(bool_reply(false)),
                Some(_) => {}
            }
        }
        if state.kv.contains_key(&key) {
            let index = state.bump_kv();
            state.delete_key(&key, index);
        }
        Ok(bool_reply(true))
    })
}

// ------------------------------------------------------------------------ agent services/checks

async fn service_register(
    Ax(shared): Ax<Shr>,
    headers: HeaderMap,
    Query(params): Params,
    body: Bytes,
) -> Reply {
    gate(&shared, &headers, &params)?;
    let body = decode_body(&body)?;
    let name = field_str(&body, &["Name", "name"])
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        return Err(plain(StatusCode::BAD_REQUEST, "Missing service name"));
    }
    let id = field_str(&body, &["ID", "id"])
        .filter(|s| !s.is_empty())
        .unwrap_or(&name)
        .to_string();
    let tags: Vec<String> = field(&body, &["Tags", "tags"])
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let address = field_str(&body, &["Address", "address"])
        .unwrap_or("")
        .to_string();
    let port = match field(&body, &["Port", "port"]) {
        None => 0,
        Some(p) => p
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| plain(StatusCode::BAD_REQUEST, format!("Invalid service port {p}")))?,
    };
    let meta: BTreeMap<String, String> = field(&body, &["Meta", "meta"])
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let mut check_bodies: Vec<&Value> = Vec::new();
    if let Some(check) = field(&body, &["Check", "check"]) {
        check_bodies.push(check);
    }
    if let Some(checks) = field(&body, &["Checks", "checks"]).and_then(Value::as_array) {
        check_bodies.extend(checks.iter());
    }
    let now = Instant::now();
    let several = check_bodies.len() > 1;
    let mut checks = Vec::new();
    for (n, check) in check_bodies.into_iter().enumerate() {
        let check_id = field_str(check, &["CheckID", "check_id", "ID", "id"])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| {
                if several {
                    format!("service:{id}:{}", n + 1)
                } else {
                    format!("service:{id}")
                }
            });
        let ttl = duration_field(check, &["TTL", "ttl"])?;
        let status = field_str(check, &["Status", "status"])
            .unwrap_or("critical")
            .to_string();
        if !["passing", "warning", "critical"].contains(&status.as_str()) {
            return Err(plain(
                StatusCode::BAD_REQUEST,
                format!("Invalid check status: {status:?}"),
            ));
        }
        let deregister_after = duration_field(
            check,
            &[
                "DeregisterCriticalServiceAfter",
                "deregister_critical_service_after",
            ],
        )?;
        checks.push(Check {
            name: field_str(check, &["Name", "name"])
                .map(str::to_string)
                .unwrap_or_else(|| format!("Service '{name}' check")),
            notes: field_str(check, &["Notes", "notes"])
                .unwrap_or("")
                .to_string(),
            critical_since: (status == "critical").then_some(now),
            id: check_id,
            service_id: id.clone(),
            status,
            output: String::new(),
            ttl,
            deadline: ttl.map(|t| now + t),
            deregister_after,
        });
    }
    shared.write(|state| {
        let old: Vec<String> = state
            .checks
            .values()
            .filter(|c| c.service_id == id)
            .map(|c| c.id.clone())
            .collect();
        for check in old {
            if !checks.iter().any(|c| c.id == check) {
                state.checks.remove(&check);
                state.invalidate_sessions_bound_to(&check, now);
            }
        }
        let index = state.bump_services();
        let create_index = state
            .services
            .get(&id)
            .map(|s| s.create_index)
            .unwrap_or(index);
        state.services.insert(
            id.clone(),
            Service {
                id: id.clone(),
                name,
                tags,
                address,
                port,
                meta,
                create_index,
                modify_index: index,
            },
        );
        for check in checks {
            state.checks.insert(check.id.clone(), check);
        }
    });
    Ok(StatusCode::OK.into_response())
}

async fn service_deregister(
    Ax(shared): Ax<Shr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
) -> Reply {
    gate(&shared, &headers, &params)?;
    shared.write(|state| state.remove_service(&id, Instant::now()));
    Ok(StatusCode::OK.into_response())
}

fn unknown_check(id: &str) -> Response {
    plain(
        StatusCode::NOT_FOUND,
        format!(
            "Unknown check ID \"{id}\". Ensure that the check ID is passed, not the check name."
        ),
    )
}

fn update_check(shared: &Shared, id: &str, status: &str, output: &str) -> Reply {
    let known = shared.write(|state| {
        if !state.checks.contains_key(id) {
            return false;
        }
        state.set_check_status(id, status, output, Instant::now());
        true
    });
    if known {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(unknown_check(id))
    }
}

/// `PUT /v1/agent/check/{pass,warn,fail}/:id`: a TTL check's status, with `?note=` as its
/// output.
async fn check_pass_warn_fail(
    Ax(shared): Ax<Shr>,
    headers: HeaderMap,
    Path((verb, id)): Path<(String, String)>,
    Query(params): Params,
) -> Reply {
    let status = match verb.as_str() {
        "pass" => "passing",
        "warn" => "warning",
        "fail" => "critical",
        _ => return Err(StatusCode::NOT_FOUND.into_response()),
    };
    gate(&shared, &headers, &params)?;
    update_check(&shared, &id, status, first(&params, "note").unwrap_or(""))
}

async fn check_update(
    Ax(shared): Ax<Shr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Reply {
    gate(&shared, &headers, &params)?;
    let body = decode_body(&body)?;
    let status = field_str(&body, &["Status", "status"]).unwrap_or("");
    if !["passing", "warning", "critical"].contains(&status) {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            format!("Invalid check status: {status:?}"),
        ));
    }
    update_check(
        &shared,
        &id,
        status,
        field_str(&body, &["Output", "output"]).unwrap_or(""),
    )
}

// ------------------------------------------------------------------------- health and catalog

fn node_json(shared: &Shared) -> Value {
    json!({
        "ID": NODE_ID,
        "Node": shared.cfg.node,
        "Address": "127.0.0.1",
        "Datacenter": shared.cfg.datacenter,
        "TaggedAddresses": { "lan": "127.0.0.1", "wan": "127.0.0.1" },
        "Meta": {},
    })
}

fn check_json(shared: &Shared, check: &Check, service: Option<&Service>) -> Value {
    json!({
        "Node": shared.cfg.node,
        "CheckID": check.id,
        "Name": check.name,
        "Status": check.status,
        "Notes": check.notes,
        "Output": check.output,
        "ServiceID": service.map(|s| s.id.as_str()).unwrap_or(""),
        "ServiceName": service.map(|s| s.name.as_str()).unwrap_or(""),
        "ServiceTags": service.map(|s| s.tags.clone()).unwrap_or_default(),
        "Type": if check.ttl.is_some() { "ttl" } else { "" },
        "Namespace": "default",
    })
}

fn serf_check(shared: &Shared) -> Value {
    json!({
        "Node": shared.cfg.node,
        "CheckID": SERF_HEALTH,
        "Name": "Serf Health Status",
        "Status": "passing",
        "Notes": "",
        "Output": "Agent alive and reachable",
        "ServiceID": "",
        "ServiceName": "",
        "ServiceTags": [],
        "Type": "",
        "Namespace": "default",
    })
}

fn tags_match(service: &Service, params: &[(String, String)]) -> bool {
    params
        .iter()
        .filter(|(k, _)| k == "tag")
        .all(|(_, t)| service.tags.contains(t))
}

async fn health_service(
    Ax(shared): Ax<Shr>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(params): Params,
) -> Reply {
    gate(&shared, &headers, &params)?;
    if has(&params, "filter") {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            "filter expressions are not supported by the consul double",
        ));
    }
    block(&shared, &params, |s| s.services_index).await?;
    let passing_only = has(&params, "passing");
    let (entries, index) = shared.read(|s| {
        let entries: Vec<Value> = s
            .services
            .values()
            .filter(|svc| svc.name == name && tags_match(svc, &params))
            .filter_map(|svc| {
                let checks: Vec<&Check> = s
                    .checks
                    .values()
                    .filter(|c| c.service_id == svc.id)
                    .collect();
                if passing_only && checks.iter().any(|c| c.status != "passing") {
                    return None;
                }
                let mut check_list = vec![serf_check(&shared)];
                check_list.extend(checks.iter().map(|c| check_json(&shared, c, Some(svc))));
                Some(json!({
                    "Node": node_json(&shared),
                    "Service": {
                        "ID": svc.id,
                        "Service": svc.name,
                        "Tags": svc.tags,
                        "Address": svc.address,
                        "TaggedAddresses": {},
                        "Meta": svc.meta,
                        "Port": svc.port,
                        "Weights": { "Passing": 1, "Warning": 1 },
                        "EnableTagOverride": false,
                        "Namespace": "default",
                        "CreateIndex": svc.create_index,
                        "ModifyIndex": svc.modify_index,
                    },
                    "Checks": check_list,
                }))
            })
            .collect();
        (entries, s.services_index)
    });
    Ok(with_index(json_reply(Value::Array(entries)), index))
}

async fn catalog_service(
    Ax(shared): Ax<Shr>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(params): Params,
) -> Reply {
    gate(&shared, &headers, &params)?;
    block(&shared, &params, |s| s.services_index).await?;
    let (entries, index) = shared.read(|s| {
        let entries: Vec<Value> = s
            .services
            .values()
            .filter(|svc| svc.name == name && tags_match(svc, &params))
            .map(|svc| {
                json!({
                    "ID": NODE_ID,
                    "Node": shared.cfg.node,
                    "Address": "127.0.0.1",
                    "Datacenter": shared.cfg.datacenter,
                    "TaggedAddresses": { "lan": "127.0.0.1", "wan": "127.0.0.1" },
                    "NodeMeta": {},
                    "CreateIndex": svc.create_index,
                    "ModifyIndex": svc.modify_index,
                    "ServiceID": svc.id,
                    "ServiceName": svc.name,
                    "ServiceAddress": svc.address,
                    "ServicePort": svc.port,
                    "ServiceTags": svc.tags,
                    "ServiceMeta": svc.meta,
                    "ServiceTaggedAddresses": {},
                    "ServiceEnableTagOverride": false,
                    "ServiceKind": "",
                    "Namespace": "default",
                })
            })
            .collect();
        (entries, s.services_index)
    });
    Ok(with_index(json_reply(Value::Array(entries)), index))
}

async fn catalog_services(Ax(shared): Ax<Shr>, headers: HeaderMap, Query(params): Params) -> Reply {
    gate(&shared, &headers, &params)?;
    block(&shared, &params, |s| s.services_index).await?;
    let (names, index) = shared.read(|s| {
        let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for svc in s.services.values() {
            let tags = names.entry(svc.name.clone()).or_default();
            for tag in &svc.tags {
                if !tags.contains(tag) {
                    tags.push(tag.clone());
                }
            }
        }
        (names, s.services_index)
    });
    Ok(with_index(json_reply(json!(names)), index))
}

async fn status_leader(Ax(shared): Ax<Shr>, headers: HeaderMap, Query(params): Params) -> Reply {
    gate(&shared, &headers, &params)?;
    Ok(json_reply(json!("127.0.0.1:8300")))
}
