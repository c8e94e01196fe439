//! The partitioned streaming aggregator: any number of instances share the
//! work through two Kafka consumer groups (docs/SCALE.md).
//!
//! ```text
//! submissions (key: contributor ‖ window) ──▶ stage 1 "bound"  (group <group_id>-bound)
//!     keeps each contributor's latest m records per window and partition,
//!     forwards them sealed, by shard of their coarsest released cell
//! hushmap.bounded.v1 (one partition per shard) ──▶ stage 2 "release" (group <group_id>-release)
//!     counts, noises and publishes one part of each window per shard
//! hushmap.releases.v1
//! ```
//!
//! Every instance runs both stages; Kafka's group protocol spreads the
//! partitions. On a rebalance each stage drops the revoked partitions'
//! state, and the new owner rebuilds from the committed offsets, which
//! never pass an open window, with what was already forwarded or published
//! read from the commit metadata. Each stage writes its output and its
//! offsets in one transaction, and a member that lost its partitions is
//! fenced by its stale group generation (KIP-447), so results match one
//! aggregator's: nothing lost, nothing published twice.

mod bound;
mod group;
pub mod parts;

use crate::config::AggregateConfig;
use crate::error::AggregatorError;
use crate::metrics::AggregatorStats;
use hushmap_service::clock::now_ms;
use std::future::Future;
use std::sync::Arc;

/// Both stages of one partitioned instance, and its `/metrics`.
pub struct PartitionedAggregator {
    bound: (bound::BoundStage, group::GroupMember),
    parts: (parts::PartStage, group::GroupMember),
    tick_ms: u64,
    stats: Arc<AggregatorStats>,
    metrics_listener: std::net::TcpListener,
}

impl PartitionedAggregator {
    /// Validates the config, calibrates the noise, restores the ledger and
    /// joins both groups.
    pub fn new(config: AggregateConfig) -> Result<PartitionedAggregator, AggregatorError> {
        let plan = config.validated_plan()?;
        let instance = config
            .kafka
            .instance_id
            .clone()
            .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
        let stats = Arc::new(AggregatorStats::default());
        let metrics_listener = crate::metrics::bind(config.metrics_listen)?;
        let bound = bound::BoundStage::new(&config, &instance, stats.clone())?;
        let parts = parts::PartStage::new(&config, &instance, plan, stats.clone())?;
        tracing::info!(
            window_secs = config.window_secs,
            "partitioned aggregator started"
        );
        Ok(PartitionedAggregator {
            bound,
            parts,
            tick_ms: config.tick_ms,
            stats,
            metrics_listener,
        })
    }

    pub fn metrics_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.metrics_listener.local_addr()
    }

    pub fn stats(&self) -> Arc<AggregatorStats> {
        self.stats.clone()
    }

    /// Fault injection for tests: see [`parts::LostCommitAnswers`].
    #[doc(hidden)]
    pub fn lost_commit_answers(&self) -> Arc<parts::LostCommitAnswers> {
        self.parts.0.lost_commit_answers()
    }

    /// Runs both stages until `shutdown` resolves or one of them fails.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), AggregatorError> {
        let metrics = crate::metrics::serve(&self.metrics_listener, self.stats.clone())?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let (bound, bound_member) = &mut self.bound;
        let (parts, parts_member) = &mut self.parts;
        let stages = async {
            tokio::try_join!(
                group::drive(bound, bound_member, self.tick_ms, wait(stopped.clone())),
                group::drive(parts, parts_member, self.tick_ms, wait(stopped.clone())),
            )
        };
        let result = tokio::select! {
            r = stages => r.map(|_| ()),
            () = shutdown => {
                let _ = stop.send(true);
                Ok(())
            }
        };
        metrics.abort();
        result
    }
}
