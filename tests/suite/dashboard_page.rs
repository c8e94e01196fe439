//! The analyst page in a real browser (Debian's chromium driven by
//! playwright-core, `dashboard/web/tests/dashboard.mjs`): login with a token,
//! the map with country outlines and cells, hover numbers with their 95%
//! interval, suppressed cells hatched, the cell panel, the table view and
//! its CSV. The screenshot is kept at `target/test-artifacts/dashboard.png`.

use hushmap_dashboard::auth::{Role, TokenEntry};
use hushmap_tests::{
    Pipeline, PipelineOptions, anonymous_submissions, browser, public_regions_of, submit_all,
    wait_for_dashboard_total,
};

const TOKEN: &str = "analyst-page-token-5c1d9e7a3b";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn analyst_logs_in_and_reads_the_map_with_its_uncertainty() -> anyhow::Result<()> {
    // Huge ε: a cell is suppressed exactly when it has no submissions, which
    // in the 75+ band is true of many cells and false of some. Anonymous
    // submissions only: each counts once, so all of them show up.
    let subs = anonymous_submissions(5, 800);
    // A public region set (the cells sent to), so that every count shows.
    let public_regions = public_regions_of(&subs);
    let pipeline = Pipeline::start(PipelineOptions {
        epsilon_per_window: 1e6,
        public_regions,
        dashboard_tokens: vec![TokenEntry::for_token(TOKEN, vec![Role::Analyst], "page")],
        ..PipelineOptions::default()
    })
    .await?;
    assert_eq!(submit_all(&pipeline.ingest_url, subs).await, 800);
    // The submissions may straddle a window boundary: show the fullest.
    let window = wait_for_dashboard_total(&pipeline.dashboard_url, Some(TOKEN), 800).await?;

    let shot = browser::artefact("dashboard.png")?;
    let path = format!("/?age_band=75%2B&window={window}");
    let args = [
        pipeline.dashboard_url.as_ref(),
        TOKEN.as_ref(),
        path.as_ref(),
        shot.as_os_str(),
    ];
    println!(
        "{}",
        browser::run_page_script("dashboard.mjs", &args).await?
    );
    assert!(
        std::fs::metadata(&shot)?.len() > 10_000,
        "screenshot is suspiciously small"
    );
    pipeline.stop().await?;
    Ok(())
}
