//! The noise of one release and its post-processing into release rows.
//! Noise meets counts only here, and only with an [`Authorisation`] (it
//! may have been drawn earlier: [`NoiseReserve`]).

use super::CellCounts;
use super::consistency::CountTree;
use super::plan::{LevelPlan, RegionSelection, ReleasePlan};
use super::reserve::{Bank, LevelBanks, NoiseReserve};
use crate::Authorisation;
use crate::noise::{CountNoise, NoiseError};
use hushmap_schema::release::{CellLabel, Coverage, Estimates};
use hushmap_schema::{AgeBand, RegionCell, Release, ReleaseMeta, ReleaseRow, Window};
use std::collections::HashMap;

/// The bounded counts of the release resolution summed into their parent
/// cells at `level`. A contributor's records still touch at most `m` cells
/// and move each count by at most `m`, so the sensitivities of
/// [`ContributionBounds`](crate::sensitivity::ContributionBounds) hold at
/// every level.
///
/// # Example
///
/// ```
/// use hushmap_privacy::release::{CellCounts, roll_up};
/// use hushmap_schema::region::RegionResolution;
/// use hushmap_schema::{AgeBand, RegionCell};
///
/// let r5 = RegionResolution::new(5).unwrap();
/// let cell = RegionCell::from_coordinate(19.08, 72.89, r5).unwrap();
/// let parent = cell.parent(4).unwrap();
/// let neighbour = parent.children(5).unwrap().into_iter().find(|c| *c != cell).unwrap();
/// let mut a = CellCounts::empty(0, cell, AgeBand::ALL[2]);
/// a.risk = [3, 1, 0];
/// let mut b = CellCounts::empty(0, neighbour, AgeBand::ALL[2]);
/// b.risk = [1, 0, 2];
/// let parents = roll_up(&[a, b], 4);
/// // Both resolution-5 cells are children of one resolution-4 cell, where
/// // each count is the sum of its children's.
/// assert_eq!(parents.len(), 1);
/// assert_eq!(parents[0].region, parent);
/// assert_eq!(parents[0].risk, [4, 1, 2]);
/// ```
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

/// One level's noisy measurements: the regions it releases and, for each
/// region and age band (in that order), the counts as drawn (negative
/// ones included).
struct LevelMeasurement {
    level: u8,
    regions: Vec<RegionCell>,
    risk: Vec<[i64; 3]>,
    /// Zeros when symptom counts are not released.
    symptoms: Vec<[i64; 10]>,
    /// Per region, the all-ages risk counts when measured on their own.
    all_ages: Option<Vec<[i64; 3]>>,
    risk_sd: f64,
    symptom_sd: f64,
    all_ages_sd: f64,
}

impl LevelMeasurement {
    /// The position of `region`'s first band in `risk` and `symptoms`.
    fn slot(&self, region: &RegionCell) -> Option<usize> {
        self.regions
            .binary_search(region)
            .ok()
            .map(|i| i * AgeBand::ALL.len())
    }
}

/// `truth` plus `noise`: from the bank when there is one (drawn before the
/// window closed), else drawn now.
fn noised(
    noise: &CountNoise,
    bank: Option<&mut Bank>,
    truth: &[i64],
) -> Result<Vec<i64>, NoiseError> {
    match bank {
        Some(bank) => bank.noised(noise, truth),
        None => noise.apply(truth),
    }
}

/// Chooses one level's regions and noises their counts (all six bands of
/// every region chosen, zeros included), with the level's reserved noise
/// where there is some.
fn measure_level(
    cells: &[CellCounts],
    level: &LevelPlan,
    mut banks: Option<&mut LevelBanks>,
) -> Result<LevelMeasurement, NoiseError> {
    let regions: Vec<RegionCell> = level.selection.regions(cells)?.iter().copied().collect();
    // Indexed once: the grid (regions × bands) and the counted cells can
    // both run to tens of thousands.
    let counted: HashMap<(RegionCell, AgeBand), &CellCounts> =
        cells.iter().map(|c| ((c.region, c.age_band), c)).collect();
    let mut risk_true = Vec::with_capacity(regions.len() * AgeBand::ALL.len() * 3);
    let mut sym_true = Vec::with_capacity(regions.len() * AgeBand::ALL.len() * 10);
    for region in &regions {
        for band in AgeBand::ALL {
            match counted.get(&(*region, band)) {
                Some(c) => {
                    risk_true.extend(c.risk);
                    sym_true.extend(c.symptoms);
                }
                None => {
                    risk_true.extend([0; 3]);
                    sym_true.extend([0; 10]);
                }
            }
        }
    }
    let risk = noised(
        &level.risk,
        banks.as_deref_mut().map(|b| &mut b.risk),
        &risk_true,
    )?;
    let symptoms = match &level.symptoms {
        Some(noise) => noised(
            noise,
            banks.as_deref_mut().and_then(|b| b.symptoms.as_mut()),
            &sym_true,
        )?,
        None => vec![0; sym_true.len()],
    };
    let all_ages = match &level.all_ages {
        Some(noise) => {
            let bands = AgeBand::ALL.len() * 3;
            let sums: Vec<i64> = risk_true
                .chunks_exact(bands)
                .flat_map(|region| {
                    (0..3).map(move |k| region.iter().skip(k).step_by(3).sum::<i64>())
                })
                .collect();
            Some(triples(&noised(
                noise,
                banks.and_then(|b| b.all_ages.as_mut()),
                &sums,
            )?))
        }
        None => None,
    };
    Ok(LevelMeasurement {
        level: level.level,
        regions,
        risk: triples(&risk),
        symptoms: symptoms
            .chunks_exact(10)
            .map(|c| c.try_into().expect("chunks of 10"))
            .collect(),
        all_ages,
        risk_sd: level.risk.std_dev(),
        symptom_sd: level.symptom_sd(),
        all_ages_sd: level.all_ages.as_ref().map_or(0.0, |n| n.std_dev()),
    })
}

/// Risk-level counts, three at a time.
fn triples(counts: &[i64]) -> Vec<[i64; 3]> {
    counts
        .chunks_exact(3)
        .map(|c| c.try_into().expect("chunks of 3"))
        .collect()
}

/// How a row is made from its counts ([`ReleaseRow::from_noisy_counts`]
/// or [`ReleaseRow::from_measured_counts`]).
type RowMaker = fn(CellLabel, [i64; 3], [i64; 10], f64, f64) -> ReleaseRow;

/// The rows of measured levels, each count as it is in `levels` and each
/// row's risk counts with the standard error `risk_sd(level, slot)`.
fn rows_of(
    window: Window,
    levels: &[LevelMeasurement],
    risk_sd: impl Fn(usize, usize) -> f64,
    max_ci_half_width: f64,
    make: RowMaker,
) -> Vec<ReleaseRow> {
    let mut rows = Vec::new();
    for (i, m) in levels.iter().enumerate() {
        for (r, region) in m.regions.iter().enumerate() {
            for (b, band) in AgeBand::ALL.iter().enumerate() {
                let slot = r * AgeBand::ALL.len() + b;
                let label = CellLabel {
                    window_start: window.start_ms,
                    window_end: window.end_ms,
                    level: m.level,
                    region: region.to_string(),
                    age_band: band.label().to_string(),
                };
                rows.push(make(
                    label,
                    m.risk[slot],
                    m.symptoms[slot],
                    risk_sd(i, slot),
                    max_ci_half_width,
                ));
            }
        }
    }
    rows
}

/// The region tree of a window's measured levels (finest first in
/// `levels`): a node per region released at some level, and per parent of
/// such a node at the next coarser level, coarsest first.
struct RegionTree {
    tree: CountTree,
    /// Per node: its level (index into `levels`) and its slot there, if
    /// the level released its region.
    nodes: Vec<(usize, Option<usize>)>,
}

impl RegionTree {
    /// `exact_parents`: with a public region set a parent counts exactly
    /// its children in the set; with threshold selection a parent counts
    /// children that were not released as well, so its children in the
    /// tree are all of them only if all seven (or so) were released.
    fn build(levels: &[LevelMeasurement], exact_parents: bool) -> RegionTree {
        use std::collections::BTreeSet;
        let n = levels.len();
        // Regions per level: those released, and the parents of the finer
        // level's nodes.
        let mut sets: Vec<BTreeSet<RegionCell>> = Vec::with_capacity(n);
        for (i, m) in levels.iter().enumerate() {
            let mut set: BTreeSet<RegionCell> = m.regions.iter().copied().collect();
            if i > 0 {
                set.extend(sets[i - 1].iter().filter_map(|c| c.parent(m.level)));
            }
            sets.push(set);
        }
        let mut index: HashMap<(usize, RegionCell), usize> = HashMap::new();
        let mut parents = Vec::new();
        let mut complete = Vec::new();
        let mut nodes = Vec::new();
        for i in (0..n).rev() {
            for region in &sets[i] {
                let parent = (i + 1 < n)
                    .then(|| region.parent(levels[i + 1].level))
                    .flatten()
                    .and_then(|p| index.get(&(i + 1, p)).copied());
                let whole = i > 0
                    && (exact_parents
                        || region
                            .children(levels[i - 1].level)
                            .is_some_and(|kids| kids.iter().all(|k| sets[i - 1].contains(k))));
                index.insert((i, *region), parents.len());
                parents.push(parent);
                complete.push(whole);
                nodes.push((i, levels[i].slot(region)));
            }
        }
        RegionTree {
            tree: CountTree::new(parents, complete).expect("parents are indexed first"),
            nodes,
        }
    }
}

/// Makes every count of `levels` consistent (see
/// [`consistency`](super::consistency)): the risk counts over regions and
/// age bands together with the all-ages measurement when there is one
/// ([`banded`](super::banded)), the symptom counts one band at a time.
/// Returns each level's standard error of the risk counts per slot, and
/// of the all-ages risk counts per region.
fn make_consistent(levels: &mut [LevelMeasurement], exact_parents: bool) -> ConsistentErrors {
    const BANDS: usize = AgeBand::ALL.len();
    let RegionTree { tree, nodes } = RegionTree::build(levels, exact_parents);
    let variance = |sd: fn(&LevelMeasurement) -> f64| -> Vec<f64> {
        nodes.iter().map(|(i, _)| sd(&levels[*i]).powi(2)).collect()
    };
    let (risk_var, sym_var) = (variance(|m| m.risk_sd), variance(|m| m.symptom_sd));
    let all_ages_var = variance(|m| m.all_ages_sd);
    let mut errors = ConsistentErrors {
        risk: levels
            .iter()
            .map(|m| vec![m.risk_sd; m.risk.len()])
            .collect(),
        all_ages: levels
            .iter()
            .map(|m| vec![(BANDS as f64).sqrt() * m.risk_sd; m.regions.len()])
            .collect(),
    };
    for k in 0..3 {
        let bands: Vec<Option<[f64; BANDS]>> = nodes
            .iter()
            .map(|(i, slot)| {
                slot.map(|s| std::array::from_fn(|b| levels[*i].risk[s + b][k] as f64))
            })
            .collect();
        let totals: Vec<Option<f64>> = nodes
            .iter()
            .map(|(i, slot)| {
                let measured = levels[*i].all_ages.as_ref()?;
                slot.map(|s| measured[s / BANDS][k] as f64)
            })
            .collect();
        let out = tree.estimate_banded(&bands, &risk_var, &totals, &all_ages_var);
        for ((i, slot), e) in nodes.iter().zip(out) {
            if let (Some(s), Some(e)) = (slot, e) {
                for b in 0..BANDS {
                    levels[*i].risk[s + b][k] = e.counts[b];
                    errors.risk[*i][s + b] = e.band_variance.sqrt();
                }
                errors.all_ages[*i][s / BANDS] = e.total_variance.sqrt();
            }
        }
    }
    // Symptom counts switched off are zeros with no noise: nothing to do.
    if sym_var.iter().any(|v| *v > 0.0) {
        let mut symptoms: Vec<_> = levels.iter_mut().map(|m| &mut m.symptoms).collect();
        make_columns_consistent(&tree, &nodes, &sym_var, &mut symptoms);
    }
    errors
}

/// Standard errors of consistent risk counts, per level: of each region
/// and band (`risk`, by slot), and of each region's all-ages sum
/// (`all_ages`, by region).
struct ConsistentErrors {
    risk: Vec<Vec<f64>>,
    all_ages: Vec<Vec<f64>>,
}

/// Replaces each count of `counts` (per level, per slot, `N` statistics)
/// by its consistent estimate, one statistic and age band at a time.
#[expect(
    clippy::needless_range_loop,
    reason = "k picks one statistic out of every node's array"
)]
fn make_columns_consistent<const N: usize>(
    tree: &CountTree,
    nodes: &[(usize, Option<usize>)],
    variance: &[f64],
    counts: &mut [&mut Vec<[i64; N]>],
) {
    for band in 0..AgeBand::ALL.len() {
        for k in 0..N {
            let measured: Vec<Option<f64>> = nodes
                .iter()
                .map(|(i, slot)| slot.map(|s| counts[*i][s + band][k] as f64))
                .collect();
            let out = tree.estimate(&measured, variance);
            for ((i, slot), e) in nodes.iter().zip(out) {
                if let (Some(s), Some(e)) = (slot, e) {
                    counts[*i][s + band][k] = e.count;
                }
            }
        }
    }
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
    Ok(noise_window(cells, plan, authorisation, None)?.release)
}

/// A window's release and the measurements it was made from.
#[derive(Debug, Clone)]
pub struct Noised {
    /// What the plan publishes (`plan.estimates`).
    pub release: Release,
    /// The same measurements, unclamped ([`Estimates::Measured`]); the
    /// all-ages measurement is not in it (the schema has no all-ages row).
    pub measured: Release,
}

/// [`noisy_release`], with the measurements it was made from (which cost
/// nothing more to publish: they are what was drawn). The count noise
/// comes from `reserve` as far as it goes ([`NoiseReserve`]: drawn before
/// the window closed, used here once and dropped), the rest is drawn now.
pub fn noise_window(
    cells: &[CellCounts],
    plan: &ReleasePlan,
    authorisation: Authorisation,
    mut reserve: Option<NoiseReserve>,
) -> Result<Noised, NoiseError> {
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
    let mut measured = Vec::with_capacity(plan.levels.len());
    for (i, level) in plan.levels.iter().enumerate() {
        let rolled;
        let level_cells = if i == 0 {
            cells
        } else {
            rolled = roll_up(cells, level.level);
            &rolled
        };
        let banks = reserve.as_mut().and_then(|r| r.level(i));
        measured.push(measure_level(level_cells, level, banks)?);
    }
    // Post-processing from here on: nothing but the measurements and
    // their public variances is read.
    let measured_rows = rows_of(
        window,
        &measured,
        |i, _| measured[i].risk_sd,
        plan.max_ci_half_width,
        ReleaseRow::from_measured_counts,
    );
    let mut all_ages_se = std::collections::BTreeMap::new();
    let rows = match plan.estimates {
        Estimates::Noisy => rows_of(
            window,
            &measured,
            |i, _| measured[i].risk_sd,
            plan.max_ci_half_width,
            ReleaseRow::from_noisy_counts,
        ),
        // A plan never publishes the bare measurements as its release.
        Estimates::Consistent | Estimates::Measured => {
            let exact_parents = matches!(plan.finest().selection, RegionSelection::Public(_));
            let se = make_consistent(&mut measured, exact_parents);
            all_ages_se = measured
                .iter()
                .zip(&se.all_ages)
                .filter(|(m, _)| m.all_ages.is_some())
                .map(|(m, regions)| (m.level, regions.iter().copied().fold(0.0, f64::max)))
                .collect();
            rows_of(
                window,
                &measured,
                |i, s| se.risk[i][s],
                plan.max_ci_half_width,
                ReleaseRow::from_noisy_counts,
            )
        }
    };
    let mut meta = release_meta(plan, &authorisation, Coverage::Complete);
    let measured = Release {
        meta: ReleaseMeta {
            estimates: Estimates::Measured,
            ..meta.clone()
        },
        rows: measured_rows,
    };
    meta.all_ages_noise_scale = all_ages_se;
    Ok(Noised {
        release: Release { meta, rows },
        measured,
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
    ReleaseMeta {
        part: auth.part(),
        coverage,
        ..plan_meta(plan, auth.window(), auth.id(), auth.cost())
    }
}

/// The metadata every release of `window` under `plan` shares: how it was
/// made and what it cost (`cost`, charged under `ledger_entry`); whole,
/// complete, final.
pub(crate) fn plan_meta(
    plan: &ReleasePlan,
    window: Window,
    ledger_entry: &str,
    cost: &crate::ReleaseCost,
) -> ReleaseMeta {
    ReleaseMeta {
        window_start: window.start_ms,
        window_end: window.end_ms,
        mechanism: plan.mechanism.to_string(),
        rho: cost.rho,
        epsilon: cost.epsilon,
        delta: cost.delta,
        ledger_entry: ledger_entry.to_string(),
        symptom_noise_scale: plan.finest().symptom_sd(),
        max_ci_half_width: plan.max_ci_half_width,
        statistic_costs: cost.statistics.clone(),
        part: Default::default(),
        coverage: Default::default(),
        ledger_scope: Default::default(),
        estimates: plan.estimates,
        all_ages_noise_scale: Default::default(),
        provisional: None,
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

    /// `plan`'s spend in `w`, authorised by a ledger with no limits to
    /// speak of.
    fn authorised(w: Window, plan: &ReleasePlan) -> Authorisation {
        let mut ledger = crate::PrivacyLedger::new(crate::Budget {
            limits: Vec::new(),
            delta: 1e-8,
            max_delta: 1.0,
        });
        ledger.authorise(w, plan.cost.clone()).unwrap()
    }

    /// `plan`'s release of `cells` in `w`.
    fn release(w: Window, cells: &[CellCounts], plan: &ReleasePlan) -> Release {
        noisy_release(cells, plan, authorised(w, plan)).unwrap()
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
    fn reserved_noise_goes_to_the_counts_in_release_order_and_the_rest_is_drawn() {
        let w = Window::containing(0, WindowLength::from_secs(60).unwrap());
        let cells = vec![
            cell(10.0, AgeBand::From18To29, [5, 3, 2]),
            cell(20.0, AgeBand::From75, [0, 0, 400]),
        ];
        let plan = plan(1e6);
        let noised = |reserve| {
            noise_window(&cells, &plan, authorised(w, &plan), Some(reserve))
                .unwrap()
                .measured
        };
        // Room for both regions at every level: every count's noise is the
        // reserve's (1000 here), none drawn now.
        let all = noised(NoiseReserve::constant(&plan, &[2, 2, 2], 1000));
        assert_eq!(
            all.rows.len(),
            3 * 2 * 6,
            "three levels × two regions × six bands"
        );
        for row in &all.rows {
            assert!(
                [row.n_low, row.n_moderate, row.n_high]
                    .iter()
                    .chain(&row.symptoms)
                    .all(|&n| n >= 1000),
                "{row:?}"
            );
        }
        let young = all
            .rows
            .iter()
            .find(|r| r.level == 5 && r.age_band == AgeBand::From18To29.label() && r.n_low > 1004)
            .expect("the counted cell");
        assert_eq!(
            (young.n_low, young.n_moderate, young.n_high),
            (1005, 1003, 1002)
        );
        // Room for one region: the first region of each level (in release
        // order) gets the reserve's noise, the second is drawn now (σ ≈ 0
        // at this ε, so its counts are the truth).
        let half = noised(NoiseReserve::constant(&plan, &[1, 1, 1], 1000));
        for level in [5, 4, 3] {
            let rows = at(&half, level);
            let mut regions: Vec<&str> = rows.iter().map(|r| r.region.as_str()).collect();
            regions.dedup();
            assert_eq!(regions.len(), 2);
            for row in &rows {
                let reserved = row.region == regions[0];
                assert_eq!(row.n_low >= 1000, reserved, "level {level}: {row:?}");
            }
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

    /// A public set of the 49 resolution-5 cells under one resolution-3
    /// cell, each with `truth` in every band, and the plan over it.
    fn public_block(eps: f64, estimates: Estimates) -> (Vec<CellCounts>, ReleasePlan) {
        let root =
            RegionCell::from_coordinate(10.0, 10.0, RegionResolution::new(3).unwrap()).unwrap();
        let leaves = root.children(5).unwrap();
        let cells = leaves
            .iter()
            .enumerate()
            .flat_map(|(i, region)| {
                AgeBand::ALL.into_iter().map(move |band| CellCounts {
                    window_start: 0,
                    region: *region,
                    age_band: band,
                    risk: [30 + i as i64, 20, 10 + (i % 5) as i64],
                    symptoms: [3; 10],
                })
            })
            .collect();
        let plan = ReleasePlan::calibrate(&PlanSpec {
            public_regions: Some(leaves.into_iter().collect()),
            estimates,
            ..spec(Mechanism::Gaussian, eps)
        })
        .unwrap();
        (cells, plan)
    }

    /// The true risk counts of every (level, region, band) of `cells`.
    fn truth_of(cells: &[CellCounts]) -> HashMap<(u8, String, String), [i64; 3]> {
        let mut truth = HashMap::new();
        for level in [5u8, 4, 3] {
            let rolled = if level == 5 {
                cells.to_vec()
            } else {
                roll_up(cells, level)
            };
            for c in rolled {
                truth.insert(
                    (level, c.region.to_string(), c.age_band.label().to_string()),
                    c.risk,
                );
            }
        }
        truth
    }

    #[test]
    fn consistent_counts_add_up_across_levels_and_are_never_negative() {
        let w = Window::containing(0, WindowLength::from_secs(60).unwrap());
        let (cells, plan) = public_block(0.3, Estimates::Consistent);
        let r = release(w, &cells, &plan);
        assert_eq!(r.meta.estimates, Estimates::Consistent);
        let by_key: HashMap<(u8, String, String), &ReleaseRow> = r
            .rows
            .iter()
            .map(|x| ((x.level, x.region.clone(), x.age_band.clone()), x))
            .collect();
        for row in &r.rows {
            assert!(row.n_low >= 0 && row.n_moderate >= 0 && row.n_high >= 0);
            assert!(row.symptoms.iter().all(|s| *s >= 0));
            if row.level == 5 {
                continue;
            }
            let cell: RegionCell = row.region.parse().unwrap();
            let kids: Vec<&ReleaseRow> = cell
                .children(row.level + 1)
                .unwrap()
                .iter()
                .filter_map(|k| by_key.get(&(row.level + 1, k.to_string(), row.age_band.clone())))
                .copied()
                .collect();
            assert_eq!(kids.len(), 7);
            let sum = |f: fn(&ReleaseRow) -> i64| kids.iter().map(|k| f(k)).sum::<i64>();
            assert_eq!(sum(|k| k.n_low), row.n_low);
            assert_eq!(sum(|k| k.n_moderate), row.n_moderate);
            assert_eq!(sum(|k| k.n_high), row.n_high);
            assert_eq!(sum(|k| k.symptoms[4]), row.symptoms[4]);
            // Every estimate leans on the others: less noise than measured.
            let raw = plan.levels.iter().find(|l| l.level == row.level).unwrap();
            assert!(row.noise_scale < raw.risk.std_dev(), "{row:?}");
        }
    }

    #[test]
    fn consistent_estimates_are_closer_and_their_intervals_still_cover() {
        // Many releases of one block at ε = 1: the consistent counts'
        // error at every level is below the measured counts', and the
        // published intervals (from each row's own standard error) hold
        // the true share at their nominal rate.
        const RELEASES: usize = 60;
        let w = Window::containing(0, WindowLength::from_secs(60).unwrap());
        let mut squared = HashMap::<(Estimates, u8), (f64, usize)>::new();
        let (mut covered, mut intervals) = (0usize, 0usize);
        for estimates in [Estimates::Noisy, Estimates::Consistent] {
            let (cells, plan) = public_block(1.0, estimates);
            let truth = truth_of(&cells);
            for _ in 0..RELEASES {
                for row in release(w, &cells, &plan).rows {
                    let t = truth[&(row.level, row.region.clone(), row.age_band.clone())];
                    let e = squared.entry((estimates, row.level)).or_default();
                    for (got, want) in [row.n_low, row.n_moderate, row.n_high].iter().zip(t) {
                        e.0 += ((got - want) as f64).powi(2);
                        e.1 += 1;
                    }
                    if estimates == Estimates::Consistent {
                        let share = t[2] as f64 / t.iter().sum::<i64>() as f64;
                        intervals += 1;
                        if row.high_share_ci_low <= share && share <= row.high_share_ci_high {
                            covered += 1;
                        }
                    }
                }
            }
        }
        let rmse = |e: Estimates, l: u8| {
            let (s, n) = squared[&(e, l)];
            (s / n as f64).sqrt()
        };
        for level in [5u8, 4, 3] {
            let (noisy, consistent) = (
                rmse(Estimates::Noisy, level),
                rmse(Estimates::Consistent, level),
            );
            eprintln!("level {level}: RMSE measured {noisy:.2}, consistent {consistent:.2}");
            // The coarsest level leans on its children only (about 0.93 of
            // the measured error here) and has the fewest cells: its RMSE
            // ratio carries a Monte Carlo error of ~3%, so it is held to
            // "no worse" (a 0.97 bound failed once in CI at 0.971).
            let bound = if level == 3 { 1.02 } else { 0.97 };
            assert!(
                consistent < bound * noisy,
                "level {level}: RMSE {consistent} consistent vs {noisy} measured"
            );
        }
        let rate = covered as f64 / intervals as f64;
        eprintln!("coverage {rate:.4} of {intervals} intervals");
        assert!(
            (0.93..=0.985).contains(&rate),
            "coverage {rate} of {intervals}"
        );
    }

    #[test]
    fn an_all_ages_measurement_cuts_the_all_ages_error_and_the_bands_still_add_up() {
        // The same block at ε = 1, with no all-ages measurement and with
        // half the risk budget on one: the all-ages sums get closer to the
        // truth (as the stated standard error says), each band further.
        const RELEASES: usize = 40;
        let w = Window::containing(0, WindowLength::from_secs(60).unwrap());
        let mut rmse = Vec::new();
        for share in [0.0, 0.5] {
            let (cells, plan) = public_block(1.0, Estimates::Consistent);
            let plan = ReleasePlan::calibrate(&PlanSpec {
                all_ages_share: share,
                public_regions: match &plan.finest().selection {
                    RegionSelection::Public(set) => Some(set.as_ref().clone()),
                    RegionSelection::Threshold(_) => unreachable!(),
                },
                ..spec(Mechanism::Gaussian, 1.0)
            })
            .unwrap();
            assert_eq!(
                plan.cost
                    .statistics
                    .iter()
                    .filter(|c| c.statistic == "all_ages_risk_counts")
                    .count(),
                if share > 0.0 { 3 } else { 0 }
            );
            let truth = truth_of(&cells);
            let (mut all_sq, mut band_sq, mut n_all, mut n_band) = (0.0, 0.0, 0, 0);
            let mut stated = 0.0f64;
            for _ in 0..RELEASES {
                let r = release(w, &cells, &plan);
                let mut sums: HashMap<(u8, String), (i64, i64)> = HashMap::new();
                for row in &r.rows {
                    let t = truth[&(row.level, row.region.clone(), row.age_band.clone())];
                    let e = sums.entry((row.level, row.region.clone())).or_default();
                    e.0 += row.n_high;
                    e.1 += t[2];
                    band_sq += ((row.n_high - t[2]) as f64).powi(2);
                    n_band += 1;
                }
                for (got, want) in sums.values() {
                    all_sq += ((got - want) as f64).powi(2);
                    n_all += 1;
                }
                stated = r.meta.all_ages_noise_scale.get(&5).copied().unwrap_or(0.0);
                assert_eq!(r.meta.all_ages_noise_scale.is_empty(), share == 0.0);
            }
            let (all, band) = (
                (all_sq / n_all as f64).sqrt(),
                (band_sq / n_band as f64).sqrt(),
            );
            eprintln!(
                "all-ages share {share}: all-ages RMSE {all:.2} (stated ≤ {stated:.2}), band RMSE {band:.2}"
            );
            if share > 0.0 {
                assert!(
                    all <= 1.1 * stated,
                    "all-ages RMSE {all} above the stated {stated}"
                );
            }
            rmse.push((all, band));
        }
        assert!(rmse[1].0 < 0.8 * rmse[0].0, "{rmse:?}");
        assert!(rmse[1].1 > rmse[0].1, "{rmse:?}");
    }

    #[test]
    fn symptom_counts_can_be_switched_off() {
        let w = Window::containing(0, WindowLength::from_secs(60).unwrap());
        let (cells, plan) = public_block(1.0, Estimates::Consistent);
        let with = plan.levels[0].risk.std_dev();
        let plan = ReleasePlan::calibrate(&PlanSpec {
            risk_share: 1.0,
            public_regions: match &plan.finest().selection {
                RegionSelection::Public(set) => Some(set.as_ref().clone()),
                RegionSelection::Threshold(_) => unreachable!(),
            },
            ..spec(Mechanism::Gaussian, 1.0)
        })
        .unwrap();
        assert!(plan.levels.iter().all(|l| l.symptoms.is_none()));
        // The symptoms' share went to the risk counts.
        assert!(plan.levels[0].risk.std_dev() < 0.8 * with);
        let r = release(w, &cells, &plan);
        assert!(r.rows.iter().all(|row| row.symptoms == [0; 10]));
        assert_eq!(r.meta.symptom_noise_scale, 0.0);
        assert!(
            r.meta
                .statistic_costs
                .iter()
                .all(|c| c.statistic != "symptom_counts")
        );
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
