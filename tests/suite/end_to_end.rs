//! End to end against the real broker: submissions in over HTTP, releases
//! out of the dashboard API.
//!
//! Needs Kafka on `HUSHMAP_TEST_KAFKA` (default 127.0.0.1:9092); the README's
//! test command starts it with `deploy/kafka/up.sh`.

use futures::stream::{self, StreamExt};
use hushmap_schema::submission::Submission;
use hushmap_schema::{AgeBand, RiskLevel};
use hushmap_testkit::now_ms;
use hushmap_tests::{Pipeline, PipelineOptions, public_regions_of, raw_topic_bytes, wait_until};
use hushmap_traffic::{SubmissionGenerator, TrafficProfile};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SUBMISSIONS: usize = 2000;

type CellKey = (String, String); // (region, age band)

/// Posts every submission (16 at a time); returns the accepted ones with
/// the region and risk the service answered.
async fn post_all(
    client: &reqwest::Client,
    url: &str,
    subs: Vec<Submission>,
) -> Vec<(Submission, String, RiskLevel)> {
    stream::iter(subs)
        .map(|s| async move {
            let resp = client
                .post(format!("{url}/v1/submissions"))
                .json(&s)
                .send()
                .await
                .expect("ingest reachable");
            assert_eq!(
                resp.status().as_u16(),
                202,
                "valid submission refused: {:?}",
                resp.text().await
            );
            let body: Value = resp.json().await.unwrap();
            let region = body["region"].as_str().unwrap().to_string();
            let risk: RiskLevel = serde_json::from_value(body["risk"].clone()).unwrap();
            assert!(!body["advice"].as_str().unwrap().is_empty());
            (s, region, risk)
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Sends the contract's invalid requests; each must get its documented error.
async fn post_invalid(client: &reqwest::Client, url: &str, valid: &Submission) {
    let endpoint = format!("{url}/v1/submissions");
    let json = serde_json::to_value(valid).unwrap();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = json.clone();
        f(&mut v);
        v.to_string()
    };
    let cases: Vec<(String, &str, u16, &str, Option<&str>)> = vec![
        (
            "{\"for\": \"self\",".into(),
            "application/json",
            400,
            "malformed_json",
            None,
        ),
        (
            with(&|v| v["ip_address"] = "203.0.113.9".into()),
            "application/json",
            400,
            "unknown_field",
            Some("ip_address"),
        ),
        (
            with(&|v| drop(v.as_object_mut().unwrap().remove("gender"))),
            "application/json",
            422,
            "missing_field",
            Some("gender"),
        ),
        (
            with(&|v| v["age"] = 130.into()),
            "application/json",
            422,
            "invalid_value",
            Some("age"),
        ),
        (
            with(&|v| v["symptoms"] = serde_json::json!(["fever", "fever"])),
            "application/json",
            422,
            "invalid_value",
            Some("symptoms[1]"),
        ),
        (
            with(&|v| v["region"] = "85608b0bfffffff".into()),
            "application/json",
            422,
            "invalid_value",
            Some("region"),
        ),
        (
            with(&|v| v["location"]["lat"] = 123.0.into()),
            "application/json",
            422,
            "invalid_value",
            Some("location.lat"),
        ),
        (
            json.to_string(),
            "text/plain",
            415,
            "unsupported_media_type",
            None,
        ),
        (
            format!("{{\"pad\": \"{}\"}}", "x".repeat(20_000)),
            "application/json",
            413,
            "payload_too_large",
            None,
        ),
    ];
    for (body, content_type, status, code, field) in cases {
        let resp = client
            .post(&endpoint)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "expected {code}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let problem: Value = resp.json().await.unwrap();
        assert_eq!(problem["code"], code);
        assert_eq!(problem["status"], status);
        assert_eq!(problem["type"], format!("/errors/{code}"));
        assert_eq!(problem["field"].as_str(), field, "field of {code}");
    }
}

/// Per (region, band): [low, moderate, high] as published, over `windows`.
async fn released_counts(
    client: &reqwest::Client,
    dashboard: &str,
    windows: &BTreeSet<i64>,
) -> anyhow::Result<BTreeMap<CellKey, [i64; 3]>> {
    let mut out = BTreeMap::new();
    for w in windows {
        for band in AgeBand::ALL {
            let url = format!(
                "{dashboard}/api/v1/heatmap?window={w}&age_band={}",
                urlencode(band.label())
            );
            let resp = client.get(&url).send().await?;
            anyhow::ensure!(resp.status().is_success(), "{url}: {}", resp.status());
            let body: Value = resp.json().await?;
            // The default mechanism: discrete Gaussian under zCDP, with ρ
            // and the δ at which ε is stated.
            assert_eq!(body["meta"]["mechanism"], "discrete_gaussian");
            assert!(body["meta"]["rho"].as_f64().is_some_and(|r| r > 0.0));
            assert!(body["meta"]["delta"].as_f64().is_some_and(|d| d > 0.0));
            for cell in body["cells"].as_array().unwrap() {
                let key = (
                    cell["region"].as_str().unwrap().to_string(),
                    band.label().to_string(),
                );
                let e = out.entry(key).or_insert([0i64; 3]);
                e[0] += cell["n_low"].as_i64().unwrap();
                e[1] += cell["n_moderate"].as_i64().unwrap();
                e[2] += cell["n_high"].as_i64().unwrap();
                // Every published number carries its uncertainty.
                assert!(cell["noise_scale"].as_f64().unwrap() >= 0.0);
                assert!(
                    cell["high_share_ci_low"].as_f64().unwrap()
                        <= cell["high_share_ci_high"].as_f64().unwrap()
                );
            }
        }
    }
    Ok(out)
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B")
}

/// Waits until the aggregator has every accepted record, has closed and
/// published every window, and the dashboard lists them all; returns the
/// released window starts.
async fn wait_for_releases(
    client: &reqwest::Client,
    pipeline: &Pipeline,
    accepted: u64,
) -> anyhow::Result<BTreeSet<i64>> {
    let stats = pipeline.aggregator_stats.clone();
    wait_until(
        "aggregator to publish every window",
        Duration::from_secs(90),
        || {
            let stats = stats.clone();
            async move {
                let done = stats.records_accepted.load(Ordering::Relaxed) == accepted
                    && stats.open_windows.load(Ordering::Relaxed) == 0
                    && stats.pending_releases.load(Ordering::Relaxed) == 0;
                Ok(done.then_some(()))
            }
        },
    )
    .await?;
    let released = stats.windows_released.load(Ordering::Relaxed) as usize;
    wait_until(
        "dashboard to list every release",
        Duration::from_secs(30),
        || async {
            let body: Value = client
                .get(format!("{}/api/v1/releases", pipeline.dashboard_url))
                .send()
                .await?
                .json()
                .await?;
            let listed: BTreeSet<i64> = body["releases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["window_start"].as_i64().unwrap())
                .collect();
            // Windows keep coming (every window is released, empty or
            // not): at least those released when the data was done.
            Ok((listed.len() >= released).then_some(listed))
        },
    )
    .await
}

struct RunResult {
    expected: BTreeMap<CellKey, [i64; 3]>,
    released: BTreeMap<CellKey, [i64; 3]>,
    windows: BTreeSet<i64>,
    /// The accepted submissions, and the public region set they were released over.
    submissions: Vec<Submission>,
    public_regions: Vec<String>,
    sent_coordinates: Vec<(f64, f64)>,
    pipeline: Pipeline,
}

/// How regions are chosen in a run.
#[derive(Clone, Copy, PartialEq)]
enum Regions {
    /// A public set: the cells the run's submissions fall in, so every
    /// count can be checked exactly.
    PublicSet,
    /// The default: OpenDP's threshold on each region's noisy total.
    Threshold,
}

async fn run(epsilon: f64, seed: u64, regions: Regions) -> anyhow::Result<RunResult> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    // Each submission from a new anonymous browser, so each is its own
    // contributor and the huge-ε counts must match exactly.
    let mut generator = SubmissionGenerator::with_profile(seed, TrafficProfile::default());
    let subs: Vec<Submission> = (0..SUBMISSIONS)
        .map(|_| generator.next_submission())
        .collect();
    // Two people who check five times in one window, one anonymous (who
    // sends back its contributor token) and one signed in (an ID token):
    // each counts once, however often they post.
    let mut repeated = generator.next_submission();
    repeated.region = None;
    repeated.location = Some(hushmap_schema::submission::Location {
        lat: 12.971599,
        lon: 77.594566,
    });
    let mut all = subs.clone();
    all.push(repeated.clone());
    let sent_coordinates: Vec<(f64, f64)> = all
        .iter()
        .filter_map(|s| s.location.map(|l| (l.lat, l.lon)))
        .collect();
    let public_regions = match regions {
        Regions::PublicSet => public_regions_of(&all),
        Regions::Threshold => Vec::new(),
    };
    let pipeline = Pipeline::start(PipelineOptions {
        epsilon_per_window: epsilon,
        public_regions: public_regions.clone(),
        ..PipelineOptions::default()
    })
    .await?;

    post_invalid(&client, &pipeline.ingest_url, &subs[0]).await;
    let mut accepted = post_all(&client, &pipeline.ingest_url, subs).await;
    assert_eq!(accepted.len(), SUBMISSIONS);
    let mut expected: BTreeMap<CellKey, [i64; 3]> = BTreeMap::new();
    for (s, region, risk) in &accepted {
        let band = AgeBand::from_age(s.age as u8).label().to_string();
        expected.entry((region.clone(), band)).or_insert([0; 3])[risk.code() as usize] += 1;
    }
    let endpoint = format!("{}/v1/submissions", pipeline.ingest_url);
    let signed_in = hushmap_testkit::idp::TestIdp::ed25519().token_for("repeat-visitor-31337");
    let mut contributor_token: Option<String> = None;
    // Stamped now, not when the submissions were made: starting the
    // pipeline and posting 2,000 submissions can take longer than a 10 s
    // window and its 2 s of lateness, and a stamp from a closed window is
    // refused (422; 1 run in ~65 under the test lanes' load).
    repeated.observed_at = Some(time_rfc3339(now_ms()));
    for who in ["anonymous", "signed in"] {
        let mut answer = None;
        for _ in 0..5 {
            let mut request = client.post(&endpoint).json(&repeated);
            request = match (who, &contributor_token) {
                ("signed in", _) => request.bearer_auth(&signed_in),
                (_, Some(token)) => request.header("hushmap-contributor", token),
                (_, None) => request,
            };
            let resp = request.send().await?;
            assert_eq!(resp.status(), 202, "{who}");
            let body: Value = resp.json().await?;
            if who == "anonymous" {
                let token = body["contributor_token"].as_str().unwrap().to_string();
                assert!(contributor_token.as_ref().is_none_or(|t| *t == token));
                contributor_token = Some(token);
            }
            answer = Some(body);
        }
        let body = answer.unwrap();
        let region = body["region"].as_str().unwrap().to_string();
        let risk: RiskLevel = serde_json::from_value(body["risk"].clone())?;
        let band = AgeBand::from_age(repeated.age as u8).label().to_string();
        // Once, not five times.
        expected.entry((region.clone(), band)).or_insert([0; 3])[risk.code() as usize] += 1;
        accepted.push((repeated.clone(), region, risk));
    }

    // The aggregator saw every post (five per repeat visitor) and counted
    // each person once.
    let windows = wait_for_releases(&client, &pipeline, (SUBMISSIONS + 10) as u64).await?;
    assert!(!windows.is_empty());
    let released = released_counts(&client, &pipeline.dashboard_url, &windows).await?;
    let submissions = accepted.into_iter().map(|(s, _, _)| s).collect();
    Ok(RunResult {
        expected,
        released,
        windows,
        submissions,
        public_regions,
        sent_coordinates,
        pipeline,
    })
}

/// Per region: `n_total` of all ages at one level of a window, and the
/// levels the release holds.
async fn level_totals(
    dashboard: &str,
    window: i64,
    level: Option<u8>,
) -> anyhow::Result<(BTreeMap<String, i64>, Vec<u8>)> {
    let mut url = format!("{dashboard}/api/v1/heatmap?window={window}&age_band=all");
    if let Some(l) = level {
        url.push_str(&format!("&level={l}"));
    }
    let body: Value = reqwest::get(&url).await?.error_for_status()?.json().await?;
    let levels = body["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap() as u8)
        .collect();
    let totals = body["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["region"].as_str().unwrap().to_string(),
                c["n_total"].as_i64().unwrap(),
            )
        })
        .collect();
    Ok((totals, levels))
}

/// At huge ε every coarser level holds exactly the sums of its children.
async fn assert_levels_roll_up(dashboard: &str, windows: &BTreeSet<i64>) -> anyhow::Result<()> {
    for &w in windows {
        let (finest, levels) = level_totals(dashboard, w, None).await?;
        assert_eq!(levels.len(), 3, "release resolution and two parents");
        for &level in &levels[1..] {
            let (parents, _) = level_totals(dashboard, w, Some(level)).await?;
            let mut summed: BTreeMap<String, i64> = BTreeMap::new();
            for (region, n) in &finest {
                let cell: hushmap_schema::RegionCell = region.parse()?;
                *summed
                    .entry(cell.parent(level).unwrap().to_string())
                    .or_default() += n;
            }
            assert_eq!(parents, summed, "window {w}, level {level}");
        }
    }
    Ok(())
}

/// The same submissions through `batch` (in one window, stated by
/// `observed_at`) release the same counts per region × band as the stream.
async fn assert_batch_matches_stream(r: &RunResult) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("hushmap-e2e-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("submissions.ndjson");
    let observed =
        time_rfc3339(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64 - 60_000);
    let mut lines = String::new();
    for s in &r.submissions {
        let mut s = s.clone();
        s.observed_at = Some(observed.clone());
        lines.push_str(&serde_json::to_string(&s)?);
        lines.push('\n');
    }
    std::fs::write(&input, lines)?;
    let mut config = hushmap_aggregate::AggregateConfig::default();
    config.privacy.epsilon_per_window = 1e6;
    config.privacy.max_epsilon_per_day = 1e9;
    config.privacy.max_epsilon_per_horizon = 1e9;
    config.privacy.public_regions = r.public_regions.clone();
    use hushmap_aggregate::batch::{self, BatchLedger, BatchOptions, WindowRange};
    let window = hushmap_schema::Window::containing(
        hushmap_schema::window::parse_instant(&observed).expect("RFC 3339"),
        config.window_length(),
    );
    let options = BatchOptions {
        range: WindowRange::new(window.start_ms, window.end_ms, config.window_length())?,
        ledger: BatchLedger::File {
            path: dir.join("ledger.ndjson"),
            releases_topic: false,
        },
        cluster: None,
        cluster_secret: None,
    };
    let report = batch::run_batch(&config, &input, &options, &batch::NoProgress).await?;
    assert_eq!(report.input.refused, 0, "{:?}", report.input.errors);
    assert_eq!(report.releases.len(), 1);
    let mut batch: BTreeMap<CellKey, [i64; 3]> = BTreeMap::new();
    for row in report.releases[0].rows.iter().filter(|x| x.level == 5) {
        batch.insert(
            (row.region.clone(), row.age_band.clone()),
            [row.n_low, row.n_moderate, row.n_high],
        );
    }
    assert_eq!(batch, r.released, "batch and stream differ");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

fn time_rfc3339(ms: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

/// Fails if any sent coordinate appears in `bytes`, as decimal text or as
/// its little-endian f64. One automaton pass over the topic: a naive scan
/// per coordinate took ~100 s of CPU in this unoptimised test build.
fn assert_no_coordinates(bytes: &[u8], coordinates: &[(f64, f64)], topic: &str) {
    assert!(!bytes.is_empty(), "{topic} is empty");
    let mut needles: Vec<(Vec<u8>, String)> = Vec::new();
    for (lat, lon) in coordinates {
        for value in [lat, lon] {
            needles.push((
                format!("{value}").into_bytes(),
                format!("coordinate {value}"),
            ));
            needles.push((
                value.to_le_bytes().to_vec(),
                format!("binary coordinate {value}"),
            ));
        }
    }
    let finder = aho_corasick::AhoCorasick::new(needles.iter().map(|(n, _)| n))
        .expect("coordinate patterns build");
    if let Some(found) = finder.find(bytes) {
        panic!("{topic} holds {}", needles[found.pattern().as_usize()].1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn huge_epsilon_releases_the_true_counts_and_topics_hold_no_coordinates() -> anyhow::Result<()>
{
    let t0 = std::time::Instant::now();
    let r = run(1e6, 11, Regions::PublicSet).await?;
    // Every region × band that received submissions, with its exact counts;
    // released-but-empty cells (the zero-filled grid) must be exactly zero.
    for (key, counts) in &r.expected {
        assert_eq!(r.released.get(key), Some(counts), "cell {key:?}");
    }
    for (key, counts) in &r.released {
        if !r.expected.contains_key(key) {
            assert_eq!(counts, &[0, 0, 0], "cell {key:?} was not sent anything");
        }
    }
    let total: i64 = r.released.values().flatten().sum();
    assert_eq!(
        total as usize,
        SUBMISSIONS + 2,
        "2000 anonymous browsers + two people who posted five times each: people, not posts"
    );
    assert_levels_roll_up(&r.pipeline.dashboard_url, &r.windows).await?;
    assert_batch_matches_stream(&r).await?;
    // The aggregator's /metrics counts what it saw, and nothing else.
    let metrics = reqwest::get(&r.pipeline.aggregator_metrics_url)
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains(&format!(
            "hushmap_aggregate_records_accepted_total {}",
            SUBMISSIONS + 10
        )),
        "{metrics}"
    );
    assert!(metrics.contains("hushmap_aggregate_windows_refused_total 0"));
    assert_eq!(r.pipeline.aggregator_stats.records_dropped.total(), 0);

    assert_no_coordinates(
        &raw_topic_bytes(&r.pipeline.submissions_topic)?,
        &r.sent_coordinates,
        "submissions topic",
    );
    assert_no_coordinates(
        &raw_topic_bytes(&r.pipeline.releases_topic)?,
        &r.sent_coordinates,
        "releases topic",
    );
    r.pipeline.stop().await?;
    eprintln!(
        "end-to-end ({} submissions, huge ε): {:.1} s",
        SUBMISSIONS + 10,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_epsilon_releases_noisy_counts() -> anyhow::Result<()> {
    let r = run(1.0, 12, Regions::Threshold).await?;
    let cells_differing = r
        .expected
        .iter()
        .filter(|(k, v)| r.released.get(*k) != Some(*v))
        .count();
    // With ε = 1 split over two statistics the per-count noise s.d. is ~2.8;
    // a cell survives unchanged with probability < 0.2, so across dozens of
    // cells "most differ" holds except with negligible probability.
    assert!(
        cells_differing * 2 > r.expected.len(),
        "only {cells_differing} of {} cells differ from the truth",
        r.expected.len()
    );
    for counts in r.released.values() {
        assert!(counts.iter().all(|c| *c >= 0));
    }
    // Region selection by threshold: a region only one person reported
    // from in the whole run is never released.
    let mut per_region: BTreeMap<&str, i64> = BTreeMap::new();
    for ((region, _), counts) in &r.expected {
        *per_region.entry(region).or_default() += counts.iter().sum::<i64>();
    }
    let released_regions: BTreeSet<&str> = r.released.keys().map(|(g, _)| g.as_str()).collect();
    for (region, total) in &per_region {
        if *total <= 1 {
            assert!(
                !released_regions.contains(region),
                "lone region {region} released"
            );
        }
    }
    assert!(
        released_regions.len() < per_region.len(),
        "the threshold dropped no region at all"
    );
    r.pipeline.stop().await?;
    Ok(())
}
