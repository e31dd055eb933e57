//! gnmic's REST API (the subset a collector needs), under `/api/v1`, plus `/metrics`.
//! Every response is JSON; errors are `{"errors":["..."]}`; successful mutations return
//! 200 with an empty body. No GET ever shows a password or token (`****`).

use crate::cluster_member::ClusterMember;
use crate::collector::{CollectorError, CollectorHandle};
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, patch, post};
use axum::Router;
use gnomon_api_server::{errors, health_routes, json, metrics_route, ok_empty, ApiServerOptions};
use gnomon_config::ApiConfig;
use gnomon_coordination::assignments::{Assignment, AssignmentsReply, ASSIGNMENTS_PATH};
use gnomon_coordination::member_stats::MEMBER_STATS_PATH;
use gnomon_coordination::{SubscriptionStore, TargetStore, ASSIGNMENT_HEADER};
use tracing::Instrument;

/// What the handlers need: the collector and, when clustered, its member side and the
/// cluster's target store.
#[derive(Clone)]
struct ApiState {
    collector: CollectorHandle,
    cluster: Option<ClusterApi>,
}

/// The clustered side of the API.
#[derive(Clone)]
struct ClusterApi {
    member: ClusterMember,
    store: TargetStore,
    subscriptions: SubscriptionStore,
}

/// Whether a request comes from the leader's assignment handshake.
fn is_assignment(headers: &HeaderMap) -> bool {
    headers.contains_key(ASSIGNMENT_HEADER)
}

fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/targets", get(list_targets))
        .route(
            "/api/v1/targets/{name}",
            get(get_target).post(start_target).delete(delete_target),
        )
        .route(
            "/api/v1/config/targets",
            get(list_target_configs).post(post_target_config),
        )
        .route(
            "/api/v1/config/targets/{name}",
            get(get_target_config).delete(delete_target_config),
        )
        .route(
            "/api/v1/config/targets/{name}/subscriptions",
            patch(patch_target_subscriptions),
        )
        .route(
            "/api/v1/config/subscriptions",
            get(list_subscriptions).post(post_subscription),
        )
        .route(
            "/api/v1/config/subscriptions/{name}",
            get(get_subscription).delete(delete_subscription),
        )
        .route(MEMBER_STATS_PATH, get(member_stats))
        .route(ASSIGNMENTS_PATH, post(post_assignments))
        .route("/api/v1/config", get(effective_config))
        .route("/api/v1/config/{section}", get(config_section))
        .layer(middleware::from_fn(join_caller_trace))
        .with_state(state)
        .merge(base_routes())
}

/// Runs a request that carries a W3C trace context (the leader's assignment calls) in an
/// `api_request` span continuing the caller's trace, so what the handler starts (a target
/// claim, its lock and subscriptions) belongs to the caller's placement trace. Requests
/// without one (scrapes, operators) get no span.
async fn join_caller_trace(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "api_request",
        method = %request.method(),
        path = %request.uri().path()
    );
    if gnomon_telemetry::adopt_remote_parent(&span, request.headers()) {
        next.run(request).instrument(span).await
    } else {
        next.run(request).await
    }
}

/// The standalone collector's routes, to merge with others (no fallback).
pub fn api_routes(collector: CollectorHandle) -> Router {
    routes(ApiState {
        collector,
        cluster: None,
    })
}

/// `/healthz`, `/api/v1/healthz` and `/metrics`: what every API serves, whatever its roles.
pub fn base_routes() -> Router {
    health_routes().merge(metrics_route(gnomon_telemetry::render_metrics))
}

/// How the REST API of `api` is served: address, TLS, token, `api-server.timeout`.
pub fn api_server_options(api: &ApiConfig) -> ApiServerOptions {
    let mut options = ApiServerOptions::at(&api.bind_address());
    options.tls = api.server_tls();
    options.token = api.token.clone();
    options.request_timeout = api.timeout;
    options
}

/// The routes of a clustered collector, to merge with the cluster routes (no fallback):
/// starting a target claims its lock first; adding or deleting a target config through the
/// API changes the cluster's target store (the leader then places or removes it), except
/// when the leader itself pushes a config during an assignment.
pub fn clustered_api_routes(
    collector: CollectorHandle,
    member: ClusterMember,
    store: TargetStore,
    subscriptions: SubscriptionStore,
) -> Router {
    routes(ApiState {
        collector,
        cluster: Some(ClusterApi {
            member,
            store,
            subscriptions,
        }),
    })
}

/// `GET /api/v1/cluster/member/stats` (gnomon's): this member's targets held, updates per
/// second in and out, and output health, for the coordinator's `GET /api/v1/cluster`.
async fn member_stats(State(ApiState { cluster, .. }): State<ApiState>) -> Response {
    match cluster {
        Some(cluster) => json(StatusCode::OK, &cluster.member.stats()),
        None => errors(
            StatusCode::NOT_FOUND,
            "not a cluster member: member stats exist only with clustering",
        ),
    }
}

/// `POST /api/v1/cluster/member/assignments` (gnomon's): the leader's assignments of many
/// targets in one call, each as `POST /api/v1/config/targets` then `POST /api/v1/targets/{name}`
/// would take it, its claim in a span joining the leader's placement trace. The answer names
/// each refusal in the request's order.
async fn post_assignments(
    State(ApiState { collector, cluster }): State<ApiState>,
    body: Bytes,
) -> Response {
    let Some(cluster) = cluster else {
        return errors(
            StatusCode::NOT_FOUND,
            "not a cluster member: assignments exist only with clustering",
        );
    };
    let assignments: Vec<Assignment> = match serde_json::from_slice(&body) {
        Ok(assignments) => assignments,
        Err(error) => {
            return errors(
                StatusCode::BAD_REQUEST,
                format!("invalid assignments (a JSON array of {{\"config\": target}}): {error}"),
            )
        }
    };
    let refused = assignments
        .iter()
        .map(|assignment| assign(&collector, &cluster.member, assignment).err())
        .collect();
    json(StatusCode::OK, &AssignmentsReply { refused })
}

/// Takes one target of a batch: adds its config and claims it.
fn assign(
    collector: &CollectorHandle,
    member: &ClusterMember,
    assignment: &Assignment,
) -> Result<(), String> {
    let target = collector
        .parse_target(&assignment.config)
        .map_err(|e| e.to_string())?;
    let name = target.name.clone();
    collector
        .add_target_config(target)
        .map_err(|e| e.to_string())?;
    let span = tracing::info_span!("assignment", target = %name);
    if let Some(traceparent) = &assignment.traceparent {
        gnomon_telemetry::adopt_traceparent(&span, traceparent);
    }
    span.in_scope(|| member.claim(&name))
        .map_err(|e| e.to_string())
}

async fn list_targets(State(ApiState { collector, .. }): State<ApiState>) -> Response {
    json(StatusCode::OK, &collector.targets())
}

async fn get_target(
    State(ApiState { collector, .. }): State<ApiState>,
    Path(name): Path<String>,
) -> Response {
    match collector.target(&name) {
        Some(target) => json(StatusCode::OK, &target),
        None => errors(StatusCode::NOT_FOUND, "no targets found"),
    }
}

async fn start_target(
    State(ApiState { collector, cluster }): State<ApiState>,
    Path(name): Path<String>,
) -> Response {
    if let Some(cluster) = cluster {
        if collector.target_config(&name).is_none() {
            return errors(StatusCode::NOT_FOUND, format!("target {name:?} not found"));
        }
        return match cluster.member.claim(&name) {
            Ok(()) => ok_empty(),
            Err(refused) => errors(StatusCode::SERVICE_UNAVAILABLE, refused.to_string()),
        };
    }
    match collector.start_target(&name, None) {
        Ok(()) => ok_empty(),
        Err(CollectorError::UnknownTarget(_)) => {
            errors(StatusCode::NOT_FOUND, format!("target {name:?} not found"))
        }
        Err(error) => errors(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

async fn delete_target(
    State(ApiState { collector, cluster }): State<ApiState>,
    Path(name): Path<String>,
) -> Response {
    if let Some(cluster) = cluster {
        // A stop (the leader unassigning or moving it): nothing is published, the next owner
        // reports the target.
        let claimed = cluster.member.unclaim(&name).await;
        let known = collector.delete_target(&name).await;
        if !claimed && !known {
            return errors(
                StatusCode::NOT_FOUND,
                format!("target {name:?} not running"),
            );
        }
        return ok_empty();
    }
    if collector.target(&name).is_none() {
        return errors(
            StatusCode::NOT_FOUND,
            format!("target {name:?} not running"),
        );
    }
    collector.delete_target(&name).await;
    ok_empty()
}

async fn list_target_configs(State(ApiState { collector, .. }): State<ApiState>) -> Response {
    json(StatusCode::OK, &collector.target_configs())
}

async fn get_target_config(
    State(ApiState { collector, .. }): State<ApiState>,
    Path(name): Path<String>,
) -> Response {
    match collector.target_config(&name) {
        Some(target) => json(StatusCode::OK, &target),
        None => errors(StatusCode::NOT_FOUND, format!("target {name:?} not found")),
    }
}

async fn delete_target_config(
    State(ApiState { collector, cluster }): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Some(cluster) = cluster {
        // Remove it from the cluster first, so the leader does not re-place it when our
        // lock goes away below.
        let stored = if is_assignment(&headers) {
            Ok(false)
        } else {
            cluster.store.delete(&name).await
        };
        // Stop it (publishing its deletion, fenced by the lock still held) before giving the
        // lock back; the other order published nothing, and exporters kept its up series.
        let known_here = collector.delete_target(&name).await;
        cluster.member.unclaim(&name).await;
        return match stored {
            _ if is_assignment(&headers) => ok_empty(),
            Ok(known) if known || known_here => ok_empty(),
            Ok(_) => errors(StatusCode::NOT_FOUND, format!("target {name:?} not found")),
            Err(error) => errors(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
        };
    }
    if collector.delete_target(&name).await {
        ok_empty()
    } else {
        errors(StatusCode::NOT_FOUND, format!("target {name:?} not found"))
    }
}

async fn post_target_config(
    State(ApiState { collector, cluster }): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let value = match json_body(&body) {
        Ok(value) => value,
        Err(error) => return errors(StatusCode::BAD_REQUEST, error),
    };
    let target = match collector.parse_target(&value) {
        Ok(target) => target,
        Err(error) => return errors(StatusCode::BAD_REQUEST, error.to_string()),
    };
    if let Some(cluster) = cluster.filter(|_| !is_assignment(&headers)) {
        // A user's change: the cluster store is the source of truth; the leader places it.
        if let Err(error) = cluster.store.put(&target.to_wire_json()).await {
            return errors(StatusCode::SERVICE_UNAVAILABLE, error.to_string());
        }
    }
    match collector.add_target_config(target) {
        Ok(_) => ok_empty(),
        Err(error) => errors(StatusCode::BAD_REQUEST, error.to_string()),
    }
}

/// Reads a JSON request body, or says what is wrong with it.
fn json_body(body: &Bytes) -> Result<serde_json::Value, String> {
    serde_json::from_slice(body).map_err(|error| format!("invalid JSON body: {error}"))
}

/// gnmic's `GET /api/v1/config`: the effective configuration (targets and subscriptions as
/// they are now, runtime changes included), every password and token shown as `****`.
async fn effective_config(State(ApiState { collector, .. }): State<ApiState>) -> Response {
    match serde_json::to_value(collector.config_snapshot()) {
        Ok(config) => json(StatusCode::OK, &gnomon_common::secret::redact_json(&config)),
        Err(error) => errors(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

/// gnmic's `GET /api/v1/config/{outputs,inputs,processors,clustering,api-server}`: one
/// section of the effective configuration, secrets shown as `****`.
async fn config_section(
    State(ApiState { collector, .. }): State<ApiState>,
    Path(section): Path<String>,
) -> Response {
    const SECTIONS: [&str; 5] = [
        "outputs",
        "inputs",
        "processors",
        "clustering",
        "api-server",
    ];
    if !SECTIONS.contains(&section.as_str()) {
        return errors(
            StatusCode::NOT_FOUND,
            format!(
                "no configuration section {section:?} (known: targets, subscriptions, {})",
                SECTIONS.join(", ")
            ),
        );
    }
    match serde_json::to_value(collector.config_snapshot()) {
        Ok(config) => {
            let value = config
                .get(&section)
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            json(StatusCode::OK, &gnomon_common::secret::redact_json(&value))
        }
        Err(error) => errors(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

async fn list_subscriptions(State(ApiState { collector, .. }): State<ApiState>) -> Response {
    json(StatusCode::OK, &collector.subscriptions())
}

async fn get_subscription(
    State(ApiState { collector, .. }): State<ApiState>,
    Path(name): Path<String>,
) -> Response {
    match collector.subscriptions().get(&name) {
        Some(subscription) => json(StatusCode::OK, subscription),
        None => errors(
            StatusCode::NOT_FOUND,
            format!("subscription {name:?} not found"),
        ),
    }
}

/// Adds or replaces a subscription. Clustered, it goes into the cluster store and every
/// member applies it (running targets open the new stream without reconnecting).
async fn post_subscription(
    State(ApiState { collector, cluster }): State<ApiState>,
    body: Bytes,
) -> Response {
    let value = match json_body(&body) {
        Ok(value) => value,
        Err(error) => return errors(StatusCode::BAD_REQUEST, error),
    };
    let subscription = match collector.parse_subscription(&value) {
        Ok(subscription) => subscription,
        Err(error) => return errors(StatusCode::BAD_REQUEST, error.to_string()),
    };
    if let Some(cluster) = cluster {
        if let Err(error) = cluster.subscriptions.put_subscription(&subscription).await {
            return errors(StatusCode::SERVICE_UNAVAILABLE, error.to_string());
        }
    }
    match collector.put_subscription(subscription) {
        Ok(()) => ok_empty(),
        Err(error) => errors(StatusCode::BAD_REQUEST, error.to_string()),
    }
}

async fn delete_subscription(
    State(ApiState { collector, cluster }): State<ApiState>,
    Path(name): Path<String>,
) -> Response {
    let stored = match &cluster {
        Some(cluster) => match cluster.subscriptions.delete(&name).await {
            Ok(stored) => stored,
            Err(error) => return errors(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
        },
        None => false,
    };
    if collector.delete_subscription(&name) || stored {
        ok_empty()
    } else {
        errors(
            StatusCode::NOT_FOUND,
            format!("subscription {name:?} not found"),
        )
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionsPatch {
    subscriptions: Vec<String>,
}

/// gnmic's `PATCH /api/v1/config/targets/{name}/subscriptions`: which subscriptions the
/// target uses. Its owner resubscribes it once, opening only what changed.
async fn patch_target_subscriptions(
    State(ApiState { collector, cluster }): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let patch: SubscriptionsPatch = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(error) => {
            return errors(
                StatusCode::BAD_REQUEST,
                format!("invalid body (expected {{\"subscriptions\": [names]}}): {error}"),
            )
        }
    };
    let known = collector.subscriptions();
    if let Some(missing) = patch.subscriptions.iter().find(|s| !known.contains_key(*s)) {
        return errors(
            StatusCode::BAD_REQUEST,
            format!("subscription {missing} does not exist"),
        );
    }
    if let Some(cluster) = &cluster {
        let mut document = match cluster.store.get(&name).await {
            Ok(Some(document)) => document,
            Ok(None) => return errors(StatusCode::NOT_FOUND, format!("target {name} not found")),
            Err(error) => return errors(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
        };
        if let Some(object) = document.as_object_mut() {
            object.insert(
                "subscriptions".into(),
                serde_json::Value::from(patch.subscriptions.clone()),
            );
        }
        if let Err(error) = cluster.store.put(&document).await {
            return errors(StatusCode::SERVICE_UNAVAILABLE, error.to_string());
        }
        // The owner applies it from the store's watch; here only if this member knows it.
        if collector.target_config(&name).is_none() {
            return ok_empty();
        }
    }
    match collector.set_target_subscriptions(&name, patch.subscriptions) {
        Ok(()) => ok_empty(),
        Err(CollectorError::UnknownTarget(_)) => {
            errors(StatusCode::NOT_FOUND, format!("target {name} not found"))
        }
        Err(error) => errors(StatusCode::BAD_REQUEST, error.to_string()),
    }
}
