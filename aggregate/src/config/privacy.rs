//! The `privacy` section: the budget, its split, the contribution bound
//! and the public region set, checked; and what the release plan
//! ([`ReleasePlan`]) and the ledger's [`Budget`] are built from.

use super::{AggregateConfig, ConfigError};
use hushmap_privacy::release::continual::MAX_SUB_WINDOWS;
use hushmap_privacy::release::{PlanSpec, ProvisionalSpec, ReleasePlan};
use hushmap_privacy::sensitivity::ContributionBounds;
use hushmap_privacy::{Budget, BudgetLimit};
use hushmap_schema::release::Estimates;
use hushmap_schema::{RegionCell, RegionError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The noise mechanism of a deployment (`privacy.mechanism`).
pub use hushmap_privacy::release::Mechanism;

/// Privacy parameters. Defaults follow published deployments: Google's
/// COVID-19 symptom trends spent ε ≈ 1.68 per user-day and its vaccination
/// search insights (ε, δ) = (2.19, 10⁻⁵) per user-day; Hushmap spends ε = 1
/// per daily window (at δ = 10⁻⁸ under the Gaussian mechanism, well below
/// one over any country's population) and refuses more than 1 per rolling
/// day or 10 per rolling 30 days.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    pub mechanism: Mechanism,
    /// ε spent by one window's release (risk counts + symptom counts); for
    /// the Gaussian mechanism, at `delta`.
    pub epsilon_per_window: f64,
    /// δ at which zCDP losses (per window and over every budgeted span) are
    /// converted to ε. Ignored by the Laplace mechanism.
    pub delta: f64,
    /// Share of the window's budget (ρ or ε) given to the risk-level
    /// counts; the rest goes to the symptom counts. 1 switches symptom
    /// counts off (their columns are then 0 and no `symptom_counts`
    /// statistic is in the release's costs).
    pub risk_share: f64,
    /// Share of the risk-level counts' budget spent measuring each
    /// region's all-ages counts on their own (0: the all-ages view is the
    /// sum of the six bands, with √6 times a band's noise). Consistent
    /// estimates fold the measurement into the bands, which then add up
    /// to it. Needs `estimates = "consistent"`. The default 0.3 was chosen
    /// with the utility benchmark (docs/BENCHMARKS.md): a third less error
    /// on every all-ages count and share for 6–12% more on a band's count.
    pub all_ages_share: f64,
    /// Records per contributor per window that count (latest kept).
    pub max_contributions_per_window: u32,
    /// Ledger limit over any rolling day.
    pub max_epsilon_per_day: f64,
    /// Ledger limit over any rolling `budget_horizon_days`.
    pub max_epsilon_per_horizon: f64,
    /// Ledger limit on δ over any budgeted span (the conversion's `delta`
    /// once plus every release's threshold δ).
    pub max_delta_per_horizon: f64,
    pub budget_horizon_days: u32,
    /// Suppress cells whose 95% interval of the high-risk share is wider
    /// than ± this.
    pub max_ci_half_width: f64,
    /// A public, data-independent set of H3 cells (at the release
    /// resolution or coarser; coarser ones stand for all their children).
    /// When set, exactly these regions are released, every age band, zeros
    /// included, and records elsewhere are dropped. When empty, regions are
    /// chosen from the data by OpenDP's threshold mechanism.
    pub public_regions: Vec<String>,
    /// A public area as a polygon of `[lat, lon]` vertices: every cell at
    /// the release resolution touching it joins the public region set.
    pub public_polygon: Vec<[f64; 2]>,
    /// A public area as a box `[south, west, north, east]` in degrees; its
    /// cells join the public region set like the polygon's.
    pub public_bbox: Option<[f64; 4]>,
    /// Share of the window's budget (ρ or ε) spent choosing regions when
    /// there is no public set.
    pub selection_share: f64,
    /// δ of the threshold mechanism (per window, all levels together), on
    /// top of `delta`.
    pub selection_delta: f64,
    /// Coarser H3 levels released besides the release resolution (2: also
    /// r−1 and r−2), from the same bounded counts; the budget is split
    /// evenly across levels. A suppressed cell points to its nearest
    /// unsuppressed ancestor.
    pub parent_levels: u8,
    /// Each released level's share of the budget as relative weights, the
    /// release resolution first (`[2, 1, 1]`: half to the finest level);
    /// empty (the default) splits it evenly. One weight per level
    /// (`parent_levels + 1`), each positive.
    pub level_weights: Vec<f64>,
    /// `consistent` (the default): the counts of a window are made
    /// consistent across levels by weighted least squares over the region
    /// tree, then non-negative integers whose children add up to their
    /// parent, each row with its own standard error; `noisy`: each count
    /// as measured, clamped at zero. Post-processing either way: the same
    /// cost, said in the release metadata (`hushmap.estimates`).
    pub estimates: Estimates,
    /// Share of each window's budget (ρ, or ε for Laplace) spent on
    /// provisional counts published while the window is open (0, the
    /// default: none). They count each contributor once, at their first
    /// record, per region of the public set at the coarsest released level,
    /// all ages; the binary-tree mechanism over the sub-windows makes each
    /// update cost only the tree's depth (docs/PRIVACY.md, "Provisional
    /// numbers"). The final release is calibrated from the rest. Needs a
    /// public region set and the single topology.
    pub provisional_share: f64,
    /// Length of a provisional sub-window: one provisional release per
    /// sub-window, by the clock (default hourly). Must divide
    /// `window_secs`, at most 4,096 sub-windows a window.
    pub provisional_sub_window_secs: u32,
}

/// Most coarser levels a release may carry (each one takes a share of the
/// budget).
pub const MAX_PARENT_LEVELS: u8 = 4;

/// Most cells a public region set may expand to (a release noises 13
/// counts per cell and age band).
pub const MAX_PUBLIC_CELLS: usize = 50_000;

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            mechanism: Mechanism::Gaussian,
            epsilon_per_window: 1.0,
            delta: 1e-8,
            risk_share: 0.5,
            all_ages_share: 0.3,
            max_contributions_per_window: 1,
            max_epsilon_per_day: 1.0,
            max_epsilon_per_horizon: 10.0,
            max_delta_per_horizon: 1e-6,
            budget_horizon_days: 30,
            max_ci_half_width: 0.15,
            public_regions: Vec::new(),
            public_polygon: Vec::new(),
            public_bbox: None,
            selection_share: 0.1,
            selection_delta: 1e-8,
            parent_levels: 2,
            level_weights: Vec::new(),
            estimates: Estimates::Consistent,
            provisional_share: 0.0,
            provisional_sub_window_secs: 3600,
        }
    }
}

impl PrivacyConfig {
    /// Checks every privacy setting (the public area is checked when it is
    /// expanded, by [`AggregateConfig::public_regions`]).
    pub(super) fn check(&self, region_resolution: u8) -> Result<(), ConfigError> {
        let p = self;
        if p.parent_levels > region_resolution || p.parent_levels > MAX_PARENT_LEVELS {
            return Err(ConfigError::Privacy {
                field: "parent_levels",
                reason: "must be at most 4 and at most region_resolution",
            });
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !p.level_weights.is_empty()
            && (p.level_weights.len() != usize::from(p.parent_levels) + 1
                || !p.level_weights.iter().all(|w| positive(*w)))
        {
            return Err(ConfigError::Privacy {
                field: "level_weights",
                reason: "one positive weight per released level (parent_levels + 1), or none",
            });
        }
        if !positive(p.epsilon_per_window) {
            return Err(ConfigError::Privacy {
                field: "epsilon_per_window",
                reason: "must be positive",
            });
        }
        if !(p.risk_share > 0.0 && p.risk_share <= 1.0) {
            return Err(ConfigError::Privacy {
                field: "risk_share",
                reason: "must be above 0 and at most 1 (1: no symptom counts)",
            });
        }
        if !(p.all_ages_share >= 0.0 && p.all_ages_share < 1.0) {
            return Err(ConfigError::Privacy {
                field: "all_ages_share",
                reason: "must be at least 0 and below 1",
            });
        }
        if p.all_ages_share > 0.0 && p.estimates != Estimates::Consistent {
            return Err(ConfigError::Privacy {
                field: "all_ages_share",
                reason: "an all-ages measurement is only published through consistent estimates",
            });
        }
        if !(p.provisional_share >= 0.0 && p.provisional_share < 1.0) {
            return Err(ConfigError::Privacy {
                field: "provisional_share",
                reason: "must be at least 0 and below 1",
            });
        }
        if p.max_contributions_per_window == 0 {
            return Err(ConfigError::Privacy {
                field: "max_contributions_per_window",
                reason: "must be at least 1",
            });
        }
        if !(p.delta > 0.0 && p.delta < 1e-3) {
            return Err(ConfigError::Privacy {
                field: "delta",
                reason: "must be in (0, 0.001)",
            });
        }
        if !positive(p.max_epsilon_per_day) {
            return Err(ConfigError::Privacy {
                field: "max_epsilon_per_day",
                reason: "must be positive",
            });
        }
        if !positive(p.max_epsilon_per_horizon) {
            return Err(ConfigError::Privacy {
                field: "max_epsilon_per_horizon",
                reason: "must be positive",
            });
        }
        if !(p.selection_share > 0.0 && p.selection_share < 1.0) {
            return Err(ConfigError::Privacy {
                field: "selection_share",
                reason: "must be strictly between 0 and 1",
            });
        }
        if !(p.selection_delta > 0.0 && p.selection_delta < 1e-3) {
            return Err(ConfigError::Privacy {
                field: "selection_delta",
                reason: "must be in (0, 0.001)",
            });
        }
        if !(p.max_delta_per_horizon > p.delta && p.max_delta_per_horizon < 1e-3) {
            return Err(ConfigError::Privacy {
                field: "max_delta_per_horizon",
                reason: "must be above delta and below 0.001",
            });
        }
        if p.budget_horizon_days == 0 {
            return Err(ConfigError::Privacy {
                field: "budget_horizon_days",
                reason: "must be at least 1",
            });
        }
        if !positive(p.max_ci_half_width) {
            return Err(ConfigError::Privacy {
                field: "max_ci_half_width",
                reason: "must be positive",
            });
        }
        Ok(())
    }
}

impl AggregateConfig {
    /// The coarsest released resolution: partitioned stage 2 shards by it,
    /// so each shard holds whole trees of the hierarchy.
    pub fn coarsest_level(&self) -> u8 {
        self.region_resolution
            .saturating_sub(self.privacy.parent_levels)
    }

    pub fn bounds(&self) -> ContributionBounds {
        ContributionBounds::new(self.privacy.max_contributions_per_window)
    }

    pub fn budget(&self) -> Budget {
        const DAY_MS: i64 = 24 * 3600 * 1000;
        let p = &self.privacy;
        Budget {
            limits: vec![
                BudgetLimit {
                    horizon_ms: DAY_MS,
                    max_epsilon: p.max_epsilon_per_day,
                },
                BudgetLimit {
                    horizon_ms: DAY_MS * i64::from(p.budget_horizon_days),
                    max_epsilon: p.max_epsilon_per_horizon,
                },
            ],
            delta: p.delta,
            max_delta: p.max_delta_per_horizon,
        }
    }

    /// The public region set, expanded to the release resolution (`None`
    /// when regions are chosen from the data): the listed cells (coarser
    /// ones stand for their children) and the cells covering the public
    /// polygon and box.
    pub fn public_regions(&self) -> Result<Option<BTreeSet<RegionCell>>, ConfigError> {
        let p = &self.privacy;
        if p.public_regions.is_empty() && p.public_polygon.is_empty() && p.public_bbox.is_none() {
            return Ok(None);
        }
        let invalid = |field, reason| ConfigError::Privacy { field, reason };
        let too_many = || {
            invalid(
                "public_regions",
                "the set expands to more than 50,000 cells",
            )
        };
        let mut set = BTreeSet::new();
        for text in &p.public_regions {
            let cell: RegionCell = text
                .parse()
                .map_err(|_| invalid("public_regions", "each entry must be an H3 cell index"))?;
            let children = cell.children(self.region_resolution).ok_or(invalid(
                "public_regions",
                "a cell is finer than region_resolution",
            ))?;
            set.extend(children);
            if set.len() > MAX_PUBLIC_CELLS {
                return Err(too_many());
            }
        }
        let mut areas: Vec<(&'static str, Vec<(f64, f64)>)> = Vec::new();
        if !p.public_polygon.is_empty() {
            areas.push((
                "public_polygon",
                p.public_polygon
                    .iter()
                    .map(|[lat, lon]| (*lat, *lon))
                    .collect(),
            ));
        }
        if let Some([south, west, north, east]) = p.public_bbox {
            if !(south < north && west < east) {
                return Err(invalid(
                    "public_bbox",
                    "must be [south, west, north, east] with south < north and west < east",
                ));
            }
            areas.push((
                "public_bbox",
                vec![(south, west), (south, east), (north, east), (north, west)],
            ));
        }
        for (field, vertices) in areas {
            let cells = RegionCell::covering(&vertices, self.region_resolution, MAX_PUBLIC_CELLS)
                .map_err(|e| match e {
                RegionError::AreaTooLarge => too_many(),
                _ => invalid(
                    field,
                    "must be at least three valid [lat, lon] vertices of a simple polygon",
                ),
            })?;
            set.extend(cells);
            if set.len() > MAX_PUBLIC_CELLS {
                return Err(too_many());
            }
        }
        Ok(Some(set))
    }

    /// The H3 resolutions released, finest (the release resolution) first.
    pub fn release_levels(&self) -> Vec<u8> {
        (0..=self.privacy.parent_levels)
            .filter_map(|k| self.region_resolution.checked_sub(k))
            .collect()
    }

    /// What the release plan is calibrated from: the budget split, the
    /// levels, the bounds and the public region set of this configuration.
    pub fn plan_spec(&self) -> Result<PlanSpec, ConfigError> {
        let p = &self.privacy;
        Ok(PlanSpec {
            mechanism: p.mechanism,
            epsilon_per_window: p.epsilon_per_window,
            delta: p.delta,
            risk_share: p.risk_share,
            all_ages_share: p.all_ages_share,
            selection_share: p.selection_share,
            selection_delta: p.selection_delta,
            levels: self.release_levels(),
            bounds: self.bounds(),
            public_regions: self.public_regions()?,
            max_ci_half_width: p.max_ci_half_width,
            level_weights: p.level_weights.clone(),
            estimates: p.estimates,
            provisional: self.provisional_spec()?,
        })
    }

    /// The provisional series of this configuration: its share, the
    /// sub-windows a window is cut into, at the coarsest released level.
    fn provisional_spec(&self) -> Result<Option<ProvisionalSpec>, ConfigError> {
        let p = &self.privacy;
        if p.provisional_share == 0.0 {
            return Ok(None);
        }
        let sub = p.provisional_sub_window_secs;
        if sub == 0 || !self.window_secs.is_multiple_of(sub) {
            return Err(ConfigError::Privacy {
                field: "provisional_sub_window_secs",
                reason: "must be positive and divide window_secs",
            });
        }
        let sub_windows = self.window_secs / sub;
        if sub_windows > MAX_SUB_WINDOWS {
            return Err(ConfigError::Privacy {
                field: "provisional_sub_window_secs",
                reason: "a window may have at most 4,096 sub-windows",
            });
        }
        if self.public_regions()?.is_none() {
            return Err(ConfigError::Privacy {
                field: "provisional_share",
                reason: "provisional numbers need a public region set (public_regions, \
                         public_polygon or public_bbox): which regions appear every hour \
                         must not depend on the data",
            });
        }
        Ok(Some(ProvisionalSpec {
            share: p.provisional_share,
            sub_windows,
            level: self.coarsest_level(),
        }))
    }

    /// This configuration without provisional numbers, the final release
    /// spending the whole window's budget (batch mode: a window of history
    /// is never open).
    pub fn without_provisional(&self) -> AggregateConfig {
        let mut config = self.clone();
        config.privacy.provisional_share = 0.0;
        config
    }

    /// The release plan of this configuration
    /// ([`ReleasePlan::calibrate`]); see [`validated_plan`](Self::validated_plan)
    /// for the checked one the services use.
    pub fn release_plan(&self) -> Result<ReleasePlan, ConfigError> {
        Ok(ReleasePlan::calibrate(&self.plan_spec()?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hushmap_privacy::release::RegionSelection;
    use hushmap_schema::region::RegionResolution;
    use hushmap_schema::window::WindowLengthError;

    #[test]
    fn gaussian_is_less_noisy_for_the_symptom_vector() {
        // The symptom vector's L2 sensitivity is √10 against an L1 of 10:
        // at the same ε, Gaussian noise on symptoms is much smaller.
        let mut c = AggregateConfig::default();
        let gauss = c.release_plan().unwrap().finest().symptom_sd();
        c.privacy.mechanism = Mechanism::Laplace;
        let laplace = c.release_plan().unwrap().finest().symptom_sd();
        assert!(gauss < laplace, "gaussian {gauss} vs laplace {laplace}");
    }

    #[test]
    fn refuses_bad_privacy_settings() {
        let mut c = AggregateConfig::default();
        c.privacy.epsilon_per_window = 0.0;
        assert!(c.validate().is_err());
        let mut c = AggregateConfig::default();
        c.privacy.risk_share = 1.1;
        assert!(c.validate().is_err());
        c.privacy.risk_share = 1.0;
        c.validate().unwrap();
        c.privacy.all_ages_share = 1.0;
        assert!(c.validate().is_err());
        c.privacy.all_ages_share = 0.5;
        c.validate().unwrap();
        c.privacy.estimates = Estimates::Noisy;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Privacy {
                field: "all_ages_share",
                ..
            })
        ));
        let mut c = AggregateConfig::default();
        c.privacy.level_weights = vec![2.0, 1.0];
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Privacy {
                field: "level_weights",
                ..
            })
        ));
        c.privacy.level_weights = vec![2.0, 1.0, 1.0];
        c.validate().unwrap();
        let c = AggregateConfig {
            window_secs: 10,
            ..AggregateConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Window(WindowLengthError::TooShort { .. }))
        ));
        let c = AggregateConfig {
            window_secs: 10,
            dev_mode: true,
            ..AggregateConfig::default()
        };
        assert!(c.validate().is_ok());
    }

    #[test]
    fn a_public_box_or_polygon_becomes_the_cells_covering_it() {
        let mut c = AggregateConfig::default();
        // About 0.4° × 0.6° around Berlin.
        c.privacy.public_bbox = Some([52.3, 13.1, 52.7, 13.7]);
        let from_box = c.public_regions().unwrap().unwrap();
        let res = RegionResolution::new(5).unwrap();
        // Every point of the box, corners included, lies in a public cell.
        for lat in [52.3, 52.45, 52.7] {
            for lon in [13.1, 13.4, 13.7] {
                let cell = RegionCell::from_coordinate(lat, lon, res).unwrap();
                assert!(from_box.contains(&cell), "({lat}, {lon})");
            }
        }
        assert!(from_box.len() < 40, "{} cells", from_box.len());
        let outside = RegionCell::from_coordinate(48.1, 11.6, res).unwrap();
        assert!(!from_box.contains(&outside));
        // The same area as a polygon gives the same cells.
        c.privacy.public_bbox = None;
        c.privacy.public_polygon = vec![[52.3, 13.1], [52.3, 13.7], [52.7, 13.7], [52.7, 13.1]];
        assert_eq!(c.public_regions().unwrap().unwrap(), from_box);
        c.validate().unwrap();
        // Parents of the area's cells are the parent levels' public set.
        let plan = c.release_plan().unwrap();
        assert!(matches!(
            plan.levels[2].selection,
            RegionSelection::Public(_)
        ));

        // Bad areas are refused with the field named.
        c.privacy.public_polygon = vec![[52.3, 13.1], [52.3, 13.7]];
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Privacy {
                field: "public_polygon",
                ..
            })
        ));
        c.privacy.public_polygon.clear();
        c.privacy.public_bbox = Some([52.7, 13.1, 52.3, 13.7]);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Privacy {
                field: "public_bbox",
                ..
            })
        ));
        // A continent at resolution 5 is far over the cell limit.
        c.privacy.public_bbox = Some([35.0, -10.0, 70.0, 40.0]);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Privacy {
                field: "public_regions",
                ..
            })
        ));
    }
}
