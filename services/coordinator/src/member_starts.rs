//! Starting targets on members, many per call. Each handshake asks for its own target; the
//! starts asked of one member while a call to it is in flight go together in its next call
//! (at most [`STARTS_PER_CALL`]) to gnomon's assignments route. One call per member is in
//! flight at a time, so a lone start is sent at once and a burst of thousands costs a few
//! dozen calls instead of two per target.
//!
//! The queues hold only what handshakes wait for, so the leader's placement window bounds
//! them. A call carries at most [`CONFIG_BYTES_PER_CALL`] of configs. A member that does not
//! know the route (a gnomon from before it, answering 404) or refuses the body as too large
//! (413) gets gnmic's two calls per target instead.

use crate::member_client::{current_traceparent, MemberCallError, MemberClient};
use bytes::Bytes;
use gnomon_coordination::assignments::encode_assignments;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Targets one call assigns at most.
pub(crate) const STARTS_PER_CALL: usize = 128;

/// Config bytes one call carries at most (but always one target): half the members'
/// request body limit (`gnomon_api_server::DEFAULT_BODY_LIMIT`, 1 MiB).
const CONFIG_BYTES_PER_CALL: usize = 512 * 1024;

/// Why a member did not start a target.
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("the call assigning {targets} targets failed")]
    Call {
        targets: usize,
        #[source]
        source: Arc<MemberCallError>,
    },
    #[error("{0}")]
    Single(Arc<MemberCallError>),
    #[error("the member refused it: {0}")]
    Refused(String),
    #[error("the member's answer left it out")]
    Unanswered,
}

/// Per-member queues of starts; cheap to clone.
#[derive(Clone)]
pub(crate) struct MemberStarts {
    client: MemberClient,
    queues: Arc<Mutex<HashMap<String, Queue>>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// A task is sending this member's calls.
    sending: bool,
}

struct Waiting {
    target: String,
    config: Bytes,
    traceparent: Option<String>,
    reply: oneshot::Sender<Result<(), StartError>>,
}

impl MemberStarts {
    pub(crate) fn new(client: MemberClient) -> Self {
        Self {
            client,
            queues: Arc::default(),
        }
    }

    /// The client the starts go through, for the handshake's other calls.
    pub(crate) fn client(&self) -> &MemberClient {
        &self.client
    }

    /// Pushes `target`'s config to the member at `api` and starts it there (the member then
    /// takes its lock); the member's claim joins the current span's trace.
    pub(crate) async fn start(
        &self,
        api: &str,
        target: &str,
        config: Bytes,
    ) -> Result<(), StartError> {
        let (reply, answer) = oneshot::channel();
        let waiting = Waiting {
            target: target.to_string(),
            config,
            traceparent: current_traceparent(),
            reply,
        };
        let start_sender = {
            let mut queues = self.queues();
            let queue = queues.entry(api.to_string()).or_default();
            queue.waiting.push(waiting);
            !std::mem::replace(&mut queue.sending, true)
        };
        if start_sender {
            tokio::spawn(self.clone().send_all(api.to_string()));
        }
        answer.await.unwrap_or(Err(StartError::Unanswered))
    }

    /// Sends the member's queued starts, a call at a time, until none is left.
    async fn send_all(self, api: String) {
        loop {
            let batch: Vec<Waiting> = {
                let mut queues = self.queues();
                let Some(queue) = queues.get_mut(&api) else {
                    return;
                };
                // A handshake that gave up (its member left, or the term ended) no longer
                // waits: its start is not sent.
                queue.waiting.retain(|w| !w.reply.is_closed());
                if queue.waiting.is_empty() {
                    queues.remove(&api);
                    return;
                }
                let mut bytes = 0;
                let count = queue
                    .waiting
                    .iter()
                    .take(STARTS_PER_CALL)
                    .take_while(|w| {
                        bytes += w.config.len();
                        bytes <= CONFIG_BYTES_PER_CALL
                    })
                    .count()
                    .max(1);
                queue.waiting.drain(..count).collect()
            };
            self.send(&api, batch).await;
        }
    }

    async fn send(&self, api: &str, batch: Vec<Waiting>) {
        let body = encode_assignments(
            batch
                .iter()
                .map(|w| (w.config.as_ref(), w.traceparent.as_deref())),
        );
        match self.client.assign_targets(api, Bytes::from(body)).await {
            Ok(refused) => {
                let mut refused = refused.into_iter();
                for waiting in batch {
                    let outcome = match refused.next() {
                        Some(None) => Ok(()),
                        Some(Some(reason)) => Err(StartError::Refused(reason)),
                        None => Err(StartError::Unanswered),
                    };
                    let _ = waiting.reply.send(outcome);
                }
            }
            // A member without the route, or one refusing a body this large.
            Err(MemberCallError::Status {
                status: 404 | 413, ..
            }) => {
                let singles = batch.into_iter().map(|waiting| async move {
                    let outcome = self.start_alone(api, &waiting).await;
                    let _ = waiting.reply.send(outcome);
                });
                futures::future::join_all(singles).await;
            }
            Err(error) => {
                let source = Arc::new(error);
                let targets = batch.len();
                for waiting in batch {
                    let _ = waiting.reply.send(Err(StartError::Call {
                        targets,
                        source: source.clone(),
                    }));
                }
            }
        }
    }

    /// gnmic's calls: push the config, then start the target.
    async fn start_alone(&self, api: &str, waiting: &Waiting) -> Result<(), StartError> {
        let single = |e| StartError::Single(Arc::new(e));
        self.client
            .push_target_config(api, waiting.config.clone())
            .await
            .map_err(single)?;
        self.client
            .start_target(api, &waiting.target)
            .await
            .map_err(single)
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, Queue>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member_client::{serve_for_test as serve, MemberClientOptions};
    use axum::routing::post;
    use gnomon_coordination::assignments::{Assignment, AssignmentsReply, ASSIGNMENTS_PATH};
    use std::time::Duration;

    fn starts(retries: u32) -> MemberStarts {
        MemberStarts::new(
            MemberClient::new(&MemberClientOptions {
                retries,
                timeout: Duration::from_secs(5),
                ..Default::default()
            })
            .unwrap(),
        )
    }

    fn config(target: &str) -> Bytes {
        Bytes::from(
            serde_json::to_vec(&serde_json::json!({"name": target, "address": "a:1"})).unwrap(),
        )
    }

    /// A member taking assignments: records each call's targets, refuses names starting
    /// with "bad".
    fn member(calls: Arc<Mutex<Vec<Vec<String>>>>) -> axum::Router {
        axum::Router::new().route(
            ASSIGNMENTS_PATH,
            post(move |body: axum::body::Bytes| {
                let calls = calls.clone();
                async move {
                    let batch: Vec<Assignment> = serde_json::from_slice(&body).unwrap();
                    let names: Vec<String> = batch
                        .iter()
                        .map(|a| a.config["name"].as_str().unwrap().to_string())
                        .collect();
                    let refused = names
                        .iter()
                        .map(|n| n.starts_with("bad").then(|| format!("{n} is bad")))
                        .collect();
                    calls.lock().unwrap().push(names);
                    axum::Json(AssignmentsReply { refused })
                }
            }),
        )
    }

    #[tokio::test]
    async fn starts_asked_together_go_in_few_calls_and_each_gets_its_own_answer() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let api = serve(member(calls.clone())).await;
        let starts = starts(0);
        let names: Vec<String> = (0..200)
            .map(|n| {
                if n % 50 == 7 {
                    format!("bad{n}")
                } else {
                    format!("t{n}")
                }
            })
            .collect();
        let outcomes =
            futures::future::join_all(names.iter().map(|n| starts.start(&api, n, config(n)))).await;
        for (name, outcome) in names.iter().zip(&outcomes) {
            match outcome {
                Ok(()) => assert!(name.starts_with('t'), "{name} should be refused"),
                Err(StartError::Refused(reason)) => assert_eq!(reason, &format!("{name} is bad")),
                Err(other) => panic!("{name}: {other}"),
            }
        }
        let calls = calls.lock().unwrap().clone();
        // All 200 were queued before the first call went out.
        assert_eq!(
            calls.iter().map(Vec::len).collect::<Vec<_>>(),
            [STARTS_PER_CALL, 200 - STARTS_PER_CALL]
        );
        assert_eq!(calls.concat(), names, "every target sent once, in order");
        // The queue is gone once empty; the next start opens a new one.
        assert!(starts.queues().is_empty());
        starts
            .start(&api, "t-late", config("t-late"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn large_configs_are_split_over_calls_and_an_oversized_one_goes_alone() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let api = serve(member(calls.clone())).await;
        let starts = starts(0);
        // Three configs of 200 KiB fit a call twice; one of 600 KiB goes alone.
        let padded = |name: &str, kib: usize| {
            let pad = "x".repeat(kib * 1024);
            Bytes::from(serde_json::to_vec(&serde_json::json!({"name": name, "pad": pad})).unwrap())
        };
        let asked = [
            ("t1", 200),
            ("t2", 200),
            ("t3", 200),
            ("t4", 600),
            ("t5", 1),
        ];
        let outcomes = futures::future::join_all(
            asked.map(|(name, kib)| starts.start(&api, name, padded(name, kib))),
        )
        .await;
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        let calls = calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            [vec!["t1", "t2"], vec!["t3"], vec!["t4"], vec!["t5"]]
        );
    }

    #[tokio::test]
    async fn starts_nobody_waits_for_any_more_are_not_sent() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let api = serve(member(calls.clone())).await;
        let starts = starts(0);
        // All three queue before the sender runs; then t2's handshake gives up.
        let mut t1 = Box::pin(starts.start(&api, "t1", config("t1")));
        let mut t2 = Box::pin(starts.start(&api, "t2", config("t2")));
        let t3 = starts.start(&api, "t3", config("t3"));
        let mut t3 = Box::pin(t3);
        futures::future::poll_immediate(&mut t1).await;
        futures::future::poll_immediate(&mut t2).await;
        futures::future::poll_immediate(&mut t3).await;
        drop(t2);
        t1.await.unwrap();
        t3.await.unwrap();
        let calls = calls.lock().unwrap().clone();
        assert!(calls.concat() == ["t1", "t3"], "{calls:?}");
    }

    #[tokio::test]
    async fn a_failed_call_fails_every_start_it_carried() {
        let router = axum::Router::new().route(
            ASSIGNMENTS_PATH,
            post(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "busy") }),
        );
        let api = serve(router).await;
        let starts = starts(0);
        let outcomes =
            futures::future::join_all(["t1", "t2", "t3"].map(|n| starts.start(&api, n, config(n))))
                .await;
        for outcome in outcomes {
            let error = outcome.unwrap_err();
            assert!(
                matches!(error, StartError::Call { targets: 3, .. }),
                "{error}"
            );
            let cause = std::error::Error::source(&error).unwrap().to_string();
            assert!(cause.contains("HTTP 500: busy"), "{cause}");
        }
    }

    #[tokio::test]
    async fn a_member_without_the_route_gets_gnmics_calls_per_target() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (configs, started) = (seen.clone(), seen.clone());
        let router = axum::Router::new()
            .route(
                "/api/v1/config/targets",
                post(move |body: axum::body::Bytes| {
                    let seen = configs.clone();
                    async move {
                        let config: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        seen.lock()
                            .unwrap()
                            .push(format!("config {}", config["name"]));
                    }
                }),
            )
            .route(
                "/api/v1/targets/{name}",
                post(
                    move |axum::extract::Path(name): axum::extract::Path<String>| {
                        let seen = started.clone();
                        async move {
                            seen.lock().unwrap().push(format!("start {name}"));
                        }
                    },
                ),
            );
        let api = serve(router).await;
        let starts = starts(0);
        starts.start(&api, "t1", config("t1")).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), ["config \"t1\"", "start t1"]);
    }
}
