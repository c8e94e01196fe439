//! [`ReleaseCost`]: what one release costs each contributor.

use crate::conversion::{ConversionError, zcdp_epsilon};
use hushmap_schema::{ReleaseMeta, StatisticCost};
use serde::{Deserialize, Serialize};

/// What one release costs each contributor, in total and statistic by
/// statistic.
///
/// A zCDP release (`rho` set) states its ε at a conversion δ; its `delta`
/// is that conversion δ plus its statistics' own δ (the threshold
/// mechanisms'). A pure release's ε is the sum of its statistics' ε and its
/// `delta` is its statistics' own δ (0 with a public region set).
///
/// The statistics are kept so that composing releases never has to infer
/// a release's own δ from today's configuration.
///
/// # Example
///
/// ```
/// use hushmap_privacy::ReleaseCost;
/// use hushmap_schema::StatisticCost;
///
/// let statistic = |name: &str, cost: f64, delta: f64| StatisticCost {
///     statistic: name.into(),
///     level: 5,
///     cost,
///     delta,
/// };
/// // zCDP: ρ adds up over the statistics, and ε is stated at the
/// // conversion δ, which the release's δ includes beside the threshold's.
/// let cost = ReleaseCost::concentrated(
///     vec![statistic("risk_counts", 0.1, 0.0), statistic("threshold", 0.02, 1e-9)],
///     1e-7,
/// )
/// .unwrap();
/// assert!((cost.rho.unwrap() - 0.12).abs() < 1e-12);
/// assert!((cost.delta - (1e-7 + 1e-9)).abs() < 1e-18);
/// // OpenDP's conversion is no looser than ρ + 2√(ρ ln(1/δ)).
/// let classic = 0.12 + 2.0 * (0.12 * (1e7f64).ln()).sqrt();
/// assert!(cost.epsilon > 0.12 && cost.epsilon <= classic, "{}", cost.epsilon);
/// // A window published without its data costs nothing.
/// assert!(ReleaseCost::free(true).is_free());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseCost {
    /// ρ of the whole release under zCDP; `None` for a pure ε-DP release.
    pub rho: Option<f64>,
    /// ε of this release alone (for zCDP at its conversion δ).
    pub epsilon: f64,
    /// δ of this release alone.
    pub delta: f64,
    /// Each statistic's cost (ρ or ε) and own δ; they compose to the totals.
    #[serde(default)]
    pub statistics: Vec<StatisticCost>,
}

impl ReleaseCost {
    /// A zCDP release of the statistics' summed ρ, stated at
    /// `conversion_delta` (ε from OpenDP's conversion).
    pub fn concentrated(
        statistics: Vec<StatisticCost>,
        conversion_delta: f64,
    ) -> Result<ReleaseCost, ConversionError> {
        let rho: f64 = statistics.iter().map(|s| s.cost).sum();
        let own: f64 = statistics.iter().map(|s| s.delta).sum();
        Ok(ReleaseCost {
            rho: Some(rho),
            epsilon: zcdp_epsilon(rho, conversion_delta)?,
            delta: conversion_delta + own,
            statistics,
        })
    }

    /// A pure ε-DP release: ε and δ are its statistics' sums.
    pub fn pure(epsilon: f64, delta: f64, statistics: Vec<StatisticCost>) -> ReleaseCost {
        ReleaseCost {
            rho: None,
            epsilon,
            delta,
            statistics,
        }
    }

    /// A release that reads no data (a window published empty because its
    /// records were no longer available): it costs nothing.
    pub fn free(concentrated: bool) -> ReleaseCost {
        ReleaseCost {
            rho: concentrated.then_some(0.0),
            epsilon: 0.0,
            delta: 0.0,
            statistics: Vec::new(),
        }
    }

    /// The cost a published release states in its metadata.
    pub fn from_meta(meta: &ReleaseMeta) -> ReleaseCost {
        ReleaseCost {
            rho: meta.rho,
            epsilon: meta.epsilon,
            delta: meta.delta,
            statistics: meta.statistic_costs.clone(),
        }
    }

    pub fn is_free(&self) -> bool {
        self.rho.unwrap_or(0.0) == 0.0 && self.epsilon == 0.0 && self.delta == 0.0
    }

    /// The release's own δ: its statistics' (the thresholds'), which adds
    /// up release by release. A release that lists no statistics (made
    /// before they were recorded) counts its whole δ as its own: an
    /// overcount, never an undercount.
    pub fn own_delta(&self) -> f64 {
        let listed: f64 = self.statistics.iter().map(|s| s.delta).sum();
        match self.rho {
            Some(_) if !self.statistics.is_empty() => listed,
            _ => listed.max(self.delta),
        }
    }

    /// The δ a zCDP release's ε is stated at (0 for a pure release).
    pub fn conversion_delta(&self) -> f64 {
        match self.rho {
            Some(_) => (self.delta - self.own_delta()).max(0.0),
            None => 0.0,
        }
    }

    /// Whether `other` is the same cost (as the same plan would give;
    /// exact up to rounding in a decimal round trip).
    pub fn same_as(&self, other: &ReleaseCost) -> bool {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs());
        self.rho.is_some() == other.rho.is_some()
            && close(self.rho.unwrap_or(0.0), other.rho.unwrap_or(0.0))
            && close(self.epsilon, other.epsilon)
            && close(self.delta, other.delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(cost: f64, delta: f64) -> StatisticCost {
        StatisticCost {
            statistic: "selection".into(),
            level: 5,
            cost,
            delta,
        }
    }

    #[test]
    fn own_and_conversion_delta_come_from_the_statistics() {
        let c = ReleaseCost::concentrated(vec![stat(0.01, 1e-9), stat(0.005, 0.0)], 1e-6).unwrap();
        assert!((c.rho.unwrap() - 0.015).abs() < 1e-15);
        assert!((c.own_delta() - 1e-9).abs() < 1e-24);
        assert!((c.conversion_delta() - 1e-6).abs() < 1e-18);
        let p = ReleaseCost::pure(1.0, 2e-8, vec![stat(0.1, 2e-8), stat(0.9, 0.0)]);
        assert_eq!((p.own_delta(), p.conversion_delta()), (2e-8, 0.0));
    }

    #[test]
    fn a_release_without_statistics_counts_its_whole_delta_as_its_own() {
        let legacy = ReleaseCost {
            rho: Some(0.02),
            epsilon: 1.0,
            delta: 2e-8,
            statistics: Vec::new(),
        };
        assert_eq!(legacy.own_delta(), 2e-8);
        assert_eq!(legacy.conversion_delta(), 0.0);
    }

    #[test]
    fn a_free_release_costs_nothing() {
        for concentrated in [true, false] {
            let f = ReleaseCost::free(concentrated);
            assert!(f.is_free());
            assert_eq!((f.own_delta(), f.conversion_delta()), (0.0, 0.0));
        }
        assert!(!ReleaseCost::pure(0.1, 0.0, vec![]).is_free());
    }
}
