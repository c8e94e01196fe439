//! Reads the releases topic (and the measurements topic, when configured),
//! from its beginning, into the stores; windows a store already holds
//! (from its files) are skipped there.

use crate::config::KafkaSettings;
use crate::store::ReleaseStore;
use hushmap_schema::Release;
use hushmap_schema::release::Estimates;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use std::sync::{Arc, RwLock};

/// Consumes every committed release from the beginning of the topic, and
/// of the measurements topic into `measurements` when there is one. Each
/// window stored for the first time is sent on `fresh` (the alert
/// webhook's), when there is one.
pub fn spawn_release_consumer(
    settings: &KafkaSettings,
    store: Arc<RwLock<ReleaseStore>>,
    measurements: Option<Arc<RwLock<ReleaseStore>>>,
    fresh: Option<tokio::sync::mpsc::UnboundedSender<i64>>,
) -> Result<tokio::task::JoinHandle<()>, KafkaError> {
    let mut client = settings.security.client_config(&settings.brokers)?;
    // Each dashboard reads the whole topic itself; no shared group state.
    let group_id = format!("hushmap-dashboard-{:016x}", rand_id());
    let consumer: StreamConsumer =
        hushmap_service::consumer::committed_reader(&mut client, &group_id).create()?;
    let measurements = measurements.filter(|_| !settings.measurements_topic.is_empty());
    let mut topics = vec![settings.releases_topic.as_str()];
    if measurements.is_some() {
        topics.push(settings.measurements_topic.as_str());
    }
    consumer.subscribe(&topics)?;
    let measurements_topic = settings.measurements_topic.clone();
    Ok(tokio::spawn(async move {
        loop {
            let m = match consumer.recv().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "release consumer error");
                    continue;
                }
            };
            // Each topic holds one kind: a measured release on the
            // releases topic (or the reverse) is a misconfigured producer,
            // and serving it under the other name would mislead.
            let measured_topic = m.topic() == measurements_topic;
            let (target, fresh) = match (&measurements, measured_topic) {
                (Some(store), true) => (store, None),
                _ => (&store, fresh.as_ref()),
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
            if (release.meta.estimates == Estimates::Measured) != measured_topic {
                tracing::warn!(
                    estimates = release.meta.estimates.as_str(),
                    measurements_topic = measured_topic,
                    "skipping a release of the wrong kind for its topic"
                );
                continue;
            }
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
