//! The streaming aggregator: Kafka in, windows, releases out.
//!
//! Records are buffered per window in memory. A record is on time when ingest
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
//! A closed window is bounded and counted ([`engine`](crate::engine)),
//! authorised by the [`PrivacyLedger`],
//! noised once ([`release`](crate::release)) and published; the noised
//! release is kept until Kafka acknowledges it, so a retry resends the same
//! numbers rather than fresh noise.
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
use crate::engine::{self, EngineError};
use crate::intake::{DropCounts, DropReason};
use crate::ledger::PrivacyLedger;
use crate::noise::NoiseError;
use crate::records::{SequencedRecord, to_record_batch};
use crate::release::{ReleasePlan, noisy_release};
use crate::release_log::ReleaseLog;
use crate::transactions::Transactions;
use datafusion::prelude::SessionContext;
use hushmap_schema::{PayloadKeyring, Release, Window, WindowLength};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("noise: {0}")]
    Noise(#[from] NoiseError),
    #[error("encoding release: {0}")]
    Release(#[from] hushmap_schema::ReleaseError),
    #[error("recovering state from Kafka: {0}")]
    Recovery(String),
    #[error("metrics endpoint: {0}")]
    Metrics(String),
}

/// Counters for operators and tests. Counts only, never content.
#[derive(Debug, Default)]
pub struct AggregatorStats {
    pub records_accepted: AtomicU64,
    /// Dropped before counting, by reason; `records_invalid` is their sum.
    pub records_dropped: DropCounts,
    pub records_late: AtomicU64,
    pub windows_released: AtomicU64,
    pub windows_refused: AtomicU64,
    /// Windows buffering records, and noised releases not yet acknowledged.
    pub open_windows: AtomicU64,
    pub pending_releases: AtomicU64,
}

/// Records of one window, with the first offset seen per partition.
struct WindowBuffer {
    records: Vec<SequencedRecord>,
    /// Seal ids of the records buffered, to drop replayed copies.
    seals: HashSet<u128>,
    first_offsets: HashMap<i32, i64>,
}

/// A noised release waiting for Kafka's acknowledgement.
struct PendingRelease {
    release: Release,
    first_offsets: HashMap<i32, i64>,
}

pub struct Aggregator {
    config: AggregateConfig,
    window_length: WindowLength,
    keyring: PayloadKeyring,
    consumer: Arc<StreamConsumer<QuietEofContext>>,
    txn: Transactions,
    ctx: SessionContext,
    plan: ReleasePlan,
    ledger: PrivacyLedger,
    /// The releases topic as the ledger's history, read where it left off.
    release_log: ReleaseLog,
    open: BTreeMap<i64, WindowBuffer>,
    pending: BTreeMap<i64, PendingRelease>,
    /// Highest offset consumed per partition.
    consumed: HashMap<i32, i64>,
    /// The input partitions, all assigned to this instance at start-up.
    partitions: Vec<i32>,
    /// Latest produce timestamp seen per partition.
    latest_arrival: HashMap<i32, i64>,
    /// Partitions read to their end since their last record.
    caught_up: HashSet<i32>,
    next_seq: u64,
    stats: Arc<AggregatorStats>,
    /// Bound at start-up, served while running.
    metrics_listener: std::net::TcpListener,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Aggregator {
    /// Validates the config, calibrates the noise and subscribes.
    pub fn new(config: AggregateConfig) -> Result<Aggregator, AggregatorError> {
        let plan = config.validated_plan()?;
        let keyring = config.payload_keyring()?;
        let consumer: StreamConsumer<QuietEofContext> = config
            .kafka
            .security
            .client_config(&config.kafka.brokers)?
            .set("group.id", &config.kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            // Reaching the end of a partition is how we know a replay after
            // a restart has caught up (see `read_frontier`).
            .set("enable.partition.eof", "true")
            .create_with_context(QuietEofContext)?;
        let partitions = assign_every_partition(&consumer, &config.kafka.input_topic)?;
        // Fences off any earlier instance with the same id and aborts its
        // open transaction: a half-published release never becomes visible.
        let txn = Transactions::new(&config, config.kafka.transactional_id.clone())?;
        let metrics_listener = std::net::TcpListener::bind(config.metrics_listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| {
                AggregatorError::Metrics(format!("binding {}: {e}", config.metrics_listen))
            })?;
        let mut ledger = PrivacyLedger::new(config.budget());
        let mut release_log = ReleaseLog::new(&config)?;
        let restored = release_log.read_new()?;
        let restored_count = restored.len();
        for entry in restored {
            ledger.restore(entry);
        }
        tracing::info!(
            releases = restored_count,
            "ledger restored from the releases topic"
        );
        tracing::info!(
            mechanism = plan.mechanism,
            epsilon_per_window = plan.cost.epsilon,
            delta = plan.cost.delta,
            rho_per_window = plan.cost.rho,
            levels = plan.levels.len(),
            risk_noise_sd = plan.finest().risk.std_dev(),
            symptom_noise_sd = plan.finest().symptoms.std_dev(),
            window_secs = config.window_secs,
            "aggregator calibrated"
        );
        Ok(Aggregator {
            window_length: config.window_length(),
            keyring,
            ledger,
            release_log,
            config,
            consumer: Arc::new(consumer),
            txn,
            ctx: SessionContext::new(),
            plan,
            open: BTreeMap::new(),
            pending: BTreeMap::new(),
            consumed: HashMap::new(),
            partitions,
            latest_arrival: HashMap::new(),
            caught_up: HashSet::new(),
            next_seq: 0,
            stats: Arc::new(AggregatorStats::default()),
            metrics_listener,
        })
    }

    /// Where `/metrics` is served.
    pub fn metrics_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.metrics_listener.local_addr()
    }

    pub fn stats(&self) -> Arc<AggregatorStats> {
        self.stats.clone()
    }

    fn lateness_ms(&self) -> i64 {
        i64::from(self.config.allowed_lateness_secs) * 1000
    }

    /// Consumes and releases until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), AggregatorError> {
        let metrics = crate::metrics::serve(&self.metrics_listener, self.stats.clone())?;
        let result = self.consume(shutdown).await;
        metrics.abort();
        result
    }

    async fn consume(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), AggregatorError> {
        let consumer = self.consumer.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.tick_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                msg = consumer.recv() => match msg {
                    Ok(m) => {
                        let arrived_ms = m.timestamp().to_millis().unwrap_or_else(now_ms);
                        self.on_message(m.partition(), m.offset(), arrived_ms, m.payload());
                    }
                    Err(KafkaError::PartitionEOF(p)) => {
                        self.caught_up.insert(p);
                    }
                    Err(e) => tracing::warn!(error = %e, "consumer error"),
                },
                _ = tick.tick() => self.close_due_windows(now_ms()).await?,
            }
        }
        tracing::info!(
            open_windows = self.open.len(),
            "aggregator stopping; open windows resume from Kafka on restart"
        );
        Ok(())
    }

    /// Buffers one record. Lateness is judged by when ingest produced it
    /// (the record's Kafka timestamp), not by when we read it, so records
    /// replayed after a restart count in the window they were on time for.
    fn on_message(&mut self, partition: i32, offset: i64, arrived_ms: i64, payload: Option<&[u8]>) {
        self.consumed.insert(partition, offset);
        self.caught_up.remove(&partition);
        let latest = self.latest_arrival.entry(partition).or_insert(arrived_ms);
        *latest = (*latest).max(arrived_ms);
        let Some((record, seal_id)) =
            self.stats
                .records_dropped
                .opened(&self.keyring, self.window_length, payload)
        else {
            return;
        };
        let window = record.window;
        if self.ledger.is_released(&window)
            || self.pending.contains_key(&window.start_ms)
            || window.end_ms.saturating_add(self.lateness_ms()) <= arrived_ms
        {
            self.stats.records_late.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let buffer = self
            .open
            .entry(window.start_ms)
            .or_insert_with(|| WindowBuffer {
                records: Vec::new(),
                seals: HashSet::new(),
                first_offsets: HashMap::new(),
            });
        if !buffer.seals.insert(seal_id) {
            self.stats.records_dropped.add(DropReason::Replayed);
            return;
        }
        buffer.first_offsets.entry(partition).or_insert(offset);
        buffer.records.push(SequencedRecord {
            seq: self.next_seq,
            record,
        });
        self.next_seq += 1;
        self.stats.records_accepted.fetch_add(1, Ordering::Relaxed);
        self.stats
            .open_windows
            .store(self.open.len() as u64, Ordering::Relaxed);
    }

    /// The instant up to which every partition has been read: a partition
    /// counts as far as its latest record's produce time, or as "now" once
    /// it has been read to its end.
    fn read_frontier(&self, now: i64) -> i64 {
        self.partitions
            .iter()
            .map(|p| {
                if self.caught_up.contains(p) {
                    now
                } else {
                    self.latest_arrival.get(p).copied().unwrap_or(i64::MIN)
                }
            })
            .min()
            .unwrap_or(i64::MIN)
    }

    async fn close_due_windows(&mut self, now: i64) -> Result<(), AggregatorError> {
        // A window closes once its deadline has passed both on the clock and
        // in what we have read: after a restart the backlog of every
        // partition is replayed before any window is closed on partial data.
        let frontier = self.read_frontier(now).min(now);
        let due: Vec<i64> = self
            .open
            .keys()
            .copied()
            .filter(|start| {
                start
                    .saturating_add(self.window_length.millis())
                    .saturating_add(self.lateness_ms())
                    <= frontier
            })
            .collect();
        let mut changed = !self.pending.is_empty();
        for start in due {
            let buffer = self.open.remove(&start).expect("listed above");
            let window =
                Window::from_start(start, self.window_length).expect("aligned by construction");
            self.close_window(window, buffer).await?;
            changed = true;
        }
        if changed {
            self.publish_pending();
        }
        self.stats
            .open_windows
            .store(self.open.len() as u64, Ordering::Relaxed);
        self.stats
            .pending_releases
            .store(self.pending.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn close_window(
        &mut self,
        window: Window,
        buffer: WindowBuffer,
    ) -> Result<(), AggregatorError> {
        let batch =
            to_record_batch(&buffer.records).map_err(|e| EngineError::DataFusion(e.into()))?;
        let cells = engine::bounded_counts(&self.ctx, batch, self.config.bounds()).await?;
        let entry = match self.ledger.authorise(window, self.plan.cost) {
            Ok(entry) => entry,
            Err(e) => {
                self.stats.windows_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(window_start = window.start_ms, reason = %e, "ledger refused release; window dropped");
                return Ok(());
            }
        };
        let release = noisy_release(window, &cells, &self.plan, &entry.id)?;
        tracing::info!(
            window_start = window.start_ms,
            cells = release.rows.len(),
            "window closed and noised"
        );
        self.pending.insert(
            window.start_ms,
            PendingRelease {
                release,
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

    /// Drops pending releases the releases topic already holds.
    fn drop_published(&mut self) {
        match self.release_log.read_new() {
            Ok(entries) => {
                for entry in entries {
                    if self.pending.remove(&entry.window.start_ms).is_some() {
                        self.stats.windows_released.fetch_add(1, Ordering::Relaxed);
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
        let key = start.to_string();
        // Offsets as they will stand once this release is out.
        let released = self.pending.remove(&start).expect("listed");
        let offsets = self.offsets_to_commit();
        let timeout = self.txn.timeout();
        let record = FutureRecord::to(&self.config.kafka.output_topic)
            .key(&key)
            .payload(&payload);
        // Any failure, the first step's included, puts the release back.
        let result = (|| -> Result<(), KafkaError> {
            let producer = &self.txn.producer;
            producer.begin_transaction()?;
            // Not awaited: commit_transaction flushes it, and fails if it failed.
            let _delivery = producer.send_result(record).map_err(|(e, _)| e)?;
            producer.send_offsets_to_transaction(&offsets, &group, timeout)?;
            self.txn.commit()
        })();
        if result.is_err() {
            self.pending.insert(start, released);
        }
        Ok(result?)
    }

    /// Per partition, the lowest offset still needed: the first record of
    /// any open or unpublished window, else one past the last consumed.
    fn offsets_to_commit(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (&partition, &last) in &self.consumed {
            let needed = self
                .open
                .values()
                .map(|b| &b.first_offsets)
                .chain(self.pending.values().map(|p| &p.first_offsets))
                .filter_map(|m| m.get(&partition).copied())
                .min();
            let offset = needed.unwrap_or(last + 1);
            if let Err(e) = tpl.add_partition_offset(
                &self.config.kafka.input_topic,
                partition,
                Offset::Offset(offset),
            ) {
                tracing::warn!(error = %e, partition, "cannot add offset to commit");
            }
        }
        tpl
    }
}

/// Client context that leaves end-of-partition out of the error log:
/// librdkafka reports it through the error callback as well as to the
/// consumer, and here it is routine (it is how catching up is detected).
pub struct QuietEofContext;

impl ClientContext for QuietEofContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF)) {
            return;
        }
        tracing::error!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for QuietEofContext {}

/// Assigns every partition of `topic`, each from its committed offset (the
/// first record of the oldest window not yet released), or the beginning;
/// returns the partitions.
fn assign_every_partition(
    consumer: &StreamConsumer<QuietEofContext>,
    topic: &str,
) -> Result<Vec<i32>, AggregatorError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let mut wanted = TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        wanted.add_partition(topic, p.id());
    }
    if wanted.count() == 0 {
        return Err(AggregatorError::Recovery(format!(
            "input topic {topic} has no partitions (does it exist?)"
        )));
    }
    // Fetched explicitly, with retries, rather than left to librdkafka's
    // `Offset::Stored`: a failed internal fetch left the partitions idle.
    let committed = committed_offsets(consumer, wanted)?;
    let mut tpl = TopicPartitionList::new();
    for e in committed.elements() {
        // No committed offset yet: from the beginning (retention bounds it).
        let offset = match e.offset() {
            Offset::Offset(n) => Offset::Offset(n),
            _ => Offset::Beginning,
        };
        tpl.add_partition_offset(topic, e.partition(), offset)?;
    }
    consumer.assign(&tpl)?;
    tracing::info!(partitions = tpl.count(), "assigned every input partition");
    Ok(tpl.elements().iter().map(|e| e.partition()).collect())
}

/// The committed offsets (and metadata) of `wanted`, retried for up to a
/// minute: on a fresh cluster the group coordinator is still loading
/// (`NotCoordinator`) for a while.
pub(crate) fn committed_offsets<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    wanted: TopicPartitionList,
) -> Result<TopicPartitionList, AggregatorError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = consumer
            .committed_offsets(wanted.clone(), Duration::from_secs(10))
            .map_err(AggregatorError::from)
            .and_then(
                |tpl| match tpl.elements().iter().find_map(|e| e.error().err()) {
                    Some(e) => Err(AggregatorError::from(e)),
                    None => Ok(tpl),
                },
            );
        match attempt {
            Ok(tpl) => return Ok(tpl),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::info!(error = %e, "committed offsets not available yet; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => {
                return Err(AggregatorError::Recovery(format!(
                    "cannot fetch committed offsets: {e}"
                )));
            }
        }
    }
}
