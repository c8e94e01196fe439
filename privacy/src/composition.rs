//! What a contributor who took part in every one of several releases may
//! have lost: zCDP releases compose by adding ρ, converted to (ε, δ) once;
//! pure-ε releases add ε (basic composition); every release's own δ (its
//! thresholds') adds, and the conversion's δ counts once.

use crate::conversion::zcdp_epsilon_or_bound;
use crate::cost::ReleaseCost;
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

impl Composition {
    /// Composes `costs`, converting the zCDP part at `conversion_delta`
    /// (the ledger's configured δ).
    ///
    /// ```
    /// use hushmap_privacy::Composition;
    /// let none = Composition::at_delta(std::iter::empty(), 1e-8);
    /// assert_eq!((none.epsilon, none.delta), (0.0, 0.0));
    /// ```
    pub fn at_delta<'a>(
        costs: impl IntoIterator<Item = &'a ReleaseCost>,
        conversion_delta: f64,
    ) -> Composition {
        Self::compose(costs.into_iter().collect(), Some(conversion_delta))
    }

    /// Composes `costs`, converting the zCDP part at the largest conversion
    /// δ the releases themselves state (the dashboard, which does not know
    /// the ledger's configuration).
    pub fn as_stated<'a>(costs: impl IntoIterator<Item = &'a ReleaseCost>) -> Composition {
        Self::compose(costs.into_iter().collect(), None)
    }

    fn compose(costs: Vec<&ReleaseCost>, conversion_delta: Option<f64>) -> Composition {
        let (mut rho, mut pure, mut own_delta) = (0.0, 0.0, 0.0);
        let mut stated_delta = 0.0_f64;
        for c in &costs {
            match c.rho {
                Some(r) => {
                    rho += r;
                    stated_delta = stated_delta.max(c.conversion_delta());
                }
                None => pure += c.epsilon,
            }
            own_delta += c.own_delta();
        }
        let conversion_delta = conversion_delta.unwrap_or(stated_delta);
        let (concentrated, conversion_delta) = if rho > 0.0 && conversion_delta > 0.0 {
            (
                zcdp_epsilon_or_bound(rho, conversion_delta),
                conversion_delta,
            )
        } else if rho > 0.0 {
            // ρ > 0 with no δ to state it at: no finite (ε, δ = 0) exists.
            (f64::INFINITY, 0.0)
        } else {
            (0.0, 0.0)
        };
        Composition {
            releases: costs.len(),
            epsilon: pure + concentrated,
            delta: conversion_delta + own_delta,
            rho,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversion::zcdp_epsilon;
    use hushmap_schema::StatisticCost;

    fn zcdp(rho: f64, conversion_delta: f64, threshold_delta: f64) -> ReleaseCost {
        ReleaseCost::concentrated(
            vec![
                StatisticCost {
                    statistic: "selection".into(),
                    level: 5,
                    cost: rho / 10.0,
                    delta: threshold_delta,
                },
                StatisticCost {
                    statistic: "risk_counts".into(),
                    level: 5,
                    cost: rho * 0.9,
                    delta: 0.0,
                },
            ],
            conversion_delta,
        )
        .unwrap()
    }

    #[test]
    fn one_release_composes_to_its_own_cost() {
        let c = zcdp(0.02, 1e-8, 1e-9);
        for composed in [
            Composition::as_stated([&c]),
            Composition::at_delta([&c], 1e-8),
        ] {
            assert!((composed.epsilon - c.epsilon).abs() < 1e-12);
            assert!((composed.delta - c.delta).abs() < 1e-20);
        }
    }

    #[test]
    fn zcdp_releases_compose_in_rho_below_the_plain_sum() {
        let costs: Vec<_> = (0..30).map(|_| zcdp(0.02, 1e-8, 1e-9)).collect();
        let c = Composition::as_stated(&costs);
        let plain: f64 = costs.iter().map(|m| m.epsilon).sum();
        assert!((c.rho - 0.6).abs() < 1e-12);
        assert!((c.epsilon - zcdp_epsilon(0.6, 1e-8).unwrap()).abs() < 1e-12);
        assert!(c.epsilon < plain / 2.0, "{} vs {plain}", c.epsilon);
        // Conversion δ once, each threshold δ every time.
        assert!((c.delta - (1e-8 + 30.0 * 1e-9)).abs() < 1e-18);
    }

    #[test]
    fn pure_releases_add_and_mix_with_concentrated_ones() {
        let p = ReleaseCost::pure(0.5, 1e-9, Vec::new());
        let c = Composition::as_stated([&p, &p]);
        assert_eq!((c.epsilon, c.delta), (1.0, 2e-9));
        let z = zcdp(0.02, 1e-8, 0.0);
        let mixed = Composition::at_delta([&p, &z], 1e-8);
        assert!((mixed.epsilon - (0.5 + z.epsilon)).abs() < 1e-12);
        assert!((mixed.delta - (1e-9 + 1e-8)).abs() < 1e-20);
    }

    #[test]
    fn free_releases_change_nothing() {
        let z = zcdp(0.02, 1e-8, 1e-9);
        let free = ReleaseCost::free(true);
        let with = Composition::as_stated([&z, &free, &free]);
        let without = Composition::as_stated([&z]);
        assert_eq!((with.epsilon, with.delta), (without.epsilon, without.delta));
        assert_eq!(with.releases, 3);
    }
}
