//! Partitioned stage 2 never noises a part twice, even when a committed
//! transaction looks failed to it: the fault is injected so that the
//! instance believes its commit failed *and* rebuilds from the positions
//! committed before it (as if the broker's answer had been lost and the
//! committed offsets did not show the commit yet). Only the releases topic
//! tells it the parts are out; it must look there before sending them
//! again. Real broker, in-process aggregator.

mod common;

use common::{
    Topics, counted, current_window, partitioned_config, record, run_beside, watch_releases,
};
use hushmap_aggregate::PartitionedAggregator;
use hushmap_testkit::{produce_sealed, producer};
use rdkafka::producer::Producer;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_found_on_the_releases_topic_is_never_noised_again() -> anyhow::Result<()> {
    let topics = Topics::create("pr").await?;
    let mut config = partitioned_config(&topics, "pr")?;
    // The records are for the window current when they are sent, and the
    // stages may still be joining their group or opening records then. In
    // one full-suite run (two lanes on two cores) only 27 of the 40 were
    // counted; that run did not say why, and the test passed alone and
    // under CPU load since. Lateness (1 s by default) is the one cause the
    // test does not mean to examine, so records get more of it; should the
    // count fall short again, the message says whether any were late.
    config.allowed_lateness_secs = 6;

    let aggregator = PartitionedAggregator::new(config)?;
    let stats = aggregator.stats();
    // The first committed part transaction "fails" as described above.
    aggregator.lost_commit_answers().lose_next(1);
    let (window, parts) = run_beside(aggregator, produce_and_collect(&topics)).await?;
    let mut seen: BTreeMap<(i64, u32), usize> = BTreeMap::new();
    for p in parts.iter().map(|p| &p.release) {
        *seen
            .entry((p.meta.window_start, p.meta.part.index))
            .or_default() += 1;
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "a part was published twice: {seen:?}"
    );
    assert!(
        stats.releases_found_published.load(Ordering::Relaxed) >= 1,
        "the lost answer was not recovered from the releases topic"
    );
    // Every record of the first window was counted once (huge ε).
    assert_eq!(
        counted(&parts, window),
        40,
        "records refused as late: {}; windows published without data: {}; parts seen: {seen:?}",
        stats.records_late.load(Ordering::Relaxed),
        stats.windows_missed.load(Ordering::Relaxed),
    );
    Ok(())
}

/// Produces 40 records into the current window; waits until both shards
/// have published three windows; returns the window and every part.
async fn produce_and_collect(
    topics: &Topics,
) -> anyhow::Result<(hushmap_schema::Window, Vec<common::SeenPart>)> {
    let producer = producer()?;
    let window = current_window();
    for i in 0..40u8 {
        produce_sealed(
            &producer,
            &topics.submissions,
            &format!("k{i}"),
            &record(window, i),
        )
        .await?;
    }
    producer.flush(Duration::from_secs(10))?;
    Ok((window, watch_releases(&topics.releases, 3).await?))
}
