//! Reads the releases topic (and the measurements and provisional topics,
//! when configured), from its beginning, into the stores; windows a store
//! already holds (from its files) are skipped there.

use crate::config::KafkaSettings;
use crate::provisional::ProvisionalBoard;
use crate::store::ReleaseStore;
use hushmap_schema::Release;
use hushmap_schema::release::Estimates;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use std::sync::{Arc, RwLock};

/// Where the consumed releases go.
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

/// Consumes every committed release from the beginning of the releases
/// topic, and of the measurements and provisional topics when configured.
pub fn spawn_release_consumer(
    settings: &KafkaSettings,
    sinks: ReleaseSinks,
) -> Result<tokio::task::JoinHandle<()>, KafkaError> {
    let mut client = settings.security.client_config(&settings.brokers)?;
    // Each dashboard reads the whole topic itself; no shared group state.
    let group_id = format!("hushmap-dashboard-{:016x}", rand_id());
    let consumer: StreamConsumer =
        hushmap_service::consumer::committed_reader(&mut client, &group_id).create()?;
    let measurements = sinks
        .measurements
        .clone()
        .filter(|_| !settings.measurements_topic.is_empty());
    let mut topics = vec![settings.releases_topic.as_str()];
    if measurements.is_some() {
        topics.push(settings.measurements_topic.as_str());
    }
    if !settings.provisional_topic.is_empty() {
        topics.push(settings.provisional_topic.as_str());
    }
    consumer.subscribe(&topics)?;
    let measurements_topic = settings.measurements_topic.clone();
    let provisional_topic = settings.provisional_topic.clone();
    Ok(tokio::spawn(async move {
        loop {
            let m = match consumer.recv().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "release consumer error");
                    continue;
                }
            };
            let kind = if m.topic() == measurements_topic {
                TopicKind::Measured
            } else if m.topic() == provisional_topic {
                TopicKind::Provisional
            } else {
                TopicKind::Final
            };
            let release = match m.payload().map(Release::from_ipc) {
                Some(Ok(release)) => release,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "skipping undecodable release");
                    continue;
                }
                None => {
                    tracing::warn!("skipping empty release message");
                    continue;
                }
            };
            // Each topic holds one kind: a measured or provisional release
            // on the releases topic (or the reverse) is a misconfigured
            // producer, and serving it under the other name would mislead.
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
                continue;
            }
            let (target, fresh) = match (kind, &measurements) {
                (TopicKind::Provisional, _) => {
                    let window_start = release.meta.window_start;
                    let kept = sinks
                        .provisional
                        .write()
                        .expect("board lock")
                        .insert(release);
                    tracing::info!(window_start, kept, "provisional release received");
                    continue;
                }
                (TopicKind::Measured, Some(store)) => (store, None),
                _ => (&sinks.store, sinks.fresh.as_ref()),
            };
            let measured_topic = kind == TopicKind::Measured;
            let cells = release.rows.len();
            let window_start = release.meta.window_start;
            let stored = target.write().expect("store lock").insert(release);
            match stored {
                Ok(new) => {
                    tracing::info!(
                        cells,
                        fresh = new,
                        measured = measured_topic,
                        "release received"
                    );
                    if let (true, Some(tx)) = (new, fresh) {
                        let _ = tx.send(window_start);
                    }
                }
                // Not stored, so not served: the window comes back from
                // the topic at the next start.
                Err(e) => tracing::error!(error = %e, "release not stored"),
            }
        }
    }))
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
