//! `hushmap-ingest`: the public submission endpoint.

use anyhow::Context;
use clap::{Parser, Subcommand};
use hushmap_ingest::{IngestConfig, IngestServer};
use hushmap_schema::PayloadKeyring;
use std::path::PathBuf;

/// Validates, triages and coarsens self-check submissions and produces
/// sealed coarse records to Kafka. Settings: defaults < --config FILE <
/// HUSHMAP_INGEST_* env; secrets only from HUSHMAP_CONTRIBUTOR_SECRET and
/// HUSHMAP_PAYLOAD_KEYS (or the file), never from flags.
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
    /// Prints a fresh payload key entry (ID:HEX64) for HUSHMAP_PAYLOAD_KEYS.
    /// Give it to the aggregator first (as `new,old`), then to ingest.
    GeneratePayloadKey {
        /// Key id written in every record sealed under it.
        #[arg(long, default_value_t = 1)]
        id: u16,
    },
    /// Loads and checks the configuration (file and environment, secrets
    /// included) as a start would, prints `configuration ok` and exits;
    /// non-zero with the reason otherwise. Connects to nothing.
    CheckConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Command::GeneratePayloadKey { id }) => {
            println!("{}", PayloadKeyring::generate_entry(id));
            return Ok(());
        }
        Some(Command::CheckConfig) => {
            IngestConfig::load(args.config.as_deref()).context("loading configuration")?;
            println!("configuration ok");
            return Ok(());
        }
        None => {}
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
