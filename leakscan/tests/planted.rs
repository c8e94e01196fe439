//! The scanner finds leaks planted where Hushmap's would end up: a service
//! log, a Parquet file in a release store, a raw JSON record on a real
//! Kafka topic; and it reports them by kind and place without repeating
//! the values. A clean directory passes.

use arrow::array::{Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use hushmap_testkit::{brokers, create_topics, unique};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn scan(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hushmap-leakscan"))
        .args(args)
        .output()
        .expect("leakscan runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn planted_leaks_are_found_everywhere() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(unique("leakscan-planted"));
    let clean = dir.join("clean");
    let dirty = dir.join("dirty");
    std::fs::create_dir_all(&clean)?;
    std::fs::create_dir_all(dirty.join("releases/day=2026-11-29"))?;
    std::fs::write(
        clean.join("aggregate.log"),
        "{\"level\":\"INFO\",\"fields\":{\"message\":\"window released\",\"cells\":412,\"epsilon\":1.0}}\n",
    )?;
    // A log line such as the 2020 logging server held.
    std::fs::write(
        dirty.join("ingest.log"),
        "ok\n{\"msg\":\"request\",\"body\":{\"age\":47,\"location\":{\"lat\":-33.868812,\"lon\":151.209311}},\"ip\":\"198.51.100.23\",\"ua\":\"Mozilla/5.0 (iPhone)\"}\n",
    )?;
    // A release file that grew a coordinate column.
    let schema = Arc::new(Schema::new(vec![
        Field::new("region", DataType::Utf8, false),
        Field::new("lat", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["85be0e3bfffffff"])),
            Arc::new(Float64Array::from(vec![-33.912345])),
        ],
    )?;
    let file = std::fs::File::create(dirty.join("releases/day=2026-11-29/window_start=1.parquet"))?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    let needles = dir.join("needles.txt");
    std::fs::write(&needles, "profile soak-user-77\n")?;

    // A raw submission on a topic, as a careless producer would write it.
    let topic = unique("test.leakscan");
    create_topics(&[(&topic, 2)]).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()?;
    producer
        .send(
            FutureRecord::to(&topic)
                .key("k")
                .payload(r#"{"for":"self","age":63,"profile":"soak-user-77"}"#),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;

    let (code, out, err) = scan(&["--path", clean.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(err.contains("no findings"), "{err}");

    let (code, out, err) = scan(&[
        "--brokers",
        &brokers(),
        "--topic",
        &topic,
        "--path",
        dirty.to_str().unwrap(),
        "--needles",
        needles.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, Some(1), "{out}{err}");
    let findings: Vec<serde_json::Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let has = |kind: &str, place: &str| {
        findings
            .iter()
            .any(|f| f["kind"] == kind && f["location"].as_str().is_some_and(|l| l.contains(place)))
    };
    assert!(has("coordinate", "ingest.log:2"), "{out}");
    assert!(has("exact_age", "ingest.log:2"), "{out}");
    assert!(has("client_ip", "ingest.log:2"), "{out}");
    assert!(has("user_agent", "ingest.log:2"), "{out}");
    assert!(has("coordinate", "column lat row 0"), "{out}");
    assert!(has("exact_age", &topic), "{out}");
    assert!(has("profile", &topic), "{out}");
    // The report names kinds and places, never the values themselves.
    for value in ["33.868812", "151.209311", "198.51.100.23", "soak-user-77"] {
        assert!(
            !out.contains(value) && !err.contains(value),
            "{value} echoed"
        );
    }

    let (code, _, err) = scan(&["--path", dir.join("missing").to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
