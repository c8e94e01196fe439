//! Provisional counts within a window (continual release): the
//! binary-tree mechanism over sub-windows (Dwork, Naor, Pitassi and
//! Rothblum 2010; Chan, Shi and Song 2011), with the least-squares
//! estimates of Honaker (2015). The first step of issue 19's provisional
//! numbers: the mechanism and its estimates, not yet wired to the
//! aggregator.
//!
//! A window is cut into `T` sub-windows by the clock. Each contributor
//! counts once in the provisional series, in the sub-window of their first
//! record. The dyadic intervals over the sub-windows (padded to a power of
//! two) form a binary tree of [`SubWindowTree::levels`] levels. A
//! contributor's record lies in exactly one interval per level, so one
//! contributor moves at most `levels` noised counts, each by the
//! sensitivity of one count vector. Noising every interval with a budget
//! of `ρ / levels` therefore costs `ρ` for the whole series (zCDP adds),
//! whatever `T` is ([`SubWindowTree::node_budget`]).
//!
//! When sub-window `t` ends, the intervals ending there are noised and
//! published ([`SubWindowTree::completed_at`]). The cumulative count after
//! `n` sub-windows is the sum over the canonical cover of `[0, n)` (the
//! binary digits of `n`): at most `levels` intervals, each the root of a
//! subtree whose every interval has been published. Each cover root is
//! estimated from its whole subtree by weighted least squares
//! ([`CountTree`], the same estimator that makes releases consistent), so
//! it uses its children's measurements too. The cover's subtrees are
//! disjoint, so their errors are independent and their variances add
//! ([`SubWindowTree::cumulative`]).
//!
//! ```
//! use hushmap_privacy::release::continual::SubWindowTree;
//! let tree = SubWindowTree::new(24).unwrap();
//! assert_eq!(tree.levels(), 6); // 24 hourly sub-windows: 32 leaves
//! // After the 6th hour: [0,4) and [4,6) cover it.
//! let exact = |(start, end): (u32, u32)| f64::from(end - start); // one per hour
//! let (estimate, variance) = tree.cumulative(6, exact, 0.0).unwrap();
//! assert_eq!((estimate, variance), (6.0, 0.0));
//! ```

use super::ReleasePlan;
use super::consistency::CountTree;
use super::noising::plan_meta;
use crate::noise::NoiseError;
use hushmap_schema::release::{CellLabel, Estimates, IntervalCounts, ProvisionalMeta};
use hushmap_schema::{RegionCell, Release, ReleaseMeta, ReleaseRow, Window};
use std::collections::BTreeMap;

/// Sub-windows `[start, end)` of one window: a node of the tree.
pub type Interval = (u32, u32);

/// The dyadic intervals over a window's sub-windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubWindowTree {
    sub_windows: u32,
    /// Leaves: `sub_windows` rounded up to a power of two.
    width: u32,
}

/// Most sub-windows a window may have (a minute's sub-windows in a day is
/// 1,440; beyond this the per-node budget is too thin to be useful).
pub const MAX_SUB_WINDOWS: u32 = 4_096;

impl SubWindowTree {
    pub fn new(sub_windows: u32) -> Result<SubWindowTree, NoiseError> {
        if sub_windows == 0 || sub_windows > MAX_SUB_WINDOWS {
            return Err(NoiseError::Parameter(
                "a window needs 1 to 4096 sub-windows",
            ));
        }
        Ok(SubWindowTree {
            sub_windows,
            width: sub_windows.next_power_of_two(),
        })
    }

    /// Sub-windows of the window.
    pub fn sub_windows(&self) -> u32 {
        self.sub_windows
    }

    /// Length of each sub-window of `window` (ms; the configuration makes
    /// the window a whole number of them).
    pub fn sub_window_ms(&self, window: Window) -> i64 {
        (window.end_ms - window.start_ms) / i64::from(self.sub_windows)
    }

    /// When sub-window `t` of `window` ends: its provisional release is
    /// due then, by the clock.
    pub fn end_ms(&self, window: Window, t: u32) -> i64 {
        window.start_ms + self.sub_window_ms(window) * i64::from(t + 1)
    }

    /// The sub-window of `window` a record produced at `produced_ms`
    /// counts in: the first for one produced before the window starts,
    /// none for one produced at or after its end (that one counts in the
    /// final release only).
    pub fn sub_window_of(&self, window: Window, produced_ms: i64) -> Option<u32> {
        if produced_ms >= window.end_ms {
            return None;
        }
        let t = (produced_ms - window.start_ms).max(0) / self.sub_window_ms(window);
        Some((t as u32).min(self.sub_windows - 1))
    }

    /// Levels of the tree: the number of intervals holding any one
    /// sub-window, hence of noised counts one contributor can move.
    pub fn levels(&self) -> u32 {
        self.width.trailing_zeros() + 1
    }

    /// The budget each interval is noised with so that the series costs
    /// `total` (ρ under zCDP; pure ε adds the same way).
    pub fn node_budget(&self, total: f64) -> f64 {
        total / f64::from(self.levels())
    }

    /// The intervals that end when sub-window `t` (from 0) ends: one per
    /// level whose interval size divides `t + 1`, so every interval is
    /// noised exactly once, as soon as it is complete.
    pub fn completed_at(&self, t: u32) -> Vec<Interval> {
        if t >= self.sub_windows {
            return Vec::new();
        }
        let end = t + 1;
        (0..self.levels())
            .map(|k| 1u32 << k)
            .take_while(|size| end.is_multiple_of(*size))
            .map(|size| (end - size, end))
            .collect()
    }

    /// Every interval a contributor in sub-window `t` is counted in (one
    /// per level, published or not yet).
    pub fn intervals_holding(&self, t: u32) -> Vec<Interval> {
        (0..self.levels())
            .map(|k| {
                let size = 1u32 << k;
                let start = t / size * size;
                (start, start + size)
            })
            .collect()
    }

    /// The canonical cover of `[0, n)`: largest intervals first.
    pub fn cover(&self, n: u32) -> Vec<Interval> {
        let mut out = Vec::new();
        let mut start = 0;
        for k in (0..self.levels()).rev() {
            let size = 1u32 << k;
            if n - start >= size {
                out.push((start, start + size));
                start += size;
            }
        }
        out
    }

    /// The estimate of the count over sub-windows `[0, n)` and its
    /// variance, from `measured` (the noisy count of each published
    /// interval) with noise `variance` per interval. `None` when `n` is 0
    /// or beyond the window.
    pub fn cumulative(
        &self,
        n: u32,
        measured: impl Fn(Interval) -> f64,
        variance: f64,
    ) -> Option<(f64, f64)> {
        if n == 0 || n > self.sub_windows {
            return None;
        }
        let mut total = (0.0, 0.0);
        for root in self.cover(n) {
            let (nodes, tree) = subtree(root);
            let values: Vec<Option<f64>> = nodes.iter().map(|i| Some(measured(*i))).collect();
            let fit = tree.fit(&values, &vec![variance; nodes.len()]);
            let (x, v) = fit.fitted[0].expect("every node measured");
            total = (total.0 + x, total.1 + v);
        }
        Some(total)
    }
}

/// True counts of one sub-window and provisional region: the risk levels
/// (low, moderate, high) of the contributors whose first record in the
/// window was produced in that sub-window. Memory only, between the count
/// and the noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstRecordCounts {
    pub sub_window: u32,
    pub region: RegionCell,
    pub risk: [i64; 3],
}

/// Why a provisional release could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionalError {
    #[error("noise: {0}")]
    Noise(#[from] NoiseError),
    #[error("the plan has no provisional series")]
    NotPlanned,
    #[error("sub-window {asked} asked for, but {published} are published (each once, in order)")]
    OutOfOrder { asked: u32, published: u32 },
    #[error("a published provisional release does not fit this plan: {0}")]
    Foreign(&'static str),
}

/// One window's provisional series as far as it has been published: the
/// noisy count of every interval noised so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProvisionalSeries {
    /// Sub-windows published.
    published: u32,
    measured: BTreeMap<Interval, BTreeMap<RegionCell, [i64; 3]>>,
}

impl ProvisionalSeries {
    /// Sub-windows whose provisional release is out (the next one to
    /// publish is this index).
    pub fn published(&self) -> u32 {
        self.published
    }

    /// Takes in a provisional release found on its topic (after a
    /// restart): its intervals are never noised again. Releases may come
    /// in any order; each adds what it measured.
    pub fn restore(&mut self, meta: &ProvisionalMeta) -> Result<(), ProvisionalError> {
        for interval in &meta.intervals {
            let mut counts = BTreeMap::new();
            for (region, c) in &interval.counts {
                let cell: RegionCell = region
                    .parse()
                    .map_err(|_| ProvisionalError::Foreign("a region is not an H3 cell"))?;
                counts.insert(cell, *c);
            }
            self.measured.insert((interval.start, interval.end), counts);
        }
        self.published = self.published.max(meta.sub_windows_in);
        Ok(())
    }

    /// Noises the intervals that end with sub-window `t` (which must be
    /// the next one) from `counts` (every sub-window's first-record
    /// counts so far; those of later sub-windows are ignored), and makes
    /// the provisional release of the window's first `t + 1` sub-windows.
    ///
    /// The caller has charged the window first
    /// ([`release_provisional`](super::window::release_provisional) does
    /// both, in that order).
    pub fn advance(
        &mut self,
        plan: &ReleasePlan,
        window: Window,
        ledger_entry: &str,
        t: u32,
        counts: &[FirstRecordCounts],
    ) -> Result<Release, ProvisionalError> {
        let series = plan
            .provisional
            .as_ref()
            .ok_or(ProvisionalError::NotPlanned)?;
        if t != self.published || t >= series.tree.sub_windows {
            return Err(ProvisionalError::OutOfOrder {
                asked: t,
                published: self.published,
            });
        }
        let regions: Vec<RegionCell> = series.regions.iter().copied().collect();
        let index: BTreeMap<RegionCell, usize> =
            regions.iter().enumerate().map(|(i, r)| (*r, i)).collect();
        let mut noised = Vec::new();
        for (start, end) in series.tree.completed_at(t) {
            // Every public region, zeros included; records elsewhere are
            // not counted.
            let mut truth = vec![0i64; regions.len() * 3];
            for c in counts {
                if c.sub_window < start || c.sub_window >= end {
                    continue;
                }
                if let Some(&i) = index.get(&c.region) {
                    for (k, n) in c.risk.iter().enumerate() {
                        truth[i * 3 + k] += n;
                    }
                }
            }
            let noisy = series.node.apply(&truth)?;
            let measured: BTreeMap<RegionCell, [i64; 3]> = regions
                .iter()
                .enumerate()
                .map(|(i, r)| (*r, [noisy[i * 3], noisy[i * 3 + 1], noisy[i * 3 + 2]]))
                .collect();
            noised.push(IntervalCounts {
                start,
                end,
                counts: measured.iter().map(|(r, c)| (r.to_string(), *c)).collect(),
            });
            self.measured.insert((start, end), measured);
        }
        self.published = t + 1;
        let variance = series.node.std_dev().powi(2);
        let mut rows = Vec::with_capacity(regions.len());
        for region in &regions {
            let mut risk = [0i64; 3];
            let mut se = 0.0;
            for (k, slot) in risk.iter_mut().enumerate() {
                let measured = |i: Interval| {
                    self.measured
                        .get(&i)
                        .and_then(|m| m.get(region))
                        .map_or(0.0, |c| c[k] as f64)
                };
                let (x, v) = series
                    .tree
                    .cumulative(t + 1, measured, variance)
                    .expect("t is within the window");
                *slot = x.round() as i64;
                se = v.sqrt();
            }
            rows.push(ReleaseRow::from_noisy_counts(
                CellLabel {
                    window_start: window.start_ms,
                    window_end: window.end_ms,
                    level: series.level,
                    region: region.to_string(),
                    age_band: hushmap_schema::release::ALL_AGES.into(),
                },
                risk,
                [0; 10],
                se,
                plan.max_ci_half_width,
            ));
        }
        Ok(Release {
            meta: ReleaseMeta {
                // Risk levels only, all ages: no symptom noise to state.
                symptom_noise_scale: 0.0,
                estimates: Estimates::Consistent,
                provisional: Some(Box::new(ProvisionalMeta {
                    sub_windows_in: t + 1,
                    sub_windows: series.tree.sub_windows,
                    sub_window_ms: series.tree.sub_window_ms(window),
                    through_ms: series.tree.end_ms(window, t),
                    level: series.level,
                    node_noise_scale: series.node.std_dev(),
                    intervals: noised,
                })),
                ..plan_meta(plan, window, ledger_entry, &plan.cost)
            },
            rows,
        })
    }
}

/// The intervals of the complete subtree under `root` (root first, each
/// parent before its children) and its tree shape.
fn subtree(root: Interval) -> (Vec<Interval>, CountTree) {
    let mut nodes = vec![root];
    let mut parent = vec![None];
    let mut i = 0;
    while i < nodes.len() {
        let (start, end) = nodes[i];
        if end - start > 1 {
            let mid = start + (end - start) / 2;
            for child in [(start, mid), (mid, end)] {
                nodes.push(child);
                parent.push(Some(i));
            }
        }
        i += 1;
    }
    let complete = nodes.iter().map(|(s, e)| e - s > 1).collect();
    let tree = CountTree::new(parent, complete).expect("parents come first");
    (nodes, tree)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::consistency::tests::gaussian;
    use rand::SeedableRng;
    use std::collections::HashMap;

    use crate::release::{Mechanism, PlanSpec, ProvisionalSpec};
    use hushmap_schema::WindowLength;

    /// A plan with a provisional series over `sub_windows` at level 5, its
    /// public set the level-7 cells under two level-5 cells.
    pub(crate) fn provisional_plan(epsilon: f64, sub_windows: u32) -> ReleasePlan {
        let public = ["85608b0bfffffff", "85608b0ffffffff"]
            .iter()
            .flat_map(|s| s.parse::<RegionCell>().unwrap().children(7).unwrap())
            .collect();
        ReleasePlan::calibrate(&PlanSpec {
            public_regions: Some(public),
            provisional: Some(ProvisionalSpec {
                share: 0.25,
                sub_windows,
                level: 5,
            }),
            ..PlanSpec::for_tests(Mechanism::Gaussian, epsilon, vec![7, 6, 5])
        })
        .unwrap()
    }

    fn day() -> Window {
        Window::from_start(0, WindowLength::ONE_DAY).unwrap()
    }

    fn cell(s: &str) -> RegionCell {
        s.parse().unwrap()
    }

    #[test]
    fn at_a_huge_budget_each_provisional_release_is_the_first_record_count_so_far() {
        let plan = provisional_plan(1e7, 6);
        let (a, b) = (cell("85608b0bfffffff"), cell("85608b0ffffffff"));
        let counts = [
            FirstRecordCounts {
                sub_window: 0,
                region: a,
                risk: [2, 0, 1],
            },
            FirstRecordCounts {
                sub_window: 2,
                region: a,
                risk: [0, 3, 0],
            },
            FirstRecordCounts {
                sub_window: 3,
                region: b,
                risk: [1, 1, 1],
            },
            FirstRecordCounts {
                sub_window: 5,
                region: b,
                risk: [0, 0, 4],
            },
        ];
        let mut series = ProvisionalSeries::default();
        for t in 0..6u32 {
            let release = series.advance(&plan, day(), "w0", t, &counts).unwrap();
            let meta = release.meta.provisional.as_ref().unwrap();
            assert_eq!(
                (meta.sub_windows_in, meta.through_ms),
                (t + 1, i64::from(t + 1) * 14_400_000)
            );
            assert_eq!(release.rows.len(), 2, "every public region, zeros included");
            for row in &release.rows {
                let region = cell(&row.region);
                let want = counts
                    .iter()
                    .filter(|c| c.region == region && c.sub_window <= t)
                    .fold([0; 3], |acc, c| {
                        [acc[0] + c.risk[0], acc[1] + c.risk[1], acc[2] + c.risk[2]]
                    });
                assert_eq!(
                    [row.n_low, row.n_moderate, row.n_high],
                    want,
                    "after {t}, {region}"
                );
                assert_eq!((row.level, row.age_band.as_str()), (5, "all"));
            }
            // Only the intervals ending now were noised for this release.
            let ends: Vec<u32> = meta.intervals.iter().map(|i| i.end).collect();
            assert!(ends.iter().all(|e| *e == t + 1), "{ends:?}");
            assert_eq!(release.meta.epsilon, plan.cost.epsilon);
        }
        // Past the end, twice, or skipping ahead: refused.
        assert!(matches!(
            series.advance(&plan, day(), "w0", 6, &counts),
            Err(ProvisionalError::OutOfOrder { .. })
        ));
        let mut fresh = ProvisionalSeries::default();
        assert!(matches!(
            fresh.advance(&plan, day(), "w0", 1, &counts),
            Err(ProvisionalError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn a_restored_series_goes_on_from_the_published_measurements_without_noising_them_again() {
        let plan = provisional_plan(1.0, 24);
        let a = cell("85608b0bfffffff");
        let counts: Vec<FirstRecordCounts> = (0..24)
            .map(|t| FirstRecordCounts {
                sub_window: t,
                region: a,
                risk: [5, 2, 1],
            })
            .collect();
        let mut first = ProvisionalSeries::default();
        let published: Vec<Release> = (0..7)
            .map(|t| first.advance(&plan, day(), "w0", t, &counts).unwrap())
            .collect();
        // A restart: the series is rebuilt from what was published, in any
        // order, and continues exactly as the first process would have.
        let mut restored = ProvisionalSeries::default();
        for release in published.iter().rev() {
            restored
                .restore(release.meta.provisional.as_ref().unwrap())
                .unwrap();
        }
        assert_eq!(restored, first);
        assert_eq!(restored.published(), 7);
        let mut again = first.clone();
        // Sub-window 7 completes [7,8), [6,8), [4,8) and [0,8): their
        // children are the restored ones, not fresh draws.
        let next = restored.advance(&plan, day(), "w0", 7, &counts).unwrap();
        let intervals: Vec<(u32, u32)> = next
            .meta
            .provisional
            .as_ref()
            .unwrap()
            .intervals
            .iter()
            .map(|i| (i.start, i.end))
            .collect();
        assert_eq!(intervals, vec![(7, 8), (6, 8), (4, 8), (0, 8)]);
        for (start, end) in [(0, 1), (4, 6), (6, 7)] {
            assert_eq!(
                restored.measured[&(start, end)],
                first.measured[&(start, end)]
            );
        }
        assert!(again.advance(&plan, day(), "w0", 6, &counts).is_err());
    }

    #[test]
    fn a_record_counts_in_the_sub_window_it_was_produced_in() {
        let tree = SubWindowTree::new(24).unwrap();
        let (w, hour) = (day(), 3_600_000);
        assert_eq!(tree.sub_window_ms(w), hour);
        assert_eq!(tree.end_ms(w, 0), hour);
        assert_eq!(tree.end_ms(w, 23), w.end_ms);
        assert_eq!(tree.sub_window_of(w, -60_000), Some(0), "before the window");
        assert_eq!(tree.sub_window_of(w, 2 * hour), Some(2));
        assert_eq!(tree.sub_window_of(w, 2 * hour - 1), Some(1));
        assert_eq!(tree.sub_window_of(w, w.end_ms - 1), Some(23));
        assert_eq!(tree.sub_window_of(w, w.end_ms), None, "in the lateness");
    }

    #[test]
    fn every_interval_is_noised_once_and_each_contributor_touches_one_per_level() {
        let tree = SubWindowTree::new(24).unwrap();
        let mut published = HashMap::new();
        for t in 0..24 {
            for interval in tree.completed_at(t) {
                assert!(
                    published.insert(interval, t).is_none(),
                    "{interval:?} twice"
                );
                // Published as soon as it is complete, never before.
                assert_eq!(interval.1, t + 1);
            }
        }
        for t in 0..24 {
            let holding = tree.intervals_holding(t);
            assert_eq!(holding.len() as u32, tree.levels());
            assert!(holding.iter().all(|(s, e)| *s <= t && t < *e));
            // Those already published are exactly those complete by now.
            for (s, e) in holding {
                assert_eq!(published.contains_key(&(s, e)), e <= 24, "{s}..{e}");
            }
        }
        // The series costs its budget: `levels` nodes at the node budget.
        let rho = 0.25;
        assert!((tree.node_budget(rho) * f64::from(tree.levels()) - rho).abs() < 1e-12);
        assert!(SubWindowTree::new(0).is_err());
        assert_eq!(SubWindowTree::new(1).unwrap().levels(), 1);
    }

    #[test]
    fn exact_counts_give_the_exact_cumulative_count() {
        let tree = SubWindowTree::new(24).unwrap();
        let per_hour: Vec<f64> = (0..32).map(|h| f64::from(h * 7 % 11)).collect();
        let count = |(s, e): Interval| per_hour[s as usize..e as usize].iter().sum::<f64>();
        for n in 1..=24 {
            let (x, v) = tree.cumulative(n, count, 0.0).unwrap();
            assert_eq!(x, per_hour[..n as usize].iter().sum::<f64>(), "after {n}");
            assert_eq!(v, 0.0);
            assert!(tree.cover(n).len() as u32 <= tree.levels());
        }
        assert!(tree.cumulative(0, count, 1.0).is_none());
        assert!(tree.cumulative(25, count, 1.0).is_none());
    }

    #[test]
    fn cumulative_estimates_are_unbiased_with_the_stated_variance_and_beat_the_plain_sum() {
        // Monte Carlo: each interval noised independently with σ = 3.
        let tree = SubWindowTree::new(24).unwrap();
        let per_hour: Vec<f64> = (0..32).map(|h| f64::from(10 + h % 5)).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(19);
        const DRAWS: usize = 5_000;
        let sd = 3.0;
        for n in [1u32, 6, 7, 16, 24] {
            let truth: f64 = per_hour[..n as usize].iter().sum();
            let (mut sum, mut sq, mut stated) = (0.0, 0.0, 0.0);
            for _ in 0..DRAWS {
                let mut noisy: HashMap<Interval, f64> = HashMap::new();
                let mut measured = |i: Interval| {
                    *noisy.entry(i).or_insert_with(|| {
                        per_hour[i.0 as usize..i.1 as usize].iter().sum::<f64>()
                            + gaussian(&mut rng, sd)
                    })
                };
                // Draw every node once, then estimate from the draws.
                for root in tree.cover(n) {
                    for node in subtree(root).0 {
                        measured(node);
                    }
                }
                let (x, v) = tree.cumulative(n, |i| noisy[&i], sd * sd).unwrap();
                sum += x - truth;
                sq += (x - truth).powi(2);
                stated = v;
            }
            let mean = sum / DRAWS as f64;
            let var = sq / DRAWS as f64 - mean * mean;
            assert!(mean.abs() < 0.15, "after {n}: bias {mean}");
            assert!(
                (var / stated - 1.0).abs() < 0.08,
                "after {n}: {var} vs {stated}"
            );
            // Better than adding up the cover's own measurements.
            let plain = tree.cover(n).len() as f64 * sd * sd;
            assert!(stated <= plain + 1e-9, "after {n}: {stated} vs {plain}");
            if tree.cover(n).iter().any(|(s, e)| e - s > 1) {
                assert!(stated < plain, "after {n}: no gain from the children");
            }
        }
    }
}
