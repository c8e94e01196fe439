//! zCDP → approximate DP: OpenDP's conversion (Canonne, Kamath and Steinke
//! 2020, as `make_zCDP_to_approxDP` implements it), and its inverse by
//! bisection. OpenDP has the last word on every figure here.

use opendp::combinators::ConcentratedMeasure;
use opendp::measures::ZeroConcentratedDivergence;

/// Why a conversion could not be made.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ConversionError {
    #[error("opendp: {}", describe_opendp(.0))]
    OpenDp(#[from] opendp::error::Error),
    #[error("invalid privacy parameter: {0}")]
    Parameter(&'static str),
}

/// OpenDP's error with its message: its `Display` shows the kind alone
/// ("FailedFunction"), and the message says which bound or input failed.
pub(crate) fn describe_opendp(e: &opendp::error::Error) -> String {
    match &e.message {
        Some(message) => format!("{}: {message}", e.variant),
        None => e.variant.to_string(),
    }
}

/// ε at `delta` of a ρ-zCDP mechanism, from OpenDP's conversion.
///
/// ```
/// let eps = hushmap_privacy::zcdp_epsilon(0.0172, 1e-8).unwrap();
/// assert!(eps > 0.9 && eps <= 1.0);
/// assert!(hushmap_privacy::zcdp_epsilon(0.1, 0.0).is_err());
/// ```
pub fn zcdp_epsilon(rho: f64, delta: f64) -> Result<f64, ConversionError> {
    if !(rho.is_finite() && rho >= 0.0) {
        return Err(ConversionError::Parameter(
            "rho must be a non-negative finite number",
        ));
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(ConversionError::Parameter("delta must be in (0, 1)"));
    }
    Ok(ZeroConcentratedDivergence::convert(rho)?.epsilon(delta)?)
}

/// [`zcdp_epsilon`], or where OpenDP's conversion overflows (an absurd ρ,
/// as the huge-ε test runs use) the textbook bound
/// `ε ≤ ρ + 2√(ρ·ln(1/δ))` (Bun and Steinke 2016, Prop. 1.3): valid, but
/// looser. `delta` must be in (0, 1); ρ = 0 costs nothing.
pub fn zcdp_epsilon_or_bound(rho: f64, delta: f64) -> f64 {
    if rho <= 0.0 {
        return 0.0;
    }
    zcdp_epsilon(rho, delta)
        .ok()
        .filter(|e| e.is_finite())
        .unwrap_or_else(|| rho + 2.0 * (rho * (1.0 / delta).ln()).sqrt())
}

/// The largest ρ whose ε at `delta` is at most `epsilon` (bisection on
/// OpenDP's conversion, which is increasing in ρ).
pub fn zcdp_rho_for(epsilon: f64, delta: f64) -> Result<f64, ConversionError> {
    if !(epsilon.is_finite() && epsilon > 0.0) {
        return Err(ConversionError::Parameter(
            "epsilon must be a positive finite number",
        ));
    }
    // ε(ρ) ≥ ρ, so ρ = ε is an upper end.
    let (mut lo, mut hi) = (0.0_f64, epsilon);
    for _ in 0..200 {
        let mid = lo + (hi - lo) / 2.0;
        if mid <= lo || mid >= hi {
            break;
        }
        // OpenDP's conversion overflows for absurdly large ρ (ε ~ 10⁶, as
        // tests use); such a ρ is simply not certified.
        match zcdp_epsilon(mid, delta) {
            Ok(e) if e <= epsilon => lo = mid,
            Ok(_) | Err(ConversionError::OpenDp(_)) => hi = mid,
            Err(e) => return Err(e),
        }
    }
    if lo <= 0.0 {
        return Err(ConversionError::Parameter(
            "epsilon too small for this delta",
        ));
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_round_trips_and_beats_the_textbook_bound() {
        let delta = 1e-8;
        for eps in [0.1, 1.0, 5.0] {
            let rho = zcdp_rho_for(eps, delta).unwrap();
            let back = zcdp_epsilon(rho, delta).unwrap();
            assert!(
                back <= eps && back > eps * 0.999,
                "{eps} -> {rho} -> {back}"
            );
            assert!(back <= rho + 2.0 * (rho * (1.0 / delta).ln()).sqrt());
        }
        assert!(zcdp_epsilon(0.1, 0.0).is_err());
        assert!(zcdp_rho_for(0.0, 1e-8).is_err());
    }

    #[test]
    fn the_fallback_is_used_only_where_opendp_gives_up() {
        assert_eq!(zcdp_epsilon_or_bound(0.0, 1e-8), 0.0);
        let rho = 0.0172;
        assert_eq!(
            zcdp_epsilon_or_bound(rho, 1e-8),
            zcdp_epsilon(rho, 1e-8).unwrap()
        );
        let huge = zcdp_epsilon_or_bound(1e12, 1e-8);
        assert!(huge.is_finite() && huge >= 1e12);
    }
}
