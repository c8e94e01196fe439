//! `hushmap-dashboard`: noisy releases for analysts.

use anyhow::Context;
use clap::Parser;
use hushmap_dashboard::{DashboardConfig, DashboardServer};
use std::path::PathBuf;

/// Serves the analyst page and JSON API over the releases topic.
/// Settings: defaults < --config FILE < HUSHMAP_DASHBOARD_* env.
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
    let config = DashboardConfig::load(args.config.as_deref()).context("loading configuration")?;
    let server = DashboardServer::bind(config)
        .await
        .context("starting dashboard")?;
    server
        .serve(hushmap_service::shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}
