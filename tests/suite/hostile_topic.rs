//! The submissions topic as an attacker or a broken producer sees it.
//!
//! Records go on the topic sealed (HPKE to the aggregator's public key, key
//! ids): what the broker holds is unreadable, keys included. Alongside real
//! traffic, this test writes every kind of bad record straight to the topic
//! (empty, truncated, oversized, unsealed, sealed for the bounded topic,
//! under an unknown key, tampered, and replayed copies of genuine records)
//! and checks that the aggregator keeps running, counts each under its
//! reason, and releases exactly the genuine counts (huge ε).

use hushmap_schema::sealed::SEALED_LEN;
use hushmap_schema::{CoarseRecord, ContributorKey, PayloadKeyring, RegionCell};
use hushmap_testkit::topic_records_on;
use hushmap_tests::*;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::time::Duration;

const GENUINE: usize = 300;
const WINDOW_SECS: u32 = 30;

/// Sleeps into the next window unless at least 15 s of this one remain,
/// so the genuine records and their replays share an open window.
async fn leave_room_in_window() {
    let len = i64::from(WINDOW_SECS) * 1000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let remaining = len - now.rem_euclid(len);
    if remaining < 15_000 {
        tokio::time::sleep(Duration::from_millis(remaining as u64 + 200)).await;
    }
}

async fn produce_raw(
    producer: &FutureProducer,
    topic: &str,
    payloads: &[Vec<u8>],
) -> anyhow::Result<()> {
    for p in payloads {
        producer
            .send(
                FutureRecord::to(topic).key("attacker").payload(&p[..]),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Reads one counter of the aggregator's `/metrics` text.
fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_records_are_dropped_counted_and_never_released() -> anyhow::Result<()> {
    let subs = anonymous_submissions(61, GENUINE);
    let regions = public_regions_of(&subs);
    let pipeline = Pipeline::start(PipelineOptions {
        // Long enough that the replays below land while their window is
        // open, so they meet the replay check, not only the lateness check.
        window_secs: WINDOW_SECS,
        allowed_lateness_secs: 2,
        epsilon_per_window: 1e6,
        public_regions: regions.clone(),
        ..PipelineOptions::default()
    })
    .await?;
    leave_room_in_window().await;
    let accepted = submit_all(&pipeline.ingest_url, subs).await;
    assert_eq!(accepted, GENUINE);

    let topic = pipeline.submissions_topic.clone();
    let genuine =
        tokio::task::spawn_blocking(move || topic_records_on(&brokers(), &topic)).await??;
    assert_eq!(genuine.len(), GENUINE);

    // Nothing on the topic is readable: sealed payloads of one fixed length,
    // keys that are keyed hashes rather than cells, no region anywhere.
    let keyring = payload_keyring();
    for (key, payload) in &genuine {
        assert_eq!(payload.len(), SEALED_LEN);
        assert!(CoarseRecord::decode(payload).is_err());
        let key = String::from_utf8(key.clone())?;
        assert_eq!(key.len(), 16, "partition key {key:?}");
        assert!(key.parse::<RegionCell>().is_err());
        let region = keyring.open(payload)?.region;
        for needle in [
            region.to_string().into_bytes(),
            region.raw().to_le_bytes().to_vec(),
        ] {
            assert!(!payload.windows(needle.len()).any(|w| w == needle));
        }
    }
    // Keys follow (contributor, window), not regions: records of one
    // contributor and window share a key, whatever their region.
    let mut key_of: BTreeMap<(ContributorKey, i64), &Vec<u8>> = BTreeMap::new();
    for (key, payload) in &genuine {
        let record = keyring.open(payload)?;
        let known = key_of.entry((record.contributor, record.window.start_ms));
        assert_eq!(*known.or_insert(key), key);
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()?;
    let some = |n: usize| genuine.iter().take(n).map(|(_, p)| p.clone());
    let other_key: PayloadKeyring = PayloadKeyring::generate_entry(9).parse()?;
    let sample = keyring.open(&genuine[0].1)?;
    let empty: Vec<Vec<u8>> = vec![Vec::new(); 3];
    let truncated: Vec<Vec<u8>> = some(4).map(|p| p[..p.len() - 7].to_vec()).collect();
    let oversized: Vec<Vec<u8>> = vec![vec![0xA2; 100 * 1024]; 2];
    let unsealed: Vec<Vec<u8>> = vec![sample.encode().to_vec(); 5];
    let unknown_key: Vec<Vec<u8>> = (0..6)
        .map(|_| other_key.public_key().seal(&sample))
        .collect();
    // Stage-1 messages of partitioned aggregation, as the bounded topic
    // holds them, copied onto the submissions topic.
    let wrong_purpose: Vec<Vec<u8>> = (0..8)
        .map(|_| {
            keyring
                .bounded_keyring()
                .seal(&hushmap_schema::BoundedMessage::Record(sample))
        })
        .collect();
    let tampered: Vec<Vec<u8>> = some(7)
        .map(|mut p| {
            p[50] ^= 0x20;
            p
        })
        .collect();
    let replayed: Vec<Vec<u8>> = some(40).collect();
    for batch in [
        &empty,
        &truncated,
        &oversized,
        &unsealed,
        &wrong_purpose,
        &unknown_key,
        &tampered,
        &replayed,
    ] {
        produce_raw(&producer, &pipeline.submissions_topic, batch).await?;
    }

    // Released totals are exactly the genuine submissions.
    wait_for_dashboard_total(&pipeline.dashboard_url, None, GENUINE as i64).await?;
    let metrics = wait_until(
        "the aggregator to have read every bad record",
        Duration::from_secs(60),
        || async {
            let text = reqwest::get(&pipeline.aggregator_metrics_url)
                .await?
                .text()
                .await?;
            let replays = counter(
                &text,
                "hushmap_aggregate_records_dropped_total{reason=\"replayed\"}",
            ) + counter(&text, "hushmap_aggregate_records_late_total");
            Ok((replays == replayed.len() as u64).then_some(text))
        },
    )
    .await?;
    let dropped = |reason: &str| {
        counter(
            &metrics,
            &format!("hushmap_aggregate_records_dropped_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(dropped("empty"), 3);
    assert_eq!(dropped("malformed"), 4 + 2);
    assert_eq!(dropped("unsealed"), 5);
    assert_eq!(dropped("wrong_purpose"), 8);
    assert_eq!(dropped("unknown_key"), 6);
    assert_eq!(dropped("tampered"), 7);
    assert_eq!(dropped("invalid_record"), 0);
    assert_eq!(dropped("window_length"), 0);
    assert_eq!(
        dropped("replayed"),
        replayed.len() as u64,
        "replays within an open window are recognised by their seal"
    );
    assert_eq!(
        counter(&metrics, "hushmap_aggregate_records_accepted_total"),
        GENUINE as u64
    );
    // Every window is released by now; none counted a bad record.
    let released: i64 = dashboard_window_totals(&pipeline.dashboard_url, None)
        .await?
        .iter()
        .map(|(_, total)| total)
        .sum();
    assert_eq!(released, GENUINE as i64);
    pipeline.stop().await?;
    Ok(())
}
