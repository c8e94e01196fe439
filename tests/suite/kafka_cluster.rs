//! The 3-node KRaft cluster of `deploy/kafka/cluster.sh` holds what
//! scale-out relies on: every partition of Hushmap's topics on 3 replicas
//! and writes needing 2 in sync; a node killed (`kill -9`) in the middle of
//! `acks=all` production loses, duplicates and refuses nothing; back up, it
//! rejoins every in-sync replica set.

use hushmap_schema::topics;
use hushmap_testkit::{KafkaCluster, topic_config_on, topic_records_on, wait_until};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeSet;
use std::time::Duration;

/// Per partition of `topic`: (replicas, in-sync replicas).
async fn replication(bootstrap: &str, topic: &'static str) -> anyhow::Result<Vec<(usize, usize)>> {
    let bootstrap = bootstrap.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        Ok(metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions())
            .map(|p| (p.replicas().len(), p.isr().len()))
            .collect())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_cluster_loses_nothing_when_a_node_dies() -> anyhow::Result<()> {
    let cluster =
        tokio::task::spawn_blocking(|| KafkaCluster::start_fresh(KafkaCluster::DEFAULT_BASE))
            .await??;
    let bootstrap = cluster.bootstrap();

    for topic in [topics::SUBMISSIONS, topics::BOUNDED, topics::RELEASES] {
        let partitions = replication(&bootstrap, topic).await?;
        assert!(!partitions.is_empty(), "{topic} exists");
        assert!(
            partitions
                .iter()
                .all(|&(replicas, isr)| replicas == 3 && isr == 3),
            "{topic}: {partitions:?}"
        );
        let config = topic_config_on(&bootstrap, topic).await?;
        assert_eq!(config["min.insync.replicas"], "2", "{topic}");
    }

    // As ingest produces: idempotent, acks=all.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()?;
    let send = |i: u32| {
        let producer = producer.clone();
        async move {
            let payload = format!("record-{i}");
            producer
                .send(
                    FutureRecord::to(topics::SUBMISSIONS)
                        .key(&format!("key-{}", i % 97))
                        .payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map(drop)
                .map_err(|(e, _)| anyhow::anyhow!("record {i} refused: {e}"))
        }
    };
    for i in 0..150 {
        send(i).await?;
    }
    let c = &cluster;
    tokio::task::block_in_place(|| c.kill9(2))?;
    // Partitions led by node 2 move; every record is still acknowledged.
    for i in 150..300 {
        send(i).await?;
    }
    let during = replication(&bootstrap, topics::SUBMISSIONS).await?;
    eprintln!("node 2 down: (replicas, isr) per partition {during:?}");

    let records = {
        let bootstrap = bootstrap.clone();
        tokio::task::spawn_blocking(move || topic_records_on(&bootstrap, topics::SUBMISSIONS))
            .await??
    };
    let payloads: BTreeSet<Vec<u8>> = records.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(records.len(), 300, "lost or duplicated records");
    assert_eq!(payloads.len(), 300);

    tokio::task::block_in_place(|| c.start(2))?;
    wait_until(
        "node 2 back in every ISR",
        Duration::from_secs(60),
        || async {
            let partitions = replication(&bootstrap, topics::SUBMISSIONS).await?;
            Ok(partitions.iter().all(|&(_, isr)| isr == 3).then_some(()))
        },
    )
    .await?;
    Ok(())
}
