//! Username/password check on every RPC (gRPC metadata `username` and `password`, the way
//! gnmic and pygnmi send them).

use tonic::metadata::MetadataMap;
use tonic::Status;

/// The credentials a device requires.
#[derive(Clone)]
pub struct Credentials {
    username: String,
    password: String,
}

impl Credentials {
    pub fn new(username: String, password: String) -> Credentials {
        Credentials { username, password }
    }

    /// UNAUTHENTICATED unless the metadata carries exactly these credentials. The message
    /// never repeats what the client sent.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let field = |name: &str| metadata.get(name).and_then(|value| value.to_str().ok());
        let (Some(username), Some(password)) = (field("username"), field("password")) else {
            return Err(Status::unauthenticated(
                "missing credentials: send gRPC metadata `username` and `password`",
            ));
        };
        let username_ok = same_bytes(username.as_bytes(), self.username.as_bytes());
        let password_ok = same_bytes(password.as_bytes(), self.password.as_bytes());
        if username_ok && password_ok {
            Ok(())
        } else {
            Err(Status::unauthenticated("wrong username or password"))
        }
    }
}

/// Comparison whose time does not depend on where the inputs differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Checks `metadata` against optional required credentials.
pub fn authorize(required: Option<&Credentials>, metadata: &MetadataMap) -> Result<(), Status> {
    match required {
        Some(credentials) => credentials.check(metadata),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn metadata(pairs: &[(&'static str, &'static str)]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for (key, value) in pairs {
            map.insert(*key, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn accepts_only_the_exact_pair() {
        let required = Credentials::new("admin".into(), "s3cret".into());
        assert!(required
            .check(&metadata(&[("username", "admin"), ("password", "s3cret")]))
            .is_ok());
        for wrong in [
            metadata(&[("username", "admin"), ("password", "nope")]),
            metadata(&[("username", "root"), ("password", "s3cret")]),
            metadata(&[("username", "admin")]),
            metadata(&[]),
        ] {
            let status = required.check(&wrong).unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated);
            assert!(!status.message().contains("s3cret"));
        }
        assert!(authorize(None, &metadata(&[])).is_ok());
    }
}
