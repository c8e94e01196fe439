//! The next release's count noise, drawn on a blocking thread while its
//! window is still open ([`NoiseReserve`]), so that a window's release
//! after its data are in costs the counting and the sums, not the exact
//! samplers. Used by the single streaming topology.
//!
//! The reserve is sized by what is public: a public region set, or the
//! number of regions the last release showed at each threshold level.

use hushmap_privacy::noise::NoiseError;
use hushmap_privacy::release::{NoiseReserve, ReleasePlan};
use hushmap_schema::Release;
use tokio::task::JoinHandle;

/// At most one reserve being drawn or ready, for the next release.
#[derive(Default)]
pub(crate) struct NoiseAhead {
    drawing: Option<JoinHandle<Result<NoiseReserve, NoiseError>>>,
}

impl NoiseAhead {
    /// Starts drawing the next release's noise, sized by `last` (the
    /// previous release, when there is one). A reserve not yet used is
    /// dropped: its noise never met a count.
    pub(crate) fn start(&mut self, plan: &ReleasePlan, last: Option<&Release>) {
        let guess = last.map_or_else(Vec::new, |r| NoiseReserve::regions_released(plan, r));
        let plan = plan.clone();
        if let Some(previous) = self.drawing.replace(tokio::task::spawn_blocking(move || {
            NoiseReserve::draw(&plan, &guess)
        })) {
            previous.abort();
        }
    }

    /// The reserve for the release about to be made: waits for a draw
    /// still running (never longer than drawing now would take), and
    /// leaves nothing behind. `None` when none was started or it failed:
    /// the release then draws its noise itself.
    pub(crate) async fn take(&mut self) -> Option<NoiseReserve> {
        match self.drawing.take()?.await {
            Ok(Ok(reserve)) => Some(reserve),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "drawing noise ahead failed; the release draws its own");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "the noise-ahead task ended early; the release draws its own");
                None
            }
        }
    }
}
