//! The dashboard page's browser checks (`dashboard/web/tests/*.mjs`, run
//! by node with playwright-core and Debian's chromium) and where their
//! screenshots are kept.

use std::ffi::OsStr;
use std::path::PathBuf;

/// `target/test-artifacts/<name>`, its directory made.
pub fn artefact(name: &str) -> anyhow::Result<PathBuf> {
    let dir = crate::repo_dir().join("target/test-artifacts");
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join(name))
}

/// Runs `dashboard/web/tests/<script>` with `args`; its standard output
/// when it succeeds, everything it said when it fails.
pub async fn run_page_script(script: &str, args: &[&OsStr]) -> anyhow::Result<String> {
    let web = crate::repo_dir().join("dashboard/web");
    anyhow::ensure!(
        web.join("node_modules/playwright-core").exists(),
        "run `npm ci --prefix dashboard/web` first (deploy/test.sh does)"
    );
    let out = tokio::process::Command::new("node")
        .current_dir(&web)
        .arg(format!("tests/{script}"))
        .args(args)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "browser check {script} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
