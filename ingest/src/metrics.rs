//! `/metrics` in Prometheus text format.
//!
//! Counts and latencies only. Label values come from closed sets (error
//! codes, risk levels), so no submitted value can ever become a label.

use crate::problem::ErrorCode;
use hushmap_schema::RiskLevel;
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RiskLabel {
    risk: &'static str,
}

/// Ingest's metrics.
pub struct IngestMetrics {
    registry: Registry,
    accepted: Counter,
    rejected: Family<CodeLabel, Counter>,
    risk: Family<RiskLabel, Counter>,
    produce_latency: Histogram,
    in_flight: Gauge,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hushmap_ingest");
        let accepted = Counter::default();
        let rejected = Family::<CodeLabel, Counter>::default();
        let risk = Family::<RiskLabel, Counter>::default();
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
            "submissions_risk",
            "Accepted submissions by triage level",
            risk.clone(),
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
        IngestMetrics {
            registry,
            accepted,
            rejected,
            risk,
            produce_latency,
            in_flight,
        }
    }
}

impl IngestMetrics {
    pub fn accepted(&self, risk: RiskLevel) {
        self.accepted.inc();
        self.risk
            .get_or_create(&RiskLabel { risk: risk.label() })
            .inc();
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
        m.accepted(RiskLevel::High);
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
        assert!(
            text.contains("hushmap_ingest_submissions_risk_total{risk=\"high\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hushmap_ingest_produce_latency_seconds_count 1"),
            "{text}"
        );
    }
}
