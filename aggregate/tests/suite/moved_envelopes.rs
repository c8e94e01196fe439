//! An envelope opens only on the topic it was sealed for, and stage 2 takes
//! records and watermarks only from stage 1. The attacks of someone who can
//! write to the topics and holds what ingest holds (the public key):
//!
//! * copy submissions onto the bounded topic, or seal new ones there, to
//!   skip contribution bounding;
//! * copy stage 1's messages back onto the submissions topic;
//! * write watermarks in the clear claiming every submissions partition is
//!   done for the next hour, to make stage 2 release windows early.
//!
//! Each must be refused and counted, and change no released number and no
//! release time. Real broker, in-process partitioned aggregator.

use crate::common;

use common::{
    PARTITIONS, Topics, counted, current_window, partitioned_config, record, run_beside,
    watch_releases,
};
use hushmap_aggregate::PartitionedAggregator;
use hushmap_aggregate::intake::DropReason;
use hushmap_schema::{BoundedMessage, Watermark};
use hushmap_testkit::{now_ms, payload_keyring, payload_public_key, producer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::time::Duration;

const GENUINE: u8 = 24;
/// Fresh sealings of one contributor's record to the public key, written
/// straight onto the bounded topic (each has its own seal, so replay
/// detection alone would not stop them).
const FORGED_PER_PARTITION: usize = 8;
/// Stage-1 messages copied back onto the submissions topic.
const COPIED_BACK: usize = 5;

async fn send_raw(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    payload: &[u8],
) -> anyhow::Result<()> {
    producer
        .send(
            FutureRecord::<(), [u8]>::to(topic)
                .partition(partition)
                .payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_envelopes_and_forged_watermarks_are_refused_and_counted() -> anyhow::Result<()> {
    let topics = Topics::create("moved").await?;
    let aggregator = PartitionedAggregator::new(partitioned_config(&topics, "moved")?)?;
    let stats = aggregator.stats();
    let (window, forged_watermarks_at, parts) = run_beside(aggregator, attack(&topics)).await?;

    // Counted: each moved or forged message, by its reason.
    let dropped = |reason| stats.records_dropped.get(reason);
    let moved =
        PARTITIONS as u64 * (FORGED_PER_PARTITION as u64 + u64::from(GENUINE)) + COPIED_BACK as u64;
    assert!(
        dropped(DropReason::WrongPurpose) >= moved,
        "{} of {moved} moved envelopes counted as wrong_purpose",
        dropped(DropReason::WrongPurpose)
    );
    assert!(
        dropped(DropReason::Unsealed) >= PARTITIONS as u64,
        "forged watermarks not counted as unsealed"
    );
    // Refused: the window holds exactly the genuine records (huge ε: exact).
    assert_eq!(counted(&parts, window), i64::from(GENUINE));
    // And no window was released before it ended: the forged watermarks
    // (written early in the first window) moved nothing.
    for p in &parts {
        let end = p.release.meta.window_end;
        assert!(
            p.first_seen_ms >= end,
            "window {}..{end} released at {} (forged watermarks at {forged_watermarks_at})",
            p.release.meta.window_start,
            p.first_seen_ms
        );
    }
    Ok(())
}

/// Waits for a fresh window, sends the genuine records and every attack
/// early in it, and watches three windows' releases.
async fn attack(
    topics: &Topics,
) -> anyhow::Result<(hushmap_schema::Window, i64, Vec<common::SeenPart>)> {
    // Early in a window, so an early release would be seconds early.
    let next = current_window().end_ms;
    tokio::time::sleep(Duration::from_millis((next - now_ms() + 100).max(0) as u64)).await;
    let window = current_window();
    let producer = producer()?;
    let public = payload_public_key();
    let bounded_keys = payload_keyring().bounded_keyring();

    // Forged watermarks first: in the clear, every submissions partition
    // done for the next hour.
    for partition in 0..PARTITIONS {
        let mark = BoundedMessage::Watermark(Watermark {
            partition: partition as u32,
            partitions: PARTITIONS as u32,
            through_ms: now_ms() + 3_600_000,
            windows: Vec::new(),
        });
        send_raw(&producer, &topics.bounded, partition, &mark.encode()).await?;
    }
    let forged_watermarks_at = now_ms();

    let mut genuine = Vec::new();
    for i in 0..GENUINE {
        let sealed = public.seal(&record(window, i));
        send_raw(
            &producer,
            &topics.submissions,
            i32::from(i) % PARTITIONS,
            &sealed,
        )
        .await?;
        genuine.push(sealed);
    }
    // The genuine envelopes copied onto the bounded topic, and a stolen
    // ingest's fresh sealings of one contributor's record there.
    for partition in 0..PARTITIONS {
        for sealed in &genuine {
            send_raw(&producer, &topics.bounded, partition, sealed).await?;
        }
        for _ in 0..FORGED_PER_PARTITION {
            let forged = public.seal(&record(window, 0));
            send_raw(&producer, &topics.bounded, partition, &forged).await?;
        }
    }
    // Stage-1 messages (sealed as stage 1 seals them) copied onto the
    // submissions topic.
    for i in 0..COPIED_BACK {
        let message = bounded_keys.seal(&BoundedMessage::Record(record(window, 100 + i as u8)));
        send_raw(&producer, &topics.submissions, 0, &message).await?;
    }
    producer.flush(Duration::from_secs(10))?;
    Ok((
        window,
        forged_watermarks_at,
        watch_releases(&topics.releases, 3).await?,
    ))
}
