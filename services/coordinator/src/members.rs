//! Cluster members as registered in the coordination store (service `<cluster>-gnmic-api`).

use gnomon_coordination::{keys, Coordination, CoordinationError, ServiceInstance};

/// The service `cluster`'s members register their APIs under, and the tag that keeps
/// another cluster's registrations sharing the store out.
pub fn registration_filter(cluster: &str) -> (String, [String; 1]) {
    (
        keys::api_service_name(cluster),
        [format!("cluster-name={cluster}")],
    )
}

/// The members of `cluster` registered right now.
pub async fn registered(
    coordination: &dyn Coordination,
    cluster: &str,
) -> Result<Vec<Member>, CoordinationError> {
    let (service, tags) = registration_filter(cluster);
    Ok(coordination
        .services(&service, &tags)
        .await?
        .iter()
        .map(Member::from_service)
        .collect())
}

/// A live member: a registered collector API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Instance name, from the `instance-name=` tag (else the service ID without `-api`).
    pub name: String,
    /// `scheme://host:port` of its REST API (scheme from the `__protocol=` tag).
    pub api: String,
    /// Registration tags in order.
    pub tags: Vec<String>,
    /// False while the member has given its targets up because its outputs fail (it
    /// registered with [`keys::UNHEALTHY_TAG`]): the leader places nothing on it.
    pub accepts_targets: bool,
}

impl Member {
    pub fn from_service(service: &ServiceInstance) -> Self {
        let tag_value = |prefix: &str| {
            service
                .tags
                .iter()
                .find_map(|t| t.strip_prefix(prefix).map(str::to_string))
        };
        let name = tag_value("instance-name=").unwrap_or_else(|| {
            service
                .id
                .strip_suffix("-api")
                .unwrap_or(&service.id)
                .to_string()
        });
        let scheme = tag_value("__protocol=").unwrap_or_else(|| "http".to_string());
        Self {
            name,
            api: format!("{scheme}://{}", service.host_port()),
            accepts_targets: !service.tags.iter().any(|t| t == keys::UNHEALTHY_TAG),
            tags: service.tags.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_identity_comes_from_tags() {
        let service = ServiceInstance {
            id: "gnomon1-api".into(),
            name: "c1-gnmic-api".into(),
            address: "127.0.0.1".into(),
            port: 7890,
            tags: vec![
                "cluster-name=c1".into(),
                "instance-name=gnomon1".into(),
                "__protocol=https".into(),
            ],
        };
        let member = Member::from_service(&service);
        assert_eq!(member.name, "gnomon1");
        assert_eq!(member.api, "https://127.0.0.1:7890");
        assert!(member.accepts_targets);
        let mut failing = service.clone();
        failing.tags.push(keys::UNHEALTHY_TAG.to_string());
        assert!(!Member::from_service(&failing).accepts_targets);
        let bare = ServiceInstance {
            tags: vec![],
            ..service
        };
        let member = Member::from_service(&bare);
        assert_eq!(
            (member.name.as_str(), member.api.as_str()),
            ("gnomon1", "http://127.0.0.1:7890")
        );
    }
}
