//! Heatmap views of a release: per age band, or all ages combined.
//!
//! Combining age bands is post-processing of noisy counts: sums of
//! independent noises, so the per-count standard deviation grows by √k for
//! k summed rows, and the interval is recomputed with that.

use hushmap_schema::release::CellLabel;
use hushmap_schema::{AgeBand, RegionCell, Release, ReleaseRow};
use serde::Serialize;
use std::collections::BTreeMap;

/// A cell of the heatmap with its outline for drawing.
#[derive(Debug, Clone, Serialize)]
pub struct HeatmapCell {
    #[serde(flatten)]
    pub row: ReleaseRow,
    /// Cell outline as `[lat, lon]` pairs (public H3 geometry).
    pub boundary: Vec<[f64; 2]>,
}

/// Which age bands to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BandFilter {
    All,
    Band(AgeBand),
}

impl BandFilter {
    pub fn parse(s: Option<&str>) -> Option<BandFilter> {
        match s {
            None | Some("all") => Some(BandFilter::All),
            Some(label) => AgeBand::from_label(label).map(BandFilter::Band),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            BandFilter::All => "all",
            BandFilter::Band(b) => b.label(),
        }
    }
}

/// The rows of `release` for `filter`, with outlines.
pub fn heatmap_cells(release: &Release, filter: BandFilter) -> Vec<HeatmapCell> {
    let rows: Vec<ReleaseRow> = match filter {
        BandFilter::Band(b) => release
            .rows
            .iter()
            .filter(|r| r.age_band == b.label())
            .cloned()
            .collect(),
        BandFilter::All => combine_bands(&release.rows, release.meta.max_ci_half_width),
    };
    rows.into_iter()
        .map(|row| {
            let boundary = row
                .region
                .parse::<RegionCell>()
                .map(|c| {
                    c.boundary()
                        .into_iter()
                        .map(|(lat, lon)| [lat, lon])
                        .collect()
                })
                .unwrap_or_default();
            HeatmapCell { row, boundary }
        })
        .collect()
}

fn combine_bands(rows: &[ReleaseRow], max_ci_half_width: f64) -> Vec<ReleaseRow> {
    let mut by_region: BTreeMap<(&str, u8), Vec<&ReleaseRow>> = BTreeMap::new();
    for r in rows {
        by_region
            .entry((r.region.as_str(), r.level))
            .or_default()
            .push(r);
    }
    by_region
        .into_values()
        .map(|group| {
            let first = group[0];
            let sum = |f: fn(&ReleaseRow) -> i64| group.iter().map(|r| f(r)).sum::<i64>();
            let risk = [sum(|r| r.n_low), sum(|r| r.n_moderate), sum(|r| r.n_high)];
            // Independent noises add in variance.
            let sigma = group
                .iter()
                .map(|r| r.noise_scale.powi(2))
                .sum::<f64>()
                .sqrt();
            let mut symptoms = [0i64; 10];
            for r in &group {
                for (acc, v) in symptoms.iter_mut().zip(r.symptoms) {
                    *acc += v;
                }
            }
            let label = CellLabel {
                window_start: first.window_start,
                window_end: first.window_end,
                level: first.level,
                region: first.region.clone(),
                age_band: "all".into(),
            };
            ReleaseRow::from_noisy_counts(label, risk, symptoms, sigma, max_ci_half_width)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hushmap_schema::ReleaseMeta;

    fn row(band: &str, counts: [i64; 3], sigma: f64) -> ReleaseRow {
        ReleaseRow {
            window_start: 0,
            window_end: 60_000,
            level: 5,
            region: "85608b0bfffffff".into(),
            age_band: band.into(),
            n_low: counts[0],
            n_moderate: counts[1],
            n_high: counts[2],
            n_total: counts.iter().sum(),
            high_share: None,
            high_share_ci_low: 0.0,
            high_share_ci_high: 1.0,
            noise_scale: sigma,
            suppressed: true,
            symptoms: [1; 10],
        }
    }

    #[test]
    fn all_ages_sums_counts_and_noise_variance() {
        let release = Release {
            meta: ReleaseMeta {
                window_start: 0,
                window_end: 60_000,
                mechanism: "discrete_laplace".into(),
                rho: None,
                epsilon: 1.0,
                delta: 0.0,
                ledger_entry: "w0".into(),
                symptom_noise_scale: 1.0,
                max_ci_half_width: 0.15,
            },
            rows: vec![
                row("18-29", [10, 10, 5], 2.0),
                row("30-44", [20, 10, 15], 2.0),
            ],
        };
        let cells = heatmap_cells(&release, BandFilter::All);
        assert_eq!(cells.len(), 1);
        let c = &cells[0].row;
        assert_eq!(
            (c.n_low, c.n_moderate, c.n_high, c.n_total),
            (30, 20, 20, 70)
        );
        assert!((c.noise_scale - 8f64.sqrt()).abs() < 1e-12);
        assert_eq!(c.symptoms, [2; 10]);
        assert_eq!(cells[0].boundary.len(), 6);
        let only = heatmap_cells(&release, BandFilter::Band(AgeBand::From30To44));
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].row.n_total, 45);
    }

    #[test]
    fn band_filter_parsing() {
        assert_eq!(BandFilter::parse(None), Some(BandFilter::All));
        assert_eq!(
            BandFilter::parse(Some("75+")),
            Some(BandFilter::Band(AgeBand::From75))
        );
        assert_eq!(BandFilter::parse(Some("teen")), None);
    }
}
