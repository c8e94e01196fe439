//! The services as real processes, for tests that kill, restart or measure
//! them: the binaries `cargo build --workspace --bins` puts next to the test
//! executables (deploy/test.sh builds them first), logs captured to files,
//! RSS read from `/proc`.

use hushmap_schema::topics;
use hushmap_service::kafka::SASL_PASSWORD_ENV;
use hushmap_testkit::SaslAccess;
/// A running service (in testkit: ingest's tests run their binary with it
/// too).
pub use hushmap_testkit::ServiceProcess;
pub use hushmap_testkit::free_port;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The path of a workspace binary (`target/<profile>/<name>`), built by
/// `cargo build --workspace --bins` in the same profile as the tests.
pub fn service_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("test executable has no target directory"))?;
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` first (deploy/test.sh does)",
        path.display()
    );
    Ok(path)
}

/// The contributor secret a [`ServiceSet`]'s ingest runs with (tests check
/// it never reaches a log).
pub const CONTRIBUTOR_SECRET: &str = "process-test-contributor-secret-0123456789";

/// Settings of a [`ServiceSet`].
#[derive(Debug, Clone)]
pub struct ServiceSetOptions {
    /// Names the run directory under `target/test-artifacts`.
    pub name: String,
    pub window_secs: u32,
    /// `HUSHMAP_LOG` of every service.
    pub log_filter: String,
    /// The aggregator's public area, `[south, west, north, east]`.
    pub public_bbox: [f64; 4],
    /// Run against this SASL_SSL broker instead of the test broker: each
    /// service logs in as its own user (ingest with its password in
    /// `HUSHMAP_KAFKA_SASL_PASSWORD`, the others from the password file),
    /// on the standard topics that broker's ACLs are written for.
    pub sasl: Option<SaslAccess>,
}

/// Ingest, aggregate and dashboard as processes on fresh topics of the test
/// broker, at a huge ε (released counts are the true counts), dev-mode
/// windows, logs as JSON in `run_dir/logs`, the release store in
/// `run_dir/dashboard-data`.
pub struct ServiceSet {
    pub ingest: ServiceProcess,
    pub aggregate: ServiceProcess,
    pub dashboard: ServiceProcess,
    pub ingest_url: String,
    /// Ingest's admin listener (`/metrics`).
    pub ingest_admin_url: String,
    pub dashboard_url: String,
    pub aggregate_metrics_url: String,
    pub submissions_topic: String,
    pub releases_topic: String,
    pub run_dir: PathBuf,
    pub log_dir: PathBuf,
    pub data_dir: PathBuf,
}

impl ServiceSet {
    pub async fn start(options: ServiceSetOptions) -> anyhow::Result<ServiceSet> {
        use crate::{create_topics, payload_keys, unique};
        let (brokers, submissions_topic, releases_topic) = match &options.sasl {
            // deploy/kafka/up.sh made the topics and the ACLs naming them.
            Some(sasl) => (
                sasl.bootstrap.clone(),
                topics::SUBMISSIONS.to_string(),
                topics::RELEASES.to_string(),
            ),
            None => {
                let submissions = unique(&format!("test.{}.submissions", options.name));
                let releases = unique(&format!("test.{}.releases", options.name));
                create_topics(&[(&submissions, 6), (&releases, 1)]).await?;
                (crate::brokers(), submissions, releases)
            }
        };
        let security_env = |service: &str| -> anyhow::Result<Vec<(String, String)>> {
            let Some(sasl) = &options.sasl else {
                return Ok(Vec::new());
            };
            let user = format!("hushmap-{service}");
            let prefix = format!("HUSHMAP_{}_KAFKA__SECURITY__", service.to_uppercase());
            let mut env = vec![
                (format!("{prefix}PROTOCOL"), "sasl_ssl".to_string()),
                (format!("{prefix}SASL_USERNAME"), user.clone()),
                (
                    format!("{prefix}CA_LOCATION"),
                    sasl.ca().display().to_string(),
                ),
            ];
            // Both ways a password can arrive are exercised.
            if service == "ingest" {
                let password = std::fs::read_to_string(sasl.password_file(&user))?;
                env.push((SASL_PASSWORD_ENV.to_string(), password.trim().to_string()));
            } else {
                env.push((
                    format!("{prefix}SASL_PASSWORD_FILE"),
                    sasl.password_file(&user).display().to_string(),
                ));
            }
            Ok(env)
        };
        let run_dir = artifacts_dir().join(unique(&options.name));
        let log_dir = run_dir.join("logs");
        let data_dir = run_dir.join("dashboard-data");
        let (ingest_port, ingest_admin_port, metrics_port, dashboard_port, flight_port) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let window = options.window_secs.to_string();
        // The window holding the start: what the load sends at once is scheduled;
        // a restarted aggregator keeps the same epoch (the same environment).
        let schedule_epoch = hushmap_testkit::current_window_start(options.window_secs);
        let service_env =
            |service: &str, vars: Vec<(&str, String)>| -> anyhow::Result<Vec<(String, String)>> {
                let mut env = vec![
                    ("HUSHMAP_LOG".to_string(), options.log_filter.clone()),
                    ("HUSHMAP_LOG_FORMAT".to_string(), "json".to_string()),
                ];
                // Ingest seals to the public key; only the aggregator holds
                // the private one (and ingest refuses it).
                env.push(match service {
                    "ingest" => (
                        "HUSHMAP_PAYLOAD_PUBLIC_KEY".to_string(),
                        hushmap_testkit::payload_public_key().to_string(),
                    ),
                    _ => (
                        "HUSHMAP_PAYLOAD_KEYS".to_string(),
                        payload_keys().to_string(),
                    ),
                });
                env.extend(vars.into_iter().map(|(k, v)| (k.to_string(), v)));
                env.extend(security_env(service)?);
                Ok(env)
            };
        let ingest = ServiceProcess::spawn(
            "ingest",
            &service_binary("hushmap-ingest")?,
            service_env(
                "ingest",
                vec![
                    ("HUSHMAP_INGEST_LISTEN", format!("127.0.0.1:{ingest_port}")),
                    (
                        "HUSHMAP_INGEST_ADMIN_LISTEN",
                        format!("127.0.0.1:{ingest_admin_port}"),
                    ),
                    ("HUSHMAP_INGEST_DEV_MODE", "true".into()),
                    ("HUSHMAP_INGEST_WINDOW_SECS", window.clone()),
                    ("HUSHMAP_INGEST_ALLOWED_LATENESS_SECS", "2".into()),
                    ("HUSHMAP_INGEST_KAFKA__BROKERS", brokers.clone()),
                    ("HUSHMAP_INGEST_KAFKA__TOPIC", submissions_topic.clone()),
                    // The load generator plays a proxy on loopback: the
                    // limiter sees every client address it forwards (from
                    // X-Forwarded-For) but never limits the one generator.
                    ("HUSHMAP_INGEST_RATE_LIMIT__PER_MINUTE", "1000000".into()),
                    ("HUSHMAP_INGEST_RATE_LIMIT__BURST", "100000".into()),
                    (
                        "HUSHMAP_INGEST_RATE_LIMIT__TRUSTED_PROXIES",
                        r#"["127.0.0.0/8"]"#.into(),
                    ),
                    ("HUSHMAP_CONTRIBUTOR_SECRET", CONTRIBUTOR_SECRET.into()),
                ],
            )
            .map(|mut env| {
                // The load is signed in (one subject per submission).
                env.extend(hushmap_testkit::idp::TestIdp::ingest_env());
                env
            })?,
            &log_dir,
        )?;
        let aggregate = ServiceProcess::spawn(
            "aggregate",
            &service_binary("hushmap-aggregate")?,
            service_env(
                "aggregate",
                [
                    (
                        "HUSHMAP_AGGREGATE_METRICS_LISTEN",
                        format!("127.0.0.1:{metrics_port}"),
                    ),
                    ("HUSHMAP_AGGREGATE_DEV_MODE", "true".into()),
                    (
                        "HUSHMAP_AGGREGATE_SCHEDULE_EPOCH",
                        schedule_epoch.to_string(),
                    ),
                    ("HUSHMAP_AGGREGATE_WINDOW_SECS", window),
                    ("HUSHMAP_AGGREGATE_ALLOWED_LATENESS_SECS", "2".into()),
                    ("HUSHMAP_AGGREGATE_TICK_MS", "200".into()),
                    ("HUSHMAP_AGGREGATE_KAFKA__BROKERS", brokers.clone()),
                    (
                        "HUSHMAP_AGGREGATE_KAFKA__INPUT_TOPIC",
                        submissions_topic.clone(),
                    ),
                    (
                        "HUSHMAP_AGGREGATE_KAFKA__OUTPUT_TOPIC",
                        releases_topic.clone(),
                    ),
                    (
                        "HUSHMAP_AGGREGATE_KAFKA__GROUP_ID",
                        unique("hushmap-aggregate.process"),
                    ),
                    (
                        "HUSHMAP_AGGREGATE_KAFKA__TRANSACTIONAL_ID",
                        unique("hushmap-aggregate.txn"),
                    ),
                    // A fenced-off instance's transaction is aborted within this.
                    (
                        "HUSHMAP_AGGREGATE_KAFKA__TRANSACTION_TIMEOUT_MS",
                        "10000".into(),
                    ),
                ]
                .into_iter()
                .chain(true_counts_env(options.public_bbox))
                .collect(),
            )?,
            &log_dir,
        )?;
        let dashboard = ServiceProcess::spawn(
            "dashboard",
            &service_binary("hushmap-dashboard")?,
            service_env(
                "dashboard",
                vec![
                    (
                        "HUSHMAP_DASHBOARD_LISTEN",
                        format!("127.0.0.1:{dashboard_port}"),
                    ),
                    (
                        "HUSHMAP_DASHBOARD_FLIGHT_LISTEN",
                        format!("127.0.0.1:{flight_port}"),
                    ),
                    ("HUSHMAP_DASHBOARD_KAFKA__BROKERS", brokers.clone()),
                    (
                        "HUSHMAP_DASHBOARD_KAFKA__RELEASES_TOPIC",
                        releases_topic.clone(),
                    ),
                    ("HUSHMAP_DASHBOARD_DATA_DIR", data_dir.display().to_string()),
                ],
            )?,
            &log_dir,
        )?;
        let set = ServiceSet {
            ingest,
            aggregate,
            dashboard,
            ingest_url: format!("http://127.0.0.1:{ingest_port}"),
            ingest_admin_url: format!("http://127.0.0.1:{ingest_admin_port}"),
            dashboard_url: format!("http://127.0.0.1:{dashboard_port}"),
            aggregate_metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
            submissions_topic,
            releases_topic,
            run_dir,
            log_dir,
            data_dir,
        };
        set.wait_healthy().await?;
        Ok(set)
    }

    /// Waits until every service answers `/healthz`.
    pub async fn wait_healthy(&self) -> anyhow::Result<()> {
        let metrics = self.aggregate_metrics_url.replace("/metrics", "/healthz");
        for url in [
            format!("{}/healthz", self.ingest_url),
            metrics,
            format!("{}/healthz", self.dashboard_url),
        ] {
            wait_until_answers(&url).await?;
        }
        Ok(())
    }

    pub fn all(&self) -> [&ServiceProcess; 3] {
        [&self.ingest, &self.aggregate, &self.dashboard]
    }

    pub fn all_mut(&mut self) -> [&mut ServiceProcess; 3] {
        [&mut self.ingest, &mut self.aggregate, &mut self.dashboard]
    }
}

/// Aggregator settings (as `HUSHMAP_AGGREGATE_*` variables) that release
/// true counts: ε 10⁶ per window, so the noise rounds away, budgets that
/// never refuse, and `public_bbox` as the public region set, so every cell
/// shows. Tests compare exact totals under them.
pub fn true_counts_env(public_bbox: [f64; 4]) -> Vec<(&'static str, String)> {
    let [south, west, north, east] = public_bbox;
    vec![
        (
            "HUSHMAP_AGGREGATE_PRIVACY__EPSILON_PER_WINDOW",
            "1000000".into(),
        ),
        (
            "HUSHMAP_AGGREGATE_PRIVACY__MAX_EPSILON_PER_DAY",
            "1000000000000000.0".into(),
        ),
        (
            "HUSHMAP_AGGREGATE_PRIVACY__MAX_EPSILON_PER_HORIZON",
            "1000000000000000.0".into(),
        ),
        (
            "HUSHMAP_AGGREGATE_PRIVACY__MAX_DELTA_PER_HORIZON",
            "0.0009".into(),
        ),
        (
            "HUSHMAP_AGGREGATE_PRIVACY__PUBLIC_BBOX",
            format!("[{south}, {west}, {north}, {east}]"),
        ),
    ]
}

/// Waits (up to 60 s) for `GET url` to succeed.
pub async fn wait_until_answers(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    crate::wait_until(
        &format!("{url} to answer"),
        Duration::from_secs(60),
        || async {
            Ok(client
                .get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ()))
        },
    )
    .await
}

/// `target/test-artifacts`, where tests leave screenshots and reports.
pub fn artifacts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts")
}
