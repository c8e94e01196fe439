//! Filling a topic with a benchmark's backlog: a producer tuned for bulk
//! (big batches, a deep queue) that waits for acknowledgements every
//! 10,000 records, the regions the records are spread over, and the
//! sealer that seals them as ingest does.
//!
//! Its own file (included with `#[path]`) so that benchmarks which produce
//! nothing do not compile it.

use hushmap_schema::RegionCell;
use hushmap_schema::sealed::{SEALING_EPOCH, SEALING_EPOCH_RECORDS, SubmissionSealer};
use hushmap_testkit::{brokers, payload_keyring};
use rdkafka::ClientConfig;
use rdkafka::message::ToBytes;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

/// How many records may wait for their acknowledgement.
const IN_FLIGHT: usize = 10_000;

pub struct Backlog {
    producer: FutureProducer,
    pending: Vec<DeliveryFuture>,
}

impl Backlog {
    pub fn new() -> anyhow::Result<Backlog> {
        Ok(Backlog {
            producer: ClientConfig::new()
                .set("bootstrap.servers", brokers())
                .set("linger.ms", "20")
                .set("batch.num.messages", "10000")
                .set("queue.buffering.max.messages", "1000000")
                .create()?,
            pending: Vec::with_capacity(IN_FLIGHT),
        })
    }

    pub async fn send<K: ToBytes + ?Sized, P: ToBytes + ?Sized>(
        &mut self,
        record: FutureRecord<'_, K, P>,
    ) -> anyhow::Result<()> {
        let delivery = self.producer.send_result(record).map_err(|(e, _)| e)?;
        self.pending.push(delivery);
        if self.pending.len() == IN_FLIGHT {
            self.acknowledged().await?;
        }
        Ok(())
    }

    /// Waits until everything sent so far is acknowledged.
    pub async fn acknowledged(&mut self) -> anyhow::Result<()> {
        for delivery in self.pending.drain(..) {
            let _ = delivery.await?;
        }
        Ok(())
    }
}

/// 200 resolution-5 cells along a meridian.
pub fn regions() -> anyhow::Result<Vec<RegionCell>> {
    let res = hushmap_schema::region::RegionResolution::new(5)?;
    Ok((0..200)
        .map(|i| RegionCell::from_coordinate(40.0 + f64::from(i) * 0.05, 10.0, res))
        .collect::<Result<_, _>>()?)
}

/// Seals records for the test keyring as ingest seals them: one HPKE
/// encapsulation an epoch, not one a record (the aggregator's opening cost
/// is then what it is in production).
// Not every bench that includes this file seals records (release_log
// produces releases).
#[allow(dead_code)]
pub fn ingest_sealer() -> SubmissionSealer {
    payload_keyring()
        .public_key()
        .sealer(SEALING_EPOCH, SEALING_EPOCH_RECORDS)
}
