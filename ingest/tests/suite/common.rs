//! Starting an ingest for a test: in-process on its own topic
//! ([`start_ingest`]), or the real binary ([`IngestProcess`]).

use hushmap_ingest::{IngestConfig, IngestServer};
use hushmap_testkit::{
    ServiceProcess, brokers, create_topics_on, payload_keyring, unique, wait_until,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::oneshot;

/// A running ingest; stops when dropped.
pub struct TestIngest {
    pub url: String,
    /// The admin listener (`/metrics`).
    pub admin_url: String,
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
    wait_until(
        "ingest to be ready (/readyz 200)",
        Duration::from_secs(10),
        || async {
            let ready = reqwest::get(format!("{url}/readyz")).await;
            Ok(ready.is_ok_and(|r| r.status() == 200).then_some(()))
        },
    )
    .await?;
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
pub fn trust_test_idp(c: &mut IngestConfig) {
    use hushmap_testkit::idp::{TEST_AUDIENCE, TEST_ISSUER, TestIdp};
    c.identity.pem_files = TestIdp::public_keys();
    c.identity.issuer = Some(TEST_ISSUER.into());
    c.identity.audience = Some(TEST_AUDIENCE.into());
}

/// The real `hushmap-ingest` binary (a [`ServiceProcess`]), its
/// environment cleared but for its two listeners (free loopback ports),
/// rate limiting off, the test payload key and `env`. What it writes to
/// stdout and stderr is kept (in a log file of its own, removed with it)
/// until it stops; dropped, it is killed.
pub struct IngestProcess {
    process: ServiceProcess,
    dir: PathBuf,
    pub url: String,
    pub admin_url: String,
}

/// How long a graceful shutdown may take before the test gives up on it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

impl IngestProcess {
    /// Starts it and waits until it listens (not until the broker is
    /// reachable: `/readyz` tells that).
    pub async fn start<K, V>(env: impl IntoIterator<Item = (K, V)>) -> anyhow::Result<Self>
    where
        K: Into<String>,
        V: Into<String>,
    {
        use hushmap_testkit::{free_port, payload_public_key};
        let (port, admin_port) = (free_port(), free_port());
        let mut envs = vec![
            (
                "HUSHMAP_INGEST_LISTEN".to_string(),
                format!("127.0.0.1:{port}"),
            ),
            (
                "HUSHMAP_INGEST_ADMIN_LISTEN".to_string(),
                format!("127.0.0.1:{admin_port}"),
            ),
            (
                "HUSHMAP_INGEST_RATE_LIMIT__PER_MINUTE".to_string(),
                "0".to_string(),
            ),
            (
                "HUSHMAP_PAYLOAD_PUBLIC_KEY".to_string(),
                payload_public_key().to_string(),
            ),
        ];
        envs.extend(env.into_iter().map(|(k, v)| (k.into(), v.into())));
        let dir = std::env::temp_dir().join(unique("hushmap-ingest-process"));
        let process = IngestProcess {
            process: ServiceProcess::spawn(
                "ingest",
                std::path::Path::new(env!("CARGO_BIN_EXE_hushmap-ingest")),
                envs,
                &dir,
            )?,
            dir,
            url: format!("http://127.0.0.1:{port}"),
            admin_url: format!("http://127.0.0.1:{admin_port}"),
        };
        let client = reqwest::Client::new();
        wait_until("ingest to listen", Duration::from_secs(30), || async {
            // Refused until it listens.
            let up = client.get(format!("{}/healthz", process.url)).send().await;
            Ok(up.is_ok_and(|r| r.status() == 200).then_some(()))
        })
        .await?;
        Ok(process)
    }

    /// Stops it with SIGTERM (a graceful shutdown): how it exited, and
    /// what it wrote.
    pub fn terminate(mut self) -> anyhow::Result<(std::process::ExitStatus, String)> {
        let status =
            tokio::task::block_in_place(|| self.process.terminate_with_status(SHUTDOWN_GRACE))
                .ok_or_else(|| {
                    anyhow::anyhow!("ingest did not exit within {SHUTDOWN_GRACE:?} of SIGTERM")
                })?;
        Ok((status, self.process.output()))
    }

    /// Kills it: what it wrote.
    pub fn kill(mut self) -> anyhow::Result<String> {
        self.process.kill9();
        Ok(self.process.output())
    }
}

impl Drop for IngestProcess {
    fn drop(&mut self) {
        self.process.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
