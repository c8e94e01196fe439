//! Contribution bounds and the sensitivities that follow from them.
//!
//! This is the one place sensitivities are derived. The noise is calibrated
//! from these numbers, so they must be true for the data the engine hands
//! to the noise step; `engine` enforces the bound and the tests here check
//! the derivation on neighbouring datasets.
//!
//! Neighbouring datasets differ by all records of one contributor. After
//! bounding, a contributor has at most `m` records in a window. Each record
//! adds 1 to exactly one risk-level count of one cell, and 1 to each of at
//! most 10 symptom counts of one cell. Hence, over the vector of all cells:
//!
//! | statistic          | L1       | L2          |
//! |--------------------|----------|-------------|
//! | risk-level counts  | `m`      | `m`         |
//! | symptom counts     | `10·m`   | `√10 · m`   |
//!
//! (The L2 figures are the worst case of all `m` records in one cell.)
//! The all-ages risk counts (each region's bands summed) have the
//! risk-level counts' sensitivities: summing cells moves no norm beyond
//! `m`, and all `m` records in one cell already reach it.
//!
//! For partition selection, the per-region totals: one contributor touches
//! at most `m` regions (l0), and moves each total, and their L2 norm, by at
//! most `m` (l∞, l2).

use hushmap_schema::Symptom;

/// How much one contributor may add to a window's data.
///
/// The engine keeps at most `max_records_per_window` records of each
/// contributor in a window; every sensitivity the noise is calibrated to
/// follows from that number alone.
///
/// # Example
///
/// ```
/// use hushmap_privacy::sensitivity::ContributionBounds;
///
/// let bounds = ContributionBounds::new(2);
/// // Each record adds 1 to one risk-level count: two records move the
/// // vector by 2 in either norm.
/// assert_eq!(bounds.risk_counts_l1(), 2.0);
/// // ... and 1 to each of up to 10 symptom counts.
/// assert_eq!(bounds.symptom_counts_l1(), 20.0);
/// assert!((bounds.symptom_counts_l2() - 2.0 * 10f64.sqrt()).abs() < 1e-12);
/// // At least one record is always allowed.
/// assert_eq!(ContributionBounds::new(0).max_records_per_window, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContributionBounds {
    /// Records per contributor per window (the latest ones are kept).
    pub max_records_per_window: u32,
}

impl ContributionBounds {
    pub fn new(max_records_per_window: u32) -> ContributionBounds {
        ContributionBounds {
            max_records_per_window: max_records_per_window.max(1),
        }
    }

    fn m(&self) -> f64 {
        f64::from(self.max_records_per_window)
    }

    pub fn risk_counts_l1(&self) -> f64 {
        self.m()
    }

    pub fn risk_counts_l2(&self) -> f64 {
        self.m()
    }

    pub fn symptom_counts_l1(&self) -> f64 {
        Symptom::ALL.len() as f64 * self.m()
    }

    pub fn symptom_counts_l2(&self) -> f64 {
        (Symptom::ALL.len() as f64).sqrt() * self.m()
    }

    /// (l0, l2, l∞) of the per-region totals, as OpenDP's threshold
    /// mechanism takes it.
    pub fn region_totals(&self) -> (u32, i64, i64) {
        let m = self.max_records_per_window;
        (m, i64::from(m), i64::from(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-cell counts from a list of (cell, risk, symptom bits) records.
    fn counts(records: &[(usize, usize, u16)], cells: usize) -> (Vec<i64>, Vec<i64>) {
        let mut risk = vec![0i64; cells * 3];
        let mut sym = vec![0i64; cells * 10];
        for &(cell, r, bits) in records {
            risk[cell * 3 + r] += 1;
            for s in 0..10 {
                if bits & (1 << s) != 0 {
                    sym[cell * 10 + s] += 1;
                }
            }
        }
        (risk, sym)
    }

    fn norms(a: &[i64], b: &[i64]) -> (f64, f64) {
        let l1 = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).sum();
        let l2 = a
            .iter()
            .zip(b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        (l1, l2)
    }

    #[test]
    fn removing_one_bounded_contributor_moves_counts_within_the_stated_sensitivity() {
        // Deterministic pseudo-random datasets; each "contributor" has m records.
        let mut state = 7u64;
        let mut next = move |n: u64| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((state >> 33) % n) as usize
        };
        for m in 1..=3u32 {
            let bounds = ContributionBounds::new(m);
            for _ in 0..200 {
                let others: Vec<_> = (0..50)
                    .map(|_| (next(4), next(3), next(1024) as u16))
                    .collect();
                // The extra contributor: m records, worst case all in one cell and one risk level.
                let same_cell = next(2) == 0;
                let extra: Vec<_> = (0..m)
                    .map(|_| {
                        if same_cell {
                            (0, 2, 0x3FF)
                        } else {
                            (next(4), next(3), next(1024) as u16)
                        }
                    })
                    .collect();
                let (r0, s0) = counts(&others, 4);
                let with: Vec<_> = others.iter().chain(&extra).copied().collect();
                let (r1, s1) = counts(&with, 4);
                let (rl1, rl2) = norms(&r0, &r1);
                let (sl1, sl2) = norms(&s0, &s1);
                assert!(rl1 <= bounds.risk_counts_l1() + 1e-9);
                assert!(rl2 <= bounds.risk_counts_l2() + 1e-9);
                assert!(sl1 <= bounds.symptom_counts_l1() + 1e-9);
                assert!(sl2 <= bounds.symptom_counts_l2() + 1e-9);
                // Region totals (each test cell standing for a region).
                let totals =
                    |r: &[i64]| -> Vec<i64> { r.chunks(3).map(|c| c.iter().sum()).collect() };
                let (t0, t1) = (totals(&r0), totals(&r1));
                let (l0_bound, l2_bound, linf_bound) = bounds.region_totals();
                let moved: Vec<i64> = t0.iter().zip(&t1).map(|(a, b)| (a - b).abs()).collect();
                assert!(moved.iter().filter(|d| **d != 0).count() as u32 <= l0_bound);
                assert!(moved.iter().all(|d| *d <= linf_bound));
                assert!(norms(&t0, &t1).1 <= l2_bound as f64 + 1e-9);
                if same_cell {
                    // The bound is tight: the worst case reaches it.
                    assert_eq!(rl1, bounds.risk_counts_l1());
                    assert!((sl2 - bounds.symptom_counts_l2()).abs() < 1e-9);
                }
            }
        }
    }
}
