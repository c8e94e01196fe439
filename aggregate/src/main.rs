//! `hushmap-aggregate`: bounded, noised, accounted releases from coarse records.

use anyhow::Context;
use clap::Parser;
use hushmap_aggregate::{AggregateConfig, Aggregator};
use std::path::PathBuf;

/// Consumes coarse records, releases differentially private aggregates per
/// window. Settings: defaults < --config FILE < HUSHMAP_AGGREGATE_* env.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hushmap_service::init_tracing();
    let args = Args::parse();
    let config = AggregateConfig::load(args.config.as_deref()).context("loading configuration")?;
    let aggregator = Aggregator::new(config).context("starting aggregator")?;
    aggregator
        .run(hushmap_service::shutdown_signal())
        .await
        .context("aggregating")?;
    Ok(())
}
