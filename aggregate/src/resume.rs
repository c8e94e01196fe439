//! Where an aggregator's input partitions resume after a start, a
//! restart or a rebalance: the committed offset and the state committed
//! with it, or, for a partition never committed, its first offset still
//! held. Both topologies read their positions here.

use crate::error::AggregatorError;
use hushmap_service::runtime::blocking;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::Duration;

/// How many partitions `topic` has.
pub(crate) fn partition_count<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
) -> Result<u32, AggregatorError> {
    let metadata = blocking(|| consumer.fetch_metadata(Some(topic), Duration::from_secs(30)))?;
    let n = metadata
        .topics()
        .iter()
        .map(|t| t.partitions().len())
        .sum::<usize>();
    if n == 0 {
        return Err(AggregatorError::Recovery(format!(
            "topic {topic} has no partitions (does it exist?)"
        )));
    }
    Ok(n as u32)
}

/// Refuses an input topic whose records carry a time their producer chose.
///
/// Windows judge a record's lateness by its Kafka timestamp. Under the
/// topic default (`message.timestamp.type=CreateTime`) that is the
/// producer's clock at the time it called `send`, not when the record
/// became readable: a produce retried across a broker failover lands
/// seconds after its stamp, so an instance that has already closed the
/// window refuses it while another that has not (the single topology
/// beside the partitioned one, a restarted instance) counts it; and anyone
/// who may write to the topic can stamp records far ahead and close
/// windows early on everyone else's records. With `LogAppendTime` the
/// broker stamps each record as it appends it, and every reader sees the
/// same time.
pub(crate) fn require_broker_timestamps(
    kafka: &crate::config::KafkaSettings,
) -> Result<(), AggregatorError> {
    if kafka.trust_producer_timestamps {
        // Allowed in dev mode only (config validation), for benchmarks.
        tracing::warn!("reading producer timestamps as they are (kafka.trust_producer_timestamps)");
        return Ok(());
    }
    let topic = kafka.input_topic.as_str();
    let admin: AdminClient<DefaultClientContext> =
        kafka.security.client_config(&kafka.brokers)?.create()?;
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let resource = ResourceSpecifier::Topic(topic);
    let described =
        blocking(|| futures::executor::block_on(admin.describe_configs([&resource], &opts)))?;
    let found = described
        .into_iter()
        .next()
        .ok_or_else(|| AggregatorError::Recovery(format!("no description of topic {topic}")))?
        .map_err(|e| {
            AggregatorError::Recovery(format!(
                "describing topic {topic}: {e} (does it exist, and may this client DescribeConfigs?)"
            ))
        })?
        .get("message.timestamp.type")
        .and_then(|entry| entry.value.clone())
        .unwrap_or_else(|| "CreateTime".to_string());
    if found == "LogAppendTime" {
        Ok(())
    } else {
        Err(AggregatorError::ProducerTimestamps {
            topic: topic.to_string(),
            found,
        })
    }
}

/// Where a newly assigned partition resumes, and the state its last owner
/// committed with that offset.
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    /// The committed offset, or the partition's first offset if none.
    pub offset: i64,
    /// The commit's metadata ("" if none).
    pub metadata: String,
}

/// The committed positions of `partitions`, with retries while the group
/// coordinator is still loading.
pub(crate) fn committed_positions<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, Committed>, AggregatorError> {
    let mut wanted = TopicPartitionList::new();
    for &p in partitions {
        wanted.add_partition(topic, p);
    }
    // Both ask the brokers and wait: off the async worker.
    let committed = blocking(|| committed_offsets(consumer, wanted))?;
    let mut out = HashMap::new();
    for e in committed.elements() {
        let offset = match e.offset() {
            Offset::Offset(n) => n,
            // Never committed: from the first offset still held.
            _ => {
                blocking(|| {
                    consumer.fetch_watermarks(topic, e.partition(), Duration::from_secs(10))
                })?
                .0
            }
        };
        out.insert(
            e.partition(),
            Committed {
                offset,
                metadata: e.metadata().to_string(),
            },
        );
    }
    Ok(out)
}

/// [`hushmap_service::consumer::committed_offsets`], its failure a
/// [`CommittedOffsets`](AggregatorError::CommittedOffsets) error.
fn committed_offsets<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    wanted: TopicPartitionList,
) -> Result<TopicPartitionList, AggregatorError> {
    hushmap_service::consumer::committed_offsets(consumer, wanted)
        .map_err(AggregatorError::CommittedOffsets)
}
