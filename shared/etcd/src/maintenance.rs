//! Member status, as a health check.

use crate::client::{Client, Op};
use crate::error::Result;
use crate::kv::revision;
use crate::proto::etcdserverpb::{self as pb, maintenance_client::MaintenanceClient};

/// The answer to [`Client::status`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusResponse {
    /// etcd's version, e.g. `3.4.23`.
    pub version: String,
    /// The member that answered.
    pub member_id: u64,
    /// The raft leader's member id; 0 when there is none (the cluster cannot serve writes).
    pub leader: u64,
    pub raft_term: u64,
    pub revision: i64,
    pub db_size: i64,
    /// Alarms and other problems the member reports.
    pub errors: Vec<String>,
}

impl Client {
    /// The status of the member that answers (a cheap health check, not auth-checked).
    pub async fn status(&self) -> Result<StatusResponse> {
        let answer = self
            .unary(Op::new("status"), pb::StatusRequest {}, |service, request| async move {
                MaintenanceClient::new(service).status(request).await
            })
            .await?;
        Ok(StatusResponse {
            version: answer.version,
            member_id: answer.header.map(|h| h.member_id).unwrap_or(0),
            leader: answer.leader,
            raft_term: answer.raft_term,
            revision: revision(answer.header),
            db_size: answer.db_size,
            errors: answer.errors,
        })
    }
}
