//! `/metrics` of the aggregator, in Prometheus text format.
//!
//! Counts only: records accepted, dropped before counting (by
//! [`DropReason`](crate::intake::DropReason); `records_invalid` is their
//! sum) and late (their window was already released or past its
//! lateness), windows released, refused by the ledger and published
//! without data, releases found already published, and what is buffered. Nothing here can carry a
//! record's content.

use crate::error::AggregatorError;
use crate::intake::{DropCounts, DropReason};
use hushmap_service::metrics::{OPENMETRICS_CONTENT_TYPE, serve_metrics};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters for operators and tests. Counts only, never content.
#[derive(Debug, Default)]
pub struct AggregatorStats {
    pub records_accepted: AtomicU64,
    /// Dropped before counting, by reason; `records_invalid` is their sum.
    pub records_dropped: DropCounts,
    pub records_late: AtomicU64,
    pub windows_released: AtomicU64,
    pub windows_refused: AtomicU64,
    /// Windows published without data (the aggregator was down past the
    /// topic's retention); also counted in `windows_released`.
    pub windows_missed: AtomicU64,
    /// Releases (or parts) found committed on the releases topic after a
    /// transaction whose outcome was unknown: kept as they are, never
    /// noised again.
    pub releases_found_published: AtomicU64,
    /// Provisional releases published (one per sub-window of each open
    /// window: the clock decides, so the count says nothing of the data).
    pub provisional_released: AtomicU64,
    /// Windows the ledger refused to begin a provisional series for.
    pub provisional_refused: AtomicU64,
    /// Windows buffering records, and noised releases not yet acknowledged.
    pub open_windows: AtomicU64,
    pub pending_releases: AtomicU64,
}

/// Reads [`AggregatorStats`] on every scrape.
#[derive(Debug)]
struct StatsCollector(Arc<AggregatorStats>);

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let invalid = ConstCounter::new(s.records_dropped.total());
        invalid.encode(encoder.encode_descriptor(
            "records_invalid",
            "Records dropped before counting, all reasons",
            None,
            invalid.metric_type(),
        )?)?;
        let mut dropped = encoder.encode_descriptor(
            "records_dropped",
            "Records dropped before counting: empty, malformed, unsealed, unknown_key, \
             tampered, invalid_record, window_length, replayed",
            None,
            MetricType::Counter,
        )?;
        for reason in DropReason::ALL {
            let metric = ConstCounter::new(s.records_dropped.get(reason));
            metric.encode(dropped.encode_family(&[("reason", reason.label())])?)?;
        }
        let counters = [
            (
                "records_accepted",
                "Records buffered into an open window",
                &s.records_accepted,
            ),
            (
                "records_late",
                "Records dropped because their window was released or past its allowed lateness",
                &s.records_late,
            ),
            (
                "windows_released",
                "Windows published (transaction committed)",
                &s.windows_released,
            ),
            (
                "windows_refused",
                "Windows the privacy ledger refused to release (budget)",
                &s.windows_refused,
            ),
            (
                "windows_missed",
                "Windows published without data (the aggregator was down past the topic's retention)",
                &s.windows_missed,
            ),
            (
                "releases_found_published",
                "Releases or parts found already committed on the releases topic after a \
                 transaction whose outcome was unknown, and not noised again",
                &s.releases_found_published,
            ),
            (
                "provisional_released",
                "Provisional releases published (one per sub-window, by the clock)",
                &s.provisional_released,
            ),
            (
                "provisional_refused",
                "Windows whose provisional series the privacy ledger refused (budget)",
                &s.provisional_refused,
            ),
        ];
        for (name, help, value) in counters {
            let metric = ConstCounter::new(value.load(Ordering::Relaxed));
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        let gauges = [
            ("open_windows", "Windows buffering records", &s.open_windows),
            (
                "pending_releases",
                "Noised releases waiting for their transaction",
                &s.pending_releases,
            ),
        ];
        for (name, help, value) in gauges {
            let metric = ConstGauge::new(value.load(Ordering::Relaxed) as i64);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        Ok(())
    }
}

/// The Prometheus text of `stats`.
pub fn render(stats: Arc<AggregatorStats>) -> String {
    let mut registry = Registry::with_prefix("hushmap_aggregate");
    registry.register_collector(Box::new(StatsCollector(stats)));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// Binds the metrics listener at start-up, so a taken port fails the start
/// rather than the first scrape.
pub(crate) fn bind(addr: std::net::SocketAddr) -> Result<std::net::TcpListener, AggregatorError> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| AggregatorError::MetricsBind { addr, source })
}

/// Serves `/metrics` (from `stats`) and `/healthz` on `listener` (bound at
/// start-up) until aborted.
pub(crate) fn serve(
    listener: &std::net::TcpListener,
    stats: Arc<AggregatorStats>,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, AggregatorError> {
    let addr = listener.local_addr().map_err(AggregatorError::Metrics)?;
    let listener = listener
        .try_clone()
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(AggregatorError::Metrics)?;
    tracing::info!(%addr, "serving /metrics");
    Ok(tokio::spawn(serve_metrics(
        listener,
        OPENMETRICS_CONTENT_TYPE,
        Arc::new(move || render(stats.clone())),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter() {
        let stats = Arc::new(AggregatorStats::default());
        stats.records_late.fetch_add(3, Ordering::Relaxed);
        stats.windows_refused.fetch_add(1, Ordering::Relaxed);
        stats.records_dropped.add(DropReason::Tampered);
        stats.records_dropped.add(DropReason::Tampered);
        stats.records_dropped.add(DropReason::Empty);
        let text = render(stats);
        assert!(
            text.contains("hushmap_aggregate_records_dropped_total{reason=\"tampered\"} 2"),
            "{text}"
        );
        assert!(text.contains("hushmap_aggregate_records_dropped_total{reason=\"unknown_key\"} 0"));
        assert!(text.contains("hushmap_aggregate_records_invalid_total 3"));
        assert!(
            text.contains("hushmap_aggregate_records_late_total 3"),
            "{text}"
        );
        assert!(text.contains("hushmap_aggregate_windows_refused_total 1"));
        assert!(text.contains("hushmap_aggregate_open_windows 0"));
    }
}
