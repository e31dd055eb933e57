//! Keys and values: get (etcd's Range), put, delete (DeleteRange), transactions, compaction.

use crate::client::{Client, Op};
use crate::error::Result;
use crate::proto::etcdserverpb::{
    self as pb, compare::CompareResult, compare::CompareTarget, compare::TargetUnion,
    kv_client::KvClient, request_op::Request, response_op::Response,
};
use crate::proto::mvccpb;
use std::borrow::Cow;

/// A key with its value and revisions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Revision at which the key was created; the fencing token of a lock held by this key.
    pub create_revision: i64,
    /// Revision of the last change.
    pub mod_revision: i64,
    /// Changes since creation (1 after the first put).
    pub version: i64,
    /// The lease the key is attached to; 0 for none.
    pub lease: i64,
}

impl KeyValue {
    /// The key as text (invalid UTF-8 replaced).
    pub fn key_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.key)
    }

    /// The value as text (invalid UTF-8 replaced).
    pub fn value_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

impl From<mvccpb::KeyValue> for KeyValue {
    fn from(kv: mvccpb::KeyValue) -> Self {
        KeyValue {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

pub(crate) fn revision(header: Option<pb::ResponseHeader>) -> i64 {
    header.map(|h| h.revision).unwrap_or(0)
}

/// The end of the key range `[key, end)` an operation covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum RangeEnd {
    /// Just the key.
    #[default]
    Key,
    /// Every key starting with the key.
    Prefix,
    /// Every key from the key on.
    FromKey,
    /// Up to this key (exclusive).
    End(Vec<u8>),
}

impl RangeEnd {
    /// The key and range end to send. etcd rejects empty keys, so an empty prefix or start
    /// key becomes "\0" (the smallest key): every key.
    pub(crate) fn resolve(&self, key: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        match self {
            RangeEnd::Key => (key, Vec::new()),
            RangeEnd::Prefix | RangeEnd::FromKey if key.is_empty() => (vec![0], vec![0]),
            RangeEnd::Prefix => {
                let end = prefix_end(&key);
                (key, end)
            }
            RangeEnd::FromKey => (key, vec![0]),
            RangeEnd::End(end) => (key, end.clone()),
        }
    }
}

/// The smallest key after every key starting with `prefix`: the prefix with its last byte
/// below 0xff incremented. An empty or all-0xff prefix covers every key ("\0").
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Options of [`Client::get`].
#[derive(Clone, Debug, Default)]
pub struct GetOptions {
    range_end: RangeEnd,
    limit: i64,
    revision: i64,
    keys_only: bool,
    count_only: bool,
    serializable: bool,
}

impl GetOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every key starting with the given key.
    pub fn with_prefix(mut self) -> Self {
        self.range_end = RangeEnd::Prefix;
        self
    }

    /// Every key from the given key on.
    pub fn with_from_key(mut self) -> Self {
        self.range_end = RangeEnd::FromKey;
        self
    }

    /// Keys in `[key, end)`.
    pub fn with_range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.range_end = RangeEnd::End(end.into());
        self
    }

    /// At most `limit` keys (0: no limit); [`GetResponse::more`] tells whether more matched.
    pub fn with_limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }

    /// Read as of this past revision (fails with `Compacted` when it is too old).
    pub fn with_revision(mut self, revision: i64) -> Self {
        self.revision = revision;
        self
    }

    /// Only keys and revisions, no values.
    pub fn with_keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }

    /// Only the number of matching keys ([`GetResponse::count`]).
    pub fn with_count_only(mut self) -> Self {
        self.count_only = true;
        self
    }

    /// Answer from the contacted member without a quorum read (faster, possibly stale).
    pub fn with_serializable(mut self) -> Self {
        self.serializable = true;
        self
    }

    fn request(&self, key: Vec<u8>) -> pb::RangeRequest {
        let (key, range_end) = self.range_end.resolve(key);
        pb::RangeRequest {
            key,
            range_end,
            limit: self.limit,
            revision: self.revision,
            keys_only: self.keys_only,
            count_only: self.count_only,
            serializable: self.serializable,
            ..Default::default()
        }
    }
}

/// The answer to [`Client::get`].
#[derive(Clone, Debug, Default)]
pub struct GetResponse {
    /// The store revision read at.
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
    /// More keys matched than the limit allowed.
    pub more: bool,
    /// How many keys matched.
    pub count: i64,
}

impl From<pb::RangeResponse> for GetResponse {
    fn from(answer: pb::RangeResponse) -> Self {
        GetResponse {
            revision: revision(answer.header),
            kvs: answer.kvs.into_iter().map(KeyValue::from).collect(),
            more: answer.more,
            count: answer.count,
        }
    }
}

/// Options of [`Client::put`].
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    lease: i64,
    prev_kv: bool,
}

impl PutOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Attach the key to this lease: it is deleted when the lease ends.
    pub fn with_lease(mut self, lease: i64) -> Self {
        self.lease = lease;
        self
    }

    /// Answer with the previous key-value ([`PutResponse::prev_kv`]).
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    fn request(&self, key: Vec<u8>, value: Vec<u8>) -> pb::PutRequest {
        pb::PutRequest {
            key,
            value,
            lease: self.lease,
            prev_kv: self.prev_kv,
            ..Default::default()
        }
    }
}

/// The answer to [`Client::put`].
#[derive(Clone, Debug, Default)]
pub struct PutResponse {
    /// The revision of this write.
    pub revision: i64,
    /// The key-value before, when asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

impl From<pb::PutResponse> for PutResponse {
    fn from(answer: pb::PutResponse) -> Self {
        PutResponse {
            revision: revision(answer.header),
            prev_kv: answer.prev_kv.map(KeyValue::from),
        }
    }
}

/// Options of [`Client::delete`].
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    range_end: RangeEnd,
    prev_kv: bool,
}

impl DeleteOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every key starting with the given key.
    pub fn with_prefix(mut self) -> Self {
        self.range_end = RangeEnd::Prefix;
        self
    }

    /// Every key from the given key on.
    pub fn with_from_key(mut self) -> Self {
        self.range_end = RangeEnd::FromKey;
        self
    }

    /// Keys in `[key, end)`.
    pub fn with_range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.range_end = RangeEnd::End(end.into());
        self
    }

    /// Answer with the deleted key-values ([`DeleteResponse::prev_kvs`]).
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    fn request(&self, key: Vec<u8>) -> pb::DeleteRangeRequest {
        let (key, range_end) = self.range_end.resolve(key);
        pb::DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.prev_kv,
        }
    }
}

/// The answer to [`Client::delete`].
#[derive(Clone, Debug, Default)]
pub struct DeleteResponse {
    /// The revision of this delete.
    pub revision: i64,
    /// How many keys were deleted.
    pub deleted: i64,
    /// The deleted key-values, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

impl From<pb::DeleteRangeResponse> for DeleteResponse {
    fn from(answer: pb::DeleteRangeResponse) -> Self {
        DeleteResponse {
            revision: revision(answer.header),
            deleted: answer.deleted,
            prev_kvs: answer.prev_kvs.into_iter().map(KeyValue::from).collect(),
        }
    }
}

/// How a [`Compare`] relates the key's attribute to the given value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

impl From<CompareOp> for CompareResult {
    fn from(op: CompareOp) -> Self {
        match op {
            CompareOp::Equal => CompareResult::Equal,
            CompareOp::NotEqual => CompareResult::NotEqual,
            CompareOp::Greater => CompareResult::Greater,
            CompareOp::Less => CompareResult::Less,
        }
    }
}

/// One condition of a [`Txn`]. A missing key has version, create and mod revision 0 and
/// lease 0, so `create_revision(key, Equal, 0)` means "the key does not exist".
#[derive(Clone, Debug)]
pub struct Compare(pb::Compare);

impl Compare {
    fn new(
        key: impl Into<Vec<u8>>,
        op: CompareOp,
        target: CompareTarget,
        value: TargetUnion,
    ) -> Self {
        Compare(pb::Compare {
            result: CompareResult::from(op) as i32,
            target: target as i32,
            key: key.into(),
            target_union: Some(value),
            range_end: Vec::new(),
        })
    }

    /// Compares the key's value (bytewise).
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Self::new(
            key,
            op,
            CompareTarget::Value,
            TargetUnion::Value(value.into()),
        )
    }

    /// Compares the key's version (number of changes since creation).
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: i64) -> Self {
        Self::new(
            key,
            op,
            CompareTarget::Version,
            TargetUnion::Version(version),
        )
    }

    /// Compares the revision at which the key was created.
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Self {
        Self::new(
            key,
            op,
            CompareTarget::Create,
            TargetUnion::CreateRevision(revision),
        )
    }

    /// Compares the revision of the key's last change.
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Self {
        Self::new(
            key,
            op,
            CompareTarget::Mod,
            TargetUnion::ModRevision(revision),
        )
    }

    /// Compares the key's lease id.
    pub fn lease(key: impl Into<Vec<u8>>, op: CompareOp, lease: i64) -> Self {
        Self::new(key, op, CompareTarget::Lease, TargetUnion::Lease(lease))
    }

    /// Applies the comparison to every key in `[key, end)`.
    pub fn with_range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.0.range_end = end.into();
        self
    }

    /// Applies the comparison to every key starting with the key.
    pub fn with_prefix(mut self) -> Self {
        self.0.range_end = prefix_end(&self.0.key);
        self
    }
}

/// One operation of a [`Txn`] branch.
#[derive(Clone, Debug)]
pub struct TxnOp(pb::RequestOp);

impl TxnOp {
    pub fn get(key: impl Into<Vec<u8>>, options: Option<GetOptions>) -> Self {
        let request = options.unwrap_or_default().request(key.into());
        TxnOp(pb::RequestOp {
            request: Some(Request::RequestRange(request)),
        })
    }

    pub fn put(
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: Option<PutOptions>,
    ) -> Self {
        let request = options
            .unwrap_or_default()
            .request(key.into(), value.into());
        TxnOp(pb::RequestOp {
            request: Some(Request::RequestPut(request)),
        })
    }

    pub fn delete(key: impl Into<Vec<u8>>, options: Option<DeleteOptions>) -> Self {
        let request = options.unwrap_or_default().request(key.into());
        TxnOp(pb::RequestOp {
            request: Some(Request::RequestDeleteRange(request)),
        })
    }

    /// A nested transaction.
    pub fn txn(txn: Txn) -> Self {
        TxnOp(pb::RequestOp {
            request: Some(Request::RequestTxn(txn.into_request())),
        })
    }
}

/// A transaction: if every compare holds, the `and_then` operations run, otherwise the
/// `or_else` ones; atomically, at a single revision.
#[derive(Clone, Debug, Default)]
pub struct Txn {
    compare: Vec<pb::Compare>,
    success: Vec<pb::RequestOp>,
    failure: Vec<pb::RequestOp>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds conditions (all must hold).
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compare.extend(compares.into_iter().map(|c| c.0));
        self
    }

    /// Adds operations run when the conditions hold.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops.into_iter().map(|op| op.0));
        self
    }

    /// Adds operations run when a condition fails.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops.into_iter().map(|op| op.0));
        self
    }

    fn into_request(self) -> pb::TxnRequest {
        pb::TxnRequest {
            compare: self.compare,
            success: self.success,
            failure: self.failure,
        }
    }

    /// The key named in error messages: the first compared (or written) key.
    fn first_key(&self) -> Option<&[u8]> {
        self.compare.first().map(|c| c.key.as_slice()).or_else(|| {
            self.success
                .iter()
                .chain(&self.failure)
                .find_map(|op| match &op.request {
                    Some(Request::RequestRange(r)) => Some(r.key.as_slice()),
                    Some(Request::RequestPut(r)) => Some(r.key.as_slice()),
                    Some(Request::RequestDeleteRange(r)) => Some(r.key.as_slice()),
                    _ => None,
                })
        })
    }
}

/// The answer to [`Client::txn`].
#[derive(Clone, Debug, Default)]
pub struct TxnResponse {
    /// The revision of the transaction (its writes, or the revision read at).
    pub revision: i64,
    /// Whether the conditions held (the `and_then` branch ran).
    pub succeeded: bool,
    /// One answer per operation of the branch that ran, in order.
    pub responses: Vec<TxnOpResponse>,
}

/// The answer to one [`TxnOp`].
#[derive(Clone, Debug)]
pub enum TxnOpResponse {
    Get(GetResponse),
    Put(PutResponse),
    Delete(DeleteResponse),
    Txn(TxnResponse),
}

impl From<pb::TxnResponse> for TxnResponse {
    fn from(answer: pb::TxnResponse) -> Self {
        TxnResponse {
            revision: revision(answer.header),
            succeeded: answer.succeeded,
            responses: answer
                .responses
                .into_iter()
                .filter_map(|op| op.response)
                .map(|response| match response {
                    Response::ResponseRange(r) => TxnOpResponse::Get(r.into()),
                    Response::ResponsePut(r) => TxnOpResponse::Put(r.into()),
                    Response::ResponseDeleteRange(r) => TxnOpResponse::Delete(r.into()),
                    Response::ResponseTxn(r) => TxnOpResponse::Txn(r.into()),
                })
                .collect(),
        }
    }
}

impl Client {
    /// Reads a key, or a range of keys with [`GetOptions::with_prefix`] and friends (etcd's
    /// `KV/Range`).
    pub async fn get(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<GetOptions>,
    ) -> Result<GetResponse> {
        let request = options.unwrap_or_default().request(key.into());
        let op = Op::key("get", &request.key);
        self.unary(op, request.clone(), |service, request| async move {
            KvClient::new(service).range(request).await
        })
        .await
        .map(GetResponse::from)
    }

    /// Writes a key.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: Option<PutOptions>,
    ) -> Result<PutResponse> {
        let request = options
            .unwrap_or_default()
            .request(key.into(), value.into());
        let op = Op::key("put", &request.key);
        self.unary(op, request.clone(), |service, request| async move {
            KvClient::new(service).put(request).await
        })
        .await
        .map(PutResponse::from)
    }

    /// Deletes a key, or a range of keys with [`DeleteOptions::with_prefix`] and friends
    /// (etcd's `KV/DeleteRange`).
    pub async fn delete(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<DeleteOptions>,
    ) -> Result<DeleteResponse> {
        let request = options.unwrap_or_default().request(key.into());
        let op = Op::key("delete", &request.key);
        self.unary(op, request.clone(), |service, request| async move {
            KvClient::new(service).delete_range(request).await
        })
        .await
        .map(DeleteResponse::from)
    }

    /// Runs a transaction.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let key = txn.first_key().map(<[u8]>::to_vec);
        let op = match &key {
            Some(key) => Op::key("txn", key),
            None => Op::new("txn"),
        };
        let request = txn.into_request();
        self.unary(op, request, |service, request| async move {
            KvClient::new(service).txn(request).await
        })
        .await
        .map(TxnResponse::from)
    }

    /// Drops the history before `revision` (reads and watches of older revisions then fail
    /// with `Compacted`). With `physical`, answers once the space is reclaimed. Returns the
    /// store revision.
    pub async fn compact(&self, revision: i64, physical: bool) -> Result<i64> {
        let request = pb::CompactionRequest { revision, physical };
        self.unary(Op::new("compact"), request, |service, request| async move {
            KvClient::new(service).compact(request).await
        })
        .await
        .map(|answer| self::revision(answer.header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
        assert_eq!(RangeEnd::Prefix.resolve(Vec::new()), (vec![0], vec![0]));
        assert_eq!(
            RangeEnd::FromKey.resolve(b"k".to_vec()),
            (b"k".to_vec(), vec![0])
        );
        assert_eq!(
            RangeEnd::Key.resolve(b"k".to_vec()),
            (b"k".to_vec(), Vec::new())
        );
    }

    #[test]
    fn txn_names_its_first_key() {
        let txn = Txn::new()
            .when([Compare::create_revision("lock", CompareOp::Equal, 0)])
            .and_then([TxnOp::put("lock", "me", None)]);
        assert_eq!(txn.first_key(), Some(&b"lock"[..]));
        let txn =
            Txn::new().and_then([TxnOp::delete("x", Some(DeleteOptions::new().with_prefix()))]);
        assert_eq!(txn.first_key(), Some(&b"x"[..]));
        let request = txn.into_request();
        match &request.success[0].request {
            Some(Request::RequestDeleteRange(r)) => assert_eq!(r.range_end, b"y".to_vec()),
            other => panic!("unexpected {other:?}"),
        }
    }
}
