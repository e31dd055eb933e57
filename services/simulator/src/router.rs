//! The gNMI service of one device as tonic serves it: Subscribe through
//! [`SubscribeCodec`] (pre-encoded responses are copied as they are), every other method
//! through the generated service.

use std::convert::Infallible;
use std::task::{Context, Poll};

use gnomon_gnmi::proto::gnmi::g_nmi_server::{GNmiServer, SERVICE_NAME};
use gnomon_gnmi::proto::gnmi::SubscribeRequest;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use crate::service::DeviceService;
use crate::wire::{OutgoingResponse, SubscribeCodec};

/// The gNMI service of one device as tonic serves it: Subscribe through `SubscribeCodec`,
/// everything else through the generated service.
#[derive(Clone)]
pub struct GnmiRouter {
    service: DeviceService,
    generated: GNmiServer<DeviceService>,
}

impl GnmiRouter {
    pub fn new(service: DeviceService) -> GnmiRouter {
        GnmiRouter {
            generated: GNmiServer::new(service.clone()),
            service,
        }
    }
}

impl NamedService for GnmiRouter {
    const NAME: &'static str = SERVICE_NAME;
}

const SUBSCRIBE_PATH: &str = "/gnmi.gNMI/Subscribe";

impl Service<http::Request<tonic::body::Body>> for GnmiRouter {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path() != SUBSCRIBE_PATH {
            return self.generated.call(request);
        }
        let method = SubscribeMethod(self.service.clone());
        Box::pin(async move {
            let mut grpc = Grpc::new(SubscribeCodec);
            Ok(grpc.streaming(method, request).await)
        })
    }
}

struct SubscribeMethod(DeviceService);

impl StreamingService<SubscribeRequest> for SubscribeMethod {
    type Response = OutgoingResponse;
    type ResponseStream = ReceiverStream<Result<OutgoingResponse, Status>>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<SubscribeRequest>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            let receiver = service.open_subscription(request).await?;
            Ok(Response::new(ReceiverStream::new(receiver)))
        })
    }
}
