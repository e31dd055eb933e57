//! A TTL check's status set through the agent's `check/pass`, `check/warn` and `check/fail`
//! endpoints, as `GET /v1/health/service/:name` reports it; an unknown verb or check is
//! refused.

use gnomon_consul_double::ConsulDouble;

#[tokio::test]
async fn pass_warn_and_fail_set_the_check_status_with_its_note() {
    let double = ConsulDouble::start().await.unwrap();
    let http = gnomon_testkit::http_client();
    let url = double.url();
    let registered = http
        .put(format!("{url}/v1/agent/service/register"))
        .body(r#"{"ID":"api-1","Name":"api","Check":{"CheckID":"api-1-ttl","TTL":"30s"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status().as_u16(), 200);
    let status_and_output = || async {
        let health: serde_json::Value = http
            .get(format!("{url}/v1/health/service/api"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // The node's own check (serfHealth) comes with the service's.
        let checks = health[0]["Checks"].as_array().cloned().unwrap_or_default();
        let check = checks
            .iter()
            .find(|c| c["CheckID"] == "api-1-ttl")
            .cloned()
            .unwrap_or_default();
        (
            check["Status"].as_str().unwrap_or_default().to_string(),
            check["Output"].as_str().unwrap_or_default().to_string(),
        )
    };
    assert_eq!(status_and_output().await.0, "critical", "a new TTL check");
    for (verb, status) in [
        ("pass", "passing"),
        ("warn", "warning"),
        ("fail", "critical"),
    ] {
        let answer = http
            .put(format!(
                "{url}/v1/agent/check/{verb}/api-1-ttl?note={verb}-note"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200, "{verb}");
        assert_eq!(
            status_and_output().await,
            (status.to_string(), format!("{verb}-note"))
        );
    }
    let unknown_verb = http
        .put(format!("{url}/v1/agent/check/explode/api-1-ttl"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_verb.status().as_u16(), 404);
    let unknown_check = http
        .put(format!("{url}/v1/agent/check/pass/nope"))
        .send()
        .await
        .unwrap();
    assert!(
        unknown_check.status().is_client_error(),
        "{unknown_check:?}"
    );
}
