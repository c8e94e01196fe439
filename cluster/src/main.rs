//! `hushmap-cluster`: a Ballista scheduler or executor for
//! `hushmap-aggregate batch --cluster`.

use clap::{Parser, Subcommand};
use hushmap_cluster::{
    ClusterUrl, DEFAULT_SCHEDULER_PORT, ExecutorSettings, Role, SchedulerSettings,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Runs one process of a Ballista cluster that counts for batch mode. It
/// sees coarse records and exact counts: run it only where the aggregator
/// itself could run, on a network only the cluster and its batch runs reach.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The scheduler: plans jobs and hands their tasks to executors. It
    /// takes plans only from clients presenting HUSHMAP_CLUSTER_SECRET (or
    /// the file HUSHMAP_CLUSTER_SECRET_FILE names), required beyond
    /// loopback.
    Scheduler {
        /// Address for clients and executors (gRPC, plaintext).
        #[arg(long, env = "HUSHMAP_CLUSTER_BIND", default_value_t = SocketAddr::from(([127, 0, 0, 1], DEFAULT_SCHEDULER_PORT)))]
        bind: SocketAddr,
        /// Host name executors and clients reach the scheduler by.
        #[arg(
            long,
            env = "HUSHMAP_CLUSTER_EXTERNAL_HOST",
            default_value = "localhost"
        )]
        external_host: String,
        /// Seconds a finished job's results stay on the executors for the
        /// client to fetch before they are deleted.
        #[arg(
            long,
            env = "HUSHMAP_CLUSTER_JOB_DATA_LINGER_SECS",
            default_value_t = 30
        )]
        job_data_linger_secs: u64,
        #[command(subcommand)]
        check: Option<Check>,
    },
    /// An executor: runs tasks, keeps shuffle data for the next stage.
    Executor {
        /// The scheduler, HOST:PORT.
        #[arg(
            long,
            env = "HUSHMAP_CLUSTER_SCHEDULER",
            default_value = "localhost:50050",
            value_parser = ClusterUrl::parse_address
        )]
        scheduler: ClusterUrl,
        /// Address the executor's services bind.
        #[arg(long, env = "HUSHMAP_CLUSTER_BIND_HOST", default_value = "127.0.0.1")]
        bind_host: String,
        /// Host name others fetch its shuffle data from (default: bind host).
        #[arg(long, env = "HUSHMAP_CLUSTER_EXTERNAL_HOST")]
        external_host: Option<String>,
        /// Port of its Flight service (shuffle data).
        #[arg(long, env = "HUSHMAP_CLUSTER_FLIGHT_PORT", default_value_t = 50051)]
        flight_port: u16,
        /// Port announced for its gRPC service (tasks are polled for, so
        /// nothing listens on it).
        #[arg(long, env = "HUSHMAP_CLUSTER_GRPC_PORT", default_value_t = 50052)]
        grpc_port: u16,
        /// Shuffle files and spills (created owner-only).
        #[arg(long, env = "HUSHMAP_CLUSTER_WORK_DIR")]
        work_dir: PathBuf,
        /// Tasks at once (0: one per core).
        #[arg(long, env = "HUSHMAP_CLUSTER_VCORES", default_value_t = 0)]
        vcores: usize,
        /// Memory shared by its tasks, in MiB; beyond it they spill.
        #[arg(long, env = "HUSHMAP_CLUSTER_MEMORY_LIMIT_MB", default_value_t = 1024)]
        memory_limit_mb: u64,
        /// Seconds after which job data is deleted even if nobody asked.
        #[arg(
            long,
            env = "HUSHMAP_CLUSTER_JOB_DATA_TTL_SECS",
            default_value_t = 3600
        )]
        job_data_ttl_secs: u64,
        #[command(subcommand)]
        check: Option<Check>,
    },
}

#[derive(Subcommand)]
enum Check {
    /// Checks these settings (an executor creates its work directory),
    /// prints `configuration ok` and exits; non-zero with the reason
    /// otherwise. Connects to nothing.
    CheckConfig,
}

fn main() -> anyhow::Result<()> {
    hushmap_service::init_tracing();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Ballista plans recursively; its own binaries run on 32 MiB stacks.
        .thread_stack_size(32 << 20)
        .build()?;
    let (role, check) = match args.command {
        Command::Scheduler {
            bind,
            external_host,
            job_data_linger_secs,
            check,
        } => (
            Role::Scheduler(SchedulerSettings {
                bind,
                external_host,
                job_data_linger: Duration::from_secs(job_data_linger_secs),
                // From the variable or the file HUSHMAP_CLUSTER_SECRET_FILE
                // names (a mounted Secret).
                secret: hushmap_service::secrets::read_secret("HUSHMAP_CLUSTER_SECRET")?
                    .map(hushmap_service::secrets::Secret::new),
            }),
            check,
        ),
        Command::Executor {
            scheduler,
            bind_host,
            external_host,
            flight_port,
            grpc_port,
            work_dir,
            vcores,
            memory_limit_mb,
            job_data_ttl_secs,
            check,
        } => (
            Role::Executor(ExecutorSettings {
                scheduler,
                bind_host,
                external_host,
                flight_port,
                grpc_port,
                work_dir,
                vcores,
                memory_limit_mb,
                job_data_ttl: Duration::from_secs(job_data_ttl_secs),
            }),
            check,
        ),
    };
    match check {
        Some(Check::CheckConfig) => {
            role.check()?;
            println!("configuration ok");
        }
        None => runtime.block_on(role.run())?,
    }
    Ok(())
}
