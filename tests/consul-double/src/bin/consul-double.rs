//! Standalone Consul test double: `consul-double --listen 127.0.0.1:PORT [--session-ttl-min 1s]
//! [--acl-token TOKEN] [--lenient-keys] [--datacenter dc1]`. Prints `LISTENING <addr>` once
//! ready and serves until SIGTERM/SIGINT.

use gnomon_consul_double::{ConsulDouble, DoubleConfig};
use gnomon_coordination::duration::parse_go_duration;
use std::net::SocketAddr;

fn usage(problem: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{problem}\nusage: consul-double --listen ADDR [--session-ttl-min DUR] [--acl-token TOKEN] [--lenient-keys] [--datacenter NAME]"
    )
}

fn parse_args() -> anyhow::Result<(SocketAddr, DoubleConfig)> {
    let mut listen: SocketAddr = "127.0.0.1:8500".parse()?;
    let mut cfg = DoubleConfig::default();
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
            "--session-ttl-min" => {
                let text = value("--session-ttl-min")?;
                cfg.session_ttl_min = parse_go_duration(&text).map_err(|e| usage(&e))?;
            }
            "--acl-token" => cfg.acl_token = Some(value("--acl-token")?),
            "--datacenter" => cfg.datacenter = value("--datacenter")?,
            "--lenient-keys" => cfg.strict_keys = false,
            other => return Err(usage(&format!("unknown argument {other:?}"))),
        }
    }
    Ok((listen, cfg))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (listen, cfg) = parse_args()?;
    let mut double = ConsulDouble::start_on(listen, cfg).await?;
    println!("LISTENING {}", double.address());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    double.stop().await;
    Ok(())
}
