//! Test helper process: connects to a coordination backend, takes a lock and/or registers a
//! service, reports it on stdout, then idles until killed. The conformance suite SIGKILLs it to
//! prove that locks and registrations vanish when their process dies.
//!
//! `lock-holder --config '<LockerConfig JSON>' --instance NAME [--lock KEY] [--value V]
//!  [--service NAME --service-id ID --port PORT [--tag T]... [--service-ttl DUR]]`
//!
//! Prints `ACQUIRED <fencing token>`, `REGISTERED <service id>`, `READY`, and `LOST` if the
//! lock is lost later.

use gnomon_coordination::{
    self as coordination, self, duration::parse_go_duration, LockerConfig, ServiceRegistration,
};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Args {
    config: Option<String>,
    instance: Option<String>,
    lock: Option<String>,
    value: Option<String>,
    service: Option<String>,
    service_id: Option<String>,
    port: u16,
    tags: Vec<String>,
    service_ttl: Option<Duration>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut parsed = Args::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))?;
        match arg.as_str() {
            "--config" => parsed.config = Some(value),
            "--instance" => parsed.instance = Some(value),
            "--lock" => parsed.lock = Some(value),
            "--value" => parsed.value = Some(value),
            "--service" => parsed.service = Some(value),
            "--service-id" => parsed.service_id = Some(value),
            "--port" => parsed.port = value.parse()?,
            "--tag" => parsed.tags.push(value),
            "--service-ttl" => {
                parsed.service_ttl = Some(parse_go_duration(&value).map_err(anyhow::Error::msg)?)
            }
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let config_json = args
        .config
        .ok_or_else(|| anyhow::anyhow!("--config is required"))?;
    let cfg: LockerConfig = serde_json::from_str(&config_json)?;
    let instance = args
        .instance
        .ok_or_else(|| anyhow::anyhow!("--instance is required"))?;
    let backend = coordination::connect(&cfg, &instance).await?;
    let never = CancellationToken::new();
    let mut guard = None;
    if let Some(key) = &args.lock {
        let value = args.value.clone().unwrap_or_else(|| instance.clone());
        let acquired = backend
            .acquire_blocking(key, &value, &never)
            .await?
            .ok_or_else(|| anyhow::anyhow!("acquire ended without the lock"))?;
        println!("ACQUIRED {}", acquired.fencing_token());
        guard = Some(acquired);
    }
    let mut _service = None;
    if let Some(name) = &args.service {
        let id = args.service_id.clone().unwrap_or_else(|| instance.clone());
        let registration = ServiceRegistration {
            name: name.clone(),
            id: id.clone(),
            address: "127.0.0.1".to_string(),
            port: args.port,
            tags: args.tags.clone(),
            ttl: args.service_ttl.unwrap_or(Duration::from_secs(1)),
        };
        _service = Some(backend.register_service(registration).await?);
        println!("REGISTERED {id}");
    }
    println!("READY");
    match &guard {
        Some(guard) => {
            guard.lost().await;
            println!("LOST");
            std::future::pending::<()>().await;
        }
        None => std::future::pending::<()>().await,
    }
    Ok(())
}
