//! Timeouts, unreachable endpoints and failover.

use crate::common::{chain, connect, options, value, PATIENCE};
use gnomon_etcd::{Client, ErrorKind};
use gnomon_testkit::{eventually, free_port, EtcdServer};
use std::time::{Duration, Instant};

/// Resumes a stopped process even when the test fails half-way.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        gnomon_testkit::signal_pid(self.0, libc::SIGCONT);
    }
}

#[tokio::test]
async fn call_times_out_on_a_stalled_etcd() -> anyhow::Result<()> {
    let mut etcd = EtcdServer::start()?;
    let timeout = Duration::from_millis(700);
    connect(&etcd).await?.put("k", "v", None).await?;
    let client = Client::connect([etcd.address()], options().with_timeout(timeout)).await?;
    // A first answer within the short timeout, so the connection is up before etcd stalls
    // (a loaded machine may need several tries).
    eventually("a first answer", PATIENCE, || async {
        value(&client, "k").await.ok().flatten()
    })
    .await?;

    etcd.process().pause();
    let resume = Resume(etcd.process().pid());
    let started = Instant::now();
    let error = client.get("k", None).await.expect_err("etcd is stopped");
    let took = started.elapsed();
    assert_eq!(error.kind(), ErrorKind::Timeout, "{}", chain(&error));
    assert!(error.is_transient() && !error.reached_etcd());
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(2),
        "took {took:?}"
    );
    assert!(error.to_string().contains("700ms"), "{error}");
    let error = client.watch("k", None).await.expect_err("etcd is stopped");
    assert_eq!(error.kind(), ErrorKind::Timeout, "{}", chain(&error));

    drop(resume);
    eventually("etcd to answer again", PATIENCE, || async {
        value(&client, "k").await.ok().flatten()
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn unreachable_endpoint_is_unavailable_and_named() -> anyhow::Result<()> {
    let dead = format!("127.0.0.1:{}", free_port());
    let client = Client::connect([dead.as_str()], options()).await?;
    let error = client
        .put("k", "v", None)
        .await
        .expect_err("nothing listens");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{}", chain(&error));
    assert!(error.is_transient() && !error.reached_etcd());
    let text = error.to_string();
    assert!(
        text.contains(&format!("put \"k\" at http://{dead}")),
        "{text}"
    );
    assert!(text.to_lowercase().contains("refused"), "{text}");
    Ok(())
}

#[tokio::test]
async fn calls_fail_over_to_a_live_endpoint() -> anyhow::Result<()> {
    let mut etcd = EtcdServer::start()?;
    let dead = format!("127.0.0.1:{}", free_port());
    let client = Client::connect([dead.clone(), etcd.address()], options()).await?;
    client.put("k", "v", None).await?;
    assert_eq!(value(&client, "k").await?.as_deref(), Some("v"));
    let mut stream = client.watch("k", None).await?;
    client.put("k", "w", None).await?;
    let answer = tokio::time::timeout(PATIENCE, stream.message()).await??;
    assert_eq!(answer.map(|a| a.events.len()), Some(1));
    let (keeper, _answers) = client
        .lease_keep_alive(client.lease_grant(10, 0).await?.id)
        .await?;
    keeper.keep_alive().await?;
    assert!(connect(&etcd)
        .await?
        .status()
        .await?
        .version
        .starts_with('3'));

    etcd.stop();
    let error = client
        .get("k", None)
        .await
        .expect_err("every endpoint is down");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{}", chain(&error));
    let endpoints = error.endpoint().unwrap_or_default();
    assert!(
        endpoints.contains(&dead) && endpoints.contains(&etcd.address()),
        "{error}"
    );
    Ok(())
}
