//! Soak: the three services as real processes under steady load, with
//! distinctive values in every field, then a leak scan of everything they
//! left behind.
//!
//! `HUSHMAP_SOAK_SECS` (default 60; the recorded run in docs/RELIABILITY.md
//! is 600) and `HUSHMAP_SOAK_RATE` (submissions/s, default 40) size it. It
//! asserts that the load was held (every submission got 202), that nothing
//! was lost or added (at a huge ε the released totals equal the accepted
//! count), and that `hushmap-leakscan` finds nothing in either topic (from
//! offset 0), the service logs (trace level), the broker's logs, the
//! release store, the metrics or the Arrow and Parquet exports — with every
//! submitted coordinate, profile, client IP and user agent as a needle. RSS
//! of each service is sampled every 5 s and reported with its growth;
//! figures go to `target/test-artifacts/soak.json`.

use hushmap_schema::submission::Location;
use hushmap_tests::processes::{ServiceProcess, free_port, service_binary};
use hushmap_tests::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WINDOW_SECS: u32 = 10;
/// A box near Sydney: latitudes negative and longitudes above 60, so no
/// four-decimal cut of a coordinate can also be a log timestamp's seconds.
const SOUTH_WEST: (f64, f64) = (-34.2, 150.6);
const SPAN_DEG: f64 = 0.8;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A submission whose every free-form value is distinctive and recorded as
/// a needle for the scanner.
fn distinctive(i: u64, needles: &mut String) -> (serde_json::Value, String, String) {
    let mut s = anonymous_submissions(1_000 + i, 1).remove(0);
    let lat = SOUTH_WEST.0 + rand::random::<f64>() * SPAN_DEG;
    let lon = SOUTH_WEST.1 + rand::random::<f64>() * SPAN_DEG;
    s.location = Some(Location { lat, lon });
    s.region = None;
    let profile = format!("soak-profile-{i:06}-{:08x}", rand::random::<u32>());
    s.profile = Some(profile.clone());
    let ip = format!("203.0.113.{}", 1 + i % 250);
    let agent = format!("HushmapSoak/1.0 (soak-ua-{:08x})", rand::random::<u32>());
    let body = serde_json::to_value(&s).expect("a submission serialises");
    // The values exactly as they went over the wire.
    for key in ["lat", "lon"] {
        let _ = writeln!(needles, "coordinate {}", body["location"][key]);
    }
    let _ = writeln!(needles, "profile {profile}");
    let _ = writeln!(needles, "client_ip {ip}");
    let _ = writeln!(needles, "user_agent {agent}");
    (body, ip, agent)
}

#[derive(Default)]
struct Outcomes {
    accepted: AtomicU64,
    unavailable: AtomicU64,
    other: AtomicU64,
}

async fn wait_healthy(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    eventually(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_holds_load_loses_nothing_and_leaks_nothing() -> anyhow::Result<()> {
    let secs: u64 = env_or("HUSHMAP_SOAK_SECS", 60);
    let rate: f64 = env_or("HUSHMAP_SOAK_RATE", 40.0);
    let submissions_topic = unique("test.soak.submissions");
    let releases_topic = unique("test.soak.releases");
    create_topics(&[(&submissions_topic, 6), (&releases_topic, 1)]).await?;
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    let run_dir = artifacts.join(unique("soak"));
    let log_dir = run_dir.join("logs");
    let data_dir = run_dir.join("dashboard-data");

    let (ingest_port, metrics_port, dashboard_port, flight_port) =
        (free_port(), free_port(), free_port(), free_port());
    let common = |extra: &[(&str, String)]| -> Vec<(String, String)> {
        let mut env = vec![
            (
                "HUSHMAP_LOG".into(),
                "trace,rdkafka=info,h2=info,hyper=info,tower=info,datafusion=info".into(),
            ),
            ("HUSHMAP_LOG_FORMAT".into(), "json".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        env
    };
    let bbox = format!(
        "[{}, {}, {}, {}]",
        SOUTH_WEST.0,
        SOUTH_WEST.1,
        SOUTH_WEST.0 + SPAN_DEG,
        SOUTH_WEST.1 + SPAN_DEG
    );
    let mut ingest = ServiceProcess::spawn(
        "ingest",
        &service_binary("hushmap-ingest")?,
        common(&[
            ("HUSHMAP_INGEST_LISTEN", format!("127.0.0.1:{ingest_port}")),
            ("HUSHMAP_INGEST_DEV_MODE", "true".into()),
            ("HUSHMAP_INGEST_WINDOW_SECS", WINDOW_SECS.to_string()),
            ("HUSHMAP_INGEST_ALLOWED_LATENESS_SECS", "2".into()),
            ("HUSHMAP_INGEST_KAFKA__BROKERS", brokers()),
            ("HUSHMAP_INGEST_KAFKA__TOPIC", submissions_topic.clone()),
            // The limiter sees every client address (from X-Forwarded-For)
            // but never limits this one generator.
            ("HUSHMAP_INGEST_RATE_LIMIT__PER_MINUTE", "1000000".into()),
            ("HUSHMAP_INGEST_RATE_LIMIT__BURST", "100000".into()),
            (
                "HUSHMAP_INGEST_RATE_LIMIT__TRUST_FORWARDED_FOR",
                "true".into(),
            ),
            (
                "HUSHMAP_CONTRIBUTOR_SECRET",
                "soak-contributor-secret-0123456789abcdef".into(),
            ),
            ("HUSHMAP_PAYLOAD_KEYS", payload_keys().into()),
        ]),
        &log_dir,
    )?;
    let mut aggregate = ServiceProcess::spawn(
        "aggregate",
        &service_binary("hushmap-aggregate")?,
        common(&[
            (
                "HUSHMAP_AGGREGATE_METRICS_LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            ),
            ("HUSHMAP_AGGREGATE_DEV_MODE", "true".into()),
            ("HUSHMAP_AGGREGATE_WINDOW_SECS", WINDOW_SECS.to_string()),
            ("HUSHMAP_AGGREGATE_ALLOWED_LATENESS_SECS", "2".into()),
            ("HUSHMAP_AGGREGATE_TICK_MS", "200".into()),
            ("HUSHMAP_AGGREGATE_KAFKA__BROKERS", brokers()),
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
                unique("soak.aggregate"),
            ),
            (
                "HUSHMAP_AGGREGATE_KAFKA__TRANSACTIONAL_ID",
                unique("soak.txn"),
            ),
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
            ("HUSHMAP_AGGREGATE_PRIVACY__PUBLIC_BBOX", bbox),
            ("HUSHMAP_PAYLOAD_KEYS", payload_keys().into()),
        ]),
        &log_dir,
    )?;
    let mut dashboard = ServiceProcess::spawn(
        "dashboard",
        &service_binary("hushmap-dashboard")?,
        common(&[
            (
                "HUSHMAP_DASHBOARD_LISTEN",
                format!("127.0.0.1:{dashboard_port}"),
            ),
            (
                "HUSHMAP_DASHBOARD_FLIGHT_LISTEN",
                format!("127.0.0.1:{flight_port}"),
            ),
            ("HUSHMAP_DASHBOARD_KAFKA__BROKERS", brokers()),
            (
                "HUSHMAP_DASHBOARD_KAFKA__RELEASES_TOPIC",
                releases_topic.clone(),
            ),
            ("HUSHMAP_DASHBOARD_DATA_DIR", data_dir.display().to_string()),
        ]),
        &log_dir,
    )?;
    let ingest_url = format!("http://127.0.0.1:{ingest_port}");
    let dashboard_url = format!("http://127.0.0.1:{dashboard_port}");
    let aggregate_metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    wait_healthy(&format!("{ingest_url}/healthz")).await?;
    wait_healthy(&format!("http://127.0.0.1:{metrics_port}/healthz")).await?;
    wait_healthy(&format!("{dashboard_url}/healthz")).await?;

    // Steady load: one submission every 1/rate s, at most 64 in flight.
    let outcomes = Arc::new(Outcomes::default());
    let mut needles = String::new();
    let client = reqwest::Client::new();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut rss: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let started = Instant::now();
    let mut next_sample = Instant::now();
    let mut sent = 0u64;
    let mut tasks = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        ticker.tick().await;
        if Instant::now() >= next_sample {
            for p in [&ingest, &aggregate, &dashboard] {
                rss.entry(p.name.clone())
                    .or_default()
                    .push(p.rss_kib().unwrap_or(0));
            }
            next_sample += Duration::from_secs(5);
        }
        let (body, ip, agent) = distinctive(sent, &mut needles);
        sent += 1;
        let permit = in_flight.clone().acquire_owned().await?;
        let (client, url, outcomes) = (
            client.clone(),
            format!("{ingest_url}/v1/submissions"),
            outcomes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let status = client
                .post(url)
                .header("x-forwarded-for", ip)
                .header("user-agent", agent)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16());
            let counter = match status {
                Ok(202) => &outcomes.accepted,
                Ok(503) => &outcomes.unavailable,
                _ => &outcomes.other,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        }));
    }
    for t in tasks {
        t.await?;
    }
    let load_secs = started.elapsed().as_secs_f64();
    let accepted = outcomes.accepted.load(Ordering::Relaxed);
    assert_eq!(
        (
            accepted,
            outcomes.unavailable.load(Ordering::Relaxed),
            outcomes.other.load(Ordering::Relaxed)
        ),
        (sent, 0, 0),
        "every submission is accepted while nothing fails"
    );

    // Nothing lost, nothing added: released totals equal what was accepted.
    let released = eventually(
        "every accepted submission to be released",
        Duration::from_secs(90),
        || async {
            let totals = dashboard_window_totals(&dashboard_url, None).await?;
            let sum: i64 = totals.iter().map(|(_, t)| t).sum();
            Ok((sum >= accepted as i64).then_some(sum))
        },
    )
    .await?;
    assert_eq!(released, accepted as i64);
    for p in [&ingest, &aggregate, &dashboard] {
        rss.entry(p.name.clone())
            .or_default()
            .push(p.rss_kib().unwrap_or(0));
    }

    // The leak scan, with every submitted value as a needle.
    let needles_file = run_dir.join("needles.txt");
    std::fs::write(&needles_file, &needles)?;
    let kafka_logs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kafka/logs");
    let mut scan = std::process::Command::new(service_binary("hushmap-leakscan")?);
    scan.args(["--brokers", &brokers()])
        .args(["--topic", &submissions_topic, "--topic", &releases_topic])
        .arg("--path")
        .arg(&log_dir)
        .arg("--path")
        .arg(&data_dir)
        .args(["--url", &format!("{ingest_url}/metrics")])
        .args(["--url", &aggregate_metrics])
        .args(["--url", &format!("{dashboard_url}/metrics")])
        .args([
            "--url",
            &format!("{dashboard_url}/api/v1/export?format=arrow"),
        ])
        .args([
            "--url",
            &format!("{dashboard_url}/api/v1/export?format=parquet"),
        ])
        .arg("--needles")
        .arg(&needles_file);
    if kafka_logs.is_dir() {
        scan.arg("--path").arg(&kafka_logs);
    }
    let scanned = tokio::task::spawn_blocking(move || scan.output()).await??;
    let report = String::from_utf8_lossy(&scanned.stderr).into_owned();
    let findings = String::from_utf8_lossy(&scanned.stdout).into_owned();

    for p in [&mut ingest, &mut aggregate, &mut dashboard] {
        assert!(p.is_running(), "{} exited during the soak", p.name);
        assert!(
            p.terminate(Duration::from_secs(20)),
            "{} did not stop cleanly",
            p.name
        );
    }

    let growth: BTreeMap<&String, serde_json::Value> = rss
        .iter()
        .map(|(name, samples)| {
            // Growth is counted from the end of the first fifth of the run,
            // after the first windows have filled the steady-state buffers.
            let first = samples
                .get((samples.len() / 5).max(1))
                .or(samples.first())
                .copied()
                .unwrap_or(0);
            let last = samples.last().copied().unwrap_or(0);
            let max = samples.iter().copied().max().unwrap_or(0);
            (
                name,
                json!({"after_warmup_kib": first, "last_kib": last, "max_kib": max,
                       "growth_kib": last as i64 - first as i64, "samples": samples}),
            )
        })
        .collect();
    let summary = json!({
        "secs": secs, "target_rate": rate, "load_secs": load_secs,
        "achieved_rate": sent as f64 / load_secs, "sent": sent, "accepted": accepted,
        "released": released, "rss": growth,
        "leakscan": report.lines().filter(|l| !l.starts_with("leakscan: topic ")
            && !l.starts_with("leakscan: path ") && !l.starts_with("leakscan: url ")).collect::<Vec<_>>(),
        "needles": needles.lines().count(),
    });
    std::fs::create_dir_all(&artifacts)?;
    std::fs::write(
        artifacts.join("soak.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    eprintln!("soak: {summary}");

    assert_eq!(
        scanned.status.code(),
        Some(0),
        "leakscan found personal data:\n{findings}\n{report}"
    );
    assert!(findings.is_empty());
    // The scan really read every source: topics, logs, store, endpoints.
    assert!(report.contains("no findings"), "{report}");
    let bytes: u64 = report
        .lines()
        .find_map(|l| {
            l.split(" sources, ")
                .nth(1)?
                .strip_suffix(" bytes scanned")?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(bytes > sent * 100, "only {bytes} bytes scanned: {report}");
    // And the needles are live: scanning the needles file itself finds them.
    let own = std::process::Command::new(service_binary("hushmap-leakscan")?)
        .arg("--path")
        .arg(&needles_file)
        .arg("--needles")
        .arg(&needles_file)
        .output()?;
    assert_eq!(own.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&own.stdout).lines().count() as u64 >= sent * 5);
    let _ = std::fs::remove_dir_all(&run_dir);
    Ok(())
}
