//! Keys, ranges, deletes and transactions.

use crate::common::{connect, value};
use gnomon_etcd::{
    Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use gnomon_testkit::EtcdServer;

#[tokio::test]
async fn put_get_prefix_range_and_delete() -> anyhow::Result<()> {
    let etcd = EtcdServer::start()?;
    let client = connect(&etcd).await?;

    let first = client.put("a/1", "one", None).await?;
    client.put("a/2", "two", None).await?;
    client.put("b/1", "three", None).await?;

    let one = client.get("a/1", None).await?;
    assert_eq!(one.kvs.len(), 1);
    assert_eq!(one.kvs[0].value_str(), "one");
    assert_eq!(one.kvs[0].version, 1);
    assert_eq!(one.kvs[0].create_revision, first.revision);
    assert!(one.revision >= first.revision + 2);
    assert!(client.get("a/missing", None).await?.kvs.is_empty());

    let prefix = client
        .get("a/", Some(GetOptions::new().with_prefix()))
        .await?;
    let keys: Vec<_> = prefix
        .kvs
        .iter()
        .map(|kv| kv.key_str().into_owned())
        .collect();
    assert_eq!(keys, ["a/1", "a/2"]);

    let limited = client
        .get("a/", Some(GetOptions::new().with_prefix().with_limit(1)))
        .await?;
    assert_eq!(
        (limited.kvs.len(), limited.more, limited.count),
        (1, true, 2)
    );

    let keys_only = client
        .get("a/", Some(GetOptions::new().with_prefix().with_keys_only()))
        .await?;
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));
    let counted = client
        .get(
            "",
            Some(GetOptions::new().with_from_key().with_count_only()),
        )
        .await?;
    assert_eq!((counted.kvs.len(), counted.count), (0, 3));
    let ranged = client
        .get("a/2", Some(GetOptions::new().with_range_end("b/2")))
        .await?;
    assert_eq!(ranged.count, 2);

    let replaced = client
        .put("a/1", "uno", Some(PutOptions::new().with_prev_kv()))
        .await?;
    assert_eq!(replaced.prev_kv.map(|kv| kv.value), Some(b"one".to_vec()));
    let past = client
        .get("a/1", Some(GetOptions::new().with_revision(first.revision)))
        .await?;
    assert_eq!(past.kvs[0].value_str(), "one");

    let deleted = client
        .delete(
            "a/",
            Some(DeleteOptions::new().with_prefix().with_prev_kv()),
        )
        .await?;
    assert_eq!(deleted.deleted, 2);
    let mut old: Vec<_> = deleted
        .prev_kvs
        .iter()
        .map(|kv| kv.value_str().into_owned())
        .collect();
    old.sort();
    assert_eq!(old, ["two", "uno"]);
    assert!(client
        .get("a/", Some(GetOptions::new().with_prefix()))
        .await?
        .kvs
        .is_empty());
    assert_eq!(value(&client, "b/1").await?.as_deref(), Some("three"));
    assert_eq!(client.delete("b/1", None).await?.deleted, 1);
    assert_eq!(client.delete("b/1", None).await?.deleted, 0);
    Ok(())
}

/// gnomon's lock acquire: `create_revision(key) == 0` → put under the holder's lease,
/// otherwise read the holder.
fn acquire(key: &str, holder: &str, lease: i64) -> Txn {
    Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key,
            holder,
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key, None)])
}

/// gnomon's lock release: delete only while the key is still the one created at `token`.
fn release(key: &str, token: i64) -> Txn {
    Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, token)])
        .and_then([TxnOp::delete(key, None)])
}

#[tokio::test]
async fn txn_acquire_is_exclusive_and_release_is_fenced() -> anyhow::Result<()> {
    let etcd = EtcdServer::start()?;
    let a = connect(&etcd).await?;
    let b = connect(&etcd).await?;
    let lease_a = a.lease_grant(30, 0).await?.id;
    let lease_b = b.lease_grant(30, 0).await?.id;
    let key = "locks/leader";

    let won = a.txn(acquire(key, "a", lease_a)).await?;
    assert!(won.succeeded);
    let token = won.revision;
    let held = a.get(key, None).await?;
    assert_eq!(
        (held.kvs[0].create_revision, held.kvs[0].lease),
        (token, lease_a)
    );

    let lost = b.txn(acquire(key, "b", lease_b)).await?;
    assert!(!lost.succeeded, "second acquirer must fail");
    match lost.responses.as_slice() {
        [TxnOpResponse::Get(get)] => assert_eq!(get.kvs[0].value_str(), "a"),
        other => panic!("expected the holder's key, got {other:?}"),
    }

    assert!(!b.txn(release(key, token + 100)).await?.succeeded);
    assert_eq!(value(&a, key).await?.as_deref(), Some("a"));
    let released = a.txn(release(key, token)).await?;
    assert!(released.succeeded);
    assert!(matches!(released.responses.as_slice(), [TxnOpResponse::Delete(d)] if d.deleted == 1));

    let second = b.txn(acquire(key, "b", lease_b)).await?;
    assert!(second.succeeded && second.revision > token);
    Ok(())
}

#[tokio::test]
async fn txn_compares_every_target_and_nests() -> anyhow::Result<()> {
    let etcd = EtcdServer::start()?;
    let client = connect(&etcd).await?;
    client.put("n", "5", None).await?;
    let last = client.put("n", "6", None).await?.revision;
    let holds = |compare: Compare| {
        let client = client.clone();
        async move { anyhow::Ok(client.txn(Txn::new().when([compare])).await?.succeeded) }
    };
    use CompareOp::*;
    assert!(holds(Compare::value("n", Equal, "6")).await?);
    assert!(!holds(Compare::value("n", NotEqual, "6")).await?);
    assert!(holds(Compare::value("n", Greater, "5")).await?);
    assert!(holds(Compare::value("n", Less, "7")).await?);
    assert!(holds(Compare::version("n", Equal, 2)).await?);
    assert!(holds(Compare::version("n", Greater, 1)).await?);
    assert!(!holds(Compare::version("n", Less, 2)).await?);
    assert!(holds(Compare::mod_revision("n", Equal, last)).await?);
    assert!(holds(Compare::create_revision("n", Less, last)).await?);
    assert!(holds(Compare::lease("n", Equal, 0)).await?);
    assert!(!holds(Compare::lease("n", NotEqual, 0)).await?);
    assert!(holds(Compare::version("n", Equal, 2).with_prefix()).await?);
    assert!(holds(Compare::create_revision("absent", Equal, 0)).await?);

    let inner = Txn::new()
        .when([Compare::value("n", Equal, "6")])
        .and_then([TxnOp::put("m", "inner", None), TxnOp::get("n", None)]);
    let outer = client
        .txn(
            Txn::new()
                .when([Compare::value("n", Equal, "6")])
                .and_then([TxnOp::txn(inner)]),
        )
        .await?;
    match outer.responses.as_slice() {
        [TxnOpResponse::Txn(nested)] => {
            assert!(nested.succeeded);
            assert!(
                matches!(nested.responses.as_slice(), [TxnOpResponse::Put(_), TxnOpResponse::Get(g)] if g.kvs[0].value == b"6")
            );
        }
        other => panic!("expected a nested txn answer, got {other:?}"),
    }
    assert_eq!(value(&client, "m").await?.as_deref(), Some("inner"));
    Ok(())
}
