//! Starting an in-process ingest for a test, on its own topic.

use hushmap_ingest::{IngestConfig, IngestServer};
use hushmap_testkit::{brokers, create_topics_on, payload_keyring, unique};
use std::net::SocketAddr;
use tokio::sync::oneshot;

/// A running ingest; stops when dropped.
pub struct TestIngest {
    pub url: String,
    /// The admin listener (`/metrics`).
    #[allow(dead_code)]
    pub admin_url: String,
    #[allow(dead_code)] // each test binary compiles this module; not all read the topic
    pub topic: String,
    _stop: oneshot::Sender<()>,
}

/// Binds ingest on a free loopback port, dev mode, rate limiting off, on a
/// fresh topic of the test broker; `tweak` may change any of it (a changed
/// `kafka.brokers` gets the topic created there).
pub async fn start_ingest(tweak: impl FnOnce(&mut IngestConfig)) -> anyhow::Result<TestIngest> {
    let mut c = test_config();
    tweak(&mut c);
    create_topics_on(&c.kafka.brokers, &[(&c.kafka.topic, 3)]).await?;
    let topic = c.kafka.topic.clone();
    let server = IngestServer::bind(c).await?;
    let url = format!("http://{}", server.local_addr());
    let admin_url = format!("http://{}", server.admin_addr());
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    // Ready once the background probe reached the broker: a test that
    // compares `/readyz` before and after something must not see the
    // start-up turn it from 503 to 200.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while reqwest::get(format!("{url}/readyz"))
        .await
        .map_or(true, |r| r.status() != 200)
    {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "ingest never became ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(TestIngest {
        url,
        admin_url,
        topic,
        _stop: tx,
    })
}

/// Free loopback ports, dev mode, rate limiting off, a fresh topic name
/// on the test broker.
pub fn test_config() -> IngestConfig {
    let mut c = IngestConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        dev_mode: true,
        payload_public_key: Some(payload_keyring().public_key()),
        ..IngestConfig::default()
    };
    c.kafka.brokers = brokers();
    c.kafka.topic = unique("test.ingest");
    c.rate_limit.per_minute = 0;
    c
}

/// Trusts the test identity provider's fixture keys
/// ([`hushmap_testkit::idp`]).
#[allow(dead_code)]
pub fn trust_test_idp(c: &mut IngestConfig) {
    use hushmap_testkit::idp::{TEST_AUDIENCE, TEST_ISSUER, TestIdp};
    c.identity.pem_files = TestIdp::public_keys();
    c.identity.issuer = Some(TEST_ISSUER.into());
    c.identity.audience = Some(TEST_AUDIENCE.into());
}
