//! Kafka over SASL_SSL with a real broker: `deploy/kafka/up.sh` with
//! `HUSHMAP_KAFKA_SECURITY=sasl_ssl` makes a CA, a certificate for
//! 127.0.0.1, SCRAM-SHA-512 users and ACLs on the spot. The three services,
//! as processes, each log in as their own user and carry every submission
//! to a release; the broker refuses a client without TLS, with a wrong
//! password or without the CA, and each service user may touch only what
//! its service needs. `hushmap-leakscan` reads both topics over SASL_SSL.
//! No password reaches a log.

use hushmap_schema::topics;
use hushmap_testkit::{SaslAccess, SpareBroker, topic_records_with, wait_until_blocking};
use hushmap_tests::load::{LOAD_AREA, steady_load};
use hushmap_tests::processes::{ServiceSet, ServiceSetOptions, service_binary};
use hushmap_tests::released_total_reaching;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A port pair no other test uses (broker_outage has 19092, the clusters
/// 29102–29233), below the kernel's ephemeral range (32768–60999 here):
/// there a client socket of a test in the other lane, or a service bound
/// to port 0, may hold the port when this broker starts.
const PORT: u16 = 28092;
const CONTROLLER_PORT: u16 = 28093;

/// Errors librdkafka reports beside the call that failed (failed logins,
/// TLS handshakes, group denials arrive here, not as the call's result).
#[derive(Clone, Default)]
struct ClientErrors(Arc<Mutex<Vec<Told>>>);

/// An error code and librdkafka's reason.
type Told = (Option<RDKafkaErrorCode>, String);

impl ClientContext for ClientErrors {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        self.0.lock().unwrap().push((code, reason.to_string()));
    }
}

impl ConsumerContext for ClientErrors {}

impl ClientErrors {
    fn all(&self) -> Vec<Told> {
        self.0.lock().unwrap().clone()
    }
}

/// Whether a client made from `config` gets the broker's metadata, and
/// what it was told on the way.
async fn metadata_answer(
    config: ClientConfig,
) -> anyhow::Result<(Result<usize, KafkaError>, Vec<Told>)> {
    tokio::task::spawn_blocking(move || {
        let errors = ClientErrors::default();
        let consumer: BaseConsumer<ClientErrors> = config.create_with_context(errors.clone())?;
        let answer = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .map(|m| m.brokers().len());
        // Error events are delivered to the context by polling.
        for _ in 0..10 {
            if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
                errors.error(e, "poll");
            }
        }
        Ok((answer, errors.all()))
    })
    .await?
}

/// What the broker answers when `config`'s user reads `topic` from the
/// start (in consumer group `group`): a denial code, or `None` if the read
/// went through.
async fn read_answer(
    mut config: ClientConfig,
    group: &'static str,
    topic: &'static str,
) -> anyhow::Result<Option<RDKafkaErrorCode>> {
    tokio::task::spawn_blocking(move || {
        let errors = ClientErrors::default();
        let consumer: BaseConsumer<ClientErrors> = config
            .set("group.id", group)
            .set("enable.partition.eof", "true")
            .set("enable.auto.commit", "false")
            .create_with_context(errors.clone())?;
        // A user without Describe does not even see the topic.
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        if let Some(e) = metadata.topics().first().and_then(|t| t.error()) {
            return Ok(Some(RDKafkaErrorCode::from(e)));
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        wait_until_blocking(
            &format!("an answer reading {topic}"),
            Duration::from_secs(20),
            || {
                match consumer.poll(Duration::from_millis(200)) {
                    None => {}
                    Some(Ok(_)) | Some(Err(KafkaError::PartitionEOF(_))) => return Ok(Some(None)),
                    Some(Err(e)) => return Ok(Some(e.rdkafka_error_code())),
                }
                Ok(errors
                    .all()
                    .into_iter()
                    .find(|(c, _)| c.is_some())
                    .map(|(code, _)| code))
            },
        )
        .map_err(|e| e.context(format!("told {:?}", errors.all())))
    })
    .await?
}

/// What the broker answers when `config`'s user writes to `topic`.
async fn write_answer(
    mut config: ClientConfig,
    topic: &str,
) -> anyhow::Result<Option<RDKafkaErrorCode>> {
    let producer: FutureProducer = config.set("message.timeout.ms", "15000").create()?;
    let sent = producer
        .send(
            FutureRecord::to(topic)
                .key("forged")
                .payload(&b"forged"[..]),
            Duration::from_secs(15),
        )
        .await;
    Ok(sent.err().and_then(|(e, _)| e.rdkafka_error_code()))
}

fn with(config: &ClientConfig, key: &str, value: &str) -> ClientConfig {
    let mut config = config.clone();
    config.set(key, value);
    config
}

/// Every file under `dir`, read as bytes.
fn files_under(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_run_over_sasl_ssl_and_the_broker_refuses_everyone_else() -> anyhow::Result<()> {
    let broker =
        tokio::task::spawn_blocking(|| SpareBroker::start_fresh_sasl_ssl(PORT, CONTROLLER_PORT))
            .await??;
    let sasl: SaslAccess = broker.sasl().expect("a SASL_SSL broker");
    let admin = sasl.client_config("admin")?;

    // The broker answers its admin, so the refusals below are refusals.
    let (answer, told) = metadata_answer(admin.clone()).await?;
    assert!(
        matches!(answer, Ok(1)),
        "admin refused: {answer:?} {told:?}"
    );

    // Plaintext to the SASL_SSL port; a wrong password; the right password
    // without our CA (the system store does not trust it).
    let mut plain = ClientConfig::new();
    plain.set("bootstrap.servers", &sasl.bootstrap);
    let wrong_password = with(&admin, "sasl.password", "not-the-password");
    let mut no_ca = sasl.security("admin");
    no_ca.ca_location = None;
    let no_ca = no_ca.client_config(&sasl.bootstrap)?;
    let (plain, wrong_password, no_ca) = tokio::join!(
        metadata_answer(plain),
        metadata_answer(wrong_password),
        metadata_answer(no_ca)
    );
    for (what, (answer, told), expected) in [
        ("plaintext", plain?, None),
        (
            "a wrong password",
            wrong_password?,
            Some("invalid credentials"),
        ),
        ("no CA", no_ca?, Some("certificate verify failed")),
    ] {
        assert!(answer.is_err(), "a client with {what} got in: {answer:?}");
        // Refused for the right reason, not because the broker is down.
        if let Some(expected) = expected {
            assert!(
                told.iter().any(|(_, reason)| reason.contains(expected)),
                "{what}: expected {expected:?}, was told {told:?}"
            );
        }
        eprintln!("{what}: refused; told {:?}", told.first());
    }

    // Least privilege: ingest's user may not read submissions nor forge
    // releases; the dashboard's may not read submissions.
    let ingest_user = sasl.client_config("hushmap-ingest")?;
    let dashboard_user = sasl.client_config("hushmap-dashboard")?;
    let aggregate_user = sasl.client_config("hushmap-aggregate")?;
    // Ingest's user has no group at all; either denial will do.
    let ingest_read = read_answer(
        ingest_user.clone(),
        "hushmap-ingest-test",
        topics::SUBMISSIONS,
    );
    assert!(
        matches!(
            ingest_read.await?,
            Some(
                RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::GroupAuthorizationFailed
            )
        ),
        "ingest's user read submissions"
    );
    // The dashboard's may use its groups, but not on that topic.
    assert_eq!(
        read_answer(
            dashboard_user.clone(),
            "hushmap-dashboard-test",
            topics::SUBMISSIONS
        )
        .await?,
        Some(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    assert_eq!(
        write_answer(ingest_user, topics::RELEASES).await?,
        Some(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    assert_eq!(
        write_answer(dashboard_user, topics::RELEASES).await?,
        Some(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    // The grants exist: the aggregator's user reads submissions.
    assert_eq!(
        read_answer(
            aggregate_user,
            "hushmap-aggregate-test",
            topics::SUBMISSIONS
        )
        .await?,
        None
    );

    // The pipeline over SASL_SSL, each service as its own user, everything
    // our code logs at its most verbose.
    let services = ServiceSet::start(ServiceSetOptions {
        name: "sasl-ssl".into(),
        window_secs: 5,
        log_filter: "trace".into(),
        public_bbox: LOAD_AREA,
        sasl: Some(sasl.clone()),
    })
    .await?;
    let load = steady_load(&services.ingest_url, 20.0, Duration::from_secs(12)).await?;
    assert_eq!(
        (load.accepted, load.unavailable, load.other),
        (load.sent, 0, 0),
        "every submission acknowledged over SASL_SSL"
    );
    let released = released_total_reaching(&services.dashboard_url, load.accepted).await?;
    assert_eq!(released, load.accepted as i64);
    let submissions = {
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || topic_records_with(&admin, topics::SUBMISSIONS))
            .await??
    };
    assert_eq!(submissions.len() as u64, load.accepted);
    eprintln!(
        "over SASL_SSL: {} sent, {} accepted, {released} released",
        load.sent, load.accepted
    );

    // An operator's leak scan of both topics over SASL_SSL (as the admin,
    // password from the file): reads every record, finds nothing.
    let needles = services.run_dir.join("needles.txt");
    std::fs::write(&needles, &load.needles)?;
    let mut scan = std::process::Command::new(service_binary("hushmap-leakscan")?);
    scan.args(["--brokers", &sasl.bootstrap, "--kafka-user", "admin"])
        .arg("--kafka-password-file")
        .arg(sasl.password_file("admin"))
        .arg("--kafka-ca")
        .arg(sasl.ca())
        .args(["--topic", topics::SUBMISSIONS, "--topic", topics::RELEASES])
        .arg("--needles")
        .arg(&needles);
    let scanned = tokio::task::spawn_blocking(move || scan.output()).await??;
    let report = String::from_utf8_lossy(&scanned.stderr);
    assert!(
        scanned.status.success(),
        "leakscan over SASL_SSL: {report}{}",
        String::from_utf8_lossy(&scanned.stdout)
    );
    assert!(report.contains("2 sources"), "{report}");
    eprintln!("{}", report.lines().last().unwrap_or_default());

    // No password in any service or broker log.
    let passwords: Vec<(String, String)> = [
        "admin",
        "hushmap-ingest",
        "hushmap-aggregate",
        "hushmap-dashboard",
    ]
    .iter()
    .map(|u| {
        let p = std::fs::read_to_string(sasl.password_file(u))?;
        Ok((u.to_string(), p.trim().to_string()))
    })
    .collect::<anyhow::Result<_>>()?;
    let broker_logs = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../deploy/kafka/logs-{PORT}"));
    let logs: Vec<_> = files_under(&services.log_dir)
        .into_iter()
        .chain(files_under(&broker_logs))
        .collect();
    assert!(logs.len() >= 4, "service and broker logs are there");
    let mut scanned = 0;
    for (file, bytes) in &logs {
        scanned += bytes.len();
        for (user, password) in &passwords {
            assert!(
                !bytes
                    .windows(password.len())
                    .any(|w| w == password.as_bytes()),
                "{user}'s password is in {file}"
            );
        }
    }
    eprintln!("no password in {} log files, {scanned} bytes", logs.len());
    Ok(())
}
