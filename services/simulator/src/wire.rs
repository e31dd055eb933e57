//! Subscribe responses that may already be protobuf-encoded, so load mode can write
//! notifications straight from cached path bytes instead of cloning and encoding message
//! trees (the difference between ~0.5M and several M updates/s on a small machine).
//!
//! The codec here copies pre-encoded responses as they are; [`crate::router`] serves
//! Subscribe with it.

use bytes::{BufMut, Bytes, BytesMut};
use gnomon_gnmi::proto::gnmi::{Path, SubscribeRequest, SubscribeResponse, TypedValue};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, message, WireType};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// One Subscribe response, either as a message or as its protobuf encoding.
#[derive(Debug)]
pub enum OutgoingResponse {
    Message(SubscribeResponse),
    Encoded(Bytes),
}

impl OutgoingResponse {
    /// The response as a message (decodes pre-encoded ones; only the generic tonic path,
    /// which nothing in the simulator's own server uses, needs this).
    pub fn into_message(
        item: Result<OutgoingResponse, Status>,
    ) -> Result<SubscribeResponse, Status> {
        match item? {
            OutgoingResponse::Message(message) => Ok(message),
            OutgoingResponse::Encoded(bytes) => SubscribeResponse::decode(bytes)
                .map_err(|error| Status::internal(format!("re-decoding a response: {error}"))),
        }
    }
}

/// Writes pre-encoded notifications: `SubscribeResponse { update: Notification {...} }`.
pub struct NotificationWriter {
    /// Notification field 2 (prefix), key and length included; empty when there is none.
    prefix_field: Vec<u8>,
    body: Vec<u8>,
}

impl NotificationWriter {
    pub fn new(prefix: Option<&Path>) -> NotificationWriter {
        let mut prefix_field = Vec::new();
        if let Some(prefix) = prefix {
            message::encode(2, prefix, &mut prefix_field);
        }
        NotificationWriter {
            prefix_field,
            body: Vec::new(),
        }
    }

    /// Update field 1 (path) for `path`, to be cached and passed to `push`.
    pub fn path_field(path: &Path) -> Vec<u8> {
        let mut field = Vec::new();
        message::encode(1, path, &mut field);
        field
    }

    /// Starts a notification with `timestamp` (and the prefix).
    pub fn begin(&mut self, timestamp: i64) {
        self.body.clear();
        if timestamp != 0 {
            encode_key(1, WireType::Varint, &mut self.body);
            encode_varint(timestamp as u64, &mut self.body);
        }
        self.body.extend_from_slice(&self.prefix_field);
    }

    /// Adds one Update (notification field 4).
    pub fn push(&mut self, path_field: &[u8], value: &TypedValue) {
        let update_len = path_field.len() + message::encoded_len(3, value);
        encode_key(4, WireType::LengthDelimited, &mut self.body);
        encode_varint(update_len as u64, &mut self.body);
        self.body.extend_from_slice(path_field);
        message::encode(3, value, &mut self.body);
    }

    /// The finished SubscribeResponse bytes.
    pub fn finish(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(
            self.body.len() + 1 + encoded_len_varint(self.body.len() as u64),
        );
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(self.body.len() as u64, &mut out);
        out.put_slice(&self.body);
        out.freeze()
    }
}

/// Encodes messages with prost and copies pre-encoded responses verbatim.
#[derive(Clone, Copy, Debug, Default)]
pub struct SubscribeCodec;

#[derive(Debug)]
pub struct ResponseEncoder;

#[derive(Debug)]
pub struct RequestDecoder;

impl Codec for SubscribeCodec {
    type Encode = OutgoingResponse;
    type Decode = SubscribeRequest;
    type Encoder = ResponseEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder
    }
}

impl Encoder for ResponseEncoder {
    type Item = OutgoingResponse;
    type Error = Status;

    fn encode(&mut self, item: OutgoingResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            OutgoingResponse::Message(message) => message
                .encode(dst)
                .map_err(|error| Status::internal(format!("encoding a response: {error}"))),
            OutgoingResponse::Encoded(bytes) => {
                dst.put_slice(&bytes);
                Ok(())
            }
        }
    }
}

impl Decoder for RequestDecoder {
    type Item = SubscribeRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<SubscribeRequest>, Status> {
        SubscribeRequest::decode(src).map(Some).map_err(|error| {
            Status::invalid_argument(format!("malformed SubscribeRequest: {error}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gnomon_gnmi::path::parse_path;
    use gnomon_gnmi::proto::gnmi::{subscribe_response, typed_value};

    #[test]
    fn written_notifications_decode_like_prost_built_ones() {
        let prefix = parse_path("/interfaces").unwrap();
        let mut writer = NotificationWriter::new(Some(&prefix));
        let paths = [
            parse_path("interface[name=Ethernet1]/state/counters/in-octets").unwrap(),
            parse_path("interface[name=Ethernet1]/state/oper-status").unwrap(),
        ];
        let values = [
            TypedValue {
                value: Some(typed_value::Value::UintVal(1 << 40)),
            },
            TypedValue {
                value: Some(typed_value::Value::StringVal("UP".into())),
            },
        ];
        writer.begin(1_700_000_000_000_000_000);
        for (path, value) in paths.iter().zip(&values) {
            writer.push(&NotificationWriter::path_field(path), value);
        }
        let decoded = SubscribeResponse::decode(writer.finish()).unwrap();
        let Some(subscribe_response::Response::Update(notification)) = decoded.response else {
            panic!("not an update");
        };
        assert_eq!(notification.timestamp, 1_700_000_000_000_000_000);
        assert_eq!(notification.prefix, Some(prefix));
        assert_eq!(notification.update.len(), 2);
        for ((update, path), value) in notification.update.iter().zip(&paths).zip(&values) {
            assert_eq!(update.path.as_ref(), Some(path));
            assert_eq!(update.val.as_ref(), Some(value));
        }
    }
}
