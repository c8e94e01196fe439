//! The dashboard terminates TLS itself, on the page and on Flight: a
//! client that trusts the deployment's CA gets both over TLS; a client
//! speaking plain HTTP or plain gRPC gets nothing (and is counted); a
//! certificate replaced on disk is served to the next handshake without a
//! restart; a broken replacement is refused and counted, and the previous
//! certificate stays. Real listeners, real TLS (rustls both sides),
//! certificates made by the openssl command line.
//!
//! Ingest too (issue 34, item 11): behind an ingress that re-encrypts, ID
//! tokens and answers never cross the cluster network in clear. A
//! submission over TLS is accepted; plain HTTP to the TLS port gets no
//! HTTP answer.

use arrow_flight::Criteria;
use arrow_flight::flight_service_client::FlightServiceClient;
use hushmap_tests::StandaloneDashboard;
use hushmap_tests::pki::Pki;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn leaf_der(crt: &Path) -> anyhow::Result<Vec<u8>> {
    Ok(CertificateDer::pem_file_iter(crt)?
        .next()
        .ok_or_else(|| anyhow::anyhow!("no certificate in {crt:?}"))??
        .to_vec())
}

/// An HTTP/1.1 GET over TLS: the response text and the certificate the
/// server presented.
async fn https_get(
    connector: &TlsConnector,
    addr: std::net::SocketAddr,
    path: &str,
) -> anyhow::Result<(String, Vec<u8>)> {
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response)).await??;
    Ok((String::from_utf8_lossy(&response).into_owned(), presented))
}

/// What a plain-HTTP client gets from a TLS port.
async fn plain_get(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response)).await?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_serves_tls_on_both_listeners_and_follows_its_certificate_files()
-> anyhow::Result<()> {
    let pki = Pki::new()?;
    let (first_crt, first_key) = pki.leaf("first")?;
    let (served_crt, served_key) = (pki.path("tls.crt"), pki.path("tls.key"));
    std::fs::copy(&first_crt, &served_crt)?;
    std::fs::copy(&first_key, &served_key)?;
    let dashboard = StandaloneDashboard::start(|c| {
        c.tls.cert_file = Some(served_crt.clone());
        c.tls.key_file = Some(served_key.clone());
        c.tls.reload_interval_ms = 200;
    })
    .await?;
    let connector = pki.connector()?;

    // The page over TLS, with the configured certificate.
    let (response, presented) = https_get(&connector, dashboard.http, "/healthz").await?;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(presented, leaf_der(&first_crt)?);

    // Plain HTTP to the TLS port: no HTTP answer, and counted.
    let plain = plain_get(dashboard.http).await?;
    assert!(
        !plain.contains("HTTP/1.1"),
        "plain HTTP was answered: {plain}"
    );

    // Flight over TLS (HTTP/2 by ALPN), and not in plain gRPC.
    let flight_addr = dashboard.flight;
    let tls_channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn({
            let connector = connector.clone();
            move |_: tonic::codegen::http::Uri| {
                let connector = connector.clone();
                async move {
                    let tcp = TcpStream::connect(flight_addr).await?;
                    let tls = connector
                        .connect(ServerName::try_from("localhost").expect("a name"), tcp)
                        .await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }
        }))
        .await?;
    FlightServiceClient::new(tls_channel)
        .list_flights(Criteria::default())
        .await?;
    let plain_channel = tonic::transport::Endpoint::from_shared(format!("http://{flight_addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let refused = FlightServiceClient::new(plain_channel)
        .list_flights(Criteria::default())
        .await;
    assert!(refused.is_err(), "plain gRPC was served");

    let metrics = https_get(&connector, dashboard.http, "/metrics").await?.0;
    assert!(
        counter(
            &metrics,
            "hushmap_dashboard_http_tls_handshakes_failed_total{listener=\"http\"}"
        ) >= 1,
        "{metrics}"
    );
    assert!(
        counter(
            &metrics,
            "hushmap_dashboard_http_tls_handshakes_failed_total{listener=\"flight\"}"
        ) >= 1,
        "{metrics}"
    );

    // The certificate rotated on disk (a new key too): the next handshakes
    // get it, without a restart.
    let (second_crt, second_key) = pki.leaf("second")?;
    let second = leaf_der(&second_crt)?;
    std::fs::copy(&second_key, &served_key)?;
    std::fs::copy(&second_crt, &served_crt)?;
    hushmap_testkit::wait_until(
        "the rotated certificate to be served",
        Duration::from_secs(10),
        || async {
            Ok(
                (https_get(&connector, dashboard.http, "/healthz").await?.1 == second)
                    .then_some(()),
            )
        },
    )
    .await?;

    // A broken replacement is refused and counted; the last good pair stays.
    std::fs::write(
        &served_crt,
        "-----BEGIN CERTIFICATE-----\nnot a certificate\n",
    )?;
    let failures = hushmap_testkit::wait_until(
        "the broken certificate to be refused",
        Duration::from_secs(10),
        || async {
            let metrics = https_get(&connector, dashboard.http, "/metrics").await?.0;
            let n = counter(&metrics, "hushmap_dashboard_tls_reload_failures_total");
            Ok((n >= 1).then_some(n))
        },
    )
    .await?;
    assert!(failures >= 1);
    let (response, presented) = https_get(&connector, dashboard.http, "/healthz").await?;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(
        presented, second,
        "the broken files replaced a working pair"
    );
    std::fs::remove_dir_all(pki.dir())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_serves_tls_itself() -> anyhow::Result<()> {
    use hushmap_ingest::{IngestConfig, IngestServer};
    use hushmap_testkit::{brokers, create_topics, payload_keyring, unique};
    let pki = Pki::new()?;
    let (crt, key) = pki.leaf("ingest")?;
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = IngestConfig {
        listen: loopback,
        admin_listen: loopback,
        dev_mode: true,
        payload_public_key: Some(payload_keyring().public_key()),
        ..IngestConfig::default()
    };
    config.kafka.brokers = brokers();
    config.kafka.topic = unique("test.ingest-tls");
    config.rate_limit.per_minute = 0;
    config.tls.cert_file = Some(crt.clone());
    config.tls.key_file = Some(key);
    create_topics(&[(&config.kafka.topic, 1)]).await?;
    let server = IngestServer::bind(config).await?;
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));

    let (page, presented) = https_get(&pki.connector()?, addr, "/healthz").await?;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    // Served over TLS by ingest itself: browsers are told to stay on HTTPS.
    assert!(
        page.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "{page}"
    );
    assert_eq!(presented, leaf_der(&crt)?);
    // A submission over TLS, as the re-encrypting ingress sends it.
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
            pki.path("ca.crt"),
        )?)?)
        .build()?;
    let answer = client
        .post(format!("https://localhost:{}/v1/submissions", addr.port()))
        .json(
            &serde_json::json!({"for": "self", "age": 40, "gender": "female",
            "symptoms": ["fever"], "conditions": [], "travelled_internationally_14d": false,
            "contact_with_confirmed_case": false, "location": {"lat": 19.1, "lon": 72.9}}),
        )
        .send()
        .await?;
    assert_eq!(answer.status(), 202);
    // Plain HTTP to the TLS port: no HTTP answer at all.
    let plain = plain_get(addr).await?;
    assert!(!plain.contains("HTTP/1.1 200"), "{plain}");
    let _ = stop.send(());
    Ok(())
}
