//! Provisional numbers within a window, through real Kafka: the
//! aggregator publishes one provisional release per sub-window, by the
//! clock (also for a window nobody submitted in), each counting every
//! contributor once at their first record; the ledger charges the window
//! once; and a restart mid-window neither noises an interval again nor
//! skips a sub-window.

use crate::common;

use common::{Unreadable, releases, single_config, window_len};
use hushmap_aggregate::{AggregateConfig, Aggregator};
use hushmap_schema::region::RegionResolution;
use hushmap_schema::{
    AgeBand, CoarseRecord, ContributorKey, RegionCell, Release, RiskLevel, SymptomSet, Window,
    WindowLength,
};
use hushmap_testkit::{create_topics, now_ms, payload_public_key, producer, unique, wait_until};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Region resolution 5, two coarser levels: provisional numbers at 3.
const PROVISIONAL_LEVEL: u8 = 3;

struct Topics {
    submissions: String,
    releases: String,
    provisional: String,
}

async fn topics(prefix: &str) -> anyhow::Result<Topics> {
    let t = Topics {
        submissions: unique(&format!("test.{prefix}.in")),
        releases: unique(&format!("test.{prefix}.out")),
        provisional: unique(&format!("test.{prefix}.provisional")),
    };
    create_topics(&[(&t.submissions, 2), (&t.releases, 1), (&t.provisional, 1)]).await?;
    Ok(t)
}

/// A single-topology aggregator with `sub_windows` provisional sub-windows
/// per window of `window_secs`, a public area around Sydney, and ε huge
/// enough (when `exact`) that every count is exact.
fn config(
    t: &Topics,
    prefix: &str,
    window_secs: u32,
    sub_windows: u32,
    epoch: i64,
    exact: bool,
) -> anyhow::Result<AggregateConfig> {
    let mut c = single_config(&t.submissions, &t.releases, prefix, window_secs, epoch)?;
    c.kafka.provisional_topic = t.provisional.clone();
    c.privacy.provisional_share = 0.25;
    c.privacy.provisional_sub_window_secs = window_secs / sub_windows;
    c.privacy.public_bbox = Some([-34.0, 151.0, -30.5, 151.5]);
    if exact {
        c.privacy.epsilon_per_window = 1e6;
    }
    Ok(c)
}

fn record(
    window: Window,
    length: WindowLength,
    who: u8,
    lat: f64,
    risk: RiskLevel,
) -> CoarseRecord {
    CoarseRecord {
        window,
        window_length: length,
        region: RegionCell::from_coordinate(lat, 151.2, RegionResolution::new(5).unwrap()).unwrap(),
        age_band: AgeBand::ALL[usize::from(who) % 6],
        risk,
        symptoms: SymptomSet::default(),
        contributor: ContributorKey([who; 16]),
    }
}

/// Produces `record` sealed, as ingest would, once the clock reaches
/// `at_ms` (a real time, not a condition: the sub-windows are the
/// clock's). The broker stamps it as it appends it (the topic is
/// `LogAppendTime`, as the aggregator requires), and that stamp orders a
/// contributor's records and places them in sub-windows.
///
/// These tests once stamped their records ahead of time with the
/// producer's own timestamps, all produced before the window began; a
/// broker-stamped topic overwrites those, so records are now sent at their
/// times. Within a partition the broker's stamps follow the offsets, so a
/// contributor's later record can no longer carry an earlier time than one
/// before it (the old plan's contributor 3); the first-record order by
/// time, partition and offset is unit-tested in aggregate's
/// `first_record`.
async fn produce_at(
    producer: &FutureProducer,
    topic: &str,
    record: &CoarseRecord,
    at_ms: i64,
) -> anyhow::Result<()> {
    let wait = at_ms - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    let sealed = payload_public_key().seal(record);
    producer
        .send(
            FutureRecord::to(topic)
                .key(&record.region.to_string())
                .payload(&sealed[..]),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

type Running = tokio::task::JoinHandle<Result<(), hushmap_aggregate::AggregatorError>>;

/// Waits until `done` holds of the provisional and releases topics, while
/// the aggregator `running` runs (its error, if it stops, fails the wait).
async fn watch(
    t: &Topics,
    what: &str,
    running: &mut Running,
    done: impl Fn(&[Release], &[Release]) -> bool,
) -> anyhow::Result<(Vec<Release>, Vec<Release>)> {
    let running = tokio::sync::Mutex::new(running);
    wait_until(what, Duration::from_secs(90), || async {
        let mut running = running.lock().await;
        if running.is_finished() {
            anyhow::bail!(
                "the aggregator stopped while waiting for {what}: {:?}",
                (&mut **running).await
            );
        }
        let (p, r) = (t.provisional.clone(), t.releases.clone());
        // The provisional test has always left out what is not a release.
        let (provisional, releases) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            Ok((
                releases(&p, Unreadable::Skip)?,
                releases(&r, Unreadable::Skip)?,
            ))
        })
        .await??;
        Ok(done(&provisional, &releases).then_some((provisional, releases)))
    })
    .await
}

/// Per window start, its provisional releases by sub-windows counted.
fn by_sub_window(provisional: &[Release]) -> BTreeMap<i64, Vec<u32>> {
    let mut out: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for r in provisional {
        let p = r.meta.provisional.as_ref().expect("marked provisional");
        out.entry(r.meta.window_start)
            .or_default()
            .push(p.sub_windows_in);
    }
    out
}

/// (region at the provisional level, risk code) → count, of a release's rows.
fn counts(release: &Release) -> BTreeMap<(String, usize), i64> {
    let mut out = BTreeMap::new();
    for row in &release.rows {
        assert_eq!(
            (row.level, row.age_band.as_str()),
            (PROVISIONAL_LEVEL, "all")
        );
        for (k, n) in [row.n_low, row.n_moderate, row.n_high]
            .into_iter()
            .enumerate()
        {
            if n != 0 {
                out.insert((row.region.clone(), k), n);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisional_counts_are_each_first_record_so_far_and_come_by_the_clock()
-> anyhow::Result<()> {
    // Windows of 8 s in 4 sub-windows of 2 s; the schedule starts at the
    // next window, and every record below is sent in its sub-window.
    if std::env::var("HUSHMAP_LOG").is_ok() {
        hushmap_service::init_tracing();
    }
    let (window_secs, sub_windows) = (8u32, 4u32);
    let length = window_len(window_secs);
    let t = topics("provisional").await?;
    let epoch = Window::containing(now_ms() + 3_000, length).end_ms;
    let window = Window::from_start(epoch, length).unwrap();
    let sub = |s: i64| window.start_ms + s * 2_000 + 500;
    // (who, lat, risk, sub-window sent in), in the order sent; contributors
    // 1, 2 and 3 come back later, 1 and 2 from elsewhere.
    let plan: Vec<(u8, f64, RiskLevel, i64)> = vec![
        (1, -33.8, RiskLevel::High, 0),
        (2, -31.8, RiskLevel::Low, 0),
        (3, -33.8, RiskLevel::High, 1),
        (4, -31.8, RiskLevel::High, 1),
        (1, -30.8, RiskLevel::Low, 2),
        (3, -33.8, RiskLevel::Moderate, 3),
        (2, -33.8, RiskLevel::High, 3),
        (5, -30.8, RiskLevel::Moderate, 3),
    ];
    let aggregator = Aggregator::new(config(
        &t,
        "provisional",
        window_secs,
        sub_windows,
        epoch,
        true,
    )?)?;
    let stats = aggregator.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut running: Running = tokio::spawn(aggregator.run(async move {
        let _ = stopped.await;
    }));
    // One producer, connected before the first send is due.
    let producer = producer()?;
    let mut first: BTreeMap<u8, (i64, CoarseRecord)> = BTreeMap::new();
    for (who, lat, risk, s) in &plan {
        let r = record(window, length, *who, *lat, *risk);
        produce_at(&producer, &t.submissions, &r, sub(*s)).await?;
        let e = first.entry(*who).or_insert((*s, r));
        if *s < e.0 {
            *e = (*s, r);
        }
    }
    // The window with records and the one after it (nobody submitted).
    let next = window.end_ms;
    let (provisional, releases) = watch(
        &t,
        "two windows' provisional series and releases",
        &mut running,
        |p, r| {
            let subs = by_sub_window(p);
            subs.get(&next).is_some_and(|s| s.len() == 4)
                && r.iter().any(|r| r.meta.window_start == next)
        },
    )
    .await?;
    let _ = stop.send(());
    running.await??;

    // Each sub-window once, in order, for both windows alike: the schedule
    // is the clock's, not the data's.
    let subs = by_sub_window(&provisional);
    assert_eq!(subs[&window.start_ms], vec![1, 2, 3, 4]);
    assert_eq!(subs[&next], vec![1, 2, 3, 4]);
    for r in provisional
        .iter()
        .filter(|r| r.meta.window_start == window.start_ms)
    {
        let p = r.meta.provisional.as_ref().unwrap();
        let through = p.sub_windows_in as i64;
        assert_eq!(p.through_ms, window.start_ms + through * 2_000);
        let mut want: BTreeMap<(String, usize), i64> = BTreeMap::new();
        for (s, rec) in first.values() {
            if *s < through {
                let region = rec.region.parent(PROVISIONAL_LEVEL).unwrap().to_string();
                *want
                    .entry((region, usize::from(rec.risk.code())))
                    .or_default() += 1;
            }
        }
        assert_eq!(counts(r), want, "after {through} sub-windows");
        // Every public region, zeros included, every time.
        let regions: BTreeSet<&str> = r.rows.iter().map(|r| r.region.as_str()).collect();
        assert_eq!(regions.len(), r.rows.len());
    }
    let empty_window: Vec<&Release> = provisional
        .iter()
        .filter(|r| r.meta.window_start == next)
        .collect();
    assert!(empty_window.iter().all(|r| counts(r).is_empty()));
    assert_eq!(empty_window[0].rows.len(), provisional[0].rows.len());

    // The window is charged once, for both: the final release states the
    // whole cost, the provisional series among its statistics.
    let finals: Vec<&Release> = releases
        .iter()
        .filter(|r| r.meta.window_start == window.start_ms)
        .collect();
    assert_eq!(finals.len(), 1);
    let cost = &finals[0].meta;
    assert!(
        cost.statistic_costs
            .iter()
            .any(|c| c.statistic == "provisional_risk_counts")
    );
    for r in &provisional {
        assert_eq!((r.meta.epsilon, r.meta.rho), (cost.epsilon, cost.rho));
        assert_eq!(r.meta.ledger_entry, format!("w{}", r.meta.window_start));
    }
    // The final release keeps its own rule: latest record, all levels.
    let final_total: i64 = finals[0]
        .rows
        .iter()
        .filter(|r| r.level == 5)
        .map(|r| r.n_total)
        .sum();
    assert_eq!(final_total, first.len() as i64);
    assert!(
        stats
            .provisional_released
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 8
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_window_neither_noises_an_interval_again_nor_skips_a_sub_window()
-> anyhow::Result<()> {
    // One window of 12 s in 4 sub-windows of 3 s, at an ordinary ε: the
    // noise is visible, so a second draw of an interval would show.
    let (window_secs, sub_windows) = (12u32, 4u32);
    let length = window_len(window_secs);
    let t = topics("provisional-restart").await?;
    let epoch = Window::containing(now_ms() + 3_000, length).end_ms;
    let window = Window::from_start(epoch, length).unwrap();
    // Sent in their sub-windows (who % 4) while the instances below run,
    // crash and restart.
    let mut plan: Vec<(u8, i64)> = (0..20u8).map(|who| (who, i64::from(who % 4))).collect();
    plan.sort_by_key(|(who, s)| (*s, *who));
    let submissions = t.submissions.clone();
    let producer = producer()?;
    let sending = tokio::spawn(async move {
        for (who, s) in plan {
            let r = record(
                window,
                length,
                who,
                -33.8 + f64::from(who % 3),
                RiskLevel::ALL[usize::from(who) % 3],
            );
            produce_at(
                &producer,
                &submissions,
                &r,
                window.start_ms + s * 3_000 + 700,
            )
            .await?;
        }
        anyhow::Ok(())
    });
    let c = config(
        &t,
        "provisional-restart",
        window_secs,
        sub_windows,
        epoch,
        false,
    )?;

    // The first instance publishes two sub-windows, then dies without a
    // word (its task is aborted, as a crash would end it).
    let first = Aggregator::new(c.clone())?;
    let mut crashed: Running = tokio::spawn(first.run(std::future::pending::<()>()));
    watch(&t, "two provisional releases", &mut crashed, |p, _| {
        p.len() >= 2
    })
    .await?;
    crashed.abort();
    let _ = crashed.await;
    // Down across a sub-window's end (3 s): the next instance must catch
    // up. A deliberate outage length, not a wait for a condition.
    tokio::time::sleep(Duration::from_millis(3_500)).await;

    let second = Aggregator::new(c)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut running: Running = tokio::spawn(second.run(async move {
        let _ = stopped.await;
    }));
    let (provisional, releases) = watch(
        &t,
        "the whole series and the release",
        &mut running,
        |p, r| {
            by_sub_window(p)
                .get(&window.start_ms)
                .is_some_and(|s| s.len() >= 4)
                && r.iter().any(|r| r.meta.window_start == window.start_ms)
        },
    )
    .await?;
    let _ = stop.send(());
    running.await??;
    sending.await??;

    let series: Vec<&Release> = provisional
        .iter()
        .filter(|r| r.meta.window_start == window.start_ms)
        .collect();
    assert_eq!(
        by_sub_window(&provisional)[&window.start_ms],
        vec![1, 2, 3, 4],
        "each sub-window once, in order"
    );
    // Every interval of the tree noised exactly once across both instances.
    let mut intervals: Vec<(u32, u32)> = series
        .iter()
        .flat_map(|r| {
            r.meta
                .provisional
                .as_ref()
                .unwrap()
                .intervals
                .iter()
                .map(|i| (i.start, i.end))
        })
        .collect();
    intervals.sort();
    assert_eq!(
        intervals,
        vec![(0, 1), (0, 2), (0, 4), (1, 2), (2, 3), (2, 4), (3, 4)]
    );
    // And the window was charged once: one final release, the ledger entry
    // the series named.
    let finals: Vec<&Release> = releases
        .iter()
        .filter(|r| r.meta.window_start == window.start_ms)
        .collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].meta.ledger_entry, series[0].meta.ledger_entry);
    Ok(())
}
