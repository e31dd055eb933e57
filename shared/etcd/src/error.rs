//! Typed errors: callers decide between "retry later", "stop, fix the configuration" and
//! "etcd said no" by [`ErrorKind`], not by parsing message text.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::time::Duration;

/// A boxed error cause, kept as [`Error`]'s `source`.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, coarsely enough to act on.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No answer from etcd: connection refused or lost, or etcd itself reported that it cannot
    /// serve now (no leader, leader changed, stopping). Transient.
    Unavailable,
    /// The per-call timeout fired before etcd answered (stalled server, network partition).
    /// Transient.
    Timeout,
    /// The TLS handshake failed: an untrusted or mismatching server certificate, a client
    /// certificate that etcd refused (or did not get), or no HTTP/2 over TLS.
    Tls,
    /// Wrong user name or password, or etcd requires authentication and none is configured.
    AuthenticationFailed,
    /// The user is authenticated but its roles do not cover the keys.
    PermissionDenied,
    /// etcd rejected the auth token (expired, or unknown after a restart). Calls re-authenticate
    /// once by themselves, so callers see this only when that did not help.
    InvalidAuthToken,
    /// The lease does not exist (expired or revoked).
    LeaseNotFound,
    /// The requested revision is older than the compacted history.
    Compacted,
    /// etcd is overloaded ("too many requests"). Transient.
    TooManyRequests,
    /// Any other answer from etcd (invalid argument, txn too large, ...); see
    /// [`Error::code`] and [`Error::etcd_message`].
    Etcd,
    /// The client configuration is unusable: bad endpoint, unreadable PEM, missing settings.
    Config,
}

impl ErrorKind {
    fn summary(self) -> &'static str {
        match self {
            ErrorKind::Unavailable => "etcd unavailable",
            ErrorKind::Timeout => "no answer in time",
            ErrorKind::Tls => "TLS failure",
            ErrorKind::AuthenticationFailed => "authentication failed",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::InvalidAuthToken => "auth token rejected",
            ErrorKind::LeaseNotFound => "lease not found",
            ErrorKind::Compacted => "revision compacted",
            ErrorKind::TooManyRequests => "etcd overloaded",
            ErrorKind::Etcd => "etcd refused the request",
            ErrorKind::Config => "invalid configuration",
        }
    }
}

/// An etcd client error: what was attempted (operation, endpoint), what kind of failure it
/// was, and the underlying cause as its [`source`](std::error::Error::source).
///
/// The message never contains a password: etcd does not echo them, and neither does this
/// crate.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.message())]
pub struct Error {
    kind: ErrorKind,
    operation: Cow<'static, str>,
    endpoint: Option<String>,
    code: Option<tonic::Code>,
    detail: String,
    /// What probably needs fixing, appended to the message.
    hint: Option<&'static str>,
    /// Whether etcd itself answered (as opposed to a failure on the way there).
    answered: bool,
    #[source]
    source: Option<BoxError>,
}

impl Error {
    /// `etcd <operation> at <endpoint>: <kind>: <detail>`.
    fn message(&self) -> String {
        let mut text = format!("etcd {}", self.operation);
        if let Some(endpoint) = &self.endpoint {
            text.push_str(" at ");
            text.push_str(endpoint);
        }
        text.push_str(": ");
        text.push_str(self.kind.summary());
        if !self.detail.is_empty() {
            text.push_str(": ");
            text.push_str(&self.detail);
        }
        if let Some(hint) = self.hint {
            text.push_str(" (");
            text.push_str(hint);
            text.push(')');
        }
        text
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What was attempted, e.g. `put "a/x"` or `lease grant`.
    pub fn operation(&self) -> &str {
        &self.operation
    }

    /// The endpoint(s) tried, when the failure happened on the way to etcd or in its answer.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The gRPC status code, when there was one.
    pub fn code(&self) -> Option<tonic::Code> {
        self.code
    }

    /// etcd's own message (e.g. `etcdserver: requested lease not found`), when etcd answered.
    pub fn etcd_message(&self) -> Option<&str> {
        self.answered.then_some(self.detail.as_str())
    }

    /// Whether etcd itself answered. `false` means the request may never have reached it
    /// (connection refused, TLS failure, timeout): before a first successful call that usually
    /// points at the configuration (address, TLS settings) rather than at an outage.
    pub fn reached_etcd(&self) -> bool {
        self.answered
    }

    /// Whether trying again later can succeed without changing anything: unavailable,
    /// timeout, overload, or a rejected token (the next call re-authenticates).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Unavailable
                | ErrorKind::Timeout
                | ErrorKind::TooManyRequests
                | ErrorKind::InvalidAuthToken
        )
    }

    /// Whether the credentials or the user's rights are wrong (authentication failed or
    /// permission denied): retrying will not help until an operator fixes them.
    pub fn is_auth_error(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::AuthenticationFailed | ErrorKind::PermissionDenied
        )
    }

    pub(crate) fn config(what: impl Into<String>, source: Option<BoxError>) -> Self {
        Error {
            kind: ErrorKind::Config,
            operation: Cow::Borrowed("connect"),
            endpoint: None,
            code: None,
            detail: what.into(),
            hint: None,
            answered: false,
            source,
        }
    }

    /// An error for a failure without a gRPC status (a closed request stream, a timeout
    /// measured by this crate).
    pub(crate) fn local(
        kind: ErrorKind,
        operation: impl Into<Cow<'static, str>>,
        endpoint: &str,
        detail: impl Into<String>,
        source: Option<BoxError>,
    ) -> Self {
        Error {
            kind,
            operation: operation.into(),
            endpoint: Some(endpoint.to_string()),
            code: None,
            detail: detail.into(),
            hint: None,
            answered: false,
            source,
        }
    }

    /// Classifies a gRPC status from a call of `operation` on `endpoint`.
    pub(crate) fn from_status(
        operation: impl Into<Cow<'static, str>>,
        endpoint: &str,
        status: tonic::Status,
        timeout: Duration,
    ) -> Self {
        let code = status.code();
        let message = status.message().to_string();
        // tonic attaches a source only to statuses it made up itself (transport failures,
        // errors of the tower stack); statuses decoded from etcd's answer have none.
        let answered = StdError::source(&status).is_none();
        let (kind, detail) = if answered {
            (classify_answer(code, &message), message)
        } else if chain_has_timeout(&status) {
            (ErrorKind::Timeout, format!("no answer within {timeout:?}"))
        } else if let Some(tls) = tls_cause(&status) {
            (ErrorKind::Tls, tls)
        } else {
            (ErrorKind::Unavailable, transport_detail(&status))
        };
        let hint = (answered && detail.contains("user name is empty"))
            .then_some("etcd requires authentication: configure a user and password");
        Error {
            kind,
            operation: operation.into(),
            endpoint: Some(endpoint.to_string()),
            code: Some(code),
            detail,
            hint,
            answered,
            source: Some(Box::new(status)),
        }
    }

    /// The same error for a differently named operation.
    pub(crate) fn renamed(mut self, operation: impl Into<Cow<'static, str>>) -> Self {
        self.operation = operation.into();
        self
    }

    /// Names every endpoint tried when failing over did not help.
    pub(crate) fn with_endpoints(mut self, endpoints: &[&str]) -> Self {
        if endpoints.len() > 1 {
            self.endpoint = Some(endpoints.join(", "));
        }
        self
    }

    /// Reads a connection that the server closed, on a TLS endpoint that never answered, as a
    /// TLS failure: with TLS 1.3 the server checks the client certificate after the handshake
    /// and a refused (or missing) one shows up only as a closed connection or a broken pipe.
    /// Failures to connect at all keep their kind (tonic reports those as `Unavailable`).
    pub(crate) fn closed_before_first_tls_answer(mut self) -> Self {
        if self.kind == ErrorKind::Unavailable
            && !self.answered
            && self.code != Some(tonic::Code::Unavailable)
        {
            self.kind = ErrorKind::Tls;
            self.hint = Some(
                "etcd closed the TLS connection before its first answer: it probably requires \
                 a client certificate, or refused the one sent",
            );
        }
        self
    }

    /// Whether another endpoint may succeed where this one failed: the request did not reach
    /// etcd and did not merely time out (a timed-out request may have been applied).
    pub(crate) fn try_next_endpoint(&self) -> bool {
        !self.answered && matches!(self.kind, ErrorKind::Unavailable | ErrorKind::Tls)
    }

    /// etcd 3.4 answers "user name is empty" to calls without a token while auth is on.
    pub(crate) fn is_missing_token(&self) -> bool {
        self.answered
            && self.code == Some(tonic::Code::InvalidArgument)
            && self.detail.contains("user name is empty")
    }
}

fn classify_answer(code: tonic::Code, message: &str) -> ErrorKind {
    use tonic::Code;
    match code {
        Code::Unauthenticated => ErrorKind::InvalidAuthToken,
        Code::PermissionDenied => ErrorKind::PermissionDenied,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::DeadlineExceeded => ErrorKind::Timeout,
        Code::NotFound if message.contains("lease not found") => ErrorKind::LeaseNotFound,
        Code::OutOfRange if message.contains("compacted") => ErrorKind::Compacted,
        Code::ResourceExhausted if message.contains("too many requests") => {
            ErrorKind::TooManyRequests
        }
        Code::InvalidArgument
            if message.contains("authentication failed")
                || message.contains("user name is empty") =>
        {
            ErrorKind::AuthenticationFailed
        }
        // A stale auth-store revision in the token: re-authenticating fixes it.
        Code::InvalidArgument if message.contains("revision of auth store is old") => {
            ErrorKind::InvalidAuthToken
        }
        _ => ErrorKind::Etcd,
    }
}

/// Every error in the chain below `error` (not `error` itself), looking inside `io::Error`s,
/// whose `source()` skips the error they wrap.
fn causes<'a>(error: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut found = Vec::new();
    let mut next = error.source();
    while let Some(cause) = next {
        found.push(cause);
        if let Some(inner) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            let inner: &(dyn StdError + 'static) = inner;
            found.push(inner);
            next = inner.source();
        } else {
            next = cause.source();
        }
    }
    found
}

fn chain_has_timeout(status: &tonic::Status) -> bool {
    causes(status).iter().any(|cause| {
        cause.is::<tower::timeout::error::Elapsed>() || cause.is::<tokio::time::error::Elapsed>()
    })
}

/// The TLS failure in the chain, if any: a rustls error (untrusted certificate, alert from
/// the server such as a refused client certificate), or tonic's "HTTP/2 was not negotiated".
fn tls_cause(status: &tonic::Status) -> Option<String> {
    causes(status).into_iter().find_map(|cause| {
        if let Some(rustls) = cause.downcast_ref::<rustls::Error>() {
            return Some(rustls.to_string());
        }
        let text = cause.to_string();
        let lower = text.to_ascii_lowercase();
        (lower.contains("certificate")
            || lower.contains("tls handshake")
            || lower.contains("http/2 was not negotiated"))
        .then_some(text)
    })
}

/// "transport error: tcp connect error: Connection refused (os error 111)": the status
/// message followed by each cause not already in the text.
fn transport_detail(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    for cause in causes(status) {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause_text);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: tonic::Code, message: &str) -> Error {
        Error::from_status(
            "put \"k\"",
            "http://127.0.0.1:2379",
            tonic::Status::new(code, message),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn etcd_answers_are_classified() {
        use tonic::Code;
        let cases = [
            (
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
                ErrorKind::AuthenticationFailed,
            ),
            (
                Code::PermissionDenied,
                "etcdserver: permission denied",
                ErrorKind::PermissionDenied,
            ),
            (
                Code::Unauthenticated,
                "etcdserver: invalid auth token",
                ErrorKind::InvalidAuthToken,
            ),
            (
                Code::NotFound,
                "etcdserver: requested lease not found",
                ErrorKind::LeaseNotFound,
            ),
            (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
                ErrorKind::Compacted,
            ),
            (
                Code::ResourceExhausted,
                "etcdserver: too many requests",
                ErrorKind::TooManyRequests,
            ),
            (
                Code::Unavailable,
                "etcdserver: leader changed",
                ErrorKind::Unavailable,
            ),
            (
                Code::InvalidArgument,
                "etcdserver: key is not provided",
                ErrorKind::Etcd,
            ),
        ];
        for (code, message, kind) in cases {
            let error = answer(code, message);
            assert_eq!(error.kind(), kind, "{message}");
            assert!(error.reached_etcd());
            assert_eq!(error.etcd_message(), Some(message));
        }
    }

    #[test]
    fn transience_and_auth_errors() {
        assert!(answer(tonic::Code::Unavailable, "etcdserver: no leader").is_transient());
        let denied = answer(
            tonic::Code::PermissionDenied,
            "etcdserver: permission denied",
        );
        assert!(!denied.is_transient() && denied.is_auth_error());
        let compacted = answer(
            tonic::Code::OutOfRange,
            "mvcc: required revision has been compacted",
        );
        assert!(!compacted.is_transient() && !compacted.is_auth_error());
    }

    #[test]
    fn message_names_operation_and_endpoint() {
        let error = answer(
            tonic::Code::PermissionDenied,
            "etcdserver: permission denied",
        );
        assert_eq!(
            error.to_string(),
            "etcd put \"k\" at http://127.0.0.1:2379: permission denied: etcdserver: permission denied"
        );
        assert!(std::error::Error::source(&error).is_some());
    }

    #[test]
    fn transport_failures_are_unavailable_with_their_cause() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let status = tonic::Status::from_error(Box::new(refused));
        let error = Error::from_status(
            "range \"k\"",
            "http://127.0.0.1:1",
            status,
            Duration::from_secs(1),
        );
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert!(!error.reached_etcd() && error.is_transient() && error.try_next_endpoint());
        assert!(error.to_string().contains("connection refused"), "{error}");
    }

    #[test]
    fn elapsed_timer_is_a_timeout() {
        let status = tonic::Status::from_error(Box::new(tower::timeout::error::Elapsed::new()));
        let error = Error::from_status(
            "txn",
            "http://127.0.0.1:1",
            status,
            Duration::from_millis(300),
        );
        assert_eq!(error.kind(), ErrorKind::Timeout);
        assert!(!error.try_next_endpoint());
        assert!(error.to_string().contains("300ms"), "{error}");
    }

    #[test]
    fn rustls_errors_are_tls_failures() {
        let rustls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls);
        let status = tonic::Status::from_error(Box::new(io));
        let error = Error::from_status(
            "range \"k\"",
            "https://127.0.0.1:1",
            status,
            Duration::from_secs(1),
        );
        assert_eq!(error.kind(), ErrorKind::Tls);
        assert!(error.to_string().contains("UnknownIssuer"), "{error}");
    }
}
