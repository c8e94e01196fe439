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
//! Which windows are released is decided by the clock
//! ([`WindowSchedule`]): every shard publishes a part of every window from
//! the configured epoch on, records or not, once every submissions
//! partition's watermark has passed its end, so the dashboard knows when a
//! window is whole and no window's existence depends on the data. Each
//! tick publishes every complete part of every owned shard in one
//! transaction with the shards' offsets, whose commit metadata records the
//! last window released and each submissions partition's watermark: a new
//! owner after a rebalance skips what was released and waits for nothing
//! it has already been told.
//!
//! The ledger: the first part of a window to be published authorises the
//! window; before authorising, an instance reads what is new on the
//! releases topic ([`ReleaseLog`]), so a window another instance already
//! authorised (any part of it on the topic) is accounted once, never twice,
//! and never re-decided. A part is noised at most once per process: a
//! noised part waits in `noised` until it is seen committed (by this
//! instance's commit, or on the releases topic after a commit whose outcome
//! was unknown), and a part found on the topic is never noised again.

use super::group::{self, GroupConsumer, GroupMember, Stage, StageStart};
use crate::config::AggregateConfig;
use crate::engine::{self, CellCounts, EngineError};
use crate::error::AggregatorError;
use crate::intake::{DropReason, has_room};
use crate::metrics::AggregatorStats;
use crate::records::{SequencedRecord, to_record_batch};
use crate::release_log::ReleaseLog;
use crate::resume::{Committed, committed_positions};
use crate::schedule::{Decision, WindowSchedule};
use datafusion::prelude::SessionContext;
use hushmap_privacy::release::{ReleasePlan, WindowOutcome, release_window};
use hushmap_privacy::sensitivity::ContributionBounds;
use hushmap_privacy::{LedgerError, PrivacyLedger};
use hushmap_schema::bounded::BoundedError;
use hushmap_schema::release::ReleasePart;
use hushmap_schema::{
    BoundedKeyring, BoundedMessage, BoundedOpenError, Release, Window, WindowLength,
};
use hushmap_service::clock::now_ms;
use hushmap_service::runtime::blocking;
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
    /// A record was refused for the buffer cap.
    full: bool,
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

/// What a shard's schedule is made of: the same for every shard.
#[derive(Debug, Clone, Copy)]
struct ShardClock {
    length: WindowLength,
    lateness_ms: i64,
    replay_horizon_ms: i64,
    /// The configured first window of the schedule.
    epoch: i64,
    /// When this process started: windows whose records may have left the
    /// topic by then are published as missed.
    started_ms: i64,
}

impl OwnedShard {
    /// The windows this shard publishes now, oldest first, at most
    /// `limit`: every window from the epoch (or after the last one it
    /// published) that ends at or before every submissions partition's
    /// watermark.
    fn due(&self, clock: &ShardClock, limit: usize) -> Vec<(Window, Decision)> {
        let Some(&low) = self.marks.iter().min() else {
            return Vec::new();
        };
        let schedule = WindowSchedule::starting(
            clock.length,
            clock.lateness_ms,
            clock.replay_horizon_ms,
            Some(clock.epoch),
            (self.released_through > i64::MIN).then_some(self.released_through),
            clock.started_ms,
        );
        // A window is due when its end is at or before the lowest mark.
        schedule
            .due(low.saturating_add(clock.lateness_ms))
            .take(limit)
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

/// Most windows one shard publishes in one tick (a long outage is worked
/// off over several ticks).
const MAX_WINDOWS_PER_TICK: usize = 64;

/// Fault injection, for tests only (nothing sets it in a deployment): the
/// next `n` committed part transactions are treated by this instance as
/// failed, and it rebuilds its shards from the positions committed
/// *before* them, as if the broker's answer had been lost and the
/// committed offsets did not show the commit yet. Only the releases topic
/// can then tell that the parts are out; nothing may be noised again.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct LostCommitAnswers(std::sync::atomic::AtomicU32);

impl LostCommitAnswers {
    pub fn lose_next(&self, n: u32) {
        self.0.store(n, Ordering::SeqCst);
    }

    fn armed(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }

    fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

pub(crate) struct PartStage {
    config: AggregateConfig,
    clock: ShardClock,
    /// Opens stage 1's messages; anything not sealed by it is refused.
    bounded: BoundedKeyring,
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
    /// Parts seen committed on the releases topic: (window start, part).
    published: HashSet<(i64, u32)>,
    /// Parts noised but not yet seen committed: sent again, same numbers,
    /// until they are.
    noised: BTreeMap<(i64, u32), NoisedPart>,
    owned: BTreeMap<i32, OwnedShard>,
    next_seq: u64,
    stats: Arc<AggregatorStats>,
    lost_answers: Arc<LostCommitAnswers>,
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
        let epoch = config
            .schedule_epoch_ms()?
            .ok_or(crate::config::ConfigError::Epoch(
                "required with topology = \"partitioned\"",
            ))?;
        let mut stage = PartStage {
            clock: ShardClock {
                length: config.window_length(),
                lateness_ms: config.lateness_ms(),
                replay_horizon_ms: config.replay_horizon_ms(),
                epoch,
                started_ms: now_ms(),
            },
            bounded: config.payload_keyring()?.bounded_keyring(),
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
            ledger: PrivacyLedger::new(config.budget()),
            release_log: ReleaseLog::new(config)?,
            published: HashSet::new(),
            noised: BTreeMap::new(),
            owned: BTreeMap::new(),
            next_seq: 0,
            stats,
            lost_answers: Arc::default(),
            config: config.clone(),
        };
        stage.read_releases()?;
        Ok((stage, member))
    }
}

impl PartStage {
    pub(crate) fn lost_commit_answers(&self) -> Arc<LostCommitAnswers> {
        self.lost_answers.clone()
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

    async fn on_tick(&mut self) -> Result<(), AggregatorError> {
        self.release_complete().await
    }

    fn on_message(&mut self, message: &BorrowedMessage<'_>) {
        let (shard, offset, payload) = (message.partition(), message.offset(), message.payload());
        let Some(owned) = self.owned.get_mut(&shard) else {
            return;
        };
        owned.next_offset = offset + 1;
        let Some(payload) = payload.filter(|p| !p.is_empty()) else {
            self.stats.records_dropped.add(DropReason::Empty);
            return;
        };
        // Only what stage 1 sealed opens: a watermark or record written by
        // anyone else (ingest included) is refused and counted here.
        let (message, seal_id) = match self.bounded.open(payload) {
            Ok(opened) => opened,
            Err(e) => {
                let reason = match &e {
                    BoundedOpenError::Envelope(e) => DropReason::from(e),
                    BoundedOpenError::Message(BoundedError::Record(_)) => DropReason::InvalidRecord,
                    BoundedOpenError::Message(_) => DropReason::Malformed,
                };
                self.stats.records_dropped.add(reason);
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
                // The windows it lists are not needed: every window is
                // published by the clock.
            }
            BoundedMessage::Record(record) => {
                if record.window_length != self.window_length {
                    self.stats.records_dropped.add(DropReason::WindowLength);
                    return;
                }
                // Already published here (a replay after a rebalance), or
                // before the schedule's epoch.
                if record.window.end_ms <= owned.released_through
                    || record.window.start_ms < self.clock.epoch
                {
                    return;
                }
                let window = owned.windows.entry(record.window.start_ms).or_default();
                window.first_offset.get_or_insert(offset);
                if !window.seals.contains(&seal_id)
                    && !has_room(
                        window.seals.len(),
                        self.config.max_buffered_records_per_window,
                        &mut window.full,
                        record.window.start_ms,
                    )
                {
                    self.stats.records_dropped.add(DropReason::WindowFull);
                    return;
                }
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
    /// Reads what is new on the releases topic into the ledger and the set
    /// of published parts; a noised part found there is done.
    fn read_releases(&mut self) -> Result<(), AggregatorError> {
        for entry in self.release_log.read_new()? {
            for &index in &entry.parts {
                self.published.insert((entry.window.start_ms, index));
                self.noised.remove(&(entry.window.start_ms, index));
            }
            self.ledger.restore(entry);
        }
        Ok(())
    }

    /// Publishes every complete window of every owned shard (oldest first
    /// per shard), records or not, in one transaction with the shards'
    /// offsets: a transaction costs a round of commit markers whatever it
    /// holds.
    async fn release_complete(&mut self) -> Result<(), AggregatorError> {
        let due: Vec<(i32, Vec<(Window, Decision)>)> = self
            .owned
            .iter()
            .filter_map(|(q, shard)| {
                let windows = shard.due(&self.clock, MAX_WINDOWS_PER_TICK);
                (!windows.is_empty()).then_some((*q, windows))
            })
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        // What other instances (or this one, in a commit whose answer was
        // lost) have published since the last look.
        if let Err(e) = self.read_releases() {
            // A broker away: nothing published; retried next tick.
            tracing::warn!(error = %e, "cannot read the releases topic yet; will retry");
            return Ok(());
        }
        let mut parts = Vec::new();
        for (q, windows) in &due {
            for &(window, decision) in windows {
                let part = self.noised_part(*q, window, decision).await?;
                parts.push((*q, window.start_ms, part));
            }
        }
        let due: Vec<(i32, Vec<i64>)> = due
            .into_iter()
            .map(|(q, windows)| (q, windows.iter().map(|(w, _)| w.start_ms).collect()))
            .collect();
        let length = self.window_length.millis();
        let topic = self.config.kafka.bounded_topic.clone();
        let stale = if self.lost_answers.armed() {
            let shards: Vec<i32> = due.iter().map(|(q, _)| *q).collect();
            Some(committed_positions(
                self.consumer.as_ref(),
                &topic,
                &shards,
            )?)
        } else {
            None
        };
        // The transaction blocks for up to its timeout: off this worker.
        match blocking(|| self.publish(&due, &parts)) {
            Ok(()) if stale.is_some() && self.lost_answers.take() => {
                tracing::warn!("injected fault: a committed part transaction is taken as failed");
                self.txn.recover();
                for (q, committed) in stale.expect("checked") {
                    let offset = committed.offset;
                    self.revoke(&[q]);
                    self.assign(HashMap::from([(q, committed)]))?;
                    self.consumer.seek(
                        &topic,
                        q,
                        Offset::Offset(offset),
                        std::time::Duration::from_secs(10),
                    )?;
                }
            }
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
                        let key = (*start, *q as u32);
                        self.noised.remove(&key);
                        self.published.insert(key);
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

    /// Shard `q`'s part of `window`: the part noised earlier and not yet
    /// seen committed; or `None` when it is on the releases topic already
    /// or the ledger refuses the window; or counted, authorised and noised
    /// now. Whether the window is counted or published without data
    /// follows the ledger when another part is on record, so all parts of
    /// a window agree.
    async fn noised_part(
        &mut self,
        q: i32,
        window: Window,
        decision: Decision,
    ) -> Result<Option<NoisedPart>, AggregatorError> {
        let part = ReleasePart {
            index: q as u32,
            of: self.shards,
        };
        let key = (window.start_ms, part.index);
        if self.published.contains(&key) {
            self.stats
                .releases_found_published
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                shard = q,
                window_start = window.start_ms,
                "part already on the releases topic; not noised again"
            );
            return Ok(None);
        }
        if let Some(part) = self.noised.get(&key) {
            return Ok(Some(part.clone()));
        }
        let decision = match self.ledger.entry(&window) {
            Some(entry) if entry.cost.is_free() => Decision::Missed,
            Some(_) => Decision::Count,
            None => decision,
        };
        // Counted before the ledger is asked (counting publishes nothing):
        // the one release step then authorises, and only then noises.
        let cells: Vec<CellCounts> = match decision {
            Decision::Missed => Vec::new(),
            Decision::Count => {
                let records = self.owned[&q]
                    .windows
                    .get(&window.start_ms)
                    .map(|w| w.records.as_slice())
                    .unwrap_or_default();
                if records.is_empty() {
                    Vec::new()
                } else {
                    let batch =
                        to_record_batch(records).map_err(|e| EngineError::DataFusion(e.into()))?;
                    engine::bounded_counts(&self.ctx, batch, self.bounds).await?
                }
            }
        };
        let data = decision.data(&cells);
        let (coarsest, shards, plan) = (self.coarsest, self.shards, &self.plan);
        let shard_plan = self
            .shard_plans
            .entry(part.index)
            .or_insert_with(|| plan.for_shard(coarsest, part.index, shards));
        let outcome = release_window(
            &mut self.ledger,
            None,
            shard_plan,
            window,
            Some(part),
            data,
            None,
        )?;
        let release = match outcome {
            WindowOutcome::Released(release, measured) => NoisedPart {
                release,
                measured: self.config.kafka.measurements_to_publish(measured),
            },
            WindowOutcome::Refused(e @ LedgerError::PartAlreadyReleased { .. }) => {
                // Authorised by this process before and lost with a cache it
                // no longer holds: never noised twice.
                tracing::warn!(shard = q, window_start = window.start_ms, reason = %e, "part not noised again");
                return Ok(None);
            }
            WindowOutcome::Refused(e) => {
                self.stats.windows_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(window_start = window.start_ms, reason = %e, "ledger refused release; window dropped");
                return Ok(None);
            }
        };
        if decision == Decision::Missed {
            self.stats.windows_missed.fetch_add(1, Ordering::Relaxed);
        }
        self.noised.insert(key, release.clone());
        Ok(Some(release))
    }

    /// One transaction: the parts, and each shard's offset with its new
    /// commit metadata (the last window released, the watermarks).
    fn publish(
        &self,
        due: &[(i32, Vec<i64>)],
        parts: &[(i32, i64, Option<NoisedPart>)],
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
        // Each part, and the measurements behind it when they are
        // published: in one transaction, so both are out or neither.
        let mut payloads = Vec::new();
        for (_, start, part) in parts {
            let Some(part) = part else { continue };
            let key = start.to_string();
            payloads.push((
                &self.config.kafka.output_topic,
                key.clone(),
                part.release.to_ipc()?,
            ));
            if let Some(measured) = &part.measured {
                payloads.push((
                    &self.config.kafka.measurements_topic,
                    key,
                    measured.to_ipc()?,
                ));
            }
        }
        self.txn.producer.begin_transaction()?;
        for (topic, key, payload) in &payloads {
            let record = FutureRecord::to(topic)
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

/// A part as noised: the release and, when they are published, the
/// measurements behind it.
#[derive(Debug, Clone)]
struct NoisedPart {
    release: Release,
    measured: Option<Release>,
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
    fn every_window_is_due_by_the_clock_once_every_partition_has_passed_it() {
        let clock = ShardClock {
            length: WindowLength::from_secs(10).unwrap(),
            lateness_ms: 2_000,
            replay_horizon_ms: 3_600_000,
            epoch: 0,
            started_ms: 0,
        };
        let starts = |shard: &OwnedShard| -> Vec<i64> {
            shard
                .due(&clock, 100)
                .iter()
                .map(|(w, _)| w.start_ms)
                .collect()
        };
        let mut shard = OwnedShard::from_metadata("", 2, 0).unwrap();
        assert!(starts(&shard).is_empty(), "no watermark yet");
        // No records anywhere: the windows are due all the same.
        shard.marks = vec![20_000, 10_000];
        assert_eq!(starts(&shard), vec![0]);
        shard.marks = vec![30_000, 30_000];
        assert_eq!(starts(&shard), vec![0, 10_000, 20_000]);
        // After publishing through 20 s, only what follows.
        shard.released_through = 20_000;
        assert_eq!(starts(&shard), vec![20_000]);
        assert_eq!(shard.due(&clock, 0).len(), 0);
    }
}
