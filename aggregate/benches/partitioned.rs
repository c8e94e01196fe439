//! Single vs partitioned aggregation: how fast each drains the same
//! backlog, from reading the first record to the last window published.
//!
//! ```text
//! deploy/kafka/up.sh
//! BENCH_RECORDS=600000 BENCH_INSTANCES="1 2 3" cargo bench -p hushmap-aggregate --bench partitioned
//! ```
//!
//! `BENCH_RECORDS` sealed records over 5 one-minute windows that ended
//! minutes ago, in time order (Kafka timestamps inside their windows, so
//! every record is on time and a window is due once read past), each
//! contributor twice per window (bounding keeps one), keyed by contributor
//! and window as ingest keys them, on a 6-partition topic. Then, each on its own
//! topics and groups:
//! - `single`: one [`Aggregator`], until it has published all 5 windows;
//! - `partitioned_k`: k [`PartitionedAggregator`]s, each on its own thread
//!   and runtime as separate processes would be, until all 5 windows are
//!   published in all their parts (6 shards).
//!
//! Timed from the first record accepted (so joining the consumer groups is
//! left out) to the last publication, in wall-clock seconds and in CPU
//! seconds of this process (every aggregator thread; not the broker's).
//! Everything shares this machine's cores with the broker.

use hushmap_aggregate::AggregatorStats;
use hushmap_aggregate::{AggregateConfig, Aggregator, PartitionedAggregator, Topology};
use hushmap_schema::{
    AgeBand, CoarseRecord, ContributorKey, RiskLevel, SymptomSet, Window, WindowLength,
};
use hushmap_testkit::{
    brokers, create_topics, create_topics_configured, now_ms, payload_keyring, unique,
};
use rdkafka::producer::FutureRecord;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod support;
use support::env_usize;
#[path = "support/backlog.rs"]
mod backlog;
use backlog::Backlog;

const WINDOWS: i64 = 5;
const PARTITIONS: i32 = 6;
const WINDOW_SECS: u32 = 60;

/// Produces the backlog; returns the number of distinct (contributor,
/// window) pairs, which is what a release counts.
async fn produce(topic: &str, n: usize, first: i64) -> anyhow::Result<usize> {
    let mut backlog = Backlog::new()?;
    let len = WindowLength::from_secs(WINDOW_SECS).expect("non-zero");
    let regions = backlog::regions()?;
    let sealer = backlog::ingest_sealer();
    // In time order, as ingest produces: window after window, each
    // contributor twice per window (bounding keeps one).
    let per_window = n / WINDOWS as usize;
    for i in 0..per_window * WINDOWS as usize {
        let (w, j) = ((i / per_window) as i64, i % per_window);
        let window = Window::from_start(first + w * len.millis(), len).expect("aligned");
        let contributor = (j / 2) as u128;
        let record = CoarseRecord {
            window,
            window_length: len,
            region: regions[(j / 7) % regions.len()],
            age_band: AgeBand::ALL[j % 6],
            risk: RiskLevel::ALL[j % 3],
            symptoms: SymptomSet::default(),
            contributor: ContributorKey(contributor.to_le_bytes()),
        };
        let key = format!("{contributor:x}-{w}");
        let at = window.start_ms + (j as i64) * 50_000 / per_window as i64;
        let payload = sealer.seal(&record);
        backlog
            .send(
                FutureRecord::to(topic)
                    .key(&key)
                    .payload(&payload)
                    .timestamp(at),
            )
            .await?;
    }
    backlog.acknowledged().await?;
    Ok(WINDOWS as usize * per_window.div_ceil(2))
}

/// Each aggregator's settings; the release schedule starts at the
/// backlog's first window (without an epoch it would start after start-up,
/// and every record of the backlog would be late; the partitioned topology
/// requires one).
async fn config(topic: &str, topology: Topology, first: i64) -> anyhow::Result<AggregateConfig> {
    let mut config = AggregateConfig {
        payload_keys: Some(payload_keyring()),
        schedule_epoch: Some(first.to_string()),
        dev_mode: true,
        window_secs: WINDOW_SECS,
        allowed_lateness_secs: 10,
        tick_ms: 100,
        topology,
        ..AggregateConfig::default()
    };
    config.privacy.max_epsilon_per_day = 1e6;
    config.privacy.max_epsilon_per_horizon = 1e6;
    config.kafka.brokers = brokers();
    config.kafka.input_topic = topic.to_string();
    config.kafka.bounded_topic = unique("bench.bounded");
    config.kafka.output_topic = unique("bench.releases");
    config.kafka.group_id = unique("bench.aggregate");
    config.kafka.transactional_id = unique("bench.txn");
    config.kafka.session_timeout_ms = 6_000;
    // The backlog is a recording of past windows, stamped by its producer
    // (its topic is CreateTime): read as it is, which dev mode alone allows.
    config.kafka.trust_producer_timestamps = true;
    config.metrics_listen = "127.0.0.1:0".parse()?;
    create_topics(&[
        (&config.kafka.output_topic, 1),
        (&config.kafka.bounded_topic, PARTITIONS),
    ])
    .await?;
    Ok(config)
}

/// CPU seconds this process has used (all threads: the aggregators and
/// their librdkafka threads; the broker is another process).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the
    // 12th, stime the 13th, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `instances` aggregators on threads of their own until `done`
/// holds for their summed stats; the time from the first accepted record.
fn race(
    configs: Vec<AggregateConfig>,
    done: impl Fn(u64) -> bool,
) -> anyhow::Result<(Duration, u64, f64)> {
    let (stats_tx, stats_rx) = std::sync::mpsc::channel::<Arc<AggregatorStats>>();
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut threads = Vec::new();
    for config in configs {
        let stats_tx = stats_tx.clone();
        let mut stop = stop_tx.subscribe();
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let stop = async move {
                    let _ = stop.recv().await;
                };
                match config.topology {
                    Topology::Single => {
                        let a = Aggregator::new(config)?;
                        stats_tx.send(a.stats())?;
                        a.run(stop).await?;
                    }
                    Topology::Partitioned => {
                        let a = PartitionedAggregator::new(config)?;
                        stats_tx.send(a.stats())?;
                        a.run(stop).await?;
                    }
                }
                anyhow::Ok(())
            })
        }));
    }
    drop(stats_tx);
    let stats: Vec<Arc<AggregatorStats>> = stats_rx.iter().take(threads.len()).collect();
    let sum = |f: fn(&AggregatorStats) -> u64| stats.iter().map(|s| f(s)).sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(600);
    while sum(|s| s.records_accepted.load(Ordering::Relaxed)) == 0 {
        anyhow::ensure!(Instant::now() < deadline, "nothing accepted");
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    let cpu_at_start = cpu_secs();
    while !done(sum(|s| s.windows_released.load(Ordering::Relaxed))) {
        anyhow::ensure!(Instant::now() < deadline, "not everything was published");
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    let cpu = cpu_secs() - cpu_at_start;
    let accepted = sum(|s| s.records_accepted.load(Ordering::Relaxed));
    let _ = stop_tx.send(());
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("an aggregator thread panicked"))??;
    }
    Ok((elapsed, accepted, cpu))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The services' own logs, on stderr, when asked for (HUSHMAP_LOG=info).
    if std::env::var_os("HUSHMAP_LOG").is_some() {
        hushmap_service::init_tracing();
    }
    let n = env_usize("BENCH_RECORDS", 600_000);
    let instances: Vec<usize> = std::env::var("BENCH_INSTANCES")
        .unwrap_or_else(|_| "1 2 3".into())
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    let topic = unique("bench.part.submissions");
    // CreateTime: the records keep the stamps `produce` gives them, inside
    // their past windows (a broker-stamped topic would stamp them now, and
    // every one would be late).
    create_topics_configured(
        &brokers(),
        &[(&topic, PARTITIONS)],
        &[("message.timestamp.type", "CreateTime")],
    )
    .await?;
    eprintln!("bench: producing {n} records over {WINDOWS} windows to {topic}");
    let len = WindowLength::from_secs(WINDOW_SECS).expect("non-zero");
    let first = Window::containing(now_ms() - 20 * 60_000, len).start_ms;
    let counted = produce(&topic, n, first).await?;
    let n = n / WINDOWS as usize * WINDOWS as usize;
    println!("records,{n}");
    println!("counted_after_bounding,{counted}");

    let single = vec![config(&topic, Topology::Single, first).await?];
    let (t, accepted, cpu) =
        tokio::task::spawn_blocking(move || race(single, |w| w >= WINDOWS as u64)).await??;
    anyhow::ensure!(accepted == n as u64, "single accepted {accepted} of {n}");
    println!("single_s,{:.2}", t.as_secs_f64());
    println!("single_records_per_s,{:.0}", n as f64 / t.as_secs_f64());
    println!("single_cpu_s,{cpu:.2}");
    println!("single_records_per_cpu_s,{:.0}", n as f64 / cpu);

    for k in instances {
        let base = config(&topic, Topology::Partitioned, first).await?;
        let configs: Vec<AggregateConfig> = (0..k)
            .map(|i| {
                let mut c = base.clone();
                c.kafka.instance_id = Some(format!("bench{i}"));
                c
            })
            .collect();
        let parts = WINDOWS as u64 * PARTITIONS as u64;
        let (t, accepted, cpu) =
            tokio::task::spawn_blocking(move || race(configs, move |w| w >= parts)).await??;
        // More than n when a rebalance made a new owner read a partition again.
        anyhow::ensure!(
            accepted >= n as u64,
            "{k} instances accepted {accepted} of {n}"
        );
        println!("partitioned_{k}_records_read,{accepted}");
        println!("partitioned_{k}_s,{:.2}", t.as_secs_f64());
        println!(
            "partitioned_{k}_records_per_s,{:.0}",
            n as f64 / t.as_secs_f64()
        );
        println!("partitioned_{k}_cpu_s,{cpu:.2}");
        println!("partitioned_{k}_records_per_cpu_s,{:.0}", n as f64 / cpu);
    }
    Ok(())
}
