//! Consistent estimates of a count split into `B` age bands over a region
//! tree, when the all-ages total may also have been measured on its own.
//!
//! Each node of the [`CountTree`] (a region at some level) holds `B` band
//! counts, each measured with the same public variance `σ²` at that node,
//! and perhaps an all-ages measurement of their sum with variance `τ²`.
//! The weighted least-squares estimate under every sum (children add up to
//! their parent in each band, bands add up to the all-ages total) splits
//! into two independent tree problems, because the band noises at a node
//! are independent with equal variance:
//!
//! * the **total**: the sum of the band measurements (variance `Bσ²`) and
//!   the all-ages measurement combined by inverse variance, fitted over
//!   the tree, giving `T` with variance `V_T`;
//! * the **split**: each band fitted over the tree on its own (`x_b`,
//!   variance `v`), then shifted by the same amount so the bands add up to
//!   `T`: `x_b + (T − Σx)/B`, with variance `(B−1)/B · v + V_T/B²`.
//!
//! Without an all-ages measurement `T = Σx` and nothing moves: the
//! estimate is the per-band one. Counts are then made non-negative
//! integers top down: the totals as in [`CountTree::estimate`], then at
//! each node the table of its children × bands is fitted to both margins
//! (the children's totals and the node's bands) by iterative proportional
//! fitting and rounded so that both margins hold exactly (a rounding that
//! exists for any real table with integer margins; it is found as a flow).
//!
//! Post-processing only: measurements and public variances in, nothing
//! else.
//!
//! ```
//! use hushmap_privacy::release::consistency::CountTree;
//!
//! // A region measured 40 and 20 in two bands (σ² = 4), and 66 for all
//! // ages (τ² = 1): the bands are pulled up to agree with the total.
//! let tree = CountTree::new(vec![None], vec![false]).unwrap();
//! let out = tree.estimate_banded(&[Some([40.0, 20.0])], &[4.0], &[Some(66.0)], &[1.0]);
//! let e = out[0].unwrap();
//! assert_eq!(e.counts.iter().sum::<i64>(), e.total);
//! assert!(e.total > 60 && e.counts[0] > 40);
//! assert!(e.total_variance < 1.0);
//! ```

use super::consistency::{CountTree, TreeFit, combine, round_keeping_sum, share_out};

/// One node's consistent estimate, per band and in total.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandedEstimate<const B: usize> {
    /// Published band counts: non-negative, adding up to `total`, and to
    /// the parent's band counts across siblings.
    pub counts: [i64; B],
    /// Published all-ages count.
    pub total: i64,
    /// Least-squares estimate of each band (unbiased, may be negative).
    pub estimates: [f64; B],
    /// Variance of each band's estimate (the same for every band).
    pub band_variance: f64,
    /// Least-squares estimate of the all-ages total.
    pub total_estimate: f64,
    /// Variance of `total_estimate`.
    pub total_variance: f64,
}

impl CountTree {
    /// The consistent estimates of every node: `bands[v]` the band
    /// measurements of node `v` (each with variance `band_variance[v]`),
    /// `totals[v]` its all-ages measurement when there is one (variance
    /// `total_variance[v]`). `None` for a node nothing says anything about.
    pub fn estimate_banded<const B: usize>(
        &self,
        bands: &[Option<[f64; B]>],
        band_variance: &[f64],
        totals: &[Option<f64>],
        total_variance: &[f64],
    ) -> Vec<Option<BandedEstimate<B>>> {
        let n = self.len();
        assert!(B > 0, "at least one band");
        assert_eq!(bands.len(), n, "band measurements (or None) per node");
        assert_eq!(totals.len(), n, "a total measurement (or None) per node");
        assert_eq!(total_variance.len(), n, "one total variance per node");
        let per_band: Vec<TreeFit> = (0..B)
            .map(|b| {
                let measured: Vec<Option<f64>> = bands.iter().map(|m| m.map(|a| a[b])).collect();
                self.fit(&measured, band_variance)
            })
            .collect();
        // The total's measurements: the bands' sum, and the all-ages count.
        let (combined, combined_variance): (Vec<Option<f64>>, Vec<f64>) = (0..n)
            .map(|v| {
                let sum = bands[v].map(|a| (a.iter().sum::<f64>(), B as f64 * band_variance[v]));
                let own = totals[v].map(|t| (t, total_variance[v]));
                match (sum, own) {
                    (Some(s), Some(t)) => {
                        let (x, var) = combine(s, t);
                        (Some(x), var)
                    }
                    (Some((x, var)), None) | (None, Some((x, var))) => (Some(x), var),
                    (None, None) => (None, 0.0),
                }
            })
            .collect();
        let total_fit = self.fit(&combined, &combined_variance);
        // The split: every band shifted alike onto the total.
        let mut adjusted: Vec<Option<([f64; B], f64)>> = vec![None; n];
        for (v, slot) in adjusted.iter_mut().enumerate() {
            let Some((t, vt)) = total_fit.fitted[v] else {
                continue;
            };
            let mut x = [0.0; B];
            let mut var = 0.0;
            for (b, fit) in per_band.iter().enumerate() {
                let Some((xb, vb)) = fit.fitted[v] else {
                    continue;
                };
                x[b] = xb;
                var = vb;
            }
            let shift = (t - x.iter().sum::<f64>()) / B as f64;
            for xb in &mut x {
                *xb += shift;
            }
            let b = B as f64;
            *slot = Some((x, (b - 1.0) / b * var + vt / (b * b)));
        }
        let total_count = self.integers(&total_fit);
        let band_count = self.band_integers(&total_fit, &total_count, &adjusted);
        (0..n)
            .map(|v| {
                let (total_estimate, total_variance) = total_fit.fitted[v]?;
                let (estimates, band_variance) = adjusted[v]?;
                Some(BandedEstimate {
                    counts: band_count[v]?,
                    total: total_count[v]?,
                    estimates,
                    band_variance,
                    total_estimate,
                    total_variance,
                })
            })
            .collect()
    }

    /// Band counts top down: at a node whose bands are fixed, its
    /// children's bands fill a table whose row sums are the children's
    /// totals (and, when some children are not in the tree, what they
    /// leave) and whose column sums are the node's bands.
    fn band_integers<const B: usize>(
        &self,
        total_fit: &TreeFit,
        total_count: &[Option<i64>],
        adjusted: &[Option<([f64; B], f64)>],
    ) -> Vec<Option<[i64; B]>> {
        let mut count: Vec<Option<[i64; B]>> = vec![None; self.len()];
        for v in 0..self.len() {
            let (Some(total), Some((x, var))) = (total_count[v], adjusted[v]) else {
                continue;
            };
            let own = *count[v].get_or_insert_with(|| {
                let bands: Vec<(usize, f64, f64)> = (0..B).map(|b| (b, x[b], var)).collect();
                share_out(&bands, total, true)
                    .try_into()
                    .expect("one count per band")
            });
            let kids: Vec<usize> = self
                .known_children(total_fit, v)
                .into_iter()
                .map(|(c, _, _)| c)
                .filter(|c| total_count[*c].is_some() && adjusted[*c].is_some())
                .collect();
            if kids.is_empty() {
                continue;
            }
            let mut rows: Vec<i64> = kids.iter().map(|c| total_count[*c].unwrap_or(0)).collect();
            let mut start: Vec<[f64; B]> = kids
                .iter()
                .map(|c| adjusted[*c].map(|(xc, _)| xc).unwrap_or([0.0; B]))
                .collect();
            let left = total - rows.iter().sum::<i64>();
            if left > 0 {
                // Children outside the tree: what the node holds beyond
                // the known ones, band by band.
                let mut rest = x;
                for s in &start {
                    for (r, sb) in rest.iter_mut().zip(s) {
                        *r -= sb;
                    }
                }
                rows.push(left);
                start.push(rest);
            }
            let table = integer_table(&start, &rows, &own);
            for (c, row) in kids.iter().zip(table) {
                count[*c] = Some(row);
            }
        }
        count
    }
}

/// Non-negative integers with row sums `rows` and column sums `cols`
/// (which must agree in total), close to `start`: the real table nearest
/// `start` in proportion (iterative proportional fitting from its
/// non-negative part), then rounded keeping both margins.
pub(crate) fn integer_table<const B: usize>(
    start: &[[f64; B]],
    rows: &[i64],
    cols: &[i64; B],
) -> Vec<[i64; B]> {
    // From the estimates as they are first: when they already fit (huge ε,
    // exact measurements) they come back unchanged. A floor on every
    // entry the margins allow makes the fitting converge when they do not
    // (a row or column of zeros could never be scaled up).
    let fitted = fit_margins(start, rows, cols, 0.0)
        .or_else(|| fit_margins(start, rows, cols, 1e-3))
        .unwrap_or_else(|| even_table(rows, cols));
    round_table(&fitted, rows, cols)
}

/// Iterative proportional fitting of `start`'s non-negative part (plus
/// `floor` where both margins are positive) to the margins; `None` if it
/// does not converge.
fn fit_margins<const B: usize>(
    start: &[[f64; B]],
    rows: &[i64],
    cols: &[i64; B],
    floor: f64,
) -> Option<Vec<[f64; B]>> {
    let mut z: Vec<[f64; B]> = start
        .iter()
        .zip(rows)
        .map(|(s, r)| {
            let mut out = [0.0; B];
            for b in 0..B {
                if *r > 0 && cols[b] > 0 {
                    out[b] = s[b].max(0.0) + floor;
                }
            }
            out
        })
        .collect();
    for _ in 0..1_000 {
        for (row, r) in z.iter_mut().zip(rows) {
            let sum: f64 = row.iter().sum();
            if sum > 0.0 {
                let k = *r as f64 / sum;
                row.iter_mut().for_each(|x| *x *= k);
            }
        }
        for b in 0..B {
            let sum: f64 = z.iter().map(|row| row[b]).sum();
            if sum > 0.0 {
                let k = cols[b] as f64 / sum;
                z.iter_mut().for_each(|row| row[b] *= k);
            }
        }
        let off = |got: f64, want: i64| (got - want as f64).abs() > 1e-9 * (1.0 + want as f64);
        let rows_off = z.iter().zip(rows).any(|(row, r)| off(row.iter().sum(), *r));
        let cols_off = (0..B).any(|b| off(z.iter().map(|row| row[b]).sum(), cols[b]));
        if !rows_off && !cols_off {
            return Some(z);
        }
    }
    None
}

/// The table with the margins' product over their total (what fitting
/// from a constant start gives): a last resort that always fits.
fn even_table<const B: usize>(rows: &[i64], cols: &[i64; B]) -> Vec<[f64; B]> {
    let total = cols.iter().sum::<i64>().max(1) as f64;
    rows.iter()
        .map(|r| std::array::from_fn(|b| *r as f64 * cols[b] as f64 / total))
        .collect()
}

/// Rounds a non-negative real table whose margins are (close to) the
/// integers `rows` and `cols`: each entry goes down or up by less than
/// one, and both margins hold. The entries rounded up are a flow from the
/// rows' shortfalls to the columns' over entries with a fractional part.
fn round_table<const B: usize>(z: &[[f64; B]], rows: &[i64], cols: &[i64; B]) -> Vec<[i64; B]> {
    const EPS: f64 = 1e-7;
    let r = z.len();
    let mut out: Vec<[i64; B]> = z
        .iter()
        .map(|row| row.map(|x| (x + EPS).floor().max(0.0) as i64))
        .collect();
    let need_row: Vec<i64> = (0..r)
        .map(|i| rows[i] - out[i].iter().sum::<i64>())
        .collect();
    let need_col: Vec<i64> = (0..B)
        .map(|b| cols[b] - out.iter().map(|row| row[b]).sum::<i64>())
        .collect();
    // Edges that may take one more: entries with a fractional part first;
    // every entry if that is not enough (float error can hide a part).
    for any_entry in [false, true] {
        let cap: Vec<[bool; B]> = (0..r)
            .map(|i| {
                let mut c = [false; B];
                for b in 0..B {
                    let frac = z[i][b] - out[i][b] as f64;
                    c[b] = any_entry || frac > EPS;
                }
                c
            })
            .collect();
        if let Some(up) = bipartite_flow(&cap, &need_row, &need_col) {
            for (row, add) in out.iter_mut().zip(up) {
                for b in 0..B {
                    row[b] += i64::from(add[b]);
                }
            }
            return out;
        }
    }
    // Not reachable for a table from proportional fitting; rounding row
    // by row still keeps the row sums.
    z.iter()
        .zip(rows)
        .map(|(row, t)| {
            round_keeping_sum(row, *t)
                .try_into()
                .expect("one count per column")
        })
        .collect()
}

/// A 0/1 choice of entries (only where `cap` allows) with `need_row[i]`
/// chosen in row `i` and `need_col[b]` in column `b`, if there is one
/// (augmenting paths; the tables here are a few rows by a few columns).
fn bipartite_flow<const B: usize>(
    cap: &[[bool; B]],
    need_row: &[i64],
    need_col: &[i64],
) -> Option<Vec<[bool; B]>> {
    if need_row.iter().any(|n| *n < 0) || need_col.iter().any(|n| *n < 0) {
        return None;
    }
    if need_row.iter().sum::<i64>() != need_col.iter().sum::<i64>() {
        return None;
    }
    let r = cap.len();
    let mut used: Vec<[bool; B]> = vec![[false; B]; r];
    let mut row_left: Vec<i64> = need_row.to_vec();
    let mut col_left: Vec<i64> = need_col.to_vec();
    // Each augmentation adds one unit from a row with room to a column
    // with room, through alternating (unused forward, used backward)
    // entries.
    loop {
        let Some(start) = (0..r).find(|i| row_left[*i] > 0) else {
            return Some(used);
        };
        // Breadth first over rows; `via[b]` = the row that reached column b.
        let mut via_col: Vec<Option<usize>> = vec![None; B];
        let mut via_row: Vec<Option<usize>> = vec![None; r];
        let mut seen_row = vec![false; r];
        seen_row[start] = true;
        let mut queue = std::collections::VecDeque::from([start]);
        let mut end = None;
        'search: while let Some(i) = queue.pop_front() {
            for b in 0..B {
                if via_col[b].is_some() || !cap[i][b] || used[i][b] {
                    continue;
                }
                via_col[b] = Some(i);
                if col_left[b] > 0 {
                    end = Some(b);
                    break 'search;
                }
                for (k, seen) in seen_row.iter_mut().enumerate() {
                    if !*seen && used[k][b] {
                        *seen = true;
                        via_row[k] = Some(b);
                        queue.push_back(k);
                    }
                }
            }
        }
        let mut b = end?;
        // Walk back: column b from row i (now used), row i from column b'
        // (now unused), … to the start.
        loop {
            let i = via_col[b].expect("reached");
            used[i][b] = true;
            match via_row[i] {
                Some(prev) => {
                    used[i][prev] = false;
                    b = prev;
                }
                None => break,
            }
        }
        row_left[start] -= 1;
        col_left[end.expect("found")] -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::consistency::tests::{gaussian, tree};
    use rand::SeedableRng;

    /// `x` with independent noise of s.d. √`var[node]` on each band.
    fn noisy_bands(rng: &mut impl rand::Rng, x: &[[f64; 3]], var: &[f64]) -> Vec<Option<[f64; 3]>> {
        x.iter()
            .zip(var)
            .map(|(a, v)| Some(a.map(|c| c + gaussian(rng, v.sqrt()))))
            .collect()
    }

    /// Each node's all-ages total of `x`, with noise of s.d. `sd`.
    fn noisy_totals(rng: &mut impl rand::Rng, x: &[[f64; 3]], sd: f64) -> Vec<Option<f64>> {
        x.iter()
            .map(|a| Some(a.iter().sum::<f64>() + gaussian(rng, sd)))
            .collect()
    }

    fn truth(t: &CountTree, level: &[usize]) -> Vec<[f64; 3]> {
        let mut x = vec![[0.0; 3]; t.len()];
        for i in (0..t.len()).rev() {
            if level[i] == 2 {
                x[i] = [20.0 + (i % 5) as f64, 5.0, (i % 3) as f64];
            }
            if let Some(p) = t.parent[i] {
                let child = x[i];
                for (acc, c) in x[p].iter_mut().zip(child) {
                    *acc += c;
                }
            }
        }
        x
    }

    #[test]
    fn without_an_all_ages_measurement_each_band_is_its_own_tree() {
        let (t, level) = tree(3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let var: Vec<f64> = level.iter().map(|l| [4.0, 9.0, 16.0][*l]).collect();
        let x = truth(&t, &level);
        let measured = noisy_bands(&mut rng, &x, &var);
        let out = t.estimate_banded(&measured, &var, &vec![None; t.len()], &vec![0.0; t.len()]);
        for b in 0..3 {
            let alone = t.estimate(
                &measured.iter().map(|m| m.map(|a| a[b])).collect::<Vec<_>>(),
                &var,
            );
            for v in 0..t.len() {
                let (e, a) = (out[v].unwrap(), alone[v].unwrap());
                assert!((e.estimates[b] - a.estimate).abs() < 1e-9, "node {v}");
                assert!((e.band_variance - a.variance).abs() < 1e-9, "node {v}");
            }
        }
    }

    #[test]
    fn every_sum_holds_in_integers_under_heavy_noise() {
        let (t, level) = tree(7);
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let var: Vec<f64> = level.iter().map(|l| [25.0, 64.0, 100.0][*l]).collect();
        let x = truth(&t, &level);
        for _ in 0..30 {
            let bands = noisy_bands(&mut rng, &x, &var);
            let totals = noisy_totals(&mut rng, &x, 5.0);
            let out = t.estimate_banded(&bands, &var, &totals, &vec![25.0; t.len()]);
            for v in 0..t.len() {
                let e = out[v].unwrap();
                assert!(e.counts.iter().all(|c| *c >= 0));
                assert_eq!(e.counts.iter().sum::<i64>(), e.total, "node {v}");
                if !t.children[v].is_empty() {
                    let kids: Vec<_> = t.children[v].iter().map(|c| out[*c].unwrap()).collect();
                    assert_eq!(kids.iter().map(|k| k.total).sum::<i64>(), e.total);
                    for b in 0..3 {
                        let sum: i64 = kids.iter().map(|k| k.counts[b]).sum();
                        assert_eq!(sum, e.counts[b], "node {v} band {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_all_ages_measurement_cuts_the_totals_error_as_stated() {
        // Monte Carlo: unbiased, with the variance stated, bands and total.
        let (t, level) = tree(3);
        let var: Vec<f64> = level.iter().map(|l| [4.0, 9.0, 16.0][*l]).collect();
        let tvar = vec![6.0; t.len()];
        let x = truth(&t, &level);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        const DRAWS: usize = 20_000;
        let n = t.len();
        let (mut te, mut te2, mut be, mut be2) =
            (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        let mut stated = vec![(0.0, 0.0); n];
        for _ in 0..DRAWS {
            let bands = noisy_bands(&mut rng, &x, &var);
            let totals = noisy_totals(&mut rng, &x, 6f64.sqrt());
            let out = t.estimate_banded(&bands, &var, &totals, &tvar);
            for v in 0..n {
                let e = out[v].unwrap();
                let et = e.total_estimate - x[v].iter().sum::<f64>();
                let eb = e.estimates[1] - x[v][1];
                te[v] += et;
                te2[v] += et * et;
                be[v] += eb;
                be2[v] += eb * eb;
                stated[v] = (e.total_variance, e.band_variance);
            }
        }
        let alone = t.fit(&vec![Some(0.0); n], &var);
        for v in 0..n {
            let d = DRAWS as f64;
            let (mt, mb) = (te[v] / d, be[v] / d);
            let (vt, vb) = (te2[v] / d - mt * mt, be2[v] / d - mb * mb);
            assert!(mt.abs() < 0.1 && mb.abs() < 0.1, "node {v}: bias {mt} {mb}");
            assert!(
                (vt / stated[v].0 - 1.0).abs() < 0.05,
                "node {v}: {vt} vs {:?}",
                stated[v]
            );
            assert!(
                (vb / stated[v].1 - 1.0).abs() < 0.05,
                "node {v}: {vb} vs {:?}",
                stated[v]
            );
            // The total is better known than three bands' sum alone.
            let per_band = alone.fitted[v].unwrap().1;
            assert!(stated[v].0 < 3.0 * per_band, "node {v}");
        }
    }

    #[test]
    fn a_parent_with_children_left_out_keeps_their_mass_in_every_band() {
        // Root over two known children of more (not all released).
        let t = CountTree::new(vec![None, Some(0), Some(0)], vec![false, false, false]).unwrap();
        let out = t.estimate_banded(
            &[Some([50.0, 50.0]), Some([10.0, 5.0]), Some([20.0, 5.0])],
            &[1.0; 3],
            &[Some(100.0), None, None],
            &[1.0; 3],
        );
        let [r, a, b] = [0, 1, 2].map(|i| out[i].unwrap());
        assert_eq!(r.total, 100);
        assert_eq!((a.counts, b.counts), ([10, 5], [20, 5]));
        assert!(a.counts[0] + b.counts[0] <= r.counts[0]);
    }

    #[test]
    fn a_table_that_already_fits_comes_back_unchanged() {
        let z = [[5.0, 0.0, 2.0], [0.0, 3.0, 1.0]];
        assert_eq!(
            integer_table(&z, &[7, 4], &[5, 3, 3]),
            [[5, 0, 2], [0, 3, 1]]
        );
    }

    #[test]
    fn tables_round_to_both_margins() {
        let z = [[0.5, 0.5, 1.0], [1.5, 0.25, 0.25]];
        let out = integer_table(&z, &[2, 2], &[2, 1, 1]);
        assert_eq!(
            out.iter()
                .map(|r| r.iter().sum::<i64>())
                .collect::<Vec<_>>(),
            [2, 2]
        );
        for b in 0..3 {
            assert_eq!(out.iter().map(|r| r[b]).sum::<i64>(), [2, 1, 1][b]);
        }
        // A start of all zeros or negatives still fits the margins.
        let out = integer_table(&[[-3.0, -1.0], [0.0, 0.0]], &[3, 1], &[2, 2]);
        assert_eq!(out[0].iter().sum::<i64>(), 3);
        assert_eq!(out[0][0] + out[1][0], 2);
        assert!(out.iter().flatten().all(|c| *c >= 0));
    }
}
