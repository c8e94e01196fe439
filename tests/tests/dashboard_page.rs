//! The analyst page in a real browser (headless Chromium): it loads the
//! latest release from the API, draws cells, and marks suppressed ones.
//!
//! Chromium is found as `HUSHMAP_CHROMIUM` or `chromium` on the PATH
//! (`deploy/test.sh` installs Debian's package). The screenshot is kept at
//! `target/test-artifacts/dashboard.png`.

use futures::stream::{self, StreamExt};
use hushmap_tests::{Pipeline, PipelineOptions, eventually, region_of};
use hushmap_traffic::{SubmissionGenerator, TrafficProfile};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn chromium() -> String {
    std::env::var("HUSHMAP_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Runs headless Chromium on `url` with `extra` arguments; returns stdout.
fn headless(url: &str, extra: &[&str]) -> anyhow::Result<String> {
    let profile = tempdir()?;
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,800",
            // Let the page's fetches and drawing finish before output.
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run {} ({e}); install Debian's chromium or set HUSHMAP_CHROMIUM",
                chromium()
            )
        })?;
    let _ = std::fs::remove_dir_all(&profile);
    anyhow::ensure!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// The start of the window with the most submissions, once the dashboard's
/// releases together account for all 800 (`None` until then).
async fn dashboard_totals(client: &reqwest::Client, base: &str) -> anyhow::Result<Option<i64>> {
    let list: serde_json::Value = client
        .get(format!("{base}/api/v1/releases"))
        .send()
        .await?
        .json()
        .await?;
    let mut fullest = None;
    let mut sum = 0;
    for release in list["releases"].as_array().into_iter().flatten() {
        let start = release["window_start"].as_i64().unwrap_or_default();
        let heatmap: serde_json::Value = client
            .get(format!("{base}/api/v1/heatmap?window={start}&age_band=all"))
            .send()
            .await?
            .json()
            .await?;
        let total: i64 = heatmap["cells"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["n_total"].as_i64())
            .sum();
        sum += total;
        if fullest.is_none_or(|(_, best)| total > best) {
            fullest = Some((start, total));
        }
    }
    Ok(fullest.filter(|_| sum >= 800).map(|(start, _)| start))
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(hushmap_tests::unique("hushmap-chromium"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn page_draws_cells_and_marks_suppressed_ones() -> anyhow::Result<()> {
    // Huge ε: a cell is suppressed exactly when it has no submissions, which
    // in the 75+ band is true of many cells and false of some.
    // Anonymous submissions only: each counts once, so all 800 show up.
    let mut generator = SubmissionGenerator::with_profile(
        5,
        TrafficProfile {
            signed_up_share: 0.0,
            ..TrafficProfile::default()
        },
    );
    let subs: Vec<_> = (0..800).map(|_| generator.next_submission()).collect();
    // A public region set (the cells sent to), so that no region is held
    // back by the selection threshold and every count shows.
    let public_regions = subs
        .iter()
        .map(region_of)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let pipeline = Pipeline::start(PipelineOptions {
        epsilon_per_window: 1e6,
        public_regions,
        ..PipelineOptions::default()
    })
    .await?;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/submissions", pipeline.ingest_url);
    let accepted = stream::iter(subs)
        .map(|s| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                client
                    .post(url)
                    .json(&s)
                    .send()
                    .await
                    .map(|r| r.status().as_u16() == 202)
                    .unwrap_or(false)
            }
        })
        .buffer_unordered(16)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    assert_eq!(accepted, 800);
    let stats = pipeline.aggregator_stats.clone();
    eventually("a release", Duration::from_secs(60), || {
        let stats = stats.clone();
        async move { Ok((stats.windows_released.load(Ordering::Relaxed) > 0).then_some(())) }
    })
    .await?;
    // The 800 submissions may straddle a window boundary, and the first
    // window to close can hold only a handful of them: wait until every
    // accepted submission is in a release (huge ε, so counts are exact) and
    // show the fullest window, not merely the latest.
    let window = eventually(
        "the dashboard to hold all 800 submissions",
        Duration::from_secs(60),
        || dashboard_totals(&client, &pipeline.dashboard_url),
    )
    .await?;

    let page = format!("{}/?age_band=75%2B&window={window}", pipeline.dashboard_url);
    let dom = headless(&page, &["--dump-dom"])?;
    let drawn = dom.matches("<polygon").count();
    let suppressed = dom.matches("class=\"cell suppressed\"").count();
    let with_value = dom.matches("class=\"cell\"").count();
    assert!(drawn > 0, "no cells drawn; page was:\n{dom}");
    assert_eq!(drawn, suppressed + with_value);
    assert!(suppressed > 0, "no suppressed cell marked");
    assert!(with_value > 0, "no cell with a value");
    assert!(dom.contains("suppressed."), "status line missing: {dom}");

    let artefacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artefacts)?;
    let shot = artefacts.join("dashboard.png");
    headless(&page, &[&format!("--screenshot={}", shot.display())])?;
    assert!(
        std::fs::metadata(&shot)?.len() > 10_000,
        "screenshot is suspiciously small"
    );
    pipeline.stop().await?;
    Ok(())
}
