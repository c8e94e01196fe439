//! The public contract against a running service and the real broker:
//! every example in `/openapi.json`, the operational endpoints (metrics on
//! the admin listener only, nothing on the public listener that one
//! submission changes), rate limiting.

use crate::common;

use common::start_ingest;
use hushmap_testkit::{brokers, topic_records_on, wait_until};
use serde_json::Value;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_openapi_example_behaves_as_documented() -> anyhow::Result<()> {
    let ingest = start_ingest(|_| {}).await?;
    let (url, topic) = (ingest.url.clone(), ingest.topic.clone());
    let client = reqwest::Client::new();
    let doc: Value = client
        .get(format!("{url}/openapi.json"))
        .send()
        .await?
        .json()
        .await?;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let op = &doc["paths"]["/v1/submissions"]["post"];
    let examples = op["requestBody"]["content"]["application/json"]["examples"]
        .as_object()
        .expect("request examples");
    assert!(examples.len() >= 5);
    let mut accepted = 0;
    for (name, example) in examples {
        let resp = client
            .post(format!("{url}/v1/submissions"))
            .json(&example["value"])
            .send()
            .await?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await?;
        if name.starts_with("accepted_") {
            assert_eq!(status, 202, "{name}: {body}");
            assert!(["low", "moderate", "high"].contains(&body["risk"].as_str().unwrap()));
            accepted += 1;
        } else {
            let expected: u16 = name
                .split('_')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("rejected_<status>_*");
            assert_eq!(status, expected, "{name}: {body}");
            assert_eq!(body["status"], expected);
            assert!(body["field"].is_string(), "{name} names its field");
        }
    }
    // Documented responses: every example has the shape its status promises.
    for (status, response) in op["responses"].as_object().unwrap() {
        let content = response["content"].as_object().unwrap();
        let (media, body) = content.iter().next().unwrap();
        let example = &body["example"];
        if status == "202" {
            assert_eq!(media, "application/json");
            serde_json::from_value::<hushmap_schema::submission::Triage>(example.clone())?;
        } else {
            assert_eq!(media, "application/problem+json");
            assert_eq!(example["status"].as_u64().unwrap().to_string(), *status);
            let code = example["code"].as_str().unwrap();
            assert_eq!(example["type"], format!("/errors/{code}"));
        }
    }
    // The accepted examples, and only they, reached the topic.
    let records =
        tokio::task::spawn_blocking(move || topic_records_on(&brokers(), &topic)).await??;
    assert_eq!(records.len(), accepted);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_endpoints() -> anyhow::Result<()> {
    let ingest = start_ingest(|_| {}).await?;
    let url = ingest.url.clone();
    let client = reqwest::Client::new();
    assert_eq!(
        client.get(format!("{url}/healthz")).send().await?.status(),
        200
    );
    // Ready once the background probe has reached the broker.
    wait_until(
        "ingest to be ready (/readyz 200)",
        Duration::from_secs(10),
        || async {
            let ready = client.get(format!("{url}/readyz")).send().await?;
            Ok((ready.status() == 200).then_some(()))
        },
    )
    .await?;
    let page = client.get(format!("{url}/")).send().await?.text().await?;
    assert!(page.contains("<form") && page.contains(r#"<script src="/selfcheck.js">"#));
    // The page's script is a file of its own (the CSP allows no inline
    // script), and it is what posts to the API.
    let script = client.get(format!("{url}/selfcheck.js")).send().await?;
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(script.text().await?.contains("/v1/submissions"));
    let body = serde_json::json!({"for": "self", "age": 40, "gender": "male", "symptoms": ["fever"], "conditions": [],
        "travelled_internationally_14d": false, "contact_with_confirmed_case": false, "location": {"lat": 48.85, "lon": 2.35}});
    assert_eq!(
        client
            .post(format!("{url}/v1/submissions"))
            .json(&body)
            .send()
            .await?
            .status(),
        202
    );
    let bad = serde_json::json!({"age": 41});
    assert_eq!(
        client
            .post(format!("{url}/v1/submissions"))
            .json(&bad)
            .send()
            .await?
            .status(),
        422
    );
    // Metrics are on the admin listener, not beside the public API.
    assert_eq!(
        client.get(format!("{url}/metrics")).send().await?.status(),
        404
    );
    let metrics = client
        .get(format!("{}/metrics", ingest.admin_url))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("hushmap_ingest_submissions_accepted_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hushmap_ingest_submissions_rejected_total{code=\"missing_field\"} 1"),
        "{metrics}"
    );
    // No count by triage level: polled around one person's submission it
    // would tell their result.
    assert!(!metrics.contains("risk"), "{metrics}");
    assert!(
        metrics.contains("hushmap_ingest_produce_latency_seconds_count 1"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_beyond_their_rate_get_429_with_retry_after() -> anyhow::Result<()> {
    let ingest = start_ingest(|c| {
        c.rate_limit.per_minute = 6;
        c.rate_limit.burst = 3;
    })
    .await?;
    let url = ingest.url.clone();
    let client = reqwest::Client::new();
    let body = serde_json::json!({"for": "self", "age": 40, "gender": "male", "symptoms": [], "conditions": [],
        "travelled_internationally_14d": false, "contact_with_confirmed_case": false, "location": {"lat": 48.85, "lon": 2.35}});
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let resp = client
            .post(format!("{url}/v1/submissions"))
            .json(&body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        if status == 429 {
            let retry: u64 = resp.headers()["retry-after"].to_str()?.parse()?;
            assert!((1..=11).contains(&retry), "retry-after {retry}");
            let problem: Value = resp.json().await?;
            assert_eq!(problem["code"], "rate_limited");
        }
        statuses.push(status);
    }
    // A burst of 3 passes; the rate (one per 10 s) refuses the next two.
    assert_eq!(statuses, [202, 202, 202, 429, 429]);
    Ok(())
}

/// Everything a client can GET from the public listener, by path: status,
/// content type and body.
async fn public_view(client: &reqwest::Client, url: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut view = Vec::new();
    for path in [
        "/",
        "/openapi.json",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/submissions",
        "/nonexistent",
    ] {
        let resp = client.get(format!("{url}{path}")).send().await?;
        let head = format!("{} {:?}", resp.status(), resp.headers().get("content-type"));
        view.push((path.to_string(), format!("{head}\n{}", resp.text().await?)));
    }
    Ok(view)
}

/// One person's high-risk submission changes nothing another client can
/// read on the public listener: every public page, before and after, is
/// byte for byte the same. Only the submitter's own 202 says their risk.
/// (The admin listener does change, which shows the submission counted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_submission_changes_nothing_the_public_can_read() -> anyhow::Result<()> {
    let ingest = start_ingest(|_| {}).await?;
    let url = ingest.url.clone();
    let client = reqwest::Client::new();
    let before = public_view(&client, &url).await?;
    let admin_before = client
        .get(format!("{}/metrics", ingest.admin_url))
        .send()
        .await?
        .text()
        .await?;
    let high = serde_json::json!({"for": "self", "age": 70, "gender": "male",
        "symptoms": ["breathlessness", "fever"], "conditions": ["heart_disease"],
        "travelled_internationally_14d": true, "contact_with_confirmed_case": true,
        "location": {"lat": 48.85, "lon": 2.35}});
    let resp = client
        .post(format!("{url}/v1/submissions"))
        .json(&high)
        .send()
        .await?;
    assert_eq!(resp.status(), 202);
    let answer: Value = resp.json().await?;
    assert_eq!(answer["risk"], "high");
    let after = public_view(&client, &url).await?;
    for ((path, b), (_, a)) in before.iter().zip(&after) {
        assert_eq!(b, a, "GET {path} changed after one submission");
    }
    let admin_after = client
        .get(format!("{}/metrics", ingest.admin_url))
        .send()
        .await?
        .text()
        .await?;
    assert_ne!(admin_before, admin_after, "the admin listener counts it");
    assert!(!admin_after.contains("high"), "{admin_after}");
    Ok(())
}
