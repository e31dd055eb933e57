//! Issue 14's probes against the real binary (`gnomon demo`: collector, coordinator and
//! exporter in one process over the memory locker and the in-process bus): each test
//! reproduces what a hostile or careless user did and checks gnomon now holds.

use gnomon_testkit::{eventually, free_port, gnomon_binary, ChildProcess};
use std::process::Command;
use std::time::Duration;

/// A running `gnomon demo` with its API and exporter addresses.
struct Demo {
    process: ChildProcess,
    api: String,
    metrics: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Demo {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (api, metrics) = (free_port(), free_port());
        let mut cmd = Command::new(gnomon_binary().unwrap());
        cmd.args([
            "demo",
            "--devices",
            "2",
            "--api",
            &format!("127.0.0.1:{api}"),
            "--metrics-listen",
            &format!("127.0.0.1:{metrics}"),
        ]);
        let process = ChildProcess::spawn("demo", cmd, dir.path()).unwrap();
        let demo = Self {
            process,
            api: format!("http://127.0.0.1:{api}"),
            metrics: format!("http://127.0.0.1:{metrics}/metrics"),
            http: gnomon_testkit::http_client_builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            _dir: dir,
        };
        let ready = eventually("device1 collected", Duration::from_secs(30), || async {
            demo.scrape()
                .await
                .filter(|text| text.contains("gnomon_target_up{target=\"device1\"} 1"))
        })
        .await;
        if let Err(e) = ready {
            panic!("{e}\n{}", demo.process.log());
        }
        demo
    }

    async fn scrape(&self) -> Option<String> {
        let response = self.http.get(&self.metrics).send().await.ok()?;
        response.text().await.ok()
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<String>) -> u16 {
        let mut request = self.http.request(method, format!("{}{path}", self.api));
        if let Some(body) = body {
            request = request.body(body);
        }
        request
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// The address of a simulated device, so added targets really stream.
    async fn device_address(&self) -> String {
        let configs: serde_json::Value = self
            .http
            .get(format!("{}/api/v1/config/targets", self.api))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        configs["device1"]["address"].as_str().unwrap().to_string()
    }
}

/// Issue 14.6: targets added, started and deleted through the API left their
/// `gnomon_target_up` series on the exporter for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_targets_leave_no_up_series_on_the_exporter() {
    let demo = Demo::start().await;
    let address = demo.device_address().await;
    let names: Vec<String> = (1..=6).map(|i| format!("cycle{i}")).collect();
    for name in &names {
        let body = serde_json::json!({ "name": name, "address": address }).to_string();
        assert_eq!(
            demo.send(reqwest::Method::POST, "/api/v1/config/targets", Some(body))
                .await,
            200
        );
        demo.send(
            reqwest::Method::POST,
            &format!("/api/v1/targets/{name}"),
            None,
        )
        .await;
    }
    // Every one streams (up 1 on the exporter) before it is deleted.
    eventually("every cycle target up", Duration::from_secs(30), || async {
        let text = demo.scrape().await?;
        names
            .iter()
            .all(|n| text.contains(&format!("gnomon_target_up{{target=\"{n}\"}} 1")))
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", demo.process.log()));
    for name in &names {
        assert_eq!(
            demo.send(
                reqwest::Method::DELETE,
                &format!("/api/v1/config/targets/{name}"),
                None
            )
            .await,
            200
        );
    }
    let last = eventually(
        "no up series of a deleted target",
        Duration::from_secs(15),
        || async {
            let text = demo.scrape().await?;
            (!names
                .iter()
                .any(|n| text.contains(&format!("gnomon_target_up{{target=\"{n}\"}}"))))
            .then_some(text)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", demo.process.log()));
    assert!(
        last.contains("gnomon_target_up{target=\"device1\"} 1"),
        "{last}"
    );
}
