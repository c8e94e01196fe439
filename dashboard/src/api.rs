//! The JSON API handlers (and `/metrics`); [`server`](crate::server) binds
//! and routes them, [`assets`](crate::assets) serves the page.
//!
//! Open: `GET /healthz`, `GET /metrics`, the login form (`GET`/`POST /login`,
//! `POST /logout`; see [`session`](crate::session)).
//!
//! Analyst role:
//! * `GET /` and `/assets/*`: the page (one binary serves everything).
//! * `GET /api/v1/releases[?since=<sequence>&instance=<id>]`: every stored
//!   window with its privacy cost (or only those stored since an earlier
//!   answer's `sequence`), and the cost composed over the last day, the
//!   30-day horizon and all; `ETag`, and `304` when nothing changed.
//! * `GET /api/v1/heatmap?window=<start ms>&age_band=<band|all>&level=<res>`:
//!   the cells of one window (latest by default) at one hierarchy level
//!   (finest by default) with outlines; suppressed cells name their nearest
//!   unsuppressed ancestor.
//! * `GET /api/v1/provisional`: the open window's latest provisional
//!   numbers (all ages, coarsest level; `meta.provisional` says how far
//!   into the window they count), shaped like a heatmap; 404 once the
//!   window's final release is out, or when none are published.
//! * `GET /api/v1/cell?region=<cell>&window=<start ms>`: one cell's age-band
//!   breakdown in that window and its all-ages time series.
//! * `GET /api/v1/table?window=<start ms>&level=<res>`: region × age band rows.
//! * `GET /api/v1/alerts?window=<start ms>&level=<res>&age_band=<band|all>&metric=<high_share|sym_…>&baseline=<k>&fdr=<q>`:
//!   cells whose high-risk share (or a symptom's rate) rose against the `k` windows before, with
//!   the evidence and outlines ([`alerts`](crate::alerts)).
//!
//! Researcher role:
//! * `GET /api/v1/export?format=arrow|parquet&from=&to=&level=`: the cells
//!   in the release schema, Arrow IPC stream or Parquet ([`export`](crate::export)).

use crate::alerts::{AlertMetric, AlertSettings, store_alerts};
use crate::heatmap::{self, BandFilter, HeatmapCell, combine_bands, heatmap_cells};
use crate::privacy::{Composition, compose};
use crate::problem::problem;
use crate::state::{AppState, off_the_workers};
use crate::store::{StoreError, StoredWindow};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hushmap_schema::{ReleaseMeta, ReleaseRow};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The analyst role's JSON API (the caller puts it behind the role check).
pub(crate) fn analyst_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/releases", get(releases))
        .route("/api/v1/heatmap", get(heatmap))
        .route("/api/v1/provisional", get(provisional))
        .route("/api/v1/cell", get(cell))
        .route("/api/v1/table", get(table))
        .route("/api/v1/alerts", get(alerts))
}

const DAY_MS: i64 = 86_400_000;

pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let store = state.store.read().expect("store lock");
    let body = format!(
        "# HELP hushmap_dashboard_releases_stored Releases held in the release store.\n\
         # TYPE hushmap_dashboard_releases_stored gauge\n\
         hushmap_dashboard_releases_stored {}\n\
         # HELP hushmap_dashboard_release_duplicates_total Copies of already stored windows ignored.\n\
         # TYPE hushmap_dashboard_release_duplicates_total counter\n\
         hushmap_dashboard_release_duplicates_total {}\n\
         # HELP hushmap_dashboard_release_file_reads_total Windows' rows read from their file because they were not among the cached_windows held in memory.\n\
         # TYPE hushmap_dashboard_release_file_reads_total counter\n\
         hushmap_dashboard_release_file_reads_total {}\n\
         # HELP hushmap_dashboard_http_connections Connections open, by listener.\n\
         # TYPE hushmap_dashboard_http_connections gauge\n\
         hushmap_dashboard_http_connections{{listener=\"http\"}} {}\n\
         hushmap_dashboard_http_connections{{listener=\"flight\"}} {}\n\
         # HELP hushmap_dashboard_http_connections_refused_total Connections closed at once: max_connections were open.\n\
         # TYPE hushmap_dashboard_http_connections_refused_total counter\n\
         hushmap_dashboard_http_connections_refused_total{{listener=\"http\"}} {}\n\
         hushmap_dashboard_http_connections_refused_total{{listener=\"flight\"}} {}\n\
         # HELP hushmap_dashboard_http_connections_refused_per_client_total Connections closed at once: their client held max_connections_per_client.\n\
         # TYPE hushmap_dashboard_http_connections_refused_per_client_total counter\n\
         hushmap_dashboard_http_connections_refused_per_client_total{{listener=\"http\"}} {}\n\
         hushmap_dashboard_http_connections_refused_per_client_total{{listener=\"flight\"}} {}\n\
         # HELP hushmap_dashboard_http_connections_idle_closed_total Connections closed after idle_timeout_ms with no request in hand and no body moving.\n\
         # TYPE hushmap_dashboard_http_connections_idle_closed_total counter\n\
         hushmap_dashboard_http_connections_idle_closed_total{{listener=\"http\"}} {}\n\
         hushmap_dashboard_http_connections_idle_closed_total{{listener=\"flight\"}} {}\n\
         # HELP hushmap_dashboard_http_request_timeouts_total Requests answered 408: their handler, body included, passed request_timeout_ms.\n\
         # TYPE hushmap_dashboard_http_request_timeouts_total counter\n\
         hushmap_dashboard_http_request_timeouts_total{{listener=\"http\"}} {}\n\
         hushmap_dashboard_http_request_timeouts_total{{listener=\"flight\"}} {}\n\
         # HELP hushmap_dashboard_http_tls_handshakes_failed_total TLS handshakes that failed or did not finish within header_read_timeout_ms.\n\
         # TYPE hushmap_dashboard_http_tls_handshakes_failed_total counter\n\
         hushmap_dashboard_http_tls_handshakes_failed_total{{listener=\"http\"}} {}\n\
         hushmap_dashboard_http_tls_handshakes_failed_total{{listener=\"flight\"}} {}\n\
         # HELP hushmap_dashboard_tls_reloads_total Certificate pairs taken after the files changed.\n\
         # TYPE hushmap_dashboard_tls_reloads_total counter\n\
         hushmap_dashboard_tls_reloads_total {}\n\
         # HELP hushmap_dashboard_tls_reload_failures_total Changed certificate files that did not load (the previous pair stayed in use).\n\
         # TYPE hushmap_dashboard_tls_reload_failures_total counter\n\
         hushmap_dashboard_tls_reload_failures_total {}\n\
         # HELP hushmap_dashboard_alert_webhooks_total Windows' alerts sent to the webhook, by outcome (failed: not accepted after three tries).\n\
         # TYPE hushmap_dashboard_alert_webhooks_total counter\n\
         hushmap_dashboard_alert_webhooks_total{{outcome=\"delivered\"}} {}\n\
         hushmap_dashboard_alert_webhooks_total{{outcome=\"failed\"}} {}\n",
        store.len(),
        store.duplicates(),
        store.file_reads(),
        state.connections.open.get(),
        state.flight_connections.open.get(),
        state.connections.refused.get(),
        state.flight_connections.refused.get(),
        state.connections.refused_per_client.get(),
        state.flight_connections.refused_per_client.get(),
        state.connections.idle_closed.get(),
        state.flight_connections.idle_closed.get(),
        state.connections.request_timeouts.get(),
        state.flight_connections.request_timeouts.get(),
        state.connections.tls_failed.get(),
        state.flight_connections.tls_failed.get(),
        state.tls.as_ref().map_or(0, |t| t.reloads.get()),
        state.tls.as_ref().map_or(0, |t| t.reload_failures.get()),
        state
            .webhook
            .delivered
            .load(std::sync::atomic::Ordering::Relaxed),
        state
            .webhook
            .failed
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

#[derive(Serialize)]
struct ReleaseSummary {
    window_start: i64,
    window_end: i64,
    cells: usize,
    meta: ReleaseMeta,
}

/// Composed costs, as the aggregator's ledger counts them.
#[derive(Serialize)]
struct PrivacySummary {
    /// Windows ending within a day of the newest window's end.
    last_day: Composition,
    /// Within the ledger's 30-day horizon of the newest window's end.
    last_30_days: Composition,
    /// Every stored window.
    all: Composition,
}

#[derive(Serialize)]
struct ReleasesResponse {
    /// Every stored window, or (`full` false) those stored since the
    /// `since` asked, in storing order.
    releases: Vec<ReleaseSummary>,
    /// Windows stored so far by this dashboard instance: ask
    /// `since=<sequence>&instance=<instance>` next time for what is new.
    sequence: usize,
    instance: String,
    /// Whether `releases` is every stored window (no `since`, or one from
    /// another instance, before a restart) rather than only the new ones.
    full: bool,
    /// ε a contributor who submitted in every stored window may have lost:
    /// the releases composed as the ledger does (ρ added, converted once).
    cumulative_epsilon: f64,
    privacy: PrivacySummary,
}

#[derive(Deserialize)]
struct ReleasesQuery {
    since: Option<usize>,
    instance: Option<String>,
}

/// The stored windows with their costs. A page polling every few seconds
/// asks only for what is new (`since`), and a poll that changes nothing is
/// a `304 Not Modified` (`If-None-Match` with the last `ETag`), so a year
/// of windows is not resent every ten seconds.
async fn releases(
    State(state): State<AppState>,
    Query(q): Query<ReleasesQuery>,
    headers: header::HeaderMap,
) -> Response {
    let store = state.store.read().expect("store lock");
    let instance = format!("{:016x}", store.instance());
    let sequence = store.sequence();
    // The store only grows, one window at a time: its instance and size
    // name what a reader has seen (for a given `since`, which the URL
    // carries).
    let etag = format!("W/\"{instance}-{sequence}\"");
    let unchanged = crate::assets::not_modified(&headers, &etag);
    let cache = [
        (header::ETAG, etag.clone()),
        // Revalidate every time: the next window may be in.
        (header::CACHE_CONTROL, "no-cache".to_string()),
    ];
    if unchanged {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    let since = q
        .since
        .filter(|_| q.instance.as_deref() == Some(instance.as_str()));
    let listed: Box<dyn Iterator<Item = &StoredWindow>> = match since {
        Some(since) => Box::new(store.stored_since(since)),
        None => Box::new(store.windows()),
    };
    let releases: Vec<ReleaseSummary> = listed
        .map(|w| ReleaseSummary {
            window_start: w.meta.window_start,
            window_end: w.meta.window_end,
            cells: w.cells(),
            meta: w.meta.clone(),
        })
        .collect();
    let newest_end = store
        .latest_window()
        .map(|w| w.meta.window_end)
        .unwrap_or(0);
    let within = |span: i64| {
        compose(
            store
                .windows()
                .filter(|w| w.meta.window_start >= newest_end - span)
                .map(|w| &w.meta),
        )
    };
    let privacy = PrivacySummary {
        last_day: within(DAY_MS),
        last_30_days: within(30 * DAY_MS),
        all: compose(store.windows().map(|w| &w.meta)),
    };
    (
        cache,
        Json(ReleasesResponse {
            releases,
            sequence,
            instance,
            full: since.is_none(),
            cumulative_epsilon: privacy.all.epsilon,
            privacy,
        }),
    )
        .into_response()
}

#[derive(Deserialize)]
struct HeatmapQuery {
    window: Option<i64>,
    age_band: Option<String>,
    level: Option<u8>,
}

#[derive(Serialize)]
struct HeatmapResponse {
    window_start: i64,
    window_end: i64,
    age_band: &'static str,
    /// The level shown, and every level the release holds (finest first).
    level: Option<u8>,
    levels: Vec<u8>,
    meta: ReleaseMeta,
    cells: Vec<HeatmapCell>,
}

fn no_window() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "not_found",
        "no release for that window",
    )
}

/// A stored window whose file could not be read back.
fn store_failed(e: StoreError) -> Response {
    store_unreadable(&e, "the window's release could not be read from the store")
}

/// The release store's files could not be read: logged, and a 500 saying
/// what was asked for.
fn store_unreadable(error: &dyn std::fmt::Display, detail: &str) -> Response {
    tracing::error!(error = %error, "release store read failed");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "store_unreadable",
        detail,
    )
}

/// The release of `window` (the newest when `None`), or the answer to give
/// when there is none.
async fn release_or_answer(
    state: &AppState,
    window: Option<i64>,
) -> Result<Arc<hushmap_schema::Release>, Response> {
    match state.release(window).await {
        Ok(Some(release)) => Ok(release),
        Ok(None) => Err(no_window()),
        Err(e) => Err(store_failed(e)),
    }
}

async fn heatmap(State(state): State<AppState>, Query(q): Query<HeatmapQuery>) -> Response {
    let Some(filter) = BandFilter::parse(q.age_band.as_deref()) else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            "age_band must be an age band label or all",
        );
    };
    let release = match release_or_answer(&state, q.window).await {
        Ok(release) => release,
        Err(answer) => return answer,
    };
    let levels = heatmap::levels(&release);
    if q.level.is_some_and(|l| !levels.contains(&l)) {
        return problem(
            StatusCode::NOT_FOUND,
            "not_found",
            "the release has no cells at that level",
        );
    }
    let level = q.level.or_else(|| levels.first().copied());
    // A release may have no cells (no region passed the threshold); it is
    // still a release, with its window and cost.
    heatmap_of(&release, filter, levels, level)
}

/// The heatmap of `release` for `filter` at `level`, one of its `levels`.
fn heatmap_of(
    release: &hushmap_schema::Release,
    filter: BandFilter,
    levels: Vec<u8>,
    level: Option<u8>,
) -> Response {
    Json(HeatmapResponse {
        window_start: release.meta.window_start,
        window_end: release.meta.window_end,
        age_band: filter.label(),
        level,
        levels,
        meta: release.meta.clone(),
        cells: heatmap_cells(release, filter, level),
    })
    .into_response()
}

/// The open window's provisional map: the heatmap of its latest
/// provisional release, unless the final release has replaced it.
async fn provisional(State(state): State<AppState>) -> Response {
    let final_through = state
        .store
        .read()
        .expect("store lock")
        .latest_window()
        .map(|w| w.meta.window_end);
    let board = state.provisional.read().expect("board lock");
    let Some(release) = board.current(final_through) else {
        return problem(
            StatusCode::NOT_FOUND,
            "not_found",
            "no provisional numbers for an open window",
        );
    };
    let levels = heatmap::levels(release);
    let level = levels.first().copied();
    heatmap_of(release, BandFilter::All, levels, level)
}

#[derive(Deserialize)]
struct CellQuery {
    region: String,
    window: Option<i64>,
}

#[derive(Serialize)]
struct CellResponse {
    region: String,
    level: u8,
    window_start: i64,
    /// The cell's rows in the window, one per age band released.
    bands: Vec<ReleaseRow>,
    /// All ages combined, every stored window that released the cell.
    series: Vec<ReleaseRow>,
}

async fn cell(State(state): State<AppState>, Query(q): Query<CellQuery>) -> Response {
    let release = match release_or_answer(&state, q.window).await {
        Ok(release) => release,
        Err(answer) => return answer,
    };
    let bands: Vec<ReleaseRow> = release
        .rows
        .iter()
        .filter(|row| row.region == q.region)
        .cloned()
        .collect();
    let Some(level) = bands.first().map(|r| r.level) else {
        return problem(
            StatusCode::NOT_FOUND,
            "not_found",
            "the window has no such cell",
        );
    };
    // The series spans the whole history: read from the files, not from
    // memory.
    let rows = match state.query.region_rows(&q.region).await {
        Ok(rows) => rows,
        Err(e) => {
            return store_unreadable(&e, "the cell's series could not be read from the store");
        }
    };
    let series = {
        let store = state.store.read().expect("store lock");
        rows.chunk_by(|a, b| a.window_start == b.window_start)
            .filter_map(|rows| {
                let window = store.window(rows[0].window_start)?;
                Some(combine_bands(rows, &window.meta))
            })
            .flatten()
            .collect()
    };
    Json(CellResponse {
        region: q.region.clone(),
        level,
        window_start: release.meta.window_start,
        bands,
        series,
    })
    .into_response()
}

#[derive(Deserialize)]
struct TableQuery {
    window: Option<i64>,
    level: Option<u8>,
}

async fn table(State(state): State<AppState>, Query(q): Query<TableQuery>) -> Response {
    let release = match release_or_answer(&state, q.window).await {
        Ok(release) => release,
        Err(answer) => return answer,
    };
    let level = q
        .level
        .or_else(|| heatmap::levels(&release).first().copied());
    let rows: Vec<&ReleaseRow> = release
        .rows
        .iter()
        .filter(|r| Some(r.level) == level)
        .collect();
    Json(serde_json::json!({
        "window_start": release.meta.window_start,
        "window_end": release.meta.window_end,
        "level": level,
        "rows": rows,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct AlertsQuery {
    window: Option<i64>,
    level: Option<u8>,
    age_band: Option<String>,
    baseline: Option<usize>,
    fdr: Option<f64>,
    metric: Option<String>,
}

async fn alerts(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Query(q): Query<AlertsQuery>,
) -> Response {
    let Some(filter) = BandFilter::parse(q.age_band.as_deref()) else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            "age_band must be an age band label or all",
        );
    };
    let Some(metric) = AlertMetric::parse(q.metric.as_deref()) else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            "metric must be high_share or a symptom column (sym_fever, …)",
        );
    };
    let settings = AlertSettings {
        baseline_windows: q.baseline.unwrap_or(state.alerts.baseline_windows),
        fdr: q.fdr.unwrap_or(state.alerts.fdr),
        ..state.alerts.clone()
    };
    if let Err(e) = settings.validate() {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            &e.to_string()
                .replace("alerts.baseline_windows", "baseline")
                .replace("alerts.", ""),
        );
    }
    // Alerts read every cell of a window and its baseline: a place in the
    // token's admission (shared with queries and exports), held by the
    // work itself (a blocking thread cannot be cancelled; a client that
    // gives up does not free its place before the work ends), and the
    // query deadline for the answer.
    let admitted = match crate::session::admit(&state, &headers) {
        Ok(admitted) => admitted,
        Err(busy) => return busy.into_response(),
    };
    let store = state.store.clone();
    let level = q.level;
    let work = off_the_workers(move || {
        let _admitted = admitted;
        let store = store.read().expect("store lock");
        store_alerts(&store, q.window, filter, level, metric, &settings)
    });
    let timeout = std::time::Duration::from_millis(state.sql_limits.query_timeout_ms);
    let Ok(report) = tokio::time::timeout(timeout, work).await else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "deadline_exceeded",
            &format!(
                "the alerts took longer than {} ms; narrow them (one level, one age band)",
                timeout.as_millis()
            ),
        );
    };
    match report {
        Ok(Some(report)) => Json(report).into_response(),
        Ok(None) => no_window(),
        Err(e) => store_failed(e),
    }
}
