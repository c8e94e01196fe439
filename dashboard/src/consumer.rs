//! Reads the releases topic, from its beginning, into the store; windows
//! the store already holds (from its files) are skipped there.

use crate::config::KafkaSettings;
use crate::store::ReleaseStore;
use hushmap_schema::Release;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use std::sync::{Arc, RwLock};

/// Consumes every committed release from the beginning of the topic.
/// Each window stored for the first time is sent on `fresh` (the alert
/// webhook's), when there is one.
pub fn spawn_release_consumer(
    settings: &KafkaSettings,
    store: Arc<RwLock<ReleaseStore>>,
    fresh: Option<tokio::sync::mpsc::UnboundedSender<i64>>,
) -> Result<tokio::task::JoinHandle<()>, KafkaError> {
    let mut client = settings.security.client_config(&settings.brokers)?;
    // Each dashboard reads the whole topic itself; no shared group state.
    let group_id = format!("hushmap-dashboard-{:016x}", rand_id());
    let consumer: StreamConsumer =
        hushmap_service::consumer::committed_reader(&mut client, &group_id).create()?;
    consumer.subscribe(&[&settings.releases_topic])?;
    Ok(tokio::spawn(async move {
        loop {
            match consumer.recv().await {
                Ok(m) => match m.payload().map(Release::from_ipc) {
                    Some(Ok(release)) => {
                        let cells = release.rows.len();
                        let window_start = release.meta.window_start;
                        let stored = store.write().expect("store lock").insert(release);
                        match stored {
                            Ok(new) => {
                                tracing::info!(cells, fresh = new, "release received");
                                if let (true, Some(tx)) = (new, &fresh) {
                                    let _ = tx.send(window_start);
                                }
                            }
                            // Not stored, so not served: the window comes
                            // back from the topic at the next start.
                            Err(e) => tracing::error!(error = %e, "release not stored"),
                        }
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "skipping undecodable release"),
                    None => tracing::warn!("skipping empty release message"),
                },
                Err(e) => tracing::warn!(error = %e, "release consumer error"),
            }
        }
    }))
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
