//! Writes the fuzzers' seed corpus into `fuzz/corpus/<target>/`: a few
//! valid and near-valid inputs per target, so libFuzzer starts from the
//! formats rather than from nothing. The corpus is kept in the repository;
//! run this (`cargo run -p hushmap-schema --example fuzz_seeds`) only to
//! start one afresh.

use hushmap_schema::bounded::{BoundedMessage, Watermark};
use hushmap_schema::region::RegionResolution;
use hushmap_schema::{
    AgeBand, CoarseRecord, ContributorKey, PayloadKeyring, RegionCell, Release, ReleaseMeta,
    ReleaseRow, RiskLevel, StatisticCost, Symptom, Window, WindowLength,
};
use std::path::Path;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let submissions = [
        r#"{"for":"self","age":34,"gender":"female","symptoms":["fever","dry_cough"],"conditions":[],"travelled_internationally_14d":false,"contact_with_confirmed_case":true,"location":{"lat":19.076,"lon":72.8777}}"#,
        r#"{"for":"family_member","age":71,"gender":"undisclosed","symptoms":[],"conditions":["diabetes","pregnancy"],"travelled_internationally_14d":true,"contact_with_confirmed_case":false,"region":"85608b0bfffffff","profile":"user-1","observed_at":"2026-11-28T23:59:00Z"}"#,
        r#"{"for":"someone_else","age":0,"gender":"other","symptoms":["breathlessness"],"conditions":[],"travelled_internationally_14d":false,"contact_with_confirmed_case":false,"location":{"lat":-90,"lon":180}}"#,
        r#"{"age":"34"}"#,
    ];
    for (i, s) in submissions.iter().enumerate() {
        write(
            &root.join("submission"),
            &format!("seed-{i}.json"),
            s.as_bytes(),
        );
    }

    let len = WindowLength::ONE_DAY;
    let record = CoarseRecord {
        window: Window::containing(1_795_910_400_000, len),
        window_length: len,
        region: RegionCell::from_coordinate(-33.87, 151.21, RegionResolution::new(5).unwrap())
            .unwrap(),
        age_band: AgeBand::From75,
        risk: RiskLevel::High,
        symptoms: Symptom::ALL.into_iter().collect(),
        contributor: ContributorKey([7; 16]),
    };
    // The fuzz targets' private keyring.
    let keys: PayloadKeyring = format!("1:{},2:{}", "11".repeat(32), "22".repeat(32))
        .parse()
        .unwrap();
    write(&root.join("coarse_record"), "plain", &record.encode());
    write(
        &root.join("coarse_record"),
        "sealed",
        &keys.public_key().seal(&record),
    );
    // The bounded topic: a forwarded record and watermarks, each in the
    // clear (the message format) and sealed (what the topic holds).
    let bounded = keys.bounded_keyring();
    let forwarded = BoundedMessage::Record(record);
    write(&root.join("bounded"), "record", &forwarded.encode());
    write(&root.join("bounded"), "sealed", &bounded.seal(&forwarded));
    let mark = |windows: Vec<i64>| {
        BoundedMessage::Watermark(Watermark {
            partition: 1,
            partitions: 6,
            through_ms: record.window.end_ms,
            windows,
        })
        .encode()
    };
    write(
        &root.join("bounded"),
        "watermark",
        &mark(vec![record.window.start_ms]),
    );
    write(&root.join("bounded"), "watermark-empty", &mark(Vec::new()));
    write(
        &root.join("bounded"),
        "watermark-sealed",
        &bounded.seal_bytes(&mark(Vec::new())),
    );

    let window = record.window;
    let row = |band: &str, n: i64| ReleaseRow {
        window_start: window.start_ms,
        window_end: window.end_ms,
        level: 5,
        region: record.region.to_string(),
        age_band: band.into(),
        n_low: n,
        n_moderate: 1,
        n_high: 2,
        n_total: n + 3,
        high_share: Some(2.0 / (n + 3) as f64),
        high_share_ci_low: 0.0,
        high_share_ci_high: 0.9,
        noise_scale: 3.2,
        suppressed: n < 3,
        symptoms: [1; 10],
    };
    let release = Release {
        meta: ReleaseMeta {
            window_start: window.start_ms,
            window_end: window.end_ms,
            mechanism: "discrete_gaussian".into(),
            rho: Some(0.0132),
            epsilon: 1.0,
            delta: 1e-8,
            ledger_entry: "seed".into(),
            symptom_noise_scale: 4.1,
            max_ci_half_width: 0.15,
            statistic_costs: vec![StatisticCost {
                statistic: "risk_counts".into(),
                level: 5,
                cost: 0.0066,
                delta: 0.0,
            }],
            ..Default::default()
        },
        rows: vec![row("18-29", 10), row("75+", 0)],
    };
    write(
        &root.join("release"),
        "two-rows",
        &release.to_ipc().unwrap(),
    );
    println!("seeds written under {}", root.display());
}
