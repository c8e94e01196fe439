//! Partitioned stage 2 never noises a part twice, even when a committed
//! transaction looks failed to it: the fault is injected so that the
//! instance believes its commit failed *and* rebuilds from the positions
//! committed before it (as if the broker's answer had been lost and the
//! committed offsets did not show the commit yet). Only the releases topic
//! tells it the parts are out; it must look there before sending them
//! again. Real broker, in-process aggregator.

use hushmap_aggregate::{AggregateConfig, PartitionedAggregator, Topology};
use hushmap_schema::region::RegionResolution;
use hushmap_schema::{
    AgeBand, CoarseRecord, ContributorKey, RegionCell, Release, RiskLevel, SymptomSet, Window,
    WindowLength,
};
use hushmap_testkit::{
    brokers, committed_records_on, create_topics, current_window_start, eventually, now_ms,
    payload_keyring, produce_sealed, producer, unique,
};
use rdkafka::producer::Producer;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

const WINDOW_SECS: u32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_found_on_the_releases_topic_is_never_noised_again() -> anyhow::Result<()> {
    let (submissions, bounded, releases) = (
        unique("test.pr.in"),
        unique("test.pr.bounded"),
        unique("test.pr.out"),
    );
    create_topics(&[(&submissions, 2), (&bounded, 2), (&releases, 1)]).await?;
    let mut config = AggregateConfig {
        dev_mode: true,
        topology: Topology::Partitioned,
        window_secs: WINDOW_SECS,
        allowed_lateness_secs: 1,
        tick_ms: 200,
        metrics_listen: "127.0.0.1:0".parse()?,
        payload_keys: Some(payload_keyring()),
        schedule_epoch: Some(current_window_start(WINDOW_SECS).to_string()),
        ..AggregateConfig::default()
    };
    config.kafka.brokers = brokers();
    config.kafka.input_topic = submissions.clone();
    config.kafka.bounded_topic = bounded;
    config.kafka.output_topic = releases.clone();
    config.kafka.group_id = unique("test.pr.group");
    config.kafka.transactional_id = unique("test.pr.txn");
    config.kafka.instance_id = Some("only".into());
    config.kafka.transaction_timeout_ms = 10_000;
    config.privacy.epsilon_per_window = 1e6;
    config.privacy.max_epsilon_per_day = 1e12;
    config.privacy.max_epsilon_per_horizon = 1e12;
    config.privacy.max_delta_per_horizon = 9e-4;
    // A public area holding every record, so the huge-ε counts are exact.
    config.privacy.public_bbox = Some([-34.0, 151.0, -30.5, 151.5]);

    let aggregator = PartitionedAggregator::new(config)?;
    let stats = aggregator.stats();
    // The first committed part transaction "fails" as described above.
    aggregator.lost_commit_answers().lose_next(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // The aggregator's future is not Send: it runs beside the test's own
    // steps in this task.
    let running = aggregator.run(async move {
        let _ = stopped.await;
    });
    let (ran, parts) = tokio::join!(running, async {
        let parts = produce_and_collect(&submissions, &releases).await;
        let _ = stop.send(());
        parts
    });
    ran?;
    let (window, parts) = parts?;
    let mut seen: BTreeMap<(i64, u32), usize> = BTreeMap::new();
    for p in &parts {
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
    let first: i64 = parts
        .iter()
        .filter(|p| p.meta.window_start == window.start_ms)
        .flat_map(|p| p.rows.iter())
        .filter(|r| r.level == 5)
        .map(|r| r.n_total)
        .sum();
    assert_eq!(first, 40);
    Ok(())
}

/// Produces 40 records into the current window; waits until both shards
/// have published three windows; returns the window and every part.
async fn produce_and_collect(
    submissions: &str,
    releases: &str,
) -> anyhow::Result<(Window, Vec<Release>)> {
    // Records in the first window, from several contributors.
    let producer = producer()?;
    let window_len = WindowLength::from_secs(WINDOW_SECS).unwrap();
    let window = Window::containing(now_ms(), window_len);
    for i in 0..40u8 {
        let record = CoarseRecord {
            window,
            window_length: window_len,
            region: RegionCell::from_coordinate(
                -33.8 + f64::from(i % 4),
                151.2,
                RegionResolution::new(5).unwrap(),
            )
            .unwrap(),
            age_band: AgeBand::ALL[usize::from(i) % 6],
            risk: RiskLevel::ALL[usize::from(i) % 3],
            symptoms: SymptomSet::default(),
            contributor: ContributorKey([i; 16]),
        };
        produce_sealed(&producer, submissions, &format!("k{i}"), &record).await?;
    }
    producer.flush(Duration::from_secs(10))?;

    // Both shards publish their parts of three windows.
    let topic = releases.to_string();
    let parts = eventually("three whole windows", Duration::from_secs(90), || {
        let topic = topic.clone();
        async move {
            let parts: Vec<Release> = tokio::task::spawn_blocking(move || {
                committed_records_on(&brokers(), &topic).map(|records| {
                    records
                        .iter()
                        .filter_map(|(_, v)| Release::from_ipc(v).ok())
                        .collect()
                })
            })
            .await??;
            let mut windows: BTreeMap<i64, usize> = BTreeMap::new();
            for p in &parts {
                *windows.entry(p.meta.window_start).or_default() += 1;
            }
            Ok((windows.values().filter(|n| **n >= 2).count() >= 3).then_some(parts))
        }
    })
    .await?;
    Ok((window, parts))
}
