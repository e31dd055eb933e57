//! Watch streams: ordering, replay, compaction, several watches on one stream.

use crate::common::{connect, PATIENCE};
use gnomon_etcd::{ErrorKind, EventType, GetOptions, WatchOptions, WatchResponse, WatchStream};
use gnomon_testkit::EtcdServer;

/// The next answer, failing the test when none comes within [`PATIENCE`].
async fn next(stream: &mut WatchStream) -> anyhow::Result<WatchResponse> {
    match tokio::time::timeout(PATIENCE, stream.message()).await {
        Ok(Ok(Some(answer))) => Ok(answer),
        Ok(Ok(None)) => anyhow::bail!("watch stream closed"),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => anyhow::bail!("no watch answer within {PATIENCE:?}"),
    }
}

/// The next `count` events (skipping answers without events).
async fn events(stream: &mut WatchStream, count: usize) -> anyhow::Result<Vec<gnomon_etcd::Event>> {
    let mut found = Vec::new();
    while found.len() < count {
        found.extend(next(stream).await?.events);
    }
    Ok(found)
}

#[tokio::test]
async fn watch_sees_puts_and_deletes_in_order_with_previous_values() -> anyhow::Result<()> {
    let etcd = EtcdServer::start()?;
    let client = connect(&etcd).await?;
    let mut stream = client
        .watch("w/", Some(WatchOptions::new().with_prefix().with_prev_kv()))
        .await?;
    client.put("w/a", "1", None).await?;
    client.put("w/a", "2", None).await?;
    client.put("other", "x", None).await?;
    client.delete("w/a", None).await?;

    let seen = events(&mut stream, 3).await?;
    let kinds: Vec<_> = seen.iter().map(|e| e.event_type).collect();
    assert_eq!(kinds, [EventType::Put, EventType::Put, EventType::Delete]);
    assert_eq!(seen[0].kv.value_str(), "1");
    assert_eq!(
        seen[1]
            .prev_kv
            .as_ref()
            .map(|kv| kv.value_str().into_owned())
            .as_deref(),
        Some("1")
    );
    assert_eq!(seen[2].kv.key_str(), "w/a");
    assert_eq!(
        seen[2]
            .prev_kv
            .as_ref()
            .map(|kv| kv.value_str().into_owned())
            .as_deref(),
        Some("2")
    );
    assert!(seen
        .windows(2)
        .all(|w| w[0].kv.mod_revision < w[1].kv.mod_revision));
    assert!(stream.created_revision() < seen[0].kv.mod_revision);
    Ok(())
}

#[tokio::test]
async fn start_revision_replays_history() -> anyhow::Result<()> {
    let etcd = EtcdServer::start()?;
    let client = connect(&etcd).await?;
    let first = client.put("r/x", "1", None).await?.revision;
    client.put("r/x", "2", None).await?;
    client.put("r/y", "3", None).await?;
    let mut stream = client
        .watch(
            "r/",
            Some(WatchOptions::new().with_prefix().with_start_revision(first)),
        )
        .await?;
    let replayed: Vec<_> = events(&mut stream, 3)
        .await?
        .iter()
        .map(|e| format!("{}={}", e.kv.key_str(), e.kv.value_str()))
        .collect();
    assert_eq!(replayed, ["r/x=1", "r/x=2", "r/y=3"]);
    Ok(())
}

#[tokio::test]
async fn compacted_history_is_reported() -> anyhow::Result<()> {
    let etcd = EtcdServer::start()?;
    let client = connect(&etcd).await?;
    let first = client.put("c/x", "1", None).await?.revision;
    client.put("c/x", "2", None).await?;
    let last = client.put("c/x", "3", None).await?.revision;
    client.compact(last, true).await?;

    let mut stream = client
        .watch(
            "c/",
            Some(WatchOptions::new().with_prefix().with_start_revision(first)),
        )
        .await?;
    let answer = next(&mut stream).await?;
    assert!(answer.canceled, "{answer:?}");
    assert_eq!(answer.compact_revision, last);
    assert_eq!(answer.watch_id, stream.watch_id());

    let error = client
        .get("c/x", Some(GetOptions::new().with_revision(first)))
        .await
        .expect_err("compacted revision");
    assert_eq!(error.kind(), ErrorKind::Compacted, "{error}");
    Ok(())
}

#[tokio::test]
async fn one_stream_carries_several_watches_and_cancels_one() -> anyhow::Result<()> {
    let etcd = EtcdServer::start()?;
    let client = connect(&etcd).await?;
    let mut stream = client.watch("m/a", None).await?;
    let a = stream.watch_id();
    stream
        .watch("m/b", Some(WatchOptions::new().with_watch_id(a + 100)))
        .await?;
    let created = next(&mut stream).await?;
    assert!(
        created.created && created.watch_id == a + 100,
        "{created:?}"
    );
    let b = created.watch_id;

    client.put("m/a", "1", None).await?;
    client.put("m/b", "1", None).await?;
    let mut by_watch = Vec::new();
    while by_watch.len() < 2 {
        let answer = next(&mut stream).await?;
        for event in answer.events {
            by_watch.push((answer.watch_id, event.kv.key_str().into_owned()));
        }
    }
    assert_eq!(by_watch, [(a, "m/a".to_string()), (b, "m/b".to_string())]);

    stream.watcher().cancel(a).await?;
    let cancelled = next(&mut stream).await?;
    assert!(
        cancelled.canceled && cancelled.watch_id == a,
        "{cancelled:?}"
    );
    client.put("m/a", "2", None).await?;
    client.put("m/b", "2", None).await?;
    let answer = next(&mut stream).await?;
    assert_eq!(
        answer.watch_id, b,
        "the cancelled watch still reports: {answer:?}"
    );
    assert_eq!(answer.events[0].kv.value_str(), "2");

    stream.request_progress().await?;
    let progress = next(&mut stream).await?;
    assert!(progress.is_progress_notify(), "{progress:?}");
    assert!(progress.revision >= answer.events[0].kv.mod_revision);
    Ok(())
}
