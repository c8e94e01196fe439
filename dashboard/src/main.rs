//! `hushmap-dashboard`: noisy releases for analysts and researchers.

use anyhow::Context;
use clap::{Parser, Subcommand};
use hushmap_dashboard::auth::{Role, TokenEntry, valid_token};
use hushmap_dashboard::{DashboardConfig, DashboardServer, sql_worker};
use std::io::BufRead;
use std::path::PathBuf;

/// Serves the analyst page, the JSON API, the exports and Arrow Flight over
/// the releases topic. Settings: defaults < --config FILE <
/// HUSHMAP_DASHBOARD_* env.
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
    /// Reads a token on standard input (never an argument: arguments show
    /// in `ps`) and prints its tokens-file line: `<sha256> <roles> <name>`.
    HashToken {
        /// Roles the token holds.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<RoleArg>,
        /// Who holds it, for the operators' records.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Loads and checks the configuration (file, environment, tokens file)
    /// as a start would, prints `configuration ok` and exits; non-zero with
    /// the reason otherwise. Connects to nothing.
    CheckConfig,
    /// Runs one researcher's SQL query (a JSON request on standard input,
    /// an Arrow IPC stream on standard output) and exits. Started by the
    /// dashboard itself for each Flight SQL query, under a memory limit;
    /// not for people.
    #[command(hide = true)]
    SqlWorker {
        /// The release store.
        #[arg(long)]
        store: PathBuf,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long)]
        memory_mb: u64,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Analyst,
    Researcher,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // A query's worker: before any runtime or thread of the server exists.
    if let Some(Command::SqlWorker {
        store,
        threads,
        memory_mb,
    }) = &args.command
    {
        std::process::exit(sql_worker::run_worker(sql_worker::WorkerArgs {
            store: store.clone(),
            threads: *threads,
            memory_mb: *memory_mb,
        }));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Command::HashToken { roles, name }) = &args.command {
        let mut token = String::new();
        std::io::stdin().lock().read_line(&mut token)?;
        let token = token.trim();
        anyhow::ensure!(
            valid_token(token),
            "a token needs 16 to 256 characters of A-Z a-z 0-9 - _ . ~ + / ="
        );
        let roles = roles
            .iter()
            .map(|r| match r {
                RoleArg::Analyst => Role::Analyst,
                RoleArg::Researcher => Role::Researcher,
            })
            .collect();
        println!("{}", TokenEntry::for_token(token, roles, name).to_line());
        return Ok(());
    }
    if let Some(Command::CheckConfig) = args.command {
        DashboardConfig::load(args.config.as_deref()).context("loading configuration")?;
        println!("configuration ok");
        return Ok(());
    }
    hushmap_service::init_tracing();
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
