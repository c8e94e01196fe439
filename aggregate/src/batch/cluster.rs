//! Counting on a Ballista cluster (`batch --cluster df://HOST:PORT`).
//!
//! The run reads, validates and coarsens its input here, as on one
//! machine, into its spill directory; the cluster's executors read those
//! files (all in one plan), bound each contributor and count per cell by the same SQL as a
//! local run, and send back only the exact counts. Noising, the ledger and
//! the releases stay in this process: nothing the cluster sees depends on
//! the noise, and nothing it could do spends budget.
//!
//! The executors must read the spill directory at the same path
//! (`batch.spill_dir` on storage they share; on one machine any directory
//! the executors' user can read).

use super::{BatchError, SpilledRecords};
use crate::engine::CellCounts;
use hushmap_privacy::sensitivity::ContributionBounds;
pub use hushmap_service::cluster::ClusterUrl;

/// The bounded counts of every window of `records`, counted by the
/// cluster at `url` with the plan a local run uses for `bounds`.
#[cfg(feature = "cluster")]
pub(super) async fn count_on_cluster(
    url: &ClusterUrl,
    records: &SpilledRecords,
    bounds: ContributionBounds,
) -> Result<Vec<CellCounts>, BatchError> {
    use crate::engine::{self, EngineError};
    use ballista::prelude::SessionContextExt;
    use datafusion::prelude::SessionContext;
    let failed = |source: EngineError| BatchError::Cluster {
        url: url.to_string(),
        source,
    };
    let ctx = SessionContext::remote(&url.to_string())
        .await
        .map_err(|e| failed(e.into()))?;
    // All the records in one plan: the executors' memory is theirs to
    // bound.
    let whole = super::CountingPass {
        files: records
            .shards
            .iter()
            .map(|(path, _)| path.clone())
            .collect(),
        rows: records.rows,
    };
    let table = whole.listing_table().map_err(failed)?;
    engine::bounded_counts_table(&ctx, table, bounds)
        .await
        .map_err(failed)
}

/// Without the `cluster` feature there is no Ballista client.
#[cfg(not(feature = "cluster"))]
pub(super) async fn count_on_cluster(
    url: &ClusterUrl,
    _: &SpilledRecords,
    _: ContributionBounds,
) -> Result<Vec<CellCounts>, BatchError> {
    Err(BatchError::NoClusterClient(url.clone()))
}
