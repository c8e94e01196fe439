//! Stage 2, "release": per bounded-topic partition (a shard of the
//! coarsest released cells), collect a window's bounded records and, once
//! every submissions partition's watermark has passed the window's end,
//! count, noise and publish this shard's part of the window.
//!
//! Each shard holds whole cell trees, so each of its counts (all levels)
//! is the same sum one aggregator would make; each record reached exactly
//! one shard and each contributor kept at most `m` records in the whole
//! window (stage 1), so the parts together are one release with the
//! single-instance sensitivity (docs/PRIVACY.md, "Partitioned
//! aggregation").
//!
//! Every shard publishes a part of every window any submissions partition
//! had records for (the watermarks list them), empty or not, so the
//! dashboard knows when a window is whole. Each tick publishes every
//! complete part of every owned shard in one transaction with the shards'
//! offsets, whose commit metadata records the
//! last window released and each submissions partition's watermark: a new
//! owner after a rebalance skips what was released and waits for nothing
//! it has already been told.
//!
//! The ledger: the first part of a window to be published authorises the
//! window; before authorising, an instance reads what is new on the
//! releases topic ([`ReleaseLog`]), so a window another instance already
//! authorised (any part of it on the topic) is accounted once, never twice,
//! and never re-decided.

use super::group::{self, Committed, GroupConsumer, GroupMember, Stage, StageStart};
use crate::config::AggregateConfig;
use crate::engine::{self, EngineError};
use crate::intake::DropReason;
use crate::ledger::{LedgerEntry, PrivacyLedger};
use crate::records::{SequencedRecord, to_record_batch};
use crate::release::{ReleasePlan, noisy_release};
use crate::release_log::ReleaseLog;
use crate::sensitivity::ContributionBounds;
use crate::stream::{AggregatorError, AggregatorStats};
use datafusion::prelude::SessionContext;
use hushmap_schema::release::ReleasePart;
use hushmap_schema::{BoundedMessage, PayloadKeyring, Release, Window, WindowLength};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// One window of one shard.
#[derive(Default)]
struct PartWindow {
    first_offset: Option<i64>,
    records: Vec<SequencedRecord>,
    seals: HashSet<u128>,
}

/// What this instance holds for one owned shard.
struct OwnedShard {
    /// Every window ending at or before this has been published here.
    released_through: i64,
    /// Per submissions partition, its latest watermark.
    marks: Vec<i64>,
    next_offset: i64,
    windows: BTreeMap<i64, PartWindow>,
}

impl OwnedShard {
    /// Windows every submissions partition is done with, oldest first.
    fn complete(&self, length: i64) -> Vec<i64> {
        let Some(&low) = self.marks.iter().min() else {
            return Vec::new();
        };
        self.windows
            .keys()
            .copied()
            .filter(|start| start.saturating_add(length) <= low)
            .collect()
    }

    /// `released=<ms>;marks=<ms>,<ms>,…`
    fn metadata(&self) -> String {
        let marks: Vec<String> = self.marks.iter().map(i64::to_string).collect();
        format!(
            "released={};marks={}",
            self.released_through,
            marks.join(",")
        )
    }

    fn from_metadata(
        metadata: &str,
        inputs: u32,
        offset: i64,
    ) -> Result<OwnedShard, AggregatorError> {
        let mut shard = OwnedShard {
            released_through: i64::MIN,
            marks: vec![i64::MIN; inputs as usize],
            next_offset: offset,
            windows: BTreeMap::new(),
        };
        if metadata.is_empty() {
            return Ok(shard);
        }
        let unreadable = || {
            AggregatorError::Recovery(format!(
                "unreadable stage-2 commit metadata {metadata:?}; refusing to guess what was released"
            ))
        };
        let (released, marks) = metadata
            .strip_prefix("released=")
            .and_then(|rest| rest.split_once(";marks="))
            .ok_or_else(unreadable)?;
        shard.released_through = released.parse().map_err(|_| unreadable())?;
        for (i, mark) in marks.split(',').filter(|m| !m.is_empty()).enumerate() {
            let mark: i64 = mark.parse().map_err(|_| unreadable())?;
            if i >= shard.marks.len() {
                shard.marks.resize(i + 1, i64::MIN);
            }
            shard.marks[i] = mark;
        }
        Ok(shard)
    }
}

pub(crate) struct PartStage {
    config: AggregateConfig,
    keyring: PayloadKeyring,
    window_length: WindowLength,
    bounds: ContributionBounds,
    coarsest: u8,
    consumer: Arc<GroupConsumer>,
    txn: crate::transactions::Transactions,
    inputs: u32,
    shards: u32,
    ctx: SessionContext,
    plan: ReleasePlan,
    /// Each shard's plan (its cut of the public region sets), made once.
    shard_plans: HashMap<u32, ReleasePlan>,
    ledger: PrivacyLedger,
    release_log: ReleaseLog,
    owned: BTreeMap<i32, OwnedShard>,
    next_seq: u64,
    stats: Arc<AggregatorStats>,
}

impl PartStage {
    pub(crate) fn new(
        config: &AggregateConfig,
        instance: &str,
        plan: ReleasePlan,
        stats: Arc<AggregatorStats>,
    ) -> Result<(PartStage, GroupMember), AggregatorError> {
        let k = &config.kafka;
        let StageStart {
            member,
            inputs,
            shards,
            txn,
        } = group::start_stage(config, "release", &k.bounded_topic, instance)?;
        let mut ledger = PrivacyLedger::new(config.budget());
        let mut release_log = ReleaseLog::new(config)?;
        for entry in release_log.read_new()? {
            ledger.restore(entry);
        }
        let stage = PartStage {
            keyring: config.payload_keyring()?,
            window_length: config.window_length(),
            bounds: config.bounds(),
            coarsest: config.coarsest_level(),
            consumer: member.consumer.clone(),
            txn,
            inputs,
            shards,
            ctx: SessionContext::new(),
            plan,
            shard_plans: HashMap::new(),
            ledger,
            release_log,
            owned: BTreeMap::new(),
            next_seq: 0,
            stats,
            config: config.clone(),
        };
        Ok((stage, member))
    }
}

impl Stage for PartStage {
    fn revoke(&mut self, shards: &[i32]) {
        for q in shards {
            self.owned.remove(q);
        }
    }

    fn assign(&mut self, committed: HashMap<i32, Committed>) -> Result<(), AggregatorError> {
        for (q, Committed { offset, metadata }) in committed {
            let shard = OwnedShard::from_metadata(&metadata, self.inputs, offset)?;
            self.owned.insert(q, shard);
        }
        Ok(())
    }

    fn on_caught_up(&mut self, _shard: i32) {}

    async fn on_tick(&mut self) -> Result<(), AggregatorError> {
        self.release_complete().await
    }

    fn on_message(&mut self, message: &BorrowedMessage<'_>) {
        let (shard, offset, payload) = (message.partition(), message.offset(), message.payload());
        let Some(owned) = self.owned.get_mut(&shard) else {
            return;
        };
        owned.next_offset = offset + 1;
        let length = self.window_length.millis();
        let message = match payload.map(BoundedMessage::decode) {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "undecodable bounded-topic record; dropped");
                self.stats.records_dropped.add(DropReason::Malformed);
                return;
            }
            None => {
                self.stats.records_dropped.add(DropReason::Empty);
                return;
            }
        };
        match message {
            BoundedMessage::Watermark(mark) => {
                let i = mark.partition as usize;
                if i >= owned.marks.len() {
                    owned.marks.resize(i + 1, i64::MIN);
                }
                owned.marks[i] = owned.marks[i].max(mark.through_ms);
                for start in mark.windows {
                    if start.saturating_add(length) > owned.released_through {
                        let window = owned.windows.entry(start).or_default();
                        window.first_offset.get_or_insert(offset);
                    }
                }
            }
            BoundedMessage::Sealed(sealed) => {
                let Some((record, seal_id)) = self.stats.records_dropped.opened(
                    &self.keyring,
                    self.window_length,
                    Some(&sealed),
                ) else {
                    return;
                };
                // Already published here: a replay after a rebalance.
                if record.window.end_ms <= owned.released_through {
                    return;
                }
                let window = owned.windows.entry(record.window.start_ms).or_default();
                window.first_offset.get_or_insert(offset);
                if window.seals.insert(seal_id) {
                    window.records.push(SequencedRecord {
                        seq: self.next_seq,
                        record,
                    });
                    self.next_seq += 1;
                }
            }
        }
    }
}

impl PartStage {
    /// Publishes every complete window of every owned shard (oldest first
    /// per shard) in one transaction with the shards' offsets: a
    /// transaction costs a round of commit markers whatever it holds.
    async fn release_complete(&mut self) -> Result<(), AggregatorError> {
        let length = self.window_length.millis();
        let due: Vec<(i32, Vec<i64>)> = self
            .owned
            .iter()
            .map(|(q, shard)| (*q, shard.complete(length)))
            .filter(|(_, windows)| !windows.is_empty())
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let mut parts = Vec::new();
        for (q, starts) in &due {
            for &start in starts {
                match self.noised_part(*q, start).await {
                    Ok(part) => parts.push((*q, start, part)),
                    // The ledger's view of the releases topic could not be
                    // refreshed (a broker away): nothing published; retried.
                    Err(e @ (AggregatorError::Kafka(_) | AggregatorError::Recovery(_))) => {
                        tracing::warn!(error = %e, "cannot authorise yet; will retry");
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        match self.publish(&due, &parts) {
            Ok(()) => {
                for (q, starts) in &due {
                    let shard = self.owned.get_mut(q).expect("still owned: no poll since");
                    for start in starts {
                        shard.windows.remove(start);
                    }
                    shard.released_through = starts.last().expect("non-empty") + length;
                }
                for (q, start, release) in &parts {
                    if release.is_some() {
                        self.stats.windows_released.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(shard = q, window_start = start, "part committed");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(parts = parts.len(), error = %e, "part transaction failed; will retry");
                self.txn.recover();
                let consumer = self.consumer.clone();
                let topic = self.config.kafka.bounded_topic.clone();
                for (q, _) in &due {
                    group::rewind(self, &consumer, &topic, *q)?;
                }
            }
        }
        Ok(())
    }

    /// The ledger entry for `window`: the one already on record (this
    /// instance's, or another part's found on the releases topic), or a
    /// new authorisation; `None` when the ledger refuses.
    fn authorised(&mut self, window: Window) -> Result<Option<LedgerEntry>, AggregatorError> {
        if let Some(entry) = self.ledger.entry(&window) {
            return Ok(Some(entry.clone()));
        }
        for entry in self.release_log.read_new()? {
            self.ledger.restore(entry);
        }
        if let Some(entry) = self.ledger.entry(&window) {
            return Ok(Some(entry.clone()));
        }
        match self.ledger.authorise(window, self.plan.cost) {
            Ok(entry) => Ok(Some(entry)),
            Err(e) => {
                self.stats.windows_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(window_start = window.start_ms, reason = %e, "ledger refused release; window dropped");
                Ok(None)
            }
        }
    }

    /// Shard `q`'s part of the window starting at `start`: counted, noised
    /// and labelled; `None` when the ledger refuses the window.
    async fn noised_part(
        &mut self,
        q: i32,
        start: i64,
    ) -> Result<Option<Release>, AggregatorError> {
        let window = Window::from_start(start, self.window_length)
            .ok_or_else(|| AggregatorError::Recovery("misaligned window".into()))?;
        let Some(entry) = self.authorised(window)? else {
            return Ok(None);
        };
        let part = ReleasePart {
            index: q as u32,
            of: self.shards,
        };
        let records = &self.owned[&q].windows[&start].records;
        let batch = to_record_batch(records).map_err(|e| EngineError::DataFusion(e.into()))?;
        let cells = engine::bounded_counts(&self.ctx, batch, self.bounds).await?;
        let (coarsest, shards, plan) = (self.coarsest, self.shards, &self.plan);
        let shard_plan = self
            .shard_plans
            .entry(part.index)
            .or_insert_with(|| plan.for_shard(coarsest, part.index, shards));
        let mut release = noisy_release(window, &cells, shard_plan, &entry.id)?;
        release.meta.part = part;
        Ok(Some(release))
    }

    /// One transaction: the parts, and each shard's offset with its new
    /// commit metadata (the last window released, the watermarks).
    fn publish(
        &self,
        due: &[(i32, Vec<i64>)],
        parts: &[(i32, i64, Option<Release>)],
    ) -> Result<(), AggregatorError> {
        let group = self.consumer.group_metadata().ok_or_else(|| {
            AggregatorError::Recovery("no consumer group metadata for the transaction".into())
        })?;
        let length = self.window_length.millis();
        let mut offsets = TopicPartitionList::new();
        for (q, starts) in due {
            let shard = &self.owned[q];
            let commit_offset = shard
                .windows
                .iter()
                .filter(|(s, _)| !starts.contains(s))
                .filter_map(|(_, w)| w.first_offset)
                .min()
                .unwrap_or(shard.next_offset);
            let after = OwnedShard {
                released_through: starts.last().expect("non-empty") + length,
                marks: shard.marks.clone(),
                next_offset: shard.next_offset,
                windows: BTreeMap::new(),
            };
            let mut position = offsets.add_partition(&self.config.kafka.bounded_topic, *q);
            position.set_offset(Offset::Offset(commit_offset))?;
            position.set_metadata(after.metadata());
        }
        let payloads = parts
            .iter()
            .filter_map(|(_, start, release)| release.as_ref().map(|r| (start, r)))
            .map(|(start, r)| Ok((start.to_string(), r.to_ipc()?)))
            .collect::<Result<Vec<_>, AggregatorError>>()?;
        self.txn.producer.begin_transaction()?;
        for (key, payload) in &payloads {
            let record = FutureRecord::to(&self.config.kafka.output_topic)
                .key(key.as_bytes())
                .payload(payload.as_slice());
            send_keyed(&self.txn.producer, record)?;
        }
        self.txn
            .producer
            .send_offsets_to_transaction(&offsets, &group, self.txn.timeout())?;
        self.txn.commit()?;
        Ok(())
    }
}

/// Queues one keyed release record (a part is one record; no queue waits).
fn send_keyed(
    producer: &FutureProducer,
    record: FutureRecord<'_, [u8], [u8]>,
) -> Result<(), KafkaError> {
    // Not awaited: commit_transaction flushes it, and fails if it failed.
    producer.send_result(record).map(|_| ()).map_err(|(e, _)| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_state_survives_its_commit_metadata() {
        let mut shard = OwnedShard::from_metadata("", 3, 42).unwrap();
        assert_eq!((shard.released_through, shard.next_offset), (i64::MIN, 42));
        assert_eq!(shard.marks, vec![i64::MIN; 3]);
        shard.released_through = 20_000;
        shard.marks = vec![30_000, 40_000, -10];
        let back = OwnedShard::from_metadata(&shard.metadata(), 3, 7).unwrap();
        assert_eq!(back.released_through, 20_000);
        assert_eq!(back.marks, vec![30_000, 40_000, -10]);
        // A guess would risk publishing a part twice: refused instead.
        for bad in ["released=x;marks=", "marks=1", "released=1;marks=1,,y"] {
            assert!(OwnedShard::from_metadata(bad, 3, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_window_is_complete_once_every_partition_has_passed_it() {
        let mut shard = OwnedShard::from_metadata("", 2, 0).unwrap();
        shard.windows.insert(0, PartWindow::default());
        shard.windows.insert(10_000, PartWindow::default());
        assert!(shard.complete(10_000).is_empty(), "no watermark yet");
        shard.marks = vec![20_000, 10_000];
        assert_eq!(shard.complete(10_000), vec![0]);
        shard.marks = vec![20_000, 20_000];
        assert_eq!(shard.complete(10_000), vec![0, 10_000]);
    }
}
