//! Starting an ingest for a test: in-process on its own topic
//! ([`start_ingest`]), or the real binary ([`IngestProcess`]).

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use hushmap_ingest::{IngestConfig, IngestServer};
use hushmap_testkit::{brokers, create_topics_on, payload_keyring, unique};
use std::net::SocketAddr;
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
pub fn trust_test_idp(c: &mut IngestConfig) {
    use hushmap_testkit::idp::{TEST_AUDIENCE, TEST_ISSUER, TestIdp};
    c.identity.pem_files = TestIdp::public_keys();
    c.identity.issuer = Some(TEST_ISSUER.into());
    c.identity.audience = Some(TEST_AUDIENCE.into());
}

/// The real `hushmap-ingest` binary, its environment cleared but for its
/// two listeners (free loopback ports), rate limiting off, the test
/// payload key and `env`. What it writes to stdout and stderr is kept until
/// it stops; dropped, it is killed.
pub struct IngestProcess {
    child: std::process::Child,
    pub url: String,
    pub admin_url: String,
    output: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl IngestProcess {
    /// Starts it and waits until it listens (not until the broker is
    /// reachable: `/readyz` tells that).
    pub async fn start<K, V>(env: impl IntoIterator<Item = (K, V)>) -> anyhow::Result<Self>
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        use hushmap_testkit::{eventually, free_port, payload_public_key};
        use std::io::Read;
        use std::process::{Command, Stdio};
        let (port, admin_port) = (free_port(), free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_hushmap-ingest"))
            .env_clear()
            .env("HUSHMAP_INGEST_LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "HUSHMAP_INGEST_ADMIN_LISTEN",
                format!("127.0.0.1:{admin_port}"),
            )
            .env("HUSHMAP_INGEST_RATE_LIMIT__PER_MINUTE", "0")
            .env(
                "HUSHMAP_PAYLOAD_PUBLIC_KEY",
                payload_public_key().to_string(),
            )
            .envs(env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (mut stderr, mut stdout) = (
            child.stderr.take().expect("piped"),
            child.stdout.take().expect("piped"),
        );
        let output = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = stderr.read_to_end(&mut all);
            let _ = stdout.read_to_end(&mut all);
            all
        });
        let process = IngestProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
            admin_url: format!("http://127.0.0.1:{admin_port}"),
            output: Some(output),
        };
        let client = reqwest::Client::new();
        eventually(
            "ingest to listen",
            std::time::Duration::from_secs(30),
            || async {
                // Refused until it listens.
                let up = client.get(format!("{}/healthz", process.url)).send().await;
                Ok(up.is_ok_and(|r| r.status() == 200).then_some(()))
            },
        )
        .await?;
        Ok(process)
    }

    /// Stops it with SIGTERM (a graceful shutdown): how it exited, and
    /// what it wrote.
    pub fn terminate(mut self) -> anyhow::Result<(std::process::ExitStatus, String)> {
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        let status = tokio::task::block_in_place(|| self.child.wait())?;
        Ok((status, self.output()))
    }

    /// Kills it: what it wrote.
    pub fn kill(mut self) -> anyhow::Result<String> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(self.output())
    }

    fn output(&mut self) -> String {
        let output = self.output.take().expect("read once");
        String::from_utf8_lossy(&output.join().expect("output reader")).into_owned()
    }
}

impl Drop for IngestProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
