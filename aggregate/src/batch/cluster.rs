//! Counting on a Ballista cluster (`batch --cluster df://HOST:PORT`).
//!
//! The run reads, validates and coarsens its input here, as on one
//! machine, into its spill directory; the cluster's executors read that
//! file, bound each contributor and count per cell by the same SQL as a
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
use std::fmt;

/// A Ballista scheduler's address, `df://HOST[:PORT]` (port 50050 if
/// none is given, as Ballista's own clients assume).
///
/// ```
/// use hushmap_aggregate::batch::ClusterUrl;
/// let url = ClusterUrl::parse("df://scheduler.batch:50050").unwrap();
/// assert_eq!(url.to_string(), "df://scheduler.batch:50050");
/// assert!(ClusterUrl::parse("http://scheduler:50050").is_err());
/// assert!(ClusterUrl::parse("df://scheduler:50050/path").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    host: String,
    port: u16,
}

impl ClusterUrl {
    /// Ballista's scheduler port.
    pub const DEFAULT_PORT: u16 = 50050;

    pub fn parse(text: &str) -> Result<ClusterUrl, BatchError> {
        let bad = |why: &str| BatchError::ClusterUrl(format!("{text:?}: {why}"));
        let rest = text
            .strip_prefix("df://")
            .ok_or_else(|| bad("expected df://HOST[:PORT]"))?;
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("only a host and a port, no path, query or user"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("the port must be 1 to 65535"))?,
            ),
            None => (rest, Self::DEFAULT_PORT),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(ClusterUrl {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for ClusterUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "df://{}:{}", self.host, self.port)
    }
}

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
    let table = records.listing_table().map_err(failed)?;
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
    Err(BatchError::ClusterUrl(format!(
        "{url}: this hushmap-aggregate was built without the `cluster` feature"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_a_df_url_with_a_host_and_a_port() {
        assert_eq!(
            ClusterUrl::parse("df://localhost").unwrap().to_string(),
            "df://localhost:50050"
        );
        assert_eq!(
            ClusterUrl::parse("df://10.0.0.7:6000").unwrap(),
            ClusterUrl {
                host: "10.0.0.7".into(),
                port: 6000
            }
        );
        for bad in [
            "localhost:50050",
            "df://",
            "df://:50050",
            "df://h:0",
            "df://h:99999",
            "df://h:x",
            "df://user@h:1",
            "df://h:1/x",
        ] {
            assert!(ClusterUrl::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
