//! The dashboard over a history longer than it holds in memory: with
//! `cached_windows = 2` and twelve stored windows, every JSON answer about
//! an older window (its heatmap, its table, its alerts, a cell's series
//! across all twelve) is read back from the Parquet files and says exactly
//! what was stored, over real HTTP, after a restart on the same store.

use hushmap_dashboard::store::ReleaseStore;
use hushmap_schema::release::{CellLabel, ReleaseRow};
use hushmap_schema::{AgeBand, Release};
use hushmap_tests::StandaloneDashboard;
use serde_json::Value;

const HOUR: i64 = 3_600_000;
const FIRST: i64 = 1_767_225_600_000; // 2026-01-01T00:00Z, testkit's hourly_release
const WINDOWS: i64 = 12;

fn regions() -> Vec<String> {
    [(40.0, -3.0), (41.0, -3.0), (42.0, -3.0)]
        .iter()
        .map(|&(lat, lng)| {
            h3o::LatLng::new(lat, lng)
                .unwrap()
                .to_cell(h3o::Resolution::Five)
                .to_string()
        })
        .collect()
}

/// The high-risk count stored for (window k, region r, band b): each
/// window tells itself apart.
fn high(k: i64, r: usize, b: usize) -> i64 {
    100 * k + 10 * r as i64 + b as i64
}

fn release(k: i64) -> Release {
    let window_start = FIRST + k * HOUR;
    let window_end = window_start + HOUR;
    let mut rows = Vec::new();
    for (r, region) in regions().into_iter().enumerate() {
        for (b, band) in AgeBand::ALL.iter().enumerate() {
            rows.push(ReleaseRow::from_noisy_counts(
                CellLabel {
                    window_start,
                    window_end,
                    level: 5,
                    region: region.clone(),
                    age_band: band.label().into(),
                },
                [400, 200, high(k, r, b)],
                [7; 10],
                2.0,
                0.2,
            ));
        }
    }
    hushmap_testkit::hourly_release(k, rows)
}

async fn get(base: &str, path: &str) -> anyhow::Result<Value> {
    let r = reqwest::get(format!("{base}{path}")).await?;
    anyhow::ensure!(r.status() == 200, "{path}: {}", r.status());
    Ok(r.json().await?)
}

fn file_reads(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("hushmap_dashboard_release_file_reads_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the file-reads counter")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_about_old_windows_come_from_the_files_and_say_what_was_stored()
-> anyhow::Result<()> {
    let data_dir = std::env::temp_dir().join(hushmap_tests::unique("hushmap-history"));
    {
        let mut store = ReleaseStore::open(&data_dir)?;
        for k in 0..WINDOWS {
            assert!(store.insert(release(k))?);
        }
    }
    let dir = data_dir.clone();
    let dashboard = StandaloneDashboard::start(move |c| {
        c.data_dir = dir;
        c.cached_windows = 2;
    })
    .await?;
    let base = format!("http://{}", dashboard.http);
    let metrics = || async {
        let r = reqwest::get(format!("{base}/metrics")).await?;
        anyhow::Ok(file_reads(&r.text().await?))
    };

    // The list needs no rows: every window, with its cell count.
    let listed = get(&base, "/api/v1/releases").await?;
    let listed = listed["releases"].as_array().unwrap().clone();
    assert_eq!(listed.len(), WINDOWS as usize);
    assert!(listed.iter().all(|r| r["cells"] == 18), "{listed:?}");
    assert_eq!(metrics().await?, 0, "the list read no rows");

    let regions = regions();
    // A cell's series spans all twelve windows, all ages summed.
    let cell = get(&base, &format!("/api/v1/cell?region={}", regions[1])).await?;
    let series = cell["series"].as_array().unwrap();
    assert_eq!(series.len(), WINDOWS as usize, "{cell}");
    for (k, point) in series.iter().enumerate() {
        let k = k as i64;
        assert_eq!(point["window_start"], FIRST + k * HOUR);
        let expected: i64 = (0..AgeBand::ALL.len()).map(|b| high(k, 1, b)).sum();
        assert_eq!(point["n_high"], expected, "window {k}");
    }
    assert_eq!(cell["bands"].as_array().unwrap().len(), AgeBand::ALL.len());

    // Old windows, one by one: each read from its file, each exact.
    let before = metrics().await?;
    for k in [0, 3, 7] {
        let start = FIRST + k * HOUR;
        let map = get(
            &base,
            &format!("/api/v1/heatmap?window={start}&age_band=all"),
        )
        .await?;
        assert_eq!(map["window_start"], start);
        let cells = map["cells"].as_array().unwrap();
        assert_eq!(cells.len(), regions.len());
        for cell in cells {
            let r = regions.iter().position(|x| cell["region"] == **x).unwrap();
            let expected: i64 = (0..AgeBand::ALL.len()).map(|b| high(k, r, b)).sum();
            assert_eq!(cell["n_high"], expected, "window {k} region {r}");
        }
        let table = get(&base, &format!("/api/v1/table?window={start}")).await?;
        assert_eq!(table["rows"].as_array().unwrap().len(), 18);
    }
    assert!(
        metrics().await? >= before + 3,
        "old windows were read from their files"
    );
    let alerts = get(
        &base,
        &format!("/api/v1/alerts?window={}", FIRST + 5 * HOUR),
    )
    .await?;
    assert_eq!(alerts["baseline_windows"].as_array().unwrap().len(), 3);

    // A long baseline reads its windows once, without pushing the newest
    // out of memory.
    get(&base, "/api/v1/heatmap").await?;
    let before = metrics().await?;
    let alerts = get(&base, "/api/v1/alerts?baseline=10").await?;
    assert_eq!(alerts["baseline_windows"].as_array().unwrap().len(), 10);
    let after_alerts = metrics().await?;
    assert!(after_alerts >= before + 9, "{before} → {after_alerts}");
    get(&base, "/api/v1/heatmap").await?;
    assert_eq!(
        metrics().await?,
        after_alerts,
        "the newest stayed in memory"
    );

    // A missing window is a 404, not an error.
    let r = reqwest::get(format!("{base}/api/v1/heatmap?window=5")).await?;
    assert_eq!(r.status(), 404);
    drop(dashboard);

    // A file that went bad after the index was built is a clear 500, and
    // the other windows still answer.
    let dir = data_dir.clone();
    let dashboard = StandaloneDashboard::start(move |c| {
        c.data_dir = dir;
        c.cached_windows = 1;
    })
    .await?;
    let base = format!("http://{}", dashboard.http);
    let day = data_dir.join("releases/day=2026-01-01");
    std::fs::write(
        day.join(format!("window_start={FIRST}.parquet")),
        b"PAR1junk",
    )?;
    let r = reqwest::get(format!("{base}/api/v1/heatmap?window={FIRST}")).await?;
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await?;
    assert_eq!(body["code"], "store_unreadable");
    get(&base, &format!("/api/v1/heatmap?window={}", FIRST + HOUR)).await?;
    get(&base, "/api/v1/heatmap").await?;
    drop(dashboard);
    std::fs::remove_dir_all(&data_dir)?;
    Ok(())
}
