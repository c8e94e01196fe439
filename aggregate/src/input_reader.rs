//! The streaming aggregator's input reader: a thread of its own that polls
//! the input topic and opens its records, handing them over in batches.
//!
//! Why a thread: `StreamConsumer::recv` hands the async worker one message
//! per wake-up, and each hand-off contends for librdkafka's queue lock with
//! its fetcher thread. Here a plain `poll` loop reads the queue without
//! waking anyone and copies each sealed record into a batch.
//!
//! Opening a record (XChaCha20-Poly1305 and a SHA-256 for its seal id,
//! about 2 µs) is the largest cost of intake, more than reading it. So the
//! batches are opened by a pool of opener threads, one per core, while the
//! reader goes on reading and the window book admits the batch before.
//!
//! Nothing is decided here, and the order is kept. Each batch's place in
//! the hand-over queue is taken when the reader finishes it, before it is
//! opened, so the aggregator receives batches in the order they were read
//! and sees each partition's offsets in the same increasing order as
//! before. Which records count, the windows, what is late and which offsets
//! are committed stay with the aggregator: a record still in a batch is not
//! consumed as far as the offsets it commits are concerned.
//!
//! When the aggregator is slow (a window being counted), the bounded
//! hand-over queue fills and the reader waits, so what is held here is at
//! most [`BATCHES_IN_FLIGHT`] batches of [`MAX_BATCH`] records (a few MB)
//! beyond librdkafka's own queue.

use crate::intake::{DropReason, open_record};
use hushmap_schema::sealed::SEALED_LEN;
use hushmap_schema::{CoarseRecord, PayloadKeyring, WindowLength};
use hushmap_service::clock::now_ms;
use hushmap_service::consumer::QuietEofContext;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Records in one hand-over at most.
pub const MAX_BATCH: usize = 2048;
/// Batches read ahead of the aggregator at most (being opened or opened).
pub const BATCHES_IN_FLIGHT: usize = 8;
/// Opener threads at most, whatever the core count.
const MAX_OPENERS: usize = 8;
/// How long the reader waits on an empty queue before looking whether it
/// is asked to stop.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// One record read from the input topic, opened or with the reason it
/// will be dropped.
#[derive(Debug)]
pub struct Arrival {
    pub partition: i32,
    pub offset: i64,
    /// When the broker appended it (its Kafka timestamp: the input topic is
    /// `LogAppendTime`, checked at start), or when it was read if it has none.
    pub arrived_ms: i64,
    /// The record and its seal id (see [`open_record`]).
    pub opened: Result<(CoarseRecord, u128), DropReason>,
}

/// A record as read, before opening. A payload of the sealed length is
/// copied (no allocation); any other is judged at once, since it is
/// refused without any cryptography.
struct Read {
    partition: i32,
    offset: i64,
    arrived_ms: i64,
    payload: Payload,
}

enum Payload {
    Sealed([u8; SEALED_LEN]),
    Judged(Result<(CoarseRecord, u128), DropReason>),
}

/// A batch to open, and where its opened records go.
type Job = (Vec<Read>, oneshot::Sender<Vec<Arrival>>);

/// The running reader and opener threads, and the receiving end of their
/// batches.
pub struct InputReader {
    batches: mpsc::Receiver<oneshot::Receiver<Vec<Arrival>>>,
    /// The batch whose turn it is, while it is still being opened (kept
    /// here so that [`next`](Self::next) can be cancelled without losing
    /// it).
    waiting: Option<oneshot::Receiver<Vec<Arrival>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl InputReader {
    /// Starts reading `consumer`'s assigned partitions on a new thread,
    /// with one opener thread per core.
    pub fn start(
        consumer: Arc<BaseConsumer<QuietEofContext>>,
        keyring: PayloadKeyring,
        window_length: WindowLength,
    ) -> std::io::Result<InputReader> {
        let openers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_OPENERS);
        InputReader::start_with(consumer, keyring, window_length, openers)
    }

    fn start_with(
        consumer: Arc<BaseConsumer<QuietEofContext>>,
        keyring: PayloadKeyring,
        window_length: WindowLength,
        openers: usize,
    ) -> std::io::Result<InputReader> {
        let (tx, batches) = mpsc::channel(BATCHES_IN_FLIGHT);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(openers + 1);
        let mut jobs = Vec::with_capacity(openers);
        for i in 0..openers {
            let (job_tx, job_rx) = std_mpsc::channel::<Job>();
            let keyring = keyring.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("hushmap-open-{i}"))
                    .spawn(move || open_batches(&job_rx, &keyring, window_length))?,
            );
            jobs.push(job_tx);
        }
        let stopping = stop.clone();
        threads.push(
            std::thread::Builder::new()
                .name("hushmap-input".into())
                .spawn(move || read(&consumer, &keyring, window_length, &stopping, &jobs, &tx))?,
        );
        Ok(InputReader {
            batches,
            waiting: None,
            stop,
            threads,
        })
    }

    /// The next batch, in the order read; `None` once the reader has
    /// stopped. Cancel-safe: a batch whose turn has come is kept until it
    /// is returned.
    pub async fn next(&mut self) -> Option<Vec<Arrival>> {
        if self.waiting.is_none() {
            self.waiting = Some(self.batches.recv().await?);
        }
        let opened = self.waiting.as_mut()?.await;
        self.waiting = None;
        // An opener that ended without answering has panicked.
        opened.ok()
    }

    /// Stops the threads and waits for them (at most one idle poll, off
    /// the async worker), so the consumer is no longer read once this
    /// returns.
    pub async fn stop(mut self) {
        self.signal_stop();
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }

    fn signal_stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A reader waiting for room in the queue gives up at once; the
        // openers end when the reader drops their job queues.
        self.batches.close();
    }
}

impl Drop for InputReader {
    /// An aggregator that returns with an error stops its reader too; the
    /// threads end within an idle poll.
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// The reader thread's loop: poll, copy, and hand a batch to the next
/// opener whenever the queue runs dry or the batch is full.
fn read(
    consumer: &BaseConsumer<QuietEofContext>,
    keyring: &PayloadKeyring,
    window_length: WindowLength,
    stop: &AtomicBool,
    openers: &[std_mpsc::Sender<Job>],
    tx: &mpsc::Sender<oneshot::Receiver<Vec<Arrival>>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut next_opener = 0;
    while !stop.load(Ordering::Relaxed) {
        // With records in hand, do not wait for more: hand them over.
        let wait = if batch.is_empty() {
            IDLE_POLL
        } else {
            Duration::ZERO
        };
        match consumer.poll(wait) {
            Some(Ok(m)) => {
                let payload = match m.payload().map(<&[u8; SEALED_LEN]>::try_from) {
                    Some(Ok(sealed)) => Payload::Sealed(*sealed),
                    _ => Payload::Judged(open_record(keyring, window_length, m.payload())),
                };
                batch.push(Read {
                    partition: m.partition(),
                    offset: m.offset(),
                    arrived_ms: m.timestamp().to_millis().unwrap_or_else(now_ms),
                    payload,
                });
                if batch.len() < MAX_BATCH {
                    continue;
                }
            }
            // Never a payload or an offset in the log: only the error.
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
                continue;
            }
            None if batch.is_empty() => continue,
            None => {}
        }
        let full = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        let (opened_tx, opened_rx) = oneshot::channel();
        // The batch's turn first (this waits while the aggregator is
        // behind), then its opening.
        if tx.blocking_send(opened_rx).is_err() {
            return; // the aggregator is gone or stopping
        }
        if openers[next_opener].send((full, opened_tx)).is_err() {
            return; // an opener panicked; the aggregator sees its batch missing
        }
        next_opener = (next_opener + 1) % openers.len();
    }
}

/// An opener thread's loop: open each batch it is given, in its order.
fn open_batches(
    jobs: &std_mpsc::Receiver<Job>,
    keyring: &PayloadKeyring,
    window_length: WindowLength,
) {
    for (batch, opened) in jobs {
        let arrivals = batch
            .into_iter()
            .map(|read| Arrival {
                partition: read.partition,
                offset: read.offset,
                arrived_ms: read.arrived_ms,
                opened: match read.payload {
                    Payload::Sealed(bytes) => open_record(keyring, window_length, Some(&bytes[..])),
                    Payload::Judged(judged) => judged,
                },
            })
            .collect();
        // The aggregator may have stopped meanwhile; nothing to tell.
        let _ = opened.send(arrivals);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hushmap_schema::region::RegionResolution;
    use hushmap_schema::sealed::{SEALING_EPOCH, SEALING_EPOCH_RECORDS};
    use hushmap_schema::{AgeBand, ContributorKey, RegionCell, RiskLevel, SymptomSet, Window};
    use hushmap_service::consumer::committed_reader;
    use hushmap_testkit::{brokers, create_topics, payload_keyring, unique};
    use rdkafka::consumer::Consumer;
    use rdkafka::producer::{FutureRecord, Producer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    const DAY: WindowLength = WindowLength::ONE_DAY;

    fn record(n: u64) -> CoarseRecord {
        CoarseRecord {
            window: Window::containing(1_764_000_000_000, DAY),
            window_length: DAY,
            region: RegionCell::from_coordinate(51.5, -0.1, RegionResolution::new(5).unwrap())
                .unwrap(),
            age_band: AgeBand::From18To29,
            risk: RiskLevel::Low,
            symptoms: SymptomSet::default(),
            contributor: ContributorKey(u128::from(n).to_le_bytes()),
        }
    }

    /// What the reader must make of the record produced `n`-th to a
    /// partition: every 97th is junk of its own kind, the rest sealed
    /// records numbered `n`.
    fn expected(n: u64) -> Result<u64, DropReason> {
        match n % 97 {
            10 => Err(DropReason::Empty),
            20 => Err(DropReason::Malformed),
            30 => Err(DropReason::Unsealed),
            _ => Ok(n),
        }
    }

    #[tokio::test]
    async fn batches_come_in_the_order_read_with_every_record_judged() -> anyhow::Result<()> {
        // Several full batches per partition, so that four openers each
        // open some and finish in an order of their own.
        const PER_PARTITION: u64 = 3 * MAX_BATCH as u64 + 123;
        let topic = unique("test.input_reader");
        create_topics(&[(&topic, 2)]).await?;
        let producer = hushmap_testkit::producer()?;
        let sealer = payload_keyring()
            .public_key()
            .sealer(SEALING_EPOCH, SEALING_EPOCH_RECORDS);
        for n in 0..PER_PARTITION {
            let payload = match n % 97 {
                10 => Vec::new(),
                20 => {
                    let sealed = sealer.seal(&record(n));
                    sealed[..sealed.len() - 1].to_vec()
                }
                30 => record(n).encode().to_vec(),
                _ => sealer.seal(&record(n)),
            };
            for partition in 0..2 {
                producer
                    .send_result(
                        FutureRecord::<(), _>::to(&topic)
                            .partition(partition)
                            .payload(&payload),
                    )
                    .map_err(|(e, _)| e)?;
            }
        }
        producer.flush(Duration::from_secs(30))?;

        let consumer: BaseConsumer<QuietEofContext> = committed_reader(
            ClientConfig::new().set("bootstrap.servers", brokers()),
            &unique("test.input_reader"),
        )
        .create_with_context(QuietEofContext)?;
        let mut tpl = TopicPartitionList::new();
        for partition in 0..2 {
            tpl.add_partition_offset(&topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let mut reader = InputReader::start_with(Arc::new(consumer), payload_keyring(), DAY, 4)?;

        let mut next_offset = [0i64; 2];
        let mut batches = 0;
        while next_offset.iter().any(|&o| o < PER_PARTITION as i64) {
            let batch = tokio::time::timeout(Duration::from_secs(60), reader.next())
                .await?
                .expect("the reader stopped early");
            batches += 1;
            for arrival in batch {
                let p = arrival.partition as usize;
                assert_eq!(arrival.offset, next_offset[p], "partition {p} out of order");
                next_offset[p] += 1;
                let n = arrival.offset as u64;
                let got = arrival
                    .opened
                    .map(|(r, _)| u64::from_le_bytes(r.contributor.0[..8].try_into().unwrap()));
                assert_eq!(got, expected(n), "record {n} of partition {p}");
            }
        }
        assert!(
            batches >= 6,
            "only {batches} batches: the openers were not all used"
        );
        // Stopping returns (the threads end) with nothing left to read.
        tokio::time::timeout(Duration::from_secs(10), reader.stop()).await?;
        Ok(())
    }
}
