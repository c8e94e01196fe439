//! The DP release against plain DataFusion on the same Arrow data.
//!
//! ```text
//! BENCH_RECORDS=1000000 cargo bench -p hushmap-aggregate --bench engine
//! ```
//!
//! Synthetic coarse records of one window: `BENCH_RECORDS` records from
//! `BENCH_RECORDS / 2` contributors (about 2 each), 200 regions × 6 age
//! bands × 3 risk levels, random symptoms. Each query runs `BENCH_RUNS`
//! times (default 5); the best time is reported, since the machine is shared.
//! With `BENCH_PARQUET=path` the data is also written there (for the Python
//! comparisons in `bench/aggregate.sh`).
//!
//! Compared:
//! - `raw`: an unbounded `GROUP BY region, age_band, risk` with `COUNT(*)`;
//! - `bounded_sql_sort`: the bounded count in plain DataFusion SQL with
//!   `ROW_NUMBER()` (the textbook way to keep each contributor's latest
//!   record);
//! - `bounded_sql_hash`: the bounded count in plain DataFusion SQL as the
//!   engine writes it (hash aggregate + hash join);
//! - `dp_release`: the engine end to end — bounded count, OpenDP threshold
//!   selection, noise on every count of three levels, post-processing into
//!   release rows;
//! - `dp_release_noise_ahead`: the same with the count noise drawn before
//!   the window closed, as the streaming aggregator does (`NoiseReserve`;
//!   `noise_ahead_draw` is what that drawing costs, off the release path).

use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use hushmap_aggregate::AggregateConfig;
use hushmap_aggregate::engine::{
    bounded_counts_sql, bounded_counts_table, sort_bounded_counts_sql,
};
use hushmap_aggregate::records::{RECORD_SCHEMA, SequencedRecord, to_record_batch};
use hushmap_privacy::release::{NoiseReserve, noise_window, noisy_release};
use hushmap_privacy::sensitivity::ContributionBounds;
use hushmap_schema::{CoarseRecord, Window, WindowLength};
use hushmap_testkit::synthetic::SyntheticRecords;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;
use support::env_usize;

fn records(n: usize) -> Vec<SequencedRecord> {
    SyntheticRecords::new(n as u64)
        .enumerate()
        .map(|(i, record)| SequencedRecord {
            seq: i as u64,
            record,
        })
        .collect()
}

fn table(records: &[SequencedRecord]) -> Arc<MemTable> {
    // One partition per core's share, as batch mode does.
    let partitions = records
        .chunks(256 * 1024)
        .map(|c| vec![to_record_batch(c).unwrap()])
        .collect();
    Arc::new(MemTable::try_new(RECORD_SCHEMA.clone(), partitions).unwrap())
}

async fn time_sql(ctx: &SessionContext, sql: &str) -> (Duration, usize) {
    let start = Instant::now();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    (start.elapsed(), batches.iter().map(|b| b.num_rows()).sum())
}

fn best<T>(runs: usize, mut f: impl FnMut() -> (Duration, T)) -> (Duration, T) {
    let mut best = f();
    for _ in 1..runs {
        let next = f();
        if next.0 < best.0 {
            best = next;
        }
    }
    best
}

fn main() {
    let n = env_usize("BENCH_RECORDS", 1_000_000);
    let runs = env_usize("BENCH_RUNS", 5);
    let rt = tokio::runtime::Runtime::new().unwrap();
    eprintln!("bench: generating {n} records");
    let data = records(n);
    if let Ok(path) = std::env::var("BENCH_PARQUET") {
        let plain: Vec<CoarseRecord> = data.iter().map(|r| r.record).collect();
        hushmap_aggregate::batch::write_coarse_parquet(std::path::Path::new(&path), &plain)
            .unwrap();
        eprintln!("bench: wrote {path}");
    }
    let records_table = table(&data);
    let ctx = SessionContext::new();
    ctx.register_table("records", records_table.clone())
        .unwrap();

    let raw_sql = "SELECT region, age_band, risk, COUNT(*) AS n FROM records \
                   GROUP BY region, age_band, risk";
    let sort_sql = sort_bounded_counts_sql(ContributionBounds::new(1));
    let hash_sql = bounded_counts_sql(ContributionBounds::new(1));

    let (raw, raw_rows) = best(runs, || rt.block_on(time_sql(&ctx, raw_sql)));
    let (sort, _) = best(runs.min(3), || rt.block_on(time_sql(&ctx, &sort_sql)));
    let (hash, hash_rows) = best(runs, || rt.block_on(time_sql(&ctx, &hash_sql)));
    // The floor of any per-contributor bounding: one hash aggregate over
    // the contributor keys, nothing joined or counted.
    let floor_sql = "SELECT window_start, contributor_hi, contributor_lo, MAX(seq) FROM records \
                     GROUP BY window_start, contributor_hi, contributor_lo";
    let (floor, _) = best(runs, || rt.block_on(time_sql(&ctx, floor_sql)));
    // Bounding with ordered aggregates instead of a join.
    let last_sql = "SELECT region, age_band, risk, COUNT(*) FROM ( \
                      SELECT last_value(region ORDER BY seq) AS region, \
                             last_value(age_band ORDER BY seq) AS age_band, \
                             last_value(risk ORDER BY seq) AS risk \
                      FROM records GROUP BY window_start, contributor_hi, contributor_lo) \
                    GROUP BY region, age_band, risk";
    let (last, _) = best(runs.min(3), || rt.block_on(time_sql(&ctx, last_sql)));
    ctx.deregister_table("records").unwrap();

    let config = AggregateConfig::default();
    let plan = config.release_plan().unwrap();
    // Every run is a release of its own (a window is authorised once): a
    // ledger without limits hands out one authorisation per run.
    let ledger = std::cell::RefCell::new(hushmap_privacy::PrivacyLedger::new(
        hushmap_privacy::Budget {
            limits: Vec::new(),
            delta: 1e-8,
            max_delta: 1.0,
        },
    ));
    let runs_done = std::cell::Cell::new(0i64);
    let authorise = |start: i64| {
        runs_done.set(runs_done.get() + 1);
        let window = Window::from_start(
            start + runs_done.get() * WindowLength::ONE_DAY.millis(),
            WindowLength::ONE_DAY,
        )
        .unwrap();
        ledger
            .borrow_mut()
            .authorise(window, plan.cost.clone())
            .unwrap()
    };
    // The engine's bounded counting on a fresh context, as a window's
    // release starts.
    let count = || {
        rt.block_on(bounded_counts_table(
            &SessionContext::new(),
            records_table.clone(),
            config.bounds(),
        ))
        .unwrap()
    };
    // The DP release end to end: the counting, then the noise (drawn now,
    // or taken from `reserve`, drawn before the timer starts) and the
    // post-processing.
    let release_timed = |reserve: Option<NoiseReserve>| {
        let start = Instant::now();
        let cells = count();
        let authorisation = authorise(cells[0].window_start);
        let release = noise_window(&cells, &plan, authorisation, reserve)
            .unwrap()
            .release;
        (start.elapsed(), release.rows.len())
    };
    let (dp, release_rows) = best(runs, || release_timed(None));
    // The same bounded counting alone, timed the same way and right beside
    // the releases (the SQL figures above ran first, on a context of their
    // own, and this machine's timings drift between phases).
    let (counting, _) = best(runs, || {
        let start = Instant::now();
        let cells = count();
        (start.elapsed(), cells.len())
    });

    // The noise and post-processing alone, on the bounded counts.
    let cells = count();
    let (noise, _) = best(runs, || {
        let authorisation = authorise(cells[0].window_start);
        let start = Instant::now();
        let release = noisy_release(&cells, &plan, authorisation).unwrap();
        (start.elapsed(), release.rows.len())
    });
    // The streaming aggregator's release: its count noise drawn while the
    // window was open (a `NoiseReserve` sized by the last release, which
    // is public), so what is left once the data are in is the counting,
    // the threshold selection, the sums and the post-processing.
    let guess = NoiseReserve::regions_released(
        &plan,
        &noisy_release(&cells, &plan, authorise(cells[0].window_start)).unwrap(),
    );
    let (ahead, ahead_rows) = best(runs, || {
        release_timed(Some(NoiseReserve::draw(&plan, &guess).unwrap()))
    });
    // What drawing ahead costs, off the release's path.
    let (draw, reserved) = best(runs, || {
        let start = Instant::now();
        let reserve = NoiseReserve::draw(&plan, &guess).unwrap();
        (start.elapsed(), reserve.values())
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("records,{n}");
    println!("raw_group_by_ms,{:.1},rows,{raw_rows}", ms(raw));
    println!("bounded_sql_sort_ms,{:.1}", ms(sort));
    println!("bounded_sql_hash_ms,{:.1},rows,{hash_rows}", ms(hash));
    println!("contributor_group_by_only_ms,{:.1}", ms(floor));
    println!("bounded_sql_last_value_ms,{:.1}", ms(last));
    println!("dp_release_ms,{:.1},rows,{release_rows}", ms(dp));
    println!("noise_and_post_processing_ms,{:.1}", ms(noise));
    println!("bounded_counts_alone_ms,{:.1}", ms(counting));
    println!(
        "dp_release_noise_ahead_ms,{:.1},rows,{ahead_rows}",
        ms(ahead)
    );
    println!("noise_ahead_draw_ms,{:.1},values,{reserved}", ms(draw));
    let ratios = [
        ("dp_vs_raw", dp, raw),
        ("dp_vs_bounded_sql", dp, hash),
        ("dp_noise_ahead_vs_bounded_sql", ahead, hash),
        ("dp_vs_bounded_counts_alone", dp, counting),
        ("dp_noise_ahead_vs_bounded_counts_alone", ahead, counting),
        ("sort_vs_raw", sort, raw),
    ];
    for (name, a, b) in ratios {
        println!("ratio_{name},{:.2}", a.as_secs_f64() / b.as_secs_f64());
    }
}
