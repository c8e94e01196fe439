//! The processes of a Ballista cluster for batch mode: one scheduler and
//! any number of executors, built from Apache DataFusion Ballista's own
//! libraries on the workspace's DataFusion.
//!
//! `hushmap-aggregate batch --cluster df://HOST:PORT` sends the bounding
//! and counting plan (SQL over the run's coarse records) to the
//! [scheduler](run_scheduler); the [executors](run_executor) read the
//! records, bound each contributor, count per cell and hand the exact
//! counts back. The noise, the ledger and the releases never leave the
//! batch process: a cluster holds the same data as the aggregator's input
//! and must be trusted as much (PRIVACY.md, "Batch on a cluster").
//!
//! What the settings here decide, beyond Ballista's defaults:
//! - an executor's work directory is always named (Ballista's own default
//!   is a temporary directory it deletes at once) and it holds shuffle files
//!   only while a job needs them: the scheduler asks executors to delete a
//!   job's data [`SchedulerSettings::job_data_linger`] after it finishes,
//!   and each executor deletes anything older than
//!   [`ExecutorSettings::job_data_ttl`] on its own;
//! - an executor's memory is bounded ([`ExecutorSettings::memory_limit_mb`]),
//!   sorting and aggregating through its work directory beyond it;
//! - plans come only from clients that hold the cluster's secret
//!   ([`auth`]): the scheduler refuses every other call but executors', and
//!   refuses to listen beyond loopback without a secret;
//! - executors pull their tasks (Ballista's pull scheduling), so no
//!   executor has a port that takes a plan: what they serve is their
//!   Flight service of shuffle files.

pub mod auth;

use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::create_scheduler;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use hushmap_service::secrets::Secret;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use hushmap_service::cluster::{ClusterUrl, DEFAULT_SCHEDULER_PORT};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}: {1}")]
    WorkDir(PathBuf, std::io::Error),
    #[error("{what} must be {bound}")]
    Setting {
        what: &'static str,
        bound: &'static str,
    },
    #[error("ballista: {0}")]
    Ballista(#[from] ballista_core::error::BallistaError),
}

/// How a scheduler listens and cleans up.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Where it accepts clients and executors (gRPC, plaintext).
    pub bind: SocketAddr,
    /// The host name executors and clients are told to use for it.
    pub external_host: String,
    /// How long a finished job's final results stay on the executors for
    /// the client to fetch, before the scheduler has them deleted.
    pub job_data_linger: Duration,
    /// The shared secret a client must present (`HUSHMAP_CLUSTER_SECRET`,
    /// at least 32 bytes). Required beyond loopback.
    pub secret: Option<Secret>,
}

/// The shortest cluster secret accepted, bytes.
pub const MIN_SECRET_BYTES: usize = 32;

impl SchedulerSettings {
    /// Ballista's scheduler configuration for these settings.
    pub fn ballista_config(&self) -> Result<SchedulerConfig, ClusterError> {
        match &self.secret {
            None if !self.bind.ip().is_loopback() => {
                return Err(ClusterError::Setting {
                    what: "a scheduler bound beyond loopback",
                    bound: "given HUSHMAP_CLUSTER_SECRET: without it anyone who reaches the \
                            port can run a plan that reads and writes files on the executors",
                });
            }
            Some(s) if s.expose().len() < MIN_SECRET_BYTES => {
                return Err(ClusterError::Setting {
                    what: "HUSHMAP_CLUSTER_SECRET",
                    bound: "at least 32 bytes",
                });
            }
            _ => {}
        }
        if self.job_data_linger.is_zero() {
            // Zero would delete a job's results before the client read them.
            return Err(ClusterError::Setting {
                what: "job_data_linger",
                bound: "at least one second",
            });
        }
        let mut config = SchedulerConfig {
            bind_host: self.bind.ip().to_string(),
            bind_port: self.bind.port(),
            external_host: self.external_host.clone(),
            ..SchedulerConfig::default()
        }
        .with_finished_job_data_clean_up_interval_seconds(self.job_data_linger.as_secs().max(1));
        // Executors poll for tasks: none has a port that takes a plan.
        config.scheduling_policy = TaskSchedulingPolicy::PullStaged;
        // Executors that stop heartbeating are dropped within a minute.
        config.executor_timeout_seconds = 60;
        config.no_executors_grace_period_seconds = 60;
        Ok(config)
    }
}

/// Runs a scheduler until the process is asked to stop.
///
/// Only the scheduler's gRPC service is served (not Ballista's REST API,
/// Flight proxy or Flight SQL front end), behind [`auth`] when a secret is
/// set.
pub async fn run_scheduler(settings: &SchedulerSettings) -> Result<(), ClusterError> {
    let config = Arc::new(settings.ballista_config()?);
    config.validate()?;
    let cluster = BallistaCluster::new_from_config(&config).await?;
    let scheduler =
        create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, config.clone()).await?;
    let service = SchedulerGrpcServer::new(scheduler)
        .max_encoding_message_size(config.grpc_server_max_encoding_message_size as usize)
        .max_decoding_message_size(config.grpc_server_max_decoding_message_size as usize);
    let grpc = ballista_core::utils::GrpcServerConfig::default();
    let incoming = ballista_core::utils::create_grpc_server_incoming(settings.bind, &grpc)?;
    tracing::info!(
        bind = %settings.bind,
        client_token = settings.secret.is_some(),
        "ballista scheduler listening"
    );
    let layer = tower::util::option_layer(
        settings
            .secret
            .as_ref()
            .map(|s| auth::ClientTokenLayer::new(s.expose())),
    );
    ballista_core::utils::create_grpc_server(&grpc)
        .layer(layer)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, hushmap_service::shutdown_signal())
        .await
        .map_err(ballista_core::error::BallistaError::TonicError)?;
    Ok(())
}

/// How an executor joins its scheduler and works.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    /// The scheduler's host and port.
    pub scheduler: ClusterUrl,
    /// The address its services bind (Flight for shuffle data, gRPC for
    /// tasks).
    pub bind_host: String,
    /// The host name other executors and clients use to fetch its shuffle
    /// data (defaults to `bind_host`).
    pub external_host: Option<String>,
    pub flight_port: u16,
    pub grpc_port: u16,
    /// Shuffle files and sort spills; created with mode 0700.
    pub work_dir: PathBuf,
    /// Tasks run at once (0: one per core).
    pub vcores: usize,
    /// Memory all its tasks share; beyond it, sorts and aggregates spill to
    /// `work_dir`.
    pub memory_limit_mb: u64,
    /// Job data older than this is deleted even if the scheduler never
    /// asked (a client that died, a scheduler restarted).
    pub job_data_ttl: Duration,
}

impl ExecutorSettings {
    /// Ballista's executor configuration for these settings, with the work
    /// directory created (owner only).
    pub fn ballista_config(&self) -> Result<ExecutorProcessConfig, ClusterError> {
        if self.memory_limit_mb < 16 {
            return Err(ClusterError::Setting {
                what: "memory_limit_mb",
                bound: "at least 16",
            });
        }
        if self.job_data_ttl < Duration::from_secs(60) {
            // Shorter would delete the shuffle files of a job still running.
            return Err(ClusterError::Setting {
                what: "job_data_ttl",
                bound: "at least a minute",
            });
        }
        create_private_dir(&self.work_dir)?;
        Ok(ExecutorProcessConfig {
            bind_host: self.bind_host.clone(),
            // Always named: in pull scheduling the scheduler learns an
            // executor's address only from what it announces.
            external_host: Some(
                self.external_host
                    .clone()
                    .unwrap_or_else(|| self.bind_host.clone()),
            ),
            port: self.flight_port,
            grpc_port: self.grpc_port,
            scheduler_host: self.scheduler.host().to_string(),
            scheduler_port: self.scheduler.port(),
            scheduler_connect_timeout_seconds: 30,
            vcores: self.vcores,
            work_dir: Some(self.work_dir.display().to_string()),
            job_data_ttl_seconds: self.job_data_ttl.as_secs(),
            // Checked every tenth of the TTL, so nothing outlives it by more.
            job_data_clean_up_interval_seconds: (self.job_data_ttl.as_secs() / 10).max(1),
            executor_heartbeat_interval_seconds: 5,
            memory_pool_size: Some(self.memory_limit_mb.saturating_mul(1 << 20)),
            print_thread_info: false,
            // Tasks are polled for: the executor opens no port that takes a
            // plan (its gRPC port is not served).
            task_scheduling_policy: TaskSchedulingPolicy::PullStaged,
            ..ExecutorProcessConfig::default()
        })
    }
}

/// Runs an executor until the process is asked to stop (Ballista's
/// executor listens for SIGTERM and Ctrl-C itself, and deletes its shuffle
/// data on the way out).
pub async fn run_executor(settings: &ExecutorSettings) -> Result<(), ClusterError> {
    let config = settings.ballista_config()?;
    tracing::info!(
        scheduler_port = settings.scheduler.port(),
        flight_port = settings.flight_port,
        "ballista executor starting"
    );
    start_executor_process(Arc::new(config)).await?;
    Ok(())
}

/// One process of the cluster, with its settings.
#[derive(Debug, Clone)]
pub enum Role {
    Scheduler(SchedulerSettings),
    Executor(ExecutorSettings),
}

impl Role {
    /// Checks the settings as a start would (an executor creates its work
    /// directory), connecting to nothing.
    pub fn check(&self) -> Result<(), ClusterError> {
        match self {
            Role::Scheduler(s) => s.ballista_config().map(drop),
            Role::Executor(e) => e.ballista_config().map(drop),
        }
    }

    /// Runs the process until it is asked to stop.
    pub async fn run(&self) -> Result<(), ClusterError> {
        match self {
            Role::Scheduler(s) => run_scheduler(s).await,
            Role::Executor(e) => run_executor(e).await,
        }
    }
}

fn create_private_dir(dir: &std::path::Path) -> Result<(), ClusterError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |e| ClusterError::WorkDir(dir.to_path_buf(), e);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    // An existing directory keeps its mode: narrow it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executor(dir: PathBuf) -> ExecutorSettings {
        ExecutorSettings {
            scheduler: ClusterUrl::parse_address("localhost").unwrap(),
            bind_host: "127.0.0.1".into(),
            external_host: None,
            flight_port: 50051,
            grpc_port: 50052,
            work_dir: dir,
            vcores: 1,
            memory_limit_mb: 256,
            job_data_ttl: Duration::from_secs(3600),
        }
    }

    #[test]
    fn an_executor_has_a_private_work_dir_a_pool_and_a_ttl() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("work");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = executor(dir.clone()).ballista_config().unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(config.work_dir.as_deref(), Some(dir.to_str().unwrap()));
        assert_eq!(config.memory_pool_size, Some(256 << 20));
        assert_eq!(config.job_data_ttl_seconds, 3600);
        assert_eq!(config.job_data_clean_up_interval_seconds, 360);
    }

    #[test]
    fn settings_that_would_lose_or_keep_data_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut e = executor(tmp.path().join("w"));
        e.job_data_ttl = Duration::from_secs(5);
        assert!(e.ballista_config().is_err());
        let mut e = executor(tmp.path().join("w"));
        e.memory_limit_mb = 1;
        assert!(e.ballista_config().is_err());
        assert!(Role::Executor(e).check().is_err());
        let s = SchedulerSettings {
            bind: "127.0.0.1:50050".parse().unwrap(),
            external_host: "localhost".into(),
            job_data_linger: Duration::ZERO,
            secret: None,
        };
        assert!(s.ballista_config().is_err());
        let s = SchedulerSettings {
            job_data_linger: Duration::from_secs(10),
            ..s
        };
        assert_eq!(
            s.ballista_config()
                .unwrap()
                .finished_job_data_clean_up_interval_seconds,
            10
        );
    }
}
