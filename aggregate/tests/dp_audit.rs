//! Empirical differential-privacy audit of the release path.
//!
//! Two neighbouring datasets: `D`, a window of ordinary records, and `D'`,
//! the same plus one contributor who submits several times into the most
//! sensitive spot (one region × age band, high risk, every symptom). Both go
//! through the engine's contribution bounding (DataFusion, once each: it is
//! deterministic) and then through `noisy_release` — the same calls batch
//! mode makes — thousands of times each. Every released count the extra
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
//! `HUSHMAP_AUDIT_TRIALS` (default 2000 per dataset) sets the run count; the
//! figures in docs/PRIVACY.md come from a longer run.

use datafusion::prelude::SessionContext;
use hushmap_aggregate::AggregateConfig;
use hushmap_aggregate::config::Mechanism;
use hushmap_aggregate::engine::{CellCounts, bounded_counts};
use hushmap_aggregate::records::{SequencedRecord, to_record_batch};
use hushmap_aggregate::release::{ReleasePlan, noisy_release};
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

/// `D`: 60 ordinary records; `D'`: the same and one contributor with five
/// high-risk, every-symptom records in the 75+ band.
fn neighbours() -> (Vec<CoarseRecord>, Vec<CoarseRecord>) {
    let d: Vec<CoarseRecord> = (0..60)
        .map(|i| {
            record(
                AgeBand::ALL[i % 6],
                RiskLevel::ALL[i % 3],
                [Symptom::ALL[i % 10]].into_iter().collect(),
                i as u128,
            )
        })
        .collect();
    let mut d_prime = d.clone();
    let every: SymptomSet = Symptom::ALL.into_iter().collect();
    for _ in 0..5 {
        d_prime.push(record(AgeBand::From75, RiskLevel::High, every, 1 << 100));
    }
    (d, d_prime)
}

async fn bounded(config: &AggregateConfig, records: &[CoarseRecord]) -> Vec<CellCounts> {
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

/// The weighted sum of every released count the extra contributor moves.
fn statistic(plan: &ReleasePlan, cells: &[CellCounts]) -> f64 {
    let release = noisy_release(window(), cells, plan, "audit").unwrap();
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
        let (var_risk, var_sym) = (
            level.risk.std_dev().powi(2),
            level.symptoms.std_dev().powi(2),
        );
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

/// Runs the audit of `noised` (the release actually run) against the ε and
/// δ that `claimed` states.
async fn run(noised: &AggregateConfig, claimed: &AggregateConfig) -> (Audit, f64, f64) {
    let plan = noised.validated_plan().unwrap();
    let claim = claimed.validated_plan().unwrap().cost;
    let (d, d_prime) = neighbours();
    let (cells, cells_prime) = (bounded(noised, &d).await, bounded(noised, &d_prime).await);
    let n = trials();
    let without: Vec<f64> = (0..n).map(|_| statistic(&plan, &cells)).collect();
    let with: Vec<f64> = (0..n).map(|_| statistic(&plan, &cells_prime)).collect();
    let audit = audit(&without, &with, claim.delta);
    eprintln!(
        "audit {} trials/side, {}: claimed ε {:.3} (δ {:.1e}); lower bound ε ≥ {:.3} \
         (threshold {:.2}, FPR ≤ {:.4}, FNR ≤ {:.4})",
        n,
        plan.mechanism,
        claim.epsilon,
        claim.delta,
        audit.epsilon_lower,
        audit.threshold,
        audit.fpr_upper,
        audit.fnr_upper
    );
    (audit, claim.epsilon, claim.delta)
}

async fn assert_within_claim(mechanism: Mechanism) {
    let c = config(mechanism, 1.0);
    let (audit, claimed, _) = run(&c, &c).await;
    assert!(
        audit.epsilon_lower <= claimed,
        "empirical ε ≥ {} exceeds the claimed {claimed}",
        audit.epsilon_lower
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaussian_release_spends_no_more_than_it_claims() {
    assert_within_claim(Mechanism::Gaussian).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn laplace_release_spends_no_more_than_it_claims() {
    assert_within_claim(Mechanism::Laplace).await;
}

/// The audit has teeth: noise calibrated for ε = 10 while claiming ε = 1 is
/// caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_catches_a_release_noised_for_ten_times_its_claim() {
    let (audit, claimed, _) = run(
        &config(Mechanism::Gaussian, 10.0),
        &config(Mechanism::Gaussian, 1.0),
    )
    .await;
    assert!(
        audit.epsilon_lower > claimed,
        "an under-noised release went unnoticed: ε ≥ {} vs claimed {claimed}",
        audit.epsilon_lower
    );
}
