//! Reading the releases topic as the ledger's history ([`ReleaseLog`]):
//! the whole history once (start-up), versus what is new since the last
//! read (before each new window is authorised).
//!
//! ```text
//! deploy/kafka/up.sh
//! BENCH_RELEASES=9000 BENCH_ROWS=60 cargo bench -p hushmap-aggregate --bench release_log
//! ```
//!
//! `BENCH_RELEASES` releases (9,000: a year of hourly windows) of
//! `BENCH_ROWS` rows each (real resolution-5 cells) on a 1-partition
//! releases topic. Timed: a fresh
//! log's first read (the whole history; before `ReleaseLog`, every new
//! window paid this), then 20 rounds of "one more release published, read
//! what is new", then a read with nothing new. Wall-clock, against the
//! local broker.

use hushmap_aggregate::AggregateConfig;
use hushmap_aggregate::release_log::ReleaseLog;
use hushmap_schema::{RegionCell, ReleaseRow};
use hushmap_testkit::{brokers, create_topics, hourly_release, unique};
use rdkafka::producer::FutureRecord;
use std::time::Instant;

mod support;
use support::env_usize;
#[path = "support/backlog.rs"]
mod backlog;
use backlog::Backlog;

const ROUNDS: usize = 20;

fn release(hour: usize, regions: &[RegionCell], rows: usize) -> anyhow::Result<Vec<u8>> {
    let release = hourly_release(hour as i64, Vec::new());
    let (start, end) = (release.meta.window_start, release.meta.window_end);
    let row = |i: usize| ReleaseRow {
        window_start: start,
        window_end: end,
        level: 5,
        region: regions[i % regions.len()].to_string(),
        age_band: "30-44".into(),
        n_low: 40,
        n_moderate: 12,
        n_high: 3,
        n_total: 55,
        high_share: Some(3.0 / 55.0),
        high_share_ci_low: 0.0,
        high_share_ci_high: 0.2,
        noise_scale: 3.2,
        suppressed: false,
        symptoms: [5; 10],
    };
    Ok(hourly_release(hour as i64, (0..rows).map(row).collect()).to_ipc()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env_usize("BENCH_RELEASES", 9_000);
    let rows = env_usize("BENCH_ROWS", 60);
    let regions = backlog::regions()?;
    let topic = unique("bench.release-log");
    create_topics(&[(&topic, 1)]).await?;
    let mut config = AggregateConfig::default();
    config.kafka.brokers = brokers();
    config.kafka.output_topic = topic.clone();
    config.kafka.group_id = unique("bench.release-log");

    let mut backlog = Backlog::new()?;
    let mut bytes = 0;
    for hour in 0..n {
        let payload = release(hour, &regions, rows)?;
        bytes += payload.len();
        backlog
            .send(FutureRecord::<(), _>::to(&topic).payload(&payload))
            .await?;
    }
    backlog.acknowledged().await?;
    println!(
        "release_log: {n} releases of {rows} rows ({:.1} MB) on the topic",
        bytes as f64 / 1e6
    );

    let mut log = ReleaseLog::new(&config)?;
    let started = Instant::now();
    let history = log.read_new()?;
    let full = started.elapsed();
    assert_eq!(history.len(), n);
    println!(
        "release_log: whole history: {} entries in {:.3} s",
        history.len(),
        full.as_secs_f64()
    );

    let mut times = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let payload = release(n + round, &regions, rows)?;
        backlog
            .send(FutureRecord::<(), _>::to(&topic).payload(&payload))
            .await?;
        backlog.acknowledged().await?;
        let started = Instant::now();
        let new = log.read_new()?;
        times.push(started.elapsed().as_secs_f64());
        assert_eq!(new.len(), 1);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "release_log: one new release: median {:.3} s, max {:.3} s over {ROUNDS} reads",
        times[ROUNDS / 2],
        times[ROUNDS - 1]
    );

    let started = Instant::now();
    assert!(log.read_new()?.is_empty());
    println!(
        "release_log: nothing new: {:.3} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
