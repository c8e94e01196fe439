//! `/metrics` in Prometheus text format, served on the admin listener only.
//!
//! Counts and latencies only. Label values come from a closed set (error
//! codes), so no submitted value can ever become a label. There is no
//! count by risk level: one person's triage result must not be readable
//! from a counter polled around their submission.

use hushmap_service::http::ConnectionStats;
use hushmap_submission::problem::ErrorCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

/// Ingest's metrics.
pub struct IngestMetrics {
    registry: Registry,
    accepted: Counter,
    rejected: Family<CodeLabel, Counter>,
    produce_latency: Histogram,
    in_flight: Gauge,
    connections: ConnectionStats,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hushmap_ingest");
        let accepted = Counter::default();
        let rejected = Family::<CodeLabel, Counter>::default();
        // 1 ms .. ~16 s
        let produce_latency = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let in_flight = Gauge::default();
        registry.register(
            "submissions_accepted",
            "Submissions acknowledged by Kafka",
            accepted.clone(),
        );
        registry.register(
            "submissions_rejected",
            "Submissions refused, by error code",
            rejected.clone(),
        );
        registry.register(
            "produce_latency_seconds",
            "Time from produce to the broker's acknowledgement (or failure)",
            produce_latency.clone(),
        );
        registry.register(
            "in_flight",
            "Submissions waiting for the broker",
            in_flight.clone(),
        );
        let connections = ConnectionStats::default();
        connections.register(&mut registry);
        IngestMetrics {
            connections,
            registry,
            accepted,
            rejected,
            produce_latency,
            in_flight,
        }
    }
}

impl IngestMetrics {
    pub fn accepted(&self) {
        self.accepted.inc();
    }

    pub fn rejected(&self, code: ErrorCode) {
        self.rejected
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }

    pub fn observe_produce(&self, seconds: f64) {
        self.produce_latency.observe(seconds);
    }

    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// The public listener's connection counts.
    pub fn connections(&self) -> &ConnectionStats {
        &self.connections
    }

    /// Counts certificate reloads of the public listener's TLS.
    pub fn register_tls(&mut self, tls: &hushmap_service::tls::ServerTls) {
        self.registry.register(
            "tls_reloads",
            "Certificate pairs taken after the files changed",
            tls.reloads.clone(),
        );
        self.registry.register(
            "tls_reload_failures",
            "Changed certificate files that did not load (the previous pair stayed in use)",
            tls.reload_failures.clone(),
        );
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_by_label() {
        let m = IngestMetrics::default();
        m.accepted();
        m.rejected(ErrorCode::InvalidValue);
        m.rejected(ErrorCode::InvalidValue);
        m.observe_produce(0.004);
        let text = m.render();
        assert!(
            text.contains("hushmap_ingest_submissions_accepted_total 1"),
            "{text}"
        );
        assert!(
            text.contains("hushmap_ingest_submissions_rejected_total{code=\"invalid_value\"} 2"),
            "{text}"
        );
        assert!(!text.contains("risk"), "{text}");
        assert!(
            text.contains("hushmap_ingest_produce_latency_seconds_count 1"),
            "{text}"
        );
    }
}
