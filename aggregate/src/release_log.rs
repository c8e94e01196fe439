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
use crate::error::AggregatorError;
use hushmap_privacy::LedgerEntry;
use hushmap_schema::Release;
use hushmap_service::consumer::{GiveUp, committed_reader, read_to_end};
use hushmap_service::runtime::blocking;
use rdkafka::Offset;
use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use std::collections::HashMap;
use std::time::Duration;

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
        ReleaseLog::on_topic(config, &config.kafka.output_topic)
    }

    /// A log of another topic of releases (the provisional topic: each
    /// provisional release charged its window too), at its beginning.
    pub fn on_topic(config: &AggregateConfig, topic: &str) -> Result<ReleaseLog, AggregatorError> {
        let mut client = config.kafka.security.client_config(&config.kafka.brokers)?;
        committed_reader(
            &mut client,
            &format!("{}-ledger-recovery", config.kafka.group_id),
        );
        Ok(ReleaseLog {
            client,
            topic: topic.to_string(),
            next: HashMap::new(),
        })
    }

    /// The releases committed since the previous read (every one, on the
    /// first), as ledger entries in topic order per partition.
    ///
    /// A record that is not a release is skipped with a warning; it is
    /// never read again.
    pub fn read_new(&mut self) -> Result<Vec<LedgerEntry>, AggregatorError> {
        Ok(self
            .read_new_releases()?
            .iter()
            .map(|r| LedgerEntry::of_release(&r.meta))
            .collect())
    }

    /// Like [`read_new`](Self::read_new), the releases themselves.
    pub fn read_new_releases(&mut self) -> Result<Vec<Release>, AggregatorError> {
        let mut entries = Vec::new();
        // Up to READ_TIMEOUT on this thread: other tasks move elsewhere.
        let next = blocking(|| {
            read_to_end(
                &self.client,
                &self.topic,
                |p| {
                    self.next
                        .get(&p)
                        .map_or(Offset::Beginning, |&n| Offset::Offset(n))
                },
                GiveUp::After(READ_TIMEOUT),
                |message| match message.payload().and_then(|p| Release::from_ipc(p).ok()) {
                    Some(release) => entries.push(release),
                    None => tracing::warn!(
                        partition = message.partition(),
                        offset = message.offset(),
                        "undecodable release on the releases topic; skipped"
                    ),
                },
            )
        })?;
        // Only a read that got to the end of every partition moves on: a
        // failed one is repeated whole, so nothing it saw is lost.
        self.next.extend(next);
        Ok(entries)
    }
}
