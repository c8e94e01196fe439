//! Crash tests against the real broker: `kill -9` the aggregator right after
//! a release and in the middle of a window, restart it, and check that every
//! window is released exactly once, with every record counted (huge ε, so
//! released counts are the true counts), and that the schedule survives the
//! restarts: every window from the first one after the first start-up is
//! released, empty or not, none skipped.

use crate::common::{Unreadable, releases, window_len};
use hushmap_schema::region::RegionResolution;
use hushmap_schema::{
    AgeBand, CoarseRecord, ContributorKey, RegionCell, RiskLevel, SymptomSet, Window,
};
use hushmap_testkit::free_port;
use hushmap_testkit::{
    brokers, create_topics, now_ms, payload_keys, produce_sealed, unique, wait_until,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, Producer};
use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::Duration;

const WINDOW_SECS: u32 = 6;

struct Setup {
    input: String,
    output: String,
    group: String,
    txn: String,
}

/// A running aggregator, killed (SIGKILL) when dropped, so a failing test
/// leaves no process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-9")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

/// A free loopback port for an instance's `/metrics`.
fn spawn(setup: &Setup) -> Running {
    spawn_with_metrics(setup, free_port())
}

/// Starts an aggregator and waits until it serves `/metrics`: by then it
/// has chosen (or restored) its schedule, so a window that starts after
/// this returns is inside the schedule however slow the start-up was.
/// Returns it and its `/metrics` URL.
async fn spawn_and_wait(setup: &Setup) -> anyhow::Result<(Running, String)> {
    let port = free_port();
    let running = spawn_with_metrics(setup, port);
    let url = format!("http://127.0.0.1:{port}/metrics");
    wait_until(
        "the aggregator to serve /metrics",
        Duration::from_secs(60),
        || async {
            let up = reqwest::get(&url).await;
            Ok(up.is_ok_and(|r| r.status().is_success()).then_some(()))
        },
    )
    .await?;
    Ok((running, url))
}

/// The value of the counter `name` in the `/metrics` text at `url`.
async fn counter(url: &str, name: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(url).await?.text().await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0))
}

fn spawn_with_metrics(setup: &Setup, metrics_port: u16) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_hushmap-aggregate"))
        .env(
            "HUSHMAP_AGGREGATE_METRICS_LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        )
        .env(
            "HUSHMAP_LOG",
            std::env::var("HUSHMAP_TEST_AGG_LOG").unwrap_or("warn".into()),
        )
        .env("HUSHMAP_AGGREGATE_DEV_MODE", "true")
        .env("HUSHMAP_PAYLOAD_KEYS", payload_keys())
        .env("HUSHMAP_AGGREGATE_WINDOW_SECS", WINDOW_SECS.to_string())
        .env("HUSHMAP_AGGREGATE_ALLOWED_LATENESS_SECS", "1")
        .env("HUSHMAP_AGGREGATE_TICK_MS", "200")
        .env("HUSHMAP_AGGREGATE_KAFKA__BROKERS", brokers())
        .env("HUSHMAP_AGGREGATE_KAFKA__INPUT_TOPIC", &setup.input)
        .env("HUSHMAP_AGGREGATE_KAFKA__OUTPUT_TOPIC", &setup.output)
        .env("HUSHMAP_AGGREGATE_KAFKA__GROUP_ID", &setup.group)
        .env("HUSHMAP_AGGREGATE_KAFKA__TRANSACTIONAL_ID", &setup.txn)
        .env("HUSHMAP_AGGREGATE_KAFKA__TRANSACTION_TIMEOUT_MS", "10000")
        .env("HUSHMAP_AGGREGATE_PRIVACY__EPSILON_PER_WINDOW", "1000000")
        .env(
            "HUSHMAP_AGGREGATE_PRIVACY__MAX_EPSILON_PER_HORIZON",
            "1000000000000",
        )
        .env(
            "HUSHMAP_AGGREGATE_PRIVACY__MAX_EPSILON_PER_DAY",
            "1000000000000",
        )
        .env("HUSHMAP_AGGREGATE_PRIVACY__MAX_DELTA_PER_HORIZON", "0.0009")
        .spawn()
        .expect("aggregate binary starts");
    Running(child)
}

fn kill9(running: Running) {
    drop(running);
}

/// Waits until the next window starts, so a phase has the whole window
/// (real time by design, not a condition).
async fn align_to_window_start() -> Window {
    let next = Window::containing(now_ms(), window_len(WINDOW_SECS)).end_ms;
    tokio::time::sleep(Duration::from_millis((next - now_ms()).max(0) as u64 + 50)).await;
    Window::containing(now_ms(), window_len(WINDOW_SECS))
}

/// Produces `n` anonymous records in the current window; returns the true
/// count per (region, band, risk).
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    n: usize,
    truth: &mut BTreeMap<(i64, String, String, u8), i64>,
) -> Window {
    let res = RegionResolution::new(5).unwrap();
    let window = Window::containing(now_ms(), window_len(WINDOW_SECS));
    for i in 0..n {
        let record = CoarseRecord {
            window,
            window_length: window_len(WINDOW_SECS),
            region: RegionCell::from_coordinate(10.0 + (i % 7) as f64, 20.0, res).unwrap(),
            age_band: AgeBand::ALL[i % 6],
            risk: RiskLevel::ALL[i % 3],
            symptoms: SymptomSet::default(),
            contributor: ContributorKey(rand::random()),
        };
        let key = record.region.to_string();
        *truth
            .entry((
                window.start_ms,
                key.clone(),
                record.age_band.label().to_string(),
                record.risk.code(),
            ))
            .or_default() += 1;
        produce_sealed(producer, topic, &key, &record)
            .await
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    window
}

async fn wait_for_release(setup: &Setup, window: Window) -> anyhow::Result<()> {
    wait_until(
        &format!("window {} to be released", window.start_ms),
        Duration::from_secs(60),
        || async {
            let topic = setup.output.clone();
            let out =
                tokio::task::spawn_blocking(move || releases(&topic, Unreadable::Fail)).await??;
            Ok(out
                .iter()
                .any(|r| r.meta.window_start == window.start_ms)
                .then_some(()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_never_loses_or_repeats_a_release() -> anyhow::Result<()> {
    let setup = Setup {
        input: unique("test.eo.in"),
        output: unique("test.eo.out"),
        group: unique("test.eo.group"),
        txn: unique("test.eo.txn"),
    };
    create_topics(&[(&setup.input, 3), (&setup.output, 1)]).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .create()?;
    let mut truth = BTreeMap::new();

    // 1. Killed right after publishing window 1.
    let (a, _) = spawn_and_wait(&setup).await?;
    align_to_window_start().await;
    let w1 = produce(&producer, &setup.input, 300, &mut truth).await;
    wait_for_release(&setup, w1).await?;
    kill9(a);

    // 2. Killed in the middle of window 2, before it could close, with
    // window 2's records buffered.
    let (b, b_metrics) = spawn_and_wait(&setup).await?;
    align_to_window_start().await;
    let w2 = produce(&producer, &setup.input, 300, &mut truth).await;
    wait_until(
        "the instance to buffer window 2's 300 records",
        Duration::from_millis((w2.end_ms - now_ms()).max(0) as u64),
        || async {
            let accepted = counter(&b_metrics, "hushmap_aggregate_records_accepted_total").await?;
            Ok((accepted >= 300).then_some(()))
        },
    )
    .await?;
    assert!(now_ms() < w2.end_ms, "the kill must land inside window 2");
    kill9(b);

    // 3. A new instance finishes window 2 from Kafka, then does window 3.
    let c = spawn(&setup);
    wait_for_release(&setup, w2).await?;
    align_to_window_start().await;
    let w3 = produce(&producer, &setup.input, 200, &mut truth).await;
    wait_for_release(&setup, w3).await?;
    // Let a restarted instance see everything again: nothing may be
    // re-released. Once it has released the window it started in, it has
    // read everything and closed every window due.
    kill9(c);
    let port = free_port();
    let d = spawn_with_metrics(&setup, port);
    let d_started_in = Window::containing(now_ms(), window_len(WINDOW_SECS));
    wait_for_release(&setup, d_started_in).await?;
    // A record for a window already released is dropped, never folded in,
    // and counted in /metrics.
    let late = CoarseRecord {
        window: w1,
        window_length: window_len(WINDOW_SECS),
        region: RegionCell::from_coordinate(10.0, 20.0, RegionResolution::new(5).unwrap()).unwrap(),
        age_band: AgeBand::ALL[0],
        risk: RiskLevel::ALL[2],
        symptoms: SymptomSet::default(),
        contributor: ContributorKey(rand::random()),
    };
    produce_sealed(&producer, &setup.input, "late", &late).await?;
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let last = std::sync::Mutex::new(String::new());
    wait_until(
        "the late record to be counted",
        Duration::from_secs(20),
        || async {
            let text = reqwest::get(&metrics_url).await?.text().await?;
            let counted = text.contains("hushmap_aggregate_records_late_total 1");
            *last.lock().unwrap() = text;
            Ok(counted.then_some(()))
        },
    )
    .await
    .map_err(|e| {
        e.context(format!(
            "late record not counted:\n{}",
            last.lock().unwrap()
        ))
    })?;
    kill9(d);

    let out =
        tokio::task::spawn_blocking(move || releases(&setup.output, Unreadable::Fail)).await??;
    let mut per_window: BTreeMap<i64, usize> = BTreeMap::new();
    let mut released: BTreeMap<(i64, String, String, u8), i64> = BTreeMap::new();
    for r in &out {
        *per_window.entry(r.meta.window_start).or_default() += 1;
        // The release resolution; the coarser levels repeat the same counts.
        let finest = r.rows.iter().map(|x| x.level).max();
        for row in r.rows.iter().filter(|x| Some(x.level) == finest) {
            for (code, n) in [(0u8, row.n_low), (1, row.n_moderate), (2, row.n_high)] {
                if n > 0 {
                    *released
                        .entry((
                            row.window_start,
                            row.region.clone(),
                            row.age_band.clone(),
                            code,
                        ))
                        .or_default() += n;
                }
            }
        }
    }
    // The schedule began at the first window after the first start-up (at
    // or before window 1, which began once that instance was up) and went
    // on through every restart: each window since, empty or not.
    let starts: Vec<i64> = per_window.keys().copied().collect();
    let (first, last) = (starts[0], *starts.last().expect("releases"));
    assert!(first <= w1.start_ms && last >= w3.start_ms, "{starts:?}");
    let every: Vec<i64> = (first..=last)
        .step_by(window_len(WINDOW_SECS).millis() as usize)
        .collect();
    assert_eq!(
        starts, every,
        "a window was skipped or released out of schedule"
    );
    assert!(
        per_window.values().all(|n| *n == 1),
        "a window was released more than once: {per_window:?}"
    );
    assert_eq!(
        released, truth,
        "released counts differ from what was produced"
    );
    Ok(())
}
