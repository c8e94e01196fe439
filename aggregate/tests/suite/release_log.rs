//! [`ReleaseLog`] against the real broker: it sees committed releases only,
//! each once, resumes where it left off, skips what is not a release, and
//! is not held up by another producer's open transaction on a partition it
//! has nothing new to read from.

use hushmap_aggregate::AggregateConfig;
use hushmap_aggregate::release_log::ReleaseLog;
use hushmap_testkit::{brokers, create_topics, hourly_release, unique};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::time::Duration;

const HOUR_MS: i64 = 3_600_000;

fn release(hour: i64) -> Vec<u8> {
    hourly_release(hour, Vec::new()).to_ipc().unwrap()
}

fn producer(transactional_id: &str) -> ThreadedProducer<DefaultProducerContext> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("transactional.id", transactional_id)
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer
}

/// Sends `payloads` to `partition` in one transaction, then commits or
/// aborts it.
fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partition: i32,
    payloads: &[Vec<u8>],
    commit: bool,
) {
    producer.begin_transaction().unwrap();
    for payload in payloads {
        producer
            .send(
                BaseRecord::<(), _>::to(topic)
                    .partition(partition)
                    .payload(payload),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    if commit {
        producer
            .commit_transaction(Duration::from_secs(30))
            .unwrap();
    } else {
        producer.abort_transaction(Duration::from_secs(30)).unwrap();
    }
}

/// The hours of the windows read, in order.
fn hours(log: &mut ReleaseLog) -> Vec<i64> {
    let mut hours: Vec<i64> = log
        .read_new()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e.window.end_ms - e.window.start_ms, HOUR_MS);
            assert_eq!(e.id, format!("w{}", e.window.start_ms));
            assert_eq!(e.cost.rho, Some(0.01));
            (e.window.start_ms - 1_767_225_600_000) / HOUR_MS
        })
        .collect();
    hours.sort_unstable();
    hours
}

/// Reads until the releases read add up to `expected` (sorted), for up to
/// 10 s, and returns what was read. Why not one read: a transaction's
/// commit returns once the coordinator has logged it, and the markers that
/// make its records readable (`read_committed`) reach the partitions a
/// moment later; a read at once can stop short of them (once, in a full
/// run: `[]` where `[5]` was committed). Reading on cannot hide a
/// duplicate or an uncommitted record: either makes the sum differ from
/// `expected` for good.
fn hours_until(log: &mut ReleaseLog, expected: &[i64]) -> Vec<i64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut read = Vec::new();
    loop {
        read.extend(hours(log));
        read.sort_unstable();
        if read == expected || std::time::Instant::now() > deadline {
            return read;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_each_committed_release_once_and_resumes() -> anyhow::Result<()> {
    let topic = unique("release-log");
    create_topics(&[(&topic, 2)]).await?;
    let mut config = AggregateConfig::default();
    config.kafka.brokers = brokers();
    config.kafka.output_topic = topic.clone();
    config.kafka.group_id = unique("release-log-group");

    let mut log = ReleaseLog::new(&config)?;
    assert_eq!(hours(&mut log), Vec::<i64>::new(), "an empty topic");

    let a = producer(&unique("release-log-a"));
    send(&a, &topic, 0, &[release(0), release(1)], true);
    send(&a, &topic, 1, &[release(2)], false);
    send(
        &a,
        &topic,
        1,
        &[release(3), b"not a release".to_vec()],
        true,
    );
    assert_eq!(
        hours_until(&mut log, &[0, 1, 3]),
        vec![0, 1, 3],
        "committed only"
    );
    assert_eq!(hours(&mut log), Vec::<i64>::new(), "nothing new");

    // Another producer holds a transaction open on partition 0; what is
    // committed on partition 1 is still read, and the open one once it
    // commits.
    let b = producer(&unique("release-log-b"));
    b.begin_transaction()?;
    b.send(
        BaseRecord::<(), _>::to(&topic)
            .partition(0)
            .payload(&release(4)),
    )
    .map_err(|(e, _)| e)?;
    b.flush(Duration::from_secs(10))?;
    send(&a, &topic, 1, &[release(5)], true);
    assert_eq!(
        hours_until(&mut log, &[5]),
        vec![5],
        "past the open transaction"
    );
    b.commit_transaction(Duration::from_secs(30))?;
    assert_eq!(hours_until(&mut log, &[4]), vec![4], "once it commits");

    // A fresh log reads the whole history.
    let mut fresh = ReleaseLog::new(&config)?;
    assert_eq!(
        hours_until(&mut fresh, &[0, 1, 3, 4, 5]),
        vec![0, 1, 3, 4, 5]
    );
    assert_eq!(hours(&mut fresh), Vec::<i64>::new(), "read once");
    Ok(())
}
