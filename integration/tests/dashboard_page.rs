//! The analyst page in a real browser (Debian's chromium driven by
//! playwright-core, `dashboard/web/tests/dashboard.mjs`): login with a token,
//! the map with country outlines and cells, hover numbers with their 95%
//! interval, suppressed cells hatched, the cell panel, the table view and
//! its CSV. The screenshot is kept at `target/test-artifacts/dashboard.png`.

use hushmap_dashboard::auth::{Role, TokenEntry};
use hushmap_integration::{
    Pipeline, PipelineOptions, anonymous_submissions, public_regions_of, submit_all,
    wait_for_dashboard_total,
};
use std::path::PathBuf;

const TOKEN: &str = "analyst-page-token-5c1d9e7a3b";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn analyst_logs_in_and_reads_the_map_with_its_uncertainty() -> anyhow::Result<()> {
    let web = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dashboard/web");
    anyhow::ensure!(
        web.join("node_modules/playwright-core").exists(),
        "run `npm ci --prefix dashboard/web` first (deploy/test.sh does)"
    );
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

    let artefacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artefacts)?;
    let shot = artefacts.join("dashboard.png");
    let out = tokio::process::Command::new("node")
        .current_dir(&web)
        .arg("tests/dashboard.mjs")
        .arg(&pipeline.dashboard_url)
        .arg(TOKEN)
        .arg(format!("/?age_band=75%2B&window={window}"))
        .arg(&shot)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "browser test failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        std::fs::metadata(&shot)?.len() > 10_000,
        "screenshot is suspiciously small"
    );
    pipeline.stop().await?;
    Ok(())
}
