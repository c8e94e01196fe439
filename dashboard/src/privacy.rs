//! What a contributor may have lost across the stored releases, composed
//! the way the aggregator's ledger composes (one accounting crate,
//! [`hushmap_privacy`]): zCDP releases add ρ, converted once to (ε, δ) at
//! the largest conversion δ the releases state; pure-ε releases add ε;
//! each release's own δ (its thresholds', from its statistic costs) adds.

use hushmap_privacy::ReleaseCost;
use hushmap_schema::ReleaseMeta;

pub use hushmap_privacy::Composition;

/// Composes the releases described by `metas`.
///
/// ```
/// use hushmap_dashboard::privacy::compose;
/// let none = compose(std::iter::empty());
/// assert_eq!((none.epsilon, none.delta), (0.0, 0.0));
/// ```
pub fn compose<'a>(metas: impl IntoIterator<Item = &'a ReleaseMeta>) -> Composition {
    let costs: Vec<ReleaseCost> = metas.into_iter().map(ReleaseCost::from_meta).collect();
    Composition::as_stated(&costs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hushmap_privacy::zcdp_epsilon;
    use hushmap_schema::StatisticCost;

    fn zcdp(rho: f64, conversion_delta: f64, threshold_delta: f64) -> ReleaseMeta {
        ReleaseMeta {
            window_start: 0,
            window_end: 1,
            mechanism: "discrete_gaussian".into(),
            rho: Some(rho),
            epsilon: zcdp_epsilon(rho, conversion_delta).unwrap(),
            delta: conversion_delta + threshold_delta,
            ledger_entry: "e".into(),
            symptom_noise_scale: 1.0,
            max_ci_half_width: 0.2,
            statistic_costs: vec![StatisticCost {
                statistic: "selection".into(),
                level: 5,
                cost: rho,
                delta: threshold_delta,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_panel_composes_as_the_ledger_does() {
        let metas: Vec<_> = (0..30).map(|_| zcdp(0.02, 1e-8, 1e-9)).collect();
        let c = compose(&metas);
        let plain: f64 = metas.iter().map(|m| m.epsilon).sum();
        assert!((c.rho - 0.6).abs() < 1e-12);
        assert!((c.epsilon - zcdp_epsilon(0.6, 1e-8).unwrap()).abs() < 1e-12);
        assert!(c.epsilon < plain / 2.0, "{} vs {plain}", c.epsilon);
        // Conversion δ once, each threshold δ every time.
        assert!((c.delta - (1e-8 + 30.0 * 1e-9)).abs() < 1e-18);
        // The ledger, at the same conversion δ, says the same.
        let costs: Vec<_> = metas.iter().map(ReleaseCost::from_meta).collect();
        let ledger = Composition::at_delta(&costs, 1e-8);
        assert_eq!((ledger.epsilon, ledger.delta), (c.epsilon, c.delta));
    }
}
