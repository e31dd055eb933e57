//! The election loop: campaign for `gnmic/<cluster>/leader`, lead while holding it, and
//! campaign again after losing it or stepping down.

use crate::leader::{run_term, CommandError, LeaderCommand, TermEnd};
use crate::member_client::MemberClient;
use crate::settings::CoordinatorSettings;
use gnomon_common::log::Throttle;
use gnomon_common::retry::Backoff;
use gnomon_coordination::{keys, Coordination};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// After stepping down, wait this long before campaigning again, so another instance wins.
const STEP_DOWN_COOLDOWN: Duration = Duration::from_secs(3);

/// Talks to the running coordinator (the API uses it).
#[derive(Clone)]
pub struct CoordinatorHandle {
    commands: mpsc::Sender<LeaderCommand>,
    leading: watch::Receiver<bool>,
}

/// How long the API waits for the leader to answer a command.
const LEADER_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a leader-only request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LeaderRequestError {
    #[error("not leader")]
    NotLeader,
    #[error("the leader did not answer within {0:?}")]
    NoAnswer(Duration),
    #[error(transparent)]
    Refused(#[from] CommandError),
}

impl CoordinatorHandle {
    /// Whether this instance leads now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Waits until this instance's leadership is `leading`.
    pub async fn wait_leading(&mut self, leading: bool) {
        let _ = self.leading.wait_for(|l| *l == leading).await;
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> LeaderCommand,
    ) -> Result<T, LeaderRequestError> {
        if !self.is_leader() {
            return Err(LeaderRequestError::NotLeader);
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| LeaderRequestError::NotLeader)?;
        tokio::time::timeout(LEADER_ANSWER_TIMEOUT, answer)
            .await
            .map_err(|_| LeaderRequestError::NoAnswer(LEADER_ANSWER_TIMEOUT))?
            .map_err(|_| LeaderRequestError::NotLeader)
    }

    /// Starts a rebalance; returns the number of planned moves.
    pub async fn rebalance(&self) -> Result<usize, LeaderRequestError> {
        Ok(self
            .ask(|reply| LeaderCommand::Rebalance { reply })
            .await??)
    }

    /// Moves every target of `member` away; returns the number of moves.
    pub async fn drain(&self, member: &str) -> Result<usize, LeaderRequestError> {
        let member = member.to_string();
        Ok(self
            .ask(|reply| LeaderCommand::Drain { member, reply })
            .await??)
    }

    /// Moves `target` to `member` with a handover; returns the number of moves (0 when the
    /// target is there already).
    pub async fn move_target(
        &self,
        target: &str,
        member: &str,
    ) -> Result<usize, LeaderRequestError> {
        let (target, member) = (target.to_string(), member.to_string());
        Ok(self
            .ask(|reply| LeaderCommand::Move {
                target,
                member,
                reply,
            })
            .await??)
    }

    /// Gives up the leader lock.
    pub async fn step_down(&self) -> Result<(), LeaderRequestError> {
        self.ask(|reply| LeaderCommand::StepDown { reply }).await
    }
}

/// Starts the election loop in the background.
pub fn spawn(
    settings: CoordinatorSettings,
    coordination: Arc<dyn Coordination>,
    shutdown: CancellationToken,
) -> anyhow::Result<(CoordinatorHandle, tokio::task::JoinHandle<()>)> {
    let client = MemberClient::new(&settings.member_client)?;
    let (commands_tx, commands) = mpsc::channel(16);
    let (leading_tx, leading) = watch::channel(false);
    let task = tokio::spawn(campaign_loop(
        settings,
        coordination,
        client,
        commands,
        leading_tx,
        shutdown,
    ));
    Ok((
        CoordinatorHandle {
            commands: commands_tx,
            leading,
        },
        task,
    ))
}

/// Gives the coordinator's metrics their `# HELP` text.
fn describe_metrics() {
    use metrics::describe_gauge;
    describe_gauge!(
        "gnmic_cluster_is_leader",
        "Has value 1 if this instance is the cluster leader, 0 otherwise."
    );
    describe_gauge!("gnomon_cluster_members", "Healthy members the leader sees.");
    describe_gauge!(
        "gnomon_cluster_targets",
        "Targets configured in the cluster (leader's view)."
    );
    describe_gauge!(
        "gnomon_cluster_locked_targets",
        "Target locks held in the cluster (leader's view)."
    );
    describe_gauge!(
        "gnomon_cluster_placements_in_flight",
        "Assignments the leader has started and not yet seen completed."
    );
    describe_gauge!(
        "gnomon_cluster_member_locked_targets",
        "Target locks held per member (leader's view)."
    );
}

async fn campaign_loop(
    settings: CoordinatorSettings,
    coordination: Arc<dyn Coordination>,
    client: MemberClient,
    mut commands: mpsc::Receiver<LeaderCommand>,
    leading: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let leader_key = keys::leader(&settings.cluster_name);
    describe_metrics();
    metrics::gauge!("gnmic_cluster_is_leader").set(0.0);
    // A refused credential will not fix itself soon: it waits up to 30 s between attempts.
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut errors = Throttle::new(Duration::from_secs(30));
    loop {
        let span =
            tracing::info_span!("election", key = %leader_key, instance = %settings.instance_name);
        let guard = match coordination
            .acquire_blocking(&leader_key, &settings.instance_name, &shutdown)
            .instrument(span)
            .await
        {
            Ok(Some(guard)) => guard,
            Ok(None) => return,
            Err(e) => {
                let delay = if e.credential().is_some() {
                    backoff.next_delay()
                } else {
                    backoff.next_delay().min(Duration::from_secs(5))
                };
                if let Some(suppressed) = errors.allow() {
                    tracing::error!(error = %gnomon_common::error_text::error_chain(&e), retry_in = ?delay, suppressed, "campaign failed");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        backoff.reset();
        errors.reset();
        tracing::info!(fencing_token = guard.fencing_token(), "elected leader");
        leading.send_replace(true);
        metrics::gauge!("gnmic_cluster_is_leader").set(1.0);
        let end = run_term(
            settings.clone(),
            coordination.clone(),
            client.clone(),
            &guard,
            &mut commands,
            &shutdown,
        )
        .instrument(tracing::info_span!(
            "leadership",
            fencing_token = guard.fencing_token()
        ))
        .await;
        leading.send_replace(false);
        metrics::gauge!("gnmic_cluster_is_leader").set(0.0);
        match end {
            Ok(TermEnd::Shutdown) => {
                let _ = guard.release().await;
                return;
            }
            Ok(TermEnd::SteppedDown) => {
                tracing::info!("stepping down");
                let _ = guard.release().await;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(STEP_DOWN_COOLDOWN) => {}
                }
            }
            Ok(TermEnd::LockLost) => {
                tracing::warn!("leader lock lost");
                drop(guard);
            }
            Err(e) => {
                tracing::error!(error = %e, "leadership ended on an error");
                let _ = guard.release().await;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
