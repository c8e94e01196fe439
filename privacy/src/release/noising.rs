//! The noise of one release and its post-processing into release rows.
//! Noise is drawn only here, and only with an [`Authorisation`].

use super::CellCounts;
use super::plan::{LevelPlan, RegionSelection, ReleasePlan};
use crate::Authorisation;
use crate::noise::NoiseError;
use hushmap_schema::release::{CellLabel, Coverage};
use hushmap_schema::{AgeBand, RegionCell, Release, ReleaseMeta, ReleaseRow, Window};
use std::collections::HashMap;

/// The bounded counts of the release resolution summed into their parent
/// cells at `level`. A contributor's records still touch at most `m` cells
/// and move each count by at most `m`, so the sensitivities of
/// [`ContributionBounds`](crate::sensitivity::ContributionBounds) hold at
/// every level.
pub fn roll_up(cells: &[CellCounts], level: u8) -> Vec<CellCounts> {
    let mut parents: HashMap<(RegionCell, AgeBand), CellCounts> = HashMap::new();
    for c in cells {
        let Some(parent) = c.region.parent(level) else {
            continue;
        };
        let acc = parents
            .entry((parent, c.age_band))
            .or_insert_with(|| CellCounts::empty(c.window_start, parent, c.age_band));
        for (a, v) in acc.risk.iter_mut().zip(c.risk) {
            *a += v;
        }
        for (a, v) in acc.symptoms.iter_mut().zip(c.symptoms) {
            *a += v;
        }
    }
    parents.into_values().collect()
}

/// Noises and post-processes one level's counts into release rows.
fn level_rows(
    window: Window,
    cells: &[CellCounts],
    level: &LevelPlan,
    max_ci_half_width: f64,
) -> Result<Vec<ReleaseRow>, NoiseError> {
    let regions = level.selection.regions(cells)?;
    // Indexed once: the grid (regions × bands) and the counted cells can
    // both run to tens of thousands.
    let counted: HashMap<(RegionCell, AgeBand), &CellCounts> =
        cells.iter().map(|c| ((c.region, c.age_band), c)).collect();
    let mut grid = Vec::with_capacity(regions.len() * AgeBand::ALL.len());
    for region in regions.iter() {
        for band in AgeBand::ALL {
            let found = counted.get(&(*region, band)).copied();
            grid.push(
                found
                    .cloned()
                    .unwrap_or_else(|| CellCounts::empty(window.start_ms, *region, band)),
            );
        }
    }
    let risk_true: Vec<i64> = grid.iter().flat_map(|c| c.risk).collect();
    let sym_true: Vec<i64> = grid.iter().flat_map(|c| c.symptoms).collect();
    let risk_noisy = level.risk.apply(&risk_true)?;
    let sym_noisy = level.symptoms.apply(&sym_true)?;
    let sigma = level.risk.std_dev();
    Ok(grid
        .iter()
        .zip(risk_noisy.chunks_exact(3).zip(sym_noisy.chunks_exact(10)))
        .map(|(cell, (risk, symptoms))| {
            let label = CellLabel {
                window_start: window.start_ms,
                window_end: window.end_ms,
                level: level.level,
                region: cell.region.to_string(),
                age_band: cell.age_band.label().to_string(),
            };
            let risk: [i64; 3] = risk.try_into().expect("chunks of 3");
            let symptoms: [i64; 10] = symptoms.try_into().expect("chunks of 10");
            ReleaseRow::from_noisy_counts(label, risk, symptoms, sigma, max_ci_half_width)
        })
        .collect())
}

/// Noises and post-processes `cells` (bounded counts at the release
/// resolution) into the release the ledger authorised, every level of the
/// plan. Noise is drawn only here, and only with an [`Authorisation`]
/// (taken by value: one authorisation, one noising).
///
/// Each level's regions are chosen by its [`RegionSelection`]; each region
/// is released with all six age bands (zeros included), so the presence of
/// an age band is not itself a signal. With a public region set, records
/// outside it count at no level: the parent levels roll up only the
/// set's cells.
pub fn noisy_release(
    cells: &[CellCounts],
    plan: &ReleasePlan,
    authorisation: Authorisation,
) -> Result<Release, NoiseError> {
    if !authorisation.cost().same_as(&plan.cost) {
        return Err(NoiseError::Parameter(
            "the authorisation is for another cost than this plan spends",
        ));
    }
    let window = authorisation.window();
    let public_only;
    let cells = match &plan.finest().selection {
        RegionSelection::Public(set) => {
            public_only = cells
                .iter()
                .filter(|c| set.contains(&c.region))
                .cloned()
                .collect::<Vec<_>>();
            &public_only[..]
        }
        RegionSelection::Threshold(_) => cells,
    };
    let mut rows = Vec::new();
    for (i, level) in plan.levels.iter().enumerate() {
        let rolled;
        let level_cells = if i == 0 {
            cells
        } else {
            rolled = roll_up(cells, level.level);
            &rolled
        };
        rows.extend(level_rows(
            window,
            level_cells,
            level,
            plan.max_ci_half_width,
        )?);
    }
    Ok(Release {
        meta: release_meta(plan, &authorisation, Coverage::Complete),
        rows,
    })
}

/// The release of a window whose records were no longer there to count
/// (the aggregator was down for longer than the submissions topic keeps
/// them): no rows, [`Coverage::Missed`], and, since it reads no data, the
/// authorisation must be for a free release
/// ([`ReleaseCost::free`]). Publishing it keeps the schedule whole.
pub fn missed_release(
    plan: &ReleasePlan,
    authorisation: Authorisation,
) -> Result<Release, NoiseError> {
    if !authorisation.cost().is_free() {
        return Err(NoiseError::Parameter(
            "a window published without its data must cost nothing",
        ));
    }
    Ok(Release {
        meta: release_meta(plan, &authorisation, Coverage::Missed),
        rows: Vec::new(),
    })
}

fn release_meta(plan: &ReleasePlan, auth: &Authorisation, coverage: Coverage) -> ReleaseMeta {
    let window = auth.window();
    let cost = auth.cost();
    ReleaseMeta {
        window_start: window.start_ms,
        window_end: window.end_ms,
        mechanism: plan.mechanism.to_string(),
        rho: cost.rho,
        epsilon: cost.epsilon,
        delta: cost.delta,
        ledger_entry: auth.id().to_string(),
        symptom_noise_scale: plan.finest().symptoms.std_dev(),
        max_ci_half_width: plan.max_ci_half_width,
        statistic_costs: cost.statistics.clone(),
        part: auth.part(),
        coverage,
        ledger_scope: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::{Mechanism, PlanSpec};
    use hushmap_schema::region::RegionResolution;
    use hushmap_schema::{RegionCell, WindowLength};
    use std::collections::BTreeSet;

    /// The rows of one level.
    fn at(r: &Release, level: u8) -> Vec<ReleaseRow> {
        r.rows
            .iter()
            .filter(|x| x.level == level)
            .cloned()
            .collect()
    }

    /// The aggregator's default budget split at ε = `eps`: release
    /// resolution 5 and two coarser levels, regions by threshold.
    fn spec(mechanism: Mechanism, eps: f64) -> PlanSpec {
        PlanSpec::for_tests(mechanism, eps, vec![5, 4, 3])
    }

    fn plan(eps: f64) -> ReleasePlan {
        ReleasePlan::calibrate(&spec(Mechanism::Gaussian, eps)).unwrap()
    }

    /// `plan`'s release of `cells` in `w`, authorised by a ledger with no
    /// limits to speak of.
    fn release(w: Window, cells: &[CellCounts], plan: &ReleasePlan) -> Release {
        let mut ledger = crate::PrivacyLedger::new(crate::Budget {
            limits: Vec::new(),
            delta: 1e-8,
            max_delta: 1.0,
        });
        let auth = ledger.authorise(w, plan.cost.clone()).unwrap();
        noisy_release(cells, plan, auth).unwrap()
    }

    fn cell(lat: f64, band: AgeBand, risk: [i64; 3]) -> CellCounts {
        CellCounts {
            window_start: 0,
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
        let release = release(w, &cells, &plan(1e6));
        let rows = at(&release, 5);
        assert_eq!(rows.len(), 12, "two regions × six bands");
        let row = rows
            .iter()
            .find(|x| x.age_band == "18-29" && x.n_total > 0)
            .unwrap();
        assert_eq!(
            (row.n_low, row.n_moderate, row.n_high, row.n_total),
            (5, 3, 2, 10)
        );
        assert_eq!(row.high_share, Some(0.2));
        let big = rows.iter().find(|x| x.n_total == 400).unwrap();
        assert!(!big.suppressed);
        let empty = rows.iter().find(|x| x.n_total == 0).unwrap();
        assert!(empty.suppressed && empty.high_share.is_none());
        let m = &release.meta;
        assert_eq!(m.mechanism, "discrete_gaussian");
        assert!(m.epsilon <= 1e6);
        // δ: the conversion's 1e-8 plus the thresholds' at most 1e-8.
        assert!(m.rho.is_some_and(|rho| rho > 0.0));
        assert!(m.delta > 1e-8 && m.delta <= 2e-8);
        // The parents hold the same counts, rolled up.
        for level in [4, 3] {
            let rows = at(&release, level);
            assert_eq!(rows.iter().map(|x| x.n_total).sum::<i64>(), 410);
            assert_eq!(rows.iter().map(|x| x.n_high).sum::<i64>(), 402);
        }
        // Per-statistic costs compose to the total.
        assert_eq!(m.statistic_costs.len(), 9, "3 statistics × 3 levels");
        assert_eq!(m.ledger_entry, "w0");
        let sum: f64 = m.statistic_costs.iter().map(|c| c.cost).sum();
        assert!((sum - m.rho.unwrap()).abs() < 1e-9 * sum);
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
            let r = release(w, &cells, &plan(eps));
            let regions: BTreeSet<_> = at(&r, 5).iter().map(|x| x.region.clone()).collect();
            assert_eq!(regions.len(), 1, "ε = {eps}: {regions:?}");
            assert!(regions.contains(&cells[1].region.to_string()));
        }
    }

    #[test]
    fn a_public_region_set_is_released_whole_and_nothing_else() {
        let w = Window::containing(0, WindowLength::from_secs(60).unwrap());
        let inside = cell(10.0, AgeBand::From18To29, [1, 0, 0]);
        let outside = cell(20.0, AgeBand::From75, [0, 0, 400]);
        // A neighbour of `inside` in the same parent cells, outside the set.
        let sibling = CellCounts {
            region: *inside
                .region
                .parent(4)
                .unwrap()
                .children(5)
                .unwrap()
                .iter()
                .find(|c| **c != inside.region)
                .unwrap(),
            risk: [0, 7, 0],
            ..inside.clone()
        };
        let empty = cell(30.0, AgeBand::Under18, [0, 0, 0]);
        // A coarser parent stands for all its children at the release
        // level (the configuration expands it).
        let mut public: BTreeSet<RegionCell> = empty
            .region
            .parent(3)
            .unwrap()
            .children(5)
            .unwrap()
            .into_iter()
            .collect();
        public.insert(inside.region);
        let plan = ReleasePlan::calibrate(&PlanSpec {
            public_regions: Some(public),
            ..spec(Mechanism::Gaussian, 1e6)
        })
        .unwrap();
        let r = release(
            w,
            &[inside.clone(), outside.clone(), sibling.clone()],
            &plan,
        );
        let regions: BTreeSet<_> = at(&r, 5).iter().map(|x| x.region.clone()).collect();
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
        assert_eq!(at(&r, 5).iter().map(|x| x.n_total).sum::<i64>(), 1);
        // Parent levels count only what is in the set: the sibling's seven
        // records are not in its public parent's row.
        for level in [4, 3] {
            let total: i64 = at(&r, level).iter().map(|x| x.n_total).sum();
            assert_eq!(total, 1, "level {level}");
        }
        // Parent levels: the public set's parents, no more.
        let parents: BTreeSet<_> = at(&r, 3).iter().map(|x| x.region.clone()).collect();
        let expected: BTreeSet<_> = [inside.region, empty.region]
            .iter()
            .map(|c| c.parent(3).unwrap().to_string())
            .collect();
        assert_eq!(parents, expected);
    }

    #[test]
    fn post_processing_invariants_hold_under_real_noise() {
        let w = Window::containing(0, WindowLength::from_secs(60).unwrap());
        let cells: Vec<_> = (0..20)
            .map(|i| cell(i as f64, AgeBand::From45To59, [i, 2 * i, 1]))
            .collect();
        let r = release(w, &cells, &plan(0.5));
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

    #[test]
    fn rolled_up_counts_keep_the_per_level_sensitivity() {
        // One contributor's m records, each in a different child of the
        // same parent: the worst case for the parent level.
        let base: Vec<_> = (0..30)
            .map(|i| cell(i as f64, AgeBand::From18To29, [i, 1, 2]))
            .collect();
        let parent = base[0].region.parent(3).unwrap();
        for m in 1..=3u32 {
            let bounds = crate::sensitivity::ContributionBounds::new(m);
            let children = parent.children(5).unwrap();
            let mut with = base.clone();
            for child in children.iter().take(m as usize) {
                with.push(CellCounts {
                    window_start: 0,
                    region: *child,
                    age_band: AgeBand::From18To29,
                    risk: [0, 0, 1],
                    symptoms: [1; 10],
                });
            }
            for level in [4, 3] {
                let index = |cells: &[CellCounts]| -> HashMap<_, _> {
                    roll_up(cells, level)
                        .into_iter()
                        .map(|c| ((c.region, c.age_band), c))
                        .collect()
                };
                let (a, b) = (index(&base), index(&with));
                let (mut l1, mut l2, mut s_l2) = (0.0, 0.0, 0.0);
                for (key, cb) in &b {
                    let zero = CellCounts {
                        risk: [0; 3],
                        symptoms: [0; 10],
                        ..cb.clone()
                    };
                    let ca = a.get(key).unwrap_or(&zero);
                    for (x, y) in ca.risk.iter().zip(cb.risk) {
                        l1 += (y - x).abs() as f64;
                        l2 += ((y - x) as f64).powi(2);
                    }
                    for (x, y) in ca.symptoms.iter().zip(cb.symptoms) {
                        s_l2 += ((y - x) as f64).powi(2);
                    }
                }
                assert!(l1 <= bounds.risk_counts_l1() + 1e-9);
                assert!(l2.sqrt() <= bounds.risk_counts_l2() + 1e-9);
                assert!(s_l2.sqrt() <= bounds.symptom_counts_l2() + 1e-9);
                if level == 3 {
                    // All m records land in one parent: the bound is reached.
                    assert_eq!(l2.sqrt(), bounds.risk_counts_l2());
                }
            }
        }
    }

    #[test]
    fn published_intervals_cover_the_true_share_at_their_nominal_rate() {
        // OpenDP's own noise at the default budget (three levels), then the
        // published row's interval: it must hold the true share 95% ± 2% of
        // the time, under either mechanism.
        const DRAWS: usize = 4000;
        let truth = [300i64, 200, 100];
        let share = 100.0 / 600.0;
        for mechanism in [Mechanism::Gaussian, Mechanism::Laplace] {
            let plan = ReleasePlan::calibrate(&spec(mechanism, 1.0)).unwrap();
            let level = plan.finest();
            let counts: Vec<i64> = std::iter::repeat_n(truth, DRAWS).flatten().collect();
            let noisy = level.risk.apply(&counts).unwrap();
            let sigma = level.risk.std_dev();
            let covered = noisy
                .chunks_exact(3)
                .filter(|c| {
                    let label = CellLabel {
                        window_start: 0,
                        window_end: 1,
                        level: 5,
                        region: String::new(),
                        age_band: String::new(),
                    };
                    let row = ReleaseRow::from_noisy_counts(
                        label,
                        [c[0], c[1], c[2]],
                        [0; 10],
                        sigma,
                        0.15,
                    );
                    row.high_share_ci_low <= share && share <= row.high_share_ci_high
                })
                .count();
            let rate = covered as f64 / DRAWS as f64;
            assert!(
                (0.93..=0.97).contains(&rate),
                "{mechanism:?}: coverage {rate} (σ {sigma})"
            );
        }
    }
}
