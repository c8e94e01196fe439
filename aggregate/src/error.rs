//! What can stop an aggregator (either topology) or its release log.

use crate::engine::EngineError;
use rdkafka::error::KafkaError;

/// Why the aggregator stopped. Each variant keeps its cause (as `source`,
/// and in its message, which is what the logs show).
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("releasing a window: {0}")]
    ReleaseStep(#[from] hushmap_privacy::release::ReleaseStepError),
    #[error("provisional numbers: {0}")]
    Provisional(#[from] hushmap_privacy::release::continual::ProvisionalError),
    #[error("encoding release: {0}")]
    Release(#[from] hushmap_schema::ReleaseError),
    /// State could not be rebuilt from Kafka; the text says what was
    /// missing or unreadable (a state that no library call failed on, so
    /// with no error of its own).
    #[error("recovering state from Kafka: {0}")]
    Recovery(String),
    /// The input topic lets its producers stamp their records' times: see
    /// [`crate::resume::require_broker_timestamps`].
    #[error(
        "topic {topic} has message.timestamp.type={found}: set it to LogAppendTime \
         (windows judge lateness by when the broker appended a record, never by a time \
         its producer chose; deploy/kafka and deploy/k8s set it)"
    )]
    ProducerTimestamps { topic: String, found: String },
    /// Without the committed offsets the aggregator cannot know where its
    /// windows start.
    #[error("recovering state from Kafka: cannot fetch committed offsets: {0}")]
    CommittedOffsets(#[source] KafkaError),
    #[error("{0}")]
    ReadToEnd(#[from] hushmap_service::consumer::ReadToEndError),
    #[error("starting the input reader thread: {0}")]
    InputReader(#[source] std::io::Error),
    /// The reader thread ended while the aggregator still ran (it only
    /// ends when asked to, so this means it panicked).
    #[error("the input reader thread stopped unexpectedly")]
    InputReaderStopped,
    #[error("metrics endpoint: {0}")]
    Metrics(#[source] std::io::Error),
    #[error("binding the metrics listener {addr}: {source}")]
    MetricsBind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}
