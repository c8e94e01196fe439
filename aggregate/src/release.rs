//! From true counts to a published release: noise, then post-processing.
//!
//! Post-processing (free under DP): counts are clamped to ≥ 0, `n_total` is
//! the sum of the published risk-level counts, the high-risk share and its
//! 95% interval are computed from published numbers
//! ([`ShareInterval`](hushmap_schema::ShareInterval)), and cells whose interval is wider than the
//! configured half-width are marked suppressed.

use crate::engine::CellCounts;
use crate::ledger::PrivacyCost;
use crate::noise::{CountNoise, NoiseError, ThresholdSelector};
use hushmap_schema::release::CellLabel;
use hushmap_schema::{AgeBand, RegionCell, Release, ReleaseMeta, ReleaseRow, Window};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

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

/// Calibrated mechanisms for one release.
#[derive(Debug, Clone)]
pub struct ReleasePlan {
    /// Name in the release metadata (`hushmap.mechanism`).
    pub mechanism: &'static str,
    pub selection: RegionSelection,
    pub risk: CountNoise,
    pub symptoms: CountNoise,
    /// What one release costs each contributor (both statistics composed).
    pub cost: PrivacyCost,
    /// Cells with a wider 95% interval of the high share are suppressed.
    pub max_ci_half_width: f64,
}

/// The regions `plan` releases for these counts.
fn released_regions<'a>(
    cells: &[CellCounts],
    plan: &'a ReleasePlan,
) -> Result<Cow<'a, BTreeSet<RegionCell>>, NoiseError> {
    match &plan.selection {
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

/// Noises and post-processes `cells` into the release of `window`.
///
/// The regions are chosen by the plan's [`RegionSelection`]; each is
/// released with all six age bands (zeros included), so the presence of an
/// age band is not itself a signal.
pub fn noisy_release(
    window: Window,
    level: u8,
    cells: &[CellCounts],
    plan: &ReleasePlan,
    ledger_entry: &str,
) -> Result<Release, NoiseError> {
    let regions = released_regions(cells, plan)?;
    // Indexed once: the grid (regions × bands) and the counted cells can
    // both run to tens of thousands.
    let counted: HashMap<(RegionCell, AgeBand), &CellCounts> =
        cells.iter().map(|c| ((c.region, c.age_band), c)).collect();
    let mut grid = Vec::with_capacity(regions.len() * AgeBand::ALL.len());
    for region in regions.iter() {
        for band in AgeBand::ALL {
            let found = counted.get(&(*region, band)).copied();
            grid.push(found.cloned().unwrap_or(CellCounts {
                region: *region,
                age_band: band,
                risk: [0; 3],
                symptoms: [0; 10],
            }));
        }
    }
    let risk_true: Vec<i64> = grid.iter().flat_map(|c| c.risk).collect();
    let sym_true: Vec<i64> = grid.iter().flat_map(|c| c.symptoms).collect();
    let risk_noisy = plan.risk.apply(&risk_true)?;
    let sym_noisy = plan.symptoms.apply(&sym_true)?;
    let sigma = plan.risk.std_dev();

    let rows = grid
        .iter()
        .enumerate()
        .map(|(i, cell)| {
            let label = CellLabel {
                window_start: window.start_ms,
                window_end: window.end_ms,
                level,
                region: cell.region.to_string(),
                age_band: cell.age_band.label().to_string(),
            };
            let risk: [i64; 3] = risk_noisy[i * 3..i * 3 + 3]
                .try_into()
                .expect("3 risk levels per cell");
            let symptoms: [i64; 10] = sym_noisy[i * 10..i * 10 + 10]
                .try_into()
                .expect("10 symptoms per cell");
            ReleaseRow::from_noisy_counts(label, risk, symptoms, sigma, plan.max_ci_half_width)
        })
        .collect();
    Ok(Release {
        meta: ReleaseMeta {
            window_start: window.start_ms,
            window_end: window.end_ms,
            mechanism: plan.mechanism.to_string(),
            rho: plan.cost.rho,
            epsilon: plan.cost.epsilon,
            delta: plan.cost.delta,
            ledger_entry: ledger_entry.to_string(),
            symptom_noise_scale: plan.symptoms.std_dev(),
            max_ci_half_width: plan.max_ci_half_width,
        },
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hushmap_schema::region::RegionResolution;
    use hushmap_schema::{RegionCell, WindowLength};

    fn plan(eps: f64) -> ReleasePlan {
        let mut config = crate::config::AggregateConfig::default();
        config.privacy.epsilon_per_window = eps;
        config.release_plan().unwrap()
    }

    fn cell(lat: f64, band: AgeBand, risk: [i64; 3]) -> CellCounts {
        CellCounts {
            region: RegionCell::from_coordinate(lat, 0.0, RegionResolution::new(5).unwrap())
                .unwrap(),
            age_band: band,
            risk,
            symptoms: [1; 10],
        }
    }

    #[test]
    fn huge_epsilon_publishes_true_counts_and_a_full_grid() {
        let w = Window::containing(0, WindowLength::from_secs(60).unwrap());
        let cells = vec![
            cell(10.0, AgeBand::From18To29, [5, 3, 2]),
            cell(20.0, AgeBand::From75, [0, 0, 400]),
        ];
        let r = noisy_release(w, 5, &cells, &plan(1e6), "w0").unwrap();
        assert_eq!(r.rows.len(), 12, "two regions × six bands");
        let row = r
            .rows
            .iter()
            .find(|x| x.age_band == "18-29" && x.n_total > 0)
            .unwrap();
        assert_eq!(
            (row.n_low, row.n_moderate, row.n_high, row.n_total),
            (5, 3, 2, 10)
        );
        assert_eq!(row.high_share, Some(0.2));
        let big = r.rows.iter().find(|x| x.n_total == 400).unwrap();
        assert!(!big.suppressed);
        let empty = r.rows.iter().find(|x| x.n_total == 0).unwrap();
        assert!(empty.suppressed && empty.high_share.is_none());
        assert_eq!(r.meta.mechanism, "discrete_gaussian");
        assert!(r.meta.epsilon <= 1e6);
        // δ: the conversion's 1e-8 plus the threshold's at most 1e-8.
        assert!(r.meta.rho.is_some_and(|rho| rho > 0.0));
        assert!(r.meta.delta > 1e-8 && r.meta.delta <= 2e-8);
    }

    #[test]
    fn the_threshold_hides_a_region_only_one_person_reported_from() {
        // Even with next to no noise, a region with a single record is not
        // released: its presence alone would reveal that person.
        let w = Window::containing(0, WindowLength::from_secs(60).unwrap());
        let cells = vec![
            cell(10.0, AgeBand::From18To29, [1, 0, 0]),
            cell(20.0, AgeBand::From75, [0, 0, 400]),
        ];
        for eps in [1e6, 1.0] {
            let r = noisy_release(w, 5, &cells, &plan(eps), "w0").unwrap();
            let regions: BTreeSet<_> = r.rows.iter().map(|x| x.region.clone()).collect();
            assert_eq!(regions.len(), 1, "ε = {eps}: {regions:?}");
            assert!(regions.contains(&cells[1].region.to_string()));
        }
    }

    #[test]
    fn a_public_region_set_is_released_whole_and_nothing_else() {
        let w = Window::containing(0, WindowLength::from_secs(60).unwrap());
        let inside = cell(10.0, AgeBand::From18To29, [1, 0, 0]);
        let outside = cell(20.0, AgeBand::From75, [0, 0, 400]);
        let empty = cell(30.0, AgeBand::Under18, [0, 0, 0]);
        let mut config = crate::config::AggregateConfig::default();
        config.privacy.epsilon_per_window = 1e6;
        // A coarser parent stands for all its children at the release level.
        config.privacy.public_regions = vec![
            inside.region.to_string(),
            empty.region.parent(3).unwrap().to_string(),
        ];
        let plan = config.release_plan().unwrap();
        let r = noisy_release(w, 5, &[inside.clone(), outside.clone()], &plan, "w0").unwrap();
        let regions: BTreeSet<_> = r.rows.iter().map(|x| x.region.clone()).collect();
        assert_eq!(
            regions.len(),
            1 + 49,
            "one cell and a res-3 parent's 49 children"
        );
        assert!(regions.contains(&empty.region.to_string()));
        assert!(!regions.contains(&outside.region.to_string()));
        // The lone record inside the set is counted (no threshold), and the
        // release costs no selection δ.
        let row = r
            .rows
            .iter()
            .find(|x| x.region == inside.region.to_string() && x.age_band == "18-29")
            .unwrap();
        assert_eq!(row.n_low, 1);
        assert_eq!(r.meta.delta, 1e-8);
        assert_eq!(r.rows.iter().map(|x| x.n_total).sum::<i64>(), 1);
    }

    #[test]
    fn post_processing_invariants_hold_under_real_noise() {
        let w = Window::containing(0, WindowLength::from_secs(60).unwrap());
        let cells: Vec<_> = (0..20)
            .map(|i| cell(i as f64, AgeBand::From45To59, [i, 2 * i, 1]))
            .collect();
        let r = noisy_release(w, 5, &cells, &plan(0.5), "w0").unwrap();
        for row in &r.rows {
            assert!(row.n_low >= 0 && row.n_moderate >= 0 && row.n_high >= 0);
            assert_eq!(row.n_total, row.n_low + row.n_moderate + row.n_high);
            assert!(row.symptoms.iter().all(|s| *s >= 0));
            assert!(
                0.0 <= row.high_share_ci_low && row.high_share_ci_low <= row.high_share_ci_high
            );
            assert!(row.high_share_ci_high <= 1.0);
            assert!(row.noise_scale > 1.0);
        }
        // Tiny cells with ε = 0.5 are too noisy to publish as values.
        assert!(
            r.rows
                .iter()
                .filter(|x| x.n_total < 5)
                .all(|x| x.suppressed)
        );
    }
}
