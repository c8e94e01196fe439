//! Where is risk rising? Alerts from published values only.
//!
//! For each cell of the newest window (one level, one age-band view), the
//! published high-risk share is compared with the same cell's share pooled
//! over the `baseline` windows before it. The question asked is whether the
//! true share rose by more than the published noise explains. The noise is
//! the only randomness: release counts are the whole population's counts,
//! not a sample.
//!
//! - A share `h / (h + r)` of noisy counts, where `h` has noise variance
//!   `σ²` and `r` (low + moderate) `2σ²`, has variance about
//!   `(r²σ² + h²·2σ²) / (h + r)⁴` (delta method). The baseline pools its
//!   windows' counts, and their variances add.
//! - `z = (latest − baseline) / √(Var latest + Var baseline)`, one-sided
//!   p-value `1 − Φ(z)`.
//! - Benjamini–Hochberg at `fdr` across every cell tested, so that among
//!   the cells flagged, the expected share of false alarms is at most
//!   `fdr`.
//! - A cell is tested only if its total is at least 3 noise standard
//!   deviations in the newest window and in the pooled baseline: below
//!   that the ratio's normal approximation does not hold.
//!
//! Everything read here is in the published releases (counts and each
//! row's `noise_scale`), so alerts are post-processing and cost no
//! privacy.
//!
//! ```
//! use hushmap_dashboard::alerts::{benjamini_hochberg, upper_tail};
//! assert!((upper_tail(1.96) - 0.025).abs() < 1e-4);
//! // Three of four p-values pass at q = 0.05; the fourth is too large.
//! assert_eq!(benjamini_hochberg(&[0.001, 0.02, 0.03, 0.5], 0.05), 3);
//! ```

use crate::heatmap::{BandFilter, combine_bands, outline};
use hushmap_schema::{Release, ReleaseRow, ShareInterval};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How alerts are computed (the `[alerts]` configuration section; the API
/// may override `baseline_windows` and `fdr` per request).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertSettings {
    /// Windows before the newest one pooled into the baseline.
    pub baseline_windows: usize,
    /// Benjamini–Hochberg false-discovery rate.
    pub fdr: f64,
    /// Where to send each new window's alerts (`None`: nowhere); http://
    /// only for now.
    pub webhook_url: Option<String>,
    /// `report` (the JSON of `GET /api/v1/alerts`) or `alertmanager` (a
    /// list of alerts as Prometheus Alertmanager's `POST /api/v2/alerts`
    /// takes them).
    pub webhook_format: WebhookFormat,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            baseline_windows: 3,
            fdr: 0.05,
            webhook_url: None,
            webhook_format: WebhookFormat::Report,
        }
    }
}

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    Report,
    Alertmanager,
}

/// Why settings cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlertSettingsError {
    #[error("alerts.baseline_windows must be 1 to {MAX_BASELINE_WINDOWS} (got {0})")]
    BaselineWindows(usize),
    #[error("alerts.fdr must be in (0, 0.5] (got {0})")]
    Fdr(f64),
    #[error(
        "alerts.webhook_url must be an http:// URL: the dashboard's HTTP client has no TLS yet \
         (send to a local relay or proxy that forwards over https)"
    )]
    WebhookUrl,
}

/// Most windows a baseline may pool.
pub const MAX_BASELINE_WINDOWS: usize = 60;

impl AlertSettings {
    pub fn validate(&self) -> Result<(), AlertSettingsError> {
        if !(1..=MAX_BASELINE_WINDOWS).contains(&self.baseline_windows) {
            return Err(AlertSettingsError::BaselineWindows(self.baseline_windows));
        }
        if !(self.fdr > 0.0 && self.fdr <= 0.5) {
            return Err(AlertSettingsError::Fdr(self.fdr));
        }
        if let Some(url) = &self.webhook_url
            && !url.starts_with("http://")
        {
            return Err(AlertSettingsError::WebhookUrl);
        }
        Ok(())
    }
}

/// A published share with its noise and 95% interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShareEvidence {
    pub high_share: f64,
    pub high_share_ci_low: f64,
    pub high_share_ci_high: f64,
    pub n_high: i64,
    pub n_total: i64,
    /// Noise s.d. of each of the three risk counts (pooled for a baseline).
    pub noise_scale: f64,
    /// The windows (start, ms) the counts come from.
    pub windows: Vec<i64>,
}

/// One cell whose share rose by more than the noise explains.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CellAlert {
    pub level: u8,
    pub region: String,
    pub age_band: String,
    pub latest: ShareEvidence,
    pub baseline: ShareEvidence,
    /// `latest − baseline` share.
    pub rise: f64,
    pub z: f64,
    pub p_value: f64,
    /// The cell's outline as `[lat, lon]` pairs, to draw it on the map.
    pub boundary: Vec<[f64; 2]>,
}

/// The alerts of one window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertReport {
    pub window_start: i64,
    pub window_end: i64,
    pub level: Option<u8>,
    pub age_band: &'static str,
    /// The baseline's windows (start, ms), oldest first.
    pub baseline_windows: Vec<i64>,
    pub fdr: f64,
    /// Cells compared (the Benjamini–Hochberg family).
    pub cells_tested: usize,
    /// Cells of the newest window not compared: too few, relative to the
    /// noise, in it or in the baseline, or absent from the baseline.
    pub cells_untested: usize,
    /// Smallest p-value first.
    pub alerts: Vec<CellAlert>,
}

/// `P(Z > z)` for a standard normal `Z` (erfc by Numerical Recipes'
/// Chebyshev fit, relative error below 1.2e-7).
pub fn upper_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = -x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    let erfc = if x >= 0.0 { erfc } else { 2.0 - erfc };
    0.5 * erfc
}

/// How many of `p_values` (any order) Benjamini–Hochberg rejects at `fdr`:
/// the largest `k` with the `k`-th smallest p-value at most `k·fdr/m`.
pub fn benjamini_hochberg(p_values: &[f64], fdr: f64) -> usize {
    let mut sorted = p_values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let m = sorted.len() as f64;
    sorted
        .iter()
        .enumerate()
        .filter(|(i, p)| **p <= (*i as f64 + 1.0) * fdr / m)
        .map(|(i, _)| i + 1)
        .next_back()
        .unwrap_or(0)
}

/// Counts of one cell: high, the rest, and the variance of each risk count.
#[derive(Debug, Clone, Copy, Default)]
struct Pooled {
    high: i64,
    rest: i64,
    variance: f64,
}

impl Pooled {
    fn add(&mut self, row: &ReleaseRow) {
        self.high += row.n_high;
        self.rest += row.n_low + row.n_moderate;
        self.variance += row.noise_scale.powi(2);
    }

    fn total(&self) -> i64 {
        self.high + self.rest
    }

    /// The share and its variance, if the total stands clear of the noise.
    fn share(&self) -> Option<(f64, f64)> {
        let t = self.total() as f64;
        if t <= 0.0 || t < 3.0 * (3.0 * self.variance).sqrt() {
            return None;
        }
        let (h, r) = (self.high as f64, self.rest as f64);
        let var = (r * r * self.variance + h * h * 2.0 * self.variance) / t.powi(4);
        Some((h / t, var))
    }

    fn evidence(&self, windows: Vec<i64>) -> ShareEvidence {
        let sigma = self.variance.sqrt();
        let ci = ShareInterval::for_high_share(self.high, self.total(), sigma);
        ShareEvidence {
            high_share: ci.share.unwrap_or(0.0),
            high_share_ci_low: ci.low,
            high_share_ci_high: ci.high,
            n_high: self.high,
            n_total: self.total(),
            noise_scale: sigma,
            windows,
        }
    }
}

/// The rows of `release` at `level` in the `filter` view, by region.
fn view(release: &Release, filter: BandFilter, level: u8) -> HashMap<String, ReleaseRow> {
    let rows: Vec<ReleaseRow> = release
        .rows
        .iter()
        .filter(|r| r.level == level)
        .filter(|r| match filter {
            BandFilter::All => true,
            BandFilter::Band(b) => r.age_band == b.label(),
        })
        .cloned()
        .collect();
    let rows = match filter {
        BandFilter::All => combine_bands(&rows, release.meta.max_ci_half_width),
        BandFilter::Band(_) => rows,
    };
    rows.into_iter().map(|r| (r.region.clone(), r)).collect()
}

/// The alerts of the newest of `releases` (oldest first) against the
/// `settings.baseline_windows` before it, at `level` (the newest release's
/// finest when `None`) in the `filter` view. `None` when there is no
/// release to compare.
pub fn alert_report(
    releases: &[&Release],
    filter: BandFilter,
    level: Option<u8>,
    settings: &AlertSettings,
) -> Option<AlertReport> {
    let (latest, earlier) = releases.split_last()?;
    let level = level.or_else(|| latest.rows.iter().map(|r| r.level).max());
    let baseline: Vec<&Release> = earlier
        .iter()
        .rev()
        .take(settings.baseline_windows)
        .rev()
        .copied()
        .collect();
    let mut report = AlertReport {
        window_start: latest.meta.window_start,
        window_end: latest.meta.window_end,
        level,
        age_band: filter.label(),
        baseline_windows: baseline.iter().map(|r| r.meta.window_start).collect(),
        fdr: settings.fdr,
        cells_tested: 0,
        cells_untested: 0,
        alerts: Vec::new(),
    };
    let Some(level) = level else {
        return Some(report);
    };
    let before: Vec<HashMap<String, ReleaseRow>> =
        baseline.iter().map(|r| view(r, filter, level)).collect();
    let mut tested = Vec::new();
    let mut newest: Vec<(String, ReleaseRow)> = view(latest, filter, level).into_iter().collect();
    newest.sort_by(|a, b| a.0.cmp(&b.0));
    for (region, row) in newest {
        let mut now = Pooled::default();
        now.add(&row);
        let mut base = Pooled::default();
        let mut windows = Vec::new();
        for (release, rows) in baseline.iter().zip(&before) {
            if let Some(r) = rows.get(&region) {
                base.add(r);
                windows.push(release.meta.window_start);
            }
        }
        let (Some((p1, v1)), Some((p0, v0))) = (now.share(), base.share()) else {
            report.cells_untested += 1;
            continue;
        };
        let sd = (v1 + v0).sqrt();
        let z = if sd > 0.0 { (p1 - p0) / sd } else { 0.0 };
        tested.push(CellAlert {
            level,
            region,
            age_band: filter.label().to_string(),
            latest: now.evidence(vec![latest.meta.window_start]),
            baseline: base.evidence(windows),
            rise: p1 - p0,
            z,
            p_value: upper_tail(z),
            boundary: Vec::new(),
        });
    }
    report.cells_tested = tested.len();
    let p: Vec<f64> = tested.iter().map(|a| a.p_value).collect();
    let flagged = benjamini_hochberg(&p, settings.fdr);
    tested.sort_by(|a, b| {
        a.p_value
            .total_cmp(&b.p_value)
            .then(a.region.cmp(&b.region))
    });
    tested.truncate(flagged);
    for alert in &mut tested {
        alert.boundary = outline(&alert.region);
    }
    report.alerts = tested;
    Some(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hushmap_schema::ReleaseMeta;
    use hushmap_schema::release::CellLabel;
    use rand::{Rng, SeedableRng};

    const SIGMA: f64 = 14.0;
    const HOUR: i64 = 3_600_000;

    fn gaussian(rng: &mut impl Rng) -> f64 {
        let (u, v): (f64, f64) = (rng.random(), rng.random());
        SIGMA * (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// A release of `cells` regions at level 5 (one age band each), whose
    /// true counts are `total` with high share `share(cell)`, noised with
    /// σ = 14 per count as the aggregator would.
    fn release(
        rng: &mut impl Rng,
        window: i64,
        cells: usize,
        total: i64,
        share: impl Fn(usize) -> f64,
    ) -> Release {
        let rows = (0..cells)
            .map(|c| {
                let high = (total as f64 * share(c)).round() as i64;
                let truth = [(total - high) / 2, total - high - (total - high) / 2, high];
                let noisy = truth.map(|x| (x as f64 + gaussian(rng)).round() as i64);
                let label = CellLabel {
                    window_start: window * HOUR,
                    window_end: (window + 1) * HOUR,
                    level: 5,
                    region: format!("cell-{c:04}"),
                    age_band: "30-44".into(),
                };
                ReleaseRow::from_noisy_counts(label, noisy, [0; 10], SIGMA, 0.15)
            })
            .collect();
        Release {
            meta: ReleaseMeta {
                window_start: window * HOUR,
                window_end: (window + 1) * HOUR,
                max_ci_half_width: 0.15,
                ..crate::store::tests::sample_release(0, 0).meta
            },
            rows,
        }
    }

    fn days(
        rng: &mut impl Rng,
        cells: usize,
        total: i64,
        latest_share: impl Fn(usize) -> f64,
    ) -> Vec<Release> {
        let mut out: Vec<Release> = (0..3)
            .map(|w| release(rng, w, cells, total, |_| 0.1))
            .collect();
        out.push(release(rng, 3, cells, total, latest_share));
        out
    }

    /// The default report on the test's age band.
    fn band_report(releases: &[Release]) -> AlertReport {
        let refs: Vec<&Release> = releases.iter().collect();
        let band = BandFilter::Band(hushmap_schema::AgeBand::ALL[2]);
        alert_report(&refs, band, None, &AlertSettings::default()).unwrap()
    }

    #[test]
    fn the_normal_tail_and_benjamini_hochberg_match_their_tables() {
        for (z, p) in [
            (0.0, 0.5),
            (1.644_854, 0.05),
            (2.326_348, 0.01),
            (-1.959_964, 0.975),
        ] {
            assert!((upper_tail(z) - p).abs() < 1e-6, "z = {z}");
        }
        assert_eq!(benjamini_hochberg(&[], 0.05), 0);
        assert_eq!(benjamini_hochberg(&[0.04, 0.04], 0.05), 2);
        assert_eq!(benjamini_hochberg(&[0.04, 0.9], 0.05), 0);
    }

    #[test]
    fn an_outbreak_in_a_few_cells_is_flagged_and_nothing_else() {
        // 400 cells of 500 people at a 10% high share; in the newest
        // window eight of them jump to 30%.
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let outbreak = |c: usize| if c % 50 == 7 { 0.3 } else { 0.1 };
        let releases = days(&mut rng, 400, 500, outbreak);
        let report = band_report(&releases);
        assert_eq!(report.cells_tested, 400);
        assert_eq!(report.baseline_windows, [0, HOUR, 2 * HOUR]);
        let flagged: Vec<&str> = report.alerts.iter().map(|a| a.region.as_str()).collect();
        let outbreak_cells: Vec<String> = (0..400)
            .filter(|c| c % 50 == 7)
            .map(|c| format!("cell-{c:04}"))
            .collect();
        for cell in &outbreak_cells {
            assert!(
                flagged.contains(&cell.as_str()),
                "{cell} missed: {flagged:?}"
            );
        }
        // At an FDR of 5%, about 0.4 of ~8 flagged cells are expected to be
        // false alarms (this seed: one).
        let false_alarms = flagged.len() - outbreak_cells.len();
        assert!(false_alarms <= 2, "{flagged:?}");
        let a = &report.alerts[0];
        assert!(a.latest.high_share > a.baseline.high_share);
        assert_eq!(a.baseline.windows.len(), 3);
        assert!(a.p_value < 1e-4, "{a:?}");
    }

    #[test]
    fn noise_alone_raises_an_alarm_at_most_at_the_false_discovery_rate() {
        // No cell changes: under the global null, BH's FDR is the chance
        // of any alarm at all. 200 days of 200 cells.
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut days_with_alarms = 0;
        for _ in 0..200 {
            let releases = days(&mut rng, 200, 300, |_| 0.1);
            let report = band_report(&releases);
            assert_eq!(report.cells_tested, 200);
            days_with_alarms += usize::from(!report.alerts.is_empty());
        }
        assert!(days_with_alarms <= 16, "{days_with_alarms} of 200 days");
    }

    #[test]
    fn cells_too_small_for_the_noise_are_not_tested() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        // 20 people against σ = 14 per count: not testable.
        let releases = days(&mut rng, 10, 20, |_| 0.9);
        let report = band_report(&releases);
        assert_eq!((report.cells_tested, report.cells_untested), (0, 10));
        assert!(report.alerts.is_empty());
        // One release: nothing to compare with, an empty report.
        let report = band_report(&releases[..1]);
        assert!(report.baseline_windows.is_empty() && report.alerts.is_empty());
    }

    #[test]
    fn settings_are_checked() {
        assert!(AlertSettings::default().validate().is_ok());
        for bad in [
            AlertSettings {
                baseline_windows: 0,
                ..Default::default()
            },
            AlertSettings {
                fdr: 0.0,
                ..Default::default()
            },
            AlertSettings {
                webhook_url: Some("ftp://x".into()),
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
