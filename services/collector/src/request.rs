//! Building gNMI SubscribeRequests from gnmic subscription settings.

use gnomon_config::{SubscriptionConfig, SubscriptionMode, TargetConfig};
use gnomon_gnmi::path::parse_path;
use gnomon_gnmi::proto::gnmi::{
    self, subscribe_request, subscription_list, ModelData, Poll, SubscribeRequest, Subscription,
    SubscriptionList,
};

/// Why a subscription cannot be turned into a request.
#[derive(Debug, thiserror::Error)]
#[error("subscription {subscription:?}: {reason}")]
pub struct RequestError {
    pub subscription: String,
    pub reason: String,
}

/// The SubscribeRequest for `subscription` sent to `target`: the target's encoding when the
/// subscription sets none, and with `set-target` the target's name as the prefix target.
pub fn subscribe_request(
    subscription: &SubscriptionConfig,
    target: &TargetConfig,
) -> Result<SubscribeRequest, RequestError> {
    let target_encoding = target.encoding;
    let error = |reason: String| RequestError {
        subscription: subscription.name.clone(),
        reason,
    };
    let mut prefix = match &subscription.prefix {
        Some(text) => Some(parse_path(text).map_err(|e| error(format!("prefix {text:?}: {e}")))?),
        None => None,
    };
    if let Some(target) = &subscription.target {
        prefix.get_or_insert_with(gnmi::Path::default).target = target.clone();
    } else if subscription.set_target {
        // gnmic's set-target: the prefix target is the target's name.
        prefix.get_or_insert_with(gnmi::Path::default).target = target.name.clone();
    }
    let stream_mode = subscription.effective_stream_mode().to_proto();
    let sample_interval = subscription
        .sample_interval
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let heartbeat_interval = subscription
        .heartbeat_interval
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let subscriptions = subscription
        .paths
        .iter()
        .map(|text| {
            let path = parse_path(text).map_err(|e| error(format!("path {text:?}: {e}")))?;
            Ok(Subscription {
                path: Some(path),
                mode: stream_mode as i32,
                sample_interval,
                suppress_redundant: subscription.suppress_redundant,
                heartbeat_interval,
            })
        })
        .collect::<Result<Vec<_>, RequestError>>()?;
    let mode = match subscription.mode {
        SubscriptionMode::Stream => subscription_list::Mode::Stream,
        SubscriptionMode::Once => subscription_list::Mode::Once,
        SubscriptionMode::Poll => subscription_list::Mode::Poll,
    };
    let list = SubscriptionList {
        prefix,
        subscription: subscriptions,
        qos: subscription.qos.map(|marking| gnmi::QosMarking { marking }),
        mode: mode as i32,
        allow_aggregation: false,
        use_models: subscription
            .models
            .iter()
            .map(|name| ModelData {
                name: name.clone(),
                ..Default::default()
            })
            .collect(),
        encoding: subscription.encoding.unwrap_or(target_encoding).to_proto() as i32,
        updates_only: subscription.updates_only,
    };
    Ok(SubscribeRequest {
        request: Some(subscribe_request::Request::Subscribe(list)),
        ..Default::default()
    })
}

/// A Poll trigger.
pub fn poll_request() -> SubscribeRequest {
    SubscribeRequest {
        request: Some(subscribe_request::Request::Poll(Poll {})),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gnomon_config::{load_config_with_env, ConfigFormat};

    #[test]
    fn request_carries_every_setting() {
        let config = load_config_with_env(
            "subscriptions:\n  s:\n    paths: ['/interfaces/interface[name=Ethernet1]/state/counters']\n    prefix: /openconfig\n    target: dev1\n    mode: stream\n    stream-mode: sample\n    sample-interval: 2s\n    heartbeat-interval: 10s\n    suppress-redundant: true\n    updates-only: true\n    qos: 20\n    models: [openconfig-interfaces]\n    encoding: proto\n",
            ConfigFormat::Yaml,
            &[],
        )
        .unwrap();
        let target = TargetConfig::new("t1", "127.0.0.1", &config.globals);
        let request = subscribe_request(&config.subscriptions["s"], &target).unwrap();
        let Some(subscribe_request::Request::Subscribe(list)) = request.request else {
            panic!("not a subscribe")
        };
        assert_eq!(list.mode, subscription_list::Mode::Stream as i32);
        assert_eq!(list.encoding, gnmi::Encoding::Proto as i32);
        assert!(list.updates_only);
        assert_eq!(list.qos.unwrap().marking, 20);
        assert_eq!(list.use_models[0].name, "openconfig-interfaces");
        let prefix = list.prefix.unwrap();
        assert_eq!(prefix.target, "dev1");
        assert_eq!(prefix.elem[0].name, "openconfig");
        let sub = &list.subscription[0];
        assert_eq!(sub.mode, gnmi::SubscriptionMode::Sample as i32);
        assert_eq!(sub.sample_interval, 2_000_000_000);
        assert_eq!(sub.heartbeat_interval, 10_000_000_000);
        assert!(sub.suppress_redundant);
        assert_eq!(sub.path.as_ref().unwrap().elem[1].key["name"], "Ethernet1");
    }

    #[test]
    fn set_target_puts_the_target_name_in_the_prefix() {
        let config = load_config_with_env(
            "subscriptions:\n  s:\n    paths: [/a]\n    set-target: true\n  t:\n    paths: [/a]\n",
            ConfigFormat::Yaml,
            &[],
        )
        .unwrap();
        let target = TargetConfig::new("leaf1", "10.0.0.1", &config.globals);
        let prefix_target = |name: &str| {
            let request = subscribe_request(&config.subscriptions[name], &target).unwrap();
            let Some(subscribe_request::Request::Subscribe(list)) = request.request else {
                panic!("not a subscribe")
            };
            list.prefix.map(|p| p.target).unwrap_or_default()
        };
        assert_eq!(prefix_target("s"), "leaf1");
        assert_eq!(prefix_target("t"), "");
    }
}
