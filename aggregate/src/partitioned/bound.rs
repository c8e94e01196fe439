//! Stage 1, "bound": per submissions partition, keep each contributor's
//! latest `m` records of a window; when the window is due, forward them
//! (still sealed) to the bounded-topic partition of their region's shard,
//! and tell every stage-2 partition how far this partition is done.
//!
//! Ingest keys submissions by contributor and window, so all of one
//! contributor's records of a window are in one partition, read in offset
//! order: keeping the latest `m` here keeps exactly what one aggregator's
//! `MAX(seq)` keeps.
//!
//! A window of partition `p` is due once its deadline (end + allowed
//! lateness) has passed on the clock and in what has been read from `p`
//! (its latest record's produce time, or the last instant its leader,
//! asked, held nothing more than had been read). Each
//! tick forwards the due windows of every owned partition, for each a
//! [`Watermark`] to every stage-2 partition (naming no windows: stage 2
//! publishes every window by the clock), and the partitions' offsets,
//! in one transaction; the offset never passes
//! the first record of a window still open, and its commit metadata holds
//! the watermark, so a new owner after a rebalance rebuilds exactly the
//! open windows and skips the forwarded ones.

use super::group::{self, GroupConsumer, GroupMember, Stage, StageStart, send_queued};
use crate::config::AggregateConfig;
use crate::error::AggregatorError;
use crate::intake::{DropReason, has_room};
use crate::metrics::AggregatorStats;
use crate::resume::Committed;
use hushmap_schema::{
    BoundedKeyring, BoundedMessage, CoarseRecord, ContributorKey, PayloadKeyring, Watermark,
    Window, WindowLength,
};
use hushmap_service::clock::now_ms;
use hushmap_service::consumer::EndProbe;
use hushmap_service::runtime::blocking;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Commit metadata of a submissions partition: `through=<ms>`.
const THROUGH: &str = "through=";

/// A kept record and the stage-2 partition it goes to. Sealed afresh when
/// forwarded (a new nonce), so the bounded topic's bytes cannot be matched
/// to the submission they came from, nor to its key.
struct Kept {
    record: CoarseRecord,
    shard: u32,
}

/// One window of one partition.
struct BoundWindow {
    first_offset: i64,
    seals: HashSet<u128>,
    /// A record was refused for the buffer cap.
    full: bool,
    /// Each contributor's latest `m` records, oldest first.
    kept: HashMap<ContributorKey, VecDeque<Kept>>,
}

/// What this instance holds for one owned submissions partition.
struct OwnedPartition {
    /// Every window ending at or before this has been forwarded.
    forwarded_through: i64,
    /// The offset after the last one read.
    next_offset: i64,
    latest_arrival: Option<i64>,
    /// The last instant the partition's leader, asked, held nothing beyond
    /// `next_offset`.
    read_to_end_at: Option<i64>,
    windows: BTreeMap<i64, BoundWindow>,
}

pub(crate) struct BoundStage {
    /// Opens submissions.
    keyring: PayloadKeyring,
    /// Seals what goes to stage 2.
    bounded: BoundedKeyring,
    window_length: WindowLength,
    lateness_ms: i64,
    max_records: usize,
    /// `max_buffered_records_per_window`.
    max_buffered: usize,
    coarsest: u8,
    input_topic: String,
    bounded_topic: String,
    consumer: Arc<GroupConsumer>,
    txn: crate::transactions::Transactions,
    /// Partitions of the submissions topic (P₁) and the bounded topic (P₂).
    inputs: u32,
    shards: u32,
    owned: BTreeMap<i32, OwnedPartition>,
    /// Asks the owned partitions' leaders where they end.
    ends: EndProbe,
    stats: Arc<AggregatorStats>,
}

impl OwnedPartition {
    /// How far the partition has been read, in produce time.
    fn frontier(&self) -> Option<i64> {
        self.latest_arrival.max(self.read_to_end_at)
    }
}

fn parse_through(metadata: &str) -> Result<i64, AggregatorError> {
    if metadata.is_empty() {
        return Ok(i64::MIN);
    }
    metadata
        .strip_prefix(THROUGH)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            AggregatorError::Recovery(format!(
                "unreadable stage-1 commit metadata {metadata:?}; refusing to guess what was forwarded"
            ))
        })
}

impl BoundStage {
    pub(crate) fn new(
        config: &AggregateConfig,
        instance: &str,
        stats: Arc<AggregatorStats>,
    ) -> Result<(BoundStage, GroupMember), AggregatorError> {
        let k = &config.kafka;
        let StageStart {
            member,
            inputs,
            shards,
            txn,
        } = group::start_stage(config, "bound", &k.input_topic, instance)?;
        let keyring = config.payload_keyring()?;
        let stage = BoundStage {
            bounded: keyring.bounded_keyring(),
            keyring,
            window_length: config.window_length(),
            lateness_ms: i64::from(config.allowed_lateness_secs) * 1000,
            max_records: config.bounds().max_records_per_window as usize,
            max_buffered: config.max_buffered_records_per_window,
            coarsest: config.coarsest_level(),
            input_topic: k.input_topic.clone(),
            bounded_topic: k.bounded_topic.clone(),
            consumer: member.consumer.clone(),
            txn,
            inputs,
            shards,
            owned: BTreeMap::new(),
            ends: EndProbe::default(),
            stats,
        };
        Ok((stage, member))
    }
}

impl Stage for BoundStage {
    fn revoke(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.owned.remove(p);
        }
    }

    fn assign(&mut self, committed: HashMap<i32, Committed>) -> Result<(), AggregatorError> {
        for (p, Committed { offset, metadata }) in committed {
            let owned = OwnedPartition {
                forwarded_through: parse_through(&metadata)?,
                next_offset: offset,
                latest_arrival: None,
                read_to_end_at: None,
                windows: BTreeMap::new(),
            };
            self.owned.insert(p, owned);
        }
        Ok(())
    }

    async fn on_tick(&mut self) -> Result<(), AggregatorError> {
        self.forward_due(now_ms()).await
    }

    fn on_message(&mut self, message: &BorrowedMessage<'_>) {
        let (partition, offset, payload) =
            (message.partition(), message.offset(), message.payload());
        let arrived_ms = message
            .timestamp()
            .to_millis()
            .unwrap_or_else(super::now_ms);
        // Only from a partition we own (a message fetched before its
        // revocation is ignored: the new owner reads it again).
        let Some(owned) = self.owned.get_mut(&partition) else {
            return;
        };
        owned.next_offset = offset + 1;
        owned.latest_arrival = Some(
            owned
                .latest_arrival
                .map_or(arrived_ms, |a| a.max(arrived_ms)),
        );
        let Some((record, seal_id)) =
            self.stats
                .records_dropped
                .opened(&self.keyring, self.window_length, payload)
        else {
            return;
        };
        let window = record.window;
        if window.end_ms <= owned.forwarded_through
            || window.end_ms.saturating_add(self.lateness_ms) <= arrived_ms
        {
            self.stats.records_late.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(shard) = record.region.shard(self.coarsest, self.shards) else {
            self.stats.records_dropped.add(DropReason::InvalidRecord);
            return;
        };
        let bucket = owned
            .windows
            .entry(window.start_ms)
            .or_insert_with(|| BoundWindow {
                first_offset: offset,
                seals: HashSet::new(),
                kept: HashMap::new(),
                full: false,
            });
        if bucket.seals.contains(&seal_id) {
            self.stats.records_dropped.add(DropReason::Replayed);
            return;
        }
        if !has_room(
            bucket.seals.len(),
            self.max_buffered,
            &mut bucket.full,
            window.start_ms,
        ) {
            self.stats.records_dropped.add(DropReason::WindowFull);
            return;
        }
        bucket.seals.insert(seal_id);
        let kept = bucket.kept.entry(record.contributor).or_default();
        kept.push_back(Kept { record, shard });
        if kept.len() > self.max_records {
            kept.pop_front();
        }
        self.stats.records_accepted.fetch_add(1, Ordering::Relaxed);
    }
}

impl BoundStage {
    /// Forwards every window now due, of every owned partition, in one
    /// transaction: a transaction costs a round of commit markers whatever
    /// it holds.
    async fn forward_due(&mut self, now: i64) -> Result<(), AggregatorError> {
        self.ask_partition_ends(now);
        let mut steps = Vec::new();
        for (&p, owned) in &self.owned {
            let Some(frontier) = owned.frontier().map(|t| t.min(now)) else {
                continue;
            };
            let Some(deadline) = frontier.checked_sub(self.lateness_ms) else {
                continue;
            };
            // The last window end at or before the deadline.
            let through = Window::containing(deadline, self.window_length).start_ms;
            if through > owned.forwarded_through {
                steps.push((p, through));
            }
        }
        if !steps.is_empty() {
            match self.forward(&steps).await {
                Ok(()) => self.forwarded(&steps),
                Err(e) => {
                    tracing::warn!(partitions = steps.len(), error = %e, "stage 1 transaction failed; will retry");
                    self.txn.recover();
                    let (consumer, topic) = (self.consumer.clone(), self.input_topic.clone());
                    for (p, _) in &steps {
                        group::rewind(self, &consumer, &topic, *p)?;
                    }
                }
            }
        }
        let open: usize = self.owned.values().map(|o| o.windows.len()).sum();
        self.stats
            .open_windows
            .store(open as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Asks the leaders of the owned partitions whose next step is due by
    /// the clock but not by what has been read whether they hold anything
    /// more (at most once a second, a round trip each; see [`EndProbe`]).
    fn ask_partition_ends(&mut self, now: i64) {
        let step = self.window_length.millis() + self.lateness_ms;
        let reading: Vec<(i32, i64)> = self
            .owned
            .iter()
            .filter(|(_, o)| {
                // Forwarding moves on once the end of the window after
                // `forwarded_through` is this far behind.
                let needed = o.forwarded_through.saturating_add(step);
                needed <= now && o.frontier().is_none_or(|f| f < needed)
            })
            .map(|(p, o)| (*p, o.next_offset))
            .collect();
        let Some((asked_at, at_end)) = self.ends.ask(&*self.consumer, &self.input_topic, &reading)
        else {
            return;
        };
        for p in at_end {
            if let Some(o) = self.owned.get_mut(&p) {
                o.read_to_end_at = Some(o.read_to_end_at.map_or(asked_at, |t| t.max(asked_at)));
            }
        }
    }

    /// The windows of partition `p` that end by `through`.
    fn due(&self, p: i32, through: i64) -> Vec<i64> {
        let length = self.window_length.millis();
        self.owned[&p]
            .windows
            .keys()
            .copied()
            .filter(|start| start.saturating_add(length) <= through)
            .collect()
    }

    /// One transaction: for each `(p, through)`, partition `p`'s windows
    /// ending by `through`, a watermark to every shard, and `p`'s offset
    /// with the new watermark in its commit metadata.
    async fn forward(&self, steps: &[(i32, i64)]) -> Result<(), AggregatorError> {
        let group = self.consumer.group_metadata().ok_or_else(|| {
            AggregatorError::Recovery("no consumer group metadata for the transaction".into())
        })?;
        let mut offsets = TopicPartitionList::new();
        self.txn.producer.begin_transaction()?;
        for &(p, through) in steps {
            let owned = &self.owned[&p];
            let due = self.due(p, through);
            for start in &due {
                for kept in owned.windows[start].kept.values().flatten() {
                    let payload = self.bounded.seal(&BoundedMessage::Record(kept.record));
                    let record = FutureRecord::to(&self.bounded_topic)
                        .partition(kept.shard as i32)
                        .payload(payload.as_slice());
                    send_queued(&self.txn.producer, record).await?;
                }
            }
            // Stage 2 publishes every window by the clock, so the watermark
            // names none: which windows had records is not the broker's to see.
            let mark = self.bounded.seal(&BoundedMessage::Watermark(Watermark {
                partition: p as u32,
                partitions: self.inputs,
                through_ms: through,
                windows: Vec::new(),
            }));
            for shard in 0..self.shards {
                let record = FutureRecord::to(&self.bounded_topic)
                    .partition(shard as i32)
                    .payload(mark.as_slice());
                send_queued(&self.txn.producer, record).await?;
            }
            let commit_offset = owned
                .windows
                .iter()
                .filter(|(start, _)| !due.contains(start))
                .map(|(_, w)| w.first_offset)
                .min()
                .unwrap_or(owned.next_offset);
            let mut position = offsets.add_partition(&self.input_topic, p);
            position.set_offset(Offset::Offset(commit_offset))?;
            position.set_metadata(format!("{THROUGH}{through}"));
        }
        // Both wait on the transaction coordinator for up to the timeout:
        // off this worker.
        blocking(|| {
            self.txn
                .producer
                .send_offsets_to_transaction(&offsets, &group, self.txn.timeout())?;
            self.txn.commit()
        })?;
        Ok(())
    }

    /// Drops what a committed [`forward`](Self::forward) sent.
    fn forwarded(&mut self, steps: &[(i32, i64)]) {
        for &(p, through) in steps {
            let due = self.due(p, through);
            let owned = self.owned.get_mut(&p).expect("still owned: no poll since");
            for start in &due {
                owned.windows.remove(start);
            }
            owned.forwarded_through = through;
            // How many contributors a partition kept is an exact count of
            // people: not logged.
            if !due.is_empty() {
                tracing::info!(
                    partition = p,
                    windows = due.len(),
                    "stage 1 forwarded due windows"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_watermark_is_read_back_or_refused() {
        assert_eq!(parse_through("").unwrap(), i64::MIN);
        assert_eq!(parse_through("through=-20000").unwrap(), -20_000);
        assert!(parse_through("through=").is_err());
        assert!(parse_through("released=1;marks=").is_err());
    }
}
