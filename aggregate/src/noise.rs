//! The one noise function of Hushmap, on top of OpenDP's exact samplers.
//!
//! Counts are integers, so noise is integer too: OpenDP's discrete Laplace
//! (pure ε-DP) with exact sampling from a cryptographic RNG (the crate is
//! built with `use-openssl`). No float noise and no hand-written sampler.
//! OpenDP's privacy map, not our arithmetic, has the last word on the cost:
//! the measurement is built, then asked what `d_in` = sensitivity costs.

use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_laplace;
use opendp::measures::MaxDivergence;
use opendp::metrics::L1Distance;

/// Why noise could not be added.
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    #[error("opendp: {0}")]
    OpenDp(String),
    #[error("invalid privacy parameter: {0}")]
    Parameter(&'static str),
}

impl From<opendp::error::Error> for NoiseError {
    fn from(e: opendp::error::Error) -> Self {
        NoiseError::OpenDp(e.to_string())
    }
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
    pub fn calibrate(sensitivity: f64, epsilon: f64) -> Result<DiscreteLaplace, NoiseError> {
        if !(epsilon.is_finite() && epsilon > 0.0) {
            return Err(NoiseError::Parameter(
                "epsilon must be a positive finite number",
            ));
        }
        if !(sensitivity.is_finite() && sensitivity > 0.0) {
            return Err(NoiseError::Parameter(
                "sensitivity must be a positive finite number",
            ));
        }
        let mut scale = sensitivity / epsilon;
        // OpenDP rounds its map conservatively; nudge the scale up until it
        // certifies the target (a few ulps at most).
        for _ in 0..64 {
            let spent = measurement(scale)?.map(&sensitivity)?;
            if spent <= epsilon {
                return Ok(DiscreteLaplace {
                    scale,
                    sensitivity,
                    epsilon: spent,
                });
            }
            scale = scale * (1.0 + 1e-12) + f64::MIN_POSITIVE;
        }
        Err(NoiseError::Parameter(
            "could not calibrate the scale to the budget",
        ))
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

type CountVector = VectorDomain<AtomDomain<i64>>;

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

    #[test]
    fn variance_matches_theory() {
        let m = DiscreteLaplace::calibrate(1.0, 0.5).unwrap();
        let n = 50_000;
        let noisy = m.apply(&vec![0; n]).unwrap();
        let mean = noisy.iter().sum::<i64>() as f64 / n as f64;
        let var = noisy
            .iter()
            .map(|x| (*x as f64 - mean).powi(2))
            .sum::<f64>()
            / (n - 1) as f64;
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
    fn huge_epsilon_adds_no_noise() {
        let m = DiscreteLaplace::calibrate(10.0, 1e6).unwrap();
        let counts: Vec<i64> = (0..1000).collect();
        assert_eq!(m.apply(&counts).unwrap(), counts);
        assert!(m.std_dev() < 1e-6);
    }
}
