//! A gRPC codec for Subscribe that keeps each response as the bytes received. Only the
//! top-level fields are scanned (update count, sync, error) so the `proto` output can
//! forward the bytes untouched; a full decode happens only when an output needs events.

use bytes::{Buf, Bytes};
use gnomon_gnmi::proto::gnmi::{SubscribeRequest, SubscribeResponse};
use prost::Message;
use std::sync::OnceLock;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// What kind of SubscribeResponse arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseKind {
    /// A notification with `updates` updates and `deletes` deletes.
    Notification { updates: u32, deletes: u32 },
    /// `sync_response: true` (or false, which some targets send).
    Sync,
    /// The deprecated `error` field.
    Error,
    /// Nothing we recognise (e.g. only an extension).
    Other,
}

/// One SubscribeResponse as received, with its decoded form computed on first use.
#[derive(Debug)]
pub struct RawResponse {
    pub bytes: Bytes,
    pub kind: ResponseKind,
    decoded: OnceLock<Option<SubscribeResponse>>,
}

impl RawResponse {
    /// Scans `bytes`; fails only when the top-level framing is broken.
    pub fn scan(bytes: Bytes) -> Result<Self, &'static str> {
        let kind = scan_response(&bytes)?;
        Ok(Self {
            bytes,
            kind,
            decoded: OnceLock::new(),
        })
    }

    /// Wraps a decoded response (tests, inputs that already decoded).
    pub fn from_message(message: &SubscribeResponse) -> Self {
        let bytes = Bytes::from(message.encode_to_vec());
        let kind = scan_response(&bytes).unwrap_or(ResponseKind::Other);
        Self {
            bytes,
            kind,
            decoded: OnceLock::new(),
        }
    }

    /// The decoded response (decoded once, shared by every output); `None` if it does not decode.
    pub fn decoded(&self) -> Option<&SubscribeResponse> {
        self.decoded
            .get_or_init(|| match SubscribeResponse::decode(self.bytes.clone()) {
                Ok(message) => Some(message),
                Err(error) => {
                    tracing::warn!(%error, "undecodable SubscribeResponse skipped");
                    None
                }
            })
            .as_ref()
    }

    /// Number of updates (0 for non-notifications).
    pub fn update_count(&self) -> u32 {
        match self.kind {
            ResponseKind::Notification { updates, .. } => updates,
            _ => 0,
        }
    }
}

const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;

fn read_varint(buf: &mut &[u8]) -> Result<u64, &'static str> {
    prost::encoding::decode_varint(buf).map_err(|_| "bad varint")
}

/// Skips one field's value; returns the LEN payload for length-delimited fields.
fn skip_value<'a>(buf: &mut &'a [u8], wire_type: u64) -> Result<Option<&'a [u8]>, &'static str> {
    match wire_type {
        WIRE_VARINT => read_varint(buf).map(|_| None),
        WIRE_FIXED64 | WIRE_FIXED32 => {
            let n = if wire_type == WIRE_FIXED64 { 8 } else { 4 };
            if buf.len() < n {
                return Err("truncated fixed field");
            }
            buf.advance(n);
            Ok(None)
        }
        WIRE_LEN => {
            let len = read_varint(buf)? as usize;
            if buf.len() < len {
                return Err("truncated length-delimited field");
            }
            let (payload, rest) = buf.split_at(len);
            *buf = rest;
            Ok(Some(payload))
        }
        _ => Err("unsupported wire type"),
    }
}

fn scan_response(bytes: &[u8]) -> Result<ResponseKind, &'static str> {
    let mut buf = bytes;
    let mut kind = ResponseKind::Other;
    while !buf.is_empty() {
        let key = read_varint(&mut buf)?;
        let (field, wire_type) = (key >> 3, key & 7);
        if field == 3 && wire_type == WIRE_VARINT {
            read_varint(&mut buf)?;
            kind = ResponseKind::Sync;
            continue;
        }
        let payload = skip_value(&mut buf, wire_type)?;
        match (field, payload) {
            (1, Some(notification)) => kind = scan_notification(notification)?,
            (4, Some(_)) => kind = ResponseKind::Error,
            _ => {}
        }
    }
    Ok(kind)
}

fn scan_notification(bytes: &[u8]) -> Result<ResponseKind, &'static str> {
    let mut buf = bytes;
    let (mut updates, mut deletes) = (0u32, 0u32);
    while !buf.is_empty() {
        let key = read_varint(&mut buf)?;
        let (field, wire_type) = (key >> 3, key & 7);
        skip_value(&mut buf, wire_type)?;
        match field {
            4 => updates += 1,
            5 => deletes += 1,
            _ => {}
        }
    }
    Ok(ResponseKind::Notification { updates, deletes })
}

/// First capacity of a stream's request buffer: a SubscribeRequest is a few hundred bytes,
/// and the buffer lives as long as the stream (tonic's default, 8 KiB, is kept per target).
const REQUEST_BUFFER_BYTES: usize = 512;
/// First capacity of a stream's response buffer; it grows to the largest message seen.
const RESPONSE_BUFFER_BYTES: usize = 2048;
/// tonic's default: how much is encoded or decoded before yielding.
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

/// Encodes requests with prost, keeps responses raw.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawSubscribeCodec;

/// Request half of [`RawSubscribeCodec`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestEncoder;

/// Response half of [`RawSubscribeCodec`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RawResponseDecoder;

impl Codec for RawSubscribeCodec {
    type Encode = SubscribeRequest;
    type Decode = RawResponse;
    type Encoder = RequestEncoder;
    type Decoder = RawResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RequestEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawResponseDecoder
    }
}

impl Encoder for RequestEncoder {
    type Item = SubscribeRequest;
    type Error = Status;

    fn encode(&mut self, item: SubscribeRequest, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding SubscribeRequest: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(REQUEST_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
    }
}

impl Decoder for RawResponseDecoder {
    type Item = RawResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<RawResponse>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        RawResponse::scan(bytes).map(Some).map_err(|reason| {
            Status::internal(format!("malformed SubscribeResponse from target: {reason}"))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(RESPONSE_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gnomon_gnmi::proto::gnmi::{subscribe_response::Response, Notification, Path, Update};

    #[test]
    fn scan_counts_updates_and_finds_sync() {
        let notification = Notification {
            timestamp: 5,
            prefix: Some(Path::default()),
            update: vec![Update::default(), Update::default(), Update::default()],
            delete: vec![Path::default()],
            ..Default::default()
        };
        let message = SubscribeResponse {
            response: Some(Response::Update(notification)),
            ..Default::default()
        };
        let raw = RawResponse::from_message(&message);
        assert_eq!(
            raw.kind,
            ResponseKind::Notification {
                updates: 3,
                deletes: 1
            }
        );
        assert_eq!(raw.decoded(), Some(&message));
        let sync = SubscribeResponse {
            response: Some(Response::SyncResponse(true)),
            ..Default::default()
        };
        assert_eq!(RawResponse::from_message(&sync).kind, ResponseKind::Sync);
        assert!(RawResponse::scan(Bytes::from_static(&[0x0a, 0x05, 0x01])).is_err());
    }
}
