//! Counting on a Ballista cluster (`batch --cluster df://HOST:PORT`).
//!
//! The run reads, validates and coarsens its input here, as on one
//! machine, into its spill directory; the cluster's executors read those
//! files a pass at a time, as a local run does, bound each contributor and
//! count per cell by the same SQL as a local run, and send back only the
//! exact counts. Noising, the ledger and the releases stay in this
//! process: nothing the cluster sees depends on the noise, and nothing it
//! could do spends budget.
//!
//! The executors must read the spill directory at the same path
//! (`batch.spill_dir` on storage they share; on one machine any directory
//! the executors' user can read).

use super::{BatchError, CellSums, Progress, SpilledRecords};
use crate::engine::CellCounts;
use hushmap_privacy::sensitivity::ContributionBounds;
pub use hushmap_service::cluster::ClusterUrl;

/// The bounded counts of every window of `records`, counted by the
/// cluster at `url` with the plan a local run uses for `bounds`, one pass
/// of at most `records_per_pass` records (whole contributors) at a time,
/// as a local run counts them: each pass is one job, so an executor's
/// memory is that of a pass however large the input. Returns the counts
/// and the number of passes.
#[cfg(feature = "cluster")]
pub(super) async fn count_on_cluster(
    url: &ClusterUrl,
    secret: Option<&hushmap_service::secrets::Secret>,
    records: &SpilledRecords,
    records_per_pass: u64,
    bounds: ContributionBounds,
    progress: &dyn Progress,
) -> Result<(Vec<CellCounts>, usize), BatchError> {
    use crate::engine::{self, EngineError};
    use ballista::prelude::{SessionConfigExt, SessionContextExt};
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};
    let failed = |source: EngineError| BatchError::Cluster {
        url: url.to_string(),
        source,
    };
    // The secret travels as gRPC metadata on every call to the scheduler,
    // which refuses a plan without it (hushmap-cluster's `auth`).
    let mut config = SessionConfig::new_with_ballista();
    if let Some(secret) = secret {
        config = config.with_ballista_grpc_metadata(
            [(
                "authorization".to_string(),
                format!("Bearer {}", secret.expose()),
            )]
            .into(),
        );
    }
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    let ctx = SessionContext::remote_with_state(&url.to_string(), state)
        .await
        .map_err(|e| failed(e.into()))?;
    let passes = records.passes(records_per_pass);
    let mut sums = CellSums::default();
    for pass in &passes {
        let table = pass.listing_table().map_err(failed)?;
        let cells = engine::bounded_counts_table(&ctx, table, bounds)
            .await
            .map_err(failed)?;
        sums.add(cells);
        progress.advance(pass.rows);
    }
    Ok((sums.into_cells(), passes.len()))
}

/// Without the `cluster` feature there is no Ballista client.
#[cfg(not(feature = "cluster"))]
pub(super) async fn count_on_cluster(
    url: &ClusterUrl,
    _secret: Option<&hushmap_service::secrets::Secret>,
    _: &SpilledRecords,
    _: u64,
    _: ContributionBounds,
    _: &dyn Progress,
) -> Result<(Vec<CellCounts>, usize), BatchError> {
    Err(BatchError::NoClusterClient(url.clone()))
}
