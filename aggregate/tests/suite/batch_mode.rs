//! `hushmap-aggregate batch`, the real binary: NDJSON of submissions and
//! Parquet of coarse records, every output format, bad lines reported and
//! skipped, contributors bounded per window, and at huge ε the true counts.
//! Which windows are released is the `--from`/`--to` range, never the
//! data; the ledger file refuses a second run over the same windows. With
//! `--cluster`, a Ballista cluster (deploy/ballista) counts the same.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, UInt8Type};
use hushmap_aggregate::batch::write_coarse_parquet;
use hushmap_schema::region::RegionResolution;
use hushmap_schema::{CoarseRecord, ContributorKey, Release, WindowLength};
use hushmap_submission::coarsen::Coarsener;
use hushmap_submission::validate::{ValidationRules, validate};
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

/// The fixture's three daily windows.
const DAYS: (&str, &str) = ("2026-01-01", "2026-01-04");

impl Fixture {
    /// [`batch`] with the fixture's configuration.
    fn batch(
        &self,
        input: &Path,
        out: &Path,
        range: (&str, &str),
        extra: &[&str],
    ) -> (bool, String) {
        batch(&self.config, input, out, range, extra)
    }

    /// The fixture's configuration with a `[batch]` section of
    /// `settings`, written as `name`.
    fn config_with_batch(&self, name: &str, settings: &str) -> PathBuf {
        let config = self.dir.join(name);
        std::fs::write(
            &config,
            format!(
                "{}\n[batch]\n{settings}\n",
                std::fs::read_to_string(&self.config).unwrap()
            ),
        )
        .unwrap();
        config
    }
}

/// The number of passes a run reported after `prefix` on its stderr.
fn passes_reported(stderr: &str, prefix: &str) -> usize {
    stderr
        .split(prefix)
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no passes reported after {prefix:?} in:\n{stderr}"))
}

/// 3,000 generated submissions over three daily windows, a signed-up user
/// who submits three times in one window, and six bad lines.
fn fixture(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("hushmap-batch-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut generator = SubmissionGenerator::with_profile(7, TrafficProfile::default());
    let mut subs = Vec::new();
    for i in 0..3000i64 {
        let mut s = generator.next_submission();
        s.observed_at = Some(rfc3339(T0 + (i % 3) * DAY_MS + i * 1000));
        subs.push(s);
    }
    // One person, three checks on the first day: `contributor` names them.
    let repeats = 3;
    for k in 0..repeats {
        let mut s = subs[k].clone();
        s.observed_at = Some(rfc3339(T0 + 3_600_000 * (k as i64 + 1)));
        subs.push(s);
    }
    let mut lines: Vec<String> = subs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut v = serde_json::to_value(s).unwrap();
            let who = if i >= 3000 {
                "repeat-visitor".to_string()
            } else {
                format!("person-{i}")
            };
            v["contributor"] = who.into();
            v.to_string()
        })
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
        .enumerate()
        .map(|(i, s)| {
            let t = time::OffsetDateTime::parse(
                s.observed_at.as_deref().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            let now = (t.unix_timestamp_nanos() / 1_000_000) as i64;
            let who = if i >= 3000 { 1 << 20 } else { i as u128 };
            coarsener
                .coarsen(
                    validate(s, &rules, now).unwrap(),
                    ContributorKey(who.to_le_bytes()),
                )
                .1
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

/// Runs the binary's batch over `[from, to)` with `extra` arguments;
/// (success, stderr).
fn batch(
    config: &Path,
    input: &Path,
    out: &Path,
    range: (&str, &str),
    extra: &[&str],
) -> (bool, String) {
    batch_with_env(config, input, out, range, extra, &[])
}

/// [`batch`] with these environment variables.
fn batch_with_env(
    config: &Path,
    input: &Path,
    out: &Path,
    (from, to): (&str, &str),
    extra: &[&str],
    env: &[(&str, &Path)],
) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hushmap-aggregate"))
        .envs(env.iter().copied())
        .args(["--config", config.to_str().unwrap(), "batch", "--input"])
        .arg(input)
        .args(["--from", from, "--to", to, "--epsilon", "1e6", "--out"])
        .arg(out)
        .args(extra)
        .env("HUSHMAP_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    (output.status.success(), stderr)
}

/// The fixture's three days, each run with a ledger of its own.
fn run_batch(f: &Fixture, input: &Path, out: &Path) -> String {
    let ledger = PathBuf::from(format!("{}.ledger", out.display()));
    let (ok, stderr) = f.batch(input, out, DAYS, &["--ledger", ledger.to_str().unwrap()]);
    assert!(ok, "batch failed:\n{stderr}");
    stderr
}

/// `n` copies of `records`, each copy with contributors of its own.
fn copies(records: &[CoarseRecord], n: u128) -> Vec<CoarseRecord> {
    let mut out = Vec::with_capacity(records.len() * n as usize);
    for copy in 0..n {
        out.extend(records.iter().map(|r| {
            let who = u128::from_le_bytes(r.contributor.0);
            CoarseRecord {
                contributor: ContributorKey((who + (copy << 32)).to_le_bytes()),
                ..*r
            }
        }));
    }
    out
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
    assert!(stderr.contains("0 earlier releases on record"), "{stderr}");
    assert!(!stderr.contains("name no contributor"), "{stderr}");
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
            9,
            "risk, all-ages risk and symptoms × 3 levels"
        );
    }
    std::fs::remove_dir_all(&f.dir).ok();
}

#[test]
fn the_measurements_behind_a_batch_run_are_written_beside_it() {
    let f = fixture("measured");
    let (out, measured) = (f.dir.join("out.json"), f.dir.join("measured.json"));
    let ledger = f.dir.join("measured.ledger");
    let (ok, stderr) = f.batch(
        &f.ndjson,
        &out,
        DAYS,
        &[
            "--ledger",
            ledger.to_str().unwrap(),
            "--measured-out",
            measured.to_str().unwrap(),
        ],
    );
    assert!(ok, "batch failed:\n{stderr}");
    assert!(
        stderr.contains("the measurements behind them (3 windows)"),
        "{stderr}"
    );
    let releases: Vec<Release> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let measurements: Vec<Release> =
        serde_json::from_slice(&std::fs::read(&measured).unwrap()).unwrap();
    assert_eq!(measurements.len(), releases.len());
    for (r, m) in releases.iter().zip(&measurements) {
        assert_eq!(
            m.meta.estimates,
            hushmap_schema::release::Estimates::Measured
        );
        assert_eq!(
            r.meta.estimates,
            hushmap_schema::release::Estimates::Consistent
        );
        // The same release, paid for once: one ledger entry each.
        assert_eq!(m.meta.ledger_entry, r.meta.ledger_entry);
    }
    // At a huge ε the measurements are the true counts, as the releases are.
    assert_eq!(counts_of(&measurements), counts_of(&releases));
    let ledger_lines = std::fs::read_to_string(&ledger).unwrap().lines().count();
    assert_eq!(ledger_lines, 3, "three windows charged, once each");

    // The same file for both is refused before anything is read or spent.
    let (ok, stderr) = f.batch(
        &f.ndjson,
        &out,
        ("2026-01-04", "2026-01-05"),
        &["--fresh-ledger", "--measured-out", out.to_str().unwrap()],
    );
    assert!(
        !ok && stderr.contains("--measured-out must differ from --out"),
        "{stderr}"
    );
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

/// One submission on day 1 (`D`), or that one and another on day 2
/// (`D'`): the same windows are released for both, every day of the range,
/// the empty ones included.
#[test]
fn the_windows_released_are_the_range_not_the_data() {
    let f = fixture("schedule");
    let lines: Vec<String> = std::fs::read_to_string(&f.ndjson)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let day = |d: i64| {
        let mut v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        v["observed_at"] = rfc3339(T0 + d * DAY_MS + 3_600_000).into();
        v.to_string()
    };
    let d = f.dir.join("d.ndjson");
    let d_prime = f.dir.join("d_prime.ndjson");
    std::fs::write(&d, day(0)).unwrap();
    std::fs::write(&d_prime, format!("{}\n{}", day(0), day(1))).unwrap();
    // A threshold selection (no public set): who is where decides nothing.
    let config = f.dir.join("threshold.toml");
    std::fs::write(
        &config,
        "[privacy]\nmax_epsilon_per_day = 1e9\nmax_epsilon_per_horizon = 1e9\n",
    )
    .unwrap();
    let mut windows = Vec::new();
    for (name, input) in [("d", &d), ("d_prime", &d_prime)] {
        let out = f.dir.join(format!("{name}.json"));
        let ledger = f.dir.join(format!("{name}.ledger"));
        let (ok, stderr) = batch(
            &config,
            input,
            &out,
            ("2026-01-01", "2026-01-06"),
            &["--ledger", ledger.to_str().unwrap()],
        );
        assert!(ok, "{stderr}");
        let releases: Vec<Release> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        windows.push(
            releases
                .iter()
                .map(|r| r.meta.window_start)
                .collect::<Vec<_>>(),
        );
    }
    let expected: Vec<i64> = (0..5).map(|d| T0 + d * DAY_MS).collect();
    assert_eq!(windows[0], expected, "D: every day of the range");
    assert_eq!(windows[1], expected, "D': the same windows");
    std::fs::remove_dir_all(&f.dir).ok();
}

/// The ledger file is the budget's memory: the same windows again are
/// refused (and the run fails, writing nothing); records outside the range
/// are refused like bad lines; a fresh ledger says so.
#[test]
fn a_second_run_over_the_same_windows_is_refused_by_the_ledger() {
    let f = fixture("ledger");
    let ledger = f.dir.join("shared.ledger");
    let ledger_arg = ["--ledger", ledger.to_str().unwrap()];
    let first = f.dir.join("first.json");
    // Only the first two days: the third day's records are outside.
    let (ok, stderr) = f.batch(&f.ndjson, &first, ("2026-01-01", "2026-01-03"), &ledger_arg);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("3009 records: 2003 accepted, 1006 refused"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1000 of the refused are valid but outside"),
        "{stderr}"
    );
    let releases: Vec<Release> = serde_json::from_slice(&std::fs::read(&first).unwrap()).unwrap();
    assert_eq!(releases.len(), 2);
    assert!(
        releases
            .iter()
            .all(|r| r.meta.ledger_scope.as_str() == "shared")
    );

    // Again, overlapping: day 2 is refused, day 3 is released.
    let second = f.dir.join("second.json");
    let (ok, stderr) = f.batch(
        &f.ndjson,
        &second,
        ("2026-01-02", "2026-01-04"),
        &ledger_arg,
    );
    assert!(ok, "{stderr}");
    assert!(stderr.contains("2 earlier releases on record"), "{stderr}");
    assert!(stderr.contains("already released"), "{stderr}");
    let releases: Vec<Release> = serde_json::from_slice(&std::fs::read(&second).unwrap()).unwrap();
    assert_eq!(
        releases
            .iter()
            .map(|r| r.meta.window_start)
            .collect::<Vec<_>>(),
        vec![T0 + 2 * DAY_MS]
    );

    // Everything again: nothing can be released; the run says why and fails.
    let third = f.dir.join("third.json");
    let (ok, stderr) = f.batch(&f.ndjson, &third, DAYS, &ledger_arg);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("no window released"), "{stderr}");
    assert!(!third.exists());

    // A fresh ledger releases them, and says its budget was not shared.
    let fresh = f.dir.join("fresh.json");
    let (ok, stderr) = f.batch(&f.ndjson, &fresh, DAYS, &["--fresh-ledger"]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("--fresh-ledger"), "{stderr}");
    let releases: Vec<Release> = serde_json::from_slice(&std::fs::read(&fresh).unwrap()).unwrap();
    assert_eq!(releases.len(), 3);
    assert!(
        releases
            .iter()
            .all(|r| r.meta.ledger_scope.as_str() == "fresh")
    );
    std::fs::remove_dir_all(&f.dir).ok();
}

#[test]
fn a_bad_range_is_refused_before_reading() {
    for (from, to, needle) in [
        ("2026-01-01T06:00:00Z", "2026-01-02", "window boundary"),
        ("2026-01-02", "2026-01-01", "after --from"),
        ("tomorrow", "2026-01-02", "RFC 3339"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_hushmap-aggregate"))
            .args([
                "batch",
                "--input",
                "/nonexistent.ndjson",
                "--from",
                from,
                "--to",
                to,
            ])
            .args(["--epsilon", "1", "--fresh-ledger", "--out", "/tmp/x.json"])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{from}..{to}: {stderr}");
    }
}

#[test]
fn a_bad_output_path_is_refused_before_reading() {
    let output = Command::new(env!("CARGO_BIN_EXE_hushmap-aggregate"))
        .args([
            "batch",
            "--input",
            "/nonexistent.ndjson",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-02",
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

/// A run whose contributors do not fit its memory pool sorts through disk
/// and releases exactly the counts an in-memory run releases; the run's
/// spill directory holds nothing afterwards.
#[test]
fn a_run_too_big_for_its_memory_counts_through_disk_to_the_same_counts() {
    let f = fixture("spill");
    // 1.2 million records in one pass, too many contributors for a 24 MiB
    // pool.
    let records = copies(&f.records, 400);
    let input = f.dir.join("many.parquet");
    write_coarse_parquet(&input, &records).unwrap();
    let want = expected(&records);
    let spill = f.dir.join("spill");
    std::fs::create_dir_all(&spill).unwrap();
    let config = f.config_with_batch(
        "small.toml",
        &format!(
            "memory_limit_mb = 24\nrecords_per_pass = 10000000\nspill_dir = {:?}",
            spill.display().to_string()
        ),
    );
    let out = f.dir.join("small.json");
    let ledger = f.dir.join("small.ledger");
    let (ok, stderr) = batch(
        &config,
        &input,
        &out,
        DAYS,
        &["--ledger", ledger.to_str().unwrap()],
    );
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(
            "counted through disk: the contributors did not fit batch.memory_limit_mb (24 MiB)"
        ),
        "{stderr}"
    );
    let releases: Vec<Release> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(counts_of(&releases), want);
    assert_eq!(
        std::fs::read_dir(&spill).unwrap().count(),
        0,
        "the run's spill directory is removed"
    );
    // While it runs, its directory is its owner's alone.
    let probe = tempfile_mode(&spill);
    assert_eq!(probe, 0o700, "spill directory mode {probe:o}");

    // The default pool holds them: the fast plan, the same counts.
    let out = f.dir.join("default.json");
    let ledger = f.dir.join("default.ledger");
    let (ok, stderr) = f.batch(&input, &out, DAYS, &["--ledger", ledger.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("through disk"), "{stderr}");
    let releases: Vec<Release> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(counts_of(&releases), want);
    std::fs::remove_dir_all(&f.dir).ok();
}

/// A run split into passes by contributor releases exactly the counts one
/// pass over everything releases: a contributor's records all land in one
/// pass, so the bound holds across passes (the repeat visitor, and each
/// copy's, counts once), and every record is counted in some pass. An
/// input read from a FIFO, whose size nothing tells, is split too.
#[test]
fn a_run_split_into_passes_counts_what_one_pass_counts() {
    let f = fixture("passes");
    let with_passes_of = |records: u64| {
        f.config_with_batch(
            &format!("passes-{records}.toml"),
            &format!("records_per_pass = {records}"),
        )
    };
    let passes_said = |stderr: &str| passes_reported(stderr, "\ncounted in ");

    // Submissions: ~3,000 records in passes of 1,000, from a file and
    // through a FIFO, whose size nothing tells.
    let submissions_in_passes = |input: &Path, name: &str| {
        let out = f.dir.join(format!("{name}.json"));
        let ledger = f.dir.join(format!("{name}.ledger"));
        let (ok, stderr) = batch(
            &with_passes_of(1_000),
            input,
            &out,
            DAYS,
            &["--ledger", ledger.to_str().unwrap()],
        );
        assert!(ok, "{stderr}");
        assert!(passes_said(&stderr) >= 3, "{stderr}");
        assert!(!stderr.contains("through disk"), "{stderr}");
        let releases: Vec<Release> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(counts_of(&releases), expected(&f.records));
    };
    submissions_in_passes(&f.ndjson, "ndjson");
    let fifo = f.dir.join("fifo.ndjson");
    make_fifo(&fifo);
    let writer = std::thread::spawn({
        let (from, to) = (f.ndjson.clone(), fifo.clone());
        move || {
            std::io::copy(
                &mut std::fs::File::open(from)?,
                &mut std::fs::File::create(to)?,
            )
        }
    });
    submissions_in_passes(&fifo, "fifo");
    writer.join().unwrap().unwrap();

    // Coarse records: 120,000 in passes of 10,000.
    let records = copies(&f.records, 40);
    let input = f.dir.join("copies.parquet");
    write_coarse_parquet(&input, &records).unwrap();
    let out = f.dir.join("parquet.json");
    let ledger = f.dir.join("parquet.ledger");
    let (ok, stderr) = batch(
        &with_passes_of(10_000),
        &input,
        &out,
        DAYS,
        &["--ledger", ledger.to_str().unwrap()],
    );
    assert!(ok, "{stderr}");
    assert!(passes_said(&stderr) >= 12, "{stderr}");
    let releases: Vec<Release> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(counts_of(&releases), expected(&records));

    // A pass too small to be useful is refused before anything is read.
    let (ok, stderr) = batch(&with_passes_of(10), &input, &out, DAYS, &["--fresh-ledger"]);
    assert!(!ok);
    assert!(
        stderr.contains("batch.records_per_pass must be at least 1000"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&f.dir).ok();
}

/// Makes a FIFO at `path`.
fn make_fifo(path: &Path) {
    let made = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
}

/// The mode a batch run gives its spill directory, read off a run that is
/// stopped while the directory exists (its input is a FIFO nobody writes).
fn tempfile_mode(parent: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let fifo = parent.join("input.ndjson");
    let _ = std::fs::remove_file(&fifo);
    make_fifo(&fifo);
    let config = parent.join("probe.toml");
    std::fs::write(
        &config,
        format!("[batch]\nspill_dir = {:?}\n", parent.display().to_string()),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hushmap-aggregate"))
        .args(["--config", config.to_str().unwrap(), "batch", "--input"])
        .arg(&fifo)
        .args([
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-02",
            "--fresh-ledger",
            "--epsilon",
            "1",
            "--out",
        ])
        .arg(parent.join("probe.json"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let found = hushmap_testkit::wait_until_blocking(
        "the spill directory to appear",
        std::time::Duration::from_secs(30),
        || {
            Ok(std::fs::read_dir(parent)?
                .filter_map(Result::ok)
                .find(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("hushmap-batch-")
                })
                .map(|e| e.path()))
        },
    );
    let dir = match found {
        Ok(dir) => dir,
        Err(e) => {
            // Not left blocked on its FIFO after the test.
            let _ = child.kill();
            let _ = child.wait();
            panic!("no spill directory appeared: {e:#}");
        }
    };
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&fifo);
    mode
}

/// The Ballista cluster deploy/ballista/up.sh starts (deploy/test.sh does):
/// its scheduler's URL and the directory of its logs and work directories.
fn ballista() -> (String, PathBuf) {
    let url = std::env::var("HUSHMAP_TEST_BALLISTA")
        .unwrap_or_else(|_| "df://127.0.0.1:50050".to_string());
    let dir = std::env::var("HUSHMAP_TEST_BALLISTA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ballista"));
    (url, dir)
}

/// Regular files under `dir`, however deep.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// Lines of the executors' logs that name a task received.
fn tasks_received(dir: &Path) -> Vec<usize> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir.join("logs"))
        .unwrap_or_else(|e| panic!("{}: {e}: is deploy/ballista/up.sh running?", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("executor-"))
        .collect();
    logs.sort();
    logs.iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                // Pushed to it (Ballista's default) or polled for.
                .filter(|l| l.contains("Execute task") || l.contains("Received task"))
                .count()
        })
        .collect()
}

#[test]
fn a_cluster_counts_exactly_what_one_machine_counts_and_keeps_nothing() {
    let (url, cluster_dir) = ballista();
    let f = fixture("cluster");
    // 300,000 records (the repeat visitor in each copy bounded), counted
    // on the cluster in passes of at most 100,000.
    let records = copies(&f.records, 100);
    let input = f.dir.join("records.parquet");
    write_coarse_parquet(&input, &records).unwrap();
    let want = expected(&records);
    let range = DAYS;

    let local = f.dir.join("local.json");
    let (ok, stderr) = f.batch(&input, &local, range, &["--fresh-ledger"]);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("on the cluster"), "{stderr}");

    let on_cluster = f.dir.join("cluster.json");
    let config = f.config_with_batch("passes.toml", "records_per_pass = 100000");
    // The attack: a client without the cluster's secret, or with another,
    // hands the scheduler a plan. Refused before it reaches an executor.
    let secret = cluster_dir.join("run/secret");
    let wrong = f.dir.join("wrong-secret");
    std::fs::write(&wrong, "0".repeat(64)).unwrap();
    let before = tasks_received(&cluster_dir);
    for env in [
        vec![],
        vec![("HUSHMAP_CLUSTER_SECRET_FILE", wrong.as_path())],
    ] {
        let (ok, stderr) = batch_with_env(
            &config,
            &input,
            &on_cluster,
            range,
            &["--fresh-ledger", "--cluster", &url],
            &env,
        );
        assert!(!ok, "a plan ran without the cluster's secret: {stderr}");
        assert!(
            stderr.contains("HUSHMAP_CLUSTER_SECRET"),
            "the refusal names what is missing: {stderr}"
        );
    }
    assert_eq!(
        tasks_received(&cluster_dir),
        before,
        "an executor received a task of an unauthenticated plan"
    );
    let (ok, stderr) = batch_with_env(
        &config,
        &input,
        &on_cluster,
        range,
        &["--fresh-ledger", "--cluster", &url],
        &[("HUSHMAP_CLUSTER_SECRET_FILE", secret.as_path())],
    );
    assert!(ok, "{stderr}");
    let passes = passes_reported(&stderr, &format!("counted on the cluster {url} in "));
    assert!(passes >= 3, "{stderr}");
    // Every executor took part: the plan really ran on the cluster.
    let after = tasks_received(&cluster_dir);
    assert!(before.len() >= 2, "executors' logs: {before:?}");
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(a > b, "executor {} received no task ({b} → {a})", i + 1);
    }

    // At huge ε both are the exact bounded counts, cell for cell.
    let read =
        |p: &Path| -> Vec<Release> { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let (local, on_cluster) = (read(&local), read(&on_cluster));
    assert_eq!(local.len(), 3);
    assert_eq!(on_cluster.len(), 3);
    assert_eq!(counts_of(&local), want);
    assert_eq!(counts_of(&on_cluster), want);

    // The executors' shuffle files are deleted once the client has its
    // results (after deploy/ballista's 10 s linger): a cluster holds no
    // records or counts between runs.
    let mut left = Vec::new();
    hushmap_testkit::wait_until_blocking(
        "the executors to delete the job's data",
        std::time::Duration::from_secs(60),
        || {
            let now: Vec<PathBuf> = std::fs::read_dir(cluster_dir.join("run"))?
                .flatten()
                .filter(|e| e.path().is_dir())
                .flat_map(|e| files_under(&e.path()))
                .collect();
            let gone = now.is_empty();
            left = now;
            Ok(gone.then_some(()))
        },
    )
    .unwrap_or_else(|e| {
        panic!("job data still on the executors a minute after the run: {left:?} ({e:#})")
    });
    std::fs::remove_dir_all(&f.dir).ok();
}

#[test]
fn a_cluster_that_cannot_count_spends_nothing() {
    let f = fixture("no-cluster");
    let out = f.dir.join("out.json");
    let ledger = f.dir.join("ledger.ndjson");
    // Nothing listens on port 9 here.
    let (ok, stderr) = f.batch(
        &f.ndjson,
        &out,
        DAYS,
        &[
            "--ledger",
            ledger.to_str().unwrap(),
            "--cluster",
            "df://127.0.0.1:9",
        ],
    );
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("counting on the cluster df://127.0.0.1:9"),
        "{stderr}"
    );
    assert!(!out.exists(), "an output was written");
    let spent = std::fs::read_to_string(&ledger).unwrap_or_default();
    assert!(spent.trim().is_empty(), "the ledger was spent: {spent}");

    // A URL that is not a scheduler's is refused before anything is read.
    let (ok, stderr) = f.batch(
        Path::new("/nonexistent.ndjson"),
        &out,
        DAYS,
        &["--fresh-ledger", "--cluster", "http://127.0.0.1:50050"],
    );
    assert!(!ok);
    assert!(stderr.contains("expected df://HOST[:PORT]"), "{stderr}");
    std::fs::remove_dir_all(&f.dir).ok();
}
