//! Hushmap aggregate: from coarse records to noisy, accounted releases.
//!
//! The pipeline for one closed window:
//!
//! 0. [`intake`]: sealed topic records are opened; anything else is
//!    dropped and counted;
//! 1. [`records`]: buffered [`CoarseRecord`](hushmap_schema::CoarseRecord)s
//!    become an Arrow `RecordBatch`;
//! 2. [`engine`]: a DataFusion plan bounds each contributor's records
//!    ([`ContributionBounds`](hushmap_privacy::sensitivity::ContributionBounds)) and counts per region × age band;
//! 3. [`release_window`](hushmap_privacy::release::release_window): the
//!    [`PrivacyLedger`](hushmap_privacy::PrivacyLedger) authorises the
//!    spend (or refuses), then OpenDP's exact samplers add noise calibrated
//!    to the bounded sensitivity and the counts are post-processed into the
//!    release schema (the same step in every topology and in batch mode);
//! 4. [`stream`]: the release goes to Kafka and offsets are committed.
//!
//! True counts exist only in memory, inside steps 2–3. Which windows go
//! through these steps is decided by the clock alone ([`schedule`]).
//!
//! [`partitioned`] runs the same steps on any number of instances: bounding
//! per submissions partition, counting and noising per shard of cells.

pub mod batch;
pub mod config;
pub mod engine;
pub mod error;
pub mod first_record;
pub(crate) mod input_reader;
pub mod intake;
pub mod metrics;
mod noise_ahead;
pub mod partitioned;
pub mod records;
pub mod release_log;
pub mod resume;
pub mod schedule;
pub mod stream;
pub(crate) mod transactions;
pub mod window_book;

pub use config::{AggregateConfig, Topology};
pub use error::AggregatorError;
pub use metrics::AggregatorStats;
pub use partitioned::PartitionedAggregator;
pub use stream::Aggregator;
