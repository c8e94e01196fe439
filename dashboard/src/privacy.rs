//! What a contributor may have lost across releases, as the ledger counts
//! it: zCDP releases compose by adding ρ, converted once to (ε, δ) with
//! OpenDP's conversion at the releases' conversion δ; pure-ε releases add
//! ε; each release's own δ (its thresholds') adds.
//!
//! A release states its total δ (conversion + thresholds) and, in its
//! statistic costs, the thresholds' δ; the conversion δ is the difference.

use hushmap_schema::ReleaseMeta;
use serde::Serialize;

/// The composed cost of a set of releases.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Composition {
    /// Releases composed.
    pub releases: usize,
    pub epsilon: f64,
    pub delta: f64,
    /// Sum of ρ over the zCDP releases.
    pub rho: f64,
}

/// Composes `metas` the way the aggregator's ledger does.
///
/// ```
/// use hushmap_dashboard::privacy::compose;
/// let none = compose(std::iter::empty());
/// assert_eq!((none.epsilon, none.delta), (0.0, 0.0));
/// ```
pub fn compose<'a>(metas: impl IntoIterator<Item = &'a ReleaseMeta>) -> Composition {
    let (mut rho, mut pure, mut own_delta, mut conversion_delta, mut n) =
        (0.0, 0.0, 0.0, 0.0_f64, 0);
    for m in metas {
        n += 1;
        let thresholds: f64 = m.statistic_costs.iter().map(|c| c.delta).sum();
        match m.rho {
            Some(r) => {
                rho += r;
                own_delta += thresholds;
                conversion_delta = conversion_delta.max((m.delta - thresholds).max(0.0));
            }
            None => {
                pure += m.epsilon;
                own_delta += m.delta;
            }
        }
    }
    let concentrated = if rho > 0.0 && conversion_delta > 0.0 {
        zcdp_epsilon(rho, conversion_delta)
    } else {
        0.0
    };
    Composition {
        releases: n,
        epsilon: pure + concentrated,
        delta: conversion_delta + own_delta,
        rho,
    }
}

/// ε at `delta` of ρ-zCDP: OpenDP's conversion, or where that overflows
/// (absurd ρ, as huge-ε test runs use) the textbook bound
/// ρ + 2√(ρ·ln(1/δ)) (Bun and Steinke 2016), valid but looser.
fn zcdp_epsilon(rho: f64, delta: f64) -> f64 {
    use opendp::combinators::ConcentratedMeasure;
    use opendp::measures::ZeroConcentratedDivergence;
    ZeroConcentratedDivergence::convert(rho)
        .and_then(|c| c.epsilon(delta))
        .ok()
        .filter(|e| e.is_finite())
        .unwrap_or_else(|| rho + 2.0 * (rho * (1.0 / delta).ln()).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hushmap_schema::StatisticCost;

    fn zcdp(rho: f64, conversion_delta: f64, threshold_delta: f64) -> ReleaseMeta {
        ReleaseMeta {
            window_start: 0,
            window_end: 1,
            mechanism: "discrete_gaussian".into(),
            rho: Some(rho),
            epsilon: zcdp_epsilon(rho, conversion_delta),
            delta: conversion_delta + threshold_delta,
            ledger_entry: "e".into(),
            symptom_noise_scale: 1.0,
            max_ci_half_width: 0.2,
            statistic_costs: vec![StatisticCost {
                statistic: "selection".into(),
                level: 5,
                cost: rho / 10.0,
                delta: threshold_delta,
            }],
            part: Default::default(),
        }
    }

    #[test]
    fn one_release_composes_to_its_own_cost() {
        let m = zcdp(0.02, 1e-8, 1e-9);
        let c = compose([&m]);
        assert!((c.epsilon - m.epsilon).abs() < 1e-12);
        assert!((c.delta - m.delta).abs() < 1e-20);
    }

    #[test]
    fn zcdp_releases_compose_in_rho_below_the_plain_sum() {
        let metas: Vec<_> = (0..30).map(|_| zcdp(0.02, 1e-8, 1e-9)).collect();
        let c = compose(&metas);
        let plain: f64 = metas.iter().map(|m| m.epsilon).sum();
        assert!((c.rho - 0.6).abs() < 1e-12);
        assert!((c.epsilon - zcdp_epsilon(0.6, 1e-8)).abs() < 1e-12);
        assert!(c.epsilon < plain / 2.0, "{} vs {plain}", c.epsilon);
        // Conversion δ once, each threshold δ every time.
        assert!((c.delta - (1e-8 + 30.0 * 1e-9)).abs() < 1e-18);
    }

    #[test]
    fn pure_releases_add() {
        let mut m = zcdp(0.0, 0.0, 0.0);
        m.rho = None;
        m.epsilon = 0.5;
        m.delta = 0.0;
        m.statistic_costs.clear();
        let c = compose([&m, &m]);
        assert_eq!((c.epsilon, c.delta), (1.0, 0.0));
    }
}
