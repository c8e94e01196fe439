//! `hushmap-ingest`: the public submission endpoint.

use anyhow::Context;
use clap::Parser;
use hushmap_ingest::{IngestConfig, IngestServer};
use std::path::PathBuf;

/// Validates, triages and coarsens self-check submissions and produces
/// coarse records to Kafka. Settings: defaults < --config FILE < HUSHMAP_INGEST_* env.
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
    let config = IngestConfig::load(args.config.as_deref()).context("loading configuration")?;
    let server = IngestServer::bind(config)
        .await
        .context("starting ingest")?;
    server
        .serve(hushmap_service::shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}
