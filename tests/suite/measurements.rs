//! The measurements behind each release, through real Kafka: the
//! aggregator publishes them on their own topic in the release's
//! transaction, the dashboard stores them apart, and researchers get them
//! from the export and from Flight with `estimates=measured`, while the
//! map and the default export keep the consistent estimates.

use arrow::array::{Array, Int64Array, StringArray, UInt8Array};
use arrow::ipc::reader::StreamReader;
use arrow::record_batch::RecordBatch;
use arrow_flight::Ticket;
use arrow_flight::client::FlightClient;
use futures::TryStreamExt;
use hushmap_schema::RegionCell;
use hushmap_testkit::wait_until;
use hushmap_tests::{
    Pipeline, PipelineOptions, StandaloneDashboard, anonymous_submissions, public_regions_of,
    submit_all,
};
use std::collections::HashMap;
use std::time::Duration;

/// (level, region, band) → [low, moderate, high] of one window's rows.
type Counts = HashMap<(u8, String, String), [i64; 3]>;

/// The rows of `batches` per window start.
fn counts_by_window(batches: &[RecordBatch]) -> HashMap<i64, Counts> {
    let mut out: HashMap<i64, Counts> = HashMap::new();
    for b in batches {
        let col = |name: &str| b.column(b.schema().index_of(name).unwrap()).clone();
        let start = col("window_start");
        let start = start
            .as_any()
            .downcast_ref::<arrow::array::TimestampMillisecondArray>()
            .unwrap();
        let level = col("level");
        let level = level.as_any().downcast_ref::<UInt8Array>().unwrap();
        let (region, band) = (col("region"), col("age_band"));
        let region = region.as_any().downcast_ref::<StringArray>().unwrap();
        let band = band.as_any().downcast_ref::<StringArray>().unwrap();
        let ints: Vec<_> = ["n_low", "n_moderate", "n_high"]
            .iter()
            .map(|n| col(n))
            .collect();
        let ints: Vec<&Int64Array> = ints
            .iter()
            .map(|c| c.as_any().downcast_ref::<Int64Array>().unwrap())
            .collect();
        for i in 0..b.num_rows() {
            out.entry(start.value(i)).or_default().insert(
                (
                    level.value(i),
                    region.value(i).to_string(),
                    band.value(i).to_string(),
                ),
                [ints[0].value(i), ints[1].value(i), ints[2].value(i)],
            );
        }
    }
    out
}

/// How many (parent, band, risk level) counts of `rows` differ from their
/// children's sum, and how many were checked (every level below the
/// finest, children at the next finer level).
fn broken_sums(rows: &Counts) -> (usize, usize) {
    let (mut broken, mut checked) = (0, 0);
    for ((level, region, band), counts) in rows {
        let cell: RegionCell = region.parse().unwrap();
        let Some(kids) = cell.children(level + 1) else {
            continue;
        };
        let kids: Vec<&[i64; 3]> = kids
            .iter()
            .filter_map(|k| rows.get(&(level + 1, k.to_string(), band.clone())))
            .collect();
        if kids.is_empty() {
            continue;
        }
        for k in 0..3 {
            checked += 1;
            broken += usize::from(kids.iter().map(|c| c[k]).sum::<i64>() != counts[k]);
        }
    }
    (broken, checked)
}

async fn export(base: &str, query: &str) -> anyhow::Result<(reqwest::StatusCode, Vec<u8>)> {
    let r = reqwest::get(format!("{base}/api/v1/export?format=arrow{query}")).await?;
    Ok((r.status(), r.bytes().await?.to_vec()))
}

fn decode(bytes: &[u8]) -> anyhow::Result<(HashMap<String, String>, Vec<RecordBatch>)> {
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    let meta = reader.schema().metadata().clone();
    Ok((meta, reader.collect::<Result<Vec<_>, _>>()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn researchers_get_the_unclamped_measurements_beside_the_consistent_release()
-> anyhow::Result<()> {
    // ε = 1 over a public region set: every cell of every level released,
    // most of them small, so measured counts go negative and consistent
    // ones add up.
    let subs = anonymous_submissions(11, 600);
    let pipeline = Pipeline::start(PipelineOptions {
        public_regions: public_regions_of(&subs),
        ..PipelineOptions::default()
    })
    .await?;
    assert_eq!(submit_all(&pipeline.ingest_url, subs).await, 600);
    let base = pipeline.dashboard_url.clone();

    // Both stores hold the same windows once the releases are in.
    //
    // This wait once timed out in 2 of 6 full runs. The cause was
    // DataFusion's cache of directory listings (on by default, no expiry):
    // when the submissions straddled a window boundary, the first export
    // listed the day's files before the second window's release was
    // stored, and every later export kept that listing, so the stores
    // never showed the same windows. The dashboard no longer caches
    // listings (9d8701e, with a unit test in dashboard/src/query.rs). The
    // message below says what was last seen, and a service of the
    // pipeline that stopped fails the wait at once with its name.
    let last_seen = std::sync::Mutex::new(String::from("nothing yet"));
    let waited = wait_until(
        "the releases and their measurements",
        Duration::from_secs(90),
        || async {
            pipeline.ensure_running()?;
            let (status, bytes) = export(&base, "").await?;
            anyhow::ensure!(status == 200, "export: {status}");
            let published = decode(&bytes)?;
            let (status, bytes) = export(&base, "&estimates=measured").await?;
            anyhow::ensure!(status == 200, "measured export: {status}");
            let measured = decode(&bytes)?;
            let (p, m) = (
                counts_by_window(&published.1),
                counts_by_window(&measured.1),
            );
            let total: i64 = p
                .values()
                .flat_map(|rows| rows.iter())
                .filter(|((level, _, _), _)| *level == 5)
                .map(|(_, c)| c.iter().sum::<i64>())
                .sum();
            let (mut a, mut b): (Vec<_>, Vec<_>) = (p.keys().collect(), m.keys().collect());
            a.sort();
            b.sort();
            *last_seen.lock().unwrap() =
                format!("published windows {a:?} (level-5 total {total}), measured windows {b:?}");
            Ok((total > 300 && a == b).then_some((published, measured)))
        },
    )
    .await;
    let (published, measured) =
        waited.map_err(|e| e.context(format!("last seen: {}", last_seen.lock().unwrap())))?;
    let (published_meta, published_rows) = published;
    let (measured_meta, measured_rows) = measured;
    assert_eq!(
        published_meta["hushmap.estimates"], "consistent",
        "{published_meta:?}"
    );
    assert_eq!(measured_meta["hushmap.estimates"], "measured");
    // The same releases: the same ledger entries, paid for once.
    assert_eq!(
        published_meta["hushmap.ledger_entry"],
        measured_meta["hushmap.ledger_entry"]
    );
    let (p, m) = (
        counts_by_window(&published_rows),
        counts_by_window(&measured_rows),
    );
    let (mut negative, mut differ, mut rows) = (0, 0, 0);
    let (mut p_broken, mut m_broken, mut checked) = (0, 0, 0);
    for (start, p_rows) in &p {
        let m_rows = &m[start];
        let mut keys: Vec<_> = p_rows.keys().collect();
        let mut m_keys: Vec<_> = m_rows.keys().collect();
        keys.sort();
        m_keys.sort();
        assert_eq!(keys, m_keys, "window {start}: the same cells");
        for (key, counts) in m_rows {
            rows += 1;
            negative += usize::from(counts.iter().any(|c| *c < 0));
            differ += usize::from(p_rows[key] != *counts);
            assert!(p_rows[key].iter().all(|c| *c >= 0));
        }
        let (b, c) = broken_sums(p_rows);
        p_broken += b;
        checked += c;
        m_broken += broken_sums(m_rows).0;
    }
    eprintln!(
        "{rows} rows: {negative} with a negative measurement, {differ} differ; \
         sums broken {p_broken} (consistent) and {m_broken} (measured) of {checked}"
    );
    assert!(negative > 0, "no negative measurement in {rows} rows");
    assert!(differ > rows / 2, "{differ} of {rows} rows differ");
    assert!(checked > 100);
    assert_eq!(p_broken, 0, "consistent counts add up");
    assert!(m_broken > checked / 2, "measurements are independent");

    // Flight: the same measurements, by ticket.
    let channel = tonic::transport::Endpoint::from_shared(pipeline.flight_url.clone())?
        .connect()
        .await?;
    let mut flight = FlightClient::new(channel);
    let batches: Vec<RecordBatch> = flight
        .do_get(Ticket::new("estimates=measured"))
        .await?
        .try_collect()
        .await?;
    let by_flight = counts_by_window(&batches);
    for (start, rows) in &m {
        assert_eq!(by_flight.get(start), Some(rows), "window {start} by Flight");
    }
    let status = export(&base, "&estimates=raw").await?.0;
    assert_eq!(status, 422);
    pipeline.stop().await?;

    // A dashboard that does not read measurements says so.
    let alone = StandaloneDashboard::start(|_| {}).await?;
    let (status, body) = export(&format!("http://{}", alone.http), "&estimates=measured").await?;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("not_published"));
    Ok(())
}
