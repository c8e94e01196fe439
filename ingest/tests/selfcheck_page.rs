//! The self-check form in a real browser (Debian's chromium driven by
//! playwright-core, see `tests/browser/selfcheck.mjs`): a person fills it in
//! and gets their risk level; the location leaves the browser coarsened.
//! The screenshot is kept at `target/test-artifacts/selfcheck.png`.

use hushmap_ingest::{IngestConfig, IngestServer};
use hushmap_testkit::{brokers, create_topics, unique};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_fills_in_the_form_and_gets_advice() -> anyhow::Result<()> {
    let topic = unique("test.ingest.page");
    create_topics(&[(&topic, 1)]).await?;
    let mut c = IngestConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        dev_mode: true,
        ..IngestConfig::default()
    };
    c.kafka.brokers = brokers();
    c.kafka.topic = topic;
    let server = IngestServer::bind(c).await?;
    let url = format!("http://{}", server.local_addr());
    tokio::spawn(server.serve(std::future::pending()));

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
