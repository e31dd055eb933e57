//! TLS: trusted and untrusted CAs, client certificates.

use crate::common::{chain, options};
use gnomon_etcd::{Client, ErrorKind, TlsOptions};
use gnomon_testkit::{EtcdServer, EtcdServerOptions, ServerTls, TestPki};

fn tls_etcd(tls: ServerTls) -> anyhow::Result<EtcdServer> {
    EtcdServer::start_with(EtcdServerOptions {
        tls: Some(tls),
        ..Default::default()
    })
}

#[tokio::test]
async fn right_ca_works_and_wrong_ca_is_a_tls_error() -> anyhow::Result<()> {
    let pki = TestPki::new("etcd")?;
    let etcd = tls_etcd(ServerTls::issued_by(&pki, "etcd")?)?;
    let ca = std::fs::read(pki.ca_file())?;
    let client = Client::connect(
        [etcd.address()],
        options().with_tls(TlsOptions::new().with_ca_pem(ca)),
    )
    .await?;
    assert!(client.endpoints()[0].starts_with("https://"));
    client.put("tls/k", "v", None).await?;
    assert_eq!(client.get("tls/k", None).await?.kvs[0].value_str(), "v");

    let other = TestPki::new("other")?;
    let untrusting = Client::connect(
        [etcd.endpoint()],
        options().with_tls(TlsOptions::new().with_ca_pem(std::fs::read(other.ca_file())?)),
    )
    .await?;
    let error = untrusting
        .get("tls/k", None)
        .await
        .expect_err("untrusted server certificate");
    assert_eq!(error.kind(), ErrorKind::Tls, "{}", chain(&error));
    assert!(!error.reached_etcd() && !error.is_transient());
    assert!(error.to_string().contains(&etcd.endpoint()), "{error}");
    assert!(chain(&error).contains("UnknownIssuer"), "{}", chain(&error));
    Ok(())
}

#[tokio::test]
async fn client_certificate_required_by_etcd() -> anyhow::Result<()> {
    let pki = TestPki::new("etcd")?;
    let etcd = tls_etcd(ServerTls::issued_by(&pki, "etcd")?.verifying_clients())?;
    let ca = std::fs::read(pki.ca_file())?;

    let without = Client::connect(
        [etcd.address()],
        options().with_tls(TlsOptions::new().with_ca_pem(ca.clone())),
    )
    .await?;
    let error = without
        .get("k", None)
        .await
        .expect_err("no client certificate");
    assert_eq!(error.kind(), ErrorKind::Tls, "{}", chain(&error));

    let identity = pki.issue("gnomon")?;
    let with = Client::connect(
        [etcd.address()],
        options().with_tls(TlsOptions::new().with_ca_pem(ca).with_identity_pem(
            std::fs::read(&identity.cert_file)?,
            std::fs::read(&identity.key_file)?,
        )),
    )
    .await?;
    with.put("k", "v", None).await?;
    Ok(())
}
