//! Consistent estimates from one window's noisy counts: every estimate
//! uses every noisy measurement of its tree, children add up to their
//! parent, and counts are non-negative integers.
//!
//! A window's counts of one statistic and age band form a tree over the
//! released levels (a region at a coarse level, its children at the next
//! finer one). Each released count was measured once, with independent
//! noise of a public variance. [`CountTree::estimate`] finds the weighted
//! least-squares estimate of every count under the tree's sums (Hay et
//! al., "Boosting the accuracy of differentially private histograms
//! through consistency", 2010, generalised to a variance per node as in
//! Cormode et al., "Differentially private spatial decompositions", 2012):
//!
//! 1. bottom up, each node's measurement is combined, by inverse variance,
//!    with the sum of its children's subtree estimates (when that sum is
//!    known: every child present);
//! 2. top down, the difference between a parent's final estimate and its
//!    children's sum is shared among the children in proportion to their
//!    variances, and each final estimate's variance follows (the smoothing
//!    step of a Gaussian tree model; with a flat prior it is the variance
//!    of the least-squares estimator);
//! 3. top down again, the estimates are made non-negative integers that
//!    keep the sums: each parent's children are projected (weighted by
//!    variance) onto the non-negative counts adding up to the parent's
//!    integer, then rounded by largest remainders.
//!
//! A node whose children are not all in the tree (threshold selection
//! left some regions out) keeps their mass: its children may add up to
//! less than it, never more, and its own measurement says nothing about
//! them beyond that.
//!
//! This is post-processing: it reads the noisy measurements and their
//! public variances, nothing else, so it costs no privacy.
//!
//! ```
//! use hushmap_privacy::release::consistency::CountTree;
//!
//! // A parent measured 10 (variance 1) over two children measured 4 and 3.
//! let tree = CountTree::new(vec![None, Some(0), Some(0)], vec![true, false, false]).unwrap();
//! let out = tree.estimate(&[Some(10.0), Some(4.0), Some(3.0)], &[1.0, 1.0, 1.0]);
//! let [p, a, b] = [0, 1, 2].map(|i| out[i].unwrap());
//! assert_eq!(p.count, a.count + b.count);
//! // Each estimate uses all three measurements: less variance than one.
//! assert!(a.variance < 1.0 && p.variance < 1.0);
//! ```

/// Why a tree could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("node {node}'s parent {parent} does not come before it")]
    ParentOrder { node: usize, parent: usize },
    #[error("{parents} parents but {complete} completeness flags")]
    Lengths { parents: usize, complete: usize },
}

/// The shape of a tree of counts, parents before children.
#[derive(Debug, Clone)]
pub struct CountTree {
    pub(crate) parent: Vec<Option<usize>>,
    pub(crate) children: Vec<Vec<usize>>,
    /// Whether a node's children in the tree are all of its children, so
    /// that they add up to it exactly.
    complete: Vec<bool>,
}

/// One node's consistent estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeEstimate {
    /// The published count: non-negative, and its children's counts add up
    /// to it (to at most it when some children are not in the tree).
    pub count: i64,
    /// The least-squares estimate before it was made a non-negative
    /// integer (unbiased, may be negative).
    pub estimate: f64,
    /// The variance of `estimate`'s error.
    pub variance: f64,
}

impl CountTree {
    /// A tree where node `i`'s parent is `parent[i]` (an index below `i`)
    /// and `complete[i]` says whether every child of node `i` is a node.
    pub fn new(parent: Vec<Option<usize>>, complete: Vec<bool>) -> Result<CountTree, TreeError> {
        if parent.len() != complete.len() {
            return Err(TreeError::Lengths {
                parents: parent.len(),
                complete: complete.len(),
            });
        }
        let mut children = vec![Vec::new(); parent.len()];
        for (node, p) in parent.iter().enumerate() {
            if let Some(p) = *p {
                if p >= node {
                    return Err(TreeError::ParentOrder { node, parent: p });
                }
                children[p].push(node);
            }
        }
        Ok(CountTree {
            parent,
            children,
            complete,
        })
    }

    pub fn len(&self) -> usize {
        self.parent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    /// The consistent estimate of every node from `measured` (the noisy
    /// count of each node, `None` where a node was not measured) with the
    /// noise `variance` of each measurement. `None` for a node nothing in
    /// the tree says anything about (not measured, and not every child
    /// known).
    pub fn estimate(
        &self,
        measured: &[Option<f64>],
        variance: &[f64],
    ) -> Vec<Option<NodeEstimate>> {
        let fit = self.fit(measured, variance);
        let count = self.integers(&fit);
        (0..self.len())
            .map(|v| {
                let (estimate, variance) = fit.fitted[v]?;
                Some(NodeEstimate {
                    count: count[v]?,
                    estimate,
                    variance,
                })
            })
            .collect()
    }

    /// Steps 1 and 2: the least-squares estimate of every node and its
    /// variance, before anything is made an integer.
    pub(crate) fn fit(&self, measured: &[Option<f64>], variance: &[f64]) -> TreeFit {
        let n = self.len();
        assert_eq!(measured.len(), n, "one measurement (or None) per node");
        assert_eq!(variance.len(), n, "one variance per node");
        // 1. Bottom up: (estimate, variance) from each subtree alone, and
        //    the children's sum where it is known.
        let mut subtree: Vec<Option<(f64, f64)>> = vec![None; n];
        let mut child_sum: Vec<Option<(f64, f64)>> = vec![None; n];
        for v in (0..n).rev() {
            if self.complete[v] {
                child_sum[v] = self.children[v].iter().try_fold((0.0, 0.0), |(s, var), c| {
                    subtree[*c].map(|(z, zv)| (s + z, var + zv))
                });
            }
            let own = measured[v].map(|y| (y, variance[v].max(0.0)));
            subtree[v] = match (own, child_sum[v]) {
                (Some(own), Some(sum)) => Some(combine(own, sum)),
                (own, sum) => own.or(sum),
            };
        }
        // 2. Top down: the final estimate and its variance.
        let mut fitted: Vec<Option<(f64, f64)>> = vec![None; n];
        for v in 0..n {
            let Some((z, zv)) = subtree[v] else { continue };
            let from_parent = self.parent[v].and_then(|p| fitted[p].zip(child_sum[p]));
            fitted[v] = Some(match from_parent {
                Some(((xp, pp), (s, sv))) if sv > 0.0 => {
                    let gain = zv / sv;
                    (z + gain * (xp - s), (zv - gain * gain * (sv - pp)).max(0.0))
                }
                _ => (z, zv),
            });
        }
        TreeFit {
            fitted,
            exact: child_sum.iter().map(Option::is_some).collect(),
        }
    }

    /// Step 3: non-negative integers keeping the sums, top down.
    pub(crate) fn integers(&self, fit: &TreeFit) -> Vec<Option<i64>> {
        let mut count: Vec<Option<i64>> = vec![None; self.len()];
        for v in 0..self.len() {
            let Some((x, _)) = fit.fitted[v] else {
                continue;
            };
            // A root of what is known: nothing above it assigned it.
            let total = *count[v].get_or_insert_with(|| x.round().max(0.0) as i64);
            let known = self.known_children(fit, v);
            if known.is_empty() {
                continue;
            }
            for (c, k) in known.iter().zip(share_out(&known, total, fit.exact[v])) {
                count[c.0] = Some(k);
            }
        }
        count
    }

    /// Node `v`'s children with an estimate: (index, estimate, variance).
    pub(crate) fn known_children(&self, fit: &TreeFit, v: usize) -> Vec<(usize, f64, f64)> {
        self.children[v]
            .iter()
            .filter_map(|c| fit.fitted[*c].map(|(xc, pc)| (*c, xc, pc)))
            .collect()
    }
}

/// The real-valued least-squares fit of a tree ([`CountTree::fit`]).
#[derive(Debug, Clone)]
pub(crate) struct TreeFit {
    /// Per node: the estimate and its variance, `None` where nothing in
    /// the tree says anything about the node.
    pub fitted: Vec<Option<(f64, f64)>>,
    /// Per node: whether its children in the tree add up to it exactly.
    pub exact: Vec<bool>,
}

/// Two independent unbiased estimates of one count, by inverse variance.
pub(crate) fn combine((a, va): (f64, f64), (b, vb): (f64, f64)) -> (f64, f64) {
    match (va > 0.0, vb > 0.0) {
        (true, true) => {
            let (wa, wb) = (1.0 / va, 1.0 / vb);
            ((a * wa + b * wb) / (wa + wb), 1.0 / (wa + wb))
        }
        // An exact one wins.
        (false, _) => (a, 0.0),
        (true, false) => (b, 0.0),
    }
}

/// Non-negative integers for `children` (index, estimate, variance) that
/// add up to `total` (`exact`) or to at most it, as close to the estimates
/// as the variances allow (a child known less well moves more).
pub(crate) fn share_out(children: &[(usize, f64, f64)], total: i64, exact: bool) -> Vec<i64> {
    let estimates: Vec<f64> = children.iter().map(|c| c.1).collect();
    // A zero variance would pin a child; a floor keeps the projection
    // defined when every child is exact.
    let weights: Vec<f64> = children.iter().map(|c| c.2.max(1e-9)).collect();
    let clamped: Vec<f64> = estimates.iter().map(|x| x.max(0.0)).collect();
    let real = if !exact && clamped.iter().sum::<f64>() <= total as f64 {
        clamped
    } else {
        project(&estimates, &weights, total as f64)
    };
    let target = if exact {
        total
    } else {
        (real.iter().sum::<f64>().round() as i64).min(total)
    };
    round_keeping_sum(&real, target)
}

/// The point of `{x ≥ 0, Σx = total}` nearest `values` in the norm
/// weighted by `1/weights`: `x_i = max(0, v_i − w_i·λ)` for the λ that
/// makes the sum right (found by bisection; the sum falls as λ grows).
fn project(values: &[f64], weights: &[f64], total: f64) -> Vec<f64> {
    let at = |lambda: f64| -> Vec<f64> {
        values
            .iter()
            .zip(weights)
            .map(|(v, w)| (v - w * lambda).max(0.0))
            .collect()
    };
    let sum = |lambda: f64| at(lambda).iter().sum::<f64>();
    if total <= 0.0 {
        return vec![0.0; values.len()];
    }
    let mut hi = values
        .iter()
        .zip(weights)
        .map(|(v, w)| v / w)
        .fold(0.0f64, f64::max);
    let mut lo = -1.0f64;
    while sum(lo) < total {
        lo *= 2.0;
    }
    // 64 halvings leave λ exact to the last bit of an f64.
    for _ in 0..64 {
        let mid = 0.5 * (lo + hi);
        if sum(mid) >= total {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    at(lo)
}

/// Integers adding up to `target`: each value's floor, then one more for
/// the largest remainders (ties to the earlier). Values are non-negative.
pub(crate) fn round_keeping_sum(values: &[f64], target: i64) -> Vec<i64> {
    let mut out: Vec<i64> = values.iter().map(|v| v.max(0.0).floor() as i64).collect();
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|a, b| {
        let fa = values[*a] - values[*a].floor();
        let fb = values[*b] - values[*b].floor();
        fb.total_cmp(&fa).then(a.cmp(b))
    });
    let mut missing = target - out.iter().sum::<i64>();
    // Float error can leave the floors one or two off either way.
    while missing > 0 {
        for &i in &order {
            if missing == 0 {
                break;
            }
            out[i] += 1;
            missing -= 1;
        }
    }
    while missing < 0 {
        for &i in order.iter().rev() {
            if missing == 0 {
                break;
            }
            if out[i] > 0 {
                out[i] -= 1;
                missing += 1;
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A three-level tree: one root, `k` children, `k` grandchildren each;
    /// every node measured.
    pub(crate) fn tree(k: usize) -> (CountTree, Vec<usize>) {
        let mut parent = vec![None];
        let mut level = vec![0];
        for c in 0..k {
            parent.push(Some(0));
            level.push(1);
            let _ = c;
        }
        for c in 0..k {
            for _ in 0..k {
                parent.push(Some(1 + c));
                level.push(2);
            }
        }
        let complete = level.iter().map(|l| *l < 2).collect();
        (CountTree::new(parent, complete).unwrap(), level)
    }

    pub(crate) fn gaussian(rng: &mut impl Rng, sd: f64) -> f64 {
        // Box–Muller: enough for a test of the estimator.
        let (u, v): (f64, f64) = (rng.random(), rng.random());
        sd * (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    #[test]
    fn exact_measurements_come_back_unchanged() {
        let (t, level) = tree(3);
        let mut truth = vec![0.0; t.len()];
        for (i, l) in level.iter().enumerate().rev() {
            if *l == 2 {
                truth[i] = (i * 7 % 11) as f64;
            }
            if let Some(p) = t.parent[i] {
                truth[p] += truth[i];
            }
        }
        let measured: Vec<_> = truth.iter().map(|x| Some(*x)).collect();
        let out = t.estimate(&measured, &vec![4.0; t.len()]);
        for (i, e) in out.iter().enumerate() {
            assert_eq!(e.unwrap().count, truth[i] as i64, "node {i}");
        }
    }

    #[test]
    fn sums_hold_and_counts_are_non_negative_under_heavy_noise() {
        let (t, level) = tree(7);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let variance: Vec<f64> = level.iter().map(|l| [9.0, 25.0, 100.0][*l]).collect();
        for _ in 0..50 {
            let measured: Vec<_> = variance
                .iter()
                .map(|v| Some(1.0 + gaussian(&mut rng, v.sqrt())))
                .collect();
            let out = t.estimate(&measured, &variance);
            for v in 0..t.len() {
                let e = out[v].unwrap();
                assert!(e.count >= 0);
                if !t.children[v].is_empty() {
                    let sum: i64 = t.children[v].iter().map(|c| out[*c].unwrap().count).sum();
                    assert_eq!(sum, e.count, "node {v}");
                }
            }
        }
    }

    #[test]
    fn the_estimator_is_unbiased_with_the_variance_it_states() {
        // Monte Carlo against the closed form: the error's mean and
        // variance at every level, and the gain over one measurement.
        let (t, level) = tree(4);
        let variance: Vec<f64> = level.iter().map(|l| [4.0, 9.0, 16.0][*l]).collect();
        let mut truth = vec![0.0; t.len()];
        for i in (0..t.len()).rev() {
            if level[i] == 2 {
                truth[i] = 50.0 + i as f64;
            }
            if let Some(p) = t.parent[i] {
                truth[p] += truth[i];
            }
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        const DRAWS: usize = 20_000;
        let mut err_sum = vec![0.0; t.len()];
        let mut err_sq = vec![0.0; t.len()];
        let mut stated = vec![0.0; t.len()];
        for _ in 0..DRAWS {
            let measured: Vec<_> = truth
                .iter()
                .zip(&variance)
                .map(|(x, v)| Some(x + gaussian(&mut rng, v.sqrt())))
                .collect();
            let out = t.estimate(&measured, &variance);
            for v in 0..t.len() {
                let e = out[v].unwrap();
                let err = e.estimate - truth[v];
                err_sum[v] += err;
                err_sq[v] += err * err;
                stated[v] = e.variance;
            }
        }
        for v in 0..t.len() {
            let mean = err_sum[v] / DRAWS as f64;
            let var = err_sq[v] / DRAWS as f64 - mean * mean;
            assert!(mean.abs() < 0.1, "node {v}: bias {mean}");
            assert!(
                (var / stated[v] - 1.0).abs() < 0.05,
                "node {v}: variance {var}, stated {}",
                stated[v]
            );
            assert!(stated[v] < variance[v], "node {v}: no gain");
        }
    }

    #[test]
    fn a_parent_with_children_left_out_bounds_them_and_nothing_more() {
        // Root measured 100 over two of its children (the rest were not
        // released): they keep their own estimates, and add up to no more
        // than the root.
        let t = CountTree::new(vec![None, Some(0), Some(0)], vec![false, false, false]).unwrap();
        let out = t.estimate(&[Some(100.0), Some(30.0), Some(20.0)], &[1.0, 1.0, 1.0]);
        let [r, a, b] = [0, 1, 2].map(|i| out[i].unwrap());
        assert_eq!((r.count, a.count, b.count), (100, 30, 20));
        assert_eq!((a.variance, r.variance), (1.0, 1.0));
        // Children over their parent are brought down to it, the less
        // certain one more.
        let out = t.estimate(&[Some(40.0), Some(30.0), Some(20.0)], &[1.0, 1.0, 4.0]);
        let [r, a, b] = [0, 1, 2].map(|i| out[i].unwrap());
        assert_eq!(r.count, 40);
        assert_eq!(a.count + b.count, 40);
        assert!(30 - a.count < 20 - b.count, "{a:?} {b:?}");
    }

    #[test]
    fn an_unmeasured_node_is_its_childrens_sum_or_unknown() {
        // Node 1 was not measured; its children were (complete): it is
        // their sum. Node 2 was not measured and is incomplete: unknown,
        // and its measured child stands on its own.
        let t = CountTree::new(
            vec![None, Some(0), Some(0), Some(1), Some(1), Some(2)],
            vec![true, true, false, false, false, false],
        )
        .unwrap();
        let out = t.estimate(
            &[Some(50.0), None, None, Some(10.0), Some(5.0), Some(7.0)],
            &[1.0; 6],
        );
        assert!(out[2].is_none());
        assert_eq!(
            out[1].unwrap().count,
            out[3].unwrap().count + out[4].unwrap().count
        );
        assert_eq!(out[5].unwrap().count, 7);
        assert!(out[1].unwrap().count <= out[0].unwrap().count);
    }

    #[test]
    fn rounding_keeps_the_sum_and_projection_stays_non_negative() {
        assert_eq!(round_keeping_sum(&[1.4, 1.4, 1.2], 4), [2, 1, 1]);
        assert_eq!(round_keeping_sum(&[0.0, 0.0], 0), [0, 0]);
        let x = project(&[-5.0, 3.0, 10.0], &[1.0, 1.0, 1.0], 6.0);
        assert!(x.iter().all(|v| *v >= 0.0));
        assert!((x.iter().sum::<f64>() - 6.0).abs() < 1e-6);
        assert_eq!(x[0], 0.0);
        assert_eq!(
            share_out(&[(1, -3.0, 1.0), (2, -1.0, 1.0)], 0, true),
            [0, 0]
        );
        assert_eq!(share_out(&[(1, 2.6, 1.0), (2, 2.6, 1.0)], 9, false), [3, 2]);
    }

    #[test]
    fn a_misordered_tree_is_refused() {
        assert_eq!(
            CountTree::new(vec![Some(1), None], vec![false, false]).unwrap_err(),
            TreeError::ParentOrder { node: 0, parent: 1 }
        );
    }
}
