//! Helpers shared by the simulator's integration tests: a tonic gNMI client and request
//! builders.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use gnomon_gnmi::path::{join_paths, parse_path, path_to_string};
use gnomon_gnmi::proto::gnmi::g_nmi_client::GNmiClient;
use gnomon_gnmi::proto::gnmi::{
    subscribe_request, subscribe_response, subscription_list, typed_value, Encoding, Notification,
    Path, Poll, SubscribeRequest, SubscribeResponse, Subscription, SubscriptionList,
    SubscriptionMode, Update,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Streaming};

pub const STEP: Duration = Duration::from_secs(5);

pub async fn client(address: SocketAddr) -> GNmiClient<Channel> {
    GNmiClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

pub fn path(text: &str) -> Path {
    parse_path(text).unwrap()
}

pub fn subscription(text: &str, mode: SubscriptionMode, sample_interval: Duration) -> Subscription {
    Subscription {
        path: Some(path(text)),
        mode: mode as i32,
        sample_interval: sample_interval.as_nanos() as u64,
        ..Default::default()
    }
}

pub fn list(
    mode: subscription_list::Mode,
    encoding: Encoding,
    subscriptions: Vec<Subscription>,
) -> SubscriptionList {
    SubscriptionList {
        subscription: subscriptions,
        mode: mode as i32,
        encoding: encoding as i32,
        ..Default::default()
    }
}

/// An open Subscribe stream plus the sender for further requests (Poll).
pub struct Session {
    pub requests: mpsc::Sender<SubscribeRequest>,
    pub responses: Streaming<SubscribeResponse>,
}

pub async fn open(
    client: &mut GNmiClient<Channel>,
    list: SubscriptionList,
) -> Result<Session, tonic::Status> {
    open_with(client, list, |_| {}).await
}

pub async fn open_with(
    client: &mut GNmiClient<Channel>,
    list: SubscriptionList,
    decorate: impl FnOnce(&mut Request<ReceiverStream<SubscribeRequest>>),
) -> Result<Session, tonic::Status> {
    let (requests, receiver) = mpsc::channel(4);
    requests
        .send(SubscribeRequest {
            request: Some(subscribe_request::Request::Subscribe(list)),
            extension: Vec::new(),
        })
        .await
        .unwrap();
    let mut request = Request::new(ReceiverStream::new(receiver));
    decorate(&mut request);
    let responses = client.subscribe(request).await?.into_inner();
    Ok(Session {
        requests,
        responses,
    })
}

pub fn poll_request() -> SubscribeRequest {
    SubscribeRequest {
        request: Some(subscribe_request::Request::Poll(Poll {})),
        extension: Vec::new(),
    }
}

/// What one SubscribeResponse carried.
#[derive(Debug)]
pub enum Received {
    Notification(Notification),
    Sync,
    End,
}

impl Session {
    pub async fn next(&mut self) -> Received {
        let message = tokio::time::timeout(STEP, self.responses.message())
            .await
            .expect("no response within the step timeout")
            .expect("the stream failed");
        match message.and_then(|m| m.response) {
            Some(subscribe_response::Response::Update(n)) => Received::Notification(n),
            Some(subscribe_response::Response::SyncResponse(_)) => Received::Sync,
            Some(other) => panic!("unexpected response {other:?}"),
            None => Received::End,
        }
    }

    pub async fn next_notification(&mut self) -> Notification {
        match self.next().await {
            Received::Notification(n) => n,
            other => panic!("expected a notification, got {other:?}"),
        }
    }

    /// Notifications up to (not including) the next sync_response.
    pub async fn until_sync(&mut self) -> Vec<Notification> {
        let mut notifications = Vec::new();
        loop {
            match self.next().await {
                Received::Notification(n) => notifications.push(n),
                Received::Sync => return notifications,
                Received::End => panic!("stream ended before sync_response"),
            }
        }
    }
}

/// Every update of `notification` as (full path text, value).
pub fn leaves(notification: &Notification) -> Vec<(String, typed_value::Value)> {
    notification
        .update
        .iter()
        .map(|update: &Update| {
            let full = join_paths(
                notification.prefix.as_ref(),
                update.path.as_ref().expect("update without path"),
            );
            let value = update
                .val
                .as_ref()
                .and_then(|v| v.value.clone())
                .expect("update without value");
            (
                path_to_string(&Path {
                    elem: full.elem,
                    ..Default::default()
                }),
                value,
            )
        })
        .collect()
}

pub fn uint(value: &typed_value::Value) -> u64 {
    match value {
        typed_value::Value::UintVal(n) => *n,
        other => panic!("expected uint_val, got {other:?}"),
    }
}

pub fn json(value: &typed_value::Value) -> serde_json::Value {
    match value {
        typed_value::Value::JsonVal(bytes) | typed_value::Value::JsonIetfVal(bytes) => {
            serde_json::from_slice(bytes).unwrap()
        }
        other => panic!("expected a JSON value, got {other:?}"),
    }
}
