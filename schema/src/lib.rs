//! The one definition of every type that crosses a Hushmap boundary.
//!
//! * [`submission`]: the public JSON contract of `POST /v1/submissions`.
//! * [`domain`]: the coarse vocabulary everything downstream of ingest speaks
//!   ([`AgeBand`], [`RiskLevel`], [`Symptom`], ...).
//! * [`region`]: [`RegionCell`], an H3 cell no finer than the privacy floor.
//! * [`window`]: [`Window`] and [`WindowLength`], the coarse time unit.
//! * [`record`]: [`CoarseRecord`], the only thing ingest writes to Kafka, and
//!   its versioned binary encoding.
//! * [`sealed`]: the envelopes records travel in on Kafka: HPKE to the
//!   aggregator's [`PayloadPublicKey`] on the submissions topic, the
//!   aggregator's own key on the bounded topic.
//! * [`release`]: the Arrow release schema shared by the releases topic, the
//!   dashboard API, exports and batch output.
//! * [`interval`]: post-processing of noisy counts into shares with a 95%
//!   confidence interval.
//! * [`bounded`]: [`BoundedMessage`], what the two stages of partitioned
//!   aggregation pass each other on the bounded topic.
//! * [`topics`]: Kafka topic names.

pub mod bounded;
pub mod domain;
pub mod interval;
pub mod record;
pub mod region;
pub mod release;
pub mod sealed;
pub mod submission;
pub mod topics;
pub mod window;

pub use bounded::{BoundedMessage, BoundedOpenError, Watermark};
pub use domain::{AgeBand, Condition, Gender, RiskLevel, Subject, Symptom, SymptomSet};
pub use interval::ShareInterval;
pub use record::{CoarseRecord, ContributorKey, RecordError};
pub use region::{MAX_RESOLUTION, RegionCell, RegionError};
pub use release::{
    IntervalCounts, ProvisionalMeta, Release, ReleaseError, ReleaseMeta, ReleaseRow, StatisticCost,
};
pub use sealed::{
    BoundedKeyring, OpenError, PayloadKeyring, PayloadPublicKey, Purpose, SubmissionSealer,
};
pub use window::{Window, WindowLength};
