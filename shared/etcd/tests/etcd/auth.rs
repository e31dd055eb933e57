//! Authentication: token expiry, wrong passwords, permissions.

use crate::common::{add_prefix_user, chain, connect, enable_auth, options, PATIENCE};
use gnomon_etcd::{Client, ErrorKind, GetOptions, WatchOptions};
use gnomon_testkit::{EtcdServer, EtcdServerOptions};
use std::time::{Duration, Instant};

/// Calls `call` after ever longer idle periods (during which etcd may expire the token,
/// `--auth-token-ttl`) until the client had to log in again; fails after [`PATIENCE`].
async fn until_token_renewed<F, Fut>(client: &Client, what: &str, mut call: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = gnomon_etcd::Result<()>>,
{
    let before = client.authentications();
    let deadline = Instant::now() + PATIENCE;
    let mut idle = Duration::from_millis(1500);
    while client.authentications() == before {
        anyhow::ensure!(Instant::now() < deadline, "{what}: the token never expired");
        // Idleness is the condition under test: etcd expires simple tokens unused for a TTL.
        tokio::time::sleep(idle).await;
        call()
            .await
            .map_err(|e| anyhow::anyhow!("{what} after {idle:?} idle: {e}"))?;
        idle += Duration::from_millis(500);
    }
    Ok(())
}

#[tokio::test]
async fn right_password_works_across_token_expiry() -> anyhow::Result<()> {
    let etcd = EtcdServer::start_with(EtcdServerOptions {
        auth_token_ttl: Some(Duration::from_secs(1)),
        ..Default::default()
    })?;
    enable_auth(&connect(&etcd).await?, "Root-Pass-17").await?;
    let client = Client::connect(
        [etcd.address()],
        options().with_user("root", "Root-Pass-17"),
    )
    .await?;
    assert_eq!(client.authentications(), 1);
    client.put("t/k", "v", None).await?;

    // A watch opened with an expired token: etcd 3.4 denies it, the client logs in again.
    until_token_renewed(&client, "watch", || async {
        client
            .watch("t/", Some(WatchOptions::new().with_prefix()))
            .await
            .map(drop)
    })
    .await?;
    // A unary call with an expired token: etcd rejects the token, the client logs in again.
    until_token_renewed(&client, "get", || async {
        let answer = client.get("t/k", None).await?;
        assert_eq!(answer.kvs[0].value_str(), "v");
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn wrong_password_is_an_authentication_error_without_the_password() -> anyhow::Result<()> {
    let etcd = EtcdServer::start()?;
    enable_auth(&connect(&etcd).await?, "Root-Pass-23").await?;
    let password = "Wrong-Pass-9f3a";
    let error = Client::connect([etcd.address()], options().with_user("root", password))
        .await
        .expect_err("wrong password accepted");
    assert_eq!(error.kind(), ErrorKind::AuthenticationFailed, "{error}");
    assert!(error.is_auth_error() && !error.is_transient());
    let text = chain(&error);
    assert!(text.contains("authenticate as \"root\""), "{text}");
    assert!(!text.contains(password), "password in the error: {text}");

    // No credentials at all while auth is on: also an authentication error.
    let anonymous = connect(&etcd).await?;
    let error = anonymous.get("k", None).await.expect_err("anonymous read");
    assert_eq!(error.kind(), ErrorKind::AuthenticationFailed, "{error}");
    Ok(())
}

#[tokio::test]
async fn user_limited_to_a_prefix_is_denied_elsewhere() -> anyhow::Result<()> {
    let etcd = EtcdServer::start()?;
    let admin = connect(&etcd).await?;
    add_prefix_user(&admin, "app", "App-Pass-5", "a/").await?;
    enable_auth(&admin, "Root-Pass-5").await?;

    let app = Client::connect([etcd.address()], options().with_user("app", "App-Pass-5")).await?;
    app.put("a/x", "1", None).await?;
    assert_eq!(
        app.get("a/", Some(GetOptions::new().with_prefix()))
            .await?
            .count,
        1
    );

    let error = app
        .put("b/x", "1", None)
        .await
        .expect_err("write outside a/");
    assert_eq!(error.kind(), ErrorKind::PermissionDenied, "{error}");
    assert!(error.is_auth_error() && !error.is_transient());
    assert!(error.to_string().contains("put \"b/x\""), "{error}");
    let error = app.get("b/x", None).await.expect_err("read outside a/");
    assert_eq!(error.kind(), ErrorKind::PermissionDenied, "{error}");
    let error = app
        .watch("b/", Some(WatchOptions::new().with_prefix()))
        .await
        .expect_err("watch outside a/");
    assert_eq!(error.kind(), ErrorKind::PermissionDenied, "{error}");
    assert!(!chain(&error).contains("App-Pass-5"));
    Ok(())
}
