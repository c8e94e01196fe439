//! Kafka topic names. Versioned: an incompatible record change gets a new topic.

/// Coarse records produced by ingest, consumed by aggregate.
pub const SUBMISSIONS: &str = "hushmap.submissions.v1";
/// Noisy releases produced by aggregate, consumed by the dashboard.
pub const RELEASES: &str = "hushmap.releases.v1";
/// The measurements behind each consistent release, unclamped
/// (`hushmap.estimates = measured`), when the aggregator publishes them:
/// one message per message on [`RELEASES`], in the same transaction.
pub const MEASUREMENTS: &str = "hushmap.releases.measured.v1";
/// Provisional counts within each open window (continual release), when
/// the aggregator publishes them: one message per sub-window, in its own
/// transaction, marked by `hushmap.provisional`; the final release on
/// [`RELEASES`] replaces them.
pub const PROVISIONAL: &str = "hushmap.releases.provisional.v1";
/// Bounded sealed records and watermarks between the two stages of a
/// partitioned aggregator (docs/SCALE.md).
pub const BOUNDED: &str = "hushmap.bounded.v1";
