//! The privacy ledger: every release is authorised here first.
//!
//! Each entry records a window and what its release costs every contributor:
//! ρ (zero-concentrated DP) for the Gaussian mechanism, or ε for pure-DP
//! Laplace. A contributor can appear in every window, so their loss over a
//! span is the composition of the entries in it: ρ adds up, and the sum is
//! converted to ε at the configured δ with OpenDP's conversion; pure ε adds
//! up and is added on top (basic composition). The ledger refuses a release
//! that would take any budgeted span (by default a rolling day and a rolling
//! 30 days) over its limit, and refuses a second release of a window (no
//! averaging of fresh noise).
use crate::noise::zcdp_epsilon;
use hushmap_schema::Window;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One limit: at most `max_epsilon` per contributor over any `horizon_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BudgetLimit {
    pub horizon_ms: i64,
    pub max_epsilon: f64,
}

/// Every limit the ledger enforces, and the δ at which ε is stated for
/// zCDP releases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub limits: Vec<BudgetLimit>,
    pub delta: f64,
    /// Most δ over any budgeted span: the conversion's `delta` once, plus
    /// every release's own δ (the threshold mechanisms') in the span.
    pub max_delta: f64,
}

/// What one release costs each contributor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrivacyCost {
    /// ρ under zCDP; `None` for a pure-DP release.
    pub rho: Option<f64>,
    /// ε of this release alone (at `delta` when `rho` is set).
    pub epsilon: f64,
    pub delta: f64,
}

/// One authorised release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub id: String,
    pub window: Window,
    pub cost: PrivacyCost,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LedgerError {
    #[error("window starting at {0} ms was already released")]
    AlreadyReleased(i64),
    #[error("release would bring ε over a {horizon_secs} s span to {would_be:.4} (limit {limit})")]
    OverBudget {
        horizon_secs: i64,
        would_be: f64,
        limit: f64,
    },
    #[error(
        "release would bring δ over a {horizon_secs} s span to {would_be:.3e} (limit {limit:.3e})"
    )]
    OverDelta {
        horizon_secs: i64,
        would_be: f64,
        limit: f64,
    },
}

/// In-memory ledger of authorised releases, keyed by window start.
#[derive(Debug, Clone)]
pub struct PrivacyLedger {
    budget: Budget,
    entries: BTreeMap<i64, LedgerEntry>,
}

impl PrivacyLedger {
    pub fn new(budget: Budget) -> PrivacyLedger {
        PrivacyLedger {
            budget,
            entries: BTreeMap::new(),
        }
    }

    /// (ε, δ) of the composition of `costs`: ε at the budget's δ for the
    /// zCDP part; δ is that conversion's once plus each release's own δ.
    fn compose<'a>(&self, costs: impl Iterator<Item = &'a PrivacyCost>) -> (f64, f64) {
        let (mut rho, mut pure, mut own_delta) = (0.0, 0.0, 0.0);
        for c in costs {
            match c.rho {
                Some(r) => {
                    rho += r;
                    // A zCDP release states its δ including the conversion's.
                    own_delta += (c.delta - self.budget.delta).max(0.0);
                }
                None => {
                    pure += c.epsilon;
                    own_delta += c.delta;
                }
            }
        }
        let concentrated = if rho > 0.0 {
            // OpenDP's conversion overflows for absurd ρ (test budgets); fall
            // back to the textbook bound ε ≤ ρ + 2√(ρ·ln(1/δ)) (Bun and
            // Steinke 2016, Prop. 1.3), which is valid but looser.
            zcdp_epsilon(rho, self.budget.delta)
                .unwrap_or_else(|_| rho + 2.0 * (rho * (1.0 / self.budget.delta).ln()).sqrt())
        } else {
            0.0
        };
        let conversion_delta = if rho > 0.0 { self.budget.delta } else { 0.0 };
        (pure + concentrated, conversion_delta + own_delta)
    }

    /// Largest (ε, δ), over every `horizon`-long span containing `window`,
    /// that the entries plus `extra` would reach.
    fn worst_span(&self, window: &Window, horizon_ms: i64, extra: &PrivacyCost) -> (f64, f64) {
        // The spans that matter start at a window start in
        // (start − horizon, start]; each holds the windows starting before
        // its own start + horizon.
        let lo = window.start_ms - horizon_ms + 1;
        let candidates = self
            .entries
            .range(lo..=window.start_ms)
            .map(|(s, _)| *s)
            .chain(std::iter::once(window.start_ms));
        candidates
            .map(|from| {
                let inside = self
                    .entries
                    .range(from..from + horizon_ms)
                    .map(|(_, e)| &e.cost);
                self.compose(inside.chain(std::iter::once(extra)))
            })
            .fold((0.0, 0.0), |(e, d), (e2, d2)| (e.max(e2), d.max(d2)))
    }

    /// Authorises releasing `window` at `cost`, or refuses.
    pub fn authorise(
        &mut self,
        window: Window,
        cost: PrivacyCost,
    ) -> Result<LedgerEntry, LedgerError> {
        if self.entries.contains_key(&window.start_ms) {
            return Err(LedgerError::AlreadyReleased(window.start_ms));
        }
        for limit in &self.budget.limits {
            let (would_be, delta) = self.worst_span(&window, limit.horizon_ms, &cost);
            // A tiny tolerance so that k windows of ε/k fit a budget of ε;
            // NaN never fits.
            let fits = would_be <= limit.max_epsilon + 1e-9;
            if !fits {
                return Err(LedgerError::OverBudget {
                    horizon_secs: limit.horizon_ms / 1000,
                    would_be,
                    limit: limit.max_epsilon,
                });
            }
            // NaN never fits here either.
            let delta_fits = delta <= self.budget.max_delta * (1.0 + 1e-9);
            if !delta_fits {
                return Err(LedgerError::OverDelta {
                    horizon_secs: limit.horizon_ms / 1000,
                    would_be: delta,
                    limit: self.budget.max_delta,
                });
            }
        }
        let entry = LedgerEntry {
            id: format!("w{}", window.start_ms),
            window,
            cost,
        };
        self.entries.insert(window.start_ms, entry.clone());
        Ok(entry)
    }

    /// Re-records a release that is already public (found on the releases
    /// topic at start-up). No budget check: it happened; it counts.
    pub fn restore(&mut self, entry: LedgerEntry) {
        self.entries.insert(entry.window.start_ms, entry);
    }

    /// Cumulative (ε, δ) of windows starting in `(now − horizon, now]`.
    pub fn spent_in_horizon(&self, now_ms: i64, horizon_ms: i64) -> (f64, f64) {
        self.compose(
            self.entries
                .range(now_ms - horizon_ms + 1..=now_ms)
                .map(|(_, e)| &e.cost),
        )
    }

    /// The entry that authorised `window`, if any.
    pub fn entry(&self, window: &Window) -> Option<&LedgerEntry> {
        self.entries.get(&window.start_ms)
    }

    pub fn is_released(&self, window: &Window) -> bool {
        self.entries.contains_key(&window.start_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hushmap_schema::WindowLength;

    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;

    fn w(i: i64) -> Window {
        Window::from_start(i * HOUR, WindowLength::from_secs(3600).unwrap()).unwrap()
    }

    fn pure(epsilon: f64) -> PrivacyCost {
        PrivacyCost {
            rho: None,
            epsilon,
            delta: 0.0,
        }
    }

    fn concentrated(rho: f64) -> PrivacyCost {
        PrivacyCost {
            rho: Some(rho),
            epsilon: zcdp_epsilon(rho, 1e-8).unwrap(),
            delta: 1e-8,
        }
    }

    fn ledger(limits: &[(i64, f64)]) -> PrivacyLedger {
        PrivacyLedger::new(Budget {
            limits: limits
                .iter()
                .map(|&(horizon_ms, max_epsilon)| BudgetLimit {
                    horizon_ms,
                    max_epsilon,
                })
                .collect(),
            delta: 1e-8,
            max_delta: 1e-6,
        })
    }

    #[test]
    fn refuses_a_span_whose_delta_would_exceed_the_limit() {
        // Each release has a threshold δ of 1e-7 on top of the conversion's.
        let cost = PrivacyCost {
            rho: Some(1e-4),
            epsilon: zcdp_epsilon(1e-4, 1e-8).unwrap(),
            delta: 1e-8 + 1e-7,
        };
        let mut l = ledger(&[(DAY, 100.0)]);
        // 1e-8 once + 9 × 1e-7 fits 1e-6; the tenth would not.
        for i in 0..9 {
            l.authorise(w(i), cost).unwrap();
        }
        let (_, delta) = l.spent_in_horizon(8 * HOUR, DAY);
        assert!((delta - 9.1e-7).abs() < 1e-15, "{delta}");
        assert!(matches!(
            l.authorise(w(9), cost),
            Err(LedgerError::OverDelta { .. })
        ));
        // A day later the span has room again.
        assert!(l.authorise(w(9 + 24), cost).is_ok());
    }

    #[test]
    fn refuses_overspending_within_the_horizon() {
        let mut l = ledger(&[(DAY, 1.0)]);
        for i in 0..4 {
            l.authorise(w(i), pure(0.25)).unwrap();
        }
        assert!(matches!(
            l.authorise(w(4), pure(0.25)),
            Err(LedgerError::OverBudget { .. })
        ));
        // A day after the first window, its spend has left the horizon.
        assert!(l.authorise(w(24), pure(0.25)).is_ok());
        assert!((l.spent_in_horizon(24 * HOUR, DAY).0 - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_window_between_earlier_and_later_ones_counts_both() {
        // Releases need not arrive in window order (a restart may finish an
        // older window late): the span check looks both ways.
        let mut l = ledger(&[(DAY, 1.0)]);
        l.authorise(w(0), pure(0.5)).unwrap();
        l.authorise(w(20), pure(0.5)).unwrap();
        assert!(l.authorise(w(10), pure(0.1)).is_err());
        assert!(l.authorise(w(30), pure(0.6)).is_err());
        assert!(l.authorise(w(44), pure(0.5)).is_ok());
    }

    #[test]
    fn concentrated_releases_compose_in_rho() {
        // 30 daily windows at ε = 1 each: pure composition reaches 30, zCDP
        // stays far lower, and both limits are enforced.
        let rho = crate::noise::zcdp_rho_for(1.0, 1e-8).unwrap();
        let mut zc = ledger(&[(DAY, 1.0), (30 * DAY, 10.0)]);
        let mut pu = ledger(&[(DAY, 1.0), (30 * DAY, 10.0)]);
        let mut pure_ok = 0;
        for day in 0..30 {
            let window = Window::from_start(day * DAY, WindowLength::ONE_DAY).unwrap();
            zc.authorise(window, concentrated(rho)).unwrap();
            pure_ok += usize::from(pu.authorise(window, pure(1.0)).is_ok());
        }
        assert_eq!(pure_ok, 10, "pure DP runs out after 10 days of ε = 1");
        let (month, _) = zc.spent_in_horizon(29 * DAY, 30 * DAY);
        assert!(month < 10.0 && month > 1.0, "30 days of zCDP: ε = {month}");
        // And one more concentrated release on the same day is refused.
        let again =
            Window::from_start(29 * DAY + HOUR, WindowLength::from_secs(3600).unwrap()).unwrap();
        assert!(matches!(
            zc.authorise(again, concentrated(rho)),
            Err(LedgerError::OverBudget { .. })
        ));
    }

    #[test]
    fn refuses_a_second_release_of_a_window() {
        let mut l = ledger(&[(DAY, 10.0)]);
        l.authorise(w(1), pure(1.0)).unwrap();
        assert_eq!(
            l.authorise(w(1), pure(1.0)),
            Err(LedgerError::AlreadyReleased(HOUR))
        );
        assert!(l.is_released(&w(1)));
    }

    #[test]
    fn restored_releases_count_against_the_budget_and_block_re_release() {
        let mut l = ledger(&[(DAY, 1.0)]);
        l.restore(LedgerEntry {
            id: "w0".into(),
            window: w(0),
            cost: pure(0.75),
        });
        assert_eq!(
            l.authorise(w(0), pure(0.1)),
            Err(LedgerError::AlreadyReleased(0))
        );
        assert!(matches!(
            l.authorise(w(1), pure(0.5)),
            Err(LedgerError::OverBudget { .. })
        ));
        assert!(l.authorise(w(1), pure(0.25)).is_ok());
    }

    #[test]
    fn a_single_release_larger_than_the_budget_is_refused() {
        let mut l = ledger(&[(DAY, 1.0)]);
        assert!(matches!(
            l.authorise(w(0), pure(1.5)),
            Err(LedgerError::OverBudget { .. })
        ));
    }
}
