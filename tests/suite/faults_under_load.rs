//! Faults under steady load, real processes: the aggregator is killed
//! (`kill -9`) right after a release and again in the middle of a window,
//! and the dashboard is restarted, while submissions keep arriving. At a
//! huge ε every submission that got 202 must be released exactly once, no
//! window may be published twice, and the dashboard must serve after its
//! restart exactly what it served before.
//!
//! The broker outage under load is `ingest/tests/broker_outage.rs` (a
//! private broker, stopped for real); figures of both are in
//! docs/RELIABILITY.md.

use hushmap_schema::Release;
use hushmap_testkit::{committed_records_on, now_ms};
use hushmap_tests::load::{LOAD_AREA, steady_load};
use hushmap_tests::processes::{ServiceSet, ServiceSetOptions};
use hushmap_tests::*;
use std::collections::BTreeMap;
use std::time::Duration;

const WINDOW_SECS: u32 = 10;

/// Every window's heatmap (all ages) as the dashboard serves it.
async fn heatmaps(dashboard: &str) -> anyhow::Result<BTreeMap<i64, serde_json::Value>> {
    let list: serde_json::Value = reqwest::get(format!("{dashboard}/api/v1/releases"))
        .await?
        .json()
        .await?;
    let mut out = BTreeMap::new();
    for release in list["releases"].as_array().into_iter().flatten() {
        let start = release["window_start"].as_i64().unwrap_or_default();
        let heatmap = reqwest::get(format!(
            "{dashboard}/api/v1/heatmap?window={start}&age_band=all"
        ))
        .await?
        .json()
        .await?;
        out.insert(start, heatmap);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crashes_and_restarts_under_load_lose_and_repeat_nothing() -> anyhow::Result<()> {
    let mut services = ServiceSet::start(ServiceSetOptions {
        name: "faults".into(),
        window_secs: WINDOW_SECS,
        log_filter: "info".into(),
        public_bbox: LOAD_AREA,
        sasl: None,
    })
    .await?;
    let load = steady_load(&services.ingest_url, 30.0, Duration::from_secs(50));

    // 1. kill -9 right after the first release.
    wait_until("a first release", Duration::from_secs(40), || async {
        let totals = dashboard_window_totals(&services.dashboard_url, None).await?;
        Ok((!totals.is_empty()).then_some(()))
    })
    .await?;
    services.aggregate.kill9();
    // A deliberate outage of 1 s under load, not a wait for a condition.
    tokio::time::sleep(Duration::from_secs(1)).await;
    services.aggregate.start()?;

    // 2. kill -9 in the middle of a window, with its records buffered.
    let into_window = now_ms().rem_euclid(i64::from(WINDOW_SECS) * 1000);
    let to_middle = (5_000 - into_window).rem_euclid(i64::from(WINDOW_SECS) * 1000);
    // Real time by design: to the middle of the window.
    tokio::time::sleep(Duration::from_millis(to_middle as u64)).await;
    services.aggregate.kill9();
    // A deliberate outage of 2 s under load, not a wait for a condition.
    tokio::time::sleep(Duration::from_secs(2)).await;
    services.aggregate.start()?;

    // 3. Restart the dashboard mid-stream; what it served, it serves again.
    let before = heatmaps(&services.dashboard_url).await?;
    assert!(!before.is_empty());
    assert!(services.dashboard.terminate(Duration::from_secs(20)));
    services.dashboard.start()?;
    services.wait_healthy().await?;
    let after = heatmaps(&services.dashboard_url).await?;
    for (window, heatmap) in &before {
        assert_eq!(after.get(window), Some(heatmap), "window {window} changed");
    }

    let load = load.await?;
    assert_eq!(
        (load.accepted, load.unavailable, load.other),
        (load.sent, 0, 0),
        "ingest does not depend on the aggregator"
    );

    // Every 202 released exactly once.
    let released = released_total_reaching(&services.dashboard_url, load.accepted).await?;
    assert_eq!(released, load.accepted as i64, "lost or double-counted");

    // No window published twice on the topic (a second, freshly noised
    // copy would be an averaging attack).
    let topic = services.releases_topic.clone();
    let records =
        tokio::task::spawn_blocking(move || committed_records_on(&brokers(), &topic)).await??;
    let mut per_window: BTreeMap<i64, usize> = BTreeMap::new();
    for (_, payload) in &records {
        *per_window
            .entry(Release::from_ipc(payload)?.meta.window_start)
            .or_default() += 1;
    }
    assert!(
        per_window.values().all(|&n| n == 1),
        "a window was released twice: {per_window:?}"
    );
    let stats = reqwest::get(&services.aggregate_metrics_url)
        .await?
        .text()
        .await?;
    eprintln!(
        "faults under load: {} sent, {} accepted, {released} released over {} windows, \
         2 aggregator kills, 1 dashboard restart; restarted aggregator's {}",
        load.sent,
        load.accepted,
        per_window.len(),
        stats
            .lines()
            .filter(|l| l.starts_with("hushmap_aggregate_records_accepted")
                || l.starts_with("hushmap_aggregate_records_late")
                || l.starts_with("hushmap_aggregate_records_invalid"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for p in services.all_mut() {
        assert!(
            p.terminate(Duration::from_secs(20)),
            "{} did not stop",
            p.name
        );
    }
    let _ = std::fs::remove_dir_all(&services.run_dir);
    Ok(())
}
