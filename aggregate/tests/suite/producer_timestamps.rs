//! Lateness is judged by when the broker appended a record, never by a time
//! its producer chose. A submissions topic left at Kafka's default
//! (`message.timestamp.type=CreateTime`) is refused by both topologies
//! before they read a record, with an error that names the setting.
//!
//! Why it matters: under `CreateTime` a produce retried across a broker
//! failover became readable seconds after its stamp, and the partitioned
//! and single topologies, reading at different moments, judged it
//! differently (the `partitioned` test's flake); and anyone who may write
//! to the topic could stamp records ahead of the clock to close windows
//! early on everyone else's records.

use crate::common::{Topics, partitioned_config, single_config};
use hushmap_aggregate::{Aggregator, AggregatorError, PartitionedAggregator};
use hushmap_testkit::{
    brokers, create_topics, create_topics_configured, current_window_start, unique,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_whose_producers_stamp_the_time_is_refused_by_both_topologies() -> anyhow::Result<()>
{
    let topics = Topics {
        submissions: unique("test.stamped.in"),
        bounded: unique("test.stamped.bounded"),
        releases: unique("test.stamped.out"),
    };
    create_topics_configured(
        &brokers(),
        &[(&topics.submissions, 2)],
        &[("message.timestamp.type", "CreateTime")],
    )
    .await?;
    create_topics(&[(&topics.bounded, 2), (&topics.releases, 1)]).await?;

    let refused = |result: Result<(), AggregatorError>, topology: &str| match result {
        Err(e @ AggregatorError::ProducerTimestamps { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&topics.submissions)
                    && text.contains("CreateTime")
                    && text.contains("LogAppendTime"),
                "{topology}: {text}"
            );
        }
        Err(other) => panic!("{topology} refused for another reason: {other}"),
        Ok(()) => panic!("{topology} started on a topic stamped by its producers"),
    };
    let single = single_config(
        &topics.submissions,
        &topics.releases,
        "stamped",
        4,
        current_window_start(4),
    )?;
    refused(Aggregator::new(single).map(drop), "single");
    refused(
        PartitionedAggregator::new(partitioned_config(&topics, "stamped")?).map(drop),
        "partitioned",
    );

    // The neighbour that must still start: the same settings on a topic the
    // broker stamps.
    let stamped_by_broker = Topics {
        submissions: unique("test.appended.in"),
        bounded: unique("test.appended.bounded"),
        releases: unique("test.appended.out"),
    };
    create_topics(&[
        (&stamped_by_broker.submissions, 2),
        (&stamped_by_broker.bounded, 2),
        (&stamped_by_broker.releases, 1),
    ])
    .await?;
    Aggregator::new(single_config(
        &stamped_by_broker.submissions,
        &stamped_by_broker.releases,
        "appended",
        4,
        current_window_start(4),
    )?)?;
    Ok(())
}
