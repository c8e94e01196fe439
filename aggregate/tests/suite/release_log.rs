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
    assert_eq!(hours(&mut log), vec![0, 1, 3], "committed only");
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
    assert_eq!(hours(&mut log), vec![5], "past the open transaction");
    b.commit_transaction(Duration::from_secs(30))?;
    assert_eq!(hours(&mut log), vec![4], "once it commits");

    // A fresh log reads the whole history.
    let mut fresh = ReleaseLog::new(&config)?;
    assert_eq!(hours(&mut fresh), vec![0, 1, 3, 4, 5]);
    Ok(())
}
