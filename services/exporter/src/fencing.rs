//! Which messages an exporter believes: data from the collector that holds a target's lock,
//! nothing else.
//!
//! Collectors stamp every message with the fencing token of the target lock they hold.
//! Two ways to judge it:
//! * **Clustered** ([`Fencing::following`]): the exporter follows the target locks in the
//!   coordination store ([`LockTable`], fed by a watch) and accepts a message only when its
//!   token is the current holder's. A higher token than the table knows is a handover the
//!   watch has not delivered yet, or a forgery: it is dropped (counted as unconfirmed) and
//!   the table is asked to re-read that lock, so a real new owner is believed within one
//!   store round trip. A token below the highest the store ever showed for the target is a
//!   stale owner (even while the store's latest change is on its way); a token for a target
//!   nobody holds proves nothing. A message without a token comes from an unclustered
//!   collector: it is believed for targets no lock was ever seen for (there is nothing to
//!   fence), and dropped for the others. So a forged header — garbage or a valid body —
//!   can neither inject data into a target the cluster holds nor freeze one.
//! * **Not clustered** ([`Fencing::highest_seen`]): there is no store to ask; the highest
//!   token seen per target wins. A token is recorded only from a message that decoded, so an
//!   undecodable message with a raised token cannot lock out the real owner.
//!
//! A holder's last word: a collector publishes a target's final status (deleted, down) just
//! before it releases the lock, but the bus and the store are separate paths, so the release
//! may reach the exporter first. For target-status messages only, the token of the holder
//! that just let go stays believable for [`LAST_WORD_GRACE`] unless a newer holder appeared
//! ([`Verdict::LastWord`]); the input then applies only what removes or downs the target's up
//! series, so even a forger who copies that token can neither raise a target nor inject data.
//! Data in flight at a release is dropped, as before.
//!
//! Cost on the hot path: one read-locked hash lookup per message.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// How long after a release the last holder's final target status is believed.
pub const LAST_WORD_GRACE: Duration = Duration::from_secs(10);

/// What to do with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// From the current owner: apply it.
    Accept,
    /// From a previous owner.
    Stale,
    /// Cannot be matched to the current owner (no token, no lock, or a token the store has
    /// not confirmed).
    Unconfirmed,
    /// A target status from the holder that released the lock moments ago: believe only
    /// what deletes or downs the target.
    LastWord,
}

/// What the exporter knows about one target's lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Lock {
    /// The current holder's token, when someone holds the lock.
    current: Option<u64>,
    /// The highest token the store ever showed for this target: anything below comes from a
    /// previous owner, even while the store's latest change is still on its way.
    highest: u64,
    /// When the holder with token `highest` let go (none since, or still held: `None`).
    released: Option<Instant>,
}

impl Lock {
    fn hold(&mut self, token: u64) {
        self.current = Some(token);
        self.highest = self.highest.max(token);
        self.released = None;
    }

    fn release(&mut self, at: Instant) {
        if self.current.take().is_some() {
            self.released = Some(at);
        }
    }

    /// Whether a status with `token` may have the last word: nobody holds the lock (as far
    /// as the table knows) and the token is not a previous owner's. The holder that just
    /// let go qualifies for [`LAST_WORD_GRACE`]; a higher token qualifies too, because the
    /// watch may have missed a short tenure (claimed and released between two reads) — it
    /// can only remove or down the series of a target nobody holds.
    fn just_released_by(&self, token: u64) -> bool {
        self.current.is_none()
            && (token > self.highest
                || (token == self.highest
                    && self
                        .released
                        .is_some_and(|at| at.elapsed() < LAST_WORD_GRACE)))
    }
}

/// The current holder's fencing token of every locked target, as the store says.
#[derive(Debug, Default)]
pub struct LockTable {
    locks: RwLock<HashMap<String, Lock>>,
    /// Targets whose lock should be re-read (a token above the known one was seen).
    recheck: Mutex<Vec<String>>,
    recheck_wake: tokio::sync::Notify,
}

impl LockTable {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Lock>> {
        self.locks.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `target`'s lock is held with `token`.
    pub fn set(&self, target: &str, token: u64) {
        let mut locks = self.write();
        let lock = locks.entry(target.to_string()).or_default();
        lock.hold(token);
    }

    /// Records that nobody holds `target`'s lock (its last token stays known).
    pub fn remove(&self, target: &str) {
        if let Some(lock) = self.write().get_mut(target) {
            lock.release(Instant::now());
        }
    }

    /// Replaces who holds what (after a full read of the store); tokens seen before stay
    /// known as the highest per target.
    pub fn replace(&self, held: HashMap<String, u64>) {
        let mut locks = self.write();
        let now = Instant::now();
        for (target, lock) in locks.iter_mut() {
            if !held.contains_key(target) {
                lock.release(now);
            }
        }
        for (target, token) in held {
            locks.entry(target).or_default().hold(token);
        }
    }

    /// The current holder's token of `target`.
    pub fn get(&self, target: &str) -> Option<u64> {
        self.lock(target).and_then(|l| l.current)
    }

    fn lock(&self, target: &str) -> Option<Lock> {
        let locks = self.locks.read().unwrap_or_else(|p| p.into_inner());
        locks.get(target).copied()
    }

    /// Targets to re-read, taken (each once, however often it was asked for).
    pub fn take_rechecks(&self) -> Vec<String> {
        let mut recheck = self.recheck.lock().unwrap_or_else(|p| p.into_inner());
        let mut targets = std::mem::take(&mut *recheck);
        targets.sort();
        targets.dedup();
        targets
    }

    /// Waits until a re-read is asked for.
    pub async fn recheck_requested(&self) {
        self.recheck_wake.notified().await;
    }

    fn ask_recheck(&self, target: &str) {
        let mut recheck = self.recheck.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a flood of forged targets cannot grow it without limit.
        if recheck.len() < 1024 && !recheck.iter().any(|t| t == target) {
            recheck.push(target.to_string());
        }
        drop(recheck);
        self.recheck_wake.notify_one();
    }
}

enum Mode {
    HighestSeen(Mutex<HashMap<String, u64>>),
    Following(std::sync::Arc<LockTable>),
}

/// The fencing judge of one exporter (shared by its inputs).
pub struct Fencing {
    mode: Mode,
}

impl Default for Fencing {
    fn default() -> Self {
        Self::highest_seen()
    }
}

impl Fencing {
    /// Not clustered: the highest token seen per target wins.
    pub fn highest_seen() -> Self {
        Self {
            mode: Mode::HighestSeen(Mutex::new(HashMap::new())),
        }
    }

    /// Clustered: only the current lock holder's token is accepted.
    pub fn following(locks: std::sync::Arc<LockTable>) -> Self {
        Self {
            mode: Mode::Following(locks),
        }
    }

    /// Whether a message must name its target (and so its owner) to be believed.
    pub fn requires_owner(&self) -> bool {
        matches!(self.mode, Mode::Following(_))
    }

    /// The verdict on a target-status message (the collector's `gnomon_target_up`): as
    /// [`Self::judge`], except that the holder that just released the lock gets
    /// [`Verdict::LastWord`] instead of being dropped.
    pub fn judge_status(&self, target: &str, token: Option<u64>) -> Verdict {
        if let (Mode::Following(locks), Some(token)) = (&self.mode, token) {
            if locks
                .lock(target)
                .is_some_and(|l| l.just_released_by(token))
            {
                return Verdict::LastWord;
            }
        }
        self.judge(target, token)
    }

    /// The verdict on a message of `target` carrying `token`, before decoding it.
    pub fn judge(&self, target: &str, token: Option<u64>) -> Verdict {
        match &self.mode {
            Mode::HighestSeen(highest) => {
                let highest = highest.lock().unwrap_or_else(|p| p.into_inner());
                match (highest.get(target), token.unwrap_or(0)) {
                    (Some(seen), token) if token < *seen => Verdict::Stale,
                    _ => Verdict::Accept,
                }
            }
            Mode::Following(locks) => {
                let known = locks.lock(target);
                let Some(token) = token else {
                    // No token: an unclustered collector (which never stamps one) is believed
                    // for targets no lock was ever seen for; a locked target's data must
                    // come from its holder.
                    return if known.is_some() {
                        Verdict::Unconfirmed
                    } else {
                        Verdict::Accept
                    };
                };
                let lock = known.unwrap_or_default();
                if token < lock.highest {
                    Verdict::Stale
                } else if lock.current == Some(token) {
                    Verdict::Accept
                } else {
                    locks.ask_recheck(target);
                    Verdict::Unconfirmed
                }
            }
        }
    }

    /// Records the token of an accepted message that decoded (highest-seen mode only; the
    /// store is the authority otherwise).
    pub fn record(&self, target: &str, token: Option<u64>) {
        if let Mode::HighestSeen(highest) = &self.mode {
            let token = token.unwrap_or(0);
            let mut highest = highest.lock().unwrap_or_else(|p| p.into_inner());
            let seen = highest.entry(target.to_string()).or_insert(token);
            *seen = (*seen).max(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn highest_seen_drops_only_older_tokens_and_records_decoded_ones() {
        let fencing = Fencing::highest_seen();
        assert_eq!(fencing.judge("r1", Some(5)), Verdict::Accept);
        fencing.record("r1", Some(5));
        assert_eq!(fencing.judge("r1", Some(5)), Verdict::Accept);
        assert_eq!(fencing.judge("r1", Some(4)), Verdict::Stale);
        // A raised token that is never recorded (its message did not decode) changes nothing.
        assert_eq!(fencing.judge("r1", Some(99)), Verdict::Accept);
        assert_eq!(fencing.judge("r1", Some(5)), Verdict::Accept);
        fencing.record("r1", Some(9));
        assert_eq!(fencing.judge("r1", Some(5)), Verdict::Stale);
        assert_eq!(fencing.judge("r2", None), Verdict::Accept);
    }

    #[test]
    fn following_accepts_only_the_current_holder() {
        let locks = Arc::new(LockTable::default());
        let fencing = Fencing::following(locks.clone());
        assert_eq!(fencing.judge("r1", Some(7)), Verdict::Unconfirmed);
        locks.set("r1", 7);
        assert_eq!(fencing.judge("r1", Some(7)), Verdict::Accept);
        assert_eq!(fencing.judge("r1", Some(6)), Verdict::Stale);
        assert_eq!(fencing.judge("r1", None), Verdict::Unconfirmed);
        // An unclustered collector's message (no token) for a target never locked.
        assert_eq!(fencing.judge("solo", None), Verdict::Accept);
        // A raised token (forged, or a handover not yet seen) is not believed, and asks for
        // a re-read of that lock.
        assert_eq!(fencing.judge("r1", Some(1_000)), Verdict::Unconfirmed);
        assert_eq!(locks.take_rechecks(), vec!["r1".to_string()]);
        assert!(locks.take_rechecks().is_empty());
        // The real owner keeps being accepted.
        assert_eq!(fencing.judge("r1", Some(7)), Verdict::Accept);
        // A handover the store confirms.
        locks.set("r1", 9);
        assert_eq!(fencing.judge("r1", Some(9)), Verdict::Accept);
        assert_eq!(fencing.judge("r1", Some(7)), Verdict::Stale);
        locks.remove("r1");
        // The last holder's data after its lock is gone: stale, not merely unconfirmed.
        assert_eq!(fencing.judge("r1", Some(7)), Verdict::Stale);
        assert_eq!(fencing.judge("r1", Some(9)), Verdict::Unconfirmed);
        // Its final target status, though, is its last word (only for a while).
        assert_eq!(fencing.judge_status("r1", Some(9)), Verdict::LastWord);
        assert_eq!(fencing.judge_status("r1", Some(7)), Verdict::Stale);
        // A tenure the watch missed (claimed and released between two reads).
        assert_eq!(fencing.judge_status("r1", Some(10)), Verdict::LastWord);
        // A full read keeps what was learned about past owners.
        locks.replace(HashMap::from([("r2".to_string(), 3)]));
        assert_eq!(fencing.judge("r1", Some(8)), Verdict::Stale);
        assert_eq!(fencing.judge("r2", Some(3)), Verdict::Accept);
        // A full read that finds r2 released starts its grace; a new holder ends it.
        locks.replace(HashMap::new());
        assert_eq!(fencing.judge_status("r2", Some(3)), Verdict::LastWord);
        locks.set("r2", 4);
        assert_eq!(fencing.judge_status("r2", Some(3)), Verdict::Stale);
        assert_eq!(fencing.judge_status("r2", Some(4)), Verdict::Accept);
    }

    #[test]
    fn the_last_word_expires() {
        let locks = Arc::new(LockTable::default());
        let fencing = Fencing::following(locks.clone());
        locks.set("r1", 5);
        locks.remove("r1");
        locks.write().get_mut("r1").unwrap().released =
            Instant::now().checked_sub(LAST_WORD_GRACE + Duration::from_secs(1));
        assert_eq!(fencing.judge_status("r1", Some(5)), Verdict::Unconfirmed);
        // A held lock: a status from anyone else is not believed.
        locks.set("r9", 3);
        assert_eq!(fencing.judge_status("r9", Some(4)), Verdict::Unconfirmed);
        // Not clustered: status is judged like data.
        assert_eq!(
            Fencing::highest_seen().judge_status("r1", Some(1)),
            Verdict::Accept
        );
    }
}
