//! The gNMI service of one simulated device.

use std::sync::Arc;
use std::time::Duration;

use gnomon_gnmi::proto::gnmi::g_nmi_server::GNmi;
use gnomon_gnmi::proto::gnmi::{
    subscribe_request, CapabilityRequest, CapabilityResponse, GetRequest, GetResponse, ModelData,
    Notification, Path, SetRequest, SetResponse, SubscribeRequest, Update,
};
use gnomon_gnmi::proto::GNMI_VERSION;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use crate::auth::authorize;
use crate::context::DeviceContext;
use crate::encoding::{group_by_instance, json_scalar, SubtreeBuilder, WireEncoding};
use crate::model::Device;
use crate::selection::{select, Framing};
use crate::subscribe::{StreamPlan, SubscribeStream};
use crate::wire::OutgoingResponse;
use futures::StreamExt;
use tokio::sync::mpsc;

/// How long a new Subscribe stream may take to send its SubscriptionList.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The tonic service for one device.
#[derive(Clone)]
pub struct DeviceService {
    context: Arc<DeviceContext>,
}

impl DeviceService {
    pub fn new(context: Arc<DeviceContext>) -> DeviceService {
        DeviceService { context }
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        authorize(self.context.credentials.as_ref(), request.metadata())
    }
}

fn model(name: &str, version: &str) -> ModelData {
    ModelData {
        name: name.to_string(),
        organization: "OpenConfig working group".to_string(),
        version: version.to_string(),
    }
}

/// Answers a Get: one notification per requested path. JSON encodings carry each matched
/// instance of the path as one JSON subtree; PROTO carries every leaf as a typed scalar.
fn answer_get(device: &Device, request: &GetRequest) -> Result<GetResponse, Status> {
    let encoding = WireEncoding::from_request(request.encoding)?;
    if request.path.is_empty() {
        return Err(Status::invalid_argument(
            "the GetRequest names no path; use `/` for the whole tree",
        ));
    }
    let framing = Framing::for_prefix(request.prefix.as_ref());
    let moment = device.now();
    let table = &device.table;
    let mut notifications = Vec::with_capacity(request.path.len());
    for path in &request.path {
        let selection = select(table, request.prefix.as_ref(), path)?;
        let mut updates = Vec::new();
        if encoding.is_json() {
            // `...` has no single depth to cut the subtree at: answer per leaf then.
            let depth = if selection.pattern.elem.iter().any(|e| e.name == "...") {
                usize::MAX
            } else {
                selection.pattern.elem.len()
            };
            let members = selection
                .leaves
                .iter()
                .map(|&leaf| (leaf, &table.leaves[leaf].path));
            for (instance, leaves) in group_by_instance(members, depth) {
                let mut builder = SubtreeBuilder::default();
                for leaf in leaves {
                    let below = &table.leaves[leaf].path.elem[instance.len()..];
                    builder.insert(below, json_scalar(&device.value(leaf, moment)));
                }
                let instance_path = Path {
                    elem: instance,
                    ..Default::default()
                };
                updates.push(Update {
                    path: Some(framing.relative(&instance_path)),
                    val: Some(encoding.json(&builder.finish())),
                    ..Default::default()
                });
            }
        } else {
            for &leaf in &selection.leaves {
                updates.push(Update {
                    path: Some(framing.relative(&table.leaves[leaf].path)),
                    val: Some(encoding.leaf(&device.value(leaf, moment))),
                    ..Default::default()
                });
            }
        }
        notifications.push(Notification {
            timestamp: crate::subscribe::timestamp_now(),
            prefix: framing.prefix.clone(),
            update: updates,
            ..Default::default()
        });
    }
    Ok(GetResponse {
        notification: notifications,
        ..Default::default()
    })
}

#[tonic::async_trait]
impl GNmi for DeviceService {
    #[instrument(skip_all, fields(device = %self.context.device.hostname))]
    async fn capabilities(
        &self,
        request: Request<CapabilityRequest>,
    ) -> Result<Response<CapabilityResponse>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(CapabilityResponse {
            supported_models: vec![
                model("openconfig-interfaces", "3.0.0"),
                model("openconfig-system", "2.0.0"),
                model("openconfig-types", "1.0.0"),
            ],
            supported_encodings: WireEncoding::ADVERTISED
                .iter()
                .map(|&encoding| encoding as i32)
                .collect(),
            g_nmi_version: GNMI_VERSION.to_string(),
            extension: Vec::new(),
        }))
    }

    #[instrument(skip_all, fields(device = %self.context.device.hostname))]
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.authorize(&request)?;
        answer_get(&self.context.device, request.get_ref()).map(Response::new)
    }

    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        self.authorize(&request)?;
        Err(Status::unimplemented(
            "the simulator is read-only: Set is not supported",
        ))
    }

    type SubscribeStream = SubscribeResponses;

    async fn subscribe(
        &self,
        request: Request<Streaming<SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let receiver = self.open_subscription(request).await?;
        let to_message: fn(_) -> _ = OutgoingResponse::into_message;
        Ok(Response::new(ReceiverStream::new(receiver).map(to_message)))
    }
}

/// Subscribe responses as messages (the generic tonic path; the simulator's own server
/// uses `wire::GnmiRouter`, which sends pre-encoded responses as they are).
pub type SubscribeResponses = futures::stream::Map<
    ReceiverStream<Result<OutgoingResponse, Status>>,
    fn(
        Result<OutgoingResponse, Status>,
    ) -> Result<gnomon_gnmi::proto::gnmi::SubscribeResponse, Status>,
>;

impl DeviceService {
    /// Checks credentials, reads and validates the SubscriptionList, and starts the stream's
    /// task. Errors are the gRPC status to answer the call with.
    #[instrument(skip_all, fields(device = %self.context.device.hostname))]
    pub async fn open_subscription(
        &self,
        request: Request<Streaming<SubscribeRequest>>,
    ) -> Result<mpsc::Receiver<Result<OutgoingResponse, Status>>, Status> {
        self.authorize(&request)?;
        let peer = request.remote_addr();
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(FIRST_REQUEST_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no SubscriptionList within {}s of opening the stream",
                    FIRST_REQUEST_TIMEOUT.as_secs()
                ))
            })??;
        let list = match first {
            Some(SubscribeRequest {
                request: Some(subscribe_request::Request::Subscribe(list)),
                ..
            }) => list,
            Some(_) => {
                return Err(Status::invalid_argument(
                    "the first SubscribeRequest must carry a SubscriptionList",
                ))
            }
            None => {
                return Err(Status::invalid_argument(
                    "the stream closed before a SubscriptionList arrived",
                ))
            }
        };
        let plan = StreamPlan::new(&self.context.device, &list)?;
        let guard = self.context.stats.track(peer);
        let peer = peer.map_or_else(|| "unknown".to_string(), |addr| addr.to_string());
        Ok(SubscribeStream::spawn(
            Arc::clone(&self.context),
            plan,
            inbound,
            guard,
            peer,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Clock, LeafTable};
    use gnomon_gnmi::path::{parse_path, PathDisplay};
    use gnomon_gnmi::proto::gnmi::{typed_value, Encoding};
    use std::time::Instant;
    use tonic::Code;

    fn device() -> Device {
        let clock = Clock {
            start: Instant::now(),
            update_period: Duration::from_secs(1),
            flap_period: None,
        };
        Device::new(0, "sim-0".into(), Arc::new(LeafTable::new(2)), clock)
    }

    fn get(prefix: Option<&str>, path: &str, encoding: Encoding) -> Result<GetResponse, Status> {
        answer_get(
            &device(),
            &GetRequest {
                prefix: prefix.map(|p| parse_path(p).unwrap()),
                path: vec![parse_path(path).unwrap()],
                encoding: encoding as i32,
                ..Default::default()
            },
        )
    }

    #[test]
    fn json_get_returns_one_subtree_per_instance() {
        let response = get(
            None,
            "/interfaces/interface[name=*]/state",
            Encoding::JsonIetf,
        )
        .unwrap();
        let updates = &response.notification[0].update;
        assert_eq!(updates.len(), 2);
        assert_eq!(
            PathDisplay(updates[1].path.as_ref().unwrap()).to_string(),
            "/interfaces/interface[name=Ethernet2]/state"
        );
        let Some(typed_value::Value::JsonIetfVal(bytes)) =
            updates[0].val.as_ref().unwrap().value.clone()
        else {
            panic!("not json_ietf");
        };
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["name"], "Ethernet1");
        assert!(json["counters"]["in-octets"].as_u64().unwrap() > 0);
        assert!(response.notification[0].timestamp > 0);
    }

    #[test]
    fn proto_get_returns_typed_leaves_relative_to_the_prefix() {
        let response = get(
            Some("/interfaces/interface[name=Ethernet1]"),
            "state/counters",
            Encoding::Proto,
        )
        .unwrap();
        let notification = &response.notification[0];
        assert_eq!(
            PathDisplay(notification.prefix.as_ref().unwrap()).to_string(),
            "/interfaces/interface[name=Ethernet1]"
        );
        assert_eq!(notification.update.len(), 8);
        let first = &notification.update[0];
        assert_eq!(
            PathDisplay(first.path.as_ref().unwrap()).to_string(),
            "/state/counters/in-octets"
        );
        assert!(matches!(
            first.val.as_ref().unwrap().value,
            Some(typed_value::Value::UintVal(_))
        ));
    }

    #[test]
    fn bad_requests_get_the_right_codes() {
        assert_eq!(
            get(None, "/system", Encoding::Ascii).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(
            get(None, "/bogus", Encoding::Json).unwrap_err().code(),
            Code::InvalidArgument
        );
        let empty = GetRequest::default();
        assert_eq!(
            answer_get(&device(), &empty).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    /// The generated tonic service (not the simulator's own router) still works, including
    /// pre-encoded load-mode batches, which it decodes back into messages.
    #[tokio::test]
    async fn generic_tonic_path_serves_subscribe() {
        use gnomon_gnmi::proto::gnmi::g_nmi_client::GNmiClient;
        use gnomon_gnmi::proto::gnmi::g_nmi_server::GNmiServer;
        use gnomon_gnmi::proto::gnmi::{subscribe_response, Subscription, SubscriptionList};

        let context = Arc::new(DeviceContext {
            device: device(),
            stats: Arc::new(crate::stats::DeviceStats::default()),
            credentials: None,
            load: Some(crate::context::LoadSettings {
                updates_per_notification: 4,
            }),
            shutdown: tokio_util::sync::CancellationToken::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stop = context.shutdown.clone();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(GNmiServer::new(DeviceService::new(Arc::clone(&context))))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    stop.cancelled_owned(),
                ),
        );
        let mut client = GNmiClient::connect(format!("http://{address}"))
            .await
            .unwrap();
        let request = SubscribeRequest {
            request: Some(subscribe_request::Request::Subscribe(SubscriptionList {
                subscription: vec![Subscription {
                    path: Some(parse_path("/interfaces/interface/state/counters").unwrap()),
                    ..Default::default()
                }],
                encoding: Encoding::Proto as i32,
                ..Default::default()
            })),
            extension: Vec::new(),
        };
        let mut responses = client
            .subscribe(futures::stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let mut kinds = Vec::new();
        while kinds.len() < 4 {
            match responses.message().await.unwrap().unwrap().response {
                Some(subscribe_response::Response::Update(n)) => kinds.push(n.update.len()),
                Some(subscribe_response::Response::SyncResponse(_)) => kinds.push(0),
                other => panic!("unexpected {other:?}"),
            }
        }
        // Initial snapshot (16 counters), sync, then firehose batches of 4.
        assert_eq!(kinds, [16, 0, 4, 4]);
        context.shutdown.cancel();
        drop(responses);
        server.await.unwrap().unwrap();
    }
}
