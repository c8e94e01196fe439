//! Noise drawn before the window closes: [`NoiseReserve`].
//!
//! The count noise of a release does not depend on the data: it is a fresh
//! draw from the plan's mechanism for every count of every region and age
//! band released. What depends on the data is only which regions a
//! threshold level releases, and so how many draws it needs. So the draws
//! can be made while the window is still open (by OpenDP, as always: its
//! mechanism invoked on zeros gives exactly its noise), and when the window
//! closes only the sums are left: `count + noise`, which is what the
//! mechanism computes itself. The release's latency after its data are in
//! then no longer carries the exact samplers' cost (about 95 ms for the
//! default plan's ~18,000 draws on this project's 2-core machine).
//!
//! What keeps this as private as drawing at release time:
//! - every value is used at most once: a bank hands its values out by
//!   moving them ([`Vec::split_off`]), and a reserve is taken by value by
//!   the one release that uses it, then dropped;
//! - a value never meets a count before the ledger has authorised the
//!   window: the reserve is only read inside [`noise_window`], which takes
//!   the [`Authorisation`](crate::Authorisation);
//! - a reserve drawn for other mechanisms is refused, not used;
//! - where a threshold level releases more regions than were reserved for,
//!   the rest is drawn there and then; values left over are dropped with
//!   the reserve. Which values a count gets depends only on its place in
//!   the release, never on its value.
//!
//! The threshold selection itself is left to OpenDP's own measurement at
//! release time: its noise is compared with a threshold inside OpenDP, and
//! reimplementing that comparison here would move the privacy argument out
//! of the library.
//!
//! [`noise_window`]: super::noise_window

use super::plan::{LevelPlan, RegionSelection, ReleasePlan};
use crate::noise::{CountNoise, NoiseError};
use hushmap_schema::{AgeBand, Release};
use std::collections::BTreeSet;

/// Pre-drawn noise for one release of a plan: for each level, banks of
/// risk, symptom and all-ages noise.
///
/// # Example
///
/// ```
/// use hushmap_privacy::release::{
///     Mechanism, NoiseReserve, PlanSpec, ReleasePlan, WindowData, WindowOutcome, release_window,
/// };
/// use hushmap_privacy::sensitivity::ContributionBounds;
/// use hushmap_privacy::{Budget, PrivacyLedger};
/// use hushmap_schema::{Window, WindowLength};
///
/// let plan = ReleasePlan::calibrate(&PlanSpec {
///     mechanism: Mechanism::Gaussian,
///     epsilon_per_window: 1.0,
///     delta: 1e-7,
///     risk_share: 0.5,
///     all_ages_share: 0.0,
///     selection_share: 0.1,
///     selection_delta: 1e-8,
///     levels: vec![5],
///     bounds: ContributionBounds::new(1),
///     public_regions: None,
///     max_ci_half_width: 0.15,
///     level_weights: Vec::new(),
///     estimates: hushmap_schema::release::Estimates::Noisy,
///     provisional: None,
/// })
/// .unwrap();
/// // While the window is open: noise for up to 40 regions (a threshold
/// // level's guess, from the last release).
/// let reserve = NoiseReserve::draw(&plan, &[40]).unwrap();
/// assert_eq!(reserve.values(), 40 * 6 * (3 + 10));
/// // When it closes: authorised by the ledger, then the counts plus the
/// // reserve's noise (an empty window here).
/// let mut ledger = PrivacyLedger::new(Budget { limits: vec![], delta: 1e-8, max_delta: 1.0 });
/// let hour = Window::from_start(0, WindowLength::from_secs(3600).unwrap()).unwrap();
/// let outcome = release_window(
///     &mut ledger, None, &plan, hour, None, WindowData::Counted(&[]), Some(reserve),
/// )
/// .unwrap();
/// assert!(matches!(outcome, WindowOutcome::Released(..)));
/// ```
#[derive(Debug)]
pub struct NoiseReserve {
    levels: Vec<LevelBanks>,
}

/// One level's banks; a statistic the plan does not release has none.
#[derive(Debug)]
pub(crate) struct LevelBanks {
    pub(crate) risk: Bank,
    pub(crate) symptoms: Option<Bank>,
    pub(crate) all_ages: Option<Bank>,
}

/// Noise values of one mechanism, each to be used once.
#[derive(Debug)]
pub(crate) struct Bank {
    noise: CountNoise,
    values: Vec<i64>,
}

impl Bank {
    fn draw(noise: CountNoise, n: usize) -> Result<Bank, NoiseError> {
        Ok(Bank {
            noise,
            values: noise.apply(&vec![0; n])?,
        })
    }

    /// `truth` plus noise from `noise`: this bank's values first (each
    /// handed out once), then fresh draws for what it does not cover.
    pub(crate) fn noised(
        &mut self,
        noise: &CountNoise,
        truth: &[i64],
    ) -> Result<Vec<i64>, NoiseError> {
        if self.noise != *noise {
            return Err(NoiseError::Parameter(
                "noise reserved for another mechanism than the plan's",
            ));
        }
        let covered = truth.len().min(self.values.len());
        let reserved = self.values.split_off(self.values.len() - covered);
        let mut out: Vec<i64> = truth[..covered]
            .iter()
            .zip(reserved)
            .map(|(count, noise)| count.saturating_add(noise))
            .collect();
        if covered < truth.len() {
            out.extend(noise.apply(&truth[covered..])?);
        }
        Ok(out)
    }
}

impl NoiseReserve {
    /// Draws the noise of one release of `plan`: at each level, for every
    /// region of its public set, or for `guess[i]` regions where the level
    /// releases regions by threshold (the last release's count is a good
    /// guess: it is public). A missing guess reserves nothing there.
    pub fn draw(plan: &ReleasePlan, guess: &[usize]) -> Result<NoiseReserve, NoiseError> {
        let bands = AgeBand::ALL.len();
        let levels = plan
            .levels
            .iter()
            .enumerate()
            .map(|(i, level)| {
                let regions = match &level.selection {
                    RegionSelection::Public(set) => set.len(),
                    RegionSelection::Threshold(_) => guess.get(i).copied().unwrap_or(0),
                };
                Ok(LevelBanks {
                    risk: Bank::draw(level.risk, regions * bands * 3)?,
                    symptoms: level
                        .symptoms
                        .map(|noise| Bank::draw(noise, regions * bands * 10))
                        .transpose()?,
                    all_ages: level
                        .all_ages
                        .map(|noise| Bank::draw(noise, regions * 3))
                        .transpose()?,
                })
            })
            .collect::<Result<_, NoiseError>>()?;
        Ok(NoiseReserve { levels })
    }

    /// How many regions each level of `plan` released in `release`: the
    /// guess for the next window's reserve.
    pub fn regions_released(plan: &ReleasePlan, release: &Release) -> Vec<usize> {
        plan.levels
            .iter()
            .map(|level: &LevelPlan| {
                release
                    .rows
                    .iter()
                    .filter(|row| row.level == level.level)
                    .map(|row| row.region.as_str())
                    .collect::<BTreeSet<_>>()
                    .len()
            })
            .collect()
    }

    /// How many noise values it holds.
    pub fn values(&self) -> usize {
        self.levels
            .iter()
            .flat_map(|l| [Some(&l.risk), l.symptoms.as_ref(), l.all_ages.as_ref()])
            .flatten()
            .map(|bank| bank.values.len())
            .sum()
    }

    /// The banks of level `i` (none past the levels it was drawn for).
    pub(crate) fn level(&mut self, i: usize) -> Option<&mut LevelBanks> {
        self.levels.get_mut(i)
    }
}

#[cfg(test)]
impl NoiseReserve {
    /// `value` as every noise value, with room for `regions[i]` regions at
    /// level i: where each count's noise came from shows in the release.
    pub(crate) fn constant(plan: &ReleasePlan, regions: &[usize], value: i64) -> NoiseReserve {
        let bands = AgeBand::ALL.len();
        let bank = |noise: CountNoise, n: usize| Bank {
            noise,
            values: vec![value; n],
        };
        NoiseReserve {
            levels: plan
                .levels
                .iter()
                .zip(regions)
                .map(|(level, &r)| LevelBanks {
                    risk: bank(level.risk, r * bands * 3),
                    symptoms: level.symptoms.map(|n| bank(n, r * bands * 10)),
                    all_ages: level.all_ages.map(|n| bank(n, r * 3)),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::DiscreteGaussian;

    fn gaussian(scale: f64) -> CountNoise {
        CountNoise::Gaussian(DiscreteGaussian {
            scale,
            sensitivity: 1.0,
            rho: 1.0,
        })
    }

    #[test]
    fn a_bank_hands_out_each_value_once_then_draws_the_rest() {
        let noise = gaussian(1e-9);
        // Values that no draw would give, to see where each count's came from.
        let mut bank = Bank {
            noise,
            values: vec![1000, 2000, 3000],
        };
        let first = bank.noised(&noise, &[1, 2]).unwrap();
        // The bank's last two values, once each.
        assert_eq!(first, vec![2001, 3002]);
        assert_eq!(bank.values, vec![1000]);
        // One value left; the other two counts get fresh draws (σ ≈ 0).
        let second = bank.noised(&noise, &[5, 6, 7]).unwrap();
        assert_eq!(second, vec![1005, 6, 7]);
        assert!(bank.values.is_empty());
        assert_eq!(bank.noised(&noise, &[4]).unwrap(), vec![4]);
    }

    #[test]
    fn a_bank_for_another_mechanism_is_refused() {
        let mut bank = Bank::draw(gaussian(2.0), 10).unwrap();
        assert!(bank.noised(&gaussian(3.0), &[1, 2]).is_err());
        assert_eq!(bank.values.len(), 10, "nothing was handed out");
    }

    #[test]
    fn reserved_noise_is_the_mechanism_s_noise() {
        // Mean 0 and the mechanism's variance, as drawn at release time.
        let noise = gaussian(4.0);
        let mut bank = Bank::draw(noise, 200_000).unwrap();
        let drawn = bank.noised(&noise, &vec![0; 200_000]).unwrap();
        let n = drawn.len() as f64;
        let mean = drawn.iter().sum::<i64>() as f64 / n;
        let var = drawn
            .iter()
            .map(|v| (*v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let want = noise.std_dev().powi(2);
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!(
            (var / want - 1.0).abs() < 0.02,
            "variance {var}, want {want}"
        );
    }

    #[test]
    fn two_reserves_share_no_draws() {
        let noise = gaussian(50.0);
        let a = Bank::draw(noise, 5_000).unwrap().values;
        let b = Bank::draw(noise, 5_000).unwrap().values;
        // Independent draws of σ = 50: equal in about 1 place in 180.
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(same < 100, "{same} of 5,000 equal");
    }
}
