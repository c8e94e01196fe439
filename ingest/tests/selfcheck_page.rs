//! The self-check form in a real browser (Debian's chromium driven by
//! playwright-core, see `tests/browser/selfcheck.mjs`): a person fills it in
//! and gets their risk level; the location leaves the browser coarsened.
//! The screenshot is kept at `target/test-artifacts/selfcheck.png`.

mod common;

use common::start_ingest;
use std::path::PathBuf;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_fills_in_the_form_and_gets_advice() -> anyhow::Result<()> {
    let ingest = start_ingest(|_| {}).await?;
    let url = ingest.url.clone();

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    anyhow::ensure!(
        dir.join("node_modules/playwright-core").exists(),
        "run `npm ci --prefix ingest/tests/browser` first (deploy/test.sh does)"
    );
    let artefacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artefacts)?;
    let shot = artefacts.join("selfcheck.png");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(&dir)
            .arg("selfcheck.mjs")
            .arg(&url)
            .arg(&shot)
            .output()
    })
    .await??;
    assert!(
        out.status.success(),
        "browser test failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
