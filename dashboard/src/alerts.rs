//! Where is risk rising? Alerts from published values only.
//!
//! For each cell of the newest window (one level, one age-band view), the
//! published high-risk share (or a symptom's rate, `sym_<symptom> /
//! n_total`) is compared with the same cell's pooled over the `baseline`
//! windows before it. The question asked is whether the
//! true share rose by more than the published noise explains. The noise is
//! the only randomness: release counts are the whole population's counts,
//! not a sample.
//!
//! - A share `p = x / t` of noisy counts has variance about
//!   `(Var x − 2p·Cov(x, t) + p²·Var t) / t²` (delta method). For the high
//!   share, `x` is one of the three risk counts of `t` (each of variance
//!   `σ²`, the row's `noise_scale`): `Var t = 3σ²`, `Cov = σ²`. For a
//!   symptom, `x` is measured apart (`Cov = 0`) with the release's
//!   `hushmap.symptom_noise_scale`, which is the release resolution's, so
//!   symptom rates are compared at that level only. The baseline pools its
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

use crate::heatmap::{BandFilter, outline};
use crate::store::{ReleaseStore, StoreError};
use hushmap_schema::release::Coverage;
use hushmap_schema::{Release, ReleaseRow, ShareInterval, Symptom};
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
    /// Where to send each new window's alerts (`None`: nowhere): an
    /// https:// URL (http:// only to a loopback address, a local relay).
    pub webhook_url: Option<String>,
    /// A CA certificate file (PEM) the webhook's certificate may chain to,
    /// besides the system's roots (`SSL_CERT_FILE`, else
    /// `/etc/ssl/certs/ca-certificates.crt`).
    pub webhook_ca_file: Option<std::path::PathBuf>,
    /// A file holding the key (at least 32 bytes) each delivery is signed
    /// with: `X-Hushmap-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
    /// "<t>." followed by the body>`, which the receiver checks (and
    /// refuses a `t` far from its clock, against replays).
    pub webhook_secret_file: Option<std::path::PathBuf>,
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
            webhook_ca_file: None,
            webhook_secret_file: None,
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
        "alerts.webhook_url must be an https:// URL (http:// only to a loopback address, a local \
         relay)"
    )]
    WebhookUrl,
    #[error("alerts.webhook_ca_file: {0}")]
    WebhookCa(String),
    #[error("alerts.webhook_secret_file: {0}")]
    WebhookSecret(String),
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
        if let Some(url) = &self.webhook_url {
            crate::webhook::check_url(url)?;
            // Loaded, not only named: a missing or broken file is refused
            // before anything starts.
            crate::webhook::WebhookClient::new(self)?;
        }
        Ok(())
    }
}

/// A published share (the metric's count over `n_total`) with its 95%
/// interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShareEvidence {
    pub share: f64,
    pub share_ci_low: f64,
    pub share_ci_high: f64,
    /// `n_high`, or the symptom's count.
    pub count: i64,
    pub n_total: i64,
    /// The windows (start, ms) the counts come from.
    pub windows: Vec<i64>,
}

/// What an alert watches: the high-risk share, or one symptom's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertMetric {
    HighShare,
    Symptom(Symptom),
}

impl AlertMetric {
    /// `high_share` or a symptom column (`sym_fever`); `None` if neither.
    ///
    /// ```
    /// use hushmap_dashboard::alerts::AlertMetric;
    /// assert_eq!(AlertMetric::parse(None), Some(AlertMetric::HighShare));
    /// assert_eq!(AlertMetric::parse(Some("sym_fever")).unwrap().label(), "sym_fever");
    /// assert_eq!(AlertMetric::parse(Some("fever")), None);
    /// ```
    pub fn parse(s: Option<&str>) -> Option<AlertMetric> {
        match s {
            None | Some("high_share") => Some(AlertMetric::HighShare),
            Some(column) => Symptom::ALL
                .into_iter()
                .find(|sym| sym.column() == column)
                .map(AlertMetric::Symptom),
        }
    }

    pub fn label(self) -> String {
        match self {
            AlertMetric::HighShare => "high_share".into(),
            AlertMetric::Symptom(s) => s.column(),
        }
    }

    /// Words for a person: "high-risk share", "fever rate".
    pub fn describe(self) -> String {
        match self {
            AlertMetric::HighShare => "high-risk share".into(),
            AlertMetric::Symptom(s) => format!("{} rate", s.name().replace('_', " ")),
        }
    }
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
    /// `high_share` or a symptom column.
    pub metric: String,
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

/// One cell's count of the metric over its total, pooled over rows (age
/// bands, windows), with the noise (co)variances: independent rows add.
#[derive(Debug, Clone, Copy, Default)]
struct Pooled {
    count: i64,
    total: i64,
    count_var: f64,
    total_var: f64,
    cov: f64,
}

impl Pooled {
    /// Adds `row`; `symptom_sd`: the noise s.d. of its symptom counts.
    fn add(&mut self, row: &ReleaseRow, metric: AlertMetric, symptom_sd: f64) {
        let risk_var = row.noise_scale.powi(2);
        self.total += row.n_total;
        self.total_var += 3.0 * risk_var;
        match metric {
            AlertMetric::HighShare => {
                self.count += row.n_high;
                self.count_var += risk_var;
                self.cov += risk_var;
            }
            AlertMetric::Symptom(s) => {
                let i = Symptom::ALL
                    .iter()
                    .position(|x| *x == s)
                    .expect("a symptom");
                self.count += row.symptoms[i];
                self.count_var += symptom_sd.powi(2);
            }
        }
    }

    /// The share and its variance, if the total stands clear of the noise.
    fn share(&self) -> Option<(f64, f64)> {
        let t = self.total as f64;
        if t <= 0.0 || t < 3.0 * self.total_var.sqrt() {
            return None;
        }
        let p = self.count as f64 / t;
        let var = (self.count_var - 2.0 * p * self.cov + p * p * self.total_var) / (t * t);
        Some((p, var.max(0.0)))
    }

    fn evidence(&self, metric: AlertMetric, windows: Vec<i64>) -> ShareEvidence {
        let (share, low, high) = match (metric, self.share()) {
            // The release's own interval construction (Fieller).
            (AlertMetric::HighShare, _) => {
                let ci =
                    ShareInterval::for_high_share(self.count, self.total, self.count_var.sqrt());
                (ci.share.unwrap_or(0.0), ci.low, ci.high)
            }
            (AlertMetric::Symptom(_), Some((p, var))) => {
                let half = 1.96 * var.sqrt();
                (p, (p - half).max(0.0), (p + half).min(1.0))
            }
            (AlertMetric::Symptom(_), None) => (0.0, 0.0, 1.0),
        };
        ShareEvidence {
            share,
            share_ci_low: low,
            share_ci_high: high,
            count: self.count,
            n_total: self.total,
            windows,
        }
    }
}

/// Each region's pooled rows of `release` at `level` in the `filter` view.
fn view(
    release: &Release,
    filter: BandFilter,
    level: u8,
    metric: AlertMetric,
) -> HashMap<String, Pooled> {
    let mut out: HashMap<String, Pooled> = HashMap::new();
    // A release without symptom counts (switched off) has nothing to test.
    if matches!(metric, AlertMetric::Symptom(_)) && !release.meta.has_statistic("symptom_counts") {
        return out;
    }
    for row in release.rows.iter().filter(|r| r.level == level) {
        if let BandFilter::Band(b) = filter
            && row.age_band != b.label()
        {
            continue;
        }
        out.entry(row.region.clone()).or_default().add(
            row,
            metric,
            release.meta.symptom_noise_scale,
        );
    }
    out
}

/// The alerts of the newest of `releases` (oldest first) against the
/// `settings.baseline_windows` before it, at `level` (the newest release's
/// finest when `None`) in the `filter` view. `None` when there is no
/// release to compare.
pub fn alert_report(
    releases: &[&Release],
    filter: BandFilter,
    level: Option<u8>,
    metric: AlertMetric,
    settings: &AlertSettings,
) -> Option<AlertReport> {
    let (latest, earlier) = releases.split_last()?;
    let from = earlier.len().saturating_sub(settings.baseline_windows);
    let baseline = earlier[from..]
        .iter()
        .map(|r| Ok::<_, std::convert::Infallible>(*r));
    match alerts_against(latest, baseline, filter, level, metric, settings) {
        Ok(report) => Some(report),
        Err(never) => match never {},
    }
}

/// The alerts of `latest` against the `baseline` windows (oldest first),
/// which are taken one at a time: only each one's view at the compared
/// level is kept, so a long baseline is never in memory whole.
fn alerts_against<R: std::borrow::Borrow<Release>, E>(
    latest: &Release,
    baseline: impl Iterator<Item = Result<R, E>>,
    filter: BandFilter,
    level: Option<u8>,
    metric: AlertMetric,
    settings: &AlertSettings,
) -> Result<AlertReport, E> {
    let finest = latest.rows.iter().map(|r| r.level).max();
    let level = level.or(finest);
    let mut report = AlertReport {
        window_start: latest.meta.window_start,
        window_end: latest.meta.window_end,
        level,
        age_band: filter.label(),
        metric: metric.label(),
        baseline_windows: Vec::new(),
        fdr: settings.fdr,
        cells_tested: 0,
        cells_untested: 0,
        alerts: Vec::new(),
    };
    let Some(level) = level else {
        for r in baseline {
            report.baseline_windows.push(r?.borrow().meta.window_start);
        }
        return Ok(report);
    };
    // (window start, its cells at `level`), one release read at a time.
    let mut before: Vec<(i64, HashMap<String, Pooled>)> = Vec::new();
    for r in baseline {
        let r = r?;
        let r: &Release = r.borrow();
        before.push((r.meta.window_start, view(r, filter, level, metric)));
    }
    report.baseline_windows = before.iter().map(|(start, _)| *start).collect();
    let mut newest: Vec<(String, Pooled)> =
        view(latest, filter, level, metric).into_iter().collect();
    newest.sort_by(|a, b| a.0.cmp(&b.0));
    // The symptom noise the releases state is the release resolution's.
    if matches!(metric, AlertMetric::Symptom(_)) && Some(level) != finest {
        report.cells_untested = newest.len();
        return Ok(report);
    }
    let mut tested = Vec::new();
    for (region, now) in newest {
        let mut base = Pooled::default();
        let mut windows = Vec::new();
        for (window_start, cells) in &before {
            if let Some(c) = cells.get(&region) {
                base.count += c.count;
                base.total += c.total;
                base.count_var += c.count_var;
                base.total_var += c.total_var;
                base.cov += c.cov;
                windows.push(*window_start);
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
            latest: now.evidence(metric, vec![latest.meta.window_start]),
            baseline: base.evidence(metric, windows),
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
    Ok(report)
}

/// The alerts of `window` (the newest by default) against the counted
/// windows before it; `None` when the store has no such window. Reads the
/// rows of only the windows compared (files, unless recently used).
pub fn store_alerts(
    store: &ReleaseStore,
    window: Option<i64>,
    filter: BandFilter,
    level: Option<u8>,
    metric: AlertMetric,
    settings: &AlertSettings,
) -> Result<Option<AlertReport>, StoreError> {
    let newest = match window {
        Some(start) => store.window(start),
        None => store.latest_window(),
    };
    let Some(newest) = newest.map(|w| w.meta.window_start) else {
        return Ok(None);
    };
    // Windows published without data (missed) say nothing about a trend.
    let counted: Vec<i64> = store
        .windows()
        .map(|w| &w.meta)
        .filter(|m| m.window_start < newest && m.coverage == Coverage::Complete)
        .map(|m| m.window_start)
        .chain([newest])
        .collect();
    let from = counted.len().saturating_sub(settings.baseline_windows + 1);
    let Some((newest, baseline)) = counted[from..].split_last() else {
        return Ok(None);
    };
    let Some(latest) = store.get(*newest)? else {
        return Ok(None);
    };
    // Baseline windows are read one at a time and not kept in the cache:
    // a 60-window baseline never sits in memory whole, and does not push
    // the newest windows out.
    let baseline = baseline
        .iter()
        .filter_map(|start| store.get_uncached(*start).transpose());
    alerts_against(&latest, baseline, filter, level, metric, settings).map(Some)
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
        alert_report(
            &refs,
            band,
            None,
            AlertMetric::HighShare,
            &AlertSettings::default(),
        )
        .unwrap()
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
        assert!(a.latest.share > a.baseline.share);
        assert_eq!(a.baseline.windows.len(), 3);
        assert!(a.p_value < 1e-4, "{a:?}");
    }

    #[test]
    fn a_symptom_rate_that_rises_is_flagged_at_the_release_resolution_only() {
        // Fever in 10% of 500 people per cell, then 30% in five of 100
        // cells; symptom counts noised with the stated σ = 14.
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let mut releases = days(&mut rng, 100, 500, |_| 0.1);
        for (w, release) in releases.iter_mut().enumerate() {
            release.meta.symptom_noise_scale = SIGMA;
            release
                .meta
                .statistic_costs
                .push(hushmap_schema::StatisticCost {
                    statistic: "symptom_counts".into(),
                    level: 5,
                    cost: 0.01,
                    delta: 0.0,
                });
            for (c, row) in release.rows.iter_mut().enumerate() {
                let rate = if w == 3 && c % 20 == 4 { 0.3 } else { 0.1 };
                row.symptoms[0] = (500.0 * rate + gaussian(&mut rng)).round() as i64;
            }
        }
        let refs: Vec<&Release> = releases.iter().collect();
        let band = BandFilter::Band(hushmap_schema::AgeBand::ALL[2]);
        let fever = AlertMetric::parse(Some("sym_fever")).unwrap();
        let report = alert_report(&refs, band, None, fever, &AlertSettings::default()).unwrap();
        assert_eq!(report.metric, "sym_fever");
        assert_eq!(report.cells_tested, 100);
        let mut flagged: Vec<&str> = report.alerts.iter().map(|a| a.region.as_str()).collect();
        flagged.sort();
        assert_eq!(
            flagged,
            [
                "cell-0004",
                "cell-0024",
                "cell-0044",
                "cell-0064",
                "cell-0084"
            ]
        );
        assert!(report.alerts[0].latest.share > 0.25);
        // The high share did not move.
        assert!(band_report(&releases).alerts.len() <= 1);
        // A coarser level's symptom noise is not stated: nothing tested.
        let coarse = alert_report(&refs, band, Some(4), fever, &AlertSettings::default()).unwrap();
        assert_eq!(coarse.cells_tested, 0);
        // Symptom counts switched off (no such statistic): nothing tested,
        // however the zeros in their columns move.
        for release in &mut releases {
            release.meta.statistic_costs.clear();
        }
        let refs: Vec<&Release> = releases.iter().collect();
        let off = alert_report(&refs, band, None, fever, &AlertSettings::default()).unwrap();
        assert_eq!((off.cells_tested, off.alerts.len()), (0, 0));
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
