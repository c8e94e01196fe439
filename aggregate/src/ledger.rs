//! The privacy ledger: every release is authorised here first.
//!
//! Each entry records a window and the ε (and δ) its release costs every
//! contributor. A contributor can appear in every window, so their loss over
//! a horizon is the sum of the entries in it (sequential composition). The
//! ledger refuses a release that would take that sum over the budget, and
//! refuses a second release of a window (no averaging of fresh noise).

use hushmap_schema::Window;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Budget over a rolling horizon.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Maximum total ε per contributor over any `horizon_ms`.
    pub max_epsilon: f64,
    pub horizon_ms: i64,
}

/// One authorised release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub id: String,
    pub window: Window,
    pub epsilon: f64,
    pub delta: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LedgerError {
    #[error("window starting at {0} ms was already released")]
    AlreadyReleased(i64),
    #[error("release would spend ε={requested} with only ε={remaining} left in the horizon")]
    OverBudget { requested: f64, remaining: f64 },
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

    /// ε already spent by windows starting in `(start − horizon, start + horizon)`,
    /// i.e. every horizon-long span that would contain `window` too.
    fn spent_near(&self, window: &Window) -> f64 {
        let lo = window.start_ms - self.budget.horizon_ms;
        let hi = window.start_ms + self.budget.horizon_ms;
        self.entries.range(lo + 1..hi).map(|(_, e)| e.epsilon).sum()
    }

    /// Authorises releasing `window` at cost `epsilon`, or refuses.
    pub fn authorise(
        &mut self,
        window: Window,
        epsilon: f64,
        delta: f64,
    ) -> Result<LedgerEntry, LedgerError> {
        if self.entries.contains_key(&window.start_ms) {
            return Err(LedgerError::AlreadyReleased(window.start_ms));
        }
        let remaining = self.budget.max_epsilon - self.spent_near(&window);
        // A tiny tolerance so that k windows of ε/k fit a budget of ε.
        if epsilon > remaining + 1e-9 {
            return Err(LedgerError::OverBudget {
                requested: epsilon,
                remaining: remaining.max(0.0),
            });
        }
        let entry = LedgerEntry {
            id: format!("w{}", window.start_ms),
            window,
            epsilon,
            delta,
        };
        self.entries.insert(window.start_ms, entry.clone());
        Ok(entry)
    }

    /// Re-records a release that is already public (found on the releases
    /// topic at start-up). No budget check: it happened; it counts.
    pub fn restore(&mut self, entry: LedgerEntry) {
        self.entries.insert(entry.window.start_ms, entry);
    }

    /// Cumulative ε of windows starting in the horizon `(now − horizon, now]`.
    pub fn spent_in_horizon(&self, now_ms: i64) -> f64 {
        self.entries
            .range(now_ms - self.budget.horizon_ms + 1..=now_ms)
            .map(|(_, e)| e.epsilon)
            .sum()
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

    fn w(i: i64) -> Window {
        Window::from_start(i * HOUR, WindowLength::from_secs(3600).unwrap()).unwrap()
    }

    #[test]
    fn refuses_overspending_within_the_horizon() {
        let mut l = PrivacyLedger::new(Budget {
            max_epsilon: 1.0,
            horizon_ms: 24 * HOUR,
        });
        for i in 0..4 {
            l.authorise(w(i), 0.25, 0.0).unwrap();
        }
        assert!(matches!(
            l.authorise(w(4), 0.25, 0.0),
            Err(LedgerError::OverBudget { .. })
        ));
        // A day after the first window, its spend has left the horizon.
        assert!(l.authorise(w(24), 0.25, 0.0).is_ok());
        assert!((l.spent_in_horizon(24 * HOUR) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn refuses_a_second_release_of_a_window() {
        let mut l = PrivacyLedger::new(Budget {
            max_epsilon: 10.0,
            horizon_ms: 24 * HOUR,
        });
        l.authorise(w(1), 1.0, 0.0).unwrap();
        assert_eq!(
            l.authorise(w(1), 1.0, 0.0),
            Err(LedgerError::AlreadyReleased(HOUR))
        );
        assert!(l.is_released(&w(1)));
    }

    #[test]
    fn restored_releases_count_against_the_budget_and_block_re_release() {
        let mut l = PrivacyLedger::new(Budget {
            max_epsilon: 1.0,
            horizon_ms: 24 * HOUR,
        });
        l.restore(LedgerEntry {
            id: "w0".into(),
            window: w(0),
            epsilon: 0.75,
            delta: 0.0,
        });
        assert_eq!(
            l.authorise(w(0), 0.1, 0.0),
            Err(LedgerError::AlreadyReleased(0))
        );
        assert!(matches!(
            l.authorise(w(1), 0.5, 0.0),
            Err(LedgerError::OverBudget { .. })
        ));
        assert!(l.authorise(w(1), 0.25, 0.0).is_ok());
    }

    #[test]
    fn a_single_release_larger_than_the_budget_is_refused() {
        let mut l = PrivacyLedger::new(Budget {
            max_epsilon: 1.0,
            horizon_ms: 24 * HOUR,
        });
        assert!(matches!(
            l.authorise(w(0), 1.5, 0.0),
            Err(LedgerError::OverBudget { .. })
        ));
    }
}
