//! The topics `deploy/kafka/up.sh` made on the test broker keep what they
//! should for as long as they should: submissions just past window +
//! lateness + an outage margin, in hourly segments (Kafka deletes whole
//! segments), stamped by the broker as it appends them; releases for good.

use hushmap_schema::topics;
use hushmap_testkit::topic_config_on;
use hushmap_tests::brokers;

async fn topic_config(topic: &str) -> anyhow::Result<std::collections::HashMap<String, String>> {
    topic_config_on(&brokers(), topic).await
}

#[tokio::test]
async fn submissions_expire_soon_after_release_and_releases_stay() -> anyhow::Result<()> {
    let submissions = topic_config(topics::SUBMISSIONS).await?;
    let day_window_lateness_margin_ms = (86_400 + 600 + 6 * 3600) * 1000;
    assert_eq!(
        submissions["retention.ms"],
        day_window_lateness_margin_ms.to_string()
    );
    assert_eq!(submissions["cleanup.policy"], "delete");
    let segment_ms: u64 = submissions["segment.ms"].parse()?;
    assert!(segment_ms <= 3_600_000, "segment.ms {segment_ms}");
    // Stamped by the broker, not by ingest (the aggregator refuses otherwise).
    assert_eq!(submissions["message.timestamp.type"], "LogAppendTime");

    let releases = topic_config(topics::RELEASES).await?;
    assert_eq!(releases["retention.ms"], "-1");
    assert_eq!(releases["retention.bytes"], "-1");
    Ok(())
}
