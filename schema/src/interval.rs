//! Confidence intervals for a noisy share, computed from released numbers.
//!
//! Everything here is post-processing of already-noised counts, so it costs
//! no privacy budget and anyone can recompute it from a release.
//!
//! The high-risk share is a ratio of two noisy counts, `h = H + e_h` and
//! `t = T + e_l + e_m + e_h`, with independent noise of standard deviation
//! σ on each risk-level count. We use Fieller's interval for a ratio of
//! (approximately) normal variables: the set of θ with
//! `(h − θt)² ≤ z²·Var(e_h − θ·e_t)`, where `Var(e_h) = σ²`, `Var(e_t) = 3σ²`
//! and `Cov(e_h, e_t) = σ²`. It is exact for Gaussian noise, needs no
//! linearisation, and is unbounded (here: the whole `[0, 1]`) when the total
//! is too noisy to say anything, which is precisely when a cell must be
//! suppressed. The result is intersected with `[0, 1]`, where the share lies.

/// z for a two-sided 95% interval.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// A share with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShareInterval {
    /// `n_high / n_total`, `None` when the total is zero.
    pub share: Option<f64>,
    pub low: f64,
    pub high: f64,
}

impl ShareInterval {
    /// The 95% interval of the true high-risk share given released counts
    /// and the per-count noise standard deviation `sigma`.
    ///
    /// ```
    /// use hushmap_schema::ShareInterval;
    /// let ci = ShareInterval::for_high_share(50, 200, 2.0);
    /// assert_eq!(ci.share, Some(0.25));
    /// assert!(ci.low < 0.25 && 0.25 < ci.high && ci.high - ci.low < 0.05);
    /// // A handful of noisy submissions say nothing:
    /// let ci = ShareInterval::for_high_share(1, 3, 10.0);
    /// assert_eq!((ci.low, ci.high), (0.0, 1.0));
    /// ```
    pub fn for_high_share(n_high: i64, n_total: i64, sigma: f64) -> ShareInterval {
        let share = (n_total > 0).then(|| n_high as f64 / n_total as f64);
        let (low, high) = fieller(
            n_high as f64,
            n_total as f64,
            sigma * sigma,
            3.0 * sigma * sigma,
            sigma * sigma,
            Z_95,
        );
        ShareInterval { share, low, high }
    }

    /// Half the interval's width, the figure suppression is decided on.
    pub fn half_width(&self) -> f64 {
        (self.high - self.low) / 2.0
    }
}

/// Fieller's interval for `a / b`, clipped to `[0, 1]`.
fn fieller(a: f64, b: f64, var_a: f64, var_b: f64, cov: f64, z: f64) -> (f64, f64) {
    let z2 = z * z;
    // (b² − z²·var_b)θ² − 2(ab − z²·cov)θ + (a² − z²·var_a) ≤ 0
    let qa = b * b - z2 * var_b;
    let qb = -2.0 * (a * b - z2 * cov);
    let qc = a * a - z2 * var_a;
    if qa <= 0.0 {
        // The denominator is not distinguishable from zero: no bounded set.
        return (0.0, 1.0);
    }
    let disc = qb * qb - 4.0 * qa * qc;
    if disc < 0.0 {
        return (0.0, 1.0);
    }
    let root = disc.sqrt();
    let lo = (-qb - root) / (2.0 * qa);
    let hi = (-qb + root) / (2.0 * qa);
    (lo.clamp(0.0, 1.0), hi.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_noise_means_a_point() {
        let ci = ShareInterval::for_high_share(30, 120, 0.0);
        assert_eq!(ci.share, Some(0.25));
        assert!((ci.low - 0.25).abs() < 1e-12 && (ci.high - 0.25).abs() < 1e-12);
    }

    #[test]
    fn zero_total_has_no_share() {
        let ci = ShareInterval::for_high_share(0, 0, 1.0);
        assert_eq!(ci.share, None);
        assert_eq!((ci.low, ci.high), (0.0, 1.0));
    }

    #[test]
    fn width_shrinks_with_more_data() {
        let small = ShareInterval::for_high_share(10, 40, 3.0);
        let large = ShareInterval::for_high_share(1000, 4000, 3.0);
        assert!(large.half_width() < small.half_width());
        assert!(large.half_width() < 0.01);
    }

    /// Coverage under Gaussian noise, with a deterministic generator so the
    /// test is reproducible: the interval must contain the truth close to
    /// 95% of the time.
    #[test]
    fn covers_the_truth_at_nominal_rate() {
        // Box–Muller over a simple LCG; good enough for a coverage check.
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut uniform = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let mut normal = move || {
            let (u1, u2) = (uniform(), uniform());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        };
        let (h, l, m, sigma) = (60.0, 100.0, 40.0, 6.0);
        let truth = h / (h + l + m);
        let trials = 20_000;
        let mut covered = 0;
        for _ in 0..trials {
            let nh = h + sigma * normal();
            let nl = l + sigma * normal();
            let nm = m + sigma * normal();
            let (lo, hi) = fieller(
                nh,
                nh + nl + nm,
                sigma * sigma,
                3.0 * sigma * sigma,
                sigma * sigma,
                Z_95,
            );
            if lo <= truth && truth <= hi {
                covered += 1;
            }
        }
        let rate = covered as f64 / trials as f64;
        assert!((rate - 0.95).abs() < 0.01, "coverage {rate}");
    }
}
