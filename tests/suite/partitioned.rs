//! Partitioned aggregation on the 3-node cluster, real processes: two
//! ingest instances and three partitioned aggregators, and beside them one
//! single-instance aggregator reading the same submissions as the
//! reference. Submissions come from a small pool of returning contributors
//! (so contribution bounding decides what counts) and anonymous ones, from
//! both ingest instances. Mid-run one partitioned aggregator and one broker
//! are killed (`kill -9`), and a fourth aggregator joins in the middle of a
//! window (a rebalance with windows open).
//!
//! At a huge ε the releases are the true counts: every window must be
//! published in all its parts exactly once, and the parts together must
//! equal the single instance's release of that window, row for row. The
//! dashboard, reading the parts, must show the same totals.
//!
//! Longer variant: `HUSHMAP_PARTITIONED_SECS=300` (default 50 s of load).

use hushmap_schema::submission::Location;
use hushmap_schema::{BoundedMessage, CoarseRecord, Release};
use hushmap_testkit::idp::TestIdp;
use hushmap_testkit::{
    KafkaCluster, committed_records_on, create_topics_on, now_ms, topic_records_on,
};
use hushmap_tests::load::LOAD_AREA;
use hushmap_tests::processes::{
    CONTRIBUTOR_SECRET, ServiceProcess, artifacts_dir, free_port, service_binary, true_counts_env,
    wait_until_answers,
};
use hushmap_tests::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WINDOW_SECS: u32 = 10;

/// Every aggregator of the test, the late joiner and the single reference
/// included, starts its schedule at the same window (the one holding the
/// test's start), as a deployment's instances must.
fn schedule_epoch() -> i64 {
    static EPOCH: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(|| hushmap_testkit::current_window_start(WINDOW_SECS))
}
/// Longer than a produce can take to land across the broker kill (ingest's
/// produce timeout of 5 s plus the 2 s margin its configuration check asks
/// for in production). A window then closes only once every partition's
/// leader, asked after the deadline, holds nothing unread: an end of
/// partition seen before the kill no longer stands for one after it (with
/// that, at 6 s and later 15 s, the two topologies once disagreed, 98
/// against 105 contributions, and once a topology never caught up).
///
/// The flake this test once had (the topologies disagreeing by a few
/// contributions in one run of many) was the records' timestamps: the
/// submissions topic was `CreateTime`, so a produce retried across the
/// broker kill carried ingest's clock from before the kill but became
/// readable seconds later, and the two topologies, reading it at different
/// moments, judged its lateness differently. The topic is now
/// `LogAppendTime` (the broker stamps a record as it appends it, so every
/// reader sees one time), and the aggregator refuses a topic that is not
/// (aggregate's `producer_timestamps` test).
const LATENESS_SECS: u32 = 8;
/// Returning contributors: each may submit many times a window.
const POOL: u64 = 40;
const CLUSTER_BASE: u16 = 29190;

#[derive(Clone)]
struct Topics {
    submissions: String,
    bounded: String,
    releases: String,
    single_releases: String,
    /// The partitioned aggregators' measurements behind each part.
    measurements: String,
}

fn common_env() -> Vec<(String, String)> {
    vec![
        ("HUSHMAP_LOG".into(), "info".into()),
        ("HUSHMAP_LOG_FORMAT".into(), "json".into()),
    ]
}

fn ingest_env(brokers: &str, topics: &Topics, port: u16) -> Vec<(String, String)> {
    let mut env = common_env();
    for (k, v) in [
        (
            "HUSHMAP_PAYLOAD_PUBLIC_KEY",
            payload_keyring().public_key().to_string(),
        ),
        ("HUSHMAP_INGEST_LISTEN", format!("127.0.0.1:{port}")),
        ("HUSHMAP_INGEST_ADMIN_LISTEN", "127.0.0.1:0".into()),
        ("HUSHMAP_INGEST_DEV_MODE", "true".into()),
        ("HUSHMAP_INGEST_WINDOW_SECS", WINDOW_SECS.to_string()),
        (
            "HUSHMAP_INGEST_ALLOWED_LATENESS_SECS",
            LATENESS_SECS.to_string(),
        ),
        ("HUSHMAP_INGEST_KAFKA__BROKERS", brokers.into()),
        ("HUSHMAP_INGEST_KAFKA__TOPIC", topics.submissions.clone()),
        ("HUSHMAP_INGEST_RATE_LIMIT__PER_MINUTE", "1000000".into()),
        ("HUSHMAP_INGEST_RATE_LIMIT__BURST", "100000".into()),
        // Both instances must key a contributor alike.
        ("HUSHMAP_CONTRIBUTOR_SECRET", CONTRIBUTOR_SECRET.into()),
    ] {
        env.push((k.into(), v));
    }
    // Returning contributors are signed in.
    env.extend(TestIdp::ingest_env());
    env
}

/// A partitioned instance (`instance` named) or the single reference.
fn aggregate_env(
    brokers: &str,
    topics: &Topics,
    instance: Option<&str>,
    group: &str,
) -> Vec<(String, String)> {
    let mut env = common_env();
    env.push(("HUSHMAP_PAYLOAD_KEYS".into(), payload_keys().into()));
    let (topology, output) = match instance {
        Some(_) => ("partitioned", topics.releases.clone()),
        None => ("single", topics.single_releases.clone()),
    };
    for (k, v) in [
        ("HUSHMAP_AGGREGATE_TOPOLOGY", topology.to_string()),
        (
            "HUSHMAP_AGGREGATE_METRICS_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        ("HUSHMAP_AGGREGATE_DEV_MODE", "true".into()),
        (
            "HUSHMAP_AGGREGATE_SCHEDULE_EPOCH",
            schedule_epoch().to_string(),
        ),
        ("HUSHMAP_AGGREGATE_WINDOW_SECS", WINDOW_SECS.to_string()),
        (
            "HUSHMAP_AGGREGATE_ALLOWED_LATENESS_SECS",
            LATENESS_SECS.to_string(),
        ),
        ("HUSHMAP_AGGREGATE_TICK_MS", "200".into()),
        ("HUSHMAP_AGGREGATE_KAFKA__BROKERS", brokers.into()),
        (
            "HUSHMAP_AGGREGATE_KAFKA__INPUT_TOPIC",
            topics.submissions.clone(),
        ),
        (
            "HUSHMAP_AGGREGATE_KAFKA__BOUNDED_TOPIC",
            topics.bounded.clone(),
        ),
        ("HUSHMAP_AGGREGATE_KAFKA__OUTPUT_TOPIC", output),
        (
            "HUSHMAP_AGGREGATE_KAFKA__MEASUREMENTS_TOPIC",
            if instance.is_some() {
                topics.measurements.clone()
            } else {
                String::new()
            },
        ),
        ("HUSHMAP_AGGREGATE_KAFKA__GROUP_ID", group.to_string()),
        (
            "HUSHMAP_AGGREGATE_KAFKA__TRANSACTIONAL_ID",
            format!("{group}-txn"),
        ),
        (
            "HUSHMAP_AGGREGATE_KAFKA__TRANSACTION_TIMEOUT_MS",
            "10000".into(),
        ),
        ("HUSHMAP_AGGREGATE_KAFKA__SESSION_TIMEOUT_MS", "6000".into()),
    ]
    .into_iter()
    .chain(true_counts_env(LOAD_AREA))
    {
        env.push((k.into(), v));
    }
    if let Some(id) = instance {
        env.push(("HUSHMAP_AGGREGATE_KAFKA__INSTANCE_ID".into(), id.into()));
    }
    env
}

/// What the load sent: accepted anonymous submissions, and the returning
/// contributors that got at least one submission accepted.
#[derive(Default)]
struct Sent {
    /// When the last 202 came back (ms since the epoch).
    last_accepted_ms: AtomicI64,
    accepted: AtomicU64,
    anonymous_accepted: AtomicU64,
    refused: AtomicU64,
    profiles: std::sync::Mutex<BTreeSet<u64>>,
}

/// `rate` submissions/s for `duration`, alternating between the ingests;
/// 60% from the returning pool, from anywhere in the load area.
async fn mixed_load(ingests: Vec<String>, rate: f64, duration: Duration, sent: Arc<Sent>) {
    let client = reqwest::Client::new();
    let idp = TestIdp::ed25519();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let started = Instant::now();
    let mut answers = Vec::new();
    let mut i = 0u64;
    while started.elapsed() < duration {
        ticker.tick().await;
        let mut s = anonymous_submissions(50_000 + i, 1).remove(0);
        let [south, west, north, east] = LOAD_AREA;
        s.location = Some(Location {
            lat: south + rand::random::<f64>() * (north - south),
            lon: west + rand::random::<f64>() * (east - west),
        });
        s.region = None;
        let returning = (rand::random::<f64>() < 0.6).then(|| rand::random::<u64>() % POOL);
        let url = format!("{}/v1/submissions", ingests[i as usize % ingests.len()]);
        let mut request = client.post(url).json(&s);
        if let Some(k) = returning {
            request = request.bearer_auth(idp.token_for(&format!("returning-{k}")));
        }
        let sent = sent.clone();
        answers.push(tokio::spawn(async move {
            match request.send().await.map(|r| r.status().as_u16()) {
                Ok(202) => {
                    sent.last_accepted_ms.fetch_max(now_ms(), Ordering::Relaxed);
                    sent.accepted.fetch_add(1, Ordering::Relaxed);
                    match returning {
                        Some(k) => {
                            sent.profiles.lock().expect("lock").insert(k);
                        }
                        None => {
                            sent.anonymous_accepted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                _ => {
                    sent.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        i += 1;
    }
    for answer in answers {
        let _ = answer.await;
    }
}

/// A release row as compared: everything but the noise scale (equal anyway).
type Row = (u8, String, String, i64, i64, i64, [i64; 10]);

fn rows_of(release: &Release) -> BTreeSet<Row> {
    release
        .rows
        .iter()
        .map(|r| {
            (
                r.level,
                r.region.clone(),
                r.age_band.clone(),
                r.n_low,
                r.n_moderate,
                r.n_high,
                r.symptoms,
            )
        })
        .collect()
}

fn finest_total(rows: &BTreeSet<Row>) -> i64 {
    let finest = rows.iter().map(|r| r.0).max().unwrap_or(0);
    rows.iter()
        .filter(|r| r.0 == finest)
        .map(|r| r.3 + r.4 + r.5)
        .sum()
}

fn releases_on(brokers: &str, topic: &str) -> anyhow::Result<Vec<Release>> {
    committed_records_on(brokers, topic)?
        .into_iter()
        .map(|(_, payload)| Ok(Release::from_ipc(&payload)?))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_aggregators_release_what_one_would_through_kills_and_rebalances()
-> anyhow::Result<()> {
    let load_secs: u64 = std::env::var("HUSHMAP_PARTITIONED_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let cluster = tokio::task::spawn_blocking(|| KafkaCluster::start_fresh(CLUSTER_BASE)).await??;
    let cluster = Arc::new(cluster);
    let brokers = cluster.bootstrap();
    let topics = Topics {
        submissions: unique("part.submissions"),
        bounded: unique("part.bounded"),
        releases: unique("part.releases"),
        single_releases: unique("part.single.releases"),
        measurements: unique("part.measurements"),
    };
    const SUBMISSION_PARTITIONS: i32 = 6;
    const SHARDS: u32 = 4;
    create_topics_on(
        &brokers,
        &[
            (&topics.submissions, SUBMISSION_PARTITIONS),
            (&topics.bounded, SHARDS as i32),
            (&topics.releases, 1),
            (&topics.single_releases, 1),
            (&topics.measurements, 1),
        ],
    )
    .await?;

    let run_dir = artifacts_dir().join(unique("partitioned"));
    let log_dir = run_dir.join("logs");
    let mut ingests = Vec::new();
    let mut ingest_urls = Vec::new();
    for n in 0..2 {
        let port = free_port();
        ingests.push(ServiceProcess::spawn(
            &format!("ingest-{n}"),
            &service_binary("hushmap-ingest")?,
            ingest_env(&brokers, &topics, port),
            &log_dir,
        )?);
        ingest_urls.push(format!("http://127.0.0.1:{port}"));
    }
    let group = unique("hushmap-aggregate.part");
    let aggregate_bin = service_binary("hushmap-aggregate")?;
    let mut aggregators = Vec::new();
    for n in 0..3 {
        let id = format!("a{n}");
        aggregators.push(ServiceProcess::spawn(
            &format!("aggregate-{id}"),
            &aggregate_bin,
            aggregate_env(&brokers, &topics, Some(&id), &group),
            &log_dir,
        )?);
    }
    let single_process = ServiceProcess::spawn(
        "aggregate-single",
        &aggregate_bin,
        aggregate_env(&brokers, &topics, None, &unique("hushmap-aggregate.single")),
        &log_dir,
    )?;
    let dashboard_port = free_port();
    let mut dashboard_env = common_env();
    for (k, v) in [
        (
            "HUSHMAP_DASHBOARD_LISTEN",
            format!("127.0.0.1:{dashboard_port}"),
        ),
        (
            "HUSHMAP_DASHBOARD_FLIGHT_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        ("HUSHMAP_DASHBOARD_KAFKA__BROKERS", brokers.clone()),
        (
            "HUSHMAP_DASHBOARD_KAFKA__RELEASES_TOPIC",
            topics.releases.clone(),
        ),
        (
            "HUSHMAP_DASHBOARD_DATA_DIR",
            run_dir.join("dashboard-data").display().to_string(),
        ),
    ] {
        dashboard_env.push((k.into(), v));
    }
    let _dashboard = ServiceProcess::spawn(
        "dashboard",
        &service_binary("hushmap-dashboard")?,
        dashboard_env,
        &log_dir,
    )?;
    let dashboard_url = format!("http://127.0.0.1:{dashboard_port}");
    for url in ingest_urls.iter().chain([&dashboard_url]) {
        wait_until_answers(&format!("{url}/healthz")).await?;
    }
    // Both groups formed before the load, so the first rebalances are over.
    tokio::time::sleep(Duration::from_secs(8)).await;

    let sent = Arc::new(Sent::default());
    let load = tokio::spawn(mixed_load(
        ingest_urls.clone(),
        20.0,
        Duration::from_secs(load_secs),
        sent.clone(),
    ));
    let window_ms = i64::from(WINDOW_SECS) * 1000;
    let mid_window = || {
        let into = now_ms().rem_euclid(window_ms);
        Duration::from_millis((window_ms / 2 - into).rem_euclid(window_ms) as u64)
    };
    // One aggregator dies with windows open (and perhaps a transaction).
    tokio::time::sleep(Duration::from_secs(12)).await;
    aggregators[1].kill9();
    // One broker dies.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.kill9(2)).await??;
    // A fourth aggregator joins in the middle of a window.
    tokio::time::sleep(mid_window()).await;
    aggregators.push(ServiceProcess::spawn(
        "aggregate-a3",
        &aggregate_bin,
        aggregate_env(&brokers, &topics, Some("a3"), &group),
        &log_dir,
    )?);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start(2)).await??;
    load.await?;
    let accepted = sent.accepted.load(Ordering::Relaxed);
    let anonymous = sent.anonymous_accepted.load(Ordering::Relaxed);
    let returning = sent.profiles.lock().expect("lock").len() as i64;
    let refused = sent.refused.load(Ordering::Relaxed);
    eprintln!(
        "load: {accepted} accepted ({anonymous} anonymous, {returning} returning contributors), {refused} refused"
    );
    assert!(accepted > 0);
    // Every accepted submission is one contributor's in its window, and
    // each returning contributor submitted in at least one window.
    let lowest = anonymous as i64 + returning;
    // Ingest files a submission under the window of its arrival, before
    // the 202 came back: the last one is in this window or the one before.
    let last = sent.last_accepted_ms.load(Ordering::Relaxed);
    let last_window = (last - 1_000).div_euclid(window_ms) * window_ms;

    // Wait for both sides to release everything; what was last seen goes
    // into the failure, with each aggregator's last log lines.
    let seen_last = std::sync::Mutex::new(String::new());
    let waited = wait_until(
        "both aggregations to release every window",
        Duration::from_secs(150),
        || async {
            let brokers = brokers.clone();
            let (a, b) = (topics.single_releases.clone(), topics.releases.clone());
            let (single, parts) = tokio::task::spawn_blocking(move || {
                anyhow::Ok((releases_on(&brokers, &a)?, releases_on(&brokers, &b)?))
            })
            .await??;
            let single_total: i64 = single.iter().map(|r| finest_total(&rows_of(r))).sum();
            let whole: BTreeSet<i64> = {
                let mut count: BTreeMap<i64, u32> = BTreeMap::new();
                for p in &parts {
                    *count.entry(p.meta.window_start).or_default() += 1;
                }
                count
                    .into_iter()
                    .filter(|(_, n)| *n >= SHARDS)
                    .map(|(w, _)| w)
                    .collect()
            };
            let single_windows: BTreeSet<i64> =
                single.iter().map(|r| r.meta.window_start).collect();
            let done = single_total >= lowest
                && single_windows.last().is_some_and(|w| *w >= last_window)
                && single_windows.is_subset(&whole);
            *seen_last.lock().expect("lock") = format!(
                "single: {} windows, last {:?} (want >= {last_window}), total {single_total} \
                 (want >= {lowest}); windows without every part: {:?}",
                single_windows.len(),
                single_windows.last(),
                single_windows.difference(&whole).collect::<Vec<_>>(),
            );
            Ok(done.then_some((single, parts)))
        },
    )
    .await;
    let (single, parts) = match waited {
        Ok(v) => v,
        Err(e) => {
            for a in aggregators.iter().chain([&single_process]) {
                eprintln!("--- last lines of {}:\n{}", a.name, a.log_tail(15));
            }
            let seen = seen_last.lock().expect("lock").clone();
            return Err(e.context(seen));
        }
    };

    // The single instance: each window once.
    let mut reference: BTreeMap<i64, BTreeSet<Row>> = BTreeMap::new();
    for r in &single {
        assert!(
            reference.insert(r.meta.window_start, rows_of(r)).is_none(),
            "single instance released window {} twice",
            r.meta.window_start
        );
    }
    // Partitioned: every (window, part) once, every part of every window.
    let mut assembled: BTreeMap<i64, BTreeSet<Row>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for p in &parts {
        let part = p.meta.part;
        assert_eq!(part.of, SHARDS, "parts per window");
        assert!(
            seen.insert((p.meta.window_start, part.index)),
            "part {part} of window {} published twice",
            p.meta.window_start
        );
        assert_eq!(p.meta.ledger_entry, format!("w{}", p.meta.window_start));
        let rows = assembled.entry(p.meta.window_start).or_default();
        let before = rows.len();
        rows.extend(rows_of(p));
        assert_eq!(
            rows.len(),
            before + p.rows.len(),
            "parts hold disjoint cells"
        );
    }
    assert_eq!(
        assembled.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>(),
        "the same windows released"
    );
    for (window, rows) in &reference {
        assert_eq!(
            seen.iter().filter(|(w, _)| w == window).count(),
            SHARDS as usize,
            "window {window} has every part"
        );
        assert_eq!(
            &assembled[window], rows,
            "window {window}: parts = single release"
        );
    }
    let total: i64 = reference.values().map(finest_total).sum();
    eprintln!(
        "released: {} windows, {total} contributions (bounded from {accepted} accepted); {} parts",
        reference.len(),
        parts.len()
    );
    assert!(
        (lowest..=accepted as i64).contains(&total),
        "released total {total} outside [{lowest}, {accepted}]"
    );
    assert!(
        total < accepted as i64,
        "bounding kept fewer than were sent"
    );
    // Each part's measurements, in its transaction: one per part, the same
    // ledger entry, and at a huge ε the same counts.
    let measured = {
        let (b, topic) = (brokers.clone(), topics.measurements.clone());
        tokio::task::spawn_blocking(move || releases_on(&b, &topic)).await??
    };
    let mut by_part: BTreeMap<(i64, u32), &Release> = BTreeMap::new();
    for m in &measured {
        let key = (m.meta.window_start, m.meta.part.index);
        assert!(by_part.insert(key, m).is_none(), "{key:?} measured twice");
    }
    for part in &parts {
        let key = (part.meta.window_start, part.meta.part.index);
        let m = by_part
            .get(&key)
            .unwrap_or_else(|| panic!("part {key:?} without its measurements"));
        assert_eq!(
            m.meta.estimates,
            hushmap_schema::release::Estimates::Measured
        );
        assert_eq!(m.meta.ledger_entry, part.meta.ledger_entry);
        assert_eq!(
            rows_of(m),
            rows_of(part),
            "part {key:?}: measured = released at huge ε"
        );
    }

    // The bounded topic holds nothing readable and nothing linkable: every
    // message (records and watermarks) sealed under the aggregator's own
    // bounded key (sealed afresh, so no bytes match a submission's), no keys.
    let (b, t) = (brokers.clone(), topics.clone());
    let (bounded, submitted) = tokio::task::spawn_blocking(move || {
        anyhow::Ok((
            topic_records_on(&b, &t.bounded)?,
            topic_records_on(&b, &t.submissions)?,
        ))
    })
    .await??;
    let submitted: BTreeSet<Vec<u8>> = submitted.into_iter().map(|(_, p)| p).collect();
    let bounded_keys = payload_keyring().bounded_keyring();
    let (mut sealed, mut marks) = (0, 0);
    for (key, payload) in &bounded {
        assert!(key.is_empty(), "bounded records carry no key");
        assert!(CoarseRecord::decode(payload).is_err());
        assert!(
            BoundedMessage::decode(payload).is_err(),
            "a message in the clear"
        );
        assert!(
            !submitted.contains(payload),
            "a submission's bytes forwarded as they were"
        );
        match bounded_keys.open(payload)?.0 {
            BoundedMessage::Record(_) => sealed += 1,
            BoundedMessage::Watermark(_) => marks += 1,
        }
    }
    eprintln!("bounded topic: {sealed} sealed records, {marks} watermarks");
    assert!(sealed >= total as usize);

    // The dashboard shows each window whole, with the same totals.
    let expected: Vec<(i64, i64)> = reference
        .iter()
        .map(|(w, rows)| (*w, finest_total(rows)))
        .collect();
    wait_until(
        "the dashboard to show every window whole",
        Duration::from_secs(30),
        || async {
            let shown = dashboard_window_totals(&dashboard_url, None).await?;
            Ok((shown == expected).then_some(()))
        },
    )
    .await?;
    Ok(())
}
