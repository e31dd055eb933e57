//! Standalone Kubernetes API test double: `k8s-double --listen 127.0.0.1:PORT
//! [--admin-token TOKEN] [--limited-token TOKEN] [--namespace NS]... [--history N]
//! [--kubeconfig PATH]`. Tokens default to the library's `ADMIN_TOKEN` and `LIMITED_TOKEN`;
//! `--kubeconfig` writes a kubeconfig for the admin token. Prints `LISTENING <addr>` once
//! ready and serves until SIGTERM/SIGINT.

use gnomon_k8s_double::{DoubleConfig, K8sDouble, TokenConfig};
use std::net::SocketAddr;

fn usage(problem: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{problem}\nusage: k8s-double --listen ADDR [--admin-token T] [--limited-token T] [--namespace NS]... [--history N] [--kubeconfig PATH]"
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut listen: SocketAddr = "127.0.0.1:6443".parse()?;
    let mut cfg = DoubleConfig::default();
    let mut namespaces = Vec::new();
    let mut kubeconfig = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| usage(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--listen" => {
                let text = value("--listen")?;
                listen = text
                    .parse()
                    .map_err(|e| usage(&format!("bad --listen {text:?}: {e}")))?;
            }
            "--admin-token" => {
                cfg.tokens[0] = TokenConfig {
                    token: value("--admin-token")?,
                    ..cfg.tokens[0].clone()
                }
            }
            "--limited-token" => {
                cfg.tokens[1] = TokenConfig {
                    token: value("--limited-token")?,
                    ..cfg.tokens[1].clone()
                }
            }
            "--namespace" => namespaces.push(value("--namespace")?),
            "--history" => {
                let text = value("--history")?;
                cfg.history = text
                    .parse()
                    .map_err(|e| usage(&format!("bad --history {text:?}: {e}")))?;
            }
            "--kubeconfig" => kubeconfig = Some(value("--kubeconfig")?),
            other => return Err(usage(&format!("unknown argument {other:?}"))),
        }
    }
    if !namespaces.is_empty() {
        cfg.namespaces = namespaces;
    }
    let namespace = cfg.namespaces[0].clone();
    let admin = cfg.tokens[0].token.clone();
    let mut double = K8sDouble::start_on(listen, cfg).await?;
    if let Some(path) = kubeconfig {
        gnomon_k8s_double::write_kubeconfig(path.as_ref(), &double.url(), &admin, &namespace)?;
    }
    println!("LISTENING {}", double.address());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    double.stop().await;
    Ok(())
}
