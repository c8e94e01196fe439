//! The Kafka side of ingest: an idempotent producer that acknowledges a
//! submission only after every in-sync replica has it. Records leave sealed
//! to the aggregator's public key ([`PayloadPublicKey`], HPKE) under a
//! keyed-hash partition key, so neither the broker nor ingest itself can read
//! them back.

use crate::config::KafkaSettings;
use hushmap_schema::sealed::{SEALING_EPOCH, SEALING_EPOCH_RECORDS, SubmissionSealer};
use hushmap_schema::{CoarseRecord, PayloadPublicKey};

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use std::time::Duration;

/// Why a record was not acknowledged. Carries no payload.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("kafka did not acknowledge the record: {0}")]
    Kafka(#[from] KafkaError),
}

/// Produces sealed coarse records.
pub struct SubmissionProducer {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
    sealer: SubmissionSealer,
}

impl SubmissionProducer {
    pub fn new(
        settings: &KafkaSettings,
        public_key: PayloadPublicKey,
    ) -> Result<SubmissionProducer, KafkaError> {
        let producer: FutureProducer = settings
            .security
            .client_config(&settings.brokers)?
            // Idempotence: retries never duplicate or reorder a record.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // A delivery report (success or failure) arrives within this time,
            // which bounds how long a client waits for its answer.
            .set(
                "message.timeout.ms",
                settings.produce_timeout_ms.to_string(),
            )
            .set("linger.ms", settings.linger_ms.to_string())
            // librdkafka scans a down broker's queued messages for timeouts
            // only when its reconnect backoff wakes it; with the default 10 s
            // cap a 3 s timeout fired after ~9 s (broker_outage test). A 1 s
            // cap keeps the answer within produce_timeout_ms + ~1 s.
            .set("reconnect.backoff.max.ms", "1000")
            .create()?;
        Ok(SubmissionProducer {
            producer,
            topic: settings.topic.clone(),
            timeout: Duration::from_millis(settings.produce_timeout_ms),
            sealer: public_key.sealer(SEALING_EPOCH, SEALING_EPOCH_RECORDS),
        })
    }

    /// Seals one record, sends it under `key` (see
    /// [`Coarsener::partition_key`](hushmap_submission::coarsen::Coarsener::partition_key))
    /// and waits for the broker's acknowledgement.
    pub async fn send(&self, key: &str, record: &CoarseRecord) -> Result<(), ProduceError> {
        let payload = self.sealer.seal(record);
        let rec = FutureRecord::to(&self.topic).key(key).payload(&payload[..]);
        // The error side carries the message (our payload); drop it, keep the error.
        self.producer
            .send(rec, Timeout::After(self.timeout))
            .await
            .map(|_| ())
            .map_err(|(e, _msg)| e.into())
    }

    /// Whether the broker answers a metadata request for our topic (blocking).
    pub fn broker_reachable(&self, timeout: Duration) -> bool {
        self.producer
            .client()
            .fetch_metadata(Some(&self.topic), Timeout::After(timeout))
            .is_ok()
    }

    /// Waits for in-flight records (graceful shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(Timeout::After(timeout))
    }
}
