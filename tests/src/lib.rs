//! Harness for cross-service tests: a whole Hushmap pipeline, in-process,
//! against the real Kafka broker started by `deploy/kafka/up.sh`.
//!
//! Each [`Pipeline`] gets its own topics and consumer group, so tests run in
//! parallel on one broker without seeing each other's data.

pub mod browser;
pub mod load;
pub mod pki;
pub mod processes;

use hushmap_aggregate::{AggregateConfig, Aggregator};
use hushmap_dashboard::{DashboardConfig, DashboardServer};
use hushmap_ingest::{IngestConfig, IngestServer};
pub use hushmap_testkit::{
    brokers, create_topics, payload_keyring, payload_keys, raw_topic_bytes, unique, wait_until,
};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The repository's root (tests read scripts and docs from it).
pub fn repo_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The test virtualenv's Python (`deploy/test.sh` creates it from
/// `tests/python/requirements.txt`), or `HUSHMAP_PYTHON`.
pub fn test_python() -> anyhow::Result<std::path::PathBuf> {
    let python = std::env::var("HUSHMAP_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_dir().join("tests/python/.venv/bin/python"));
    anyhow::ensure!(
        python.exists(),
        "{} missing: run deploy/test.sh (it creates the test virtualenv) or set HUSHMAP_PYTHON",
        python.display()
    );
    Ok(python)
}

/// The H3 cell (resolution 5, the default) ingest files a submission under:
/// tests use it to build a public region set covering what they send.
pub fn region_of(s: &hushmap_schema::submission::Submission) -> String {
    use hushmap_schema::RegionCell;
    use hushmap_schema::region::RegionResolution;
    let res = RegionResolution::new(5).expect("5 is a valid resolution");
    let cell = match (&s.location, &s.region) {
        (Some(l), _) => RegionCell::from_coordinate(l.lat, l.lon, res),
        (None, Some(cell)) => RegionCell::from_client_cell(cell, res),
        (None, None) => panic!("a submission without location or region"),
    };
    cell.expect("generated submissions are valid").to_string()
}

/// `n` generated submissions. Posted without a contributor token, each
/// comes from a new anonymous browser and is its own contributor, so at a
/// huge ε the released counts must equal what was sent.
pub fn anonymous_submissions(seed: u64, n: usize) -> Vec<hushmap_schema::submission::Submission> {
    let mut generator = hushmap_traffic::SubmissionGenerator::new(seed);
    (0..n).map(|_| generator.next_submission()).collect()
}

/// The cells `subs` are filed under, as a public region set: no region is
/// then held back by the selection threshold and every count shows.
pub fn public_regions_of(subs: &[hushmap_schema::submission::Submission]) -> Vec<String> {
    subs.iter()
        .map(region_of)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Settings of a test pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub window_secs: u32,
    pub allowed_lateness_secs: u32,
    pub epsilon_per_window: f64,
    /// The aggregator's public region set (empty: DP threshold selection).
    pub public_regions: Vec<String>,
    /// The dashboard's access tokens (empty: open, loopback only).
    pub dashboard_tokens: Vec<hushmap_dashboard::auth::TokenEntry>,
    /// The aggregator's schedule epoch (ms); `None`: the window holding the
    /// pipeline's start, so what a test sends at once is scheduled.
    pub schedule_epoch: Option<i64>,
    /// Provisional numbers every this many seconds within each window (a
    /// quarter of the budget; needs `public_regions`); `None`: none.
    pub provisional_sub_window_secs: Option<u32>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            window_secs: 10,
            allowed_lateness_secs: 2,
            epsilon_per_window: 1.0,
            public_regions: Vec::new(),
            dashboard_tokens: Vec::new(),
            schedule_epoch: None,
            provisional_sub_window_secs: None,
        }
    }
}

/// A running ingest → Kafka → aggregate → Kafka → dashboard pipeline.
pub struct Pipeline {
    pub ingest_url: String,
    pub dashboard_url: String,
    /// `http://127.0.0.1:<port>` of the dashboard's Arrow Flight service.
    pub flight_url: String,
    /// The dashboard's release store (a fresh directory per pipeline).
    pub dashboard_data_dir: std::path::PathBuf,
    pub submissions_topic: String,
    pub releases_topic: String,
    pub aggregator_stats: std::sync::Arc<hushmap_aggregate::AggregatorStats>,
    /// The aggregator's `/metrics`.
    pub aggregator_metrics_url: String,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    dashboard_config: DashboardConfig,
    dashboard: Option<(oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>)>,
}

fn stop_signal() -> (
    oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

impl Pipeline {
    pub async fn start(options: PipelineOptions) -> anyhow::Result<Pipeline> {
        let submissions_topic = unique("test.submissions");
        let releases_topic = unique("test.releases");
        let measurements_topic = unique("test.measurements");
        let provisional_topic = unique("test.provisional");
        create_topics(&[
            (&submissions_topic, 6),
            (&releases_topic, 1),
            (&measurements_topic, 1),
            (&provisional_topic, 1),
        ])
        .await?;
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));

        let mut ingest_config = IngestConfig {
            listen: loopback,
            admin_listen: loopback,
            dev_mode: true,
            payload_public_key: Some(payload_keyring().public_key()),
            ..IngestConfig::default()
        };
        ingest_config.kafka.brokers = brokers();
        ingest_config.kafka.topic = submissions_topic.clone();
        ingest_config.window_secs = options.window_secs;
        ingest_config.allowed_lateness_secs = options.allowed_lateness_secs;
        // All test traffic comes from one loopback address.
        ingest_config.rate_limit.per_minute = 0;
        ingest_config.contributor_secret = Some(hushmap_service::secrets::Secret::new(
            "test-secret-0123456789abcdef0123456789",
        ));
        // Signed-in submissions carry ID tokens of the test provider.
        {
            use hushmap_testkit::idp::{TEST_AUDIENCE, TEST_ISSUER, TestIdp};
            ingest_config.identity.pem_files = TestIdp::public_keys();
            ingest_config.identity.issuer = Some(TEST_ISSUER.into());
            ingest_config.identity.audience = Some(TEST_AUDIENCE.into());
        }

        let mut aggregate_config = AggregateConfig {
            dev_mode: true,
            payload_keys: Some(payload_keyring()),
            tick_ms: 200,
            metrics_listen: loopback,
            ..AggregateConfig::default()
        };
        aggregate_config.kafka.brokers = brokers();
        aggregate_config.kafka.input_topic = submissions_topic.clone();
        aggregate_config.kafka.output_topic = releases_topic.clone();
        aggregate_config.kafka.measurements_topic = measurements_topic.clone();
        aggregate_config.kafka.group_id = unique("test.aggregate");
        aggregate_config.kafka.transactional_id = unique("test.aggregate.txn");
        aggregate_config.window_secs = options.window_secs;
        aggregate_config.allowed_lateness_secs = options.allowed_lateness_secs;
        aggregate_config.schedule_epoch = Some(
            options
                .schedule_epoch
                .unwrap_or_else(|| hushmap_testkit::current_window_start(options.window_secs))
                .to_string(),
        );
        aggregate_config.privacy.epsilon_per_window = options.epsilon_per_window;
        aggregate_config.privacy.public_regions = options.public_regions.clone();
        // Tests release many short windows; the ledger's budget must allow them.
        aggregate_config.privacy.max_epsilon_per_day = options.epsilon_per_window * 1e4;
        aggregate_config.privacy.max_epsilon_per_horizon = options.epsilon_per_window * 1e4;
        aggregate_config.privacy.max_delta_per_horizon = 9e-4;
        if let Some(secs) = options.provisional_sub_window_secs {
            aggregate_config.kafka.provisional_topic = provisional_topic.clone();
            aggregate_config.privacy.provisional_share = 0.25;
            aggregate_config.privacy.provisional_sub_window_secs = secs;
        }

        let dashboard_data_dir = std::env::temp_dir().join(unique("hushmap-dashboard-store"));
        let mut dashboard_config = DashboardConfig {
            listen: loopback,
            flight_listen: loopback,
            data_dir: dashboard_data_dir.clone(),
            ..DashboardConfig::default()
        };
        // Researchers' SQL runs in worker processes started from the
        // dashboard's executable; this process is a test's.
        dashboard_config.sql.worker_binary = Some(processes::service_binary("hushmap-dashboard")?);
        dashboard_config.kafka.brokers = brokers();
        dashboard_config.kafka.releases_topic = releases_topic.clone();
        dashboard_config.kafka.measurements_topic = measurements_topic.clone();
        if options.provisional_sub_window_secs.is_some() {
            dashboard_config.kafka.provisional_topic = provisional_topic.clone();
        }
        dashboard_config.auth.tokens = options.dashboard_tokens.clone();

        let mut stops = Vec::new();
        let mut tasks: Vec<JoinHandle<anyhow::Result<()>>> = Vec::new();

        let ingest = IngestServer::bind(ingest_config).await?;
        let ingest_url = format!("http://{}", ingest.local_addr());
        let (tx, stop) = stop_signal();
        stops.push(tx);
        tasks.push(tokio::spawn(async move { Ok(ingest.serve(stop).await?) }));

        let aggregator = Aggregator::new(aggregate_config)?;
        let aggregator_stats = aggregator.stats();
        let aggregator_metrics_url = format!("http://{}/metrics", aggregator.metrics_addr()?);
        let (tx, stop) = stop_signal();
        stops.push(tx);
        tasks.push(tokio::spawn(async move { Ok(aggregator.run(stop).await?) }));

        let (dashboard, dashboard_url, flight_url) =
            Self::start_dashboard(dashboard_config.clone()).await?;

        Ok(Pipeline {
            ingest_url,
            dashboard_url,
            flight_url,
            dashboard_data_dir,
            dashboard_config,
            dashboard: Some(dashboard),
            submissions_topic,
            releases_topic,
            aggregator_stats,
            aggregator_metrics_url,
            stops,
            tasks,
        })
    }

    #[allow(clippy::type_complexity)]
    async fn start_dashboard(
        config: DashboardConfig,
    ) -> anyhow::Result<(
        (oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>),
        String,
        String,
    )> {
        let dashboard = DashboardServer::bind(config).await?;
        let url = format!("http://{}", dashboard.local_addr());
        let flight_url = format!("http://{}", dashboard.flight_addr());
        let (tx, stop) = stop_signal();
        let task = tokio::spawn(async move { Ok(dashboard.serve(stop).await?) });
        Ok(((tx, task), url, flight_url))
    }

    /// Stops the dashboard and starts it again on the same release store
    /// (new ports: `dashboard_url` and `flight_url` change).
    pub async fn restart_dashboard(&mut self) -> anyhow::Result<()> {
        if let Some((tx, task)) = self.dashboard.take() {
            let _ = tx.send(());
            tokio::time::timeout(Duration::from_secs(30), task).await???;
        }
        let (dashboard, url, flight_url) =
            Self::start_dashboard(self.dashboard_config.clone()).await?;
        self.dashboard = Some(dashboard);
        self.dashboard_url = url;
        self.flight_url = flight_url;
        Ok(())
    }

    /// Fails, naming the service, if a service of the pipeline has stopped
    /// on its own (its error surfaces in [`Pipeline::stop`]): a wait for
    /// releases then fails at once instead of at its time limit.
    pub fn ensure_running(&self) -> anyhow::Result<()> {
        let names = ["ingest", "aggregator"];
        for (task, name) in self.tasks.iter().zip(names) {
            anyhow::ensure!(!task.is_finished(), "the pipeline's {name} stopped");
        }
        if let Some((_, task)) = &self.dashboard {
            anyhow::ensure!(!task.is_finished(), "the pipeline's dashboard stopped");
        }
        Ok(())
    }

    /// Stops every service and surfaces any error they ended with.
    pub async fn stop(self) -> anyhow::Result<()> {
        let (stops, tasks): (Vec<_>, Vec<_>) = self.dashboard.into_iter().unzip();
        for tx in self.stops.into_iter().chain(stops) {
            let _ = tx.send(());
        }
        for task in self.tasks.into_iter().chain(tasks) {
            tokio::time::timeout(Duration::from_secs(30), task).await???;
        }
        let _ = std::fs::remove_dir_all(&self.dashboard_data_dir);
        Ok(())
    }
}

/// Posts `subs` to ingest, 16 at a time; returns how many got 202.
pub async fn submit_all(
    ingest_url: &str,
    subs: Vec<hushmap_schema::submission::Submission>,
) -> usize {
    use futures::stream::{self, StreamExt};
    let client = reqwest::Client::new();
    let url = format!("{ingest_url}/v1/submissions");
    stream::iter(subs)
        .map(|s| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                client
                    .post(url)
                    .json(&s)
                    .send()
                    .await
                    .map(|r| r.status().as_u16() == 202)
                    .unwrap_or(false)
            }
        })
        .buffer_unordered(16)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await
}

/// Each released window's total at its finest level and all ages (exact
/// at a huge ε), as (window start, total). `token`: an analyst token, when
/// the dashboard has tokens.
pub async fn dashboard_window_totals(
    dashboard_url: &str,
    token: Option<&str>,
) -> anyhow::Result<Vec<(i64, i64)>> {
    let client = reqwest::Client::new();
    let get = |path: String| {
        let mut req = client.get(format!("{dashboard_url}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req
    };
    let list: serde_json::Value = get("/api/v1/releases".into()).send().await?.json().await?;
    let mut totals = Vec::new();
    for release in list["releases"].as_array().into_iter().flatten() {
        let start = release["window_start"].as_i64().unwrap_or_default();
        let heatmap: serde_json::Value =
            get(format!("/api/v1/heatmap?window={start}&age_band=all"))
                .send()
                .await?
                .json()
                .await?;
        let total: i64 = heatmap["cells"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["n_total"].as_i64())
            .sum();
        totals.push((start, total));
    }
    Ok(totals)
}

/// Waits until the dashboard's released windows add up to at least
/// `expected` (finest level, all ages) and returns their sum: at a huge ε,
/// equal to `expected` when nothing was lost or counted twice.
pub async fn released_total_reaching(dashboard_url: &str, expected: u64) -> anyhow::Result<i64> {
    wait_until(
        "every accepted submission to be released",
        Duration::from_secs(90),
        || async {
            let totals = dashboard_window_totals(dashboard_url, None).await?;
            let sum: i64 = totals.iter().map(|(_, t)| t).sum();
            Ok((sum >= expected as i64).then_some(sum))
        },
    )
    .await
}

/// Waits until the dashboard's releases, at their finest level and all
/// ages, hold `expected` submissions in total (exact at a huge ε); returns
/// the start of the window holding the most. `token`: an analyst token,
/// when the dashboard has tokens.
pub async fn wait_for_dashboard_total(
    dashboard_url: &str,
    token: Option<&str>,
    expected: i64,
) -> anyhow::Result<i64> {
    wait_until(
        "the dashboard to hold every submission",
        Duration::from_secs(90),
        || async {
            let totals = dashboard_window_totals(dashboard_url, token).await?;
            let sum: i64 = totals.iter().map(|(_, t)| t).sum();
            let fullest = totals.iter().max_by_key(|(_, t)| *t).map(|(s, _)| *s);
            Ok(fullest.filter(|_| sum >= expected))
        },
    )
    .await
}

/// A dashboard alone (no pipeline), on free loopback ports and a fresh
/// releases topic and data directory; stops when dropped.
pub struct StandaloneDashboard {
    pub http: std::net::SocketAddr,
    pub flight: std::net::SocketAddr,
    pub data_dir: std::path::PathBuf,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl StandaloneDashboard {
    /// Starts one; `tweak` may change any of its configuration.
    pub async fn start(
        tweak: impl FnOnce(&mut hushmap_dashboard::DashboardConfig),
    ) -> anyhow::Result<StandaloneDashboard> {
        let data_dir = std::env::temp_dir().join(unique("hushmap-dashboard"));
        let mut config = hushmap_dashboard::DashboardConfig {
            listen: "127.0.0.1:0".parse()?,
            flight_listen: "127.0.0.1:0".parse()?,
            data_dir: data_dir.clone(),
            ..hushmap_dashboard::DashboardConfig::default()
        };
        config.kafka.brokers = brokers();
        config.kafka.releases_topic = unique("test.dashboard.releases");
        // Researchers' SQL runs in worker processes started from the
        // dashboard's executable; this process is a test's.
        config.sql.worker_binary = Some(processes::service_binary("hushmap-dashboard")?);
        tweak(&mut config);
        let server = hushmap_dashboard::DashboardServer::bind(config).await?;
        let (http, flight) = (server.local_addr(), server.flight_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        Ok(StandaloneDashboard {
            http,
            flight,
            data_dir,
            _stop: stop,
        })
    }
}
