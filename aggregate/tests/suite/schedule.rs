//! Which windows the streaming aggregator releases depends on the clock,
//! never on the data. Real broker, in-process aggregators.
//!
//! - Neighbouring datasets: `D` has one submission in window 1, `D'` the
//!   same and one more in window 2. Two aggregators, one per dataset,
//!   release exactly the same windows (every window of the schedule, the
//!   empty ones included).
//! - Downtime: an aggregator stopped for longer than its replay horizon
//!   publishes the windows it missed without data, marked `missed`, at no
//!   cost, and counts the windows after them; none is skipped.

use crate::common;

use common::{Unreadable, releases, single_config, window_len};
use hushmap_aggregate::{AggregateConfig, Aggregator};
use hushmap_schema::region::RegionResolution;
use hushmap_schema::release::Coverage;
use hushmap_schema::{
    AgeBand, CoarseRecord, ContributorKey, RegionCell, Release, RiskLevel, Symptom, SymptomSet,
    Window,
};
use hushmap_testkit::{create_topics, now_ms, produce_sealed, producer, unique, wait_until};
use rdkafka::producer::{FutureProducer, Producer};
use std::time::Duration;

const WINDOW_SECS: u32 = 3;

struct Deployment {
    input: String,
    output: String,
    config: AggregateConfig,
}

/// A deployment of its own (topics, group, transactional id) whose
/// schedule starts at `epoch`.
async fn deployment(epoch: i64) -> anyhow::Result<Deployment> {
    let (input, output) = (unique("test.sched.in"), unique("test.sched.out"));
    create_topics(&[(&input, 2), (&output, 1)]).await?;
    // ε = 1 and threshold selection: the realistic case, where one person
    // alone never makes a region appear.
    let config = single_config(&input, &output, "sched", WINDOW_SECS, epoch)?;
    Ok(Deployment {
        input,
        output,
        config,
    })
}

/// Runs an aggregator of `d` until the returned sender fires.
fn start(
    d: &Deployment,
) -> anyhow::Result<(
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
)> {
    let aggregator = Aggregator::new(d.config.clone())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        Ok(aggregator
            .run(async move {
                let _ = stopped.await;
            })
            .await?)
    });
    Ok((stop, task))
}

async fn submit(
    producer: &FutureProducer,
    topic: &str,
    window: Window,
    who: u8,
) -> anyhow::Result<()> {
    let record = CoarseRecord {
        window,
        window_length: window_len(WINDOW_SECS),
        region: RegionCell::from_coordinate(-33.87, 151.21, RegionResolution::new(5).unwrap())?,
        age_band: AgeBand::From75,
        risk: RiskLevel::High,
        symptoms: [Symptom::Fever].into_iter().collect::<SymptomSet>(),
        contributor: ContributorKey([who; 16]),
    };
    produce_sealed(producer, topic, &format!("c{who}"), &record).await?;
    producer.flush(Duration::from_secs(10))?;
    Ok(())
}

/// Waits until `topic` holds a release of every window starting before
/// `until`; returns them all.
async fn released_through(topic: &str, until: i64) -> anyhow::Result<Vec<Release>> {
    wait_until(
        "the windows to be released",
        Duration::from_secs(60),
        || {
            let topic = topic.to_string();
            async move {
                let all = tokio::task::spawn_blocking(move || releases(&topic, Unreadable::Fail))
                    .await??;
                let last = all
                    .iter()
                    .map(|r| r.meta.window_end)
                    .max()
                    .unwrap_or(i64::MIN);
                Ok((last >= until).then_some(all))
            }
        },
    )
    .await
}

/// Sleeps until the clock reads `t_ms` (and 20 ms more). Real time by
/// design, not a condition: the schedule under test is the clock's.
async fn sleep_until(t_ms: i64) {
    tokio::time::sleep(Duration::from_millis((t_ms - now_ms()).max(0) as u64 + 20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neighbouring_datasets_release_the_same_windows() -> anyhow::Result<()> {
    let len = window_len(WINDOW_SECS).millis();
    // The schedule starts at the next window, for both.
    let epoch = Window::containing(now_ms(), window_len(WINDOW_SECS)).end_ms;
    let (d, d_prime) = (deployment(epoch).await?, deployment(epoch).await?);
    let (stop_d, task_d) = start(&d)?;
    let (stop_p, task_p) = start(&d_prime)?;
    let producer = producer()?;
    // Window 1: the same person in both. Window 2: one more person in D'.
    sleep_until(epoch).await;
    let w1 = Window::containing(now_ms(), window_len(WINDOW_SECS));
    submit(&producer, &d.input, w1, 1).await?;
    submit(&producer, &d_prime.input, w1, 1).await?;
    sleep_until(w1.end_ms).await;
    let w2 = Window::containing(now_ms(), window_len(WINDOW_SECS));
    submit(&producer, &d_prime.input, w2, 2).await?;
    let until = epoch + 4 * len;
    let (in_d, in_d_prime) = (
        released_through(&d.output, until).await?,
        released_through(&d_prime.output, until).await?,
    );
    for stop in [stop_d, stop_p] {
        let _ = stop.send(());
    }
    task_d.await??;
    task_p.await??;

    let windows = |rs: &[Release]| -> Vec<i64> {
        let mut w: Vec<i64> = rs
            .iter()
            .map(|r| r.meta.window_start)
            .filter(|s| *s < until)
            .collect();
        w.sort_unstable();
        w
    };
    let every: Vec<i64> = (0..4).map(|k| epoch + k * len).collect();
    assert_eq!(windows(&in_d), every, "D: every window of the schedule");
    assert_eq!(windows(&in_d_prime), every, "D': the same windows");
    // The window only D' has someone in is released by D as well, and at
    // the same cost.
    let cost = |rs: &[Release], w: i64| {
        let r = rs.iter().find(|r| r.meta.window_start == w).unwrap();
        (r.meta.rho, r.meta.epsilon, r.meta.delta, r.meta.coverage)
    };
    assert_eq!(cost(&in_d, w2.start_ms), cost(&in_d_prime, w2.start_ms));
    assert_eq!(cost(&in_d, w2.start_ms).3, Coverage::Complete);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_missed_while_down_are_published_as_missed_and_none_is_skipped()
-> anyhow::Result<()> {
    let len = window_len(WINDOW_SECS).millis();
    let epoch = Window::containing(now_ms(), window_len(WINDOW_SECS)).end_ms;
    let mut d = deployment(epoch).await?;
    // Records are surely on the topic only for 0 s after a window's
    // deadline: any window whose deadline passed before a start-up is
    // missed by it.
    d.config.replay_horizon_secs = 0;
    let (stop, task) = start(&d)?;
    let first = released_through(&d.output, epoch + 2 * len).await?;
    let _ = stop.send(());
    task.await??;
    let stopped_at = first.iter().map(|r| r.meta.window_end).max().unwrap();
    // Down for three windows, during which someone submits.
    let producer = producer()?;
    sleep_until(stopped_at + len).await;
    submit(
        &producer,
        &d.input,
        Window::containing(now_ms(), window_len(WINDOW_SECS)),
        7,
    )
    .await?;
    sleep_until(stopped_at + 3 * len + 1_500).await;
    let restarted_at = now_ms();
    let (stop, task) = start(&d)?;
    let all = released_through(&d.output, restarted_at + 2 * len).await?;
    let _ = stop.send(());
    task.await??;

    let mut starts: Vec<i64> = all.iter().map(|r| r.meta.window_start).collect();
    starts.sort_unstable();
    starts.dedup();
    assert_eq!(starts.len(), all.len(), "a window was released twice");
    let every: Vec<i64> = (0..starts.len() as i64).map(|k| epoch + k * len).collect();
    assert_eq!(starts, every, "a window was skipped");
    for r in &all {
        let deadline = r.meta.window_end + 1_000;
        if deadline <= restarted_at && r.meta.window_start >= stopped_at {
            // Missed while down: no data, no cost, marked.
            assert_eq!(
                r.meta.coverage,
                Coverage::Missed,
                "window {}",
                r.meta.window_start
            );
            assert!(r.rows.is_empty());
            assert_eq!((r.meta.epsilon, r.meta.delta), (0.0, 0.0));
        } else {
            assert_eq!(
                r.meta.coverage,
                Coverage::Complete,
                "window {}",
                r.meta.window_start
            );
            assert!(r.meta.epsilon > 0.0);
        }
    }
    assert!(
        all.iter()
            .filter(|r| r.meta.coverage == Coverage::Missed)
            .count()
            >= 2,
        "the downtime's windows"
    );
    Ok(())
}

/// The default epoch (the first window at or after the first start-up) is
/// kept in the commit metadata: an aggregator stopped before its first
/// release and started again windows later still releases from that first
/// epoch, every window, none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_epoch_survives_a_restart_before_the_first_release() -> anyhow::Result<()> {
    let len = window_len(WINDOW_SECS).millis();
    let mut d = deployment(0).await?;
    d.config.schedule_epoch = None;
    let before = now_ms();
    let first = Aggregator::new(d.config.clone())?;
    let epoch = first.schedule_epoch();
    assert!(
        epoch >= before && epoch < now_ms() + len && epoch % len == 0,
        "the default epoch is the first window at or after start-up"
    );
    drop(first);
    let topic = d.output.clone();
    assert!(
        tokio::task::spawn_blocking(move || releases(&topic, Unreadable::Fail))
            .await??
            .is_empty()
    );
    // Started again two windows later: its own default would be later.
    sleep_until(epoch + 2 * len + 200).await;
    let (stop, task) = start(&d)?;
    let all = released_through(&d.output, epoch + 4 * len).await?;
    let _ = stop.send(());
    task.await??;
    let mut starts: Vec<i64> = all.iter().map(|r| r.meta.window_start).collect();
    starts.sort_unstable();
    let every: Vec<i64> = (0..starts.len() as i64).map(|k| epoch + k * len).collect();
    assert_eq!(
        starts, every,
        "every window from the first start-up's epoch"
    );
    Ok(())
}
