//! The streaming aggregator: Kafka in, windows, releases out.
//!
//! Records are read and opened on threads of their own
//! ([`input_reader`](crate::input_reader)) and buffered per window in
//! memory. A record is on time when ingest
//! produced it (its Kafka timestamp) before its window's end plus the
//! allowed lateness; later records are dropped and counted. A window closes
//! once that deadline has passed both on the clock and in what has been read
//! from every partition (each read past the deadline or to its end), so a
//! replay after a restart never closes a window on partial data.
//!
//! One instance owns the whole input topic: it assigns itself every
//! partition rather than joining a consumer-group rebalance, because a
//! window is released once for all regions and must see all of them. (A
//! dead member's lingering group session would otherwise hold partitions for
//! up to `session.timeout.ms`, and a live one would release windows from the
//! partitions it happened to own.) Two instances with the same
//! `transactional.id` fence each other; the newer one wins.
//!
//! Which windows are released is the [`WindowSchedule`]'s decision, by the
//! clock alone: every window from the schedule's epoch is closed, in
//! order, once its deadline has been read past, whether or not any record
//! arrived for it. A closed window is bounded and counted
//! ([`engine`](crate::engine)), authorised by the [`PrivacyLedger`] and
//! noised once with that authorisation (the shared step,
//! [`release_window`]), then published; the noised release is kept until Kafka acknowledges it, so a
//! retry resends the same numbers rather than fresh noise. The epoch is
//! kept in the input partitions' commit metadata (`epoch=<ms>`), so a
//! restart continues the same schedule.
//!
//! Exactly once: each release is written in a Kafka transaction together
//! with the consumer offsets it accounts for (`send_offsets_to_transaction`).
//! Offsets committed never pass the first record of a window that is still
//! open or unpublished, so a restart rebuilds such windows from Kafka. At
//! start-up the ledger is restored from the committed releases on the
//! releases topic, so a window that was published is never published again,
//! with or without fresh noise (no averaging attack); an aborted transaction
//! was never visible to `read_committed` readers, so recomputing its window
//! publishes it for the first time.

use crate::config::AggregateConfig;
use crate::engine::{self, CellCounts, EngineError};
use crate::error::AggregatorError;
use crate::input_reader::{Arrival, InputReader};
use crate::intake::DropReason;
use crate::metrics::AggregatorStats;
use crate::noise_ahead::NoiseAhead;
use crate::records::to_record_batch;
use crate::release_log::ReleaseLog;
use crate::resume::{Committed, committed_positions, partition_count, require_broker_timestamps};
use crate::schedule::{Decision, WindowSchedule};
use crate::transactions::Transactions;
use crate::window_book::{Admission, WindowBook, WindowBuffer};
use datafusion::prelude::SessionContext;
use hushmap_privacy::release::continual::ProvisionalSeries;
use hushmap_privacy::release::{
    ProvisionalOutcome, ReleasePlan, WindowOutcome, release_provisional, release_window,
};
use hushmap_privacy::{LedgerEntry, PrivacyLedger};
use hushmap_schema::{PayloadKeyring, Release, Window, WindowLength};
use hushmap_service::clock::now_ms;
use hushmap_service::consumer::{EndProbe, QuietEofContext, committed_reader};
use hushmap_service::runtime::blocking;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A noised release waiting for Kafka's acknowledgement.
struct PendingRelease {
    release: Release,
    /// The measurements behind it, when they are published.
    measured: Option<Release>,
    first_offsets: HashMap<i32, i64>,
}

pub struct Aggregator {
    config: AggregateConfig,
    window_length: WindowLength,
    keyring: PayloadKeyring,
    consumer: Arc<BaseConsumer<QuietEofContext>>,
    txn: Transactions,
    ctx: SessionContext,
    plan: ReleasePlan,
    /// The next release's count noise, drawn while its window is open.
    noise_ahead: NoiseAhead,
    ledger: PrivacyLedger,
    /// The releases topic as the ledger's history, read where it left off.
    release_log: ReleaseLog,
    /// Which window is decided next, by the clock.
    schedule: WindowSchedule,
    /// The open windows and how far each partition has been read.
    book: WindowBook,
    pending: BTreeMap<i64, PendingRelease>,
    /// Provisional numbers, when the plan has them.
    provisional: Option<ProvisionalState>,
    /// Highest offset consumed per partition.
    consumed: HashMap<i32, i64>,
    /// The offset each input partition was assigned at (all of them, to
    /// this instance, at start-up).
    assigned_from: HashMap<i32, i64>,
    /// Asks the partitions' leaders where they end.
    ends: EndProbe,
    stats: Arc<AggregatorStats>,
    /// Bound at start-up, served while running.
    metrics_listener: std::net::TcpListener,
}

/// The provisional series of the open windows.
struct ProvisionalState {
    /// The provisional topic, read back at start-up and after a failed
    /// commit (it may have happened after all).
    log: ReleaseLog,
    /// Per window start, the series as far as it is published (or noised
    /// and pending).
    series: BTreeMap<i64, ProvisionalSeries>,
    /// Noised provisional releases waiting for their transaction, by
    /// window start and sub-window.
    pending: BTreeMap<(i64, u32), Release>,
    /// Windows the ledger refused a series for (their final release will
    /// be refused too: the ledger only grows).
    refused: BTreeSet<i64>,
}

/// Most windows decided in one tick (a long outage is worked off over
/// several ticks, each publishing what it decided).
const MAX_WINDOWS_PER_TICK: usize = 64;

impl Aggregator {
    /// Validates the config, calibrates the noise and subscribes.
    pub fn new(config: AggregateConfig) -> Result<Aggregator, AggregatorError> {
        let plan = config.validated_plan()?;
        let keyring = config.payload_keyring()?;
        require_broker_timestamps(&config.kafka)?;
        let mut client = config.kafka.security.client_config(&config.kafka.brokers)?;
        // Polled on a thread of its own (see `input_reader`).
        let consumer: BaseConsumer<QuietEofContext> =
            committed_reader(&mut client, &config.kafka.group_id)
                .create_with_context(QuietEofContext)?;
        let started_ms = now_ms();
        let Assignment {
            partitions,
            from: assigned_from,
            epoch: persisted_epoch,
        } = assign_every_partition(&consumer, &config.kafka.input_topic)?;
        // Fences off any earlier instance with the same id and aborts its
        // open transaction: a half-published release never becomes visible.
        let txn = Transactions::new(&config, config.kafka.transactional_id.clone())?;
        let metrics_listener = crate::metrics::bind(config.metrics_listen)?;
        let mut ledger = PrivacyLedger::new(config.budget());
        let mut release_log = ReleaseLog::new(&config)?;
        let restored = release_log.read_new()?;
        let restored_count = restored.len();
        for entry in restored {
            ledger.restore(entry);
        }
        let schedule = WindowSchedule::starting(
            config.window_length(),
            config.lateness_ms(),
            config.replay_horizon_ms(),
            config.schedule_epoch_ms()?.or(persisted_epoch),
            ledger.latest().map(|e| e.window.end_ms),
            started_ms,
        );
        let provisional = match &plan.provisional {
            None => None,
            Some(_) => Some(restore_provisional(
                &config,
                &mut ledger,
                schedule.next().start_ms,
            )?),
        };
        tracing::info!(
            releases = restored_count,
            schedule_epoch = schedule.epoch(),
            next_window = schedule.next().start_ms,
            "ledger restored from the releases topic"
        );
        tracing::info!(
            mechanism = plan.mechanism,
            epsilon_per_window = plan.cost.epsilon,
            delta = plan.cost.delta,
            rho_per_window = plan.cost.rho,
            levels = plan.levels.len(),
            risk_noise_sd = plan.finest().risk.std_dev(),
            symptom_noise_sd = plan.finest().symptom_sd(),
            window_secs = config.window_secs,
            "aggregator calibrated"
        );
        let mut aggregator = Aggregator {
            window_length: config.window_length(),
            book: WindowBook::new(partitions, config.max_buffered_records_per_window),
            keyring,
            ledger,
            release_log,
            schedule,
            config,
            consumer: Arc::new(consumer),
            txn,
            ctx: SessionContext::new(),
            plan,
            noise_ahead: NoiseAhead::default(),
            pending: BTreeMap::new(),
            provisional,
            consumed: HashMap::new(),
            assigned_from,
            ends: EndProbe::default(),
            stats: Arc::new(AggregatorStats::default()),
            metrics_listener,
        };
        if persisted_epoch != Some(aggregator.schedule.epoch()) {
            aggregator.persist_schedule()?;
        }
        Ok(aggregator)
    }

    /// Commits the current positions with the schedule's epoch in their
    /// metadata, so that a restart before the first release keeps the
    /// epoch chosen now.
    fn persist_schedule(&mut self) -> Result<(), AggregatorError> {
        let group = self.consumer.group_metadata().ok_or_else(|| {
            AggregatorError::Recovery("no consumer group metadata for the transaction".into())
        })?;
        let offsets = self.offsets_to_commit()?;
        let producer = &self.txn.producer;
        let result = blocking(|| -> Result<(), KafkaError> {
            producer.begin_transaction()?;
            producer.send_offsets_to_transaction(&offsets, &group, self.txn.timeout())?;
            self.txn.commit()
        });
        if let Err(e) = result {
            self.txn.recover();
            return Err(e.into());
        }
        tracing::info!(
            schedule_epoch = self.schedule.epoch(),
            "schedule epoch kept in the commit metadata"
        );
        Ok(())
    }

    /// The first window start of the schedule (configured, kept from an
    /// earlier run, or chosen at this start-up).
    pub fn schedule_epoch(&self) -> i64 {
        self.schedule.epoch()
    }

    /// Where `/metrics` is served.
    pub fn metrics_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.metrics_listener.local_addr()
    }

    pub fn stats(&self) -> Arc<AggregatorStats> {
        self.stats.clone()
    }

    /// Consumes and releases until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), AggregatorError> {
        let metrics = crate::metrics::serve(&self.metrics_listener, self.stats.clone())?;
        self.noise_ahead.start(&self.plan, None);
        let result = self.consume(shutdown).await;
        metrics.abort();
        result
    }

    async fn consume(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), AggregatorError> {
        let mut input = InputReader::start(
            self.consumer.clone(),
            self.keyring.clone(),
            self.window_length,
        )
        .map_err(AggregatorError::InputReader)?;
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.tick_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                batch = input.next() => match batch {
                    Some(batch) => {
                        for arrival in batch {
                            self.on_arrival(arrival);
                        }
                        self.stats
                            .open_windows
                            .store(self.book.open_windows() as u64, Ordering::Relaxed);
                    }
                    None => return Err(AggregatorError::InputReaderStopped),
                },
                _ = tick.tick() => self.close_due_windows(now_ms()).await?,
            }
        }
        input.stop().await;
        tracing::info!(
            open_windows = self.book.open_windows(),
            "aggregator stopping; open windows resume from Kafka on restart"
        );
        Ok(())
    }

    /// Buffers one record in its window (see [`WindowBook::admit`]), or
    /// counts why not.
    fn on_arrival(&mut self, arrival: Arrival) {
        let Arrival {
            partition,
            offset,
            arrived_ms,
            opened,
        } = arrival;
        self.consumed.insert(partition, offset);
        self.book.read(partition, arrived_ms);
        let (record, seal_id) = match opened {
            Ok(opened) => opened,
            Err(reason) => return self.stats.records_dropped.add(reason),
        };
        match self.book.admit(
            &self.schedule,
            record,
            seal_id,
            partition,
            offset,
            arrived_ms,
        ) {
            Admission::Accepted => {
                self.stats.records_accepted.fetch_add(1, Ordering::Relaxed);
            }
            Admission::Late => {
                self.stats.records_late.fetch_add(1, Ordering::Relaxed);
            }
            Admission::Replayed => self.stats.records_dropped.add(DropReason::Replayed),
            Admission::WindowFull => self.stats.records_dropped.add(DropReason::WindowFull),
        }
    }

    async fn close_due_windows(&mut self, now: i64) -> Result<(), AggregatorError> {
        // A window closes once its deadline has passed both on the clock and
        // in what we have read: after a restart the backlog of every
        // partition is replayed before any window is closed on partial data.
        // An idle partition is known to be read through a deadline only by
        // asking its leader after it.
        let window_deadline = self.schedule.deadline(&self.schedule.next());
        let next_deadline = self
            .next_provisional_deadline(now)
            .map_or(window_deadline, |d| d.min(window_deadline));
        if next_deadline <= now && self.book.read_frontier() < next_deadline {
            self.ask_partition_ends(next_deadline);
        }
        let frontier = self.book.read_frontier().min(now);
        // Provisional numbers first: a window's sub-windows all end
        // before its own deadline.
        let mut changed = self.noise_due_provisional(frontier).await?;
        // Every scheduled window, records or not, in order; a long outage
        // is worked off a bounded number of windows per tick.
        let due: Vec<(Window, Decision)> = self
            .schedule
            .due(frontier)
            .take(MAX_WINDOWS_PER_TICK)
            .collect();
        changed |= !self.pending.is_empty();
        for (window, decision) in due {
            let buffer = self.book.close(&window);
            self.close_window(window, decision, buffer).await?;
            self.schedule.decided(window);
            if let Some(state) = &mut self.provisional {
                state.series.remove(&window.start_ms);
                state.refused.remove(&window.start_ms);
            }
            changed = true;
        }
        if changed {
            // Transaction calls block for up to their timeout: off this
            // worker, so the metrics listener and shutdown still answer.
            blocking(|| self.publish_pending());
        }
        self.stats
            .open_windows
            .store(self.book.open_windows() as u64, Ordering::Relaxed);
        self.stats.pending_releases.store(
            (self.pending.len() + self.provisional.as_ref().map_or(0, |p| p.pending.len())) as u64,
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// The windows whose provisional series may be running at `now`: the
    /// next to decide and those after it that have begun.
    fn provisional_windows(&self, now: i64) -> Vec<Window> {
        let mut out = Vec::new();
        let mut window = self.schedule.next();
        while window.start_ms < now && out.len() < MAX_WINDOWS_PER_TICK {
            out.push(window);
            match Window::from_start(window.end_ms, self.window_length) {
                Some(next) => window = next,
                None => break,
            }
        }
        out
    }

    /// The end of the next sub-window still to publish, if any.
    fn next_provisional_deadline(&self, now: i64) -> Option<i64> {
        let state = self.provisional.as_ref()?;
        let tree = self.plan.provisional.as_ref()?.tree;
        self.provisional_windows(now)
            .into_iter()
            .filter(|w| !state.refused.contains(&w.start_ms))
            .filter_map(|w| {
                let published = state.series.get(&w.start_ms).map_or(0, |s| s.published());
                (published < tree.sub_windows()).then(|| tree.end_ms(w, published))
            })
            .min()
    }

    /// Noises the provisional release of every sub-window that has ended
    /// by `frontier` (on the clock and in what every partition has been
    /// read), in order, each once, whether or not anyone submitted. True if
    /// any was made.
    async fn noise_due_provisional(&mut self, frontier: i64) -> Result<bool, AggregatorError> {
        let windows = self.provisional_windows(frontier);
        let (Some(state), Some(series_plan)) = (&mut self.provisional, &self.plan.provisional)
        else {
            return Ok(false);
        };
        let (tree, level) = (series_plan.tree, series_plan.level);
        let mut made = false;
        for window in windows {
            // A window whose records may be gone is published without
            // data; it has no provisional numbers to give.
            if self.schedule.decision(&window) != Decision::Count
                || state.refused.contains(&window.start_ms)
            {
                continue;
            }
            let published = state
                .series
                .get(&window.start_ms)
                .map_or(0, |s| s.published());
            let due = (published..tree.sub_windows())
                .take_while(|t| tree.end_ms(window, *t) <= frontier)
                .count() as u32;
            if due == 0 {
                continue;
            }
            let empty = crate::window_book::WindowBuffer::default();
            let buffer = self.book.peek(&window).unwrap_or(&empty);
            let counts = crate::first_record::first_record_counts(
                &self.ctx,
                window,
                tree,
                level,
                buffer
                    .records
                    .iter()
                    .map(|r| &r.record)
                    .zip(&buffer.arrivals),
            )
            .await?;
            let series = state.series.entry(window.start_ms).or_default();
            for t in published..published + due {
                match release_provisional(&mut self.ledger, &self.plan, window, series, t, &counts)?
                {
                    ProvisionalOutcome::Released(release) => {
                        tracing::info!(
                            window_start = window.start_ms,
                            sub_window = t,
                            "provisional numbers noised"
                        );
                        state.pending.insert((window.start_ms, t), release);
                        made = true;
                    }
                    ProvisionalOutcome::Refused(e) => {
                        self.stats
                            .provisional_refused
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(window_start = window.start_ms, reason = %e, "ledger refused the provisional series; none for this window");
                        state.refused.insert(window.start_ms);
                        break;
                    }
                }
            }
        }
        Ok(made)
    }

    /// Asks the leaders of the partitions read to less than `deadline`
    /// whether they hold anything more (at most once a second, a round
    /// trip each; see [`EndProbe`]).
    fn ask_partition_ends(&mut self, deadline: i64) {
        let reading: Vec<(i32, i64)> = self
            .book
            .behind(deadline)
            .into_iter()
            .map(|p| {
                let next = match self.consumed.get(&p) {
                    Some(offset) => offset + 1,
                    None => self.assigned_from.get(&p).copied().unwrap_or(0),
                };
                (p, next)
            })
            .collect();
        let (consumer, topic) = (self.consumer.clone(), &self.config.kafka.input_topic);
        let Some((asked_at, at_end)) = self.ends.ask(&*consumer, topic, &reading) else {
            return;
        };
        for p in at_end {
            self.book.read_to_end(p, asked_at);
        }
    }

    /// Decides one scheduled window: counted, authorised and noised, or
    /// published without data; refused windows are dropped.
    async fn close_window(
        &mut self,
        window: Window,
        decision: Decision,
        buffer: WindowBuffer,
    ) -> Result<(), AggregatorError> {
        let cells: Vec<CellCounts> = match decision {
            Decision::Missed => Vec::new(),
            Decision::Count if buffer.records.is_empty() => Vec::new(),
            Decision::Count => {
                let batch = to_record_batch(&buffer.records)
                    .map_err(|e| EngineError::DataFusion(e.into()))?;
                engine::bounded_counts(&self.ctx, batch, self.config.bounds()).await?
            }
        };
        let data = decision.data(&cells);
        // A window published without data draws no noise: the reserve
        // waits for the next one.
        let reserve = match decision {
            Decision::Count => self.noise_ahead.take().await,
            Decision::Missed => None,
        };
        let outcome = release_window(
            &mut self.ledger,
            None,
            &self.plan,
            window,
            None,
            data,
            reserve,
        )?;
        if decision == Decision::Count {
            // The next window's noise, sized by this release (public).
            let last = match &outcome {
                WindowOutcome::Released(release, _) => Some(release),
                WindowOutcome::Refused(_) => None,
            };
            self.noise_ahead.start(&self.plan, last);
        }
        let (release, measured) = match outcome {
            WindowOutcome::Released(release, measured) => (release, measured),
            WindowOutcome::Refused(e) => {
                self.stats.windows_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(window_start = window.start_ms, reason = %e, "ledger refused release; window dropped");
                return Ok(());
            }
        };
        if decision == Decision::Missed {
            self.stats.windows_missed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                window_start = window.start_ms,
                "window's records may be gone from the topic (aggregator down too long); published without data"
            );
        }
        tracing::info!(
            window_start = window.start_ms,
            cells = release.rows.len(),
            "window closed and noised"
        );
        self.pending.insert(
            window.start_ms,
            PendingRelease {
                release,
                measured: self.config.kafka.measurements_to_publish(measured),
                first_offsets: buffer.first_offsets,
            },
        );
        Ok(())
    }

    /// Publishes each pending release in its own transaction with the
    /// offsets it accounts for. A failed transaction is aborted and retried
    /// on the next tick with the same noised numbers, unless the releases
    /// topic shows it committed after all (a commit can fail on the way
    /// back after the broker completed it).
    fn publish_pending(&mut self) {
        if !self.publish_pending_provisional() {
            // Releases stay in order: a window's provisional numbers go
            // out before its final release.
            return;
        }
        let starts: Vec<i64> = self.pending.keys().copied().collect();
        for start in starts {
            match self.publish_one(start) {
                Ok(()) => {
                    self.pending.remove(&start);
                    self.stats.windows_released.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(window_start = start, "release committed");
                }
                Err(e) => {
                    tracing::warn!(window_start = start, error = %e, "release transaction failed; will retry");
                    self.txn.recover();
                    self.drop_published();
                    // Later windows wait: releases stay in window order.
                    break;
                }
            }
        }
    }

    /// Publishes each pending provisional release in its own transaction;
    /// false if one failed (it is retried, with the same numbers, on the
    /// next tick, unless the provisional topic shows it committed).
    fn publish_pending_provisional(&mut self) -> bool {
        let Some(state) = &mut self.provisional else {
            return true;
        };
        let keys: Vec<(i64, u32)> = state.pending.keys().copied().collect();
        for key in keys {
            let result = (|| -> Result<(), AggregatorError> {
                let payload = state.pending[&key].to_ipc()?;
                let record_key = key.0.to_string();
                let record = FutureRecord::to(&self.config.kafka.provisional_topic)
                    .key(&record_key)
                    .payload(&payload);
                let producer = &self.txn.producer;
                producer.begin_transaction()?;
                let _delivery = producer.send_result(record).map_err(|(e, _)| e)?;
                self.txn.commit()?;
                Ok(())
            })();
            match result {
                Ok(()) => {
                    state.pending.remove(&key);
                    provisional_out(&self.stats, key, "provisional release committed");
                }
                Err(e) => {
                    tracing::warn!(window_start = key.0, sub_window = key.1, error = %e, "provisional transaction failed; will retry");
                    self.txn.recover();
                    match state.log.read_new_releases() {
                        Ok(found) => {
                            for release in found {
                                if let Some(p) = &release.meta.provisional {
                                    let key = (release.meta.window_start, p.sub_windows_in - 1);
                                    if state.pending.remove(&key).is_some() {
                                        provisional_out(
                                            &self.stats,
                                            key,
                                            "provisional release was committed after all",
                                        );
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the provisional topic; will retry")
                        }
                    }
                    return false;
                }
            }
        }
        true
    }

    /// Drops pending releases the releases topic already holds.
    fn drop_published(&mut self) {
        match self.release_log.read_new() {
            Ok(entries) => {
                for entry in entries {
                    if self.pending.remove(&entry.window.start_ms).is_some() {
                        self.stats.windows_released.fetch_add(1, Ordering::Relaxed);
                        self.stats
                            .releases_found_published
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            window_start = entry.window.start_ms,
                            "release was committed after all"
                        );
                    }
                    self.ledger.restore(entry);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the releases topic; will retry"),
        }
    }

    fn publish_one(&mut self, start: i64) -> Result<(), AggregatorError> {
        // Always present (group.id is always set); without it the offsets
        // could not join the transaction, so nothing may be committed.
        let group = self.consumer.group_metadata().ok_or_else(|| {
            AggregatorError::Recovery("no consumer group metadata for the transaction".into())
        })?;
        let payload = self.pending[&start].release.to_ipc()?;
        let measured = self.pending[&start]
            .measured
            .as_ref()
            .map(Release::to_ipc)
            .transpose()?;
        let key = start.to_string();
        // Offsets as they will stand once this release is out.
        let released = self.pending.remove(&start).expect("listed");
        let offsets = match self.offsets_to_commit() {
            Ok(offsets) => offsets,
            Err(e) => {
                self.pending.insert(start, released);
                return Err(e);
            }
        };
        let timeout = self.txn.timeout();
        let record = FutureRecord::to(&self.config.kafka.output_topic)
            .key(&key)
            .payload(&payload);
        // The measurements travel in the release's transaction: both are
        // published, or neither.
        let measured_record = measured.as_ref().map(|bytes| {
            FutureRecord::to(&self.config.kafka.measurements_topic)
                .key(&key)
                .payload(bytes)
        });
        // Any failure, the first step's included, puts the release back.
        let result = (|| -> Result<(), KafkaError> {
            let producer = &self.txn.producer;
            producer.begin_transaction()?;
            // Not awaited: commit_transaction flushes it, and fails if it failed.
            let _delivery = producer.send_result(record).map_err(|(e, _)| e)?;
            if let Some(record) = measured_record {
                let _delivery = producer.send_result(record).map_err(|(e, _)| e)?;
            }
            producer.send_offsets_to_transaction(&offsets, &group, timeout)?;
            self.txn.commit()
        })();
        if result.is_err() {
            self.pending.insert(start, released);
        }
        Ok(result?)
    }

    /// Per partition, the lowest offset still needed (the first record of
    /// any open or unpublished window, else one past the last consumed, else
    /// where it was assigned from), with the schedule's epoch as metadata.
    fn offsets_to_commit(&self) -> Result<TopicPartitionList, AggregatorError> {
        let mut tpl = TopicPartitionList::new();
        let metadata = format!("{EPOCH}{}", self.schedule.epoch());
        for &partition in self.book.partitions() {
            let needed = self
                .book
                .first_offsets()
                .chain(self.pending.values().map(|p| &p.first_offsets))
                .filter_map(|m| m.get(&partition).copied())
                .min();
            let offset = match (needed, self.consumed.get(&partition)) {
                (Some(n), _) => Offset::Offset(n),
                (None, Some(last)) => Offset::Offset(last + 1),
                (None, None) => match self.assigned_from.get(&partition) {
                    Some(&o) => Offset::Offset(o),
                    None => continue,
                },
            };
            let mut position = tpl.add_partition(&self.config.kafka.input_topic, partition);
            position.set_offset(offset)?;
            position.set_metadata(metadata.clone());
        }
        Ok(tpl)
    }
}

/// Counts and logs a provisional release found out (window start,
/// sub-window).
fn provisional_out(
    stats: &AggregatorStats,
    (window_start, sub_window): (i64, u32),
    what: &'static str,
) {
    stats.provisional_released.fetch_add(1, Ordering::Relaxed);
    tracing::info!(window_start, sub_window, "{what}");
}

/// Reads the provisional topic back at start-up: every provisional release
/// charged its window, so each is restored to the ledger (a window whose
/// final release is out keeps one entry, at the larger cost); the series
/// of windows not yet released continue from what they published, never
/// noising an interval again.
fn restore_provisional(
    config: &AggregateConfig,
    ledger: &mut PrivacyLedger,
    next_window: i64,
) -> Result<ProvisionalState, AggregatorError> {
    let mut log = ReleaseLog::on_topic(config, &config.kafka.provisional_topic)?;
    let mut series: BTreeMap<i64, ProvisionalSeries> = BTreeMap::new();
    let found = log.read_new_releases()?;
    let count = found.len();
    for release in found {
        let Some(meta) = &release.meta.provisional else {
            tracing::warn!("a final release on the provisional topic; skipped");
            continue;
        };
        ledger.restore(LedgerEntry::of_release(&release.meta));
        if release.meta.window_start >= next_window {
            series
                .entry(release.meta.window_start)
                .or_default()
                .restore(meta)?;
        }
    }
    tracing::info!(
        provisional_releases = count,
        open_series = series.len(),
        "provisional series restored from the provisional topic"
    );
    Ok(ProvisionalState {
        log,
        series,
        pending: BTreeMap::new(),
        refused: BTreeSet::new(),
    })
}

/// Commit metadata of an input partition: `epoch=<ms>`, the schedule's
/// first window.
const EPOCH: &str = "epoch=";

/// Where a single-topology instance reads from: every partition of the
/// input topic and the offset each was assigned at, and the schedule
/// epoch found in the commit metadata.
struct Assignment {
    partitions: Vec<i32>,
    from: HashMap<i32, i64>,
    epoch: Option<i64>,
}

/// Assigns every partition of `topic`, each from its committed offset (the
/// first record of the oldest window not yet released), or its first
/// offset still held.
fn assign_every_partition(
    consumer: &BaseConsumer<QuietEofContext>,
    topic: &str,
) -> Result<Assignment, AggregatorError> {
    let n = partition_count(consumer, topic)?;
    let partitions: Vec<i32> = (0..n as i32).collect();
    // Fetched explicitly, with retries, rather than left to librdkafka's
    // `Offset::Stored`: a failed internal fetch left the partitions idle.
    let committed = committed_positions(consumer, topic, &partitions)?;
    let mut tpl = TopicPartitionList::new();
    let mut from = HashMap::new();
    let mut epoch = None;
    for &partition in &partitions {
        let Some(Committed { offset, metadata }) = committed.get(&partition) else {
            continue;
        };
        if let Some(ms) = metadata.strip_prefix(EPOCH) {
            epoch = Some(ms.parse::<i64>().map_err(|_| {
                AggregatorError::Recovery(format!(
                    "unreadable commit metadata {metadata:?}; refusing to guess the schedule"
                ))
            })?);
        }
        tpl.add_partition_offset(topic, partition, Offset::Offset(*offset))?;
        from.insert(partition, *offset);
    }
    consumer.assign(&tpl)?;
    tracing::info!(partitions = tpl.count(), "assigned every input partition");
    Ok(Assignment {
        partitions: tpl.elements().iter().map(|e| e.partition()).collect(),
        from,
        epoch,
    })
}
