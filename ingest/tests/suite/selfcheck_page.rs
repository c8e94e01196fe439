//! The self-check form in a real browser (Debian's chromium driven by
//! playwright-core, see `tests/browser/selfcheck.mjs`): a person fills it in
//! and gets their risk level; the location leaves the browser coarsened;
//! checking again sends the browser's contributor token back; signing in
//! through the development identity provider sends an ID token instead.
//! The screenshot is kept at `target/test-artifacts/selfcheck.png`.
//!
//! Then the page in English, Hindi and Marathi (`tests/browser/languages.mjs`):
//! chosen by the browser's language and by the visible switch, filled in
//! with the keyboard alone, answered in its language, and checked by
//! axe-core with no serious WCAG 2.1 A/AA violation. Screenshots:
//! `target/test-artifacts/selfcheck-{en,hi,mr}.png`.

use crate::common;

use common::{start_ingest, trust_test_idp};
use hushmap_dev_idp::{DevIdp, DevSigner};
use hushmap_testkit::idp::{TEST_AUDIENCE, TEST_ISSUER, TestIdp};
use std::path::PathBuf;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_fills_in_the_form_and_gets_advice() -> anyhow::Result<()> {
    let idp_addr = std::net::SocketAddr::from(([127, 0, 0, 1], hushmap_testkit::free_port()));
    let ingest = start_ingest(|c| {
        trust_test_idp(c);
        // What production asks of anonymous browsers (off in dev mode).
        c.proof_of_work.difficulty_bits = Some(15);
        c.identity.sign_in_url = Some(format!("http://{idp_addr}/"));
    })
    .await?;
    let url = ingest.url.clone();
    let signer = DevSigner::load(
        &TestIdp::ed25519().private_key_file(),
        TEST_ISSUER,
        TEST_AUDIENCE,
        600,
    )?;
    let (stop_idp, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        DevIdp::new(signer, &format!("{url}/")).serve(idp_addr, async move {
            let _ = stopped.await;
        }),
    );

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
    let _ = stop_idp.send(());
    assert!(
        out.status.success(),
        "browser test failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_speaks_english_hindi_and_marathi_to_keyboard_users() -> anyhow::Result<()> {
    let ingest = start_ingest(|_| {}).await?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    anyhow::ensure!(
        dir.join("node_modules/axe-core").exists(),
        "run `npm ci --prefix ingest/tests/browser` first (deploy/test.sh does)"
    );
    let artefacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artefacts)?;
    let url = ingest.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(&dir)
            .arg("languages.mjs")
            .arg(&url)
            .arg(&artefacts)
            .output()
    })
    .await??;
    assert!(
        out.status.success(),
        "browser test failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}
