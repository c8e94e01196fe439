//! Where risk is rising, through the real parts: releases on a real Kafka
//! topic (three hours at a steady 10% high-risk share, then one where four
//! cells jump to 40%), a real dashboard reading them, `GET /api/v1/alerts`
//! over HTTP, and the Alertmanager-shaped webhook received by a real HTTPS
//! server (its own CA, given to the dashboard as `alerts.webhook_ca_file`)
//! that checks each delivery's signature. The statistics themselves (false alarms under noise alone, the
//! normal tail, Benjamini–Hochberg) are unit-tested in
//! `dashboard/src/alerts.rs`.

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use hushmap_dashboard::alerts::WebhookFormat;
use hushmap_dashboard::webhook::{SIGNATURE_HEADER, signature};
use hushmap_schema::region::RegionResolution;
use hushmap_schema::release::CellLabel;
use hushmap_schema::{AgeBand, RegionCell, ReleaseRow};
use hushmap_testkit::{hourly_release, now_ms, producer};
use hushmap_tests::pki::Pki;
use hushmap_tests::{StandaloneDashboard, browser, create_topics, unique, wait_until};
use rdkafka::producer::FutureRecord;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const HOUR_MS: i64 = 3_600_000;
/// `hourly_release`'s hour 0.
const HOUR_ZERO_MS: i64 = 1_767_225_600_000;
const CELLS: usize = 40;

/// Region `i` of the test: resolution-5 cells along a line.
fn region(i: usize) -> String {
    let five = RegionResolution::new(5).unwrap();
    RegionCell::from_coordinate(10.0 + 0.3 * i as f64, 73.8, five)
        .unwrap()
        .to_string()
}

/// The release of `hour`: every region 600 people per band (σ 10 stated),
/// high share 10%, or 40% where `outbreak(region)`.
fn release(hour: i64, outbreak: impl Fn(usize) -> bool) -> Vec<u8> {
    let start = HOUR_ZERO_MS + hour * HOUR_MS;
    let rows = (0..CELLS)
        .flat_map(|i| {
            let high = if outbreak(i) { 240 } else { 60 };
            AgeBand::ALL.into_iter().map(move |band| {
                let label = CellLabel {
                    window_start: start,
                    window_end: start + HOUR_MS,
                    level: 5,
                    region: region(i),
                    age_band: band.label().into(),
                };
                ReleaseRow::from_noisy_counts(label, [500 - high, 100, high], [0; 10], 10.0, 0.15)
            })
        })
        .collect();
    let mut release = hourly_release(hour, rows);
    // It measured symptom counts (none had fever): symptom alerts test it.
    release
        .meta
        .statistic_costs
        .push(hushmap_schema::StatisticCost {
            statistic: "symptom_counts".into(),
            level: 5,
            cost: 0.005,
            delta: 0.0,
        });
    release.to_ipc().unwrap()
}

/// What the webhook's receiver got: the signature header, and the body.
type Delivery = (Option<String>, Bytes);

/// The key the dashboard signs deliveries with, as its file holds it.
const WEBHOOK_KEY: &str = "webhook-key-for-the-alerts-test-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rise_in_a_few_cells_is_listed_and_sent_to_the_webhook() -> anyhow::Result<()> {
    // The health department's end: an HTTPS server under its own CA that
    // keeps what it gets, with the signature header it came with.
    let received: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let sink = received.clone();
    let receiver = axum::Router::new().route(
        "/api/v2/alerts",
        post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let signed = headers
                    .get(SIGNATURE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                sink.lock().unwrap().push((signed, body));
                "ok"
            }
        }),
    );
    let pki = Pki::new()?;
    let (crt, key) = pki.leaf("webhook")?;
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        CertificateDer::pem_file_iter(&crt)?.collect::<Result<Vec<_>, _>>()?,
        PrivateKeyDer::from_pem_file(&key)?,
    )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    // Credentials in the URL (reqwest sends them as basic auth; no log
    // shows them: the webhook unit tests).
    let webhook = format!(
        "https://hook:hook-password-3f9a@127.0.0.1:{}/api/v2/alerts",
        listener.local_addr()?.port()
    );
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, receiver) = (acceptor.clone(), receiver.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(tls),
                        hyper_util::service::TowerToHyperService::new(receiver),
                    )
                    .await;
                }
            });
        }
    });
    let key_file = pki.path("webhook.hmac");
    std::fs::write(&key_file, WEBHOOK_KEY)?;

    let topic = unique("test.alerts.releases");
    create_topics(&[(&topic, 1)]).await?;
    let dashboard = StandaloneDashboard::start(|c| {
        c.kafka.releases_topic = topic.clone();
        c.alerts.webhook_url = Some(webhook.clone());
        c.alerts.webhook_ca_file = Some(pki.path("ca.crt"));
        c.alerts.webhook_secret_file = Some(key_file.clone());
        c.alerts.webhook_format = WebhookFormat::Alertmanager;
    })
    .await?;

    // The newest window ends at the last full hour: recent enough to send.
    let newest = (now_ms() - HOUR_ZERO_MS).div_euclid(HOUR_MS) - 1;
    let outbreak = |i: usize| i % 10 == 3;
    let producer = producer()?;
    for hour in newest - 3..=newest {
        let payload = if hour == newest {
            release(hour, outbreak)
        } else {
            release(hour, |_| false)
        };
        producer
            .send(
                FutureRecord::<(), _>::to(&topic).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    let expected: BTreeSet<String> = (0..CELLS).filter(|i| outbreak(*i)).map(region).collect();

    let http = reqwest::Client::new();
    let base = format!("http://{}", dashboard.http);
    let report: Value = wait_until(
        "the dashboard to hold every window",
        Duration::from_secs(30),
        || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let r: Value = http
                    .get(format!("{base}/api/v1/alerts"))
                    .send()
                    .await?
                    .json()
                    .await?;
                Ok((r["baseline_windows"].as_array().map(Vec::len) == Some(3)).then_some(r))
            }
        },
    )
    .await?;
    assert_eq!(report["window_start"], HOUR_ZERO_MS + newest * HOUR_MS);
    assert_eq!(report["age_band"], "all");
    assert_eq!(report["cells_tested"], CELLS);
    let flagged: BTreeSet<String> = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["region"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(flagged, expected);
    let first = &report["alerts"][0];
    assert_eq!(report["metric"], "high_share");
    assert!(first["latest"]["share"].as_f64().unwrap() > 0.35);
    assert!(first["baseline"]["share"].as_f64().unwrap() < 0.15);
    assert!(first["p_value"].as_f64().unwrap() < 1e-6);
    assert_eq!(first["baseline"]["windows"].as_array().unwrap().len(), 3);
    assert!(
        first["boundary"].as_array().unwrap().len() >= 6,
        "an outline to draw"
    );

    // One band, and another baseline length, on request; bad ones refused.
    let band: Value = http
        .get(format!("{base}/api/v1/alerts?age_band=30-44&baseline=2"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(band["baseline_windows"].as_array().unwrap().len(), 2);
    assert_eq!(band["alerts"].as_array().unwrap().len(), expected.len());
    // A symptom's rate: the same cells are tested; nobody had fever, in any
    // window, so nothing rose.
    let fever: Value = http
        .get(format!("{base}/api/v1/alerts?metric=sym_fever"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(fever["metric"], "sym_fever");
    assert_eq!(fever["cells_tested"], CELLS);
    assert_eq!(fever["alerts"].as_array().unwrap().len(), 0);
    for bad in ["baseline=0", "fdr=2", "age_band=elderly", "metric=fever"] {
        let r = http
            .get(format!("{base}/api/v1/alerts?{bad}"))
            .send()
            .await?;
        assert_eq!(r.status(), 422, "{bad}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }

    // The webhook got the newest window's alerts once, as Alertmanager
    // takes them.
    let bodies = wait_until("the webhook to be called", Duration::from_secs(20), || {
        let received = received.clone();
        async move {
            let got = received.lock().unwrap().clone();
            Ok((!got.is_empty()).then_some(got))
        }
    })
    .await?;
    // Real time, not a condition: a second call, were there one, would
    // come within 2 s, and an absence cannot be awaited.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(received.lock().unwrap().len(), 1, "sent once");
    // Signed with the shared key: the receiver recomputes the signature
    // over the timestamp and the body it got, and finds the time now.
    let (signed, body) = &bodies[0];
    let signed = signed.as_deref().expect("a signature header");
    let t: i64 = signed
        .strip_prefix("t=")
        .and_then(|rest| rest.split(',').next())
        .and_then(|t| t.parse().ok())
        .expect("t=<seconds>");
    assert_eq!(signed, signature(WEBHOOK_KEY.as_bytes(), t, body));
    assert!((now_ms() / 1000 - t).abs() < 120, "signed at {t}");
    assert_ne!(
        signed,
        signature(b"another key of thirty-two bytes!", t, body),
        "the signature depends on the key"
    );
    let body: Value = serde_json::from_slice(body)?;
    let alerts = body.as_array().expect("a list of alerts");
    let regions: BTreeSet<String> = alerts
        .iter()
        .map(|a| a["labels"]["region"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(regions, expected);
    // Counted for the operator.
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("hushmap_dashboard_alert_webhooks_total{outcome=\"delivered\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("hushmap_dashboard_alert_webhooks_total{outcome=\"failed\"} 0"));
    for a in alerts {
        assert_eq!(a["labels"]["alertname"], "HushmapHighRiskShareRising");
        assert!(a["startsAt"].as_str().unwrap().ends_with('Z'));
        assert!(
            a["annotations"]["summary"]
                .as_str()
                .unwrap()
                .contains("rose")
        );
    }

    // The page in a real browser: each alert outlined on the map and
    // listed beside it; the screenshot is kept at
    // target/test-artifacts/alerts.png.
    let shot = browser::artefact("alerts.png")?;
    let expected_count = expected.len().to_string();
    let args = [
        base.as_ref(),
        "/".as_ref(),
        expected_count.as_ref(),
        shot.as_os_str(),
    ];
    println!("{}", browser::run_page_script("alerts.mjs", &args).await?);
    assert!(
        std::fs::metadata(&shot)?.len() > 10_000,
        "screenshot is suspiciously small"
    );
    Ok(())
}
