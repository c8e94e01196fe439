//! From true counts to a published release: noise, then post-processing.
//!
//! Post-processing (free under DP): counts are clamped to ≥ 0, `n_total` is
//! the sum of the published risk-level counts, the high-risk share and its
//! 95% interval are computed from published numbers
//! ([`ShareInterval`](hushmap_schema::ShareInterval)), and cells whose interval is wider than the
//! configured half-width are marked suppressed.

use crate::engine::CellCounts;
use crate::noise::{DiscreteLaplace, NoiseError};
use hushmap_schema::release::CellLabel;
use hushmap_schema::{AgeBand, Release, ReleaseMeta, ReleaseRow, Window};
use std::collections::BTreeSet;

/// Calibrated mechanisms for one release.
#[derive(Debug, Clone, Copy)]
pub struct ReleasePlan {
    pub risk: DiscreteLaplace,
    pub symptoms: DiscreteLaplace,
    /// Cells with a wider 95% interval of the high share are suppressed.
    pub max_ci_half_width: f64,
}

impl ReleasePlan {
    /// Total ε of one release (basic composition of the two statistics).
    pub fn epsilon(&self) -> f64 {
        self.risk.epsilon + self.symptoms.epsilon
    }
}

/// Noises and post-processes `cells` into the release of `window`.
///
/// Every observed region is released with all six age bands (zeros
/// included), so the presence of an age band is not itself a signal.
pub fn noisy_release(
    window: Window,
    level: u8,
    cells: &[CellCounts],
    plan: &ReleasePlan,
    ledger_entry: &str,
) -> Result<Release, NoiseError> {
    let regions: BTreeSet<_> = cells.iter().map(|c| c.region).collect();
    let mut grid = Vec::with_capacity(regions.len() * AgeBand::ALL.len());
    for region in &regions {
        for band in AgeBand::ALL {
            let found = cells
                .iter()
                .find(|c| c.region == *region && c.age_band == band);
            grid.push(found.cloned().unwrap_or(CellCounts {
                region: *region,
                age_band: band,
                risk: [0; 3],
                symptoms: [0; 10],
            }));
        }
    }
    let risk_true: Vec<i64> = grid.iter().flat_map(|c| c.risk).collect();
    let sym_true: Vec<i64> = grid.iter().flat_map(|c| c.symptoms).collect();
    let risk_noisy = plan.risk.apply(&risk_true)?;
    let sym_noisy = plan.symptoms.apply(&sym_true)?;
    let sigma = plan.risk.std_dev();

    let rows = grid
        .iter()
        .enumerate()
        .map(|(i, cell)| {
            let label = CellLabel {
                window_start: window.start_ms,
                window_end: window.end_ms,
                level,
                region: cell.region.to_string(),
                age_band: cell.age_band.label().to_string(),
            };
            let risk: [i64; 3] = risk_noisy[i * 3..i * 3 + 3]
                .try_into()
                .expect("3 risk levels per cell");
            let symptoms: [i64; 10] = sym_noisy[i * 10..i * 10 + 10]
                .try_into()
                .expect("10 symptoms per cell");
            ReleaseRow::from_noisy_counts(label, risk, symptoms, sigma, plan.max_ci_half_width)
        })
        .collect();
    Ok(Release {
        meta: ReleaseMeta {
            mechanism: DiscreteLaplace::NAME.to_string(),
            rho: None,
            epsilon: plan.epsilon(),
            delta: 0.0,
            ledger_entry: ledger_entry.to_string(),
            symptom_noise_scale: plan.symptoms.std_dev(),
            max_ci_half_width: plan.max_ci_half_width,
        },
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hushmap_schema::region::RegionResolution;
    use hushmap_schema::{RegionCell, WindowLength};

    fn plan(eps: f64) -> ReleasePlan {
        ReleasePlan {
            risk: DiscreteLaplace::calibrate(1.0, eps / 2.0).unwrap(),
            symptoms: DiscreteLaplace::calibrate(10.0, eps / 2.0).unwrap(),
            max_ci_half_width: 0.15,
        }
    }

    fn cell(lat: f64, band: AgeBand, risk: [i64; 3]) -> CellCounts {
        CellCounts {
            region: RegionCell::from_coordinate(lat, 0.0, RegionResolution::new(5).unwrap())
                .unwrap(),
            age_band: band,
            risk,
            symptoms: [1; 10],
        }
    }

    #[test]
    fn huge_epsilon_publishes_true_counts_and_a_full_grid() {
        let w = Window::containing(0, WindowLength::from_secs(60).unwrap());
        let cells = vec![
            cell(10.0, AgeBand::From18To29, [5, 3, 2]),
            cell(20.0, AgeBand::From75, [0, 0, 400]),
        ];
        let r = noisy_release(w, 5, &cells, &plan(1e6), "w0").unwrap();
        assert_eq!(r.rows.len(), 12, "two regions × six bands");
        let row = r
            .rows
            .iter()
            .find(|x| x.age_band == "18-29" && x.n_total > 0)
            .unwrap();
        assert_eq!(
            (row.n_low, row.n_moderate, row.n_high, row.n_total),
            (5, 3, 2, 10)
        );
        assert_eq!(row.high_share, Some(0.2));
        let big = r.rows.iter().find(|x| x.n_total == 400).unwrap();
        assert!(!big.suppressed);
        let empty = r.rows.iter().find(|x| x.n_total == 0).unwrap();
        assert!(empty.suppressed && empty.high_share.is_none());
        assert_eq!(r.meta.mechanism, "discrete_laplace");
        assert!(r.meta.epsilon <= 1e6);
    }

    #[test]
    fn post_processing_invariants_hold_under_real_noise() {
        let w = Window::containing(0, WindowLength::from_secs(60).unwrap());
        let cells: Vec<_> = (0..20)
            .map(|i| cell(i as f64, AgeBand::From45To59, [i, 2 * i, 1]))
            .collect();
        let r = noisy_release(w, 5, &cells, &plan(0.5), "w0").unwrap();
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
}
