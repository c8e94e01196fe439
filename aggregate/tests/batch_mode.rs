//! `hushmap-aggregate batch`, the real binary: NDJSON of submissions and
//! Parquet of coarse records, every output format, bad lines reported and
//! skipped, contributors bounded per window, and at huge ε the true counts.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, UInt8Type};
use hushmap_aggregate::batch::write_coarse_parquet;
use hushmap_ingest::coarsen::Coarsener;
use hushmap_ingest::validate::{ValidationRules, validate};
use hushmap_schema::region::RegionResolution;
use hushmap_schema::{CoarseRecord, Release, WindowLength};
use hushmap_traffic::{SubmissionGenerator, TrafficProfile};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

const DAY_MS: i64 = 24 * 3600 * 1000;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

/// (window start, region, age band) → [low, moderate, high].
type Counts = BTreeMap<(i64, String, String), [i64; 3]>;

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

struct Fixture {
    dir: PathBuf,
    ndjson: PathBuf,
    /// What the good lines coarsen to (ingest's code, run here).
    records: Vec<CoarseRecord>,
    config: PathBuf,
}

/// 3,000 generated submissions over three daily windows, a signed-up user
/// who submits three times in one window, and six bad lines.
fn fixture(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("hushmap-batch-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut generator = SubmissionGenerator::with_profile(
        7,
        TrafficProfile {
            signed_up_share: 0.0,
            ..TrafficProfile::default()
        },
    );
    let mut subs = Vec::new();
    for i in 0..3000i64 {
        let mut s = generator.next_submission();
        s.observed_at = Some(rfc3339(T0 + (i % 3) * DAY_MS + i * 1000));
        subs.push(s);
    }
    for k in 0..3 {
        let mut s = subs[k].clone();
        s.profile = Some("repeat-visitor".into());
        s.observed_at = Some(rfc3339(T0 + 3_600_000 * (k as i64 + 1)));
        subs.push(s);
    }
    let mut lines: Vec<String> = subs
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect();
    let mut no_time = subs[5].clone();
    no_time.observed_at = None;
    let mut too_old = serde_json::to_value(&subs[6]).unwrap();
    too_old["age"] = 200.into();
    let mut extra = serde_json::to_value(&subs[7]).unwrap();
    extra["ip"] = "10.0.0.1".into();
    lines.extend([
        "{not json".to_string(),
        serde_json::to_string(&no_time).unwrap(),
        too_old.to_string(),
        extra.to_string(),
        "[]".to_string(),
        format!(
            "{{\"for\":\"self\",\"age\":30,\"gender\":\"female\",\"symptoms\":[],\"conditions\":[],\
             \"travelled_internationally_14d\":false,\"contact_with_confirmed_case\":false,\
             \"location\":{{\"lat\":1.0,\"lon\":1.0}},\"observed_at\":\"{}\"}}",
            rfc3339(T0 + 400 * DAY_MS + 60_000 * 60 * 24 * 365 * 50)
        ),
        String::new(),
    ]);
    let ndjson = dir.join("submissions.ndjson");
    std::fs::write(&ndjson, lines.join("\n")).unwrap();

    let rules = ValidationRules {
        resolution: RegionResolution::new(5).unwrap(),
        window: WindowLength::ONE_DAY,
        allowed_lateness_ms: 600_000,
    };
    let coarsener = Coarsener::new(b"test", WindowLength::ONE_DAY);
    let records: Vec<CoarseRecord> = subs
        .into_iter()
        .map(|s| {
            let t = time::OffsetDateTime::parse(
                s.observed_at.as_deref().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            let now = (t.unix_timestamp_nanos() / 1_000_000) as i64;
            coarsener.coarsen(validate(s, &rules, now).unwrap()).1
        })
        .collect();
    // Huge ε and budget, and every region sent to as a public set (no
    // threshold), so the output must be the exact bounded counts.
    let regions: BTreeSet<String> = records.iter().map(|r| r.region.to_string()).collect();
    let config = dir.join("batch.toml");
    std::fs::write(
        &config,
        format!(
            "[privacy]\nmax_epsilon_per_day = 1e9\nmax_epsilon_per_horizon = 1e9\npublic_regions = {:?}\n",
            regions.into_iter().collect::<Vec<_>>()
        ),
    )
    .unwrap();
    Fixture {
        dir,
        ndjson,
        records,
        config,
    }
}

/// The true counts after bounding: each contributor's latest record per window.
fn expected(records: &[CoarseRecord]) -> Counts {
    let mut latest: HashMap<(i64, [u8; 16]), &CoarseRecord> = HashMap::new();
    for r in records {
        latest.insert((r.window.start_ms, r.contributor.0), r);
    }
    let mut out = Counts::new();
    for r in latest.values() {
        out.entry((
            r.window.start_ms,
            r.region.to_string(),
            r.age_band.label().to_string(),
        ))
        .or_insert([0; 3])[r.risk.code() as usize] += 1;
    }
    out
}

fn run_batch(f: &Fixture, input: &Path, out: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_hushmap-aggregate"))
        .args(["--config", f.config.to_str().unwrap(), "batch", "--input"])
        .arg(input)
        .args(["--epsilon", "1e6", "--out"])
        .arg(out)
        .env("HUSHMAP_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "batch failed:\n{stderr}");
    stderr
}

/// Release-resolution counts of a set of releases (positive ones only).
fn counts_of(releases: &[Release]) -> Counts {
    let mut out = Counts::new();
    for r in releases {
        let finest = r.rows.iter().map(|x| x.level).max();
        for row in r.rows.iter().filter(|x| Some(x.level) == finest) {
            if row.n_total > 0 {
                out.insert(
                    (row.window_start, row.region.clone(), row.age_band.clone()),
                    [row.n_low, row.n_moderate, row.n_high],
                );
            }
        }
    }
    out
}

#[test]
fn ndjson_batch_releases_the_bounded_true_counts_and_reports_bad_lines() {
    let f = fixture("ndjson");
    let out = f.dir.join("out.json");
    let stderr = run_batch(&f, &f.ndjson, &out);

    // Six bad lines, each named by line number, code and field; no content.
    assert!(
        stderr.contains("3009 records: 3003 accepted, 6 refused"),
        "{stderr}"
    );
    for needle in [
        "line 3004: malformed_json",
        "line 3005: invalid_value (observed_at): observed_at is required in batch mode",
        "line 3006: invalid_value (age)",
        "line 3007: unknown_field (ip)",
        "line 3008: malformed_json",
        "line 3009: invalid_value (observed_at)",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("10.0.0.1"), "a refused value was echoed");

    let releases: Vec<Release> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(releases.len(), 3, "three daily windows");
    let want = expected(&f.records);
    // The repeat visitor counts once: 3,000 + 1.
    assert_eq!(want.values().flatten().sum::<i64>(), 3001);
    assert_eq!(counts_of(&releases), want);
    for r in &releases {
        assert!(r.meta.epsilon <= 1e6 && r.meta.rho.is_some());
        assert_eq!(
            r.meta.statistic_costs.len(),
            6,
            "risk and symptoms × 3 levels"
        );
    }
    std::fs::remove_dir_all(&f.dir).ok();
}

#[test]
fn parquet_batch_gives_the_same_counts_in_arrow_and_parquet() {
    let f = fixture("parquet");
    let input = f.dir.join("records.parquet");
    write_coarse_parquet(&input, &f.records).unwrap();
    let want = expected(&f.records);

    let arrow_out = f.dir.join("out.arrow");
    let stderr = run_batch(&f, &input, &arrow_out);
    assert!(
        stderr.contains("3003 records: 3003 accepted, 0 refused"),
        "{stderr}"
    );
    let file = std::fs::File::open(&arrow_out).unwrap();
    let reader = arrow::ipc::reader::FileReader::try_new(file, None).unwrap();
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    assert_eq!(
        schema
            .metadata()
            .get("hushmap.mechanism")
            .map(String::as_str),
        Some("discrete_gaussian")
    );
    assert_eq!(
        schema.metadata()["hushmap.ledger_entry"].split(',').count(),
        3
    );
    let release =
        Release::from_record_batch(&arrow::compute::concat_batches(&schema, &batches).unwrap())
            .unwrap();
    assert_eq!(counts_of_rows(&release), want);

    let parquet_out = f.dir.join("out.parquet");
    run_batch(&f, &input, &parquet_out);
    let file = std::fs::File::open(&parquet_out).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut n_total = 0;
    for batch in reader {
        let batch = batch.unwrap();
        let level = batch
            .column_by_name("level")
            .unwrap()
            .as_primitive::<UInt8Type>();
        let total = batch
            .column_by_name("n_total")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            if level.value(i) == 5 {
                n_total += total.value(i);
            }
        }
    }
    assert_eq!(n_total, 3001);
    std::fs::remove_dir_all(&f.dir).ok();
}

fn counts_of_rows(release: &Release) -> Counts {
    // Rows of several windows in one file: split them back by window.
    let mut by_window: BTreeMap<i64, Release> = BTreeMap::new();
    for row in &release.rows {
        by_window
            .entry(row.window_start)
            .or_insert_with(|| Release {
                meta: release.meta.clone(),
                rows: Vec::new(),
            })
            .rows
            .push(row.clone());
    }
    counts_of(&by_window.into_values().collect::<Vec<_>>())
}

#[test]
fn a_bad_output_path_is_refused_before_reading() {
    let output = Command::new(env!("CARGO_BIN_EXE_hushmap-aggregate"))
        .args([
            "batch",
            "--input",
            "/nonexistent.ndjson",
            "--epsilon",
            "1",
            "--out",
            "/tmp/x.csv",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown output format"), "{stderr}");
}
