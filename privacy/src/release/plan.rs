//! [`ReleasePlan`]: every mechanism of one release, calibrated from the
//! budget split and the contribution bounds, and what the release costs.
//!
//! ```
//! use hushmap_privacy::release::{Mechanism, PlanSpec, ReleasePlan};
//! use hushmap_schema::release::Estimates;
//! use hushmap_privacy::sensitivity::ContributionBounds;
//!
//! let spec = PlanSpec {
//!     mechanism: Mechanism::Laplace,
//!     epsilon_per_window: 1.0,
//!     delta: 1e-8,
//!     risk_share: 0.5,
//!     all_ages_share: 0.0,
//!     selection_share: 0.1,
//!     selection_delta: 1e-8,
//!     levels: vec![7, 6, 5],
//!     bounds: ContributionBounds::new(1),
//!     public_regions: None,
//!     max_ci_half_width: 0.15,
//!     level_weights: Vec::new(),
//!     estimates: Estimates::Consistent,
//!     provisional: None,
//! };
//! let plan = ReleasePlan::calibrate(&spec).unwrap();
//! assert_eq!(plan.levels.len(), 3);
//! // Three statistics (selection, risk counts, symptom counts) per level,
//! // composing to the window's ε.
//! assert_eq!(plan.cost.statistics.len(), 9);
//! assert!((plan.cost.epsilon - 1.0).abs() < 1e-9);
//! ```

use super::CellCounts;
use super::continual::SubWindowTree;
use crate::ReleaseCost;
use crate::conversion::zcdp_rho_for;
use crate::noise::{CountNoise, DiscreteGaussian, DiscreteLaplace, NoiseError, ThresholdSelector};
use crate::sensitivity::ContributionBounds;
use hushmap_schema::release::Estimates;
use hushmap_schema::{RegionCell, StatisticCost};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// The noise mechanism of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// Discrete Gaussian under zCDP; ε is stated at the conversion δ.
    Gaussian,
    /// Discrete Laplace under pure ε-DP (δ = 0).
    Laplace,
}

/// What a plan is calibrated from: the deployment's budget split, the
/// levels it releases and the contribution bounds the engine enforces.
/// (The aggregator's configuration fills it in; its defaults and their
/// reasons live there.)
#[derive(Debug, Clone)]
pub struct PlanSpec {
    pub mechanism: Mechanism,
    /// ε spent by one window's release; for the Gaussian mechanism, at
    /// `delta`.
    pub epsilon_per_window: f64,
    /// δ at which the zCDP loss is converted to ε (Gaussian only).
    pub delta: f64,
    /// Share of each level's counting budget given to the risk-level
    /// counts; the rest goes to the symptom counts (none at 1: symptom
    /// counts are then not released).
    pub risk_share: f64,
    /// Share of the risk-level counts' budget given to measuring each
    /// region's all-ages counts on their own (0: not measured, the
    /// all-ages view is the sum of the bands). Needs consistent estimates,
    /// which fold it into the bands.
    pub all_ages_share: f64,
    /// Share of the window's budget spent choosing regions when there is
    /// no public set.
    pub selection_share: f64,
    /// δ of the threshold mechanism, all levels together.
    pub selection_delta: f64,
    /// H3 resolutions released, the release resolution first.
    pub levels: Vec<u8>,
    pub bounds: ContributionBounds,
    /// The public region set at the release resolution, or `None` to
    /// choose regions from the data by threshold.
    pub public_regions: Option<BTreeSet<RegionCell>>,
    /// Cells with a wider 95% interval of the high share are suppressed.
    pub max_ci_half_width: f64,
    /// Each level's share of the budget, in `levels` order, as relative
    /// weights (`[2, 1, 1]`: the release resolution gets half); empty for
    /// an even split. The selection δ is split evenly regardless.
    pub level_weights: Vec<f64>,
    /// Whether the released counts are made consistent across levels
    /// ([`consistency`](super::consistency)) or published as measured.
    pub estimates: Estimates,
    /// Provisional counts within each window (continual release), taking
    /// a share of the window's budget; `None` for final releases only.
    pub provisional: Option<ProvisionalSpec>,
}

/// Provisional counts within each window ([`continual`](super::continual)):
/// a share of the window's budget, the clock's sub-windows, one level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProvisionalSpec {
    /// Share of the window's budget (ρ, or ε for Laplace) spent on the
    /// provisional series, in (0, 1); the final release gets the rest.
    pub share: f64,
    /// Sub-windows of a window, by the clock.
    pub sub_windows: u32,
    /// H3 resolution of the provisional counts (one of `levels`).
    pub level: u8,
}

impl PlanSpec {
    /// The aggregator's default split (risk share ½, selection share 0.1,
    /// δ 1e-8 each, one record per contributor, even levels, regions by
    /// threshold) at ε = `epsilon` over `levels`, for the crate's tests.
    #[cfg(test)]
    pub(crate) fn for_tests(mechanism: Mechanism, epsilon: f64, levels: Vec<u8>) -> PlanSpec {
        PlanSpec {
            mechanism,
            epsilon_per_window: epsilon,
            delta: 1e-8,
            risk_share: 0.5,
            all_ages_share: 0.0,
            selection_share: 0.1,
            selection_delta: 1e-8,
            levels,
            bounds: ContributionBounds::new(1),
            public_regions: None,
            max_ci_half_width: 0.15,
            level_weights: Vec::new(),
            estimates: Estimates::Consistent,
            provisional: None,
        }
    }

    /// Each level's fraction of the budget (summing to 1), checked.
    fn level_fractions(&self) -> Result<Vec<f64>, NoiseError> {
        let n = self.levels.len();
        if n == 0 {
            return Err(NoiseError::Parameter("a release needs at least one level"));
        }
        if self.level_weights.is_empty() {
            return Ok(vec![1.0 / n as f64; n]);
        }
        if self.level_weights.len() != n
            || !self.level_weights.iter().all(|w| w.is_finite() && *w > 0.0)
        {
            return Err(NoiseError::Parameter(
                "level weights: one positive weight per released level",
            ));
        }
        let sum: f64 = self.level_weights.iter().sum();
        Ok(self.level_weights.iter().map(|w| w / sum).collect())
    }

    /// Checks the statistic shares: risk in (0, 1], all ages in [0, 1)
    /// and only with consistent estimates.
    fn check_shares(&self) -> Result<(), NoiseError> {
        if !(self.risk_share > 0.0 && self.risk_share <= 1.0) {
            return Err(NoiseError::Parameter("risk share: in (0, 1]"));
        }
        if !(self.all_ages_share >= 0.0 && self.all_ages_share < 1.0) {
            return Err(NoiseError::Parameter("all-ages share: in [0, 1)"));
        }
        if self.all_ages_share > 0.0 && self.estimates != Estimates::Consistent {
            return Err(NoiseError::Parameter(
                "an all-ages measurement needs consistent estimates to be published",
            ));
        }
        Ok(())
    }
}

/// How a release decides which regions it contains.
#[derive(Debug, Clone)]
pub enum RegionSelection {
    /// A public, data-independent set: all of it, always, zeros included.
    /// Costs nothing; records outside it are not counted.
    Public(Arc<BTreeSet<RegionCell>>),
    /// Regions whose noisy total reaches a threshold (OpenDP), so that a
    /// region only a handful of people reported from is not revealed.
    Threshold(ThresholdSelector),
}

impl RegionSelection {
    /// The regions released for these counts (`cells` at this level).
    pub(crate) fn regions<'a>(
        &'a self,
        cells: &[CellCounts],
    ) -> Result<Cow<'a, BTreeSet<RegionCell>>, NoiseError> {
        match self {
            // Borrowed: a public set may hold tens of thousands of cells.
            RegionSelection::Public(set) => Ok(Cow::Borrowed(set.as_ref())),
            RegionSelection::Threshold(selector) => {
                let mut totals: HashMap<u64, i64> = HashMap::new();
                for c in cells {
                    *totals.entry(c.region.raw()).or_default() += c.risk.iter().sum::<i64>();
                }
                Ok(Cow::Owned(
                    selector
                        .select(totals)?
                        .into_iter()
                        .filter_map(|raw| RegionCell::from_raw(raw).ok())
                        .collect(),
                ))
            }
        }
    }
}

impl ProvisionalPlan {
    /// The series of `provisional` spending `budget` (ρ or ε).
    fn calibrate(
        spec: &PlanSpec,
        provisional: &ProvisionalSpec,
        budget: f64,
    ) -> Result<ProvisionalPlan, NoiseError> {
        if !(provisional.share > 0.0 && provisional.share < 1.0) {
            return Err(NoiseError::Parameter("provisional share: in (0, 1)"));
        }
        if !spec.levels.contains(&provisional.level) {
            return Err(NoiseError::Parameter(
                "provisional counts: the level must be one of the released levels",
            ));
        }
        // Which regions appear must not depend on the data, and a
        // threshold selection every sub-window would cost the selection's
        // budget every time.
        let Some(public) = &spec.public_regions else {
            return Err(NoiseError::Parameter(
                "provisional counts need a public region set (public_regions, public_polygon or public_bbox)",
            ));
        };
        let tree = SubWindowTree::new(provisional.sub_windows)?;
        let node_budget = tree.node_budget(budget);
        // One first record per contributor: one count, in one interval
        // per level of the tree.
        let sensitivity = FIRST_RECORD_SENSITIVITY;
        let node = match spec.mechanism {
            Mechanism::Gaussian => {
                CountNoise::Gaussian(DiscreteGaussian::calibrate(sensitivity, node_budget)?)
            }
            Mechanism::Laplace => {
                CountNoise::Laplace(DiscreteLaplace::calibrate(sensitivity, node_budget)?)
            }
        };
        Ok(ProvisionalPlan {
            tree,
            level: provisional.level,
            regions: Arc::new(
                public
                    .iter()
                    .filter_map(|c| c.parent(provisional.level))
                    .collect(),
            ),
            node,
        })
    }
}

/// The L1 and L2 sensitivity of one interval's provisional counts: a
/// contributor's first record in the window is one count of one region,
/// whatever `max_contributions_per_window` allows the final release.
pub const FIRST_RECORD_SENSITIVITY: f64 = 1.0;

/// Calibrated mechanisms for one hierarchy level of a release.
#[derive(Debug, Clone)]
pub struct LevelPlan {
    /// H3 resolution of the level's regions.
    pub level: u8,
    pub selection: RegionSelection,
    /// The risk-level counts of each region and age band.
    pub risk: CountNoise,
    /// The risk-level counts of each region, all ages together, when they
    /// are measured on their own.
    pub all_ages: Option<CountNoise>,
    /// The symptom counts of each region and age band, unless switched
    /// off.
    pub symptoms: Option<CountNoise>,
}

impl LevelPlan {
    /// The noise s.d. of each symptom count, 0 when none are released.
    pub fn symptom_sd(&self) -> f64 {
        self.symptoms.as_ref().map_or(0.0, CountNoise::std_dev)
    }
}

/// Calibrated mechanisms for one release: the release resolution first,
/// then each coarser level.
#[derive(Debug, Clone)]
pub struct ReleasePlan {
    /// Name in the release metadata (`hushmap.mechanism`).
    pub mechanism: &'static str,
    /// Finest first; every level is computed from the same bounded counts.
    pub levels: Vec<LevelPlan>,
    /// What one release costs each contributor: every statistic of every
    /// level, and their composition.
    pub cost: ReleaseCost,
    /// Cells with a wider 95% interval of the high share are suppressed.
    pub max_ci_half_width: f64,
    /// What the released counts are (post-processing only).
    pub estimates: Estimates,
    /// The provisional series within each window, when there is one.
    pub provisional: Option<ProvisionalPlan>,
}

/// The calibrated provisional series of a plan: every interval of
/// sub-windows is noised with `node`, whose budget is the series' share
/// over the tree's levels ([`SubWindowTree::node_budget`]).
#[derive(Debug, Clone)]
pub struct ProvisionalPlan {
    pub tree: SubWindowTree,
    /// H3 resolution of the provisional regions.
    pub level: u8,
    /// The public region set at `level`: every one of them, zeros included.
    pub regions: Arc<BTreeSet<RegionCell>>,
    /// The noise on each interval's counts (sensitivity one count: only a
    /// contributor's first record counts).
    pub node: CountNoise,
}

impl ReleasePlan {
    /// Calibrates every mechanism from the budget split and the
    /// sensitivities ([`ContributionBounds`]).
    ///
    /// The window's budget (ρ for the Gaussian mechanism, ε for Laplace) is
    /// split across the levels by `level_weights` (evenly by default);
    /// within a level, `selection_share` goes to choosing regions when
    /// there is no public set, and the rest is split by `risk_share`
    /// between the risk-level counts and the symptom counts. Every statistic's cost is OpenDP's privacy map at
    /// the bounded sensitivity; they add up (ρ and pure ε both compose
    /// additively) to the release's cost.
    pub fn calibrate(spec: &PlanSpec) -> Result<ReleasePlan, NoiseError> {
        let bounds = spec.bounds;
        let n_levels = spec.levels.len() as f64;
        let fractions = spec.level_fractions()?;
        spec.check_shares()?;
        let window_total = match spec.mechanism {
            Mechanism::Gaussian => zcdp_rho_for(spec.epsilon_per_window, spec.delta)?,
            Mechanism::Laplace => spec.epsilon_per_window,
        };
        // The provisional series' share comes off the top; the final
        // release is calibrated from the rest, so the two compose to the
        // window's budget.
        let provisional_share = spec.provisional.map_or(0.0, |p| p.share);
        let total = window_total * (1.0 - provisional_share);
        // Of the whole: the selection's share (without a public set), then
        // each level its fraction, then risk and symptoms by `risk_share`.
        let counts_share = match spec.public_regions {
            Some(_) => 1.0,
            None => 1.0 - spec.selection_share,
        };
        let mut level_plans = Vec::with_capacity(spec.levels.len());
        let mut costs = Vec::new();
        let mut cost_of = |statistic: &str, level: u8, cost: f64, delta: f64| {
            costs.push(StatisticCost {
                statistic: statistic.into(),
                level,
                cost,
                delta,
            })
        };
        for (&level, fraction) in spec.levels.iter().zip(&fractions) {
            let selection_budget = total * spec.selection_share * fraction;
            let counts_budget = total * counts_share * fraction;
            let risk_budget = counts_budget * spec.risk_share;
            let symptom_budget = counts_budget - risk_budget;
            let all_ages_budget = risk_budget * spec.all_ages_share;
            let band_budget = risk_budget - all_ages_budget;
            let selection = match &spec.public_regions {
                // Parents of public cells are public too (and derived from
                // nothing but the configuration).
                Some(set) => RegionSelection::Public(Arc::new(
                    set.iter().filter_map(|c| c.parent(level)).collect(),
                )),
                None => {
                    let selector = match spec.mechanism {
                        Mechanism::Gaussian => ThresholdSelector::gaussian,
                        Mechanism::Laplace => ThresholdSelector::laplace,
                    }(
                        bounds.region_totals(),
                        selection_budget,
                        spec.selection_delta / n_levels,
                    )?;
                    cost_of("selection", level, selector.cost, selector.delta);
                    RegionSelection::Threshold(selector)
                }
            };
            // Each statistic is calibrated at its own sensitivity and share;
            // one with no share is not measured and costs nothing.
            let mut count_noise = |statistic: &str, l1: f64, l2: f64, budget: f64| {
                if budget <= 0.0 {
                    return Ok::<_, NoiseError>(None);
                }
                Ok(Some(match spec.mechanism {
                    Mechanism::Gaussian => {
                        let noise = DiscreteGaussian::calibrate(l2, budget)?;
                        cost_of(statistic, level, noise.rho, 0.0);
                        CountNoise::Gaussian(noise)
                    }
                    Mechanism::Laplace => {
                        let noise = DiscreteLaplace::calibrate(l1, budget)?;
                        cost_of(statistic, level, noise.epsilon, 0.0);
                        CountNoise::Laplace(noise)
                    }
                }))
            };
            let (risk_l1, risk_l2) = (bounds.risk_counts_l1(), bounds.risk_counts_l2());
            let risk = count_noise("risk_counts", risk_l1, risk_l2, band_budget)?
                .expect("the bands always have a share");
            let all_ages = count_noise("all_ages_risk_counts", risk_l1, risk_l2, all_ages_budget)?;
            let symptoms = count_noise(
                "symptom_counts",
                bounds.symptom_counts_l1(),
                bounds.symptom_counts_l2(),
                symptom_budget,
            )?;
            level_plans.push(LevelPlan {
                level,
                selection,
                risk,
                all_ages,
                symptoms,
            });
        }
        let provisional = match &spec.provisional {
            None => None,
            Some(p) => {
                let plan = ProvisionalPlan::calibrate(spec, p, window_total * p.share)?;
                // Each contributor moves one count of one interval per
                // level of the tree: the series costs `levels` nodes.
                let node_cost = match plan.node {
                    CountNoise::Gaussian(n) => n.rho,
                    CountNoise::Laplace(n) => n.epsilon,
                };
                cost_of(
                    "provisional_risk_counts",
                    p.level,
                    node_cost * f64::from(plan.tree.levels()),
                    0.0,
                );
                Some(plan)
            }
        };
        let (mechanism, cost) = match spec.mechanism {
            Mechanism::Gaussian => (
                DiscreteGaussian::NAME,
                ReleaseCost::concentrated(costs, spec.delta)?,
            ),
            Mechanism::Laplace => {
                let epsilon: f64 = costs.iter().map(|c| c.cost).sum();
                let delta: f64 = costs.iter().map(|c| c.delta).sum();
                (
                    DiscreteLaplace::NAME,
                    ReleaseCost::pure(epsilon, delta, costs),
                )
            }
        };
        Ok(ReleasePlan {
            mechanism,
            levels: level_plans,
            cost,
            max_ci_half_width: spec.max_ci_half_width,
            estimates: spec.estimates,
            provisional,
        })
    }

    /// The release resolution (the finest level).
    pub fn finest(&self) -> &LevelPlan {
        &self.levels[0]
    }

    /// The plan of one shard's part of a partitioned release: each public
    /// region set cut down to the cells whose `coarsest`-level ancestor is
    /// in `shard` of `shards` ([`RegionCell::shard`]); everything else
    /// (noise, costs) unchanged. Regions chosen by threshold need no cut:
    /// a shard only ever counts its own cells.
    pub fn for_shard(&self, coarsest: u8, shard: u32, shards: u32) -> ReleasePlan {
        let mut plan = self.clone();
        for level in &mut plan.levels {
            if let RegionSelection::Public(set) = &level.selection {
                let mine = set
                    .iter()
                    .copied()
                    .filter(|cell| cell.shard(coarsest, shards) == Some(shard))
                    .collect();
                level.selection = RegionSelection::Public(Arc::new(mine));
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mechanism: Mechanism, level_weights: Vec<f64>) -> PlanSpec {
        PlanSpec {
            level_weights,
            ..PlanSpec::for_tests(mechanism, 1.0, vec![7, 6, 5])
        }
    }

    /// Each level's spend, summed over its statistics.
    fn per_level(plan: &ReleasePlan) -> Vec<f64> {
        [7u8, 6, 5]
            .iter()
            .map(|l| {
                plan.cost
                    .statistics
                    .iter()
                    .filter(|c| c.level == *l)
                    .map(|c| c.cost)
                    .sum()
            })
            .collect()
    }

    #[test]
    fn level_weights_split_the_budget_and_the_total_stays() {
        for mechanism in [Mechanism::Gaussian, Mechanism::Laplace] {
            let even = ReleasePlan::calibrate(&spec(mechanism, Vec::new())).unwrap();
            let weighted = ReleasePlan::calibrate(&spec(mechanism, vec![2.0, 1.0, 1.0])).unwrap();
            let (e, w) = (per_level(&even), per_level(&weighted));
            let total: f64 = e.iter().sum();
            // OpenDP's maps certify a hair under the budget asked for.
            assert!((w.iter().sum::<f64>() - total).abs() < 1e-6 * total);
            for (got, want) in w.iter().zip([0.5, 0.25, 0.25]) {
                assert!((got / total - want).abs() < 1e-6, "{mechanism:?}: {w:?}");
            }
            // More budget, less noise, at the release resolution only.
            assert!(weighted.levels[0].risk.std_dev() < even.levels[0].risk.std_dev());
            assert!(weighted.levels[1].risk.std_dev() > even.levels[1].risk.std_dev());
            assert!((weighted.cost.epsilon - even.cost.epsilon).abs() < 1e-6);
        }
    }

    #[test]
    fn the_provisional_series_takes_its_share_and_the_window_still_costs_its_budget() {
        // The release resolution's cells under one level-5 cell.
        let public: BTreeSet<RegionCell> = "85608b0bfffffff"
            .parse::<RegionCell>()
            .unwrap()
            .children(7)
            .unwrap()
            .into_iter()
            .collect();
        for mechanism in [Mechanism::Gaussian, Mechanism::Laplace] {
            let base = PlanSpec {
                public_regions: Some(public.clone()),
                ..spec(mechanism, Vec::new())
            };
            let without = ReleasePlan::calibrate(&base).unwrap();
            let with = ReleasePlan::calibrate(&PlanSpec {
                provisional: Some(ProvisionalSpec {
                    share: 0.25,
                    sub_windows: 24,
                    level: 5,
                }),
                ..base.clone()
            })
            .unwrap();
            assert!((with.cost.epsilon - without.cost.epsilon).abs() < 1e-6);
            let series = with.provisional.as_ref().unwrap();
            assert_eq!(series.tree.levels(), 6);
            assert_eq!(series.regions.len(), 1, "one level-5 cell");
            let provisional: Vec<&StatisticCost> = with
                .cost
                .statistics
                .iter()
                .filter(|c| c.statistic == "provisional_risk_counts")
                .collect();
            assert_eq!(provisional.len(), 1);
            let total: f64 = with.cost.statistics.iter().map(|c| c.cost).sum();
            assert!(
                (provisional[0].cost / total - 0.25).abs() < 1e-6,
                "{mechanism:?}"
            );
            // The final release keeps 3/4 of the budget: under zCDP its
            // noise grows by √(4/3), under pure ε by 4/3.
            let ratio = with.finest().risk.std_dev() / without.finest().risk.std_dev();
            let want = match mechanism {
                Mechanism::Gaussian => (4.0f64 / 3.0).sqrt(),
                Mechanism::Laplace => 4.0 / 3.0,
            };
            assert!((ratio - want).abs() < 0.02, "{mechanism:?}: {ratio}");
        }
        // Without a public region set, or at a level not released: refused.
        let provisional = Some(ProvisionalSpec {
            share: 0.25,
            sub_windows: 24,
            level: 5,
        });
        assert!(
            ReleasePlan::calibrate(&PlanSpec {
                provisional,
                ..spec(Mechanism::Gaussian, Vec::new())
            })
            .is_err()
        );
        assert!(
            ReleasePlan::calibrate(&PlanSpec {
                provisional: provisional.map(|p| ProvisionalSpec { level: 4, ..p }),
                public_regions: Some(public.clone()),
                ..spec(Mechanism::Gaussian, Vec::new())
            })
            .is_err()
        );
    }

    #[test]
    fn level_weights_are_one_positive_number_per_level() {
        for bad in [
            vec![1.0, 1.0],
            vec![1.0, 0.0, 1.0],
            vec![1.0, f64::NAN, 1.0],
        ] {
            assert!(matches!(
                ReleasePlan::calibrate(&spec(Mechanism::Gaussian, bad)),
                Err(NoiseError::Parameter(_))
            ));
        }
    }
}
