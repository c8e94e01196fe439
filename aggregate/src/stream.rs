//! The streaming aggregator: Kafka in, windows, releases out.
//!
//! Records are buffered per window in memory. A window closes when the wall
//! clock passes its end plus the allowed lateness (ingest refuses
//! submissions older than that, so nothing on time is missed); later records
//! are dropped and counted. A closed window is bounded and counted
//! ([`engine`](crate::engine)), authorised by the [`PrivacyLedger`],
//! noised once ([`release`](crate::release)) and published; the noised
//! release is kept until Kafka acknowledges it, so a retry resends the same
//! numbers rather than fresh noise.
//!
//! Offsets committed never pass the first record of a window that is still
//! open or unpublished, so a restart rebuilds such windows from Kafka.

use crate::config::AggregateConfig;
use crate::engine::{self, EngineError};
use crate::ledger::{LedgerError, PrivacyLedger};
use crate::noise::NoiseError;
use crate::records::{SequencedRecord, to_record_batch};
use crate::release::{ReleasePlan, noisy_release};
use datafusion::prelude::SessionContext;
use hushmap_schema::{CoarseRecord, Release, Window, WindowLength};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
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
}

/// Counters for operators and tests. Counts only, never content.
#[derive(Debug, Default)]
pub struct AggregatorStats {
    pub records_accepted: AtomicU64,
    pub records_invalid: AtomicU64,
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
    consumer: Arc<StreamConsumer>,
    producer: FutureProducer,
    ctx: SessionContext,
    plan: ReleasePlan,
    ledger: PrivacyLedger,
    open: BTreeMap<i64, WindowBuffer>,
    pending: BTreeMap<i64, PendingRelease>,
    /// Highest offset consumed per partition.
    consumed: HashMap<i32, i64>,
    next_seq: u64,
    stats: Arc<AggregatorStats>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Aggregator {
    /// Validates the config, calibrates the noise and subscribes.
    pub fn new(config: AggregateConfig) -> Result<Aggregator, AggregatorError> {
        config.validate()?;
        let plan = config.release_plan()?;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.kafka.brokers)
            .set("group.id", &config.kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .create()?;
        consumer.subscribe(&[&config.kafka.input_topic])?;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &config.kafka.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
        tracing::info!(
            epsilon_per_window = plan.epsilon(),
            risk_noise_sd = plan.risk.std_dev(),
            symptom_noise_sd = plan.symptoms.std_dev(),
            window_secs = config.window_secs,
            "aggregator calibrated"
        );
        Ok(Aggregator {
            window_length: config.window_length(),
            ledger: PrivacyLedger::new(config.budget()),
            config,
            consumer: Arc::new(consumer),
            producer,
            ctx: SessionContext::new(),
            plan,
            open: BTreeMap::new(),
            pending: BTreeMap::new(),
            consumed: HashMap::new(),
            next_seq: 0,
            stats: Arc::new(AggregatorStats::default()),
        })
    }

    pub fn stats(&self) -> Arc<AggregatorStats> {
        self.stats.clone()
    }

    fn lateness_ms(&self) -> i64 {
        i64::from(self.config.allowed_lateness_secs) * 1000
    }

    /// Consumes and releases until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), AggregatorError> {
        let consumer = self.consumer.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.tick_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                msg = consumer.recv() => match msg {
                    Ok(m) => self.on_message(m.partition(), m.offset(), m.payload()),
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

    fn on_message(&mut self, partition: i32, offset: i64, payload: Option<&[u8]>) {
        self.consumed.insert(partition, offset);
        let record = match payload.map(CoarseRecord::decode) {
            Some(Ok(r)) if r.window_length == self.window_length => r,
            Some(Ok(_)) | Some(Err(_)) | None => {
                self.stats.records_invalid.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let window = record.window;
        if self.ledger.is_released(&window)
            || self.pending.contains_key(&window.start_ms)
            || window.end_ms + self.lateness_ms() <= now_ms()
        {
            self.stats.records_late.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let buffer = self
            .open
            .entry(window.start_ms)
            .or_insert_with(|| WindowBuffer {
                records: Vec::new(),
                first_offsets: HashMap::new(),
            });
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

    async fn close_due_windows(&mut self, now: i64) -> Result<(), AggregatorError> {
        let due: Vec<i64> = self
            .open
            .keys()
            .copied()
            .filter(|start| start + self.window_length.millis() + self.lateness_ms() <= now)
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
            self.publish_pending().await;
            self.commit_offsets();
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
        let entry = match self.ledger.authorise(window, self.plan.epsilon(), 0.0) {
            Ok(entry) => entry,
            Err(e @ (LedgerError::OverBudget { .. } | LedgerError::AlreadyReleased(_))) => {
                self.stats.windows_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(window_start = window.start_ms, reason = %e, "ledger refused release; window dropped");
                return Ok(());
            }
        };
        let release = noisy_release(
            window,
            self.config.region_resolution,
            &cells,
            &self.plan,
            &entry.id,
        )?;
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

    async fn publish_pending(&mut self) {
        let starts: Vec<i64> = self.pending.keys().copied().collect();
        for start in starts {
            let payload = match self.pending[&start].release.to_ipc() {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(window_start = start, error = %e, "cannot encode release; keeping it pending");
                    continue;
                }
            };
            let key = start.to_string();
            let record = FutureRecord::to(&self.config.kafka.output_topic)
                .key(&key)
                .payload(&payload);
            match self
                .producer
                .send(record, Timeout::After(Duration::from_secs(10)))
                .await
            {
                Ok(_) => {
                    self.pending.remove(&start);
                    self.stats.windows_released.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(window_start = start, "release published");
                }
                Err((e, _)) => {
                    tracing::warn!(window_start = start, error = %e, "release not acknowledged; will retry")
                }
            }
        }
    }

    /// Commits, per partition, the lowest offset still needed: the first
    /// record of any open or unpublished window, else one past the last
    /// consumed record.
    fn commit_offsets(&self) {
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
        if tpl.count() > 0
            && let Err(e) = self.consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::warn!(error = %e, "offset commit failed; will retry");
        }
    }
}
