//! Sends each new window's alerts to a health department's endpoint: the
//! alert report as JSON, or a list of alerts in the form Prometheus
//! Alertmanager's `POST /api/v2/alerts` takes.
//!
//! The release consumer tells [`spawn_alert_webhook`] about every window it
//! stores for the first time. A window is reported when it is the newest
//! stored and recent (it ended within two window lengths of now), so a
//! dashboard replaying the releases topic at start-up does not resend
//! history; when it holds alerts (finest level, all ages); at most once.
//! Delivery is tried three times (2 s, then 4 s apart). The body holds
//! published values only, so sending it discloses nothing the dashboard
//! does not already serve; what it guards is the receiver's trust in it.
//! So it goes over TLS ([`WebhookClient`]: rustls, the system's roots and
//! an optional CA file; plain http:// only to a loopback relay; no
//! redirects followed), signed with a key the receiver shares
//! (`X-Hushmap-Signature`, HMAC-SHA256 over a timestamp and the body), and
//! the URL, which may carry credentials, is never logged.

use crate::alerts::{
    AlertMetric, AlertReport, AlertSettings, AlertSettingsError, CellAlert, WebhookFormat,
    store_alerts,
};
use crate::heatmap::BandFilter;
use crate::store::ReleaseStore;
use hmac::{Hmac, Mac};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::mpsc;

/// What the webhook task needs: its settings, the store to read and
/// where to count what it sent.
pub struct AlertWebhook {
    pub settings: AlertSettings,
    pub store: Arc<RwLock<ReleaseStore>>,
    pub stats: Arc<WebhookStats>,
}

/// Windows' alerts sent, by outcome (served on `/metrics`).
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Accepted (2xx) by the webhook.
    pub delivered: AtomicU64,
    /// Not accepted after three tries.
    pub failed: AtomicU64,
}

/// Starts the task that reports each window sent on the returned channel;
/// `None` (and no task) without a webhook URL.
pub fn spawn_alert_webhook(
    webhook: AlertWebhook,
) -> Option<(mpsc::UnboundedSender<i64>, tokio::task::JoinHandle<()>)> {
    let url = webhook.settings.webhook_url.clone()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<i64>();
    let client = match WebhookClient::new(&webhook.settings) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "the alert webhook cannot be used");
            return None;
        }
    };
    let task = tokio::spawn(async move {
        while let Some(window_start) = rx.recv().await {
            // The compared windows' rows may come from their files.
            let (store, settings) = (webhook.store.clone(), webhook.settings.clone());
            let report =
                crate::state::off_the_workers(move || report_for(&store, &settings, window_start))
                    .await;
            let Some(report) = report else {
                continue;
            };
            let body = match webhook.settings.webhook_format {
                WebhookFormat::Report => serde_json::to_value(&report).unwrap_or(Value::Null),
                WebhookFormat::Alertmanager => alertmanager_body(&report),
            };
            let counter = match deliver(&client, &url, &body, report.alerts.len()).await {
                true => &webhook.stats.delivered,
                false => &webhook.stats.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    Some((tx, task))
}

/// The report to send for `window_start`, if it is the newest stored,
/// recent, and holds alerts.
fn report_for(
    store: &RwLock<ReleaseStore>,
    settings: &AlertSettings,
    window_start: i64,
) -> Option<AlertReport> {
    let store = store.read().expect("store lock");
    let newest = &store.latest_window()?.meta;
    let length = newest.window_end - newest.window_start;
    let now = hushmap_service::clock::now_ms();
    if newest.window_start != window_start || newest.window_end < now - 2 * length {
        return None;
    }
    let report = store_alerts(
        &store,
        Some(window_start),
        BandFilter::All,
        None,
        AlertMetric::HighShare,
        settings,
    );
    let report = match report {
        Ok(report) => report?,
        Err(e) => {
            tracing::error!(error = %e, "alerts for the webhook could not be computed");
            return None;
        }
    };
    (!report.alerts.is_empty()).then_some(report)
}

/// Whether the webhook accepted `body`, within three tries.
async fn deliver(client: &WebhookClient, url: &str, body: &Value, alerts: usize) -> bool {
    let body = serde_json::to_vec(body).unwrap_or_default();
    for attempt in 1..=3u32 {
        match client.post(url, &body).send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(alerts, attempt, "alerts sent to the webhook");
                return true;
            }
            Ok(r) => {
                tracing::warn!(
                    status = r.status().as_u16(),
                    attempt,
                    "webhook refused the alerts"
                )
            }
            Err(e) => tracing::warn!(error = %without_url(e), attempt, "webhook unreachable"),
        }
        if attempt < 3 {
            tokio::time::sleep(Duration::from_secs(2 << (attempt - 1))).await;
        }
    }
    tracing::error!(
        alerts,
        "alerts not delivered to the webhook after 3 attempts"
    );
    false
}

/// A delivery error as it may be logged: without the URL, which can hold
/// credentials (reqwest's errors name it).
pub fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    // The chain's sources name the failure (refused, TLS, timeout).
    let mut words = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        words.push_str(": ");
        words.push_str(&inner.to_string());
        source = inner.source();
    }
    words
}

/// Refuses a webhook URL that is not https:// (or http:// to loopback).
pub fn check_url(url: &str) -> Result<(), AlertSettingsError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| AlertSettingsError::WebhookUrl)?;
    let host = parsed.host_str().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" if !host.is_empty() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(AlertSettingsError::WebhookUrl),
    }
}

/// The webhook's HTTP client (TLS with the system's roots and
/// `alerts.webhook_ca_file`, no redirects, a 10 s timeout) and its signing
/// key.
pub struct WebhookClient {
    http: reqwest::Client,
    key: Option<Vec<u8>>,
}

/// The shortest signing key accepted.
pub const MIN_WEBHOOK_KEY_BYTES: usize = 32;

impl WebhookClient {
    pub fn new(settings: &AlertSettings) -> Result<WebhookClient, AlertSettingsError> {
        let ca = |e: String| AlertSettingsError::WebhookCa(e);
        let mut roots = rustls::RootCertStore::empty();
        let system = std::env::var_os("SSL_CERT_FILE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
        if let Ok(pem) = std::fs::read(&system) {
            roots.add_parsable_certificates(
                CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok),
            );
        }
        if let Some(file) = &settings.webhook_ca_file {
            let pem = std::fs::read(file).map_err(|e| ca(format!("{}: {e}", file.display())))?;
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| ca(format!("{}: {e}", file.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| ca(format!("{}: {e}", file.display())))?;
                added += 1;
            }
            if added == 0 {
                return Err(ca(format!("{}: no certificate in it", file.display())));
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ca(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .use_preconfigured_tls(tls)
            // A redirect could take the signed body elsewhere, or to http.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ca(without_url(e)))?;
        let key = match &settings.webhook_secret_file {
            None => None,
            Some(file) => {
                let secret = |e: String| AlertSettingsError::WebhookSecret(e);
                let key =
                    std::fs::read(file).map_err(|e| secret(format!("{}: {e}", file.display())))?;
                let key = key.trim_ascii().to_vec();
                if key.len() < MIN_WEBHOOK_KEY_BYTES {
                    return Err(secret(format!(
                        "{}: the key must be at least {MIN_WEBHOOK_KEY_BYTES} bytes",
                        file.display()
                    )));
                }
                Some(key)
            }
        };
        Ok(WebhookClient { http, key })
    }

    /// A POST of `body` (JSON) to `url`, signed if a key is set.
    fn post(&self, url: &str, body: &[u8]) -> reqwest::RequestBuilder {
        let request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        match &self.key {
            None => request,
            Some(key) => {
                let t = OffsetDateTime::now_utc().unix_timestamp();
                request.header(SIGNATURE_HEADER, signature(key, t, body))
            }
        }
    }
}

/// The header a signed delivery carries.
pub const SIGNATURE_HEADER: &str = "x-hushmap-signature";

/// `t=<t>,v1=<hex HMAC-SHA256(key, "<t>." ‖ body)>`: what a receiver
/// recomputes with the shared key to know a delivery is the dashboard's
/// and unchanged, and whose `t` it compares with its clock.
///
/// ```
/// let s = hushmap_dashboard::webhook::signature(b"k", 1700000000, b"{}");
/// assert!(s.starts_with("t=1700000000,v1="));
/// assert_eq!(s.len(), "t=1700000000,v1=".len() + 64);
/// ```
pub fn signature(key: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Alertmanager's `PostableAlerts`: one alert per cell, active for the
/// window after the one that raised it (a rise that lasts is raised again
/// by the next window).
///
/// ```
/// # use hushmap_dashboard::alerts::AlertReport;
/// let report = AlertReport {
///     window_start: 0, window_end: 3_600_000, level: Some(5), age_band: "all",
///     metric: "high_share".into(),
///     baseline_windows: vec![], fdr: 0.05, cells_tested: 0, cells_untested: 0, alerts: vec![],
/// };
/// assert_eq!(hushmap_dashboard::webhook::alertmanager_body(&report), serde_json::json!([]));
/// ```
pub fn alertmanager_body(report: &AlertReport) -> Value {
    let length = report.window_end - report.window_start;
    let metric_words = {
        let words = AlertMetric::parse(Some(&report.metric))
            .unwrap_or(AlertMetric::HighShare)
            .describe();
        let mut chars = words.chars();
        chars
            .next()
            .map(|c| c.to_uppercase().chain(chars).collect::<String>())
            .unwrap_or_default()
    };
    let alert = |a: &CellAlert| {
        json!({
            "labels": {
                "alertname": "HushmapHighRiskShareRising",
                "metric": report.metric,
                "severity": "warning",
                "level": a.level.to_string(),
                "region": a.region,
                "age_band": a.age_band,
            },
            "annotations": {
                "summary": format!(
                    "{} rose from {:.1}% to {:.1}% (one-sided p = {:.2e}, FDR {}%)",
                    metric_words,
                    100.0 * a.baseline.share,
                    100.0 * a.latest.share,
                    a.p_value,
                    100.0 * report.fdr,
                ),
                "latest_share": format!("{:.4}", a.latest.share),
                "latest_interval": format!("{:.4}–{:.4}", a.latest.share_ci_low, a.latest.share_ci_high),
                "baseline_share": format!("{:.4}", a.baseline.share),
                "baseline_interval": format!("{:.4}–{:.4}", a.baseline.share_ci_low, a.baseline.share_ci_high),
                "p_value": format!("{:.3e}", a.p_value),
            },
            "startsAt": rfc3339(report.window_end),
            "endsAt": rfc3339(report.window_end + length),
        })
    };
    Value::Array(report.alerts.iter().map(alert).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_a_loopback_relay() {
        for ok in [
            "https://alerts.example.org/hook",
            "https://user:pw@alerts.example.org/hook",
            "http://127.0.0.1:9000/hook",
            "http://[::1]:9000/hook",
            "http://localhost/hook",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://alerts.example.org/hook",
            "http://10.0.0.5/hook",
            "ftp://x",
            "https://",
            "not a url",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    /// reqwest's errors name the URL, credentials and all; what is logged
    /// does not.
    #[tokio::test]
    async fn a_failed_delivery_does_not_log_its_url() {
        let client = WebhookClient::new(&AlertSettings::default()).unwrap();
        let url = "http://hook-user:hook-password-7d1e@127.0.0.1:1/alerts?token=query-secret-5c";
        let e = client.post(url, b"{}").send().await.unwrap_err();
        // (reqwest moves the user and password into a header; the query
        // stays in the URL its error names.)
        assert!(e.to_string().contains("query-secret-5c"), "{e}");
        let logged = without_url(e);
        for secret in ["hook-password-7d1e", "hook-user", "query-secret-5c"] {
            assert!(!logged.contains(secret), "{secret} in {logged}");
        }
        assert!(!logged.is_empty());
    }

    #[test]
    fn a_short_or_missing_key_is_refused() {
        let dir = std::env::temp_dir().join(format!("hushmap-webhook-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "too-short\n").unwrap();
        for file in [short, dir.join("missing")] {
            let settings = AlertSettings {
                webhook_secret_file: Some(file),
                ..Default::default()
            };
            assert!(WebhookClient::new(&settings).is_err());
        }
    }
}
