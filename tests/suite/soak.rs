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

use hushmap_tests::load::{LOAD_AREA, steady_load};
use hushmap_tests::processes::{
    CONTRIBUTOR_SECRET, ServiceSet, ServiceSetOptions, artifacts_dir, service_binary,
};
use hushmap_tests::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Growth is counted from the end of the first fifth of the run, after the
/// first windows have filled the steady-state buffers.
fn rss_summary(samples: &[u64]) -> serde_json::Value {
    let warm = samples
        .get((samples.len() / 5).max(1))
        .or(samples.first())
        .copied()
        .unwrap_or(0);
    let last = samples.last().copied().unwrap_or(0);
    json!({"after_warmup_kib": warm, "last_kib": last,
           "max_kib": samples.iter().copied().max().unwrap_or(0),
           "growth_kib": last as i64 - warm as i64, "samples": samples})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_holds_load_loses_nothing_and_leaks_nothing() -> anyhow::Result<()> {
    let secs: u64 = env_or("HUSHMAP_SOAK_SECS", 60);
    let rate: f64 = env_or("HUSHMAP_SOAK_RATE", 40.0);
    let mut services = ServiceSet::start(ServiceSetOptions {
        name: "soak".into(),
        window_secs: 10,
        // Everything our code logs, at its most verbose.
        log_filter: "trace,rdkafka=info,h2=info,hyper=info,tower=info,datafusion=info".into(),
        public_bbox: LOAD_AREA,
        sasl: None,
    })
    .await?;

    let load = steady_load(&services.ingest_url, rate, Duration::from_secs(secs));
    let mut rss: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut sample = tokio::time::interval(Duration::from_secs(5));
    while !load.is_finished() {
        sample.tick().await;
        for p in services.all() {
            rss.entry(p.name.clone())
                .or_default()
                .push(p.rss_kib().unwrap_or(0));
        }
    }
    let load = load.await?;
    assert_eq!(
        (load.accepted, load.unavailable, load.other),
        (load.sent, 0, 0),
        "every submission is accepted while nothing fails"
    );

    // Nothing lost, nothing added: released totals equal what was accepted.
    let released = released_total_reaching(&services.dashboard_url, load.accepted).await?;
    assert_eq!(released, load.accepted as i64);
    for p in services.all() {
        rss.entry(p.name.clone())
            .or_default()
            .push(p.rss_kib().unwrap_or(0));
    }

    // The leak scan, with every submitted value as a needle.
    let needles_file = services.run_dir.join("needles.txt");
    std::fs::write(&needles_file, &load.needles)?;
    let kafka_logs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kafka/logs");
    let dashboard = &services.dashboard_url;
    let mut scan = std::process::Command::new(service_binary("hushmap-leakscan")?);
    scan.args(["--brokers", &brokers()])
        .args(["--topic", &services.submissions_topic])
        .args(["--topic", &services.releases_topic])
        .arg("--path")
        .arg(&services.log_dir)
        .arg("--path")
        .arg(&services.data_dir)
        .args(["--url", &format!("{}/metrics", services.ingest_admin_url)])
        .args(["--url", &services.aggregate_metrics_url])
        .args(["--url", &format!("{dashboard}/metrics")])
        .args(["--url", &format!("{dashboard}/api/v1/export?format=arrow")])
        .args([
            "--url",
            &format!("{dashboard}/api/v1/export?format=parquet"),
        ])
        .arg("--needles")
        .arg(&needles_file);
    if kafka_logs.is_dir() {
        scan.arg("--path").arg(&kafka_logs);
    }
    let scanned = tokio::task::spawn_blocking(move || scan.output()).await??;
    let report = String::from_utf8_lossy(&scanned.stderr).into_owned();
    let findings = String::from_utf8_lossy(&scanned.stdout).into_owned();

    for p in services.all_mut() {
        assert!(p.is_running(), "{} exited during the soak", p.name);
        assert!(
            p.terminate(Duration::from_secs(20)),
            "{} did not stop cleanly",
            p.name
        );
    }
    let summary = json!({
        "secs": secs, "target_rate": rate, "load_secs": load.secs,
        "achieved_rate": load.sent as f64 / load.secs, "sent": load.sent,
        "accepted": load.accepted, "released": released,
        "rss": rss.iter().map(|(n, s)| (n.clone(), rss_summary(s))).collect::<BTreeMap<_, _>>(),
        "leakscan": report.lines().filter(|l| !l.starts_with("leakscan: topic ")
            && !l.starts_with("leakscan: path ") && !l.starts_with("leakscan: url "))
            .collect::<Vec<_>>(),
        "needles": load.needles.lines().count(),
    });
    std::fs::create_dir_all(artifacts_dir())?;
    std::fs::write(
        artifacts_dir().join("soak.json"),
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
    assert!(
        bytes > load.sent * 100,
        "only {bytes} bytes scanned: {report}"
    );
    // Secrets stay out of the logs too, even at TRACE.
    let key_hex = payload_keys().split_once(':').expect("ID:HEX").1;
    for p in services.all() {
        let log = std::fs::read_to_string(&p.log)?;
        for secret in [key_hex, &key_hex[..16], CONTRIBUTOR_SECRET] {
            assert!(!log.contains(secret), "{} logged a secret", p.name);
        }
    }
    // And the needles are live: scanning the needles file itself finds them.
    let own = std::process::Command::new(service_binary("hushmap-leakscan")?)
        .arg("--path")
        .arg(&needles_file)
        .arg("--needles")
        .arg(&needles_file)
        .output()?;
    assert_eq!(own.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&own.stdout).lines().count() as u64 >= load.sent * 5);
    let _ = std::fs::remove_dir_all(&services.run_dir);
    Ok(())
}
