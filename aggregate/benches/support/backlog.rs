//! Filling a topic with a benchmark's backlog: a producer tuned for bulk
//! (big batches, a deep queue) that waits for acknowledgements every
//! 10,000 records, and the regions the records are spread over.
//!
//! Its own file (included with `#[path]`) so that benchmarks which produce
//! nothing do not compile it.

use hushmap_schema::RegionCell;
use hushmap_testkit::brokers;
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
