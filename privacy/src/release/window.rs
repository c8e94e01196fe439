//! [`release_window`]: the one step from a closed window to a release,
//! shared by the single streaming topology, each shard of the partitioned
//! one and batch mode. The order is the guarantee: the ledger authorises
//! the window's cost (a ledger file, when there is one, records the
//! authorisation and syncs) before a single count is noised, so no noised
//! number exists that the ledger has not charged. (Noise drawn ahead, a
//! [`NoiseReserve`](super::NoiseReserve), is data-independent until then.)
//!
//! ```
//! use hushmap_privacy::release::{Mechanism, PlanSpec, ReleasePlan, WindowData, WindowOutcome, release_window};
//! use hushmap_privacy::sensitivity::ContributionBounds;
//! use hushmap_privacy::{Budget, BudgetLimit, PrivacyLedger};
//! use hushmap_schema::{Window, WindowLength};
//!
//! let plan = ReleasePlan::calibrate(&PlanSpec {
//!     mechanism: Mechanism::Laplace,
//!     epsilon_per_window: 1.0,
//!     delta: 0.0,
//!     risk_share: 0.5,
//!     all_ages_share: 0.0,
//!     selection_share: 0.1,
//!     selection_delta: 1e-8,
//!     levels: vec![5],
//!     bounds: ContributionBounds::new(1),
//!     public_regions: None,
//!     max_ci_half_width: 0.15,
//!     level_weights: Vec::new(),
//!     estimates: hushmap_schema::release::Estimates::Consistent,
//!     provisional: None,
//! })
//! .unwrap();
//! let mut ledger = PrivacyLedger::new(Budget {
//!     limits: vec![BudgetLimit { horizon_ms: 86_400_000, max_epsilon: 1.5 }],
//!     delta: 1e-8,
//!     max_delta: 1e-6,
//! });
//! let hour = |h: i64| Window::from_start(h * 3_600_000, WindowLength::from_secs(3600).unwrap()).unwrap();
//! let first = release_window(&mut ledger, None, &plan, hour(0), None, WindowData::Counted(&[]), None).unwrap();
//! assert!(matches!(first, WindowOutcome::Released(_, Some(_))));
//! // A second ε = 1 within the day is over its 1.5: refused, nothing noised.
//! let second = release_window(&mut ledger, None, &plan, hour(1), None, WindowData::Counted(&[]), None).unwrap();
//! assert!(matches!(second, WindowOutcome::Refused(_)));
//! // A window published without data costs nothing and is always allowed.
//! let missed = release_window(&mut ledger, None, &plan, hour(2), None, WindowData::Missed, None).unwrap();
//! assert!(matches!(missed, WindowOutcome::Released(r, None) if r.rows.is_empty()));
//! ```

use super::continual::{FirstRecordCounts, ProvisionalError, ProvisionalSeries};
use super::noising::{missed_release, noise_window};
use super::reserve::NoiseReserve;
use super::{CellCounts, ReleasePlan};
use crate::noise::NoiseError;
use crate::{LedgerEntry, LedgerError, LedgerFile, LedgerFileError, PrivacyLedger, ReleaseCost};
use hushmap_schema::release::ReleasePart;
use hushmap_schema::{Release, Window};

/// What a window's release is made from.
#[derive(Debug, Clone, Copy)]
pub enum WindowData<'a> {
    /// Its bounded counts at the release resolution (empty when nobody
    /// was counted: the window is released all the same).
    Counted(&'a [CellCounts]),
    /// Its records may be gone from the topic (the aggregator was down for
    /// longer than the topic keeps them): published without data, marked
    /// missed, at no cost.
    Missed,
}

/// What became of a window at the ledger.
#[derive(Debug)]
pub enum WindowOutcome {
    /// Authorised, charged and noised: the release, and the measurements
    /// it was made from (none for a window published without data).
    Released(Release, Option<Box<Release>>),
    /// The ledger said no (over budget, released before, …): nothing was
    /// noised, and the caller decides what to tell (a refused window is
    /// counted in the metrics; a part already released is skipped).
    Refused(LedgerError),
}

/// Why a window authorised by the ledger could not be released.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseStepError {
    #[error("noise: {0}")]
    Noise(#[from] NoiseError),
    /// The authorisation could not be made durable, so nothing was noised.
    #[error(transparent)]
    Journal(#[from] LedgerFileError),
}

/// Releases `window` under `plan`: authorises its cost with `ledger` (as
/// `part` of a partitioned release when given), records the authorisation
/// in `journal` when there is one, and only then noises the counts, with
/// `reserve`'s noise as far as it goes (it is used once and dropped, also
/// when the ledger refuses).
pub fn release_window(
    ledger: &mut PrivacyLedger,
    journal: Option<&mut LedgerFile>,
    plan: &ReleasePlan,
    window: Window,
    part: Option<ReleasePart>,
    data: WindowData<'_>,
    reserve: Option<NoiseReserve>,
) -> Result<WindowOutcome, ReleaseStepError> {
    let cost = cost_of(plan, &data);
    let authorised = match part {
        Some(part) => ledger.authorise_part(window, part, cost),
        None => ledger.authorise(window, cost),
    };
    let authorisation = match authorised {
        Ok(authorisation) => authorisation,
        Err(e) => return Ok(WindowOutcome::Refused(e)),
    };
    if let Some(journal) = journal {
        let entry = ledger
            .entry(&window)
            .expect("an authorised window has a ledger entry");
        journal.append(entry)?;
    }
    Ok(match data {
        WindowData::Counted(cells) => {
            let noised = noise_window(cells, plan, authorisation, reserve)?;
            WindowOutcome::Released(noised.release, Some(Box::new(noised.measured)))
        }
        WindowData::Missed => WindowOutcome::Released(missed_release(plan, authorisation)?, None),
    })
}

/// What became of a provisional release at the ledger.
#[derive(Debug)]
pub enum ProvisionalOutcome {
    /// The window is charged (now or at an earlier sub-window) and the
    /// next sub-window's provisional release is made.
    Released(Release),
    /// The ledger said no: nothing was noised.
    Refused(LedgerError),
}

/// The provisional release of sub-window `t` of `window`: the ledger
/// charges the window's whole cost first (at its first sub-window; later
/// ones are within that charge), and only then are the intervals ending
/// with `t` noised ([`ProvisionalSeries::advance`]).
pub fn release_provisional(
    ledger: &mut PrivacyLedger,
    plan: &ReleasePlan,
    window: Window,
    series: &mut ProvisionalSeries,
    t: u32,
    counts: &[FirstRecordCounts],
) -> Result<ProvisionalOutcome, ProvisionalError> {
    if let Err(e) = ledger.authorise_provisional(window, plan.cost.clone()) {
        return Ok(ProvisionalOutcome::Refused(e));
    }
    let id = LedgerEntry::id_of(&window);
    Ok(ProvisionalOutcome::Released(
        series.advance(plan, window, &id, t, counts)?,
    ))
}

/// What the ledger is asked to authorise for a window released from
/// `data`: the plan's cost to count it, nothing to publish it missed (it
/// reads no data).
fn cost_of(plan: &ReleasePlan, data: &WindowData<'_>) -> ReleaseCost {
    match data {
        WindowData::Counted(_) => plan.cost.clone(),
        WindowData::Missed => ReleaseCost::free(plan.cost.rho.is_some()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::{Mechanism, PlanSpec};
    use crate::{Budget, BudgetLimit};
    use hushmap_schema::WindowLength;

    fn plan() -> ReleasePlan {
        ReleasePlan::calibrate(&PlanSpec::for_tests(Mechanism::Gaussian, 1.0, vec![5, 4])).unwrap()
    }

    fn ledger(max_epsilon: f64) -> PrivacyLedger {
        PrivacyLedger::new(Budget {
            limits: vec![BudgetLimit {
                horizon_ms: 86_400_000,
                max_epsilon,
            }],
            delta: 1e-8,
            max_delta: 1e-6,
        })
    }

    fn hour(h: i64) -> Window {
        Window::from_start(h * 3_600_000, WindowLength::from_secs(3600).unwrap()).unwrap()
    }

    #[test]
    fn the_journal_holds_the_charge_before_the_release_exists() {
        let dir = std::env::temp_dir().join(format!("hushmap-step-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.jsonl");
        let _ = std::fs::remove_file(&path);
        let (mut journal, _) = LedgerFile::open(&path).unwrap();
        let mut l = ledger(10.0);
        let plan = plan();
        let out = release_window(
            &mut l,
            Some(&mut journal),
            &plan,
            hour(0),
            None,
            WindowData::Counted(&[]),
            None,
        )
        .unwrap();
        let WindowOutcome::Released(release, _) = out else {
            panic!("refused")
        };
        drop(journal);
        let (_, entries) = LedgerFile::open(&path).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].id, release.meta.ledger_entry);
        assert!(entries[0].cost.same_as(&plan.cost));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_refused_window_is_neither_charged_nor_noised() {
        // Two windows of ε = 1 under zCDP compose to ε ≈ 1.42 at δ = 1e-8:
        // over a limit of 1.2.
        let mut l = ledger(1.2);
        let plan = plan();
        let data = WindowData::Counted(&[]);
        assert!(matches!(
            release_window(&mut l, None, &plan, hour(0), None, data, None).unwrap(),
            WindowOutcome::Released(..)
        ));
        let refused = release_window(&mut l, None, &plan, hour(1), None, data, None).unwrap();
        assert!(matches!(
            refused,
            WindowOutcome::Refused(LedgerError::OverBudget { .. })
        ));
        assert!(l.entry(&hour(1)).is_none());
        // The same window twice: refused, not noised again.
        assert!(matches!(
            release_window(&mut l, None, &plan, hour(0), None, WindowData::Missed, None).unwrap(),
            WindowOutcome::Refused(_)
        ));
    }

    #[test]
    fn parts_of_a_window_are_charged_once_and_each_released_once() {
        let mut l = ledger(1.5);
        let plan = plan();
        let part = |index| Some(ReleasePart { index, of: 2 });
        for index in [0, 1] {
            let out = release_window(
                &mut l,
                None,
                &plan,
                hour(0),
                part(index),
                WindowData::Counted(&[]),
                None,
            )
            .unwrap();
            let WindowOutcome::Released(r, _) = out else {
                panic!("part {index} refused")
            };
            assert_eq!(r.meta.part, ReleasePart { index, of: 2 });
        }
        assert!(matches!(
            release_window(
                &mut l,
                None,
                &plan,
                hour(0),
                part(1),
                WindowData::Counted(&[]),
                None
            )
            .unwrap(),
            WindowOutcome::Refused(LedgerError::PartAlreadyReleased { .. })
        ));
    }
}
