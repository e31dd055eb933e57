//! One Lease per key: how a key, its value, its holder and its fencing token are written in a
//! `coordination.k8s.io/v1` Lease, and how a reader judges them.
//!
//! * `metadata.name`: [`names::object_name`] of the key; label `gnomon.io/store=v1` (what
//!   listings and watches select); annotations `original-key` (the key, as gnmic writes it)
//!   and `original-value` (the value).
//! * A **lock** has `spec.holderIdentity` (`<instance>-<random>`, one per process: a restarted
//!   pod with the same name is a new holder), `renewTime`, `acquireTime`,
//!   `leaseDurationSeconds`, `leaseTransitions`, and two gnomon annotations:
//!   `gnomon.io/fencing-token` and `gnomon.io/lock-delay` (the holder's lock-delay in ms).
//!   It is held while `renewTime + leaseDurationSeconds` lies ahead on the reader's clock;
//!   a contender may take it over once `renewTime + leaseDurationSeconds + lock-delay` has
//!   passed. A release deletes the Lease.
//! * A **plain key** is a Lease without `holderIdentity`: present until deleted.

use super::names;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

pub(crate) const STORE_LABEL: &str = "gnomon.io/store";
pub(crate) const STORE_LABEL_VALUE: &str = "v1";
pub(crate) const STORE_SELECTOR: &str = "gnomon.io/store=v1";
pub(crate) const KEY_ANNOTATION: &str = "original-key";
pub(crate) const VALUE_ANNOTATION: &str = "original-value";
pub(crate) const TOKEN_ANNOTATION: &str = "gnomon.io/fencing-token";
pub(crate) const DELAY_ANNOTATION: &str = "gnomon.io/lock-delay";

/// Who holds a lock and until when it counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub identity: String,
    pub renewed: SystemTime,
    pub duration: Duration,
    pub delay: Duration,
    pub token: u64,
}

/// A Lease as gnomon reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub key: String,
    pub value: String,
    pub holder: Option<Holder>,
    pub resource_version: String,
}

impl Record {
    /// The gnomon record in `lease`, or `None` when the Lease is not one of ours.
    pub(crate) fn parse(lease: &Lease) -> Option<Self> {
        let meta = &lease.metadata;
        let ours = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(STORE_LABEL))
            .is_some_and(|v| v == STORE_LABEL_VALUE);
        let annotations = meta.annotations.as_ref()?;
        let key = annotations.get(KEY_ANNOTATION)?;
        // The name must be the key's: a copied annotation does not make a Lease ours.
        if !ours || meta.name.as_deref() != Some(names::object_name(key).as_str()) {
            return None;
        }
        let value = annotations
            .get(VALUE_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        let holder = lease.spec.as_ref().and_then(|spec| {
            let identity = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
            let renewed: SystemTime = spec.renew_time.as_ref()?.0.into();
            let duration =
                Duration::from_secs(u64::try_from(spec.lease_duration_seconds?).ok()?.max(1));
            let delay = annotations
                .get(DELAY_ANNOTATION)
                .and_then(|d| d.parse::<u64>().ok())
                .map(Duration::from_millis)
                .unwrap_or_default();
            let token = annotations
                .get(TOKEN_ANNOTATION)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
            Some(Holder {
                identity,
                renewed,
                duration,
                delay,
                token,
            })
        });
        Some(Self {
            key: key.clone(),
            value,
            holder,
            resource_version: meta.resource_version.clone().unwrap_or_default(),
        })
    }

    /// When a lock stops counting as held (`None` for a plain key).
    pub(crate) fn expires(&self) -> Option<SystemTime> {
        self.holder.as_ref().map(|h| h.renewed + h.duration)
    }

    /// Whether the key exists for readers at `now`: a plain key, or a lock still held.
    pub(crate) fn present(&self, now: SystemTime) -> bool {
        self.expires().is_none_or(|expires| expires > now)
    }

    /// Whether a lock is held at `now`.
    pub(crate) fn locked(&self, now: SystemTime) -> bool {
        self.expires().is_some_and(|expires| expires > now)
    }

    /// When a contender may take the lock over (`renewTime + duration + lock-delay`);
    /// `None` for a plain key (which is never acquirable, as on etcd).
    pub(crate) fn free_at(&self) -> Option<SystemTime> {
        self.holder
            .as_ref()
            .map(|h| h.renewed + h.duration + h.delay)
    }
}

/// `at` as a `MicroTime`, cut to whole microseconds (what the API keeps), so the time a
/// holder computes with is the time readers see.
pub(crate) fn micro_time(at: SystemTime) -> MicroTime {
    let since_epoch = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let cut = SystemTime::UNIX_EPOCH + Duration::from_micros(since_epoch.as_micros() as u64);
    MicroTime(DateTime::<Utc>::from(cut))
}

/// A new Lease for `key` (no `resourceVersion`).
pub(crate) fn new_lease(key: &str, value: &str) -> Lease {
    let mut lease = Lease {
        metadata: ObjectMeta {
            name: Some(names::object_name(key)),
            labels: Some(BTreeMap::from([(
                STORE_LABEL.to_string(),
                STORE_LABEL_VALUE.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec::default()),
    };
    set_annotation(&mut lease, KEY_ANNOTATION, key);
    set_annotation(&mut lease, VALUE_ANNOTATION, value);
    lease
}

pub(crate) fn set_annotation(lease: &mut Lease, name: &str, value: &str) {
    lease
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(name.to_string(), value.to_string());
}

fn remove_annotation(lease: &mut Lease, name: &str) {
    if let Some(annotations) = lease.metadata.annotations.as_mut() {
        annotations.remove(name);
    }
}

/// What a holder writes when it takes `lease` (new or existing).
pub(crate) struct Claim<'a> {
    pub identity: &'a str,
    pub value: &'a str,
    pub duration: Duration,
    pub delay: Duration,
    pub token: u64,
    pub now: SystemTime,
}

/// Makes `lease` held by `claim` (keeps its name, labels and `resourceVersion`).
pub(crate) fn claim(lease: &mut Lease, claim: &Claim<'_>) {
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let previous = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let transitions = spec.lease_transitions.unwrap_or(0);
    spec.holder_identity = Some(claim.identity.to_string());
    spec.lease_duration_seconds = Some(i32::try_from(claim.duration.as_secs()).unwrap_or(i32::MAX));
    spec.acquire_time = Some(micro_time(claim.now));
    spec.renew_time = Some(micro_time(claim.now));
    spec.lease_transitions = Some(match previous {
        Some(previous) if previous != claim.identity => transitions.saturating_add(1),
        _ => transitions,
    });
    set_annotation(lease, VALUE_ANNOTATION, claim.value);
    set_annotation(lease, TOKEN_ANNOTATION, &claim.token.to_string());
    set_annotation(
        lease,
        DELAY_ANNOTATION,
        &claim.delay.as_millis().to_string(),
    );
}

/// Makes `lease` a plain key holding `value` (drops any holder).
pub(crate) fn make_plain(lease: &mut Lease, value: &str) {
    lease.spec = Some(LeaseSpec::default());
    set_annotation(lease, VALUE_ANNOTATION, value);
    remove_annotation(lease, TOKEN_ANNOTATION);
    remove_annotation(lease, DELAY_ANNOTATION);
}

/// Parses a `resourceVersion` as the number it is on etcd-backed API servers.
pub(crate) fn version_number(version: &str) -> Option<u64> {
    version.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_lease_reads_back_and_expires_by_the_rule() {
        let now = SystemTime::now();
        let mut lease = new_lease("gnmic/c/targets/r1:57400", "");
        lease.metadata.resource_version = Some("41".into());
        claim(
            &mut lease,
            &Claim {
                identity: "g1-abcd",
                value: "g1",
                duration: Duration::from_secs(2),
                delay: Duration::from_millis(500),
                token: 41,
                now,
            },
        );
        let record = Record::parse(&lease).unwrap();
        assert_eq!(record.key, "gnmic/c/targets/r1:57400");
        assert_eq!(record.value, "g1");
        let holder = record.holder.clone().unwrap();
        assert_eq!(holder.token, 41);
        assert_eq!(holder.delay, Duration::from_millis(500));
        assert!(record.locked(now + Duration::from_millis(1999)));
        assert!(!record.locked(now + Duration::from_secs(2)));
        assert!(!record.present(now + Duration::from_secs(2)));
        // MicroTime keeps microseconds: the contender's bound is the holder's, to the µs.
        let free = record.free_at().unwrap();
        let expected = now + Duration::from_millis(2500);
        let skew = free
            .duration_since(expected)
            .unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_micros(2), "{skew:?}");
        assert_eq!(
            lease.spec.as_ref().unwrap().lease_transitions,
            Some(0),
            "a first holder is no transition"
        );
        claim(
            &mut lease,
            &Claim {
                identity: "g2-ef01",
                value: "g2",
                duration: Duration::from_secs(2),
                delay: Duration::ZERO,
                token: 57,
                now,
            },
        );
        assert_eq!(lease.spec.as_ref().unwrap().lease_transitions, Some(1));
        make_plain(&mut lease, "x");
        let record = Record::parse(&lease).unwrap();
        assert_eq!(record.holder, None);
        assert!(record.present(now + Duration::from_secs(3600)));
        assert_eq!(record.free_at(), None);
    }

    #[test]
    fn foreign_leases_are_not_records() {
        let mut lease = new_lease("gnmic/c/leader", "g1");
        lease.metadata.labels = None;
        assert_eq!(Record::parse(&lease), None, "without the store label");
        let mut lease = new_lease("gnmic/c/leader", "g1");
        lease.metadata.name = Some("kube-scheduler".into());
        assert_eq!(Record::parse(&lease), None, "name and key disagree");
    }
}
