//! Heatmap views of a release: one hierarchy level, per age band or all
//! ages combined.
//!
//! Combining age bands is post-processing of noisy counts: sums of
//! independent noises, so the per-count standard deviation grows by √k for
//! k summed rows, and the interval is recomputed with that.
//!
//! A suppressed cell (interval too wide) points to its nearest unsuppressed
//! ancestor: the closest coarser level of the same release whose cell
//! containing it, in the same age-band view, is published as a value.

use hushmap_schema::release::CellLabel;
use hushmap_schema::{AgeBand, RegionCell, Release, ReleaseMeta, ReleaseRow};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A cell of the heatmap with its outline for drawing.
#[derive(Debug, Clone, Serialize)]
pub struct HeatmapCell {
    #[serde(flatten)]
    pub row: ReleaseRow,
    /// Cell outline as `[lat, lon]` pairs (public H3 geometry).
    pub boundary: Vec<[f64; 2]>,
    /// For a suppressed cell: the nearest coarser cell published as a value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ancestor: Option<AncestorCell>,
}

/// The published share of a suppressed cell's nearest unsuppressed ancestor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AncestorCell {
    pub level: u8,
    pub region: String,
    pub high_share: Option<f64>,
    pub high_share_ci_low: f64,
    pub high_share_ci_high: f64,
    pub n_total: i64,
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

/// A region's outline as `[lat, lon]` pairs (public H3 geometry), empty
/// for a string that is not a cell.
pub fn outline(region: &str) -> Vec<[f64; 2]> {
    region
        .parse::<RegionCell>()
        .map(|c| {
            c.boundary()
                .into_iter()
                .map(|(lat, lon)| [lat, lon])
                .collect()
        })
        .unwrap_or_default()
}

/// The hierarchy levels of `release`, finest first.
pub fn levels(release: &Release) -> Vec<u8> {
    let set: BTreeSet<u8> = release.rows.iter().map(|r| r.level).collect();
    set.into_iter().rev().collect()
}

/// The rows of `release` for `filter` at `level` (the finest level when
/// `None`), with outlines and, for suppressed cells, their nearest
/// unsuppressed ancestor.
pub fn heatmap_cells(release: &Release, filter: BandFilter, level: Option<u8>) -> Vec<HeatmapCell> {
    let rows: Vec<ReleaseRow> = match filter {
        BandFilter::Band(b) => release
            .rows
            .iter()
            .filter(|r| r.age_band == b.label())
            .cloned()
            .collect(),
        BandFilter::All => combine_bands(&release.rows, &release.meta),
    };
    let Some(level) = level.or_else(|| levels(release).first().copied()) else {
        return Vec::new();
    };
    // Rows of this view by (level, region): one per region, since the view
    // holds a single age band or all of them combined.
    let published: HashMap<(u8, &str), &ReleaseRow> = rows
        .iter()
        .filter(|r| !r.suppressed)
        .map(|r| ((r.level, r.region.as_str()), r))
        .collect();
    let ancestor_of = |row: &ReleaseRow| -> Option<AncestorCell> {
        let cell = row.region.parse::<RegionCell>().ok()?;
        (0..row.level).rev().find_map(|l| {
            let parent = cell.parent(l)?.to_string();
            published.get(&(l, parent.as_str())).map(|a| AncestorCell {
                level: a.level,
                region: a.region.clone(),
                high_share: a.high_share,
                high_share_ci_low: a.high_share_ci_low,
                high_share_ci_high: a.high_share_ci_high,
                n_total: a.n_total,
            })
        })
    };
    rows.iter()
        .filter(|r| r.level == level)
        .map(|row| {
            let boundary = outline(&row.region);
            let ancestor = if row.suppressed {
                ancestor_of(row)
            } else {
                None
            };
            HeatmapCell {
                row: row.clone(),
                boundary,
                ancestor,
            }
        })
        .collect()
}

/// All-ages rows: each (region, level) group of `rows` summed over its age
/// bands, with the noise s.d. and interval recomputed. The bands' errors
/// add in variance, unless the release measured the all-ages counts on
/// their own and states a smaller error for the level
/// (`hushmap.all_ages_noise_scale`).
pub fn combine_bands(rows: &[ReleaseRow], meta: &ReleaseMeta) -> Vec<ReleaseRow> {
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
            let summed = group
                .iter()
                .map(|r| r.noise_scale.powi(2))
                .sum::<f64>()
                .sqrt();
            let sigma = meta
                .all_ages_noise_scale
                .get(&first.level)
                .map_or(summed, |stated| stated.min(summed));
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
            ReleaseRow::from_noisy_counts(label, risk, symptoms, sigma, meta.max_ci_half_width)
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
                statistic_costs: Vec::new(),
                ..Default::default()
            },
            rows: vec![
                row("18-29", [10, 10, 5], 2.0),
                row("30-44", [20, 10, 15], 2.0),
            ],
        };
        let cells = heatmap_cells(&release, BandFilter::All, None);
        assert_eq!(cells.len(), 1);
        let c = &cells[0].row;
        assert_eq!(
            (c.n_low, c.n_moderate, c.n_high, c.n_total),
            (30, 20, 20, 70)
        );
        assert!((c.noise_scale - 8f64.sqrt()).abs() < 1e-12);
        assert_eq!(c.symptoms, [2; 10]);
        assert_eq!(cells[0].boundary.len(), 6);
        let only = heatmap_cells(&release, BandFilter::Band(AgeBand::From30To44), None);
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].row.n_total, 45);
        // An all-ages measurement of its own: the stated, smaller error.
        let mut measured = release.clone();
        measured.meta.all_ages_noise_scale = BTreeMap::from([(5, 1.5)]);
        let c = &heatmap_cells(&measured, BandFilter::All, None)[0].row;
        assert_eq!(c.noise_scale, 1.5);
        assert!(
            c.high_share_ci_high - c.high_share_ci_low
                < cells[0].row.high_share_ci_high - cells[0].row.high_share_ci_low
        );
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

    #[test]
    fn suppressed_cells_point_to_their_nearest_unsuppressed_ancestor() {
        let child: RegionCell = "85608b0bfffffff".parse().unwrap();
        let at = |level: u8, counts: [i64; 3], sigma: f64| {
            let label = CellLabel {
                window_start: 0,
                window_end: 60_000,
                level,
                region: child.parent(level).unwrap().to_string(),
                age_band: "30-44".into(),
            };
            ReleaseRow::from_noisy_counts(label, counts, [0; 10], sigma, 0.15)
        };
        let mut release = Release {
            meta: ReleaseMeta {
                window_start: 0,
                window_end: 60_000,
                mechanism: "discrete_gaussian".into(),
                rho: Some(0.01),
                epsilon: 1.0,
                delta: 1e-8,
                ledger_entry: "w0".into(),
                symptom_noise_scale: 1.0,
                max_ci_half_width: 0.15,
                statistic_costs: Vec::new(),
                ..Default::default()
            },
            rows: vec![
                at(5, [3, 1, 1], 10.0),       // suppressed: tiny and noisy
                at(4, [6, 2, 2], 10.0),       // suppressed too
                at(3, [400, 100, 100], 10.0), // published
            ],
        };
        let band = BandFilter::Band(AgeBand::From30To44);
        assert_eq!(levels(&release), vec![5, 4, 3]);
        let cells = heatmap_cells(&release, band, None);
        assert_eq!(cells.len(), 1, "the finest level by default");
        assert!(cells[0].row.suppressed);
        let a = cells[0].ancestor.as_ref().expect("an ancestor");
        assert_eq!((a.level, a.n_total), (3, 600));
        assert_eq!(a.region, child.parent(3).unwrap().to_string());
        // A chosen level; published cells carry no pointer.
        let top = heatmap_cells(&release, band, Some(3));
        assert_eq!(top[0].row.level, 3);
        assert!(top[0].ancestor.is_none());
        // No published ancestor at all: no pointer.
        release.rows.pop();
        assert!(heatmap_cells(&release, band, None)[0].ancestor.is_none());
    }
}
