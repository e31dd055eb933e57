//! Leases: keep-alive, expiry, revoke, time-to-live.

use crate::common::{connect, value, PATIENCE};
use gnomon_etcd::{ErrorKind, PutOptions};
use gnomon_testkit::{eventually, EtcdServer};
use std::time::{Duration, Instant};

#[tokio::test]
async fn keep_alive_keeps_a_key_past_its_ttl_and_it_vanishes_after() -> anyhow::Result<()> {
    let etcd = EtcdServer::start()?;
    let client = connect(&etcd).await?;
    let lease = client.lease_grant(2, 0).await?;
    let ttl = Duration::from_secs(lease.ttl as u64);
    client
        .put(
            "session/a",
            "alive",
            Some(PutOptions::new().with_lease(lease.id)),
        )
        .await?;

    let (keeper, mut answers) = client.lease_keep_alive(lease.id).await?;
    assert_eq!(keeper.id(), lease.id);
    // Renew at the pace a session would (a third of the TTL) for three TTLs; the key stays.
    let until = Instant::now() + 3 * ttl;
    let mut renewals = tokio::time::interval(ttl / 3);
    while Instant::now() < until {
        renewals.tick().await;
        keeper.keep_alive().await?;
        let answer = answers.message().await?.expect("keep-alive answer");
        assert_eq!(answer.id, lease.id);
        assert!(answer.ttl > 0, "lease lost while kept alive: {answer:?}");
        assert_eq!(value(&client, "session/a").await?.as_deref(), Some("alive"));
    }
    drop((keeper, answers));

    eventually("the key to expire with its lease", PATIENCE, || async {
        value(&client, "session/a")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await?;
    assert_eq!(client.lease_time_to_live(lease.id, false).await?.ttl, -1);
    let error = client
        .lease_keep_alive(lease.id)
        .await
        .expect_err("expired lease");
    assert_eq!(error.kind(), ErrorKind::LeaseNotFound, "{error}");
    Ok(())
}

#[tokio::test]
async fn key_vanishes_after_the_ttl_without_keep_alive() -> anyhow::Result<()> {
    let etcd = EtcdServer::start()?;
    let client = connect(&etcd).await?;
    let lease = client.lease_grant(2, 0).await?;
    let granted = Instant::now();
    client
        .put(
            "session/b",
            "short",
            Some(PutOptions::new().with_lease(lease.id)),
        )
        .await?;
    assert_eq!(value(&client, "session/b").await?.as_deref(), Some("short"));
    eventually("the key to expire", PATIENCE, || async {
        value(&client, "session/b")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await?;
    assert!(
        granted.elapsed() >= Duration::from_secs(1),
        "expired after {:?}, before its TTL",
        granted.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn revoke_deletes_the_keys_and_time_to_live_lists_them() -> anyhow::Result<()> {
    let etcd = EtcdServer::start()?;
    let client = connect(&etcd).await?;
    let lease = client.lease_grant(60, 0).await?;
    assert!(lease.ttl >= 59 && lease.id != 0);
    let chosen = client.lease_grant(60, 4242).await?;
    assert_eq!(chosen.id, 4242);
    for key in ["svc/1", "svc/2"] {
        client
            .put(key, "x", Some(PutOptions::new().with_lease(lease.id)))
            .await?;
    }
    let alive = client.lease_time_to_live(lease.id, true).await?;
    assert!(alive.ttl > 0 && alive.granted_ttl == 60, "{alive:?}");
    let mut keys = alive.keys.clone();
    keys.sort();
    assert_eq!(keys, [b"svc/1".to_vec(), b"svc/2".to_vec()]);

    client.lease_revoke(lease.id).await?;
    assert!(client.get("svc/1", None).await?.kvs.is_empty());
    assert!(client.get("svc/2", None).await?.kvs.is_empty());

    let error = client
        .lease_revoke(lease.id)
        .await
        .expect_err("already revoked");
    assert_eq!(error.kind(), ErrorKind::LeaseNotFound, "{error}");
    assert!(!error.is_transient() && error.reached_etcd());
    let text = error.to_string();
    assert!(
        text.contains("lease revoke") && text.contains(&etcd.address()),
        "{text}"
    );
    Ok(())
}
