//! `hushmap-ingest`: the public submission endpoint.

use anyhow::Context;
use clap::{Parser, Subcommand};
use hushmap_ingest::{IngestConfig, IngestServer};
use std::path::PathBuf;

/// Validates, triages and coarsens self-check submissions and produces
/// sealed coarse records to Kafka. Settings: defaults < --config FILE <
/// HUSHMAP_INGEST_* env; secrets only from HUSHMAP_CONTRIBUTOR_SECRET and
/// HUSHMAP_PAYLOAD_PUBLIC_KEY (or the file), never from flags.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Loads and checks the configuration (file and environment, secrets
    /// included) as a start would, prints `configuration ok` and exits;
    /// non-zero with the reason otherwise. Connects to nothing.
    CheckConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::CheckConfig) = args.command {
        IngestConfig::load(args.config.as_deref()).context("loading configuration")?;
        println!("configuration ok");
        return Ok(());
    }
    hushmap_service::init_tracing();
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
