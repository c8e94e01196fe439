//! Kafka consumer plumbing every reader shares: the aggregator (its input,
//! its release log), the leak scanner and the tests.
//!
//! - [`committed_reader`]: the settings of every consumer that reads only
//!   committed records and commits its own offsets;
//! - [`QuietEofContext`]: a client context that keeps end-of-partition out
//!   of the error log;
//! - [`read_to_end`]: every record of a topic, from where a caller says to
//!   the end as it stands, with the end told by the partition EOF event;
//! - [`committed_offsets`]: a group's committed offsets, retried while a
//!   fresh cluster's group coordinator is still loading;
//! - [`read_to_end_now`]: whether a reader has read its partitions as far
//!   as their leaders say they reach at this moment, and [`EndProbe`],
//!   which asks that at most once per interval.

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Sets `client` up as every Hushmap consumer of a transactional topic
/// is: in group `group_id`, reading committed records only
/// (`read_committed`: an aborted or open transaction's records are never
/// seen), committing its offsets itself when what it read is safe (never
/// on a timer), and starting from the oldest record held when the group
/// has no offset (a saved offset retention has since deleted starts there
/// too, never at the newest).
///
/// ```
/// let mut client = rdkafka::ClientConfig::new();
/// hushmap_service::consumer::committed_reader(&mut client, "hushmap-aggregate");
/// assert_eq!(client.get("isolation.level"), Some("read_committed"));
/// assert_eq!(client.get("enable.auto.commit"), Some("false"));
/// ```
pub fn committed_reader<'a>(client: &'a mut ClientConfig, group_id: &str) -> &'a mut ClientConfig {
    client
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        // Once the local queue holds `queued.min.messages`, librdkafka
        // waits this long before fetching again (1 s by default). A reader
        // that works on each record (the aggregator opens and buffers it)
        // drains the queue within that second and then sat idle: its
        // intake ran at a quarter of what it does with a short backoff.
        .set("fetch.queue.backoff.ms", "20")
}

/// Client context that leaves end-of-partition out of the error log:
/// librdkafka reports it through the error callback as well as to the
/// consumer, and for a reader that uses it to know where the end is it is
/// routine.
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

/// Why a topic could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ReadToEndError {
    #[error("reading {topic}: {source}")]
    Kafka { topic: String, source: KafkaError },
    #[error("topic {0} has no partitions (does it exist?)")]
    NoPartitions(String),
    #[error("timed out reading {topic} to its end ({partitions_left} partitions left)")]
    Timeout {
        topic: String,
        partitions_left: usize,
    },
}

/// When [`read_to_end`] stops waiting for the end of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The whole read must be done within this (a catch-up read that a
    /// caller retries).
    After(Duration),
    /// Only when nothing (no record, no end of a partition) has come for
    /// this long: a scan of a long topic takes as long as it takes.
    WhenIdleFor(Duration),
}

impl GiveUp {
    fn limit(self) -> Duration {
        match self {
            GiveUp::After(d) | GiveUp::WhenIdleFor(d) => d,
        }
    }
}

/// Reads every partition of `topic`, each from `start(partition)`, to its
/// end as it stands, handing each record to `visit`. Returns, per
/// partition that had records, the offset after the last one read (where
/// a later read picks up).
///
/// The end is the partition EOF event, not the high watermark: EOF is
/// reported past transaction markers and aborted records, which offsets
/// alone cannot tell apart from records still to come. `client` carries
/// the caller's connection, group id and `isolation.level`; this sets the
/// settings the read itself depends on (EOF events, no commits, and a
/// short fetch wait, since the broker otherwise holds an empty fetch for
/// half a second hoping for data).
///
/// A broker of a cluster being down is not an error: librdkafka reads from
/// the others, until the read gives up (`give_up`).
pub fn read_to_end(
    client: &ClientConfig,
    topic: &str,
    start: impl Fn(i32) -> Offset,
    give_up: GiveUp,
    mut visit: impl FnMut(&BorrowedMessage<'_>),
) -> Result<HashMap<i32, i64>, ReadToEndError> {
    let kafka = |source| ReadToEndError::Kafka {
        topic: topic.to_string(),
        source,
    };
    let reader: BaseConsumer<QuietEofContext> = client
        .clone()
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create_with_context(QuietEofContext)
        .map_err(kafka)?;
    let metadata = reader
        .fetch_metadata(Some(topic), give_up.limit())
        .map_err(kafka)?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = HashSet::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(topic, p.id(), start(p.id()))
            .map_err(kafka)?;
        remaining.insert(p.id());
    }
    if remaining.is_empty() {
        return Err(ReadToEndError::NoPartitions(topic.to_string()));
    }
    reader.assign(&tpl).map_err(kafka)?;
    let mut next = HashMap::new();
    let started = Instant::now();
    let mut last_progress = started;
    while !remaining.is_empty() {
        let waited_since = match give_up {
            GiveUp::After(_) => started,
            GiveUp::WhenIdleFor(_) => last_progress,
        };
        if waited_since.elapsed() > give_up.limit() {
            return Err(ReadToEndError::Timeout {
                topic: topic.to_string(),
                partitions_left: remaining.len(),
            });
        }
        match reader.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                remaining.remove(&p);
                last_progress = Instant::now();
            }
            Some(Err(e))
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::BrokerTransportFailure) => {}
            Some(Err(e)) => return Err(kafka(e)),
            Some(Ok(message)) => {
                next.insert(message.partition(), message.offset() + 1);
                visit(&message);
                last_progress = Instant::now();
            }
        }
    }
    Ok(next)
}

/// The committed offsets (and metadata) of `wanted`, retried for up to a
/// minute: on a fresh cluster the group coordinator is still loading
/// (`NotCoordinator`) for a while. Blocking; for start-up.
pub fn committed_offsets<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    wanted: TopicPartitionList,
) -> Result<TopicPartitionList, KafkaError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = consumer
            .committed_offsets(wanted.clone(), Duration::from_secs(10))
            .and_then(
                |tpl| match tpl.elements().iter().find_map(|e| e.error().err()) {
                    Some(e) => Err(e),
                    None => Ok(tpl),
                },
            );
        match attempt {
            Ok(tpl) => return Ok(tpl),
            Err(e) if Instant::now() < deadline => {
                tracing::info!(error = %e, "committed offsets not available yet; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The partitions of `topic` among `reading` (each with the offset the
/// caller reads next) that hold nothing beyond that offset, as their
/// leaders answer now; it stops at the first partition that does (or whose
/// leader does not answer within `timeout`), since callers need all of
/// them. Blocking: one round trip per partition.
///
/// This is what a reader may conclude from the answer: a producer waiting
/// for `acks=all` is acknowledged only after its record is below the
/// partition's high watermark, and the question is asked after this call
/// began, so every record acknowledged before the call is among those the
/// caller has read. An end-of-partition event says less: it was true when
/// the fetch that raised it was answered, and says nothing about a
/// partition whose leader has since stopped answering the fetches.
pub fn read_to_end_now<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    reading: &[(i32, i64)],
    timeout: Duration,
) -> Vec<i32> {
    let mut at_end = Vec::new();
    for &(partition, next) in reading {
        match consumer.fetch_watermarks(topic, partition, timeout) {
            // An empty partition (low = high) holds nothing to wait for,
            // even if retention moved it past `next`.
            Ok((low, high)) if next >= high || low == high => at_end.push(partition),
            Ok(_) => break,
            Err(e) => {
                tracing::debug!(partition, error = %e, "partition end not known");
                break;
            }
        }
    }
    at_end
}

/// Asks partition leaders where their partitions end ([`read_to_end_now`])
/// at most once per `interval`, off the async worker
/// ([`blocking`](crate::runtime::blocking)). Both aggregator topologies
/// use one to learn that an idle partition has been read past a deadline.
#[derive(Debug)]
pub struct EndProbe {
    interval: Duration,
    timeout: Duration,
    last_asked: Option<Instant>,
}

impl Default for EndProbe {
    /// At most one round of questions a second, each answer waited for up
    /// to 2 s: windows close within about a second of their deadline, and
    /// a few ListOffsets a second cost a broker nothing.
    fn default() -> EndProbe {
        EndProbe {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            last_asked: None,
        }
    }
}

impl EndProbe {
    /// When it asked (ms since the epoch) and which of `reading` were read
    /// to their end then; `None` if there is nothing to ask or it asked
    /// less than `interval` ago.
    pub fn ask<C: ConsumerContext>(
        &mut self,
        consumer: &impl Consumer<C>,
        topic: &str,
        reading: &[(i32, i64)],
    ) -> Option<(i64, Vec<i32>)> {
        if reading.is_empty() || self.last_asked.is_some_and(|t| t.elapsed() < self.interval) {
            return None;
        }
        self.last_asked = Some(Instant::now());
        let asked_at = crate::clock::now_ms();
        let at_end =
            crate::runtime::blocking(|| read_to_end_now(consumer, topic, reading, self.timeout));
        Some((asked_at, at_end))
    }
}
