//! A flood through the real broker: a window's buffered records are capped
//! (`max_buffered_records_per_window`), the rest refused and counted; the
//! aggregator neither dies of the flood nor of replaying it after a
//! restart, and releases the window with exactly the capped records (huge
//! ε, so released counts are true counts).

use crate::common;

use common::{Unreadable, releases, single_config, window_len};
use hushmap_aggregate::intake::DropReason;
use hushmap_aggregate::{AggregateConfig, Aggregator};
use hushmap_schema::region::RegionResolution;
use hushmap_schema::{
    AgeBand, CoarseRecord, ContributorKey, RegionCell, RiskLevel, SymptomSet, Window,
};
use hushmap_testkit::{create_topics, now_ms, produce_sealed, producer, unique, wait_until};
use rdkafka::producer::Producer;
use std::time::Duration;

const WINDOW_SECS: u32 = 12;
const CAP: usize = 400;
const FLOOD: usize = 2_000;

fn config(input: &str, output: &str, epoch: i64) -> anyhow::Result<AggregateConfig> {
    let mut config = single_config(input, output, "flood", WINDOW_SECS, epoch)?;
    config.max_buffered_records_per_window = CAP;
    config.privacy.epsilon_per_window = 1e6;
    Ok(config)
}

type Running = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    std::sync::Arc<hushmap_aggregate::AggregatorStats>,
);

fn start(config: &AggregateConfig) -> anyhow::Result<Running> {
    let aggregator = Aggregator::new(config.clone())?;
    let stats = aggregator.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        Ok(aggregator
            .run(async move {
                let _ = stopped.await;
            })
            .await?)
    });
    Ok((stop, task, stats))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_capped_counted_and_survives_a_restart() -> anyhow::Result<()> {
    let (input, output) = (unique("test.flood.in"), unique("test.flood.out"));
    create_topics(&[(&input, 2), (&output, 1)]).await?;
    // The flood's window starts when the next one does, so it has all of it.
    let next = Window::containing(now_ms(), window_len(WINDOW_SECS)).end_ms;
    let config = config(&input, &output, next)?;
    let (stop, task, _) = start(&config)?;
    // Real time by design: the flood goes in at the start of its window.
    tokio::time::sleep(Duration::from_millis((next - now_ms()).max(0) as u64 + 50)).await;
    let window = Window::containing(now_ms(), window_len(WINDOW_SECS));
    let res = RegionResolution::new(5)?;
    let producer = producer()?;
    let sends = (0..FLOOD).map(|i| {
        let record = CoarseRecord {
            window,
            window_length: window_len(WINDOW_SECS),
            region: RegionCell::from_coordinate(19.07, 72.87, res).unwrap(),
            age_band: AgeBand::ALL[i % 6],
            risk: RiskLevel::High,
            symptoms: SymptomSet::default(),
            contributor: ContributorKey((i as u128).to_be_bytes()),
        };
        let producer = &producer;
        let input = &input;
        async move { produce_sealed(producer, input, &format!("f{i}"), &record).await }
    });
    for sent in futures::future::join_all(sends).await {
        sent?;
    }
    producer.flush(Duration::from_secs(10))?;
    assert!(
        now_ms() < window.end_ms,
        "the flood must land inside its window; the machine is too slow for this test"
    );
    // Stopped with the flood buffered; a new instance replays it all.
    let _ = stop.send(());
    task.await??;
    let (stop, task, stats) = start(&config)?;
    let out = wait_until(
        "the flooded window to be released",
        Duration::from_secs(60),
        || {
            let output = output.clone();
            async move {
                let all = tokio::task::spawn_blocking(move || releases(&output, Unreadable::Fail))
                    .await??;
                Ok(all
                    .into_iter()
                    .find(|r| r.meta.window_start == window.start_ms))
            }
        },
    )
    .await?;
    let _ = stop.send(());
    task.await??;
    let finest = out.rows.iter().map(|r| r.level).max().unwrap();
    let total: i64 = out
        .rows
        .iter()
        .filter(|r| r.level == finest)
        .map(|r| r.n_total)
        .sum();
    assert_eq!(total, CAP as i64, "exactly the capped records are counted");
    assert_eq!(
        stats.records_dropped.get(DropReason::WindowFull),
        (FLOOD - CAP) as u64,
        "every record past the cap is refused and counted"
    );
    Ok(())
}
