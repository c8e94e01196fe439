//! The one noise function of Hushmap, on top of OpenDP's exact samplers.
//!
//! Counts are integers, so noise is integer too, sampled exactly from a
//! cryptographic RNG (the crate is built with `use-openssl`):
//!
//! - [`DiscreteGaussian`] under zero-concentrated DP (ρ), the default: its
//!   cost grows with the L2 sensitivity, which is what the 10-dimensional
//!   symptom vector needs, and ρ composes additively, so a month of windows
//!   costs far less ε than with Laplace;
//! - [`DiscreteLaplace`] under pure ε-DP, for deployments that want δ = 0.
//!
//! No float noise and no hand-written sampler. OpenDP's privacy map, not our
//! arithmetic, has the last word on the cost: the measurement is built, then
//! asked what `d_in` = sensitivity costs. ε(δ) for ρ comes from OpenDP's
//! zCDP → approximate-DP conversion ([`crate::zcdp_epsilon`]).

use opendp::domains::{AtomDomain, MapDomain, VectorDomain};
use opendp::measurements::{
    make_gaussian, make_gaussian_threshold, make_laplace, make_laplace_threshold,
};
use opendp::measures::{Approximate, MaxDivergence, ZeroConcentratedDivergence};
use opendp::metrics::{
    AbsoluteDistance, L0PInfDistance, L1Distance, L01InfDistance, L2Distance, L02InfDistance,
};
use std::collections::{BTreeSet, HashMap};

/// Why noise could not be added.
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    #[error("opendp: {}", crate::conversion::describe_opendp(.0))]
    OpenDp(#[from] opendp::error::Error),
    #[error("invalid privacy parameter: {0}")]
    Parameter(&'static str),
    #[error("a noise thread panicked")]
    ThreadPanicked,
}

impl From<crate::ConversionError> for NoiseError {
    fn from(e: crate::ConversionError) -> Self {
        match e {
            crate::ConversionError::OpenDp(e) => NoiseError::OpenDp(e),
            crate::ConversionError::Parameter(m) => NoiseError::Parameter(m),
        }
    }
}

/// `value` if it is a positive finite number, else `message` as the error.
fn positive(value: f64, message: &'static str) -> Result<f64, NoiseError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(NoiseError::Parameter(message))
    }
}

/// The smallest scale from `start` up whose privacy map `spent` (OpenDP's)
/// certifies at most `budget`: returns the scale, what it spends, and
/// whatever else `spent` worked out for it. OpenDP rounds its maps
/// conservatively, so the scale is nudged up a few ulps at most.
fn certified_scale<T>(
    start: f64,
    budget: f64,
    spent: impl Fn(f64) -> Result<(f64, T), NoiseError>,
) -> Result<(f64, f64, T), NoiseError> {
    let mut scale = start;
    for _ in 0..64 {
        let (cost, extra) = spent(scale)?;
        if cost <= budget {
            return Ok((scale, cost, extra));
        }
        scale = scale * (1.0 + 1e-12) + f64::MIN_POSITIVE;
    }
    Err(NoiseError::Parameter(
        "could not calibrate the scale to the budget",
    ))
}

/// A calibrated discrete Laplace mechanism for integer count vectors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiscreteLaplace {
    /// OpenDP's scale parameter `b` (noise ∝ exp(−|x|/b)).
    pub scale: f64,
    /// The L1 sensitivity the scale was calibrated for.
    pub sensitivity: f64,
    /// ε of one invocation at that sensitivity, from OpenDP's privacy map.
    pub epsilon: f64,
}

impl DiscreteLaplace {
    pub const NAME: &'static str = "discrete_laplace";

    /// The smallest scale whose OpenDP privacy map at `sensitivity` is at
    /// most `epsilon`.
    ///
    /// # Example
    ///
    /// ```
    /// use hushmap_privacy::noise::DiscreteLaplace;
    ///
    /// let laplace = DiscreteLaplace::calibrate(1.0, 0.5).unwrap();
    /// assert!(laplace.epsilon <= 0.5);
    /// // Scale ≈ sensitivity / ε.
    /// assert!((laplace.scale - 2.0).abs() < 0.01, "{}", laplace.scale);
    /// let noisy = laplace.apply(&[10, 0, 3]).unwrap();
    /// assert_eq!(noisy.len(), 3);
    /// assert!(DiscreteLaplace::calibrate(1.0, 0.0).is_err(), "ε = 0 is refused");
    /// ```
    pub fn calibrate(sensitivity: f64, epsilon: f64) -> Result<DiscreteLaplace, NoiseError> {
        positive(epsilon, "epsilon must be a positive finite number")?;
        positive(sensitivity, "sensitivity must be a positive finite number")?;
        let (scale, spent, ()) = certified_scale(sensitivity / epsilon, epsilon, |scale| {
            Ok((measurement(scale)?.map(&sensitivity)?, ()))
        })?;
        Ok(DiscreteLaplace {
            scale,
            sensitivity,
            epsilon: spent,
        })
    }

    /// Adds independent noise to every count.
    pub fn apply(&self, counts: &[i64]) -> Result<Vec<i64>, NoiseError> {
        // Built per call: OpenDP measurements are neither Send nor Sync.
        Ok(measurement(self.scale)?.invoke(&counts.to_vec())?)
    }

    /// Standard deviation of the noise on each count.
    ///
    /// The discrete Laplace with parameter `t = e^{−1/b}` has variance
    /// `2t / (1 − t)²`.
    pub fn std_dev(&self) -> f64 {
        let t = (-1.0 / self.scale).exp();
        (2.0 * t).sqrt() / (1.0 - t)
    }
}

/// A calibrated discrete Gaussian mechanism for integer count vectors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiscreteGaussian {
    /// OpenDP's scale σ (noise ∝ exp(−x²/2σ²) on the integers).
    pub scale: f64,
    /// The L2 sensitivity the scale was calibrated for.
    pub sensitivity: f64,
    /// ρ of one invocation at that sensitivity, from OpenDP's privacy map.
    pub rho: f64,
}

impl DiscreteGaussian {
    pub const NAME: &'static str = "discrete_gaussian";

    /// The smallest scale whose OpenDP privacy map at `sensitivity` is at
    /// most `rho`.
    ///
    /// # Example
    ///
    /// ```
    /// use hushmap_privacy::noise::{CountNoise, DiscreteGaussian};
    /// use hushmap_privacy::sensitivity::ContributionBounds;
    ///
    /// // Risk-level counts of a window, one record per contributor.
    /// let bounds = ContributionBounds::new(1);
    /// let gaussian = DiscreteGaussian::calibrate(bounds.risk_counts_l2(), 0.125).unwrap();
    /// assert!(gaussian.rho <= 0.125);
    /// // σ = Δ₂ / √(2ρ) = 1 / √0.25 = 2.
    /// assert!((gaussian.scale - 2.0).abs() < 0.01, "{}", gaussian.scale);
    /// let noise = CountNoise::Gaussian(gaussian);
    /// assert_eq!(noise.std_dev(), gaussian.std_dev());
    /// assert_eq!(noise.apply(&[5; 100]).unwrap().len(), 100);
    /// ```
    pub fn calibrate(sensitivity: f64, rho: f64) -> Result<DiscreteGaussian, NoiseError> {
        positive(rho, "rho must be a positive finite number")?;
        positive(sensitivity, "sensitivity must be a positive finite number")?;
        // ρ = Δ² / 2σ²
        let (scale, spent, ()) = certified_scale(sensitivity / (2.0 * rho).sqrt(), rho, |scale| {
            Ok((gaussian(scale)?.map(&sensitivity)?, ()))
        })?;
        Ok(DiscreteGaussian {
            scale,
            sensitivity,
            rho: spent,
        })
    }

    /// Adds independent noise to every count.
    pub fn apply(&self, counts: &[i64]) -> Result<Vec<i64>, NoiseError> {
        // Built per call: OpenDP measurements are neither Send nor Sync.
        Ok(gaussian(self.scale)?.invoke(&counts.to_vec())?)
    }

    /// Standard deviation of the noise on each count.
    ///
    /// The discrete Gaussian's variance is a little below σ² for small σ;
    /// it is summed directly over the support (terms beyond 40σ are below
    /// f64 precision).
    pub fn std_dev(&self) -> f64 {
        let s2 = self.scale * self.scale;
        if s2 < 1e-6 {
            return 0.0;
        }
        let reach = (40.0 * self.scale).ceil() as i64 + 1;
        let (mut mass, mut second) = (1.0, 0.0);
        for k in 1..=reach {
            let w = (-((k * k) as f64) / (2.0 * s2)).exp();
            mass += 2.0 * w;
            second += 2.0 * (k * k) as f64 * w;
        }
        (second / mass).sqrt()
    }
}

/// One of the two mechanisms, as the release step uses it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CountNoise {
    Gaussian(DiscreteGaussian),
    Laplace(DiscreteLaplace),
}

/// Counts below this are noised on the calling thread; above, the vector is
/// split across the cores (exact sampling runs at ~10⁵ draws/s per thread,
/// so a release's noise cost is cells × statistics).
const PARALLEL_NOISE_MIN: usize = 1024;

impl CountNoise {
    /// Adds independent noise to every count, on every core for long
    /// vectors (each thread builds its own OpenDP measurement: they are
    /// neither Send nor Sync). Independent draws per count either way.
    pub fn apply(&self, counts: &[i64]) -> Result<Vec<i64>, NoiseError> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if counts.len() < PARALLEL_NOISE_MIN || threads < 2 {
            return self.apply_here(counts);
        }
        let chunk = counts.len().div_ceil(threads);
        let parts: Vec<Result<Vec<i64>, NoiseError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = counts
                .chunks(chunk)
                .map(|part| scope.spawn(move || self.apply_here(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(NoiseError::ThreadPanicked)))
                .collect()
        });
        let mut out = Vec::with_capacity(counts.len());
        for part in parts {
            out.extend(part?);
        }
        Ok(out)
    }

    fn apply_here(&self, counts: &[i64]) -> Result<Vec<i64>, NoiseError> {
        match self {
            CountNoise::Gaussian(m) => m.apply(counts),
            CountNoise::Laplace(m) => m.apply(counts),
        }
    }

    pub fn std_dev(&self) -> f64 {
        match self {
            CountNoise::Gaussian(m) => m.std_dev(),
            CountNoise::Laplace(m) => m.std_dev(),
        }
    }
}

/// OpenDP's threshold mechanism for choosing which partitions (regions) a
/// release contains: every partition's count gets noise, and only those
/// whose noisy count reaches `threshold` are kept. A partition that only one
/// contributor's records could have created is dropped with probability at
/// least 1 − δ, so the presence of a region no longer leaks anyone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdSelector {
    pub noise: ThresholdNoise,
    /// Noisy counts below this are dropped.
    pub threshold: i64,
    /// (l0, l2, l∞) bound on one contributor's effect on the partition
    /// counts: partitions touched, and how much they move.
    pub sensitivity: (u32, i64, i64),
    /// Cost at `sensitivity`: ρ (Gaussian) or ε (Laplace), and δ.
    pub cost: f64,
    pub delta: f64,
}

/// The noise distribution of a [`ThresholdSelector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdNoise {
    Gaussian { scale: f64 },
    Laplace { scale: f64 },
}

type PartitionCounts = MapDomain<AtomDomain<u64>, AtomDomain<i64>>;

/// An OpenDP threshold measurement of either kind; both are mapped and
/// invoked the same way.
enum ThresholdMeasurement {
    Gaussian(
        opendp::core::Measurement<
            PartitionCounts,
            L02InfDistance<AbsoluteDistance<i64>>,
            Approximate<ZeroConcentratedDivergence>,
            HashMap<u64, i64>,
        >,
    ),
    Laplace(
        opendp::core::Measurement<
            PartitionCounts,
            L01InfDistance<AbsoluteDistance<i64>>,
            Approximate<MaxDivergence>,
            HashMap<u64, i64>,
        >,
    ),
}

impl ThresholdMeasurement {
    /// Built per use: OpenDP measurements are neither Send nor Sync.
    fn new(noise: ThresholdNoise, threshold: i64) -> Result<ThresholdMeasurement, NoiseError> {
        let domain = PartitionCounts::new(AtomDomain::default(), AtomDomain::default());
        // The metric's P (2 for Gaussian, 1 for Laplace) is inferred per arm.
        Ok(match noise {
            ThresholdNoise::Gaussian { scale } => {
                ThresholdMeasurement::Gaussian(make_gaussian_threshold(
                    domain,
                    L0PInfDistance(AbsoluteDistance::default()),
                    scale,
                    threshold,
                    None,
                )?)
            }
            ThresholdNoise::Laplace { scale } => {
                ThresholdMeasurement::Laplace(make_laplace_threshold(
                    domain,
                    L0PInfDistance(AbsoluteDistance::default()),
                    scale,
                    threshold,
                    None,
                )?)
            }
        })
    }

    /// (cost, δ) at `sensitivity`: cost is ρ (Gaussian) or ε (Laplace).
    fn map(&self, sensitivity: &(u32, i64, i64)) -> Result<(f64, f64), NoiseError> {
        Ok(match self {
            ThresholdMeasurement::Gaussian(m) => m.map(sensitivity)?,
            ThresholdMeasurement::Laplace(m) => m.map(sensitivity)?,
        })
    }

    fn invoke(&self, counts: &HashMap<u64, i64>) -> Result<HashMap<u64, i64>, NoiseError> {
        Ok(match self {
            ThresholdMeasurement::Gaussian(m) => m.invoke(counts)?,
            ThresholdMeasurement::Laplace(m) => m.invoke(counts)?,
        })
    }
}

impl ThresholdNoise {
    fn with_scale(self, scale: f64) -> ThresholdNoise {
        match self {
            ThresholdNoise::Gaussian { .. } => ThresholdNoise::Gaussian { scale },
            ThresholdNoise::Laplace { .. } => ThresholdNoise::Laplace { scale },
        }
    }

    fn scale(self) -> f64 {
        match self {
            ThresholdNoise::Gaussian { scale } | ThresholdNoise::Laplace { scale } => scale,
        }
    }
}

impl ThresholdSelector {
    /// Calibrates a Gaussian threshold to at most (`rho`, `delta`) per
    /// OpenDP's privacy map.
    ///
    /// # Example
    ///
    /// ```
    /// use hushmap_privacy::noise::ThresholdSelector;
    /// use hushmap_privacy::sensitivity::ContributionBounds;
    /// use std::collections::HashMap;
    ///
    /// let bounds = ContributionBounds::new(1);
    /// let selector = ThresholdSelector::gaussian(bounds.region_totals(), 0.05, 1e-8).unwrap();
    /// // A region one person could have created is almost never kept; a
    /// // region with a thousand contributors almost always is.
    /// let counts = HashMap::from([(1u64, 1i64), (2, 1_000)]);
    /// let kept = selector.select(counts).unwrap();
    /// assert!(!kept.contains(&1));
    /// assert!(kept.contains(&2));
    /// assert!(selector.threshold > 1);
    /// ```
    pub fn gaussian(
        sensitivity: (u32, i64, i64),
        rho: f64,
        delta: f64,
    ) -> Result<ThresholdSelector, NoiseError> {
        positive(rho, "rho must be a positive finite number")?;
        let scale = sensitivity.1 as f64 / (2.0 * rho).sqrt();
        Self::calibrate(ThresholdNoise::Gaussian { scale }, sensitivity, rho, delta)
    }

    /// Calibrates a Laplace threshold to at most (`epsilon`, `delta`).
    pub fn laplace(
        sensitivity: (u32, i64, i64),
        epsilon: f64,
        delta: f64,
    ) -> Result<ThresholdSelector, NoiseError> {
        positive(epsilon, "epsilon must be a positive finite number")?;
        // l0 partitions, each moved by at most l∞: L1 ≤ l0·l∞.
        let scale = f64::from(sensitivity.0) * sensitivity.2 as f64 / epsilon;
        Self::calibrate(
            ThresholdNoise::Laplace { scale },
            sensitivity,
            epsilon,
            delta,
        )
    }

    fn calibrate(
        noise: ThresholdNoise,
        sensitivity: (u32, i64, i64),
        budget: f64,
        delta: f64,
    ) -> Result<ThresholdSelector, NoiseError> {
        if !(delta > 0.0 && delta < 1.0) {
            return Err(NoiseError::Parameter("delta must be in (0, 1)"));
        }
        let (scale, cost, (threshold, spent_delta)) =
            certified_scale(noise.scale(), budget, |scale| {
                let noise = noise.with_scale(scale);
                let threshold = Self::lowest_threshold(noise, sensitivity, delta)?;
                let (cost, spent_delta) =
                    ThresholdMeasurement::new(noise, threshold)?.map(&sensitivity)?;
                Ok((cost, (threshold, spent_delta)))
            })?;
        Ok(ThresholdSelector {
            noise: noise.with_scale(scale),
            threshold,
            sensitivity,
            cost,
            delta: spent_delta,
        })
    }

    /// The lowest threshold whose δ OpenDP certifies at most `delta`: δ
    /// falls as the threshold rises, so double, then bisect.
    fn lowest_threshold(
        noise: ThresholdNoise,
        sensitivity: (u32, i64, i64),
        delta: f64,
    ) -> Result<i64, NoiseError> {
        let delta_at = |t: i64| -> Result<f64, NoiseError> {
            Ok(ThresholdMeasurement::new(noise, t)?.map(&sensitivity)?.1)
        };
        let mut hi = sensitivity.2.max(1);
        while delta_at(hi)? > delta {
            hi = hi
                .checked_mul(2)
                .ok_or(NoiseError::Parameter("no threshold reaches this delta"))?;
        }
        let mut lo = sensitivity.2.max(1) - 1;
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if delta_at(mid).map(|d| d <= delta).unwrap_or(false) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(hi)
    }

    /// The partitions (by key) whose noisy count reaches the threshold.
    pub fn select(&self, counts: HashMap<u64, i64>) -> Result<BTreeSet<u64>, NoiseError> {
        let kept = ThresholdMeasurement::new(self.noise, self.threshold)?.invoke(&counts)?;
        // The noisy counts themselves are not used: only which keys survived.
        Ok(kept.into_keys().collect())
    }
}

type CountVector = VectorDomain<AtomDomain<i64>>;

fn gaussian(
    scale: f64,
) -> Result<
    opendp::core::Measurement<CountVector, L2Distance<f64>, ZeroConcentratedDivergence, Vec<i64>>,
    NoiseError,
> {
    Ok(make_gaussian(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L2Distance::<f64>::default(),
        scale,
        None,
    )?)
}

fn measurement(
    scale: f64,
) -> Result<
    opendp::core::Measurement<CountVector, L1Distance<f64>, MaxDivergence, Vec<i64>>,
    NoiseError,
> {
    Ok(make_laplace(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L1Distance::<f64>::default(),
        scale,
        None,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The noise's randomness is OpenSSL's CSPRNG, so the OpenSSL linked
    /// must be one that gets security fixes: the system's (the
    /// distribution updates it), never the 3.3.1 of June 2024 that OpenDP's
    /// `use-openssl` would otherwise vendor (`.cargo/config.toml`).
    #[test]
    fn the_noise_draws_from_the_systems_openssl_not_a_vendored_copy() {
        let linked = openssl::version::version();
        let out = std::process::Command::new("pkg-config")
            .args(["--modversion", "openssl"])
            .output()
            .expect("pkg-config runs (the build found OpenSSL with it)");
        let system = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && !system.is_empty(),
            "pkg-config knows no OpenSSL"
        );
        assert!(
            linked.starts_with(&format!("OpenSSL {system} ")),
            "linked {linked:?}, but the system's OpenSSL is {system}: a vendored copy was built in"
        );
    }

    #[test]
    fn calibration_meets_the_budget_per_opendp() {
        for (sens, eps) in [(1.0, 1.0), (10.0, 0.5), (3.0, 0.1), (1.0, 1e6)] {
            let m = DiscreteLaplace::calibrate(sens, eps).unwrap();
            assert!(m.epsilon <= eps);
            assert!(
                m.epsilon > eps * 0.999,
                "calibration wastes budget: {} vs {eps}",
                m.epsilon
            );
        }
        assert!(DiscreteLaplace::calibrate(1.0, 0.0).is_err());
        assert!(DiscreteLaplace::calibrate(0.0, 1.0).is_err());
        assert!(DiscreteLaplace::calibrate(1.0, f64::NAN).is_err());
    }

    /// Sample mean and (unbiased) variance of noise draws.
    fn mean_and_variance(draws: &[i64]) -> (f64, f64) {
        let n = draws.len() as f64;
        let mean = draws.iter().sum::<i64>() as f64 / n;
        let var = draws
            .iter()
            .map(|x| (*x as f64 - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        (mean, var)
    }

    #[test]
    fn variance_matches_theory() {
        let m = DiscreteLaplace::calibrate(1.0, 0.5).unwrap();
        let n = 50_000;
        let (mean, var) = mean_and_variance(&m.apply(&vec![0; n]).unwrap());
        let expected = m.std_dev().powi(2);
        // Var of the sample variance for this distribution is small enough
        // that ±6% is a 6-sigma band at n = 50k.
        assert!(
            (var / expected - 1.0).abs() < 0.06,
            "var {var} vs {expected}"
        );
        assert!(mean.abs() < 0.1, "mean {mean}");
    }

    #[test]
    fn gaussian_calibration_meets_rho_per_opendp() {
        for (sens, rho) in [(1.0, 0.5), (10f64.sqrt(), 0.01), (2.0, 1e6)] {
            let m = DiscreteGaussian::calibrate(sens, rho).unwrap();
            assert!(m.rho <= rho);
            assert!(m.rho > rho * 0.999, "wastes budget: {} vs {rho}", m.rho);
        }
        assert!(DiscreteGaussian::calibrate(1.0, 0.0).is_err());
        assert!(DiscreteGaussian::calibrate(f64::INFINITY, 1.0).is_err());
    }

    #[test]
    fn gaussian_variance_matches_theory() {
        for rho in [0.5, 0.05] {
            let m = DiscreteGaussian::calibrate(1.0, rho).unwrap();
            let n = 50_000;
            let (mean, var) = mean_and_variance(&m.apply(&vec![0; n]).unwrap());
            let expected = m.std_dev().powi(2);
            // Gaussian-like tails: s.d. of the sample variance ≈ var·√(2/n)
            // = 0.63%; ±4% is beyond 6 sigma.
            assert!(
                (var / expected - 1.0).abs() < 0.04,
                "rho {rho}: var {var} vs {expected}"
            );
            assert!(mean.abs() < 0.1, "mean {mean}");
        }
        // For large σ the discrete Gaussian's variance tends to σ².
        let wide = DiscreteGaussian::calibrate(1.0, 0.001).unwrap();
        assert!((wide.std_dev() / wide.scale - 1.0).abs() < 1e-6);
    }

    #[test]
    fn threshold_meets_its_budget_and_drops_lone_partitions() {
        let g = ThresholdSelector::gaussian((1, 1, 1), 0.05, 1e-8).unwrap();
        assert!(g.cost <= 0.05 && g.delta <= 1e-8);
        // With σ ≈ 3.2 a threshold that a lone record passes w.p. ≤ 1e-8
        // sits many σ above 1.
        assert!(g.threshold > 10, "threshold {}", g.threshold);
        let l = ThresholdSelector::laplace((1, 1, 1), 0.1, 1e-8).unwrap();
        assert!(l.cost <= 0.1 && l.delta <= 1e-8);
        for sel in [g, l] {
            let counts: HashMap<u64, i64> = HashMap::from([(1, 1), (2, 5), (3, 100_000), (4, 0)]);
            let kept = sel.select(counts).unwrap();
            assert!(kept.contains(&3), "a large partition is kept");
            assert!(!kept.contains(&1) && !kept.contains(&4));
        }
        // Looser δ, lower threshold.
        let loose = ThresholdSelector::gaussian((1, 1, 1), 0.05, 1e-3).unwrap();
        assert!(loose.threshold < g.threshold);
    }

    #[test]
    fn huge_epsilon_adds_no_noise() {
        let m = DiscreteLaplace::calibrate(10.0, 1e6).unwrap();
        let counts: Vec<i64> = (0..1000).collect();
        assert_eq!(m.apply(&counts).unwrap(), counts);
        assert!(m.std_dev() < 1e-6);
        let rho = crate::zcdp_rho_for(1e6, 1e-8).unwrap();
        let g = DiscreteGaussian::calibrate(10f64.sqrt(), rho).unwrap();
        assert_eq!(g.apply(&counts).unwrap(), counts);
        assert!(g.std_dev() < 1e-6);
    }
}
