//! Auth administration: switching authentication on, users, roles and permissions. Used by
//! tests and tooling; gnomon itself only logs in (see [`ConnectOptions::with_user`]).
//!
//! [`ConnectOptions::with_user`]: crate::ConnectOptions::with_user

use crate::client::{Client, Op};
use crate::error::Result;
use crate::kv::{prefix_end, revision};
use crate::proto::authpb::{self, permission::Type};
use crate::proto::etcdserverpb::{self as pb, auth_client::AuthClient};

/// What a [`Permission`] allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermissionType {
    Read,
    Write,
    ReadWrite,
}

/// Access to a key, a range or a prefix, granted to a role.
#[derive(Clone, Debug)]
pub struct Permission {
    kind: PermissionType,
    key: Vec<u8>,
    range_end: Vec<u8>,
}

impl Permission {
    /// Access of `kind` to exactly `key`.
    pub fn new(kind: PermissionType, key: impl Into<Vec<u8>>) -> Self {
        Permission {
            kind,
            key: key.into(),
            range_end: Vec::new(),
        }
    }

    pub fn read(key: impl Into<Vec<u8>>) -> Self {
        Self::new(PermissionType::Read, key)
    }

    pub fn write(key: impl Into<Vec<u8>>) -> Self {
        Self::new(PermissionType::Write, key)
    }

    pub fn read_write(key: impl Into<Vec<u8>>) -> Self {
        Self::new(PermissionType::ReadWrite, key)
    }

    /// Every key starting with the key.
    pub fn with_prefix(mut self) -> Self {
        self.range_end = prefix_end(&self.key);
        self
    }

    /// The keys in `[key, end)`.
    pub fn with_range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.range_end = end.into();
        self
    }

    fn into_proto(self) -> authpb::Permission {
        let perm_type = match self.kind {
            PermissionType::Read => Type::Read,
            PermissionType::Write => Type::Write,
            PermissionType::ReadWrite => Type::Readwrite,
        };
        authpb::Permission {
            perm_type: perm_type as i32,
            key: self.key,
            range_end: self.range_end,
        }
    }
}

impl Client {
    /// Switches authentication on (etcd requires user `root` with role `root` to exist).
    /// Returns the revision.
    pub async fn auth_enable(&self) -> Result<i64> {
        self.unary(
            Op::new("auth enable"),
            pb::AuthEnableRequest {},
            |service, request| async move { AuthClient::new(service).auth_enable(request).await },
        )
        .await
        .map(|answer| revision(answer.header))
    }

    /// Switches authentication off (needs root rights). Returns the revision.
    pub async fn auth_disable(&self) -> Result<i64> {
        self.unary(
            Op::new("auth disable"),
            pb::AuthDisableRequest {},
            |service, request| async move { AuthClient::new(service).auth_disable(request).await },
        )
        .await
        .map(|answer| revision(answer.header))
    }

    /// Adds a user with a password.
    pub async fn user_add(
        &self,
        name: impl Into<String>,
        password: impl Into<String>,
    ) -> Result<i64> {
        let request = pb::AuthUserAddRequest {
            name: name.into(),
            password: password.into(),
            ..Default::default()
        };
        let op = Op::key("user add", request.name.as_bytes());
        self.unary(op, request.clone(), |service, request| async move {
            AuthClient::new(service).user_add(request).await
        })
        .await
        .map(|answer| revision(answer.header))
    }

    /// Grants `role` to `user`.
    pub async fn user_grant_role(
        &self,
        user: impl Into<String>,
        role: impl Into<String>,
    ) -> Result<i64> {
        let request = pb::AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        };
        let op = Op::key("user grant role", request.user.as_bytes());
        self.unary(op, request.clone(), |service, request| async move {
            AuthClient::new(service).user_grant_role(request).await
        })
        .await
        .map(|answer| revision(answer.header))
    }

    /// Adds a role without permissions.
    pub async fn role_add(&self, name: impl Into<String>) -> Result<i64> {
        let request = pb::AuthRoleAddRequest { name: name.into() };
        let op = Op::key("role add", request.name.as_bytes());
        self.unary(op, request.clone(), |service, request| async move {
            AuthClient::new(service).role_add(request).await
        })
        .await
        .map(|answer| revision(answer.header))
    }

    /// Grants a permission to `role`.
    pub async fn role_grant_permission(
        &self,
        role: impl Into<String>,
        permission: Permission,
    ) -> Result<i64> {
        let request = pb::AuthRoleGrantPermissionRequest {
            name: role.into(),
            perm: Some(permission.into_proto()),
        };
        let op = Op::key("role grant permission", request.name.as_bytes());
        self.unary(op, request.clone(), |service, request| async move {
            AuthClient::new(service)
                .role_grant_permission(request)
                .await
        })
        .await
        .map(|answer| revision(answer.header))
    }
}
