//! SubscribeResponses written as protobuf by hand from `Update`s encoded once, for the gNMI
//! server ([`crate::gnmi_server`]).
//!
//! Why: the cache keeps each leaf's `Update` already encoded (PROTO), so a notification is
//! its header plus copies of those bytes — no `Path`/`TypedValue` clone and no prost walk
//! per path, per subscriber. Fields are written in tag order with prost's own primitives,
//! so the bytes are those prost would write for the same message. [`Encoded`] is the
//! response type of the Subscribe stream; its codec ([`EncodedCodec`]) writes the bytes as
//! they are, so a change encoded once is shared by every subscriber as a refcount.
//! What it costs: one memcpy of the encoded bytes into each subscriber's HTTP/2 buffer.

use bytes::{BufMut, Bytes, BytesMut};
use gnomon_gnmi::proto::gnmi::{Path, SubscribeRequest, SubscribeResponse};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// A SubscribeResponse already encoded as protobuf.
#[derive(Clone, Debug)]
pub struct Encoded(pub Bytes);

impl Encoded {
    /// The encoding of `response` (for responses not built from cached bytes).
    pub fn of(response: &SubscribeResponse) -> Self {
        Self(Bytes::from(response.encode_to_vec()))
    }

    /// The message itself (for the generated trait's stream, which wants a message).
    pub fn decode(&self) -> Result<SubscribeResponse, Status> {
        SubscribeResponse::decode(self.0.as_ref())
            .map_err(|e| Status::internal(format!("re-decoding a SubscribeResponse: {e}")))
    }
}

// Field keys (field number << 3 | wire type): varint 0, length-delimited 2.
/// `SubscribeResponse.update`.
const RESPONSE_UPDATE: u8 = 1 << 3 | 2;
/// `Notification.timestamp`.
const TIMESTAMP: u8 = 1 << 3;
/// `Notification.prefix`.
const PREFIX: u8 = 2 << 3 | 2;
/// `Notification.update`.
const UPDATE: u8 = 4 << 3 | 2;
/// `Notification.delete`.
const DELETE: u8 = 5 << 3 | 2;

fn put_varint(mut value: u64, buf: &mut BytesMut) {
    while value >= 0x80 {
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// An embedded message field: key, length, body.
fn put_message(key: u8, message: &impl Message, buf: &mut BytesMut) {
    buf.put_u8(key);
    put_varint(message.encoded_len() as u64, buf);
    // Cannot fail: a BytesMut grows as needed.
    let _ = message.encode(buf);
}

fn message_len(message: &impl Message) -> usize {
    let len = message.encoded_len();
    1 + varint_len(len as u64) + len
}

/// The SubscribeResponse `{update: {timestamp, prefix: {target}, update: updates,
/// delete: deletes}}`, with each update given as an encoded `Update` message; sized first, so
/// it is written into one buffer of the exact size.
pub fn notification<'a>(
    timestamp: i64,
    target: &str,
    updates: impl Iterator<Item = &'a [u8]> + Clone,
    deletes: &[Path],
) -> Encoded {
    let prefix = Path {
        target: target.to_string(),
        ..Default::default()
    };
    let timestamp_len = if timestamp != 0 {
        1 + varint_len(timestamp as u64)
    } else {
        0
    };
    let updates_len: usize = updates
        .clone()
        .map(|u| 1 + varint_len(u.len() as u64) + u.len())
        .sum();
    let deletes_len: usize = deletes.iter().map(message_len).sum();
    let notification_len = timestamp_len + message_len(&prefix) + updates_len + deletes_len;
    let mut out =
        BytesMut::with_capacity(1 + varint_len(notification_len as u64) + notification_len);
    out.put_u8(RESPONSE_UPDATE);
    put_varint(notification_len as u64, &mut out);
    if timestamp != 0 {
        out.put_u8(TIMESTAMP);
        put_varint(timestamp as u64, &mut out);
    }
    put_message(PREFIX, &prefix, &mut out);
    for update in updates {
        out.put_u8(UPDATE);
        put_varint(update.len() as u64, &mut out);
        out.put_slice(update);
    }
    for delete in deletes {
        put_message(DELETE, delete, &mut out);
    }
    Encoded(out.freeze())
}

/// The Subscribe codec: responses are written as encoded, requests decoded by prost.
#[derive(Clone, Copy, Debug, Default)]
pub struct EncodedCodec;

/// Writes an [`Encoded`] as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct EncodedEncoder;

/// Decodes `SubscribeRequest`s.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestDecoder;

impl Codec for EncodedCodec {
    type Encode = Encoded;
    type Decode = SubscribeRequest;
    type Encoder = EncodedEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder
    }
}

impl Encoder for EncodedEncoder {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }
}

impl Decoder for RequestDecoder {
    type Item = SubscribeRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<SubscribeRequest>, Status> {
        SubscribeRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding a SubscribeRequest: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gnomon_gnmi::path::parse_path;
    use gnomon_gnmi::proto::gnmi::{
        subscribe_response, typed_value, Notification, TypedValue, Update,
    };

    #[test]
    fn same_bytes_as_prost() {
        let updates: Vec<Update> = (0..3)
            .map(|i| Update {
                path: Some(parse_path(&format!("/a/b[k={i}]/c")).unwrap()),
                val: Some(TypedValue {
                    value: Some(typed_value::Value::UintVal(i)),
                }),
                ..Default::default()
            })
            .collect();
        let deletes = vec![parse_path("/x/y").unwrap()];
        for timestamp in [0, 42, -1, 1_700_000_000_000_000_000] {
            let encoded: Vec<Vec<u8>> = updates.iter().map(|u| u.encode_to_vec()).collect();
            let ours = notification(
                timestamp,
                "r1",
                encoded.iter().map(|u| u.as_slice()),
                &deletes,
            );
            let prost = SubscribeResponse {
                response: Some(subscribe_response::Response::Update(Notification {
                    timestamp,
                    prefix: Some(Path {
                        target: "r1".into(),
                        ..Default::default()
                    }),
                    update: updates.clone(),
                    delete: deletes.clone(),
                    ..Default::default()
                })),
                ..Default::default()
            };
            assert_eq!(ours.0.as_ref(), prost.encode_to_vec().as_slice());
            assert_eq!(ours.decode().unwrap(), prost);
            let deletes_only = notification(timestamp, "r1", std::iter::empty(), &deletes);
            let prost_deletes = SubscribeResponse {
                response: Some(subscribe_response::Response::Update(Notification {
                    timestamp,
                    prefix: Some(Path {
                        target: "r1".into(),
                        ..Default::default()
                    }),
                    delete: deletes.clone(),
                    ..Default::default()
                })),
                ..Default::default()
            };
            assert_eq!(
                deletes_only.0.as_ref(),
                prost_deletes.encode_to_vec().as_slice()
            );
        }
    }
}
