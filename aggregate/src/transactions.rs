//! [`Transactions`]: a transactional producer and how to get it back into
//! a usable state after a failed transaction, for every stage that writes
//! its output and its input offsets in one Kafka transaction.

use crate::config::AggregateConfig;
use crate::error::AggregatorError;
use hushmap_service::runtime::blocking;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::util::Timeout;
use std::time::Duration;

/// A transactional producer under one transactional id, and how to get it
/// back into a usable state after a failed transaction.
pub(crate) struct Transactions {
    pub producer: FutureProducer,
    config: AggregateConfig,
    id: String,
    timeout: Duration,
}

impl Transactions {
    /// A producer under `id`, initialised (which aborts whatever an
    /// earlier holder of the id left open).
    pub(crate) fn new(
        config: &AggregateConfig,
        id: String,
    ) -> Result<Transactions, AggregatorError> {
        let timeout = Duration::from_millis(config.kafka.transaction_timeout_ms);
        let producer = Self::producer(config, &id, timeout)?;
        Ok(Transactions {
            producer,
            config: config.clone(),
            id,
            timeout,
        })
    }

    fn producer(
        config: &AggregateConfig,
        id: &str,
        timeout: Duration,
    ) -> Result<FutureProducer, AggregatorError> {
        let producer: FutureProducer = config
            .kafka
            .security
            .client_config(&config.kafka.brokers)?
            .set("transactional.id", id)
            .set(
                "transaction.timeout.ms",
                config.kafka.transaction_timeout_ms.to_string(),
            )
            .create()?;
        // Waits for the coordinator (and fences a predecessor): off the
        // async worker, like every transaction call here.
        blocking(|| producer.init_transactions(Timeout::After(timeout)))?;
        Ok(producer)
    }

    pub(crate) fn timeout(&self) -> Timeout {
        Timeout::After(self.timeout)
    }

    /// Commits the open transaction. A commit that timed out may still
    /// complete, so it is resumed (librdkafka's "retriable"), never
    /// abandoned for an abort.
    pub(crate) fn commit(&self) -> Result<(), KafkaError> {
        blocking(|| {
            let mut resumed = 0;
            loop {
                match self.producer.commit_transaction(self.timeout()) {
                    Err(KafkaError::Transaction(e)) if e.is_retriable() && resumed < 10 => {
                        resumed += 1;
                        tracing::info!(error = %e, "commit not finished yet; resuming it");
                    }
                    other => return other,
                }
            }
        })
    }

    /// After a failed transaction: aborts it. When the producer cannot
    /// (its transaction state is broken, as after its coordinator died
    /// mid-commit), a fresh producer under the same id replaces it; its
    /// initialisation bumps the epoch and aborts whatever was left open.
    /// Nothing of the failed transaction was visible, and its inputs are
    /// still held, so the next attempt starts clean.
    pub(crate) fn recover(&mut self) {
        let Err(e) = blocking(|| self.producer.abort_transaction(self.timeout())) else {
            return;
        };
        tracing::warn!(error = %e, "abort failed; replacing the transactional producer");
        match Self::producer(&self.config, &self.id, self.timeout) {
            Ok(fresh) => self.producer = fresh,
            Err(e) => {
                tracing::warn!(error = %e, "new transactional producer not ready; will retry")
            }
        }
    }
}
