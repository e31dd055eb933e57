//! Each dial setting gnmic's targets have is observed from the other end: a tiny HTTP/2
//! server records the headers of the Subscribe request, a rustls server limited to one TLS
//! version or cipher suite accepts or refuses the handshake, and the socket shows its
//! keepalive.

use super::*;
use gnomon_config::{load_config_with_env, ConfigFormat};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;
use tokio::net::TcpListener;
use tonic::codegen::http::{HeaderMap, Request as HttpRequest, Response as HttpResponse};

fn target(yaml_body: &str, address: SocketAddr) -> TargetConfig {
    let yaml = format!("targets:\n  t1:\n    address: {address}\n{yaml_body}");
    let config = load_config_with_env(&yaml, ConfigFormat::Yaml, &[]).expect("config loads");
    config.targets["t1"].clone()
}

/// An h2c server answering every request with `respond()`, recording the request headers
/// (and its URI as `x-recorded-uri`).
async fn grpc_server(
    respond: fn() -> HttpResponse<String>,
) -> (SocketAddr, Arc<Mutex<Vec<HeaderMap>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: HttpRequest<Incoming>| {
                    let mut headers = request.headers().clone();
                    headers.insert("x-recorded-uri", request.uri().to_string().parse().unwrap());
                    recorded.lock().unwrap().push(headers);
                    async move { Ok::<_, Infallible>(respond()) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (address, seen)
}

/// gRPC's trailers-only answer: UNIMPLEMENTED.
fn unimplemented() -> HttpResponse<String> {
    HttpResponse::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", "12")
        .body(String::new())
        .unwrap()
}

async fn subscribe_once(target: &TargetConfig) -> Result<Streaming<RawResponse>, Status> {
    let client = dial(target, &Arc::default()).await.expect("dial");
    client
        .subscribe(tokio_stream::iter(vec![SubscribeRequest::default()]))
        .await
}

#[tokio::test]
async fn metadata_gzip_and_credentials_reach_the_target() {
    let (address, seen) = grpc_server(unimplemented).await;
    let target = target(
        "    insecure: true\n    gzip: true\n    username: admin\n    password: pw1\n    metadata:\n      x-site: dub\n      Tenant-Id: \"42\"\n",
        address,
    );
    let status = subscribe_once(&target).await.expect_err("UNIMPLEMENTED");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let headers = seen.lock().unwrap()[0].clone();
    assert_eq!(headers["x-site"], "dub");
    assert_eq!(headers["tenant-id"], "42");
    assert_eq!(headers["grpc-encoding"], "gzip");
    assert_eq!(headers["username"], "admin");
    assert_eq!(headers["password"], "pw1");
    // What any gRPC server checks: the method's full URI (`:scheme`, `:authority`, path),
    // the content type, trailers, and who calls.
    assert_eq!(
        headers["x-recorded-uri"],
        format!("http://{address}/gnmi.gNMI/Subscribe").as_str()
    );
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["te"], "trailers");
    assert!(headers["user-agent"]
        .to_str()
        .unwrap()
        .starts_with("gnomon/"));

    // Without gzip nothing is compressed.
    let (address, seen) = grpc_server(unimplemented).await;
    let plain = self::target("    insecure: true\n", address);
    let _ = subscribe_once(&plain).await;
    assert!(seen.lock().unwrap()[0].get("grpc-encoding").is_none());
}

#[tokio::test]
async fn auth_scheme_sends_the_credentials_as_authorization() {
    let (address, seen) = grpc_server(unimplemented).await;
    let target = target(
        "    insecure: true\n    username: admin\n    password: pw1\n    auth-scheme: Basic\n",
        address,
    );
    let _ = subscribe_once(&target).await;
    let headers = seen.lock().unwrap()[0].clone();
    // base64("admin:pw1")
    assert_eq!(headers["authorization"], "Basic YWRtaW46cHcx");
    assert!(headers.get("username").is_none());
}

#[tokio::test]
async fn max_msg_size_bounds_received_messages() {
    /// One gRPC frame of 1857 bytes (length prefix 00 00 07 41, all ASCII).
    fn big() -> HttpResponse<String> {
        let mut body = String::from("\0\0\0\x07\x41");
        body.push_str(&"a".repeat(0x741));
        HttpResponse::builder()
            .header("content-type", "application/grpc")
            .body(body)
            .unwrap()
    }
    let (address, _) = grpc_server(big).await;
    let yaml =
        format!("max-msg-size: 1000\ninsecure: true\ntargets:\n  t1:\n    address: {address}\n");
    let config = load_config_with_env(&yaml, ConfigFormat::Yaml, &[]).unwrap();
    let target = &config.targets["t1"];
    assert_eq!(target.max_msg_size, 1000);
    let mut stream = subscribe_once(target).await.expect("headers arrive");
    let error = stream.message().await.expect_err("too large");
    assert!(
        error.message().contains("too large") || error.message().contains("1000"),
        "{error:?}"
    );
}

/// Issue 14: a peer that accepts TCP and never speaks kept the target connecting for ~50 s.
#[tokio::test]
async fn a_silent_peer_fails_within_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    for tls in ["    insecure: true\n", "    skip-verify: true\n"] {
        let target = target(&format!("{tls}    timeout: 400ms\n"), address);
        let started = Instant::now();
        let outcome = match dial(&target, &Arc::default()).await {
            Err(error) => error.to_string(),
            Ok(client) => client
                .subscribe(tokio_stream::iter(vec![SubscribeRequest::default()]))
                .await
                .expect_err("no answer")
                .to_string(),
        };
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "{tls}: {took:?} {outcome}");
        assert!(
            outcome.contains("within") || outcome.contains("deadline"),
            "{outcome}"
        );
    }
}

/// A TLS server that accepts handshakes with `config` and then holds the connection.
async fn tls_server(config: rustls::ServerConfig) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(tcp).await {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    drop(stream);
                }
            });
        }
    });
    address
}

fn server_config(
    versions: &[&'static rustls::SupportedProtocolVersion],
    suites: &[rustls::CipherSuite],
) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = CertificateDer::from_pem_slice(generated.cert.pem().as_bytes()).unwrap();
    let key =
        PrivateKeyDer::from_pem_slice(generated.signing_key.serialize_pem().as_bytes()).unwrap();
    let mut provider = rustls::crypto::ring::default_provider();
    if !suites.is_empty() {
        provider
            .cipher_suites
            .retain(|s| suites.contains(&s.suite()));
    }
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

#[tokio::test]
async fn tls_versions_are_applied() {
    let only_13 = tls_server(server_config(&[&rustls::version::TLS13], &[])).await;
    let refused = target(
        "    skip-verify: true\n    tls-max-version: \"1.2\"\n",
        only_13,
    );
    let error = dial(&refused, &Arc::default())
        .await
        .err()
        .expect("TLS 1.2 only vs 1.3 only");
    assert!(error.to_string().contains("cannot connect"), "{error}");
    let accepted = target(
        "    skip-verify: true\n    tls-min-version: \"1.3\"\n",
        only_13,
    );
    dial(&accepted, &Arc::default()).await.expect("TLS 1.3");

    let only_12 = tls_server(server_config(&[&rustls::version::TLS12], &[])).await;
    let refused = target("    skip-verify: true\n    tls-version: \"1.3\"\n", only_12);
    assert!(dial(&refused, &Arc::default()).await.is_err());
    let accepted = target("    skip-verify: true\n    tls-version: \"1.2\"\n", only_12);
    dial(&accepted, &Arc::default()).await.expect("TLS 1.2");
}

#[tokio::test]
async fn cipher_suites_are_applied() {
    let server = tls_server(server_config(
        &[&rustls::version::TLS12],
        &[rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384],
    ))
    .await;
    let other = target(
        "    skip-verify: true\n    cipher-suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n",
        server,
    );
    assert!(dial(&other, &Arc::default()).await.is_err());
    let same = target(
        "    skip-verify: true\n    cipher-suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n",
        server,
    );
    dial(&same, &Arc::default())
        .await
        .expect("the server's suite");
}

/// The socket's keepalive options: SO_KEEPALIVE, TCP_KEEPIDLE and TCP_KEEPINTVL.
fn keepalive_options(stream: &TcpStream) -> (bool, Duration, Duration) {
    let socket = socket2::SockRef::from(stream);
    (
        socket.keepalive().unwrap(),
        socket.tcp_keepalive_time().unwrap(),
        socket.tcp_keepalive_interval().unwrap(),
    )
}

#[tokio::test]
async fn tcp_keepalive_is_set_on_the_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mk = |yaml: &str| Keepalive::of(&target(yaml, address));
    assert_eq!(
        mk("    insecure: true\n").tcp,
        Some(Duration::from_secs(15))
    );
    assert_eq!(
        mk("    tcp-keepalive: 0s\n").tcp,
        Some(Duration::from_secs(15))
    );
    assert_eq!(mk("    tcp-keepalive: -1s\n").tcp, None);
    let seven = mk("    tcp-keepalive: 7s\n").tcp;
    assert_eq!(seven, Some(Duration::from_secs(7)));

    let stream = connect_tcp(&address.to_string(), seven).await.unwrap();
    let seven = Duration::from_secs(7);
    assert_eq!(keepalive_options(&stream), (true, seven, seven));
    let off = connect_tcp(&address.to_string(), None).await.unwrap();
    assert!(!keepalive_options(&off).0);
}

#[tokio::test]
async fn grpc_keepalive_sets_the_http2_pings() {
    let address: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let keepalive = Keepalive::of(&target(
        "    grpc-keepalive:\n      time: 30s\n      timeout: 5s\n      permit-without-stream: true\n",
        address,
    ));
    assert_eq!(keepalive.h2_interval, Duration::from_secs(30));
    assert_eq!(keepalive.h2_timeout, Duration::from_secs(5));
    assert!(keepalive.while_idle);
    // gnmic's floor: below 10 s, 10 s is used.
    let floored = Keepalive::of(&target("    grpc-keepalive: {time: 1s}\n", address));
    assert_eq!(floored.h2_interval, Duration::from_secs(10));
    let default = Keepalive::of(&target("", address));
    assert_eq!(default.h2_interval, Duration::from_secs(30));
    assert!(!default.while_idle);
}
