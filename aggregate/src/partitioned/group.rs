//! What both stages need from Kafka: a consumer-group member that reports
//! its rebalances ([`start_stage`] also makes the stage's transactional
//! producer), the loop that drives a stage, and committed positions with
//! the state each stage keeps in its offset-commit metadata.

use crate::config::AggregateConfig;
use crate::error::AggregatorError;
use crate::resume::{Committed, committed_positions, partition_count, require_broker_timestamps};
use crate::transactions::Transactions;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// A change of the partitions this member owns.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GroupEvent {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Passes rebalances to the stage's loop. librdkafka calls these from
/// inside the consumer's poll, which only the stage's own task drives, so
/// the loop sees a revocation before it can start another transaction.
pub(crate) struct GroupContext {
    events: mpsc::Sender<GroupEvent>,
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        hushmap_service::consumer::QuietEofContext.error(error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let _ = self.events.send(GroupEvent::Revoked(partitions_of(tpl)));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let _ = self.events.send(GroupEvent::Assigned(partitions_of(tpl)));
        }
    }
}

pub(crate) type GroupConsumer = StreamConsumer<GroupContext>;

/// A stage's place in its consumer group: the consumer, the rebalances it
/// reports, and the topic it reads.
pub(crate) struct GroupMember {
    pub consumer: Arc<GroupConsumer>,
    events: mpsc::Receiver<GroupEvent>,
    topic: String,
}

impl GroupMember {
    /// Applies the rebalances librdkafka reported during the last poll:
    /// revoked partitions' state is dropped, assigned ones start from their
    /// committed positions.
    fn apply_events(&self, stage: &mut impl Stage) -> Result<(), AggregatorError> {
        while let Ok(event) = self.events.try_recv() {
            match event {
                GroupEvent::Revoked(partitions) => {
                    stage.revoke(&partitions);
                    tracing::info!(
                        topic = %self.topic,
                        partitions = partitions.len(),
                        "partitions revoked; their state dropped"
                    );
                }
                GroupEvent::Assigned(partitions) => {
                    let committed =
                        committed_positions(self.consumer.as_ref(), &self.topic, &partitions)?;
                    stage.assign(committed)?;
                    tracing::info!(
                        topic = %self.topic,
                        partitions = partitions.len(),
                        "partitions assigned"
                    );
                }
            }
        }
        Ok(())
    }
}

/// One stage's reactions; [`drive`] runs its loop.
pub(crate) trait Stage {
    /// Forgets everything about these partitions: another member owns
    /// them now.
    fn revoke(&mut self, partitions: &[i32]);
    /// Starts owning these partitions, from their committed positions.
    fn assign(&mut self, committed: HashMap<i32, Committed>) -> Result<(), AggregatorError>;
    fn on_message(&mut self, message: &BorrowedMessage<'_>);
    /// Periodic work: forwarding or publishing what is due.
    async fn on_tick(&mut self) -> Result<(), AggregatorError>;
}

/// After a failed transaction, whose outcome this member cannot be sure
/// of (a replaced producer's initialisation may still let it commit):
/// forgets `partition` and reads it again from its committed position,
/// which says exactly what was forwarded or published.
pub(crate) fn rewind(
    stage: &mut impl Stage,
    consumer: &GroupConsumer,
    topic: &str,
    partition: i32,
) -> Result<(), AggregatorError> {
    let committed = committed_positions(consumer, topic, &[partition])?;
    let offset = committed.get(&partition).map(|c| c.offset);
    stage.revoke(&[partition]);
    stage.assign(committed)?;
    if let Some(offset) = offset {
        consumer.seek(
            topic,
            partition,
            Offset::Offset(offset),
            Duration::from_secs(10),
        )?;
    }
    tracing::info!(
        topic,
        partition,
        "partition rewound to its committed position"
    );
    Ok(())
}

/// Runs `stage` on `consumer` until `shutdown` resolves or it fails.
/// Rebalance events are applied after every poll and before every tick,
/// so no transaction starts on a partition already revoked.
pub(crate) async fn drive(
    stage: &mut impl Stage,
    member: &GroupMember,
    tick_ms: u64,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AggregatorError> {
    let mut tick = tokio::time::interval(Duration::from_millis(tick_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!(topic = %member.topic, "stopping; open windows resume from Kafka");
                return Ok(());
            }
            msg = member.consumer.recv() => {
                member.apply_events(stage)?;
                match msg {
                    Ok(m) => stage.on_message(&m),
                    Err(e) => tracing::warn!(error = %e, "consumer error"),
                }
            }
            _ = tick.tick() => {
                member.apply_events(stage)?;
                stage.on_tick().await?;
            }
        }
    }
}

/// A member of `group_id` subscribed to `topic`, reading committed data
/// only, with its rebalance events.
fn group_member(
    config: &AggregateConfig,
    group_id: &str,
    topic: &str,
) -> Result<GroupMember, AggregatorError> {
    let (tx, rx) = mpsc::channel();
    let mut client = config.kafka.security.client_config(&config.kafka.brokers)?;
    let consumer: GroupConsumer =
        hushmap_service::consumer::committed_reader(&mut client, group_id)
            .set(
                "session.timeout.ms",
                config.kafka.session_timeout_ms.to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (config.kafka.session_timeout_ms / 4).max(100).to_string(),
            )
            .create_with_context(GroupContext { events: tx })?;
    consumer.subscribe(&[topic])?;
    Ok(GroupMember {
        consumer: Arc::new(consumer),
        events: rx,
        topic: topic.to_string(),
    })
}

/// What each stage starts with: its group membership, the partition counts
/// of the submissions topic (P₁) and the bounded topic (P₂, the shards),
/// and its transactional producer.
pub(crate) struct StageStart {
    pub member: GroupMember,
    pub inputs: u32,
    pub shards: u32,
    pub txn: Transactions,
}

/// Joins group `<group_id>-<stage>` on `topic` and makes the producer
/// `<transactional_id>-<stage>-<instance>`.
pub(crate) fn start_stage(
    config: &AggregateConfig,
    stage: &str,
    topic: &str,
    instance: &str,
) -> Result<StageStart, AggregatorError> {
    let k = &config.kafka;
    if topic == k.input_topic {
        // The stage that judges lateness by the submissions' timestamps.
        require_broker_timestamps(k)?;
    }
    let member = group_member(config, &format!("{}-{stage}", k.group_id), topic)?;
    let inputs = partition_count(member.consumer.as_ref(), &k.input_topic)?;
    let shards = partition_count(member.consumer.as_ref(), &k.bounded_topic)?;
    let txn = Transactions::new(config, format!("{}-{stage}-{instance}", k.transactional_id))?;
    tracing::info!(stage, inputs, shards, "stage joined its group");
    Ok(StageStart {
        member,
        inputs,
        shards,
        txn,
    })
}

/// Queues `record` on `producer`, waiting while its queue is full (a large
/// window's transaction may hold more records than the queue).
pub(crate) async fn send_queued(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, (), [u8]>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send_result(record) {
            // Not awaited: commit_transaction flushes it, and fails if it failed.
            Ok(_delivery) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}
