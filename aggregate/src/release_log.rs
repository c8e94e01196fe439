//! [`ReleaseLog`]: the releases topic, read as the privacy ledger's history.
//!
//! Every committed release on the topic spent budget once, whichever
//! instance published it. An aggregator restores its ledger from them at
//! start-up, and reads the topic again before it authorises a window it
//! has not seen (a partitioned peer may have released it) or resends a
//! release whose commit failed (the commit may have happened after all).
//!
//! Each read resumes where the previous one ended, so it costs what was
//! published since, not the topic's whole history: with hourly windows a
//! year is ~9,000 releases (×12 parts when partitioned), and re-reading
//! them all before every new window would grow without end.
//!
//! Each read uses a fresh `read_committed` consumer that starts at the
//! saved offsets and stops at every partition's end-of-partition event.
//! A fresh consumer reports that event once it reaches the end (in
//! `read_committed`, the last stable offset), even when nothing is new.
//! librdkafka reports it once per end offset reached, so a long-lived
//! consumer with nothing new to read, or held at a peer's open
//! transaction, would wait for an event that never comes.

use crate::config::AggregateConfig;
use crate::stream::{AggregatorError, QuietEofContext};
use hushmap_privacy::LedgerEntry;
use hushmap_schema::Release;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long one read may take before it fails (and the caller retries).
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads the committed releases of one releases topic, each once.
///
/// ```no_run
/// # fn demo(config: &hushmap_aggregate::AggregateConfig) -> Result<(), hushmap_aggregate::AggregatorError> {
/// use hushmap_aggregate::release_log::ReleaseLog;
/// let mut log = ReleaseLog::new(config)?;
/// let history = log.read_new()?; // every committed release so far
/// let since = log.read_new()?; // only those committed since
/// # Ok(()) }
/// ```
pub struct ReleaseLog {
    client: ClientConfig,
    topic: String,
    /// Per partition, the offset after the last record read.
    next: HashMap<i32, i64>,
}

impl ReleaseLog {
    /// A log of `config`'s releases topic, positioned at its beginning.
    pub fn new(config: &AggregateConfig) -> Result<ReleaseLog, AggregatorError> {
        let mut client = config.kafka.security.client_config(&config.kafka.brokers)?;
        client
            .set(
                "group.id",
                format!("{}-ledger-recovery", config.kafka.group_id),
            )
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            // A saved offset that retention has since deleted starts over
            // from the oldest record kept, never from the newest.
            .set("auto.offset.reset", "earliest")
            // End of partition is reported past transaction markers too,
            // which record offsets alone cannot tell.
            .set("enable.partition.eof", "true")
            // The end is known when a fetch comes back empty; the broker
            // holds an empty fetch this long (default 500 ms) hoping for
            // data, which a catch-up read does not want to wait for.
            .set("fetch.wait.max.ms", "10");
        Ok(ReleaseLog {
            client,
            topic: config.kafka.output_topic.clone(),
            next: HashMap::new(),
        })
    }

    /// The releases committed since the previous read (every one, on the
    /// first), as ledger entries in topic order per partition.
    ///
    /// A record that is not a release is skipped with a warning; it is
    /// never read again.
    pub fn read_new(&mut self) -> Result<Vec<LedgerEntry>, AggregatorError> {
        let reader: BaseConsumer<QuietEofContext> =
            self.client.create_with_context(QuietEofContext)?;
        let topic = &self.topic;
        let metadata = reader.fetch_metadata(Some(topic), READ_TIMEOUT)?;
        let mut tpl = TopicPartitionList::new();
        let mut remaining = HashSet::new();
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let from = self
                .next
                .get(&p.id())
                .map_or(Offset::Beginning, |&n| Offset::Offset(n));
            tpl.add_partition_offset(topic, p.id(), from)?;
            remaining.insert(p.id());
        }
        if remaining.is_empty() {
            return Err(AggregatorError::Recovery(format!(
                "releases topic {topic} has no partitions"
            )));
        }
        reader.assign(&tpl)?;
        let mut entries = Vec::new();
        let mut next = HashMap::new();
        let deadline = Instant::now() + READ_TIMEOUT;
        while !remaining.is_empty() {
            if Instant::now() > deadline {
                return Err(AggregatorError::Recovery(format!(
                    "timed out reading {topic}"
                )));
            }
            let message = match reader.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    remaining.remove(&p);
                    continue;
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(m)) => m,
            };
            next.insert(message.partition(), message.offset() + 1);
            match message.payload().and_then(|p| Release::from_ipc(p).ok()) {
                Some(release) => entries.push(LedgerEntry::of_release(&release.meta)),
                None => tracing::warn!(
                    partition = message.partition(),
                    offset = message.offset(),
                    "undecodable release on the releases topic; skipped"
                ),
            }
        }
        // Only a read that got to the end of every partition moves on: a
        // failed one is repeated whole, so nothing it saw is lost.
        self.next.extend(next);
        Ok(entries)
    }
}
