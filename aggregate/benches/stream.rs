//! The streaming aggregator's sustained consumption against a raw rdkafka
//! consumer loop, on the same topic of the local broker.
//!
//! ```text
//! deploy/kafka/up.sh
//! BENCH_RECORDS=1000000 cargo bench -p hushmap-aggregate --bench stream
//! ```
//!
//! `BENCH_RECORDS` coarse records (one window), sealed as ingest seals them
//! (116 bytes each), are produced
//! to a fresh 3-partition topic first. Then, each from the beginning of the
//! topic:
//! - `raw`: a `BaseConsumer` with the aggregator's consumer settings,
//!   assigned every partition, polling until it has seen every record
//!   (payloads touched, nothing opened or decoded) — the ceiling;
//! - `aggregator`: the real [`Aggregator`] (its reader thread opens and
//!   decodes, its worker windows and buffers), timed until its
//!   `records_accepted` counter reaches `BENCH_RECORDS`.

use hushmap_aggregate::{AggregateConfig, Aggregator};
use hushmap_schema::{
    AgeBand, CoarseRecord, ContributorKey, RiskLevel, SymptomSet, Window, WindowLength,
};
use hushmap_service::consumer::committed_reader;
use hushmap_testkit::{brokers, create_topics, now_ms, payload_keyring, unique};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod support;
use support::env_usize;
#[path = "support/backlog.rs"]
mod backlog;
use backlog::Backlog;

async fn produce(topic: &str, n: usize, window: Window) -> anyhow::Result<()> {
    let mut backlog = Backlog::new()?;
    let len = WindowLength::ONE_DAY;
    let regions = backlog::regions()?;
    let sealer = backlog::ingest_sealer();
    for i in 0..n {
        let record = CoarseRecord {
            window,
            window_length: len,
            region: regions[i % regions.len()],
            age_band: AgeBand::ALL[i % 6],
            risk: RiskLevel::ALL[i % 3],
            symptoms: SymptomSet::default(),
            contributor: ContributorKey(((i / 2) as u128).to_le_bytes()),
        };
        let key = record.region.raw().to_le_bytes();
        // Sealed as ingest does (one HPKE encapsulation an epoch): opening
        // is part of the aggregator's cost.
        let payload = sealer.seal(&record);
        backlog
            .send(FutureRecord::to(topic).key(&key).payload(&payload))
            .await?;
    }
    backlog.acknowledged().await?;
    Ok(())
}

fn raw_loop(topic: &str, n: usize) -> anyhow::Result<Duration> {
    // The aggregator's own consumer settings, so the ceiling reads as it
    // does.
    let consumer: BaseConsumer = committed_reader(
        ClientConfig::new().set("bootstrap.servers", brokers()),
        &unique("bench.raw"),
    )
    .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let start = Instant::now();
    let (mut seen, mut bytes) = (0usize, 0usize);
    while seen < n {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            bytes += m?.payload().map_or(0, <[u8]>::len);
            seen += 1;
        } else if start.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("the raw consumer read {seen} of {n} records in 2 minutes");
        }
    }
    assert!(bytes > 0);
    Ok(start.elapsed())
}

async fn aggregator(topic: &str, n: usize, window: Window) -> anyhow::Result<Duration> {
    let mut config = AggregateConfig {
        payload_keys: Some(payload_keyring()),
        // The schedule starts with the records' window: without an epoch
        // it starts after the window open at start-up, and every record
        // of that window is late.
        schedule_epoch: Some(window.start_ms.to_string()),
        ..AggregateConfig::default()
    };
    config.kafka.brokers = brokers();
    config.kafka.input_topic = topic.to_string();
    config.kafka.output_topic = unique("bench.releases");
    config.kafka.group_id = unique("bench.aggregate");
    config.kafka.transactional_id = unique("bench.txn");
    config.metrics_listen = "127.0.0.1:0".parse()?;
    create_topics(&[(&config.kafka.output_topic, 1)]).await?;
    let aggregator = Aggregator::new(config)?;
    let stats = aggregator.stats();
    let start = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(aggregator.run(async move {
        let _ = stop_rx.await;
    }));
    // A bench that stops making progress fails with what it saw, rather
    // than waiting for ever (a record refused is never accepted).
    let (mut last, mut since) = (0, Instant::now());
    loop {
        let accepted = stats.records_accepted.load(Ordering::Relaxed);
        let seen =
            accepted + stats.records_dropped.total() + stats.records_late.load(Ordering::Relaxed);
        if accepted >= n as u64 {
            break;
        }
        if seen > last {
            (last, since) = (seen, Instant::now());
        } else if since.elapsed() > Duration::from_secs(60) {
            anyhow::bail!(
                "the aggregator stalled: {accepted} of {n} records accepted, {} dropped, {} late",
                stats.records_dropped.total(),
                stats.records_late.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    let _ = stop_tx.send(());
    task.await??;
    Ok(elapsed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env_usize("BENCH_RECORDS", 1_000_000);
    let topic = unique("bench.submissions");
    create_topics(&[(&topic, 3)]).await?;
    // A window that stays open for the whole run: nothing is released.
    let window = Window::containing(now_ms(), WindowLength::ONE_DAY);
    eprintln!("bench: producing {n} records to {topic}");
    produce(&topic, n, window).await?;
    let t = topic.clone();
    let raw = tokio::task::spawn_blocking(move || raw_loop(&t, n)).await??;
    eprintln!("bench: raw consumer read them in {raw:?}");
    let agg = aggregator(&topic, n, window).await?;
    eprintln!("bench: the aggregator accepted them in {agg:?}");
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("records,{n}");
    println!("raw_consumer_records_per_s,{:.0}", rate(raw));
    println!("aggregator_records_per_s,{:.0}", rate(agg));
    println!(
        "ratio_aggregator_vs_raw,{:.2}",
        raw.as_secs_f64() / agg.as_secs_f64()
    );
    Ok(())
}
