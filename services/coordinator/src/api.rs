//! The cluster operations API in gnmic's shapes: `/api/v1/cluster…`. Read-only routes answer
//! on any instance from the coordination store; leader-only routes answer 400 "not leader"
//! elsewhere, as gnmic does.
//!
//! Member objects carry gnmic's fields unchanged, plus gnomon's: whether the member takes
//! targets (health-driven failover) and the figures the member reports about itself
//! (targets held, updates per second in and out, output health).
//!
//! Why those figures come from the member's API and not from the store: members already
//! serve an API the coordinator calls (the assignment handshake), so asking each member
//! when `GET /api/v1/cluster` is served costs one short call per member, only when someone
//! asks, and the answer is current. Publishing them in the store instead would mean a
//! write per member every few seconds forever (Raft writes on etcd and Consul, Lease
//! updates on Kubernetes) for figures that are read rarely. The cost here: the request
//! waits for the slowest member, bounded by [`STATS_TIMEOUT`]; a member that does not
//! answer in time is listed with `stats-error` instead of figures.

use crate::election::{CoordinatorHandle, LeaderRequestError};
use crate::leader::CommandError;
use crate::member_client::{MemberClient, MemberClientOptions};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gnomon_coordination::member_stats::{MemberStats, OutputHealth, OutputStatus};
use gnomon_coordination::target_store::TargetConfigError;
use gnomon_coordination::{keys, Coordination, TargetStore};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long `GET /api/v1/cluster` waits for a member's figures (one attempt).
pub const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// What the cluster routes need.
#[derive(Clone)]
pub struct ClusterApiState {
    pub cluster_name: String,
    pub coordination: Arc<dyn Coordination>,
    /// The local coordinator, when this process campaigns; leader-only routes answer
    /// "not leader" without one.
    pub handle: Option<CoordinatorHandle>,
    /// Asks members for their figures (see [`stats_client`]).
    pub members: MemberClient,
}

/// A member client for the figures: one attempt bounded by [`STATS_TIMEOUT`], with the
/// cluster's TLS and token from `options`.
pub fn stats_client(
    options: &MemberClientOptions,
) -> Result<MemberClient, crate::member_client::MemberCallError> {
    MemberClient::new(&MemberClientOptions {
        timeout: STATS_TIMEOUT,
        retries: 0,
        ..options.clone()
    })
}

impl ClusterApiState {
    fn handle(&self) -> Result<&CoordinatorHandle, LeaderRequestError> {
        self.handle.as_ref().ok_or(LeaderRequestError::NotLeader)
    }
}

/// gnmic's member object, plus gnomon's fields (after gnmic's).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct MemberView {
    pub name: String,
    #[serde(rename = "api-endpoint")]
    pub api_endpoint: String,
    #[serde(rename = "is-leader", skip_serializing_if = "std::ops::Not::not")]
    pub is_leader: bool,
    #[serde(rename = "number-of-locked-nodes")]
    pub number_of_locked_nodes: usize,
    #[serde(rename = "locked-targets")]
    pub locked_targets: Vec<String>,
    /// gnomon: false while the member has given its targets up (its outputs fail); the
    /// leader places nothing on it.
    #[serde(rename = "accepts-targets")]
    pub accepts_targets: bool,
    /// gnomon: the member's own figures, absent when it did not answer (see `stats-error`).
    #[serde(rename = "targets-held", skip_serializing_if = "Option::is_none")]
    pub targets_held: Option<usize>,
    #[serde(
        rename = "updates-in-per-second",
        skip_serializing_if = "Option::is_none"
    )]
    pub updates_in_per_second: Option<f64>,
    #[serde(
        rename = "updates-out-per-second",
        skip_serializing_if = "Option::is_none"
    )]
    pub updates_out_per_second: Option<f64>,
    /// `healthy`, `failing`, `unhealthy` or `recovering`; from the registration
    /// (`unhealthy`) when the member did not answer.
    #[serde(rename = "output-health", skip_serializing_if = "Option::is_none")]
    pub output_health: Option<OutputHealth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<OutputStatus>>,
    /// Why the member's figures are missing.
    #[serde(rename = "stats-error", skip_serializing_if = "Option::is_none")]
    pub stats_error: Option<String>,
}

#[derive(Serialize)]
struct ClusterView {
    name: String,
    #[serde(rename = "number-of-locked-targets")]
    number_of_locked_targets: usize,
    leader: String,
    members: Vec<MemberView>,
}

fn error(status: StatusCode, message: impl ToString) -> Response {
    (
        status,
        Json(serde_json::json!({ "errors": [message.to_string()] })),
    )
        .into_response()
}

fn leader_error(e: LeaderRequestError) -> Response {
    match e {
        LeaderRequestError::NotLeader => error(StatusCode::BAD_REQUEST, "not leader"),
        LeaderRequestError::Refused(refusal) => error(StatusCode::BAD_REQUEST, refusal),
        e @ LeaderRequestError::NoAnswer(_) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// The `/api/v1/cluster…` routes.
pub fn router(state: ClusterApiState) -> Router {
    Router::new()
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/cluster/members", get(members))
        .route("/api/v1/cluster/leader", get(leader).delete(step_down))
        .route("/api/v1/cluster/rebalance", post(rebalance))
        .route("/api/v1/cluster/members/{name}/drain", post(drain))
        .route("/api/v1/cluster/move", post(move_target))
        .route("/api/v1/cluster/assignments", get(assignments))
        .with_state(state)
}

async fn snapshot(state: &ClusterApiState) -> Result<(String, Vec<MemberView>, usize), Response> {
    let unavailable =
        |e: gnomon_coordination::CoordinationError| error(StatusCode::SERVICE_UNAVAILABLE, e);
    let cluster = &state.cluster_name;
    let leader = state
        .coordination
        .holder(&keys::leader(cluster))
        .await
        .map_err(unavailable)?
        .unwrap_or_default();
    let members = crate::members::registered(state.coordination.as_ref(), cluster)
        .await
        .map_err(unavailable)?;
    let locks = state
        .coordination
        .list(&format!("{}/", keys::targets_prefix(cluster)))
        .await
        .map_err(unavailable)?;
    let mut owned: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, owner) in &locks {
        owned
            .entry(owner.clone())
            .or_default()
            .push(keys::target_name_from_key(key).to_string());
    }
    let stats = futures::future::join_all(
        members
            .iter()
            .map(|m| async { state.members.member_stats(&m.api).await }),
    )
    .await;
    let mut views: Vec<MemberView> = members
        .into_iter()
        .zip(stats)
        .map(|(m, stats)| {
            let mut locked = owned.get(&m.name).cloned().unwrap_or_default();
            locked.sort();
            let (stats, stats_error) = match stats {
                Ok(stats) => (Some(stats), None),
                Err(e) => (None, Some(e.to_string())),
            };
            let stats: Option<MemberStats> = stats;
            MemberView {
                is_leader: m.name == leader,
                number_of_locked_nodes: locked.len(),
                locked_targets: locked,
                accepts_targets: m.accepts_targets,
                targets_held: stats.as_ref().map(|s| s.targets_held),
                updates_in_per_second: stats.as_ref().map(|s| s.updates_in_per_second),
                updates_out_per_second: stats.as_ref().map(|s| s.updates_out_per_second),
                output_health: stats
                    .as_ref()
                    .map(|s| s.output_health)
                    .or((!m.accepts_targets).then_some(OutputHealth::Unhealthy)),
                outputs: stats.map(|s| s.outputs),
                stats_error,
                api_endpoint: m.api,
                name: m.name,
            }
        })
        .collect();
    views.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((leader, views, locks.len()))
}

async fn cluster(State(state): State<ClusterApiState>) -> Response {
    match snapshot(&state).await {
        Ok((leader, members, locked)) => Json(ClusterView {
            name: state.cluster_name.clone(),
            number_of_locked_targets: locked,
            leader,
            members,
        })
        .into_response(),
        Err(response) => response,
    }
}

async fn members(State(state): State<ClusterApiState>) -> Response {
    match snapshot(&state).await {
        Ok((_, members, _)) => Json(members).into_response(),
        Err(response) => response,
    }
}

async fn leader(State(state): State<ClusterApiState>) -> Response {
    match snapshot(&state).await {
        Ok((_, members, _)) => Json(
            members
                .into_iter()
                .filter(|m| m.is_leader)
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(response) => response,
    }
}

async fn step_down(State(state): State<ClusterApiState>) -> Response {
    let result = match state.handle() {
        Ok(handle) => handle.step_down().await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => leader_error(e),
    }
}

async fn rebalance(State(state): State<ClusterApiState>) -> Response {
    let result = match state.handle() {
        Ok(handle) => handle.rebalance().await,
        Err(e) => Err(e),
    };
    match result {
        Ok(moves) => Json(serde_json::json!({ "moves": moves })).into_response(),
        Err(e) => leader_error(e),
    }
}

async fn drain(State(state): State<ClusterApiState>, Path(name): Path<String>) -> Response {
    let result = match state.handle() {
        Ok(handle) => handle.drain(&name).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(moves) => Json(serde_json::json!({ "moves": moves })).into_response(),
        Err(e) => leader_error(e),
    }
}

/// The body of `POST /api/v1/cluster/move`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveRequest {
    target: String,
    member: String,
}

/// `POST /api/v1/cluster/move` with `{"target": "<name>", "member": "<instance-name>"}`, on
/// the leader (400 "not leader" elsewhere): moves the target to the member with the usual
/// handover (the member starts it and waits for its lock, then the old holder releases it)
/// and answers `{"moves":1}`, or `{"moves":0}` when the member holds it already. Refusals,
/// as `{"errors":[...]}`: a body that is not that object (400), an unknown target or member
/// (404), a target no member holds yet, one being placed or moved right now, or a member
/// whose tags match the target less than another member's — affinity would move it straight
/// back — (409, naming both members), or a member that has given its targets up because its
/// outputs fail (409).
async fn move_target(State(state): State<ClusterApiState>, body: axum::body::Bytes) -> Response {
    let request: MoveRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid body: {e}; expected {{\"target\": \"<name>\", \"member\": \"<instance-name>\"}}"
                ),
            )
        }
    };
    let result = match state.handle() {
        Ok(handle) => handle.move_target(&request.target, &request.member).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(moves) => Json(serde_json::json!({ "moves": moves })).into_response(),
        Err(LeaderRequestError::Refused(refusal)) => {
            let status = match refusal {
                CommandError::UnknownTarget(_) | CommandError::UnknownMember(_) => {
                    StatusCode::NOT_FOUND
                }
                CommandError::MemberUnhealthy(_)
                | CommandError::NotPlaced(_)
                | CommandError::Busy(_)
                | CommandError::OwnerNotMember { .. }
                | CommandError::WorseMatch { .. } => StatusCode::CONFLICT,
            };
            error(status, refusal)
        }
        Err(e) => leader_error(e),
    }
}

/// `GET /api/v1/cluster/assignments`, on any instance, from the coordination store: every
/// target configured in the cluster and every target whose lock is held, with the instance
/// holding its lock or `null`: `{"assignments": {"t1": "gnomon1", "t2": null}}` (names
/// sorted). A target locked but not configured (being removed) is listed with its holder.
async fn assignments(State(state): State<ClusterApiState>) -> Response {
    let unavailable =
        |e: gnomon_coordination::CoordinationError| error(StatusCode::SERVICE_UNAVAILABLE, e);
    let cluster = &state.cluster_name;
    let configured = match TargetStore::new(state.coordination.clone(), cluster)
        .list()
        .await
    {
        Ok(targets) => targets,
        Err(e) => return unavailable(e),
    };
    let locks = match state
        .coordination
        .list(&format!("{}/", keys::targets_prefix(cluster)))
        .await
    {
        Ok(locks) => locks,
        Err(e) => return unavailable(e),
    };
    let mut assignments: BTreeMap<String, Option<String>> =
        configured.into_keys().map(|name| (name, None)).collect();
    for (key, holder) in locks {
        assignments.insert(keys::target_name_from_key(&key).to_string(), Some(holder));
    }
    Json(serde_json::json!({ "assignments": assignments })).into_response()
}

/// Target-config routes for an instance without a collector (a coordinator alone): they
/// read and change the cluster's target store. GETs never show passwords or tokens.
pub fn target_config_router(store: TargetStore) -> Router {
    Router::new()
        .route("/api/v1/config/targets", get(list_configs).post(add_config))
        .route(
            "/api/v1/config/targets/{name}",
            get(get_config).delete(delete_config),
        )
        .with_state(store)
}

fn redacted(mut config: serde_json::Value) -> serde_json::Value {
    if let Some(object) = config.as_object_mut() {
        for key in ["password", "token"] {
            if object.get(key).is_some_and(|v| !v.is_null()) {
                object.insert(key.into(), serde_json::Value::String("****".into()));
            }
        }
    }
    config
}

async fn list_configs(State(store): State<TargetStore>) -> Response {
    match store.list().await {
        Ok(targets) => Json(
            targets
                .into_iter()
                .map(|(name, config)| (name, redacted(config)))
                .collect::<BTreeMap<_, _>>(),
        )
        .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn get_config(State(store): State<TargetStore>, Path(name): Path<String>) -> Response {
    match store.list().await {
        Ok(mut targets) => match targets.remove(&name) {
            Some(config) => Json(redacted(config)).into_response(),
            None => error(StatusCode::NOT_FOUND, format!("target {name:?} not found")),
        },
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn add_config(State(store): State<TargetStore>, body: axum::body::Bytes) -> Response {
    let config: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(config) => config,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
    };
    match store.put(&config).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(TargetConfigError::Store(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn delete_config(State(store): State<TargetStore>, Path(name): Path<String>) -> Response {
    match store.delete(&name).await {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("target {name:?} not found")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}
