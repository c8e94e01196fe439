//! The privacy ledger: every release is authorised here first, and noise
//! can only be drawn for what it authorised.
//!
//! Each entry records a window and what its release costs every
//! contributor ([`ReleaseCost`]). A contributor can appear in every window,
//! so their loss over a span is the [`Composition`] of the entries in it.
//! The ledger refuses a release that would take any budgeted span (by
//! default a rolling day and a rolling 30 days) over its ε or δ limit, and
//! refuses a second release of a window (no averaging of fresh noise).
//!
//! [`PrivacyLedger::authorise`] returns an [`Authorisation`], which has no
//! public constructor and is not `Clone`: the release step takes it by
//! value, so no code path can noise a window the ledger did not authorise,
//! nor noise one twice with the same authorisation.

use crate::composition::Composition;
use crate::cost::ReleaseCost;
use hushmap_schema::release::ReleasePart;
use hushmap_schema::{ReleaseMeta, Window};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One limit: at most `max_epsilon` per contributor over any `horizon_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BudgetLimit {
    pub horizon_ms: i64,
    pub max_epsilon: f64,
}

/// Every limit the ledger enforces, and the δ at which zCDP losses are
/// converted to ε.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub limits: Vec<BudgetLimit>,
    pub delta: f64,
    /// Most δ over any budgeted span: the conversion's `delta` once, plus
    /// every release's own δ (the threshold mechanisms') in the span.
    pub max_delta: f64,
}

/// One window's release on record: authorised here, or found published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub id: String,
    pub window: Window,
    pub cost: ReleaseCost,
    /// The parts of the window's release on record (a whole release is
    /// part 0 of 1; a partitioned one has a part per shard).
    #[serde(default = "whole_parts")]
    pub parts: BTreeSet<u32>,
    #[serde(default = "one")]
    pub of: u32,
    /// Charged when its provisional series began ([`PrivacyLedger::authorise_provisional`]);
    /// its final release is still to come, at no further cost.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub final_pending: bool,
}

fn whole_parts() -> BTreeSet<u32> {
    BTreeSet::from([0])
}

fn one() -> u32 {
    1
}

impl LedgerEntry {
    /// The entry a published release (or part) stands for.
    pub fn of_release(meta: &ReleaseMeta) -> LedgerEntry {
        LedgerEntry {
            id: meta.ledger_entry.clone(),
            window: Window {
                start_ms: meta.window_start,
                end_ms: meta.window_end,
            },
            cost: ReleaseCost::from_meta(meta),
            parts: BTreeSet::from([meta.part.index]),
            of: meta.part.of,
            // A provisional release charged its window; the final one is
            // still to come.
            final_pending: meta.provisional.is_some(),
        }
    }

    /// The entry of `window` released whole at `cost` (its final release
    /// still to come when `final_pending`).
    fn whole(window: Window, cost: ReleaseCost, final_pending: bool) -> LedgerEntry {
        LedgerEntry {
            id: LedgerEntry::id_of(&window),
            window,
            cost,
            parts: whole_parts(),
            of: 1,
            final_pending,
        }
    }

    /// The ledger id of a window.
    pub fn id_of(window: &Window) -> String {
        format!("w{}", window.start_ms)
    }
}

/// The ledger's leave to noise and publish one window (or one part of
/// it) at one cost. Only [`PrivacyLedger`] makes these.
#[derive(Debug)]
#[must_use = "an authorisation is budget already spent: noise the release with it"]
pub struct Authorisation {
    id: String,
    window: Window,
    cost: ReleaseCost,
    part: ReleasePart,
}

impl Authorisation {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn window(&self) -> Window {
        self.window
    }

    pub fn cost(&self) -> &ReleaseCost {
        &self.cost
    }

    pub fn part(&self) -> ReleasePart {
        self.part
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LedgerError {
    #[error("window starting at {0} ms was already released")]
    AlreadyReleased(i64),
    #[error("part {part} of the window starting at {window_start} ms was already released")]
    PartAlreadyReleased {
        window_start: i64,
        part: ReleasePart,
    },
    #[error(
        "the window starting at {window_start} ms is on record at another cost or in another \
         number of parts; its parts must all be made by the same plan"
    )]
    PlanMismatch { window_start: i64 },
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

/// The ledger of authorised and published releases, keyed by window start.
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

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// (ε, δ) of the composition of `costs` at the budget's δ.
    fn compose<'a>(&self, costs: impl Iterator<Item = &'a ReleaseCost>) -> Composition {
        Composition::at_delta(costs, self.budget.delta)
    }

    /// Largest (ε, δ), over every `horizon`-long span containing `window`,
    /// that the entries plus `extra` would reach.
    fn worst_span(&self, window: &Window, horizon_ms: i64, extra: &ReleaseCost) -> (f64, f64) {
        // The spans that matter start at a window start in
        // (start − horizon, start]; each holds the windows starting before
        // its own start + horizon.
        let lo = window.start_ms.saturating_sub(horizon_ms) + 1;
        let candidates = self
            .entries
            .range(lo..=window.start_ms)
            .map(|(s, _)| *s)
            .chain(std::iter::once(window.start_ms));
        candidates
            .map(|from| {
                let inside = self
                    .entries
                    .range(from..from.saturating_add(horizon_ms))
                    .map(|(_, e)| &e.cost);
                let c = self.compose(inside.chain(std::iter::once(extra)));
                (c.epsilon, c.delta)
            })
            .fold((0.0, 0.0), |(e, d), (e2, d2)| (e.max(e2), d.max(d2)))
    }

    /// Whether `cost` for `window` fits every limit.
    fn check_budget(&self, window: &Window, cost: &ReleaseCost) -> Result<(), LedgerError> {
        for limit in &self.budget.limits {
            let (would_be, delta) = self.worst_span(window, limit.horizon_ms, cost);
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
        Ok(())
    }

    /// Authorises releasing `window` whole at `cost`, or refuses.
    ///
    /// Refused when the window was released before, or when the spend
    /// would take any horizon of the budget over its ε (or δ) limit; a
    /// refusal spends nothing.
    ///
    /// # Example
    ///
    /// ```
    /// use hushmap_privacy::{Budget, BudgetLimit, LedgerError, PrivacyLedger, ReleaseCost};
    /// use hushmap_schema::{Window, WindowLength};
    ///
    /// // ε ≤ 1 over any 2 days.
    /// let mut ledger = PrivacyLedger::new(Budget {
    ///     limits: vec![BudgetLimit { horizon_ms: 2 * 86_400_000, max_epsilon: 1.0 }],
    ///     delta: 1e-8,
    ///     max_delta: 1e-6,
    /// });
    /// let day = |d: i64| Window::from_start(d * 86_400_000, WindowLength::ONE_DAY).unwrap();
    /// let half = ReleaseCost::pure(0.5, 0.0, Vec::new());
    /// assert!(ledger.authorise(day(0), half.clone()).is_ok());
    /// assert!(ledger.authorise(day(1), half.clone()).is_ok());
    /// // Day 2 shares a 2-day horizon with day 1... but not with day 0, so
    /// // it fits; a bigger spend on it would not.
    /// let too_much = ReleaseCost::pure(0.75, 0.0, Vec::new());
    /// assert!(matches!(
    ///     ledger.authorise(day(2), too_much),
    ///     Err(LedgerError::OverBudget { .. })
    /// ));
    /// assert!(ledger.authorise(day(2), half).is_ok());
    /// assert_eq!(ledger.entries().count(), 3);
    /// ```
    pub fn authorise(
        &mut self,
        window: Window,
        cost: ReleaseCost,
    ) -> Result<Authorisation, LedgerError> {
        if let Some(entry) = self.entries.get_mut(&window.start_ms) {
            // Charged when its provisional series began: the final release
            // is part of what was charged, once.
            if !entry.final_pending {
                return Err(LedgerError::AlreadyReleased(window.start_ms));
            }
            // (Or published without data, free, when its records were
            // lost mid-window: the series' charge stands all the same.)
            if !entry.cost.same_as(&cost) && !cost.is_free() {
                return Err(LedgerError::PlanMismatch {
                    window_start: window.start_ms,
                });
            }
            entry.final_pending = false;
            return Ok(Authorisation {
                id: entry.id.clone(),
                window,
                cost,
                part: ReleasePart::WHOLE,
            });
        }
        self.check_budget(&window, &cost)?;
        let entry = LedgerEntry::whole(window, cost, false);
        let auth = Authorisation {
            id: entry.id.clone(),
            window,
            cost: entry.cost.clone(),
            part: ReleasePart::WHOLE,
        };
        self.entries.insert(window.start_ms, entry);
        Ok(auth)
    }

    /// Charges `window` at `cost` (its whole cost: the provisional series
    /// and the final release together) before its first provisional
    /// numbers are noised, or finds it charged already by its series.
    /// The final release is then authorised by
    /// [`authorise`](Self::authorise) at the same cost, for nothing more.
    ///
    /// Refused like [`authorise`](Self::authorise): over budget (nothing
    /// charged), or the window's final release is on record.
    ///
    /// ```
    /// use hushmap_privacy::{Budget, BudgetLimit, LedgerError, PrivacyLedger, ReleaseCost};
    /// use hushmap_schema::{Window, WindowLength};
    ///
    /// let mut ledger = PrivacyLedger::new(Budget {
    ///     limits: vec![BudgetLimit { horizon_ms: 86_400_000, max_epsilon: 1.0 }],
    ///     delta: 1e-8,
    ///     max_delta: 1e-6,
    /// });
    /// let day = Window::from_start(0, WindowLength::ONE_DAY).unwrap();
    /// let cost = ReleaseCost::pure(1.0, 0.0, Vec::new());
    /// ledger.authorise_provisional(day, cost.clone()).unwrap(); // charged
    /// ledger.authorise_provisional(day, cost.clone()).unwrap(); // the next sub-window: nothing more
    /// assert!(ledger.latest().is_none()); // not released yet
    /// let _final = ledger.authorise(day, cost.clone()).unwrap(); // within the same charge
    /// assert!(matches!(ledger.authorise(day, cost), Err(LedgerError::AlreadyReleased(_))));
    /// ```
    pub fn authorise_provisional(
        &mut self,
        window: Window,
        cost: ReleaseCost,
    ) -> Result<(), LedgerError> {
        match self.entries.get(&window.start_ms) {
            Some(entry) if !entry.final_pending => {
                Err(LedgerError::AlreadyReleased(window.start_ms))
            }
            Some(entry) if !entry.cost.same_as(&cost) => Err(LedgerError::PlanMismatch {
                window_start: window.start_ms,
            }),
            Some(_) => Ok(()),
            None => {
                self.check_budget(&window, &cost)?;
                self.entries
                    .insert(window.start_ms, LedgerEntry::whole(window, cost, true));
                Ok(())
            }
        }
    }

    /// Authorises part `part` of `window`'s release at `cost`.
    ///
    /// The first part of a window on record spends the window's budget
    /// (checked like [`authorise`](Self::authorise)); later parts spend
    /// nothing more, since the parts together are one release, but must
    /// come from the same plan. A part already on record is refused: it
    /// was authorised here before, or found published.
    pub fn authorise_part(
        &mut self,
        window: Window,
        part: ReleasePart,
        cost: ReleaseCost,
    ) -> Result<Authorisation, LedgerError> {
        match self.entries.get_mut(&window.start_ms) {
            Some(entry) => {
                if entry.of != part.of || !entry.cost.same_as(&cost) {
                    return Err(LedgerError::PlanMismatch {
                        window_start: window.start_ms,
                    });
                }
                if !entry.parts.insert(part.index) {
                    return Err(LedgerError::PartAlreadyReleased {
                        window_start: window.start_ms,
                        part,
                    });
                }
                Ok(Authorisation {
                    id: entry.id.clone(),
                    window,
                    cost: entry.cost.clone(),
                    part,
                })
            }
            None => {
                self.check_budget(&window, &cost)?;
                let entry = LedgerEntry {
                    id: LedgerEntry::id_of(&window),
                    window,
                    cost,
                    parts: BTreeSet::from([part.index]),
                    of: part.of,
                    final_pending: false,
                };
                let auth = Authorisation {
                    id: entry.id.clone(),
                    window,
                    cost: entry.cost.clone(),
                    part,
                };
                self.entries.insert(window.start_ms, entry);
                Ok(auth)
            }
        }
    }

    /// Re-records a release (or part) that is already public or was spent
    /// elsewhere (the releases topic, a ledger file). No budget check: it
    /// happened; it counts. Parts of one window merge into one entry; of
    /// two different costs for one window the larger counts.
    pub fn restore(&mut self, entry: LedgerEntry) {
        match self.entries.get_mut(&entry.window.start_ms) {
            Some(known) => {
                known.parts.extend(entry.parts);
                // A final release found published ends a provisional series.
                known.final_pending &= entry.final_pending;
                if entry.cost.epsilon > known.cost.epsilon || entry.cost.delta > known.cost.delta {
                    known.cost = entry.cost;
                }
            }
            None => {
                self.entries.insert(entry.window.start_ms, entry);
            }
        }
    }

    /// Composition of the windows starting in `(now − horizon, now]`.
    pub fn spent_in_horizon(&self, now_ms: i64, horizon_ms: i64) -> Composition {
        self.compose(
            self.entries
                .range(now_ms.saturating_sub(horizon_ms) + 1..=now_ms)
                .map(|(_, e)| &e.cost),
        )
    }

    /// The entry on record for `window`, if any.
    pub fn entry(&self, window: &Window) -> Option<&LedgerEntry> {
        self.entries.get(&window.start_ms)
    }

    pub fn is_released(&self, window: &Window) -> bool {
        self.entries.contains_key(&window.start_ms)
    }

    /// Whether `part` of `window` is on record.
    pub fn has_part(&self, window: &Window, part: ReleasePart) -> bool {
        self.entries
            .get(&window.start_ms)
            .is_some_and(|e| e.parts.contains(&part.index))
    }

    /// Every entry, oldest window first.
    pub fn entries(&self) -> impl Iterator<Item = &LedgerEntry> {
        self.entries.values()
    }

    /// The latest window whose release is on record (a window with only
    /// provisional numbers out is charged, but still to be released).
    pub fn latest(&self) -> Option<&LedgerEntry> {
        self.entries.values().rev().find(|e| !e.final_pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversion::{zcdp_epsilon, zcdp_rho_for};
    use hushmap_schema::{StatisticCost, WindowLength};

    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;

    fn w(i: i64) -> Window {
        Window::from_start(i * HOUR, WindowLength::from_secs(3600).unwrap()).unwrap()
    }

    fn pure(epsilon: f64) -> ReleaseCost {
        ReleaseCost::pure(epsilon, 0.0, Vec::new())
    }

    fn stat(cost: f64, delta: f64) -> StatisticCost {
        StatisticCost {
            statistic: "risk_counts".into(),
            level: 5,
            cost,
            delta,
        }
    }

    fn concentrated(rho: f64) -> ReleaseCost {
        ReleaseCost::concentrated(vec![stat(rho, 0.0)], 1e-8).unwrap()
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
        let cost = ReleaseCost::concentrated(vec![stat(1e-4, 1e-7)], 1e-8).unwrap();
        let mut l = ledger(&[(DAY, 100.0)]);
        // 1e-8 once + 9 × 1e-7 fits 1e-6; the tenth would not.
        for i in 0..9 {
            let _ = l.authorise(w(i), cost.clone()).unwrap();
        }
        let delta = l.spent_in_horizon(8 * HOUR, DAY).delta;
        assert!((delta - 9.1e-7).abs() < 1e-15, "{delta}");
        assert!(matches!(
            l.authorise(w(9), cost.clone()),
            Err(LedgerError::OverDelta { .. })
        ));
        // A day later the span has room again.
        assert!(l.authorise(w(9 + 24), cost).is_ok());
    }

    #[test]
    fn a_restored_entry_keeps_its_own_delta_whatever_today_configures() {
        // Made when the conversion δ was 1e-10 and each threshold spent
        // 1e-8; today the ledger converts at 1e-8. Inferring the threshold
        // δ as (total − today's conversion δ) would give 1e-10 − ... → 0
        // per release, an undercount; the entry's statistics say 1e-8.
        let old = ReleaseCost::concentrated(vec![stat(1e-4, 1e-8)], 1e-10).unwrap();
        let mut l = ledger(&[(DAY, 100.0)]);
        for i in 0..10 {
            l.restore(LedgerEntry {
                id: format!("w{i}"),
                window: w(i),
                cost: old.clone(),
                parts: BTreeSet::from([0]),
                of: 1,
                final_pending: false,
            });
        }
        let delta = l.spent_in_horizon(9 * HOUR, DAY).delta;
        // Today's conversion δ once, plus ten threshold δs.
        assert!((delta - (1e-8 + 10.0 * 1e-8)).abs() < 1e-18, "{delta}");
        // And the other way round: an old, larger conversion δ is not
        // counted as a threshold δ ten times over.
        let loose = ReleaseCost::concentrated(vec![stat(1e-4, 0.0)], 1e-6).unwrap();
        let mut l = ledger(&[(DAY, 100.0)]);
        for i in 0..10 {
            l.restore(LedgerEntry {
                id: format!("w{i}"),
                window: w(i),
                cost: loose.clone(),
                parts: BTreeSet::from([0]),
                of: 1,
                final_pending: false,
            });
        }
        assert_eq!(l.spent_in_horizon(9 * HOUR, DAY).delta, 1e-8);
    }

    #[test]
    fn refuses_overspending_within_the_horizon() {
        let mut l = ledger(&[(DAY, 1.0)]);
        for i in 0..4 {
            let _ = l.authorise(w(i), pure(0.25)).unwrap();
        }
        assert!(matches!(
            l.authorise(w(4), pure(0.25)),
            Err(LedgerError::OverBudget { .. })
        ));
        // A day after the first window, its spend has left the horizon.
        assert!(l.authorise(w(24), pure(0.25)).is_ok());
        assert!((l.spent_in_horizon(24 * HOUR, DAY).epsilon - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_window_between_earlier_and_later_ones_counts_both() {
        // Releases need not arrive in window order (a restart may finish an
        // older window late): the span check looks both ways.
        let mut l = ledger(&[(DAY, 1.0)]);
        let _ = l.authorise(w(0), pure(0.5)).unwrap();
        let _ = l.authorise(w(20), pure(0.5)).unwrap();
        assert!(l.authorise(w(10), pure(0.1)).is_err());
        assert!(l.authorise(w(30), pure(0.6)).is_err());
        assert!(l.authorise(w(44), pure(0.5)).is_ok());
    }

    #[test]
    fn concentrated_releases_compose_in_rho() {
        // 30 daily windows at ε = 1 each: pure composition reaches 30, zCDP
        // stays far lower, and both limits are enforced.
        let rho = zcdp_rho_for(1.0, 1e-8).unwrap();
        let mut zc = ledger(&[(DAY, 1.0), (30 * DAY, 10.0)]);
        let mut pu = ledger(&[(DAY, 1.0), (30 * DAY, 10.0)]);
        let mut pure_ok = 0;
        for day in 0..30 {
            let window = Window::from_start(day * DAY, WindowLength::ONE_DAY).unwrap();
            let _ = zc.authorise(window, concentrated(rho)).unwrap();
            pure_ok += usize::from(pu.authorise(window, pure(1.0)).is_ok());
        }
        assert_eq!(pure_ok, 10, "pure DP runs out after 10 days of ε = 1");
        let month = zc.spent_in_horizon(29 * DAY, 30 * DAY).epsilon;
        assert!(month < 10.0 && month > 1.0, "30 days of zCDP: ε = {month}");
        assert!((month - zcdp_epsilon(30.0 * rho, 1e-8).unwrap()).abs() < 1e-9);
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
        let auth = l.authorise(w(1), pure(1.0)).unwrap();
        assert_eq!((auth.window(), auth.part()), (w(1), ReleasePart::WHOLE));
        assert_eq!(
            l.authorise(w(1), pure(1.0)).unwrap_err(),
            LedgerError::AlreadyReleased(HOUR)
        );
        assert!(l.is_released(&w(1)));
    }

    #[test]
    fn a_provisional_charge_is_the_window_s_only_charge_and_survives_a_restart() {
        let mut l = ledger(&[(DAY, 1.0)]);
        l.authorise_provisional(w(0), pure(0.75)).unwrap();
        // The window is charged: another one that does not fit is refused,
        // and so is the same window at another cost.
        assert!(matches!(
            l.authorise_provisional(w(1), pure(0.5)),
            Err(LedgerError::OverBudget { .. })
        ));
        assert!(matches!(
            l.authorise(w(0), pure(0.5)),
            Err(LedgerError::PlanMismatch { .. })
        ));
        assert!(l.latest().is_none());
        // A restart finds the provisional release on its topic: the charge
        // stands, and the final release is authorised once, within it.
        let mut restarted = ledger(&[(DAY, 1.0)]);
        restarted.restore(LedgerEntry {
            final_pending: true,
            ..l.entry(&w(0)).unwrap().clone()
        });
        assert!(matches!(
            restarted.authorise_provisional(w(1), pure(0.5)),
            Err(LedgerError::OverBudget { .. })
        ));
        let _final = restarted.authorise(w(0), pure(0.75)).unwrap();
        assert_eq!(restarted.latest().unwrap().window, w(0));
        assert!(matches!(
            restarted.authorise_provisional(w(0), pure(0.75)),
            Err(LedgerError::AlreadyReleased(0))
        ));
        // Its records lost mid-window, the window is published without
        // data (free): authorised, and the series' charge stays on record.
        let mut missed = ledger(&[(DAY, 1.0)]);
        missed.authorise_provisional(w(0), pure(0.75)).unwrap();
        let free = missed.authorise(w(0), ReleaseCost::free(false)).unwrap();
        assert!(free.cost().is_free());
        assert!(missed.entry(&w(0)).unwrap().cost.same_as(&pure(0.75)));
        assert!(matches!(
            missed.authorise_provisional(w(1), pure(0.5)),
            Err(LedgerError::OverBudget { .. })
        ));
        // The final release found published ends the series on record too.
        l.restore(LedgerEntry {
            final_pending: false,
            ..l.entry(&w(0)).unwrap().clone()
        });
        assert!(matches!(
            l.authorise(w(0), pure(0.75)),
            Err(LedgerError::AlreadyReleased(0))
        ));
    }

    #[test]
    fn restored_releases_count_against_the_budget_and_block_re_release() {
        let mut l = ledger(&[(DAY, 1.0)]);
        l.restore(LedgerEntry {
            id: "w0".into(),
            window: w(0),
            cost: pure(0.75),
            parts: BTreeSet::from([0]),
            of: 1,
            final_pending: false,
        });
        assert_eq!(
            l.authorise(w(0), pure(0.1)).unwrap_err(),
            LedgerError::AlreadyReleased(0)
        );
        assert!(matches!(
            l.authorise(w(1), pure(0.5)),
            Err(LedgerError::OverBudget { .. })
        ));
        assert!(l.authorise(w(1), pure(0.25)).is_ok());
    }

    #[test]
    fn parts_of_a_window_are_charged_once_and_each_authorised_once() {
        let mut l = ledger(&[(DAY, 1.0)]);
        let of = 3;
        let part = |index| ReleasePart { index, of };
        let _ = l.authorise_part(w(0), part(0), pure(0.6)).unwrap();
        // The other parts spend nothing more (0.6 + 0.6 would not fit).
        let _ = l.authorise_part(w(0), part(2), pure(0.6)).unwrap();
        assert!((l.spent_in_horizon(0, DAY).epsilon - 0.6).abs() < 1e-12);
        // A part twice: refused.
        assert!(matches!(
            l.authorise_part(w(0), part(2), pure(0.6)),
            Err(LedgerError::PartAlreadyReleased { .. })
        ));
        // A part found published elsewhere: refused too.
        let mut found = l.entry(&w(0)).unwrap().clone();
        found.parts = BTreeSet::from([1]);
        l.restore(found);
        assert!(l.has_part(&w(0), part(1)));
        assert!(matches!(
            l.authorise_part(w(0), part(1), pure(0.6)),
            Err(LedgerError::PartAlreadyReleased { .. })
        ));
        // Another plan for the same window: refused.
        assert!(matches!(
            l.authorise_part(w(0), ReleasePart { index: 0, of: 2 }, pure(0.6)),
            Err(LedgerError::PlanMismatch { .. })
        ));
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
