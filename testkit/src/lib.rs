//! Helpers for tests that run against the real Kafka broker of `deploy/`.
//!
//! Every test makes its own topics ([`unique`], [`create_topics`]) so tests
//! run in parallel on one broker without seeing each other's data.
//! [`SpareBroker`] starts a second broker on other ports for tests that stop
//! and start Kafka, so they never disturb the shared one, or that need a
//! broker speaking SASL_SSL ([`SaslAccess`]); [`KafkaCluster`] starts a
//! replicated 3-node cluster. [`idp`] stands in for the identity provider.
//! [`ServiceProcess`] runs a service binary as a process; [`observe`] holds
//! checks for [`wait_until`] on what services do not report themselves.

pub mod idp;
pub mod observe;
pub mod process;
pub mod synthetic;

pub use process::ServiceProcess;

use hushmap_schema::{PayloadKeyring, PayloadPublicKey};
use hushmap_service::kafka::{KafkaSecurity, SecurityProtocol};
use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::Message;
use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// Broker address: `HUSHMAP_TEST_KAFKA`, default the `deploy/` broker.
pub fn brokers() -> String {
    std::env::var("HUSHMAP_TEST_KAFKA")
        .unwrap_or_else(|_| hushmap_service::kafka::DEFAULT_BROKERS.into())
}

/// The aggregator's private payload key of this test process (`ID:HEX64`),
/// fresh per process. Child aggregators get it through
/// `HUSHMAP_PAYLOAD_KEYS`.
pub fn payload_keys() -> &'static str {
    static KEYS: LazyLock<String> = LazyLock::new(|| PayloadKeyring::generate_entry(1));
    &KEYS
}

/// [`payload_keys`], parsed.
pub fn payload_keyring() -> PayloadKeyring {
    payload_keys().parse().expect("generated keyring parses")
}

/// The public half of [`payload_keys`] (`ID:HEX64`): what ingest seals to.
/// Child ingests get it through `HUSHMAP_PAYLOAD_PUBLIC_KEY`.
pub fn payload_public_key() -> PayloadPublicKey {
    payload_keyring().public_key()
}

/// A name no other test run uses. The process id and the random part are
/// joined by `-`, not `.`: a name like `x.25151.254006a3` holds `151.2540`,
/// which the leak scanner rightly takes for a coordinate of four decimals
/// when the broker's log (which names every topic) is scanned (a soak run
/// failed on another test's topic name that way).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}.{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// A release of the hour-long window starting `hour` hours after
/// 2026-01-01T00:00Z with `rows`: fixed metadata (ρ 0.01, ε 1, δ 1e-8), its
/// ledger entry named `w<window start>` as the aggregator names them.
pub fn hourly_release(hour: i64, rows: Vec<hushmap_schema::ReleaseRow>) -> hushmap_schema::Release {
    const HOUR_MS: i64 = 3_600_000;
    let start = 1_767_225_600_000 + hour * HOUR_MS;
    hushmap_schema::Release {
        meta: hushmap_schema::release::ReleaseMeta {
            window_start: start,
            window_end: start + HOUR_MS,
            mechanism: "discrete_gaussian".into(),
            rho: Some(0.01),
            epsilon: 1.0,
            delta: 1e-8,
            ledger_entry: format!("w{start}"),
            symptom_noise_scale: 4.0,
            max_ci_half_width: 0.15,
            statistic_costs: Vec::new(),
            ..Default::default()
        },
        rows,
    }
}

pub use hushmap_service::clock::now_ms;

/// A loopback port for a service a test starts as a process (which must be
/// told its port before it binds), kept from every other test process.
///
/// A port the kernel picked (`bind(0)`) and that was then released could
/// be picked again at once, by another test process's `bind(0)` or as the
/// local port of any outgoing connection: with two test lanes at once that
/// happened (a dashboard could not bind, and the test talked to another
/// test's server). So ports come from [`TEST_PORTS`], below the kernel's
/// ephemeral range (32768–60999 on Linux), which the kernel never hands
/// out by itself; each is reserved for this process's lifetime by a lock
/// on a file of its own in the temporary directory (released when the
/// process exits, however it exits). The brokers the tests start use
/// fixed ports outside the range.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("hushmap-test-ports");
    std::fs::create_dir_all(&dir).expect("a directory for port reservations");
    let len = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let start = (RandomState::new().hash_one(std::process::id()) % u64::from(len)) as u32;
    for i in 0..len {
        let port = TEST_PORTS.start + ((start + i) % len) as u16;
        let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
        else {
            continue;
        };
        // Held by another test process, or in use by something else.
        if file.try_lock().is_err() || std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        HELD.lock().expect("port reservations").push(file);
        return port;
    }
    panic!("no free loopback port in {TEST_PORTS:?}");
}

/// Where [`free_port`] takes ports from.
pub const TEST_PORTS: std::ops::Range<u16> = 20_000..28_000;

/// The start of the `window_secs`-long window holding this instant: a test
/// aggregator's schedule epoch, so that what a test sends at once is in a
/// scheduled window (the default epoch is the *next* window).
pub fn current_window_start(window_secs: u32) -> i64 {
    let length = i64::from(window_secs) * 1000;
    now_ms().div_euclid(length) * length
}

/// A plain producer to the test broker, for writing topics as ingest would.
pub fn producer() -> anyhow::Result<rdkafka::producer::FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()?)
}

/// Produces `record` sealed to this process's payload public key (as ingest
/// would) under `key`, and waits for the broker's acknowledgement.
pub async fn produce_sealed(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    key: &str,
    record: &hushmap_schema::CoarseRecord,
) -> anyhow::Result<()> {
    producer
        .send(
            rdkafka::producer::FutureRecord::to(topic)
                .key(key)
                .payload(&payload_public_key().seal(record)[..]),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

/// Creates topics on `brokers`, failing loudly if the broker is not there.
/// As deploy/kafka makes the submissions topic, the broker stamps each
/// record when it appends it (`message.timestamp.type=LogAppendTime`: the
/// aggregator refuses a topic whose producers stamp their own; harmless on
/// the other topics).
pub async fn create_topics_on(brokers: &str, topics: &[(&str, i32)]) -> anyhow::Result<()> {
    create_topics_configured(
        brokers,
        topics,
        &[("message.timestamp.type", "LogAppendTime")],
    )
    .await
}

/// Creates topics on `brokers` with the settings `config` (and otherwise
/// the broker's defaults).
pub async fn create_topics_configured(
    brokers: &str,
    topics: &[(&str, i32)],
    config: &[(&str, &str)],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = plain_config(brokers).create()?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, p)| {
            config.iter().fold(
                NewTopic::new(name, *p, TopicReplication::Fixed(1)),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    for result in admin.create_topics(new.iter(), &opts).await? {
        result.map_err(|(topic, e)| {
            anyhow::anyhow!("creating {topic}: {e} (is Kafka up? run deploy/kafka/up.sh)")
        })?;
    }
    // Created is not yet usable: a partition's leader is elected a moment
    // later, and a service that reads the topic's metadata before then gets
    // NotLeaderForPartition (end_to_end failed so once, warm CI at f2772ed).
    // Ready when every partition of every topic has a leader.
    let names: Vec<String> = topics.iter().map(|(t, _)| t.to_string()).collect();
    let config = plain_config(brokers);
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = config.create()?;
        wait_until_blocking(
            "every partition of the new topics to have a leader",
            Duration::from_secs(30),
            || {
                for topic in &names {
                    let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))
                    else {
                        return Ok(None);
                    };
                    let ready = metadata.topics().iter().all(|t| {
                        t.error().is_none()
                            && !t.partitions().is_empty()
                            && t.partitions()
                                .iter()
                                .all(|p| p.error().is_none() && p.leader() >= 0)
                    });
                    if !ready {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            },
        )
    })
    .await?
}

/// A topic's settings as the broker reports them (`describe_configs`).
pub async fn topic_config_on(
    brokers: &str,
    topic: &str,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let admin: AdminClient<DefaultClientContext> = plain_config(brokers).create()?;
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await?;
    let resource = results
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no answer for {topic}"))?
        .map_err(|e| anyhow::anyhow!("{topic}: {e} (did deploy/kafka create it?)"))?;
    Ok(resource
        .entries
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect())
}

/// Creates topics on the test broker.
pub async fn create_topics(topics: &[(&str, i32)]) -> anyhow::Result<()> {
    create_topics_on(&brokers(), topics).await
}

/// Every record (key, payload) on a topic, from offset 0 to its end,
/// including records of open or aborted transactions: what a thief with the
/// broker's disk would see.
pub fn topic_records_on(brokers: &str, topic: &str) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    read_topic(&plain_config(brokers), topic, "read_uncommitted")
}

/// [`topic_records_on`] through a client made from `config`.
pub fn topic_records_with(
    config: &ClientConfig,
    topic: &str,
) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    read_topic(config, topic, "read_uncommitted")
}

/// Every committed record (key, payload) on a topic: what downstream
/// `read_committed` consumers see.
pub fn committed_records_on(brokers: &str, topic: &str) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    read_topic(&plain_config(brokers), topic, "read_committed")
}

fn plain_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

fn read_topic(
    config: &ClientConfig,
    topic: &str,
    isolation: &str,
) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut client = config.clone();
    client
        .set("group.id", unique("raw-reader"))
        .set("isolation.level", isolation);
    let mut records = Vec::new();
    use hushmap_service::consumer::{GiveUp, read_to_end};
    read_to_end(
        &client,
        topic,
        |_| Offset::Beginning,
        GiveUp::After(Duration::from_secs(60)),
        |m| {
            records.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ))
        },
    )?;
    Ok(records)
}

/// Every key and payload byte on a topic of the test broker.
pub fn raw_topic_bytes(topic: &str) -> anyhow::Result<Vec<u8>> {
    Ok(topic_records_on(&brokers(), topic)?
        .into_iter()
        .flat_map(|(k, v)| k.into_iter().chain(v))
        .collect())
}

/// How often [`wait_until`] asks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Waits for a condition: polls `check` every [`POLL_INTERVAL`] until it
/// returns `Some(value)`, and returns that value. The one way tests wait
/// for something to happen; a test never sleeps in place of a condition.
///
/// Fails at once with the error `check` returns (a wait for something
/// that already went wrong would only hide it), and after `limit` with a
/// message naming `what` was awaited and for how long.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyhow::Result<()> {
/// use std::time::{Duration, Instant};
/// let ready_at = Instant::now() + Duration::from_millis(600);
/// let polls = hushmap_testkit::wait_until("the stand-in service to be ready", Duration::from_secs(5), || async {
///     Ok((Instant::now() >= ready_at).then_some("ready"))
/// })
/// .await?;
/// assert_eq!(polls, "ready");
/// let never = hushmap_testkit::wait_until("nothing", Duration::from_millis(300), || async {
///     Ok(None::<()>)
/// });
/// assert!(never.await.unwrap_err().to_string().contains("waiting for nothing"));
/// # Ok(()) }
/// ```
pub async fn wait_until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// [`wait_until`] for code outside an async runtime (threads that drive
/// processes or read topics with blocking clients).
pub fn wait_until_blocking<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Runs a `deploy/kafka` script; on failure, an error with everything it
/// printed.
fn run_kafka_script(script: &str, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<()> {
    let out = Command::new("bash")
        .arg(SpareBroker::script(script))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{script} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A second, private Kafka broker (same `deploy/kafka` scripts, other ports
/// and data directory) that a test may stop and start at will.
pub struct SpareBroker {
    port: u16,
    controller_port: u16,
    protocol: &'static str,
}

impl SpareBroker {
    fn script(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/kafka")
            .join(name)
    }

    fn run(&self, script: &str, args: &[&str]) -> anyhow::Result<()> {
        let env = [
            ("HUSHMAP_KAFKA_PORT", self.port.to_string()),
            (
                "HUSHMAP_KAFKA_CONTROLLER_PORT",
                self.controller_port.to_string(),
            ),
            ("HUSHMAP_KAFKA_SECURITY", self.protocol.to_string()),
        ];
        run_kafka_script(script, args, &env)
    }

    /// Starts a fresh broker (wiping any old state of this port pair).
    pub fn start_fresh(port: u16, controller_port: u16) -> anyhow::Result<SpareBroker> {
        Self::start_fresh_as(port, controller_port, "plaintext")
    }

    /// Starts a fresh broker that speaks only SASL_SSL, with the CA, SCRAM
    /// users and ACLs `deploy/kafka/up.sh` makes ([`SpareBroker::sasl`]).
    pub fn start_fresh_sasl_ssl(port: u16, controller_port: u16) -> anyhow::Result<SpareBroker> {
        Self::start_fresh_as(port, controller_port, "sasl_ssl")
    }

    fn start_fresh_as(
        port: u16,
        controller_port: u16,
        protocol: &'static str,
    ) -> anyhow::Result<SpareBroker> {
        let broker = SpareBroker {
            port,
            controller_port,
            protocol,
        };
        // Wiping goes by port, whatever protocol the old broker spoke.
        broker.run("down.sh", &["--wipe"])?;
        broker.start()?;
        Ok(broker)
    }

    /// How to reach a SASL_SSL broker; `None` for a plaintext one.
    pub fn sasl(&self) -> Option<SaslAccess> {
        (self.protocol == "sasl_ssl").then(|| SaslAccess {
            bootstrap: self.bootstrap(),
            secrets: Self::script(&format!("secrets-{}", self.port)),
        })
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (or restarts) the broker, keeping its data.
    pub fn start(&self) -> anyhow::Result<()> {
        self.run("up.sh", &[])
    }

    /// Stops the broker cleanly, keeping its data.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.run("down.sh", &[])
    }
}

impl Drop for SpareBroker {
    fn drop(&mut self) {
        let _ = self.run("down.sh", &["--wipe"]);
    }
}

/// A local 3-node KRaft cluster (`deploy/kafka/cluster.sh`): replication
/// 3, `min.insync.replicas` 2, Hushmap's topics made. Wiped on drop.
pub struct KafkaCluster {
    base: u16,
}

impl KafkaCluster {
    /// Node `n` (1..=3) serves clients on `base + 10n + 2`.
    pub const DEFAULT_BASE: u16 = 29090;

    fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let env = [("HUSHMAP_KAFKA_CLUSTER_BASE", self.base.to_string())];
        run_kafka_script("cluster.sh", args, &env)
    }

    /// Starts a fresh cluster (wiping any old state at these ports).
    pub fn start_fresh(base: u16) -> anyhow::Result<KafkaCluster> {
        let cluster = KafkaCluster { base };
        cluster.run(&["down", "--wipe"])?;
        cluster.run(&["up"])?;
        Ok(cluster)
    }

    /// `bootstrap.servers` naming all three nodes.
    pub fn bootstrap(&self) -> String {
        (1..=3)
            .map(|n| format!("127.0.0.1:{}", self.base + 10 * n + 2))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `kill -9` of node `n`.
    pub fn kill9(&self, n: u8) -> anyhow::Result<()> {
        self.run(&["kill", &n.to_string()])
    }

    /// Starts node `n` again with its data and waits until it answers.
    pub fn start(&self, n: u8) -> anyhow::Result<()> {
        self.run(&["start", &n.to_string()])
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        let _ = self.run(&["down", "--wipe"]);
    }
}

/// What a client needs to reach a SASL_SSL [`SpareBroker`]: its address,
/// the CA that signed its certificate and the SCRAM users' password files
/// (`admin` and one per service, as `deploy/kafka/up.sh` made them).
#[derive(Debug, Clone)]
pub struct SaslAccess {
    pub bootstrap: String,
    /// `deploy/kafka/secrets-PORT`.
    pub secrets: PathBuf,
}

impl SaslAccess {
    pub fn ca(&self) -> PathBuf {
        self.secrets.join("tls/ca.pem")
    }

    pub fn password_file(&self, user: &str) -> PathBuf {
        self.secrets.join(format!("users/{user}.password"))
    }

    /// The `kafka.security` section a service logging in as `user` gets.
    pub fn security(&self, user: &str) -> KafkaSecurity {
        KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            sasl_username: Some(user.to_string()),
            sasl_password_file: Some(self.password_file(user)),
            ca_location: Some(self.ca()),
            ..KafkaSecurity::default()
        }
    }

    /// A client configuration logging in as `user`.
    pub fn client_config(&self, user: &str) -> anyhow::Result<ClientConfig> {
        Ok(self.security(user).client_config(&self.bootstrap)?)
    }
}

/// Slow-client attacks: connects to `addr` and sends `bytes` (the start of
/// a request) and nothing more.
pub async fn send_partial(addr: std::net::SocketAddr, bytes: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("send");
    s
}

/// How long until the server closed `stream` (reading whatever it sent
/// first); `None` if it was still open after `within`.
pub async fn closed_within(
    mut stream: tokio::net::TcpStream,
    within: Duration,
) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut sink = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut sink))
        .await
        .ok()
        .map(|_| started.elapsed())
}
