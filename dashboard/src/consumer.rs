//! Reads the releases topic (and the measurements and provisional topics,
//! when configured) into the stores.
//!
//! The releases and measurements are read by a consumer group of this
//! dashboard's own (its name kept in the data directory beside the store),
//! whose offsets are committed once a message is handled: a restart goes on
//! from where it stopped instead of reading a year of releases again. A
//! message whose release could not be stored is not committed, so it comes
//! back at the next start; one read twice (a crash before the commit) is a
//! window the store already holds, and is skipped there. A new data
//! directory is a new group, which starts at the beginning. The provisional
//! topic is read from its beginning at every start by a consumer of its
//! own: its board lives in memory only.

use crate::config::KafkaSettings;
use crate::provisional::ProvisionalBoard;
use crate::store::{ReleaseStore, random_id};
use hushmap_schema::Release;
use hushmap_schema::release::Estimates;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Where the consumed releases go.
#[derive(Clone)]
pub struct ReleaseSinks {
    /// Final releases.
    pub store: Arc<RwLock<ReleaseStore>>,
    /// The measurements behind them, when the dashboard reads them.
    pub measurements: Option<Arc<RwLock<ReleaseStore>>>,
    /// Provisional releases (read when `provisional_topic` is set).
    pub provisional: Arc<RwLock<ProvisionalBoard>>,
    /// Each final window stored for the first time (the alert webhook's).
    pub fresh: Option<tokio::sync::mpsc::UnboundedSender<i64>>,
}

/// The kind of release a topic holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopicKind {
    Final,
    Measured,
    Provisional,
}

/// Why the consumers could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the consumer group name in {path}: {source}")]
    GroupFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The name of this dashboard's consumer group, kept in `data_dir` (made
/// on first start): a restart resumes where the store left off.
fn resume_group(data_dir: &Path) -> Result<String, ConsumerError> {
    let path = data_dir.join("consumer-group");
    let err = |source| ConsumerError::GroupFile {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(name) if name.trim().starts_with("hushmap-dashboard-") => Ok(name.trim().to_string()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(e)),
        // None yet (or not one of ours): a new group, from the beginning.
        _ => {
            // The ACLs give the dashboard the groups under this prefix.
            let name = format!("hushmap-dashboard-{:016x}", random_id());
            std::fs::create_dir_all(data_dir).map_err(err)?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, format!("{name}\n")).map_err(err)?;
            std::fs::rename(&tmp, &path).map_err(err)?;
            Ok(name)
        }
    }
}

/// Starts the consumers: the releases (and measurements) from where this
/// data directory's group left off, the provisional topic from its start.
pub fn spawn_release_consumer(
    settings: &KafkaSettings,
    data_dir: &Path,
    sinks: ReleaseSinks,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ConsumerError> {
    let measurements = sinks
        .measurements
        .clone()
        .filter(|_| !settings.measurements_topic.is_empty());
    let mut client = settings.security.client_config(&settings.brokers)?;
    hushmap_service::consumer::committed_reader(&mut client, &resume_group(data_dir)?)
        // Offsets are stored by hand once a message is handled, and
        // committed in the background.
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false");
    let consumer: StreamConsumer = client.create()?;
    let mut topics = vec![(settings.releases_topic.clone(), TopicKind::Final)];
    if measurements.is_some() {
        topics.push((settings.measurements_topic.clone(), TopicKind::Measured));
    }
    let names: Vec<&str> = topics.iter().map(|(t, _)| t.as_str()).collect();
    consumer.subscribe(&names)?;
    let mut tasks = vec![tokio::spawn(consume(consumer, topics, sinks.clone(), true))];
    if !settings.provisional_topic.is_empty() {
        let mut client = settings.security.client_config(&settings.brokers)?;
        let group = format!("hushmap-dashboard-{:016x}", random_id());
        let consumer: StreamConsumer =
            hushmap_service::consumer::committed_reader(&mut client, &group).create()?;
        consumer.subscribe(&[settings.provisional_topic.as_str()])?;
        let topics = vec![(settings.provisional_topic.clone(), TopicKind::Provisional)];
        tasks.push(tokio::spawn(consume(consumer, topics, sinks, false)));
    }
    Ok(tasks)
}

/// Reads `consumer` for ever, each topic's releases into their sink;
/// `commit`: store each handled message's offset for the group to commit.
async fn consume(
    consumer: StreamConsumer,
    topics: Vec<(String, TopicKind)>,
    sinks: ReleaseSinks,
    commit: bool,
) {
    loop {
        let m = match consumer.recv().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "release consumer error");
                continue;
            }
        };
        let kind = topics
            .iter()
            .find(|(t, _)| t == m.topic())
            .map_or(TopicKind::Final, |(_, k)| *k);
        let handled = handle(&m, kind, &sinks);
        if commit
            && handled
            && let Err(e) = consumer.store_offset_from_message(&m)
        {
            tracing::warn!(error = %e, "cannot store the consumer offset");
        }
    }
}

/// Puts one message's release where it belongs; false only when a
/// release that should be stored could not be (it must be read again).
fn handle(m: &BorrowedMessage<'_>, kind: TopicKind, sinks: &ReleaseSinks) -> bool {
    let release = match m.payload().map(Release::from_ipc) {
        Some(Ok(release)) => release,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "skipping undecodable release");
            return true;
        }
        None => {
            tracing::warn!("skipping empty release message");
            return true;
        }
    };
    // Each topic holds one kind: a measured or provisional release on the
    // releases topic (or the reverse) is a misconfigured producer, and
    // serving it under the other name would mislead.
    let found = match (release.meta.provisional.is_some(), release.meta.estimates) {
        (true, _) => TopicKind::Provisional,
        (false, Estimates::Measured) => TopicKind::Measured,
        (false, _) => TopicKind::Final,
    };
    if found != kind {
        tracing::warn!(
            topic_kind = ?kind,
            release_kind = ?found,
            "skipping a release of the wrong kind for its topic"
        );
        return true;
    }
    let (target, fresh) = match (kind, &sinks.measurements) {
        (TopicKind::Provisional, _) => {
            let window_start = release.meta.window_start;
            let kept = sinks
                .provisional
                .write()
                .expect("board lock")
                .insert(release);
            tracing::info!(window_start, kept, "provisional release received");
            return true;
        }
        (TopicKind::Measured, Some(store)) => (store, None),
        _ => (&sinks.store, sinks.fresh.as_ref()),
    };
    let cells = release.rows.len();
    let window_start = release.meta.window_start;
    let stored = target.write().expect("store lock").insert(release);
    match stored {
        Ok(new) => {
            tracing::info!(
                cells,
                fresh = new,
                measured = kind == TopicKind::Measured,
                "release received"
            );
            if let (true, Some(tx)) = (new, fresh) {
                let _ = tx.send(window_start);
            }
            true
        }
        // Not stored, so not served, and not committed: the window comes
        // back from the topic at the next start.
        Err(e) => {
            tracing::error!(error = %e, "release not stored");
            false
        }
    }
}
