//! What the aggregator's test modules share: window lengths and the
//! releases on a topic; and for the partitioned-aggregation tests, an
//! in-process aggregator's configuration on fresh topics, records that the
//! huge test ε counts exactly, and a watch on the releases topic.

use hushmap_aggregate::{AggregateConfig, PartitionedAggregator, Topology};
use hushmap_schema::region::RegionResolution;
use hushmap_schema::{
    AgeBand, CoarseRecord, ContributorKey, RegionCell, Release, RiskLevel, SymptomSet, Window,
    WindowLength,
};
use hushmap_testkit::{
    brokers, committed_records_on, create_topics, current_window_start, now_ms, payload_keyring,
    unique, wait_until,
};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Short windows: a test sees several released within seconds.
pub const WINDOW_SECS: u32 = 4;
/// Partitions of the submissions and the bounded topic alike.
pub const PARTITIONS: i32 = 2;

/// The three topics of one partitioned run, created fresh.
pub struct Topics {
    pub submissions: String,
    pub bounded: String,
    pub releases: String,
}

impl Topics {
    pub async fn create(prefix: &str) -> anyhow::Result<Topics> {
        let topics = Topics {
            submissions: unique(&format!("test.{prefix}.in")),
            bounded: unique(&format!("test.{prefix}.bounded")),
            releases: unique(&format!("test.{prefix}.out")),
        };
        create_topics(&[
            (&topics.submissions, PARTITIONS),
            (&topics.bounded, PARTITIONS),
            (&topics.releases, 1),
        ])
        .await?;
        Ok(topics)
    }
}

/// A single-topology instance reading `input` and releasing to `output`
/// in windows of `window_secs` scheduled from `epoch`: dev mode, sealed
/// records, 100 ms ticks, a group and transactional id of its own (named
/// after `prefix`), and a budget no test exhausts (ε per window stays the
/// default: a test that wants exact counts raises it).
pub fn single_config(
    input: &str,
    output: &str,
    prefix: &str,
    window_secs: u32,
    epoch: i64,
) -> anyhow::Result<AggregateConfig> {
    let mut config = AggregateConfig {
        dev_mode: true,
        window_secs,
        allowed_lateness_secs: 1,
        tick_ms: 100,
        metrics_listen: "127.0.0.1:0".parse()?,
        payload_keys: Some(payload_keyring()),
        schedule_epoch: Some(epoch.to_string()),
        ..AggregateConfig::default()
    };
    config.kafka.brokers = brokers();
    config.kafka.input_topic = input.into();
    config.kafka.output_topic = output.into();
    config.kafka.group_id = unique(&format!("test.{prefix}.group"));
    config.kafka.transactional_id = unique(&format!("test.{prefix}.txn"));
    config.kafka.transaction_timeout_ms = 10_000;
    config.privacy.max_epsilon_per_day = 1e12;
    config.privacy.max_epsilon_per_horizon = 1e12;
    config.privacy.max_delta_per_horizon = 9e-4;
    Ok(config)
}

/// One partitioned instance on `topics`, scheduled from the current window,
/// with an ε so large that every released count is exact and a public area
/// holding every record of [`record`].
pub fn partitioned_config(topics: &Topics, prefix: &str) -> anyhow::Result<AggregateConfig> {
    let mut config = single_config(
        &topics.submissions,
        &topics.releases,
        prefix,
        WINDOW_SECS,
        current_window_start(WINDOW_SECS),
    )?;
    config.topology = Topology::Partitioned;
    config.tick_ms = 200;
    config.kafka.bounded_topic = topics.bounded.clone();
    config.kafka.instance_id = Some("only".into());
    config.privacy.epsilon_per_window = 1e6;
    config.privacy.public_bbox = Some([-34.0, 151.0, -30.5, 151.5]);
    Ok(config)
}

/// The window length of `secs` seconds (each module has its own: 4 s
/// here, [`WINDOW_SECS`], and others elsewhere).
pub fn window_len(secs: u32) -> WindowLength {
    WindowLength::from_secs(secs).unwrap()
}

/// The current window.
pub fn current_window() -> Window {
    Window::containing(now_ms(), window_len(WINDOW_SECS))
}

/// Record `i` of `window`: its own contributor, spread over four cells of
/// the public area.
pub fn record(window: Window, i: u8) -> CoarseRecord {
    CoarseRecord {
        window,
        window_length: window_len(WINDOW_SECS),
        region: RegionCell::from_coordinate(
            -33.8 + f64::from(i % 4),
            151.2,
            RegionResolution::new(5).unwrap(),
        )
        .unwrap(),
        age_band: AgeBand::ALL[usize::from(i) % 6],
        risk: RiskLevel::ALL[usize::from(i) % 3],
        symptoms: SymptomSet::default(),
        contributor: ContributorKey([i; 16]),
    }
}

/// What [`releases`] does with a record that does not parse as a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Fails the read: a topic the test expects to hold releases only.
    Fail,
    /// Leaves it out (as the provisional test and [`watch_releases`]
    /// always have).
    Skip,
}

/// Every committed release on `topic` (read as downstream
/// `read_committed` consumers read it), in offset order. Blocking: run it
/// off the runtime.
pub fn releases(topic: &str, unreadable: Unreadable) -> anyhow::Result<Vec<Release>> {
    let mut out = Vec::new();
    for (_, payload) in committed_records_on(&brokers(), topic)? {
        match (Release::from_ipc(&payload), unreadable) {
            (Ok(release), _) => out.push(release),
            (Err(e), Unreadable::Fail) => return Err(e.into()),
            (Err(_), Unreadable::Skip) => {}
        }
    }
    Ok(out)
}

/// A part on the releases topic and when this watch first saw it (ms).
pub struct SeenPart {
    pub release: Release,
    pub first_seen_ms: i64,
}

/// Watches the releases topic (committed records only) until `windows`
/// windows have a part from every shard, and returns every record of the
/// last read (a part published twice is there twice), each with the time
/// its part was first seen.
pub async fn watch_releases(topic: &str, windows: usize) -> anyhow::Result<Vec<SeenPart>> {
    let first_seen: Mutex<BTreeMap<(i64, u32), i64>> = Mutex::default();
    wait_until(
        &format!("{windows} whole windows on {topic}"),
        Duration::from_secs(90),
        || async {
            let t = topic.to_string();
            let releases =
                tokio::task::spawn_blocking(move || releases(&t, Unreadable::Skip)).await??;
            let now = now_ms();
            let mut first_seen = first_seen.lock().unwrap();
            for r in &releases {
                first_seen
                    .entry((r.meta.window_start, r.meta.part.index))
                    .or_insert(now);
            }
            let mut per_window: BTreeMap<i64, usize> = BTreeMap::new();
            for (window, _) in first_seen.keys() {
                *per_window.entry(*window).or_default() += 1;
            }
            let whole = per_window
                .values()
                .filter(|n| **n >= PARTITIONS as usize)
                .count();
            Ok((whole >= windows).then(|| {
                releases
                    .into_iter()
                    .map(|release| SeenPart {
                        first_seen_ms: first_seen
                            [&(release.meta.window_start, release.meta.part.index)],
                        release,
                    })
                    .collect()
            }))
        },
    )
    .await
}

/// The exact number of records a window's parts counted at the finest level.
pub fn counted(parts: &[SeenPart], window: Window) -> i64 {
    parts
        .iter()
        .map(|p| &p.release)
        .filter(|r| r.meta.window_start == window.start_ms)
        .flat_map(|r| r.rows.iter())
        .filter(|r| r.level == 5)
        .map(|r| r.n_total)
        .sum()
}

/// Runs `aggregator` beside `steps` in this task (its future is not Send),
/// stops it once the steps are done, and returns what they returned. An
/// aggregator that failed fails the test first.
pub async fn run_beside<T>(
    aggregator: PartitionedAggregator,
    steps: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = aggregator.run(async move {
        let _ = stopped.await;
    });
    let (ran, result) = tokio::join!(running, async {
        let result = steps.await;
        let _ = stop.send(());
        result
    });
    ran?;
    result
}
