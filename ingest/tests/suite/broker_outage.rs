//! Kafka goes away for 20 s under steady requests (a private second
//! broker, stopped for real):
//! ingest answers 503 within its bound instead of hanging, never sends a
//! 202 without the broker's acknowledgement, and after the broker returns
//! every 202 is in the topic exactly once and no 503 is.

use crate::common;
use futures::future::join_all;

use common::start_ingest;
use hushmap_schema::RegionCell;
use hushmap_schema::region::RegionResolution;
use hushmap_testkit::{SpareBroker, payload_keyring, topic_records_on};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const PRODUCE_TIMEOUT_MS: u64 = 3_000;
const OUTAGE_SECS: u64 = 20;

/// A distinct region per request, so each record in the topic can be traced
/// back to the request that produced it.
fn body(i: usize) -> (serde_json::Value, String) {
    let lat = -40.0 + (i / 40) as f64 * 1.5;
    let lon = -150.0 + (i % 40) as f64 * 7.0;
    let cell = RegionCell::from_coordinate(lat, lon, RegionResolution::new(5).unwrap())
        .unwrap()
        .to_string();
    let b = json!({"for": "self", "age": 30, "gender": "female", "symptoms": [], "conditions": [],
        "travelled_internationally_14d": false, "contact_with_confirmed_case": false, "region": cell});
    (b, cell)
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    i: usize,
) -> (String, u16, Duration, Option<String>) {
    let (b, cell) = body(i);
    let started = Instant::now();
    let resp = client
        .post(format!("{url}/v1/submissions"))
        .json(&b)
        .send()
        .await
        .expect("ingest answers");
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (cell, resp.status().as_u16(), started.elapsed(), retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_gives_bounded_503s_and_loses_or_duplicates_nothing() -> anyhow::Result<()> {
    let broker = tokio::task::spawn_blocking(|| SpareBroker::start_fresh(19092, 19093)).await??;
    let ingest = start_ingest(|c| {
        c.kafka.brokers = broker.bootstrap();
        c.kafka.produce_timeout_ms = PRODUCE_TIMEOUT_MS;
    })
    .await?;
    let (url, topic) = (ingest.url.clone(), ingest.topic.clone());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;

    let mut outcome: HashMap<String, u16> = HashMap::new();
    // Before: all accepted.
    for i in 0..40 {
        let (cell, status, _, _) = post(&client, &url, i).await;
        assert_eq!(status, 202);
        outcome.insert(cell, status);
    }

    // During: the broker is stopped for 20 s under a steady 5 requests/s.
    // Every request ends within the bound, and none is acknowledged.
    let broker = tokio::task::spawn_blocking(move || broker.stop().map(|_| broker)).await??;
    let outage = Instant::now();
    let mut pending = Vec::new();
    let mut i = 40;
    while outage.elapsed() < Duration::from_secs(OUTAGE_SECS) {
        let (client, url) = (client.clone(), url.clone());
        pending.push(tokio::spawn(async move { post(&client, &url, i).await }));
        i += 1;
        // Paces the load (5 requests/s), not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let during: Vec<_> = join_all(pending)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    assert!(
        during.len() >= 90,
        "{} requests during the outage",
        during.len()
    );
    let ready = client.get(format!("{url}/readyz")).send().await?.status();
    assert_eq!(ready, 503, "not ready while the broker is down");
    for (cell, status, elapsed, retry) in during {
        assert_eq!(status, 503, "no 202 without the broker");
        assert!(retry.is_some(), "503 carries Retry-After");
        // The bound: the produce timeout plus librdkafka's ~1 s timeout scan.
        assert!(
            elapsed < Duration::from_millis(PRODUCE_TIMEOUT_MS + 3_000),
            "answered after {elapsed:?}"
        );
        outcome.insert(cell, status);
    }

    // After: the broker is back; ingest recovers by itself. Requests while
    // it reconnects may get either answer; each is recorded.
    let broker = tokio::task::spawn_blocking(move || broker.start().map(|_| broker)).await??;
    // Up to 60 requests, half a second apart: a retrying client's pacing
    // (about 30 s for ingest to reconnect), not a wait for a condition
    // that could be polled faster; each answer is recorded.
    let mut n = 1_000;
    loop {
        let (cell, status, _, _) = post(&client, &url, n).await;
        outcome.insert(cell, status);
        n += 1;
        if status == 202 {
            break;
        }
        anyhow::ensure!(
            n < 1_060,
            "ingest did not recover after the broker returned"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for n in 2_000..2_040 {
        let (cell, status, _, _) = post(&client, &url, n).await;
        assert_eq!(status, 202);
        outcome.insert(cell, status);
    }

    let bootstrap = broker.bootstrap();
    let records =
        tokio::task::spawn_blocking(move || topic_records_on(&bootstrap, &topic)).await??;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let keyring = payload_keyring();
    for (_, payload) in &records {
        let record = keyring.open(payload)?;
        *seen.entry(record.region.to_string()).or_default() += 1;
    }
    for (cell, status) in &outcome {
        match status {
            202 => assert_eq!(
                seen.get(cell),
                Some(&1),
                "acknowledged record {cell} must be stored exactly once"
            ),
            _ => assert_eq!(
                seen.get(cell),
                None,
                "refused record {cell} must not be stored"
            ),
        }
    }
    drop(broker);
    Ok(())
}
