//! Empirical differential-privacy audit of the release path.
//!
//! Pairs of neighbouring datasets `D` and `D'`, where `D'` adds one
//! contributor who submits several times into the most sensitive spot (one
//! region × age band, high risk, every symptom), to:
//!
//! - a window of ordinary records (the original pair);
//! - an otherwise empty window (nobody else took part: the release of `D`
//!   is zeros plus noise with a public region set, and no rows at all under
//!   threshold selection; both are checked);
//! - a busy cell (the person shares their cell with hundreds of others).
//!
//! Both datasets of a pair go
//! through the engine's contribution bounding (DataFusion, once each: it is
//! deterministic) and then through `noise_window` — the noising step of
//! `release_window`, which batch mode and both streaming topologies call,
//! with the noise drawn at release time or ahead (`NoiseReserve`) —
//! thousands of times each. Every released count the extra
//! contributor can move (their risk level and each symptom, at every level
//! of the hierarchy) is combined into one statistic, weighted by 1/σ² as the
//! likelihood-ratio test for Gaussian noise would; an attacker's best
//! threshold test on it gives false-positive and false-negative rates, and
//! with one-sided 97.5% Clopper–Pearson bounds on each,
//!
//! ```text
//! ε_lower = ln((1 − δ − FNR_upper) / FPR_upper)
//! ```
//!
//! is a 95%-confidence lower bound on the ε the release really spends. The
//! threshold is chosen on one half of the runs and evaluated on the other,
//! so choosing it does not bias the bound. The test asserts the bound stays
//! within the claimed ε, and, to show the audit can fail, that it catches a
//! release whose noise was calibrated for ten times the claimed ε.
//!
//! The provisional series (continual release within a window) gets a pair
//! of its own: `D'` adds a contributor whose first record falls in an
//! early sub-window and who comes back later, elsewhere; every interval
//! measurement of the whole series is observed, and the bound is held to
//! the series' own share of the window's cost.
//!
//! `HUSHMAP_AUDIT_TRIALS` (default 2000 per dataset) sets the run count; the
//! figures in docs/PRIVACY.md come from a longer run.

use datafusion::prelude::SessionContext;
use hushmap_aggregate::AggregateConfig;
use hushmap_aggregate::config::Mechanism;
use hushmap_aggregate::engine::{CellCounts, bounded_counts};
use hushmap_aggregate::first_record::{Arrival, first_record_counts};
use hushmap_aggregate::records::{SequencedRecord, to_record_batch};
use hushmap_privacy::release::continual::{FirstRecordCounts, ProvisionalSeries};
use hushmap_privacy::release::{NoiseReserve, ReleasePlan, noise_window};
use hushmap_privacy::{Budget, PrivacyLedger};
use hushmap_schema::region::RegionResolution;
use hushmap_schema::{
    AgeBand, CoarseRecord, ContributorKey, RegionCell, RiskLevel, Symptom, SymptomSet, Window,
    WindowLength,
};
use statrs::distribution::{Beta, ContinuousCDF};

fn trials() -> usize {
    std::env::var("HUSHMAP_AUDIT_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn target() -> RegionCell {
    RegionCell::from_coordinate(-33.87, 151.21, RegionResolution::new(5).unwrap()).unwrap()
}

fn window() -> Window {
    Window::containing(1_795_000_000_000, WindowLength::ONE_DAY)
}

/// The window trial `k` is released as: every trial is a release of its
/// own (the ledger authorises a window once), of the same data.
fn trial_window(k: usize) -> Window {
    Window::from_start(
        window().start_ms + k as i64 * WindowLength::ONE_DAY.millis(),
        WindowLength::ONE_DAY,
    )
    .unwrap()
}

/// A ledger that refuses nothing but a second release of a window: the
/// audit measures what one release spends.
fn audit_ledger() -> PrivacyLedger {
    PrivacyLedger::new(Budget {
        limits: Vec::new(),
        delta: 1e-8,
        max_delta: 1.0,
    })
}

fn record(band: AgeBand, risk: RiskLevel, symptoms: SymptomSet, who: u128) -> CoarseRecord {
    CoarseRecord {
        window: window(),
        window_length: WindowLength::ONE_DAY,
        region: target(),
        age_band: band,
        risk,
        symptoms,
        contributor: ContributorKey(who.to_le_bytes()),
    }
}

/// Who else is in the window besides the extra contributor.
#[derive(Debug, Clone, Copy)]
enum Others {
    /// 60 ordinary records spread over bands, risks and symptoms.
    Ordinary,
    /// Nobody: the window is empty in `D`.
    Nobody,
    /// 600 contributors in the extra one's own cell (75+, high risk).
    BusyCell,
}

/// `D` (the others) and `D'` (the others and one contributor with five
/// high-risk, every-symptom records in the 75+ band).
fn neighbours(others: Others) -> (Vec<CoarseRecord>, Vec<CoarseRecord>) {
    let every: SymptomSet = Symptom::ALL.into_iter().collect();
    let d: Vec<CoarseRecord> = match others {
        Others::Ordinary => (0..60)
            .map(|i| {
                record(
                    AgeBand::ALL[i % 6],
                    RiskLevel::ALL[i % 3],
                    [Symptom::ALL[i % 10]].into_iter().collect(),
                    i as u128,
                )
            })
            .collect(),
        Others::Nobody => Vec::new(),
        Others::BusyCell => (0..600)
            .map(|i| record(AgeBand::From75, RiskLevel::High, every, i as u128))
            .collect(),
    };
    let mut d_prime = d.clone();
    for _ in 0..5 {
        d_prime.push(record(AgeBand::From75, RiskLevel::High, every, 1 << 100));
    }
    (d, d_prime)
}

async fn bounded(config: &AggregateConfig, records: &[CoarseRecord]) -> Vec<CellCounts> {
    if records.is_empty() {
        return Vec::new();
    }
    let sequenced: Vec<SequencedRecord> = records
        .iter()
        .enumerate()
        .map(|(seq, &record)| SequencedRecord {
            seq: seq as u64,
            record,
        })
        .collect();
    let batch = to_record_batch(&sequenced).unwrap();
    bounded_counts(&SessionContext::new(), batch, config.bounds())
        .await
        .unwrap()
}

/// Where a release's count noise comes from.
#[derive(Debug, Clone, Copy)]
enum Noise {
    /// Drawn at release time.
    AtRelease,
    /// Drawn ahead into a [`NoiseReserve`] (as the streaming aggregator
    /// does), with room for this many regions at each threshold level.
    Ahead(usize),
}

/// The weighted sum of every released count the extra contributor moves,
/// in trial `k`'s release (0 for counts not released at all).
fn statistic(
    ledger: &mut PrivacyLedger,
    k: usize,
    plan: &ReleasePlan,
    cells: &[CellCounts],
    noise: Noise,
) -> f64 {
    let reserve = match noise {
        Noise::AtRelease => None,
        Noise::Ahead(regions) => {
            Some(NoiseReserve::draw(plan, &vec![regions; plan.levels.len()]).unwrap())
        }
    };
    let authorisation = ledger
        .authorise(trial_window(k), plan.cost.clone())
        .unwrap();
    let release = noise_window(cells, plan, authorisation, reserve)
        .unwrap()
        .release;
    let mut t = 0.0;
    for row in &release.rows {
        if row.age_band != AgeBand::From75.label() {
            continue;
        }
        let Some(level) = plan.levels.iter().find(|l| l.level == row.level) else {
            continue;
        };
        if target().parent(row.level).map(|c| c.to_string()) != Some(row.region.clone()) {
            continue;
        }
        let (var_risk, var_sym) = (level.risk.std_dev().powi(2), level.symptom_sd().powi(2));
        t += row.n_high as f64 / var_risk;
        t += row.symptoms.iter().map(|&s| s as f64).sum::<f64>() / var_sym;
    }
    t
}

/// One-sided upper Clopper–Pearson bound on a rate of `k` in `n` at
/// confidence `1 − alpha`.
fn clopper_pearson_upper(k: usize, n: usize, alpha: f64) -> f64 {
    if k >= n {
        return 1.0;
    }
    Beta::new((k + 1) as f64, (n - k) as f64)
        .unwrap()
        .inverse_cdf(1.0 - alpha)
}

struct Audit {
    epsilon_lower: f64,
    threshold: f64,
    fpr_upper: f64,
    fnr_upper: f64,
}

/// The best threshold test "T ≥ t means D'": chosen on the first half of
/// each sample, bounded on the second.
fn audit(without: &[f64], with: &[f64], delta: f64) -> Audit {
    let sorted = |xs: &[f64]| {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        v
    };
    let (choose_0, eval_0) = without.split_at(without.len() / 2);
    let (choose_1, eval_1) = with.split_at(with.len() / 2);
    let (choose_0, eval_0, choose_1, eval_1) = (
        sorted(choose_0),
        sorted(eval_0),
        sorted(choose_1),
        sorted(eval_1),
    );
    // Samples at or above t, in a sorted sample.
    let at_least = |xs: &[f64], t: f64| xs.len() - xs.partition_point(|&x| x < t);
    let bound = |xs0: &[f64], xs1: &[f64], t: f64| {
        let fp = at_least(xs0, t);
        let fn_ = xs1.len() - at_least(xs1, t);
        let fpr = clopper_pearson_upper(fp, xs0.len(), 0.025);
        let fnr = clopper_pearson_upper(fn_, xs1.len(), 0.025);
        ((1.0 - delta - fnr) / fpr, fpr, fnr)
    };
    let mut candidates: Vec<f64> = choose_0.iter().chain(&choose_1).copied().collect();
    candidates.sort_by(f64::total_cmp);
    candidates.dedup();
    let threshold = candidates
        .iter()
        .copied()
        .map(|t| (bound(&choose_0, &choose_1, t).0, t))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, t)| t)
        .unwrap();
    let (ratio, fpr_upper, fnr_upper) = bound(&eval_0, &eval_1, threshold);
    Audit {
        epsilon_lower: ratio.max(f64::MIN_POSITIVE).ln().max(0.0),
        threshold,
        fpr_upper,
        fnr_upper,
    }
}

fn config(mechanism: Mechanism, epsilon: f64) -> AggregateConfig {
    let mut c = AggregateConfig::default();
    c.privacy.mechanism = mechanism;
    c.privacy.epsilon_per_window = epsilon;
    c.privacy.public_regions = vec![target().to_string()];
    c
}

/// Runs the audit of `noised` (the release actually run) on the pair
/// `others` makes, against the ε and δ that `claimed` states.
async fn run(
    noised: &AggregateConfig,
    claimed: &AggregateConfig,
    others: Others,
    noise: Noise,
) -> (Audit, f64, f64) {
    let plan = noised.validated_plan().unwrap();
    let claim = claimed.validated_plan().unwrap().cost;
    let (d, d_prime) = neighbours(others);
    let (cells, cells_prime) = (bounded(noised, &d).await, bounded(noised, &d_prime).await);
    let n = trials();
    let mut ledger = audit_ledger();
    let without: Vec<f64> = (0..n)
        .map(|k| statistic(&mut ledger, k, &plan, &cells, noise))
        .collect();
    let with: Vec<f64> = (n..2 * n)
        .map(|k| statistic(&mut ledger, k, &plan, &cells_prime, noise))
        .collect();
    let audit = audit(&without, &with, claim.delta);
    let selection = if noised.privacy.public_regions.is_empty() {
        "threshold selection"
    } else {
        "public region"
    };
    eprintln!(
        "audit {} trials/side, {}, {:?} besides the person, {selection}, noise {noise:?}: claimed ε {:.3} \
         (δ {:.1e}); lower bound ε ≥ {:.3} (threshold {:.2}, FPR ≤ {:.4}, FNR ≤ {:.4})",
        n,
        plan.mechanism,
        others,
        claim.epsilon,
        claim.delta,
        audit.epsilon_lower,
        audit.threshold,
        audit.fpr_upper,
        audit.fnr_upper
    );
    (audit, claim.epsilon, claim.delta)
}

async fn assert_within_claim(c: &AggregateConfig, others: Others) {
    assert_within_claim_with(c, others, Noise::AtRelease).await;
}

async fn assert_within_claim_with(c: &AggregateConfig, others: Others, noise: Noise) {
    let (audit, claimed, _) = run(c, c, others, noise).await;
    assert!(
        audit.epsilon_lower <= claimed,
        "empirical ε ≥ {} exceeds the claimed {claimed} ({others:?})",
        audit.epsilon_lower
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaussian_release_spends_no_more_than_it_claims() {
    assert_within_claim(&config(Mechanism::Gaussian, 1.0), Others::Ordinary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn laplace_release_spends_no_more_than_it_claims() {
    assert_within_claim(&config(Mechanism::Laplace, 1.0), Others::Ordinary).await;
}

/// One person in an otherwise empty window: with a public region set the
/// window is released as zeros plus noise either way; with threshold
/// selection, as no rows unless the lone person's region passes (which
/// the selection's δ bounds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_person_in_an_empty_window_is_hidden_within_the_claim() {
    assert_within_claim(&config(Mechanism::Gaussian, 1.0), Others::Nobody).await;
    let mut threshold = config(Mechanism::Gaussian, 1.0);
    threshold.privacy.public_regions.clear();
    assert_within_claim(&threshold, Others::Nobody).await;
}

/// Noise drawn before the window closed (the streaming aggregator's
/// `NoiseReserve`) is the same noise: the public region's counts all come
/// from the reserve; under threshold selection, the reserve covers a few
/// regions and the rest is drawn at release time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_with_noise_drawn_ahead_spends_no_more_than_it_claims() {
    let public = config(Mechanism::Gaussian, 1.0);
    assert_within_claim_with(&public, Others::Ordinary, Noise::Ahead(0)).await;
    let mut threshold = config(Mechanism::Gaussian, 1.0);
    threshold.privacy.public_regions.clear();
    assert_within_claim_with(&threshold, Others::Ordinary, Noise::Ahead(3)).await;
}

/// One person among hundreds in their own cell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_in_a_busy_cell_is_hidden_within_the_claim() {
    assert_within_claim(&config(Mechanism::Gaussian, 1.0), Others::BusyCell).await;
}

/// The audit has teeth: noise calibrated for ε = 10 while claiming ε = 1 is
/// caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_catches_a_release_noised_for_ten_times_its_claim() {
    let (audit, claimed, _) = run(
        &config(Mechanism::Gaussian, 10.0),
        &config(Mechanism::Gaussian, 1.0),
        Others::Ordinary,
        Noise::AtRelease,
    )
    .await;
    assert!(
        audit.epsilon_lower > claimed,
        "an under-noised release went unnoticed: ε ≥ {} vs claimed {claimed}",
        audit.epsilon_lower
    );
}

/// The provisional series' configuration: a quarter of the window's budget
/// over 24 hourly sub-windows, the public set the target cell.
fn provisional_config(epsilon: f64) -> AggregateConfig {
    let mut c = config(Mechanism::Gaussian, epsilon);
    c.privacy.provisional_share = 0.25;
    c.privacy.provisional_sub_window_secs = 3600;
    c
}

/// The extra contributor's first record is in this sub-window.
const FIRST_HOUR: i64 = 1;

/// The first-record counts of `D` (60 ordinary contributors over the
/// day's hours) and `D'` (and one more: high risk at hour 1 in the
/// target, then back at hours 5 and 20 with other answers, elsewhere).
async fn provisional_neighbours(
    c: &AggregateConfig,
) -> (Vec<FirstRecordCounts>, Vec<FirstRecordCounts>) {
    let hour = 3_600_000;
    let at = |h: i64, i: usize| Arrival {
        produced_ms: window().start_ms + h * hour + 60_000,
        partition: 0,
        offset: i as i64,
    };
    let (d, _) = neighbours(Others::Ordinary);
    let mut arrivals: Vec<Arrival> = (0..d.len()).map(|i| at((i % 24) as i64, i)).collect();
    let mut d_prime = d.clone();
    let elsewhere =
        RegionCell::from_coordinate(-31.0, 151.2, RegionResolution::new(5).unwrap()).unwrap();
    for (h, risk, region) in [
        (FIRST_HOUR, RiskLevel::High, target()),
        (5, RiskLevel::Low, elsewhere),
        (20, RiskLevel::Moderate, target()),
    ] {
        d_prime.push(CoarseRecord {
            region,
            ..record(AgeBand::From75, risk, SymptomSet::default(), u128::MAX)
        });
        arrivals.push(at(h, arrivals.len()));
    }
    let ctx = SessionContext::new();
    // The sub-windows and level the aggregator would count them at.
    let series = c.validated_plan().unwrap().provisional.unwrap();
    let (tree, level) = (series.tree, series.level);
    let without = first_record_counts(&ctx, window(), tree, level, d.iter().zip(&arrivals))
        .await
        .unwrap();
    let with = first_record_counts(&ctx, window(), tree, level, d_prime.iter().zip(&arrivals))
        .await
        .unwrap();
    (without, with)
}

/// The sum of every interval measurement (high risk, the target's region)
/// that holds the extra contributor's first sub-window, over trial `k`'s
/// whole series: the likelihood-ratio statistic, every node having the
/// same noise.
fn provisional_statistic(
    ledger: &mut PrivacyLedger,
    k: usize,
    plan: &ReleasePlan,
    counts: &[FirstRecordCounts],
) -> f64 {
    let w = trial_window(k);
    ledger.authorise_provisional(w, plan.cost.clone()).unwrap();
    let level = plan.provisional.as_ref().unwrap().level;
    let region = target().parent(level).unwrap().to_string();
    let mut series = ProvisionalSeries::default();
    let mut t = 0.0;
    for sub in 0..24 {
        let release = series.advance(plan, w, "audit", sub, counts).unwrap();
        for interval in &release.meta.provisional.unwrap().intervals {
            if i64::from(interval.start) <= FIRST_HOUR && FIRST_HOUR < i64::from(interval.end) {
                t += interval.counts[&region][2] as f64;
            }
        }
    }
    t
}

/// Runs the provisional series of `noised` on the pair, against the cost
/// of the series that `claimed` states (ε of its ρ at its δ).
async fn run_provisional(noised: &AggregateConfig, claimed: &AggregateConfig) -> (Audit, f64) {
    let plan = noised.validated_plan().unwrap();
    let claim = claimed.validated_plan().unwrap().cost;
    let rho: f64 = claim
        .statistics
        .iter()
        .filter(|c| c.statistic == "provisional_risk_counts")
        .map(|c| c.cost)
        .sum();
    let claimed_epsilon = hushmap_privacy::zcdp_epsilon(rho, claimed.privacy.delta).unwrap();
    let (d, d_prime) = provisional_neighbours(noised).await;
    assert_ne!(d, d_prime, "the extra contributor is counted");
    let n = trials();
    let mut ledger = audit_ledger();
    let without: Vec<f64> = (0..n)
        .map(|k| provisional_statistic(&mut ledger, k, &plan, &d))
        .collect();
    let with: Vec<f64> = (n..2 * n)
        .map(|k| provisional_statistic(&mut ledger, k, &plan, &d_prime))
        .collect();
    let audit = audit(&without, &with, claimed.privacy.delta);
    eprintln!(
        "provisional audit {n} trials/side, 24 sub-windows: claimed ε {claimed_epsilon:.3} for the \
         series (ρ {rho:.2e}); lower bound ε ≥ {:.3} (threshold {:.2}, FPR ≤ {:.4}, FNR ≤ {:.4})",
        audit.epsilon_lower, audit.threshold, audit.fpr_upper, audit.fnr_upper
    );
    (audit, claimed_epsilon)
}

/// The provisional series spends no more than its share, however many
/// sub-windows it publishes, and the audit catches one noised for far
/// more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provisional_series_spends_no_more_than_its_share() {
    let c = provisional_config(1.0);
    let (audit, claimed) = run_provisional(&c, &c).await;
    assert!(
        audit.epsilon_lower <= claimed,
        "empirical ε ≥ {} exceeds the series' claimed {claimed}",
        audit.epsilon_lower
    );
    let (audit, claimed) = run_provisional(&provisional_config(30.0), &c).await;
    assert!(
        audit.epsilon_lower > claimed,
        "an under-noised series went unnoticed: ε ≥ {} vs claimed {claimed}",
        audit.epsilon_lower
    );
}
