//! From bounded true counts to a published release, one path for every way
//! Hushmap runs (the single streaming topology, the partitioned stages and
//! batch mode):
//!
//! * [`plan`]: the [`ReleasePlan`], every mechanism of one release
//!   calibrated from a [`PlanSpec`] (the budget split and the contribution
//!   bounds), and what the release costs;
//! * [`window`]: [`release_window`], the one step from a closed window to a
//!   release: the ledger authorises the plan's cost (and a ledger file, when
//!   there is one, records it) before any noise is drawn;
//! * [`noising`]: the noise itself and the post-processing into release
//!   rows;
//! * [`consistency`]: the post-processing that makes a window's counts
//!   consistent across levels (weighted least squares over the region
//!   tree), non-negative integers, with the variance of each estimate;
//!   [`banded`] extends it to the age bands and an all-ages total measured
//!   on its own;
//! * [`continual`]: provisional counts within a window by the binary-tree
//!   mechanism over sub-windows (not yet wired to the aggregator).
//!
//! Post-processing (free under DP): counts are clamped to ≥ 0, `n_total` is
//! the sum of the published risk-level counts, the high-risk share and its
//! 95% interval are computed from published numbers
//! ([`ShareInterval`](hushmap_schema::ShareInterval)), and cells whose
//! interval is wider than the configured half-width are marked suppressed.

pub mod banded;
pub mod consistency;
pub mod continual;
pub mod noising;
pub mod plan;
pub mod reserve;
pub mod window;

pub use noising::{Noised, missed_release, noise_window, noisy_release, roll_up};
pub use plan::{
    LevelPlan, Mechanism, PlanSpec, ProvisionalPlan, ProvisionalSpec, RegionSelection, ReleasePlan,
};
pub use reserve::NoiseReserve;
pub use window::{
    ProvisionalOutcome, ReleaseStepError, WindowData, WindowOutcome, release_provisional,
    release_window,
};

use hushmap_schema::{AgeBand, RegionCell};

/// True (un-noised) counts of one region × age band of one window, after
/// contribution bounding. Lives only in memory, between the count and the
/// noise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellCounts {
    /// Start of the window the counts belong to (ms since the epoch).
    pub window_start: i64,
    pub region: RegionCell,
    pub age_band: AgeBand,
    /// Indexed by `RiskLevel::code()`.
    pub risk: [i64; 3],
    /// Indexed like `Symptom::ALL`.
    pub symptoms: [i64; 10],
}

impl CellCounts {
    /// A cell nobody was counted in.
    pub fn empty(window_start: i64, region: RegionCell, age_band: AgeBand) -> CellCounts {
        CellCounts {
            window_start,
            region,
            age_band,
            risk: [0; 3],
            symptoms: [0; 10],
        }
    }
}
