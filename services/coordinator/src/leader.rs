//! One leadership term: watch members, target locks and target configs; place every target
//! that has no owner; rebalance, drain and step down on request. The term ends when the
//! leader lock is lost, on step-down, or at shutdown.

use crate::handshake::{Assignment, AssignmentError, Handshake};
use crate::member_client::MemberClient;
use crate::member_starts::MemberStarts;
use crate::members::Member;
use crate::placement::{
    better_match, plan_rebalance, select_member, tag_prefix_match, Candidate, Move, PlacementError,
};
use crate::settings::CoordinatorSettings;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use gnomon_common::log::{Escaped, Throttle};
use gnomon_common::retry::Backoff;
use gnomon_coordination::target_store::{target_tags, TargetStore};
use gnomon_coordination::{keys, Coordination, LockGuard, WatchEvent};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Why the leader refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown instance: {0}")]
    UnknownMember(String),
    /// The member gave its targets up because its outputs fail (health-driven failover).
    #[error("member {0} takes no targets: its outputs are failing")]
    MemberUnhealthy(String),
    #[error("unknown target: {0}")]
    UnknownTarget(String),
    #[error("target {0} is not placed yet: no member holds its lock")]
    NotPlaced(String),
    #[error("target {0} is being placed or moved right now; try again when it is done")]
    Busy(String),
    #[error("target {target} is held by {owner}, which is not a registered member; try again when its lock is gone")]
    OwnerNotMember { target: String, owner: String },
    /// A manual move the affinity rule would undo at once.
    #[error("target {target}'s tags match {better} better than {member}: affinity would move it back to {better}")]
    WorseMatch {
        target: String,
        member: String,
        better: String,
    },
}

/// Requests the API sends to the leader.
#[derive(Debug)]
pub enum LeaderCommand {
    Rebalance {
        reply: oneshot::Sender<Result<usize, CommandError>>,
    },
    Drain {
        member: String,
        reply: oneshot::Sender<Result<usize, CommandError>>,
    },
    /// Move `target` to `member` (0 moves when it is there already).
    Move {
        target: String,
        member: String,
        reply: oneshot::Sender<Result<usize, CommandError>>,
    },
    StepDown {
        reply: oneshot::Sender<()>,
    },
}

/// How a term ended.
#[derive(Debug, PartialEq, Eq)]
pub enum TermEnd {
    LockLost,
    SteppedDown,
    Shutdown,
}

struct Placement {
    member: String,
    denied: HashSet<String>,
    /// Fails the handshake at once: its member left, and waiting out the assignment timeout
    /// would hold a place in the window (and the target) for nothing.
    abandon: CancellationToken,
}

impl Placement {
    fn new(member: &str, denied: HashSet<String>) -> Self {
        Placement {
            member: member.to_string(),
            denied,
            abandon: CancellationToken::new(),
        }
    }
}

/// A target that could not be placed: when to try again, and its log throttle, so a target
/// every member refuses is retried with backoff instead of in a tight loop.
struct PlacementRetry {
    not_before: tokio::time::Instant,
    backoff: Backoff,
    log: Throttle,
}

/// Placements (not moves) in flight at once. The assignment timeout runs from the moment a
/// member accepted a target until it holds the lock; members take locks at a finite rate, so
/// with thousands handed out at once the last ones time out only because they queued, get
/// unassigned and start over elsewhere. A bounded window keeps each timeout about the member.
const PLACEMENTS_IN_FLIGHT: usize = 512;

/// Most watch events applied before the leader reconciles (and serves its other inputs).
const MAX_EVENT_BATCH: usize = 4096;

/// First delay before placing a target again after every member refused it.
const FIRST_PLACEMENT_RETRY: Duration = Duration::from_millis(200);

struct Term {
    settings: CoordinatorSettings,
    coordination: Arc<dyn Coordination>,
    client: MemberClient,
    /// Starts of targets on members, batched per member.
    starts: MemberStarts,
    store: TargetStore,
    members: BTreeMap<String, Member>,
    targets: BTreeMap<String, serde_json::Value>,
    holders: BTreeMap<String, String>,
    /// The holder of each target a handshake waits on, one channel per target: a lock
    /// change wakes the one handshake it concerns, not every one in flight (10 000
    /// placements would otherwise be woken by each of 10 000 lock writes).
    owner_watches: HashMap<String, watch::Sender<Option<String>>>,
    in_flight: HashMap<String, Placement>,
    /// Targets of a member being drained whose placement or move was in flight when the drain
    /// was asked (target → drained member): moved off once that ends. Skipping them would
    /// leave the drain waiting for targets nobody moves.
    drain_after: HashMap<String, String>,
    results: mpsc::Sender<(String, Assignment)>,
    cancel: CancellationToken,
    /// Targets waiting before their next placement attempt.
    retries: HashMap<String, PlacementRetry>,
    /// Target names in the store that can never be placed (logged once each).
    unplaceable: HashSet<String>,
    /// Whether the last reconcile left unowned targets for want of room in the placement
    /// window: finished placements then make room for them.
    backlog: bool,
    /// Whether targets and locks were read from the store in full at least once this term.
    /// The watch replays existing keys in key order (configs before locks), so until a full
    /// read, held targets would look unowned and be placed a second time.
    synced: bool,
    /// A member joined (or accepts targets again) since the last automatic rebalance. The
    /// rebalance waits until no placement is in flight: planned earlier, it would count a
    /// member whose placements are still landing as empty and move targets onto it instead
    /// of onto the member that joined.
    rebalance_due: bool,
}

/// Runs one leadership term while `guard` is held.
pub async fn run_term(
    settings: CoordinatorSettings,
    coordination: Arc<dyn Coordination>,
    client: MemberClient,
    guard: &LockGuard,
    commands: &mut mpsc::Receiver<LeaderCommand>,
    shutdown: &CancellationToken,
) -> anyhow::Result<TermEnd> {
    let cancel = shutdown.child_token();
    let result = lead(
        settings,
        coordination,
        client,
        guard,
        commands,
        shutdown,
        cancel.clone(),
    )
    .await;
    cancel.cancel();
    result
}

async fn lead(
    settings: CoordinatorSettings,
    coordination: Arc<dyn Coordination>,
    client: MemberClient,
    guard: &LockGuard,
    commands: &mut mpsc::Receiver<LeaderCommand>,
    shutdown: &CancellationToken,
    cancel: CancellationToken,
) -> anyhow::Result<TermEnd> {
    let cluster = settings.cluster_name.clone();
    let (member_service, member_tags) = crate::members::registration_filter(&cluster);
    let mut member_watch = coordination
        .watch_services(&member_service, &member_tags)
        .await?;
    tokio::select! {
        _ = guard.lost() => return Ok(TermEnd::LockLost),
        _ = shutdown.cancelled() => return Ok(TermEnd::Shutdown),
        _ = tokio::time::sleep(settings.leader_wait_timer) => {}
    }
    if let Some(discovery) = settings.discovery.clone() {
        tokio::spawn(crate::discovery::run(
            discovery,
            coordination.clone(),
            cluster.clone(),
            cancel.clone(),
        ));
    }
    let store = TargetStore::new(coordination.clone(), &cluster);
    // One watch over the cluster's keys keeps config and lock changes in store order (a
    // deleted target's config goes before its lock, so it is not re-placed).
    let locks_prefix = format!("{}/", keys::targets_prefix(&cluster));
    let mut cluster_watch = coordination
        .watch_prefix(&format!("gnmic/{cluster}/"))
        .await?;
    let (results_tx, mut results) = mpsc::channel(1024);
    let mut term = Term {
        settings,
        coordination,
        starts: MemberStarts::new(client.clone()),
        client,
        store,
        members: BTreeMap::new(),
        targets: BTreeMap::new(),
        holders: BTreeMap::new(),
        owner_watches: HashMap::new(),
        in_flight: HashMap::new(),
        drain_after: HashMap::new(),
        results: results_tx,
        cancel,
        retries: HashMap::new(),
        unplaceable: HashSet::new(),
        backlog: false,
        synced: false,
        rebalance_due: false,
    };
    let mut reconcile_tick = tokio::time::interval(
        term.settings
            .targets_watch_timer
            .max(Duration::from_millis(100)),
    );
    let mut members_refresh = tokio::time::interval(
        term.settings
            .services_watch_timer
            .max(Duration::from_millis(100)),
    );
    tracing::info!(cluster = %cluster, "leading: placing targets");
    term.refresh().await;
    term.reconcile();
    loop {
        tokio::select! {
            _ = guard.lost() => return Ok(TermEnd::LockLost),
            _ = shutdown.cancelled() => return Ok(TermEnd::Shutdown),
            Some(list) = member_watch.next() => {
                term.members_now(list.iter().map(Member::from_service).collect()).await;
            }
            Some(event) = cluster_watch.next() => {
                // Take every event already delivered before deciding anything: a fleet's
                // worth of config writes or lock changes arrives in bursts, and reconciling
                // after each one would cost a pass over every target per event.
                let mut relevant = false;
                let mut next = Some(event);
                let mut batch = 0;
                while let Some(event) = next.take() {
                    relevant |= term.apply_cluster_event(event, &locks_prefix);
                    batch += 1;
                    if batch < MAX_EVENT_BATCH {
                        next = cluster_watch.next().now_or_never().flatten();
                    }
                }
                if relevant {
                    term.reconcile();
                }
            }
            Some((target, outcome)) = results.recv() => {
                term.finish_assignment(target, outcome);
                // Refill the placement window in chunks, not per finished placement (each
                // reconcile is a pass over every target).
                if term.backlog && term.in_flight.len() <= PLACEMENTS_IN_FLIGHT / 2 {
                    term.reconcile();
                }
            }
            Some(command) = commands.recv() => {
                if let Some(end) = term.command(command).await { return Ok(end); }
            }
            _ = reconcile_tick.tick() => {
                term.refresh().await;
                term.reconcile();
                term.follow_affinity();
            }
            _ = term.next_retry() => term.reconcile(),
            _ = members_refresh.tick() => {
                if let Ok(members) = crate::members::registered(term.coordination.as_ref(), &cluster).await {
                    term.members_now(members).await;
                }
            }
        }
        term.rebalance_when_settled();
    }
}

impl Term {
    /// Takes the registered members as they are now and places what that leaves unowned.
    /// When a member that held targets is gone, the locks are listed again first: a
    /// session's end frees its registration and its locks together (one etcd lease revoke),
    /// but the lock watch delivers thousands of deletions later than the one registration
    /// change, and placing waits for them otherwise.
    async fn members_now(&mut self, list: Vec<Member>) {
        let owner_left = self.holders.values().any(|owner| {
            self.members.contains_key(owner) && !list.iter().any(|m| &m.name == owner)
        });
        let changed = self.set_members(list);
        self.abandon_assignments_to_gone_members();
        if owner_left {
            self.refresh_holders().await;
        }
        if changed {
            self.reconcile();
        }
    }

    /// Replaces the member list (a member that joins, or takes targets again, makes a
    /// rebalance due); returns whether a member joined or left, or accepts targets again or
    /// no longer.
    fn set_members(&mut self, list: Vec<Member>) -> bool {
        let new: BTreeMap<String, Member> = list.into_iter().map(|m| (m.name.clone(), m)).collect();
        let changed = new.len() != self.members.len()
            || new.values().any(|m| {
                self.members
                    .get(&m.name)
                    .is_none_or(|known| known.accepts_targets != m.accepts_targets)
            });
        for gone in self.members.keys().filter(|name| !new.contains_key(*name)) {
            metrics::gauge!("gnomon_cluster_member_locked_targets", "member" => gone.clone())
                .set(0.0);
        }
        // A member that accepts targets again (its outputs recovered) counts as joining:
        // the rebalance that follows gives it targets.
        let joined = new.values().any(|m| {
            m.accepts_targets
                && self
                    .members
                    .get(&m.name)
                    .is_none_or(|old| !old.accepts_targets)
        });
        if new.keys().ne(self.members.keys()) {
            tracing::info!(members = ?new.keys().collect::<Vec<_>>(), "members changed");
        }
        for member in new.values() {
            let before = self.members.get(&member.name).map(|m| m.accepts_targets);
            match (before, member.accepts_targets) {
                (Some(false), true) => {
                    tracing::info!(member = %member.name, "member's outputs recovered: it takes targets again")
                }
                (Some(true) | None, false) => {
                    tracing::warn!(member = %member.name, "member's outputs are failing: placing nothing on it")
                }
                _ => {}
            }
        }
        self.members = new;
        self.rebalance_due |= joined;
        changed
    }

    /// Runs the automatic rebalance a join asked for once the placements in flight have
    /// landed (their members' loads are then known).
    fn rebalance_when_settled(&mut self) {
        if self.rebalance_due && self.synced && self.in_flight.is_empty() {
            self.rebalance_due = false;
            self.follow_affinity();
            self.auto_rebalance();
        }
    }

    /// Applies one event of the cluster's keys; returns whether it may leave a target to
    /// place: a lock gone or a target config changed. A lock taken never does, and skipping
    /// the pass over every target for it keeps placing a fleet linear (each of 10 000 lock
    /// writes would otherwise cost a pass over 10 000 targets).
    fn apply_cluster_event(&mut self, event: WatchEvent, locks_prefix: &str) -> bool {
        if event.key().starts_with(locks_prefix) {
            let released = matches!(event, WatchEvent::Delete { .. });
            self.apply_lock_event(event);
            return released;
        } else if self.store.name_of(event.key()).is_some() {
            self.apply_config_event(event);
        } else {
            return false;
        }
        true
    }

    fn apply_lock_event(&mut self, event: WatchEvent) {
        let target = keys::target_name_from_key(event.key()).to_string();
        let holder = match event {
            WatchEvent::Put { value, .. } => {
                self.holders.insert(target.clone(), value.clone());
                Some(value)
            }
            WatchEvent::Delete { .. } => {
                if let Some(previous) = self.holders.remove(&target) {
                    tracing::info!(target = %target, previous_owner = %previous, "target lock gone");
                }
                None
            }
        };
        if let Some(owner) = self.owner_watches.get(&target) {
            owner.send_replace(holder);
        }
    }

    /// The holder of `target` as it changes, for a handshake waiting on its lock.
    fn watch_owner(&mut self, target: &str) -> watch::Receiver<Option<String>> {
        let holder = self.holders.get(target).cloned();
        self.owner_watches
            .entry(target.to_string())
            .or_insert_with(|| watch::channel(holder).0)
            .subscribe()
    }

    fn apply_config_event(&mut self, event: WatchEvent) {
        match event {
            WatchEvent::Put { key, value } => {
                if let Some((name, config)) = self.store.decode(&key, &value) {
                    self.targets.insert(name, config);
                }
            }
            WatchEvent::Delete { key } => {
                let Some(name) = self.store.name_of(&key).map(str::to_string) else {
                    return;
                };
                if self.targets.remove(&name).is_some() {
                    self.remove_everywhere(&name);
                }
            }
        }
    }

    /// A target was deleted from the cluster: stop it on its owner and forget it everywhere.
    fn remove_everywhere(&self, name: &str) {
        let owner_api = self
            .holders
            .get(name)
            .and_then(|owner| self.members.get(owner))
            .map(|m| m.api.clone());
        let all_apis: Vec<String> = self.members.values().map(|m| m.api.clone()).collect();
        let client = self.client.clone();
        let name = name.to_string();
        tokio::spawn(
            async move {
                // The owner first: forgetting the config stops the target and publishes its
                // deletion while the lock is still held, so exporters drop its series.
                if let Some(api) = &owner_api {
                    if let Err(e) = client.forget_target(api, &name).await {
                        tracing::warn!(error = %e, "stopping a deleted target failed");
                    }
                }
                for api in all_apis
                    .iter()
                    .filter(|api| Some(*api) != owner_api.as_ref())
                {
                    let _ = client.forget_target(api, &name).await;
                }
            }
            .instrument(tracing::info_span!("target_removal")),
        );
    }

    /// Re-reads every target config and lock from the store (the periodic safety net);
    /// stops orphans only after a complete read.
    async fn refresh(&mut self) {
        // Both reads at once: a new leader places nothing before they are done.
        let (configs, locks) = tokio::join!(self.store.list(), self.list_holders());
        let configs = self.apply_configs(configs);
        let holders = self.apply_holders(locks);
        if configs && holders {
            self.synced = true;
            self.stop_orphans();
        }
    }

    /// Takes every target config as read from the store; false when it could not be read.
    fn apply_configs(
        &mut self,
        read: gnomon_coordination::Result<BTreeMap<String, serde_json::Value>>,
    ) -> bool {
        match read {
            Ok(targets) => {
                let removed: Vec<String> = self
                    .targets
                    .keys()
                    .filter(|t| !targets.contains_key(*t))
                    .cloned()
                    .collect();
                self.targets = targets;
                for name in removed {
                    self.remove_everywhere(&name);
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list target configs");
                false
            }
        }
    }

    /// Reads every target lock's holder from the store; false when it could not.
    async fn refresh_holders(&mut self) -> bool {
        let read = self.list_holders().await;
        self.apply_holders(read)
    }

    /// Every target lock in the store: key → holder.
    async fn list_holders(&self) -> gnomon_coordination::Result<BTreeMap<String, String>> {
        let prefix = format!("{}/", keys::targets_prefix(&self.settings.cluster_name));
        self.coordination.list(&prefix).await
    }

    /// Takes the lock holders as read from the store; false when they could not be read.
    fn apply_holders(
        &mut self,
        read: gnomon_coordination::Result<BTreeMap<String, String>>,
    ) -> bool {
        match read {
            Ok(locks) => {
                self.holders = locks
                    .into_iter()
                    .map(|(k, v)| (keys::target_name_from_key(&k).to_string(), v))
                    .collect();
                for (target, owner) in &self.owner_watches {
                    let holder = self.holders.get(target);
                    owner.send_if_modified(|seen| {
                        let changed = seen.as_ref() != holder;
                        if changed {
                            seen.clone_from(&holder.cloned());
                        }
                        changed
                    });
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list target locks");
                false
            }
        }
    }

    /// Stops targets that are collected but no longer configured (their config was deleted
    /// while an assignment was in flight, or by an older leader).
    fn stop_orphans(&self) {
        for (target, owner) in &self.holders {
            if self.targets.contains_key(target) || self.in_flight.contains_key(target) {
                continue;
            }
            let Some(api) = self.members.get(owner).map(|m| m.api.clone()) else {
                continue;
            };
            tracing::warn!(target = %target, owner = %owner, "collected but not configured: stopping it");
            let (client, target) = (self.client.clone(), target.clone());
            tokio::spawn(async move {
                if let Err(e) = client.stop_target(&api, &target).await {
                    tracing::warn!(error = %e, "stopping an unconfigured target failed");
                }
            });
        }
    }

    fn candidates(&self) -> Vec<Candidate> {
        let mut load: HashMap<&str, usize> = HashMap::new();
        for owner in self.holders.values() {
            *load.entry(owner.as_str()).or_default() += 1;
        }
        for placement in self.in_flight.values() {
            *load.entry(placement.member.as_str()).or_default() += 1;
        }
        self.members
            .values()
            .filter(|m| m.accepts_targets)
            .map(|m| Candidate {
                name: m.name.clone(),
                tags: m.tags.clone(),
                load: load.get(m.name.as_str()).copied().unwrap_or(0),
            })
            .collect()
    }

    /// Publishes the cluster's shape as metrics (the leader's view).
    fn record_metrics(&self) {
        metrics::gauge!("gnomon_cluster_members").set(self.members.len() as f64);
        metrics::gauge!("gnomon_cluster_targets").set(self.targets.len() as f64);
        metrics::gauge!("gnomon_cluster_locked_targets").set(self.holders.len() as f64);
        metrics::gauge!("gnomon_cluster_placements_in_flight").set(self.in_flight.len() as f64);
        for candidate in self.candidates() {
            metrics::gauge!("gnomon_cluster_member_locked_targets", "member" => candidate.name)
                .set(candidate.load as f64);
        }
        // Members taking no targets are no candidates; their (draining) count still shows.
        for member in self.members.values().filter(|m| !m.accepts_targets) {
            let held = self.holders.values().filter(|o| **o == member.name).count();
            metrics::gauge!("gnomon_cluster_member_locked_targets", "member" => member.name.clone())
                .set(held as f64);
        }
    }

    /// Starts a placement for every target without an owner whose retry delay (if any) is over.
    fn reconcile(&mut self) {
        self.record_metrics();
        if self.members.is_empty() || !self.synced {
            return;
        }
        let now = tokio::time::Instant::now();
        let unowned: Vec<String> = self
            .targets
            .keys()
            .filter(|t| !self.holders.contains_key(*t) && !self.in_flight.contains_key(*t))
            .filter(|t| self.retries.get(*t).is_none_or(|r| r.not_before <= now))
            .cloned()
            .collect();
        // One load count for the whole pass, kept current as targets are placed: counting
        // the locks again per target would make placing a fleet quadratic.
        let mut candidates = self.candidates();
        self.backlog = false;
        for target in unowned {
            if self.in_flight.len() >= PLACEMENTS_IN_FLIGHT {
                self.backlog = true;
                break;
            }
            if let Some(problem) = gnomon_config::names::problem(&target) {
                if self.unplaceable.insert(target.clone()) {
                    tracing::error!(target = %Escaped(&target), problem = %problem, "target name in the store cannot be used; not placing it (delete it)");
                }
                continue;
            }
            self.place_among(&mut candidates, target, HashSet::new());
        }
    }

    /// When the earliest retry is due (never, when none waits).
    async fn next_retry(&self) {
        match self.retries.values().map(|r| r.not_before).min() {
            Some(due) => tokio::time::sleep_until(due).await,
            None => std::future::pending().await,
        }
    }

    /// Every member refused `target` (or none fits): try again after a growing delay.
    fn retry_later(&mut self, target: &str, reason: &str) {
        let cap = self
            .settings
            .targets_watch_timer
            .max(Duration::from_secs(1));
        let retry = self
            .retries
            .entry(target.to_string())
            .or_insert_with(|| PlacementRetry {
                not_before: tokio::time::Instant::now(),
                backoff: Backoff::new(FIRST_PLACEMENT_RETRY, cap),
                log: Throttle::new(Duration::from_secs(30)),
            });
        let delay = retry.backoff.next_delay();
        retry.not_before = tokio::time::Instant::now() + delay;
        if let Some(suppressed) = retry.log.allow() {
            tracing::warn!(target = %Escaped(target), reason = %reason, retry_in = ?delay, suppressed, "target not placed");
        }
    }

    fn place(&mut self, target: String, denied: HashSet<String>) {
        let mut candidates = self.candidates();
        self.place_among(&mut candidates, target, denied);
    }

    /// Places `target` on the best of `candidates` (whose load it then counts).
    fn place_among(
        &mut self,
        candidates: &mut [Candidate],
        target: String,
        denied: HashSet<String>,
    ) {
        let Some(config) = self.targets.get(&target) else {
            return;
        };
        let tags = target_tags(config);
        let member = match select_member(candidates, &tags, &denied) {
            // gnmic's rules pick a lone (or the only matching) member even when it refused;
            // then every possible member has refused: wait before asking again.
            Ok(candidate) if denied.contains(&candidate.name) => {
                self.retry_later(&target, "every eligible member refused it");
                return;
            }
            Ok(candidate) => candidate.name.clone(),
            Err(PlacementError::NoMembers) if !self.members.is_empty() => {
                self.retry_later(
                    &target,
                    "every member has given its targets up: their outputs are failing",
                );
                return;
            }
            Err(e @ (PlacementError::NoMembers | PlacementError::NoSuitableMember)) => {
                self.retry_later(&target, &e.to_string());
                return;
            }
        };
        let Some(api) = self.members.get(&member).map(|m| m.api.clone()) else {
            return;
        };
        if let Some(chosen) = candidates.iter_mut().find(|c| c.name == member) {
            chosen.load += 1;
        }
        let body = Bytes::from(serde_json::to_vec(config).unwrap_or_default());
        let span =
            tracing::info_span!(parent: None, "placement", target = %target, member = %member);
        let handshake = self.handshake(&target);
        let (name, to) = (target.clone(), member.clone());
        self.run_handshake(target, Placement::new(&member, denied), span, async move {
            handshake.assign(&api, &name, &to, body).await
        });
    }

    fn handshake(&mut self, target: &str) -> Handshake {
        Handshake {
            starts: self.starts.clone(),
            owner: self.watch_owner(target),
            timeout: self.settings.target_assignment_timeout,
        }
    }

    /// Records `placement` of `target` as in flight and runs `handshake` for it in `span`;
    /// the outcome comes back through `results`, a failure at once when the placement is
    /// abandoned, nothing when the term ends.
    fn run_handshake(
        &mut self,
        target: String,
        placement: Placement,
        span: tracing::Span,
        handshake: impl std::future::Future<Output = Assignment> + Send + 'static,
    ) {
        let abandon = placement.abandon.clone();
        let member = placement.member.clone();
        self.in_flight.insert(target.clone(), placement);
        let results = self.results.clone();
        let cancel = self.cancel.clone();
        tokio::spawn(
            async move {
                let outcome = tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = abandon.cancelled() => Assignment::Failed {
                        member,
                        reason: AssignmentError::MemberLeft,
                    },
                    outcome = handshake => outcome,
                };
                let _ = results.send((target, outcome)).await;
            }
            .instrument(span),
        );
    }

    /// Fails at once the placements and moves in flight to members no longer registered.
    fn abandon_assignments_to_gone_members(&self) {
        let abandoned: Vec<&Placement> = self
            .in_flight
            .values()
            .filter(|p| !self.members.contains_key(&p.member))
            .collect();
        if !abandoned.is_empty() {
            tracing::info!(
                assignments = abandoned.len(),
                "their member left: abandoning the assignments in flight to it"
            );
        }
        for placement in abandoned {
            placement.abandon.cancel();
        }
    }

    fn finish_assignment(&mut self, target: String, outcome: Assignment) {
        let Some(placement) = self.in_flight.remove(&target) else {
            return;
        };
        self.owner_watches.remove(&target);
        let landed_on = match &outcome {
            Assignment::Placed => Some(placement.member.clone()),
            Assignment::Failed { .. } => self.holders.get(&target).cloned(),
        };
        match outcome {
            Assignment::Placed => {
                self.retries.remove(&target);
                tracing::info!(target = %Escaped(&target), member = %placement.member, "target placed")
            }
            Assignment::Failed { member, reason } => {
                // Abandoned assignments were logged together when their member left.
                let left = matches!(reason, AssignmentError::MemberLeft);
                if !left
                    && self
                        .retries
                        .get(&target)
                        .is_none_or(|r| r.log.would_allow())
                {
                    tracing::warn!(target = %Escaped(&target), member = %member, reason = %reason, "assignment failed; choosing another member");
                }
                let mut denied = placement.denied;
                denied.insert(member);
                if !self.holders.contains_key(&target) {
                    self.place(target.clone(), denied);
                }
            }
        }
        self.continue_drain(&target, landed_on);
    }

    /// Moves `target` off the member being drained now that its placement or move in flight
    /// has ended, if it ended there (`landed_on`); one that went elsewhere needs nothing.
    fn continue_drain(&mut self, target: &str, landed_on: Option<String>) {
        let Some(drained) = self.drain_after.remove(target) else {
            return;
        };
        if let Some(again) = self.in_flight.get(target) {
            // A failed placement was started again: wait for that one if it may land there.
            if again.member == drained {
                self.drain_after.insert(target.to_string(), drained);
            }
            return;
        }
        if landed_on.as_deref() == Some(drained.as_str()) {
            let moves = self.plan_drain(&drained, &[target.to_string()]);
            self.execute_moves(moves);
        }
    }

    async fn command(&mut self, command: LeaderCommand) -> Option<TermEnd> {
        match command {
            LeaderCommand::StepDown { reply } => {
                let _ = reply.send(());
                Some(TermEnd::SteppedDown)
            }
            LeaderCommand::Rebalance { reply } => {
                // Plan from the store's current state, not from watch events still in flight.
                self.refresh().await;
                let moves = self.plan_rebalance(2);
                let count = self.execute_moves(moves);
                let _ = reply.send(Ok(count));
                None
            }
            LeaderCommand::Drain { member, reply } => {
                self.refresh().await;
                tracing::debug!(holders = self.holders.len(), member = %member, "draining");
                let _ = reply.send(self.drain(member));
                None
            }
            LeaderCommand::Move {
                target,
                member,
                reply,
            } => {
                self.refresh().await;
                let result = self.plan_move(&target, &member).map(|planned| match planned {
                    Some(mv) => {
                        tracing::info!(target = %Escaped(&mv.target), from = %mv.from, to = %mv.to, "moving a target on request");
                        self.execute_moves(vec![mv])
                    }
                    None => 0,
                });
                let _ = reply.send(result);
                None
            }
        }
    }

    /// The move that takes `target` to `member`: `None` when it is there already, refused
    /// when either is unknown, another member matches its tags better (affinity would move
    /// it straight back: a manual move must not flap), a placement or move of it is in
    /// flight, or it has no holder (or one that is not a member). Refusals that waiting
    /// cannot lift come first.
    fn plan_move(&self, target: &str, member: &str) -> Result<Option<Move>, CommandError> {
        let Some(config) = self.targets.get(target) else {
            return Err(CommandError::UnknownTarget(target.to_string()));
        };
        match self.members.get(member) {
            None => return Err(CommandError::UnknownMember(member.to_string())),
            Some(m) if !m.accepts_targets => {
                return Err(CommandError::MemberUnhealthy(member.to_string()))
            }
            Some(_) => {}
        }
        if let Some(better) = better_match(&self.candidates(), &target_tags(config), member) {
            return Err(CommandError::WorseMatch {
                target: target.to_string(),
                member: member.to_string(),
                better: better.name.clone(),
            });
        }
        if self.in_flight.contains_key(target) {
            return Err(CommandError::Busy(target.to_string()));
        }
        let Some(owner) = self.holders.get(target) else {
            return Err(CommandError::NotPlaced(target.to_string()));
        };
        if owner == member {
            return Ok(None);
        }
        if !self.members.contains_key(owner) {
            return Err(CommandError::OwnerNotMember {
                target: target.to_string(),
                owner: owner.clone(),
            });
        }
        Ok(Some(Move {
            target: target.to_string(),
            from: owner.clone(),
            to: member.to_string(),
        }))
    }

    fn owned_by_members(&self) -> BTreeMap<String, Vec<String>> {
        let mut owned: BTreeMap<String, Vec<String>> = self
            .members
            .values()
            .filter(|m| m.accepts_targets)
            .map(|m| (m.name.clone(), Vec::new()))
            .collect();
        for (target, owner) in &self.holders {
            if let Some(list) = owned.get_mut(owner) {
                list.push(target.clone());
            }
        }
        owned
    }

    /// Moves that even out the load, never taking a target to a member whose tags match it
    /// worse than its owner's (affinity would move it back: no flapping).
    fn plan_rebalance(&self, max_spread: usize) -> Vec<Move> {
        let score = |member: &str, target: &str| {
            let tags = self
                .targets
                .get(target)
                .map(target_tags)
                .unwrap_or_default();
            self.members
                .get(member)
                .map_or(0, |m| tag_prefix_match(&m.tags, &tags))
        };
        plan_rebalance(&self.owned_by_members(), max_spread)
            .into_iter()
            .filter(|mv| score(&mv.to, &mv.target) >= score(&mv.from, &mv.target))
            .collect()
    }

    /// Starts moving every target off `member`; answers how many moves that is, counting
    /// those that start once the target's placement or move in flight ends.
    fn drain(&mut self, member: String) -> Result<usize, CommandError> {
        if !self.members.contains_key(&member) {
            return Err(CommandError::UnknownMember(member));
        }
        let (settled, in_flight): (Vec<String>, Vec<String>) = self
            .targets_on(&member)
            .into_iter()
            .partition(|t| !self.in_flight.contains_key(t));
        let moves = self.plan_drain(&member, &settled);
        let count = self.execute_moves(moves) + in_flight.len();
        for target in in_flight {
            self.drain_after.insert(target, member.clone());
        }
        Ok(count)
    }

    /// The targets `member` holds or is being given (a placement or move to it in flight),
    /// in name order.
    fn targets_on(&self, member: &str) -> Vec<String> {
        let held = self
            .holders
            .iter()
            .filter(|(_, owner)| *owner == member)
            .map(|(target, _)| target);
        let arriving = self
            .in_flight
            .iter()
            .filter(|(_, placement)| placement.member == member)
            .map(|(target, _)| target);
        let targets: BTreeSet<&String> = held.chain(arriving).collect();
        targets.into_iter().cloned().collect()
    }

    /// Moves taking `targets` off `member`, each to the best other candidate (load counted
    /// as the plan goes); stops at the first target no other member can take.
    fn plan_drain(&self, member: &str, targets: &[String]) -> Vec<Move> {
        let denied: HashSet<String> = [member.to_string()].into();
        let mut candidates: Vec<Candidate> = self
            .candidates()
            .into_iter()
            .filter(|c| c.name != member)
            .collect();
        let mut moves = Vec::new();
        for target in targets {
            let tags = self
                .targets
                .get(target)
                .map(target_tags)
                .unwrap_or_default();
            let Ok(chosen) = select_member(&candidates, &tags, &denied) else {
                break;
            };
            let to = chosen.name.clone();
            if let Some(c) = candidates.iter_mut().find(|c| c.name == to) {
                c.load += 1;
            }
            moves.push(Move {
                target: target.clone(),
                from: member.to_string(),
                to,
            });
        }
        moves
    }

    /// Targets held by a member whose tags match them less than another member's: gnmic's
    /// affinity applied over time, so a pinned target placed while its member was away
    /// moves to it when it (re)joins. Only strictly better matches move, so nothing flaps.
    fn affinity_moves(&self) -> Vec<Move> {
        let candidates = self.candidates();
        let mut moves = Vec::new();
        for (target, owner) in &self.holders {
            if self.in_flight.contains_key(target) {
                continue;
            }
            let tags = self
                .targets
                .get(target)
                .map(target_tags)
                .unwrap_or_default();
            if tags.is_empty() {
                continue;
            }
            let owner_score = self
                .members
                .get(owner)
                .map_or(0, |m| tag_prefix_match(&m.tags, &tags));
            let Ok(best) = select_member(&candidates, &tags, &HashSet::new()) else {
                continue;
            };
            if best.name != *owner && tag_prefix_match(&best.tags, &tags) > owner_score {
                moves.push(Move {
                    target: target.clone(),
                    from: owner.clone(),
                    to: best.name.clone(),
                });
            }
        }
        moves
    }

    /// Moves the targets [`Term::affinity_moves`] finds.
    fn follow_affinity(&mut self) {
        let moves = self.affinity_moves();
        if !moves.is_empty() {
            tracing::info!(
                moves = moves.len(),
                "a better matching member is here: moving pinned targets"
            );
            self.execute_moves(moves);
        }
    }

    fn auto_rebalance(&mut self) {
        let Some(threshold) = self.settings.rebalance_threshold else {
            return;
        };
        let moves = self.plan_rebalance(threshold);
        if !moves.is_empty() {
            tracing::info!(moves = moves.len(), "member joined: rebalancing");
            self.execute_moves(moves);
        }
    }

    /// Moves targets with a handover: the new owner is started first (it waits for the
    /// lock), then the old owner stops and releases the lock, so the new owner takes over at once.
    /// Starts the hand-over of each move; answers how many started (a target already in
    /// flight, or whose member or config is gone, is skipped).
    fn execute_moves(&mut self, moves: Vec<Move>) -> usize {
        let mut started = 0;
        for mv in moves {
            if self.in_flight.contains_key(&mv.target) {
                continue;
            }
            let (Some(from_api), Some(to_api)) = (
                self.members.get(&mv.from).map(|m| m.api.clone()),
                self.members.get(&mv.to).map(|m| m.api.clone()),
            ) else {
                continue;
            };
            let Some(config) = self.targets.get(&mv.target) else {
                tracing::warn!(target = %mv.target, "not moved: its config is not in the store");
                continue;
            };
            let body = Bytes::from(serde_json::to_vec(config).unwrap_or_default());
            let handshake = self.handshake(&mv.target);
            let span = tracing::info_span!(parent: None, "move", target = %mv.target, from = %mv.from, to = %mv.to);
            let placement = Placement::new(&mv.to, HashSet::new());
            let target = mv.target.clone();
            started += 1;
            self.run_handshake(target, placement, span, async move {
                handshake
                    .hand_over(&from_api, &to_api, &mv.target, &mv.to, body)
                    .await
            });
        }
        started
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gnomon_coordination::MemoryCoordination;

    /// A term over an empty memory store with `members` (name, custom tags), `targets`
    /// (name, tags) and `holders` (target, owner) set directly, for planning only.
    fn term(
        members: &[(&str, &[&str])],
        targets: &[(&str, &[&str])],
        holders: &[(&str, &str)],
    ) -> Term {
        let settings = CoordinatorSettings::new("c1", "leader");
        let coordination: Arc<dyn Coordination> = Arc::new(MemoryCoordination::new("leader"));
        let (results, _) = mpsc::channel(1);
        let members = members
            .iter()
            .map(|(name, custom)| {
                let mut tags = vec![
                    "cluster-name=c1".to_string(),
                    format!("instance-name={name}"),
                    "__protocol=http".to_string(),
                ];
                tags.extend(custom.iter().map(|t| t.to_string()));
                let member = Member {
                    name: name.to_string(),
                    api: format!("http://{name}:7890"),
                    tags,
                    accepts_targets: true,
                };
                (name.to_string(), member)
            })
            .collect();
        let targets = targets
            .iter()
            .map(|(name, tags)| {
                let config =
                    serde_json::json!({"name": name, "address": "10.0.0.1:57400", "tags": tags});
                (name.to_string(), config)
            })
            .collect();
        let holders = holders
            .iter()
            .map(|(t, m)| (t.to_string(), m.to_string()))
            .collect();
        let client = MemberClient::new(&settings.member_client).unwrap();
        Term {
            starts: MemberStarts::new(client.clone()),
            client,
            store: TargetStore::new(coordination.clone(), "c1"),
            settings,
            coordination,
            members,
            targets,
            holders,
            owner_watches: HashMap::new(),
            in_flight: HashMap::new(),
            drain_after: HashMap::new(),
            results,
            cancel: CancellationToken::new(),
            retries: HashMap::new(),
            unplaceable: HashSet::new(),
            backlog: false,
            synced: true,
            rebalance_due: false,
        }
    }

    const DC2: &[&str] = &[
        "cluster-name=c1",
        "instance-name=m2",
        "__protocol=http",
        "site=dc2",
    ];

    #[tokio::test]
    async fn one_pass_spreads_unowned_targets_evenly_counting_its_own_placements() {
        let targets: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
        let target_refs: Vec<(&str, &[&str])> =
            targets.iter().map(|t| (t.as_str(), &[][..])).collect();
        let mut term = term(
            &[("m1", &[]), ("m2", &[]), ("m3", &[])],
            &target_refs,
            &[("t0", "m1"), ("t1", "m1")],
        );
        term.reconcile();
        let mut load: BTreeMap<&str, usize> = BTreeMap::new();
        for owner in term.holders.values() {
            *load.entry(owner).or_default() += 1;
        }
        for placement in term.in_flight.values() {
            *load.entry(&placement.member).or_default() += 1;
        }
        // m1 held two already: the eight placements even the three out (3, 3, 4 in some order
        // with m1 no higher than the others).
        assert_eq!(term.in_flight.len(), 8);
        assert_eq!(load.values().sum::<usize>(), 10);
        assert!(load.values().all(|l| (3..=4).contains(l)), "{load:?}");
        // Each placement waits on its own target's holder only.
        assert_eq!(term.owner_watches.len(), 8);
        let mut t5 = term.owner_watches["t5"].subscribe();
        let t6 = term.owner_watches["t6"].subscribe();
        term.apply_lock_event(WatchEvent::Put {
            key: format!("{}/t5", keys::targets_prefix("c1")),
            value: "m2".into(),
        });
        assert!(t5.has_changed().unwrap());
        assert_eq!(t5.borrow_and_update().as_deref(), Some("m2"));
        assert!(!t6.has_changed().unwrap());
        assert_eq!(*t6.borrow(), None);
    }

    #[tokio::test]
    async fn only_a_lock_gone_or_a_config_change_asks_for_a_placement_pass() {
        let mut term = term(&[("m1", &[])], &[("t0", &[]), ("t1", &[])], &[("t0", "m1")]);
        let locks = format!("{}/", keys::targets_prefix("c1"));
        let lock = |target: &str| format!("{locks}{target}");
        let taken = WatchEvent::Put {
            key: lock("t1"),
            value: "m1".into(),
        };
        assert!(!term.apply_cluster_event(taken, &locks));
        assert_eq!(term.holders.get("t1").map(String::as_str), Some("m1"));
        assert!(term.apply_cluster_event(WatchEvent::Delete { key: lock("t0") }, &locks));
        assert!(!term.holders.contains_key("t0"));
        let config = WatchEvent::Put {
            key: "gnmic/c1/config/targets/t2".to_string(),
            value: r#"{"name":"t2","address":"10.0.0.2:57400"}"#.into(),
        };
        assert!(term.apply_cluster_event(config, &locks));
        assert!(term.targets.contains_key("t2"));
    }

    #[tokio::test]
    async fn placements_in_flight_are_bounded_and_the_rest_wait_for_room() {
        let targets: Vec<String> = (0..PLACEMENTS_IN_FLIGHT + 100)
            .map(|i| format!("t{i}"))
            .collect();
        let target_refs: Vec<(&str, &[&str])> =
            targets.iter().map(|t| (t.as_str(), &[][..])).collect();
        let mut term = term(&[("m1", &[]), ("m2", &[])], &target_refs, &[]);
        term.reconcile();
        assert_eq!(term.in_flight.len(), PLACEMENTS_IN_FLIGHT);
        assert!(term.backlog);
        // Placements finish (their locks are taken): the next pass places the rest.
        let placed: Vec<String> = term.in_flight.keys().cloned().collect();
        for target in placed {
            let member = term.in_flight[&target].member.clone();
            term.holders.insert(target.clone(), member);
            term.finish_assignment(target, Assignment::Placed);
        }
        term.reconcile();
        assert_eq!(term.in_flight.len(), 100);
        assert!(!term.backlog);
    }

    #[test]
    fn a_move_goes_from_the_holder_to_the_named_member() {
        let term = term(
            &[("m1", &[]), ("m2", &[]), ("m3", &[])],
            &[("t1", &[]), ("t2", &[])],
            &[("t1", "m1"), ("t2", "m2")],
        );
        assert_eq!(
            term.plan_move("t1", "m3"),
            Ok(Some(Move {
                target: "t1".into(),
                from: "m1".into(),
                to: "m3".into()
            }))
        );
        // Already there: nothing to do.
        assert_eq!(term.plan_move("t2", "m2"), Ok(None));
    }

    #[test]
    fn a_move_names_what_is_unknown_or_not_ready() {
        let mut term = term(
            &[("m1", &[]), ("m2", &[])],
            &[("t1", &[]), ("unplaced", &[]), ("orphaned", &[])],
            &[("t1", "m1"), ("orphaned", "gone"), ("unconfigured", "m1")],
        );
        assert_eq!(
            term.plan_move("nope", "m2"),
            Err(CommandError::UnknownTarget("nope".into()))
        );
        // A lock without a config is no target of the cluster.
        assert_eq!(
            term.plan_move("unconfigured", "m2"),
            Err(CommandError::UnknownTarget("unconfigured".into()))
        );
        assert_eq!(
            term.plan_move("t1", "nobody"),
            Err(CommandError::UnknownMember("nobody".into()))
        );
        assert_eq!(
            term.plan_move("unplaced", "m2"),
            Err(CommandError::NotPlaced("unplaced".into()))
        );
        assert_eq!(
            term.plan_move("orphaned", "m2"),
            Err(CommandError::OwnerNotMember {
                target: "orphaned".into(),
                owner: "gone".into()
            })
        );
        term.in_flight
            .insert("t1".into(), Placement::new("m2", HashSet::new()));
        assert_eq!(
            term.plan_move("t1", "m2"),
            Err(CommandError::Busy("t1".into()))
        );
        assert_eq!(
            CommandError::NotPlaced("unplaced".into()).to_string(),
            "target unplaced is not placed yet: no member holds its lock"
        );
    }

    #[test]
    fn a_move_affinity_would_undo_is_refused_naming_both_members() {
        let mut term = term(
            &[("m1", &[]), ("m2", &["site=dc2"]), ("m3", &[])],
            &[("pinned", DC2), ("cluster-wide", &["cluster-name=c1"])],
            &[("pinned", "m2"), ("cluster-wide", "m1")],
        );
        // Refused even while a move of it is in flight: waiting would not help.
        term.in_flight
            .insert("pinned".into(), Placement::new("m2", HashSet::new()));
        let refused = term.plan_move("pinned", "m3").unwrap_err();
        term.in_flight.clear();
        assert_eq!(
            refused,
            CommandError::WorseMatch {
                target: "pinned".into(),
                member: "m3".into(),
                better: "m2".into()
            }
        );
        assert_eq!(
            refused.to_string(),
            "target pinned's tags match m2 better than m3: affinity would move it back to m2"
        );
        // Every member matches the cluster name equally: the move stands, and affinity
        // finds nothing to move afterwards.
        assert!(term.plan_move("cluster-wide", "m3").unwrap().is_some());
        term.holders.insert("cluster-wide".into(), "m3".into());
        assert!(term.affinity_moves().is_empty());
    }

    #[test]
    fn a_member_whose_outputs_fail_is_no_destination_and_joins_again_when_it_recovers() {
        let mut term = term(
            &[("m1", &[]), ("m2", &[]), ("m3", &[])],
            &[("t1", &[]), ("t2", &[]), ("t3", &[]), ("t4", &[])],
            &[("t1", "m1"), ("t2", "m1"), ("t3", "m1"), ("t4", "m1")],
        );
        let failing = |term: &mut Term, accepts: bool| {
            let mut members: Vec<Member> = term.members.values().cloned().collect();
            for m in members.iter_mut().filter(|m| m.name == "m3") {
                m.accepts_targets = accepts;
            }
            term.set_members(members);
            std::mem::take(&mut term.rebalance_due)
        };
        assert!(!failing(&mut term, false), "losing a member is no join");
        assert_eq!(
            term.candidates()
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["m1", "m2"]
        );
        let moves = term.plan_rebalance(2);
        assert!(
            !moves.is_empty() && moves.iter().all(|m| m.to == "m2"),
            "{moves:?}"
        );
        assert!(term
            .plan_drain("m1", &term.targets_on("m1"))
            .iter()
            .all(|m| m.to == "m2"));
        assert_eq!(
            term.plan_move("t1", "m3"),
            Err(CommandError::MemberUnhealthy("m3".into()))
        );
        // Accepting targets again counts as joining: the automatic rebalance runs.
        assert!(failing(&mut term, true));
        assert!(term.plan_rebalance(2).iter().any(|m| m.to == "m3"));
    }

    /// A drain asked while a target's move to the drained member is still in flight (the
    /// lock already moved, the hand-over not yet reported) moves it once that lands; a
    /// target whose placement elsewhere was in flight is left where it lands.
    #[tokio::test]
    async fn a_drain_moves_targets_whose_move_to_the_member_was_in_flight_once_it_lands() {
        let mut term = term(
            &[("m1", &[]), ("m2", &[])],
            &[("t1", &[]), ("t2", &[]), ("t3", &[])],
            &[("t1", "m1"), ("t2", "m1"), ("t3", "m1")],
        );
        assert_eq!(term.execute_moves(vec![move_of("t1", "m2", "m1")]), 1);
        term.in_flight
            .insert("t3".into(), Placement::new("m2", HashSet::new()));
        // t2 moves now; t1 and t3 wait for their hand-overs in flight.
        assert_eq!(term.drain("m1".into()), Ok(3));
        assert_eq!(term.in_flight["t2"].member, "m2");
        assert_eq!(
            term.drain_after
                .keys()
                .map(String::as_str)
                .collect::<BTreeSet<_>>(),
            BTreeSet::from(["t1", "t3"])
        );
        // t1's move onto m1 lands: it is moved off at once.
        term.finish_assignment("t1".into(), Assignment::Placed);
        assert_eq!(term.in_flight["t1"].member, "m2");
        // t3's move to m2 lands: nothing more to do for it.
        term.finish_assignment("t3".into(), Assignment::Placed);
        assert!(!term.in_flight.contains_key("t3"));
        assert!(term.drain_after.is_empty());
        assert_eq!(
            term.drain("m9".into()),
            Err(CommandError::UnknownMember("m9".into()))
        );
    }

    /// A member that leaves fails the handshakes in flight to it at once, instead of after
    /// the assignment timeout: they hold places in the placement window meanwhile.
    #[tokio::test]
    async fn assignments_in_flight_to_a_member_that_left_fail_at_once() {
        let mut term = term(&[("m1", &[]), ("m2", &[])], &[], &[]);
        let (results, mut outcomes) = mpsc::channel(4);
        term.results = results;
        for (target, member) in [("t1", "m2"), ("t2", "m1")] {
            let span = tracing::Span::none();
            let placement = Placement::new(member, HashSet::new());
            term.run_handshake(target.into(), placement, span, std::future::pending());
        }
        let m1 = term.members["m1"].clone();
        term.members_now(vec![m1]).await;
        let (target, outcome) = outcomes.recv().await.expect("an outcome");
        assert_eq!(target, "t1");
        assert!(matches!(
            outcome,
            Assignment::Failed {
                reason: AssignmentError::MemberLeft,
                ..
            }
        ));
        assert!(!term.in_flight["t2"].abandon.is_cancelled());
        assert!(outcomes.try_recv().is_err(), "t2's member is still here");
    }

    fn move_of(target: &str, from: &str, to: &str) -> Move {
        Move {
            target: target.into(),
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn a_join_rebalances_only_once_the_placements_in_flight_have_landed() {
        let mut term = term(
            &[("m1", &[]), ("m2", &[])],
            &[
                ("t1", &[]),
                ("t2", &[]),
                ("t3", &[]),
                ("t4", &[]),
                ("t5", &[]),
                ("t6", &[]),
            ],
            &[("t1", "m1"), ("t2", "m1"), ("t3", "m1")],
        );
        for target in ["t4", "t5", "t6"] {
            let placement = Placement::new("m2", HashSet::new());
            term.in_flight.insert(target.into(), placement);
        }
        let mut members: Vec<Member> = term.members.values().cloned().collect();
        let mut m3 = members[0].clone();
        m3.name = "m3".into();
        m3.api = "http://m3:7890".into();
        members.push(m3);
        assert!(term.set_members(members));
        assert!(term.rebalance_due, "m3 joined");
        // m2's placements are still landing: a plan now would take m1's targets to m2.
        term.rebalance_when_settled();
        assert!(term.rebalance_due, "the rebalance waits");
        assert!(term
            .in_flight
            .keys()
            .all(|t| ["t4", "t5", "t6"].contains(&t.as_str())));
        // They landed: the plan moves targets to the member that joined.
        for target in ["t4", "t5", "t6"] {
            term.in_flight.remove(target);
            term.holders.insert(target.into(), "m2".into());
        }
        let moves = term.plan_rebalance(2);
        assert!(
            !moves.is_empty() && moves.iter().all(|m| m.to == "m3"),
            "{moves:?}"
        );
    }

    #[test]
    fn a_move_away_from_a_worse_match_to_the_best_one_is_allowed() {
        let term = term(
            &[("m1", &[]), ("m2", &["site=dc2"])],
            &[("pinned", DC2)],
            &[("pinned", "m1")],
        );
        // Affinity plans the same move: a manual one only does it sooner.
        let planned = term.plan_move("pinned", "m2").unwrap().unwrap();
        assert_eq!(term.affinity_moves(), vec![planned]);
    }
}
