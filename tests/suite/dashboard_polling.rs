//! What a page polling the dashboard costs, over real HTTP: the window list
//! is sent whole once and then only what is new (`since`), a poll with
//! nothing new is a `304` (ETag), and the page's bundle is served gzipped
//! with a tag that a reload revalidates.

use hushmap_testkit::observe::committed_offset;
use hushmap_testkit::{hourly_release, producer};
use hushmap_tests::{StandaloneDashboard, brokers, create_topics, unique, wait_until};
use rdkafka::producer::FutureRecord;
use reqwest::header;
use std::io::Read;
use std::time::Duration;

async fn publish(topic: &str, hours: std::ops::Range<i64>) -> anyhow::Result<()> {
    let producer = producer()?;
    for hour in hours {
        let bytes = hourly_release(hour, Vec::new()).to_ipc()?;
        producer
            .send(
                FutureRecord::to(topic).key("k").payload(&bytes[..]),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_get_only_what_is_new_and_the_bundle_travels_compressed() -> anyhow::Result<()> {
    let topic = unique("test.polling.releases");
    create_topics(&[(&topic, 1)]).await?;
    let t = topic.clone();
    let dashboard = StandaloneDashboard::start(move |c| c.kafka.releases_topic = t).await?;
    let base = format!("http://{}", dashboard.http);
    let client = reqwest::Client::new();
    publish(&topic, 0..3).await?;
    let first: serde_json::Value = wait_until("three windows", Duration::from_secs(30), || {
        let (client, url) = (client.clone(), format!("{base}/api/v1/releases"));
        async move {
            let v: serde_json::Value = client.get(url).send().await?.json().await?;
            Ok((v["releases"].as_array().map_or(0, Vec::len) == 3).then_some(v))
        }
    })
    .await?;
    assert_eq!(first["full"], true);
    assert_eq!(first["sequence"], 3);
    let instance = first["instance"].as_str().unwrap().to_string();

    // Nothing new: a 304 with no body, and an empty increment.
    let whole = client.get(format!("{base}/api/v1/releases")).send().await?;
    let etag = whole.headers()[header::ETAG].clone();
    let again = client
        .get(format!("{base}/api/v1/releases"))
        .header(header::IF_NONE_MATCH, etag.clone())
        .send()
        .await?;
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await?.is_empty());
    let since = format!("{base}/api/v1/releases?since=3&instance={instance}");
    let none: serde_json::Value = client.get(&since).send().await?.json().await?;
    assert_eq!(
        (
            none["full"].clone(),
            none["releases"].as_array().unwrap().len()
        ),
        (false.into(), 0)
    );

    // One more window: the old tag no longer matches, and the increment
    // holds that window alone (with the composed cost of all four).
    publish(&topic, 3..4).await?;
    let fresh: serde_json::Value = wait_until("the fourth window", Duration::from_secs(30), || {
        let (client, url) = (client.clone(), since.clone());
        async move {
            let v: serde_json::Value = client.get(url).send().await?.json().await?;
            Ok((v["sequence"] == 4).then_some(v))
        }
    })
    .await?;
    let listed = fresh["releases"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0]["window_start"],
        hourly_release(3, Vec::new()).meta.window_start
    );
    assert_eq!(fresh["privacy"]["all"]["releases"], 4);
    let changed = client
        .get(format!("{base}/api/v1/releases"))
        .header(header::IF_NONE_MATCH, etag)
        .send()
        .await?;
    assert_eq!(changed.status(), 200);
    // A sequence from another instance (before a restart) gets the whole list.
    let other: serde_json::Value = client
        .get(format!(
            "{base}/api/v1/releases?since=3&instance=0000000000000000"
        ))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        (
            other["full"].clone(),
            other["releases"].as_array().unwrap().len()
        ),
        (true.into(), 4)
    );

    // The bundle: gzipped when accepted, the same bytes once inflated.
    let plain = client.get(format!("{base}/assets/app.js")).send().await?;
    assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
    let tag = plain.headers()[header::ETAG].clone();
    let plain = plain.bytes().await?;
    let gz = client
        .get(format!("{base}/assets/app.js"))
        .header(header::ACCEPT_ENCODING, "gzip, deflate")
        .send()
        .await?;
    assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(gz.headers()[header::VARY], "Accept-Encoding");
    let gz = gz.bytes().await?;
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut inflated)?;
    assert_eq!(inflated, plain);
    eprintln!("app.js: {} bytes, {} gzipped", plain.len(), gz.len());
    assert!(
        gz.len() * 3 < plain.len(),
        "{} of {}",
        gz.len(),
        plain.len()
    );
    let revalidated = client
        .get(format!("{base}/assets/app.js"))
        .header(header::IF_NONE_MATCH, tag)
        .send()
        .await?;
    assert_eq!(revalidated.status(), 304);
    Ok(())
}

/// `hushmap_dashboard_release_duplicates_total` of a dashboard: windows it
/// read again that its store already held.
async fn duplicates(base: &str) -> anyhow::Result<i64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix("hushmap_dashboard_release_duplicates_total "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no duplicates counter in /metrics"))
}

async fn stored(base: &str) -> anyhow::Result<usize> {
    let v: serde_json::Value = reqwest::get(format!("{base}/api/v1/releases"))
        .await?
        .json()
        .await?;
    Ok(v["releases"].as_array().map_or(0, Vec::len))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reads_on_from_where_the_store_left_off() -> anyhow::Result<()> {
    let topic = unique("test.resume.releases");
    create_topics(&[(&topic, 1)]).await?;
    let data_dir = std::env::temp_dir().join(unique("hushmap-dashboard-resume"));
    let start = || {
        let (t, d) = (topic.clone(), data_dir.clone());
        StandaloneDashboard::start(move |c| {
            c.kafka.releases_topic = t;
            c.data_dir = d;
        })
    };
    publish(&topic, 0..5).await?;
    let first = start().await?;
    let base = format!("http://{}", first.http);
    wait_until("five windows", Duration::from_secs(30), || {
        let base = base.clone();
        async move { Ok((stored(&base).await? == 5).then_some(())) }
    })
    .await?;
    // Wait for the group to commit the five (it commits every few
    // seconds), then stop it, as an orderly shutdown would.
    let group = std::fs::read_to_string(data_dir.join("consumer-group"))?
        .trim()
        .to_string();
    wait_until(
        "the dashboard's group to commit the five windows",
        Duration::from_secs(30),
        || {
            let (group, topic) = (group.clone(), topic.clone());
            async move {
                let committed = tokio::task::spawn_blocking(move || {
                    committed_offset(&brokers(), &group, &topic, 0)
                })
                .await??;
                Ok((committed >= Some(5)).then_some(()))
            }
        },
    )
    .await?;
    let first_http = first.http;
    drop(first);
    wait_until(
        "the first dashboard to stop listening",
        Duration::from_secs(30),
        || async {
            let refused = tokio::net::TcpStream::connect(first_http).await.is_err();
            Ok(refused.then_some(()))
        },
    )
    .await?;

    // The next start holds the five windows from its files and reads only
    // what came after them: none of the five again.
    publish(&topic, 5..6).await?;
    let second = start().await?;
    let base = format!("http://{}", second.http);
    // (A member that did not leave cleanly would hold the group for up to
    // its session timeout.)
    wait_until("the sixth window", Duration::from_secs(90), || {
        let base = base.clone();
        async move { Ok((stored(&base).await? == 6).then_some(())) }
    })
    .await?;
    assert_eq!(
        duplicates(&base).await?,
        0,
        "windows read again after a restart"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}
