//! Provisional numbers from the self-check form to the analyst's map:
//! ingest → Kafka → aggregate (one provisional release per sub-window) →
//! the provisional topic → the dashboard, which shows the open window's
//! latest provisional map, marked, in a real browser
//! (`dashboard/web/tests/provisional.mjs`, screenshot
//! `target/test-artifacts/dashboard-provisional.png`), and shows the final
//! release in its place once the window closes.

use hushmap_testkit::{now_ms, wait_until};
use hushmap_tests::{
    Pipeline, PipelineOptions, anonymous_submissions, browser, public_regions_of, submit_all,
};
use std::time::Duration;

const WINDOW_SECS: u32 = 60;
const SUB_WINDOW_SECS: u32 = 10;

async fn get(url: String) -> anyhow::Result<(u16, serde_json::Value)> {
    let r = reqwest::get(url).await?;
    let status = r.status().as_u16();
    let body = if status == 200 {
        r.json().await?
    } else {
        serde_json::Value::Null
    };
    Ok((status, body))
}

fn total(map: &serde_json::Value) -> i64 {
    map["cells"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["n_total"].as_i64())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_open_window_shows_provisional_numbers_until_its_final_release() -> anyhow::Result<()> {
    let subs = anonymous_submissions(19, 300);
    let n = subs.len() as i64;
    let pipeline = Pipeline::start(PipelineOptions {
        window_secs: WINDOW_SECS,
        epsilon_per_window: 1e6,
        public_regions: public_regions_of(&subs),
        provisional_sub_window_secs: Some(SUB_WINDOW_SECS),
        ..PipelineOptions::default()
    })
    .await?;
    let base = pipeline.dashboard_url.clone();
    // Send early in a window, so that the provisional map of that window
    // holds everyone well before it closes.
    let length = i64::from(WINDOW_SECS) * 1000;
    let into = now_ms().rem_euclid(length);
    if !(1_000..25_000).contains(&into) {
        tokio::time::sleep(Duration::from_millis((length - into + 1_000) as u64)).await;
    }
    let window = now_ms().div_euclid(length) * length;
    assert_eq!(submit_all(&pipeline.ingest_url, subs).await, 300);

    // The provisional map: everyone, once, at the coarsest level, all
    // ages, marked, while the window is open.
    let map = wait_until(
        "the provisional map to hold everyone",
        Duration::from_secs(40),
        || {
            let url = format!("{base}/api/v1/provisional");
            async move {
                let (status, map) = get(url).await?;
                Ok(
                    (status == 200 && map["window_start"] == window && total(&map) == n)
                        .then_some(map),
                )
            }
        },
    )
    .await?;
    let meta = &map["meta"]["provisional"];
    assert_eq!(meta["sub_windows"], WINDOW_SECS / SUB_WINDOW_SECS);
    assert!(meta["through_ms"].as_i64().unwrap() <= now_ms());
    assert_eq!(map["level"], 3);
    assert!(
        map["cells"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["age_band"] == "all" && c["level"] == 3)
    );
    assert!(
        map["meta"]["statistic_costs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["statistic"] == "provisional_risk_counts")
    );
    // Nothing final yet for this window: the provisional numbers are not
    // history and are not stored or exported.
    let (status, _) = get(format!("{base}/api/v1/heatmap?window={window}")).await?;
    assert_eq!(status, 404, "no final release of the open window yet");

    let shot = browser::artefact("dashboard-provisional.png")?;
    let args = [base.as_ref(), "open".as_ref(), shot.as_os_str()];
    println!(
        "{}",
        browser::run_page_script("provisional.mjs", &args).await?
    );
    assert!(
        std::fs::metadata(&shot)?.len() > 10_000,
        "screenshot is suspiciously small"
    );

    // The window closes: its final release replaces the provisional map.
    let released = wait_until(
        "the window's final release",
        Duration::from_secs(90),
        || {
            let url = format!("{base}/api/v1/heatmap?window={window}&age_band=all");
            async move {
                let (status, map) = get(url).await?;
                Ok((status == 200).then_some(map))
            }
        },
    )
    .await?;
    assert_eq!(total(&released), n, "the final release counts everyone too");
    let (status, now) = get(format!("{base}/api/v1/provisional")).await?;
    assert!(
        status == 404 || now["window_start"].as_i64() > Some(window),
        "the closed window's provisional numbers are no longer shown"
    );
    let start = window.to_string();
    let args = [base.as_ref(), "final".as_ref(), start.as_ref()];
    println!(
        "{}",
        browser::run_page_script("provisional.mjs", &args).await?
    );
    pipeline.stop().await?;
    Ok(())
}
