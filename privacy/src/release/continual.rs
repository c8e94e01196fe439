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

use super::consistency::CountTree;
use crate::noise::NoiseError;

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
