//! `hushmap-aggregate`: bounded, noised, accounted releases from coarse records.

use anyhow::Context;
use clap::{Args as ClapArgs, Parser, Subcommand};
use hushmap_aggregate::batch::{self, Progress};
use hushmap_aggregate::{AggregateConfig, Aggregator, PartitionedAggregator, Topology};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// Consumes coarse records, releases differentially private aggregates per
/// window. Settings: defaults < --config FILE < HUSHMAP_AGGREGATE_* env.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Stream from Kafka (the default).
    Stream,
    /// Release historic data from a file with the same coarsening,
    /// bounding, noise and ledger as the stream.
    Batch(BatchArgs),
    /// Loads and checks the configuration for streaming (file and
    /// environment, payload keys included; the noise is calibrated), prints
    /// `configuration ok` and exits; non-zero with the reason otherwise.
    /// Connects to nothing.
    CheckConfig,
    /// Prints a fresh private payload key entry (ID:HEX64) for
    /// HUSHMAP_PAYLOAD_KEYS: the aggregator's alone. Give the aggregator
    /// `new,old`, then ingest the new public key (`payload-public-key`).
    GeneratePayloadKey {
        /// Key id written in every record sealed under it.
        #[arg(long, default_value_t = 1)]
        id: u16,
    },
    /// Prints the public key (ID:HEX64) of the first key in
    /// HUSHMAP_PAYLOAD_KEYS (or its file): what ingest seals under, as
    /// HUSHMAP_PAYLOAD_PUBLIC_KEY. Not secret.
    PayloadPublicKey,
}

#[derive(ClapArgs)]
struct BatchArgs {
    /// Submissions, one JSON body per line (.ndjson, .jsonl; each needs
    /// observed_at), or coarse records (.parquet).
    #[arg(long)]
    input: PathBuf,
    /// Start of the first window released: an RFC 3339 time or a UTC date
    /// (YYYY-MM-DD), on a window boundary. Every window starting in
    /// [from, to) is released, whatever the input holds; records outside
    /// are refused.
    #[arg(long, value_parser = instant)]
    from: i64,
    /// End of the range (exclusive), likewise.
    #[arg(long, value_parser = instant)]
    to: i64,
    /// The ledger this run spends from and records in (created if absent,
    /// kept across runs: releasing a window twice is refused).
    #[arg(long, default_value = "hushmap-ledger.ndjson")]
    ledger: PathBuf,
    /// Also count what the stream released (the releases topic of the
    /// configuration) as spent.
    #[arg(long, conflicts_with = "fresh_ledger")]
    ledger_topic: bool,
    /// Spend from a ledger made for this run only: its budget is shared with
    /// nothing, which stderr and every release's metadata say.
    #[arg(long, conflicts_with = "ledger")]
    fresh_ledger: bool,
    /// ε spent per window (overrides privacy.epsilon_per_window).
    #[arg(long)]
    epsilon: f64,
    /// δ at which ε is stated (overrides privacy.delta; Gaussian only).
    #[arg(long)]
    delta: Option<f64>,
    /// Output in the release schema: .arrow (IPC file), .parquet or .json.
    #[arg(long)]
    out: PathBuf,
    /// Also write the measurements behind the releases (unclamped,
    /// `hushmap.estimates = measured`; no extra cost), in the same formats.
    #[arg(long)]
    measured_out: Option<PathBuf>,
    /// Bound and count on the Ballista cluster whose scheduler is at
    /// df://HOST[:PORT] (hushmap-cluster). The executors read the accepted
    /// records from batch.spill_dir at the same path, and send back exact
    /// counts; the noise and the ledger stay in this process.
    #[arg(long, value_parser = batch::ClusterUrl::parse)]
    cluster: Option<batch::ClusterUrl>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Before any thread has taken an arena of its own (the runtime's
    // workers included), so the cap holds for all of them.
    if matches!(args.command, Some(Command::Batch(_))) {
        hushmap_aggregate::batch::cap_allocator_arenas();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(args))
}

async fn run(Args { config, command }: Args) -> anyhow::Result<()> {
    hushmap_service::init_tracing();
    // Every command but key generation runs on the configuration.
    let load = || AggregateConfig::load(config.as_deref()).context("loading configuration");
    match command.unwrap_or(Command::Stream) {
        Command::GeneratePayloadKey { id } => {
            println!("{}", hushmap_schema::PayloadKeyring::generate_entry(id));
        }
        Command::Stream => {
            let config = load()?;
            match config.topology {
                Topology::Single => {
                    let aggregator = Aggregator::new(config).context("starting aggregator")?;
                    aggregator
                        .run(hushmap_service::shutdown_signal())
                        .await
                        .context("aggregating")?;
                }
                Topology::Partitioned => {
                    let aggregator = PartitionedAggregator::new(config)
                        .context("starting partitioned aggregator")?;
                    aggregator
                        .run(hushmap_service::shutdown_signal())
                        .await
                        .context("aggregating")?;
                }
            }
        }
        Command::CheckConfig => {
            // `load` has checked every setting and calibrated the noise;
            // streaming also needs the payload keys.
            load()?.payload_keyring()?;
            println!("configuration ok");
        }
        Command::PayloadPublicKey => {
            println!("{}", load()?.payload_keyring()?.public_key());
        }
        Command::Batch(b) => {
            let mut config = load()?;
            config.privacy.epsilon_per_window = b.epsilon;
            if let Some(delta) = b.delta {
                config.privacy.delta = delta;
            }
            run_batch(config, b).await?;
        }
    }
    Ok(())
}

/// An instant on the command line: RFC 3339, a UTC date, or ms.
fn instant(text: &str) -> Result<i64, String> {
    hushmap_schema::window::parse_instant(text)
        .ok_or_else(|| "expected an RFC 3339 time or a UTC date (YYYY-MM-DD)".to_string())
}

async fn run_batch(config: AggregateConfig, args: BatchArgs) -> anyhow::Result<()> {
    // Refuse a bad output path and range before reading anything.
    batch::OutputFormat::of(&args.out)?;
    if let Some(path) = &args.measured_out {
        batch::OutputFormat::of(path)?;
        anyhow::ensure!(path != &args.out, "--measured-out must differ from --out");
    }
    let options = batch::BatchOptions {
        range: batch::WindowRange::new(args.from, args.to, config.window_length())?,
        ledger: if args.fresh_ledger {
            batch::BatchLedger::Fresh
        } else {
            batch::BatchLedger::File {
                path: args.ledger.clone(),
                releases_topic: args.ledger_topic,
            }
        },
        cluster: args.cluster.clone(),
        // From the variable or the file HUSHMAP_CLUSTER_SECRET_FILE names.
        cluster_secret: hushmap_service::secrets::read_secret("HUSHMAP_CLUSTER_SECRET")?
            .map(hushmap_service::secrets::Secret::new),
    };
    if args.fresh_ledger {
        eprintln!(
            "warning: --fresh-ledger: this run's budget is not shared with any other release \
             (earlier runs, the stream); the output says so (hushmap.ledger_scope = fresh)"
        );
    }
    // Drawn on stderr, and only when it is a terminal (indicatif's default).
    let progress = BarProgress(ProgressBar::new(0));
    let report = batch::run_batch(&config, &args.input, &options, &progress)
        .await
        .with_context(|| format!("releasing {}", args.input.display()))?;
    progress.0.finish_and_clear();
    if let batch::BatchLedger::File { path, .. } = &options.ledger {
        eprintln!(
            "ledger {}: {} earlier releases on record",
            path.display(),
            report.ledger_history
        );
    }

    let input = &report.input;
    eprintln!(
        "read {} records: {} accepted, {} refused",
        input.read, input.accepted, input.refused
    );
    for e in &input.errors {
        eprintln!("  refused {e}");
    }
    if input.refused > input.errors.len() as u64 {
        eprintln!("  … and {} more", input.refused - input.errors.len() as u64);
    }
    if input.without_contributor > 0 {
        eprintln!(
            "  {} accepted lines name no contributor: each counts as a person of its own \
             (for them the unit of privacy is the line, not the person)",
            input.without_contributor
        );
    }
    if input.outside_range > 0 {
        eprintln!(
            "  ({} of the refused are valid but outside [--from, --to))",
            input.outside_range
        );
    }
    match &report.counted {
        batch::Counted::Here {
            passes,
            through_disk,
        } => {
            if *passes > 1 {
                eprintln!(
                    "counted in {passes} passes of at most batch.records_per_pass ({}) records, \
                     each over its own contributors",
                    config.batch.records_per_pass
                );
            }
            if *through_disk > 0 {
                eprintln!(
                    "counted through disk: the contributors did not fit batch.memory_limit_mb \
                     ({} MiB) in memory ({through_disk} of {passes} passes)",
                    config.batch.memory_limit_mb
                );
            }
        }
        batch::Counted::OnCluster { url, passes } => {
            let passes = match passes {
                1 => "1 pass".to_string(),
                n => format!("{n} passes"),
            };
            eprintln!("counted on the cluster {url} in {passes}; noised and accounted here")
        }
    }
    for (window, reason) in &report.refused_windows {
        eprintln!("window {}: not released: {reason}", window.start_ms);
    }
    if report.releases.is_empty() {
        anyhow::bail!(
            "no window released ({} refused by the ledger); nothing written to {}",
            report.refused_windows.len(),
            args.out.display()
        );
    }
    batch::write_output(&args.out, &report.releases, report.plan_meta.clone())
        .with_context(|| format!("writing {}", args.out.display()))?;
    if let Some(path) = &args.measured_out {
        let meta = hushmap_schema::ReleaseMeta {
            estimates: hushmap_schema::release::Estimates::Measured,
            ..report.plan_meta.clone()
        };
        batch::write_output(path, &report.measurements, meta)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "the measurements behind them ({} windows) to {}",
            report.measurements.len(),
            path.display()
        );
    }
    let rows: usize = report.releases.iter().map(|r| r.rows.len()).sum();
    eprintln!(
        "released {} windows ({rows} rows; {} per window: ε {:.4}, δ {:.3e}) to {}",
        report.releases.len(),
        report.plan_meta.mechanism,
        report.plan_meta.epsilon,
        report.plan_meta.delta,
        args.out.display()
    );
    Ok(())
}

/// A progress bar on stderr.
struct BarProgress(ProgressBar);

impl Progress for BarProgress {
    fn phase(&self, name: &'static str, total: Option<u64>) {
        let style = match total {
            Some(_) => ProgressStyle::with_template(
                "{msg:>24} [{bar:40}] {percent:>3}% {elapsed} (eta {eta})",
            ),
            None => ProgressStyle::with_template("{msg:>24} {spinner} {pos} {elapsed}"),
        };
        self.0.reset();
        self.0.set_length(total.unwrap_or(0));
        self.0.set_position(0);
        if let Ok(style) = style {
            self.0.set_style(style.progress_chars("=> "));
        }
        self.0.set_message(name);
        tracing::info!(phase = name, total, "batch phase");
    }

    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
}
