//! Helpers shared by the etcd tests.

use gnomon_etcd::{Client, ConnectOptions, Permission};
use gnomon_testkit::EtcdServer;
use std::time::Duration;

/// How long a condition may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Short enough that a stalled etcd fails tests quickly, long enough for a loaded CI machine.
pub fn options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(5))
}

/// A client without credentials for a plain-text etcd.
pub async fn connect(etcd: &EtcdServer) -> anyhow::Result<Client> {
    Ok(Client::connect([etcd.address()], options()).await?)
}

/// Creates `root` (role `root`) and switches authentication on, through our own client.
pub async fn enable_auth(admin: &Client, root_password: &str) -> anyhow::Result<()> {
    admin.user_add("root", root_password).await?;
    admin.user_grant_role("root", "root").await?;
    admin.auth_enable().await?;
    Ok(())
}

/// Adds user `name` whose role (also `name`) may read and write only under `prefix`.
pub async fn add_prefix_user(
    admin: &Client,
    name: &str,
    password: &str,
    prefix: &str,
) -> anyhow::Result<()> {
    admin.role_add(name).await?;
    admin
        .role_grant_permission(name, Permission::read_write(prefix).with_prefix())
        .await?;
    admin.user_add(name, password).await?;
    admin.user_grant_role(name, name).await?;
    Ok(())
}

/// The value of `key`, if it exists.
pub async fn value(client: &Client, key: &str) -> anyhow::Result<Option<String>> {
    let answer = client.get(key, None).await?;
    Ok(answer.kvs.first().map(|kv| kv.value_str().into_owned()))
}

/// Every source of `error`, joined, for assertions on what the chain says.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(" <- ");
        text.push_str(&format!("{cause:?}"));
        source = cause.source();
    }
    text
}
