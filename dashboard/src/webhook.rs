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
//! does not already serve.

use crate::alerts::{
    AlertMetric, AlertReport, AlertSettings, CellAlert, WebhookFormat, store_alerts,
};
use crate::heatmap::BandFilter;
use crate::store::ReleaseStore;
use serde_json::{Value, json};
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
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?;
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
async fn deliver(client: &reqwest::Client, url: &str, body: &Value, alerts: usize) -> bool {
    for attempt in 1..=3u32 {
        match client.post(url).json(body).send().await {
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
            Err(e) => tracing::warn!(error = %e, attempt, "webhook unreachable"),
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
