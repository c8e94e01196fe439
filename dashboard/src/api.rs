//! HTTP: the analyst page, the JSON API and the researcher exports.
//!
//! Open: `GET /healthz`, `GET /metrics`, the login form (`GET`/`POST /login`,
//! `POST /logout`; see [`session`](crate::session)).
//!
//! Analyst role:
//! * `GET /` and `/assets/*`: the page (one binary serves everything).
//! * `GET /api/v1/releases`: every stored window with its privacy cost, and
//!   the cost composed over the last day, the 30-day horizon and all.
//! * `GET /api/v1/heatmap?window=<start ms>&age_band=<band|all>&level=<res>`:
//!   the cells of one window (latest by default) at one hierarchy level
//!   (finest by default) with outlines; suppressed cells name their nearest
//!   unsuppressed ancestor.
//! * `GET /api/v1/cell?region=<cell>&window=<start ms>`: one cell's age-band
//!   breakdown in that window and its all-ages time series.
//! * `GET /api/v1/table?window=<start ms>&level=<res>`: region × age band rows.
//!
//! Researcher role:
//! * `GET /api/v1/export?format=arrow|parquet&from=&to=&level=`: the cells
//!   in the release schema, Arrow IPC stream or Parquet ([`export`](crate::export)).

use crate::auth::{LoginFailures, Sessions, TokenRegistry};
use crate::config::DashboardConfig;
use crate::consumer::spawn_release_consumer;
use crate::export::export;
use crate::flight::ReleaseFlightService;
use crate::heatmap::{self, BandFilter, HeatmapCell, combine_bands, heatmap_cells};
use crate::privacy::{Composition, compose};
use crate::problem::problem;
use crate::query::{QueryError, ReleaseQuery};
use crate::session::{LOGIN_HTML, login, logout, require_analyst, require_researcher};
use crate::sql_limits::{QueryAdmission, SqlRuntime};
use crate::state::AppState;
use crate::store::{ReleaseStore, StoreError};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hushmap_schema::{ReleaseMeta, ReleaseRow};
use hushmap_service::http::{ConnectionStats, HttpLimits};
use hushmap_service::tls::ServerTls;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;

const INDEX_HTML: &str = include_str!("../assets/index.html");
/// Built from `dashboard/web` (see its README); committed so that a plain
/// `cargo build` needs no Node.js.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript",
        include_bytes!("../assets/app.js"),
    ),
    ("app.css", "text/css", include_bytes!("../assets/app.css")),
];

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

pub struct DashboardServer {
    listener: TcpListener,
    flight_listener: TcpListener,
    state: AppState,
    consumer: tokio::task::JoinHandle<()>,
    http: HttpLimits,
    tls: Option<ServerTls>,
}

impl DashboardServer {
    pub async fn bind(config: DashboardConfig) -> Result<DashboardServer, ServeError> {
        let tokens = config.validate()?;
        if tokens.is_empty() {
            tracing::warn!("no access tokens configured: open access, loopback only");
        }
        let store = ReleaseStore::open(&config.data_dir)?;
        let query = ReleaseQuery::new(store.dir())?;
        let store = Arc::new(RwLock::new(store));
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })
        };
        let tls = ServerTls::load(&config.tls).map_err(crate::config::ConfigError::from)?;
        let listener = bind(config.listen).await?;
        let flight_listener = bind(config.flight_listen).await?;
        let consumer = spawn_release_consumer(&config.kafka, store.clone())?;
        Ok(DashboardServer {
            listener,
            flight_listener,
            state: AppState {
                store,
                query: Arc::new(query),
                tokens: Arc::new(TokenRegistry::new(
                    config.auth.tokens.clone(),
                    config.auth.tokens_file.clone(),
                    tokens,
                )),
                // Over TLS the cookie never needs to travel in clear.
                cookie_secure: config.auth.cookie_secure || tls.is_some(),
                tls: tls.clone(),
                connections: ConnectionStats::default(),
                flight_connections: ConnectionStats::default(),
                sql_limits: config.sql.clone(),
                sql_admission: Arc::new(QueryAdmission::default()),
                sql_runtime: Arc::new(SqlRuntime::new(config.sql.threads)?),
                sessions: Arc::new(Sessions::default()),
                login_failures: Arc::new(LoginFailures::default()),
            },
            consumer,
            http: config.http.clone(),
            tls,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn flight_addr(&self) -> SocketAddr {
        self.flight_listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let state = self.state;
        let reloader = tokio::spawn(reload_tokens(state.clone()));
        let certificates = self.tls.as_ref().map(ServerTls::watch);
        let acceptor = self.tls.as_ref().map(ServerTls::acceptor);
        let analyst = Router::new()
            .route("/", get(|| async { Html(INDEX_HTML) }))
            .route("/assets/{name}", get(asset))
            .route("/api/v1/releases", get(releases))
            .route("/api/v1/heatmap", get(heatmap))
            .route("/api/v1/cell", get(cell))
            .route("/api/v1/table", get(table))
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                require_analyst,
            ));
        let researcher = Router::new()
            .route("/api/v1/export", get(export))
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                require_researcher,
            ));
        let app = Router::new()
            .merge(analyst)
            .merge(researcher)
            .route("/healthz", get(|| async { "ok" }))
            .route("/metrics", get(metrics))
            .route("/login", get(|| async { Html(LOGIN_HTML) }).post(login))
            .route("/logout", post(logout))
            .layer(middleware::map_response(security_headers))
            .with_state(state.clone());

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
        let flight_stop = {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.changed().await;
            }
        };
        let flight_addr = self.flight_listener.local_addr()?;
        // Flight (gRPC over HTTP/2) goes through the same accept loop as the
        // page, with the same timeouts and its own connection cap.
        let flight_app = tonic::service::Routes::new(
            arrow_flight::flight_service_server::FlightServiceServer::new(
                ReleaseFlightService::new(state.clone()),
            ),
        )
        .prepare()
        .into_axum_router();
        let flight = tokio::spawn({
            let limits = self.http.clone();
            let stats = state.flight_connections.clone();
            let acceptor = acceptor.clone();
            async move {
                hushmap_service::http::serve(
                    self.flight_listener,
                    flight_app,
                    &limits,
                    acceptor,
                    stats,
                    flight_stop,
                )
                .await
            }
        });
        tracing::info!(
            addr = %self.listener.local_addr()?,
            flight = %flight_addr,
            tls = acceptor.is_some(),
            "dashboard listening"
        );
        let result = hushmap_service::http::serve(
            self.listener,
            app,
            &self.http,
            acceptor,
            state.connections.clone(),
            async move {
                shutdown.await;
                let _ = stop_tx.send(());
            },
        )
        .await;
        self.consumer.abort();
        reloader.abort();
        if let Some(watching) = certificates {
            watching.abort();
        }
        result?;
        match flight.await {
            Ok(r) => r?,
            Err(e) => return Err(ServeError::Io(std::io::Error::other(e))),
        }
        Ok(())
    }
}

/// The page's content security policy: scripts and connections only to
/// this origin (the page's bundle has no inline script; Leaflet and the
/// legend set inline styles), no framing, forms post only here.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Headers every dashboard response carries. `Referrer-Policy` is
/// `same-origin`, not `no-referrer`: under `no-referrer` a browser sends
/// `Origin: null` with the page's own form posts, which the origin check
/// must then refuse.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, axum::http::HeaderValue::from_static(value));
    }
    response
}

/// How often the tokens file is checked for changes.
const TOKEN_RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Re-reads the tokens file when it changes (a no-op without one), so
/// operators add and revoke tokens without a restart.
async fn reload_tokens(state: AppState) {
    let mut tick = tokio::time::interval(TOKEN_RELOAD_EVERY);
    loop {
        tick.tick().await;
        state.sessions.sweep();
        state.login_failures.forget_idle();
        match state.tokens.reload_if_changed() {
            Ok(Some(n)) => tracing::info!(tokens = n, "access tokens reloaded"),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                error = %e,
                "tokens file not reloaded; the previous tokens stay in force"
            ),
        }
    }
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, mime, body)) => (
            [
                (header::CONTENT_TYPE, *mime),
                (header::CACHE_CONTROL, "private, max-age=300"),
            ],
            *body,
        )
            .into_response(),
        None => problem(StatusCode::NOT_FOUND, "not_found", "no such asset"),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let store = state.store.read().expect("store lock");
    let body = format!(
        "# HELP hushmap_dashboard_releases_stored Releases held in the release store.\n\
         # TYPE hushmap_dashboard_releases_stored gauge\n\
         hushmap_dashboard_releases_stored {}\n\
         # HELP hushmap_dashboard_release_duplicates_total Copies of already stored windows ignored.\n\
         # TYPE hushmap_dashboard_release_duplicates_total counter\n\
         hushmap_dashboard_release_duplicates_total {}\n\
         # HELP hushmap_dashboard_http_connections Connections open, by listener.\n\
         # TYPE hushmap_dashboard_http_connections gauge\n\
         hushmap_dashboard_http_connections{{listener=\"http\"}} {}\n\
         hushmap_dashboard_http_connections{{listener=\"flight\"}} {}\n\
         # HELP hushmap_dashboard_http_connections_refused_total Connections closed at once: max_connections were open.\n\
         # TYPE hushmap_dashboard_http_connections_refused_total counter\n\
         hushmap_dashboard_http_connections_refused_total{{listener=\"http\"}} {}\n\
         hushmap_dashboard_http_connections_refused_total{{listener=\"flight\"}} {}\n\
         # HELP hushmap_dashboard_http_connections_idle_closed_total Connections closed after idle_timeout_ms without a byte moving.\n\
         # TYPE hushmap_dashboard_http_connections_idle_closed_total counter\n\
         hushmap_dashboard_http_connections_idle_closed_total{{listener=\"http\"}} {}\n\
         hushmap_dashboard_http_connections_idle_closed_total{{listener=\"flight\"}} {}\n\
         # HELP hushmap_dashboard_http_tls_handshakes_failed_total TLS handshakes that failed or did not finish within header_read_timeout_ms.\n\
         # TYPE hushmap_dashboard_http_tls_handshakes_failed_total counter\n\
         hushmap_dashboard_http_tls_handshakes_failed_total{{listener=\"http\"}} {}\n\
         hushmap_dashboard_http_tls_handshakes_failed_total{{listener=\"flight\"}} {}\n\
         # HELP hushmap_dashboard_tls_reloads_total Certificate pairs taken after the files changed.\n\
         # TYPE hushmap_dashboard_tls_reloads_total counter\n\
         hushmap_dashboard_tls_reloads_total {}\n\
         # HELP hushmap_dashboard_tls_reload_failures_total Changed certificate files that did not load (the previous pair stayed in use).\n\
         # TYPE hushmap_dashboard_tls_reload_failures_total counter\n\
         hushmap_dashboard_tls_reload_failures_total {}\n",
        store.len(),
        store.duplicates(),
        state.connections.open.get(),
        state.flight_connections.open.get(),
        state.connections.refused.get(),
        state.flight_connections.refused.get(),
        state.connections.idle_closed.get(),
        state.flight_connections.idle_closed.get(),
        state.connections.tls_failed.get(),
        state.flight_connections.tls_failed.get(),
        state.tls.as_ref().map_or(0, |t| t.reloads.get()),
        state.tls.as_ref().map_or(0, |t| t.reload_failures.get()),
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
    releases: Vec<ReleaseSummary>,
    /// ε a contributor who submitted in every stored window may have lost:
    /// the releases composed as the ledger does (ρ added, converted once).
    cumulative_epsilon: f64,
    privacy: PrivacySummary,
}

async fn releases(State(state): State<AppState>) -> Json<ReleasesResponse> {
    let store = state.store.read().expect("store lock");
    let releases: Vec<ReleaseSummary> = store
        .iter()
        .map(|r| ReleaseSummary {
            window_start: r.meta.window_start,
            window_end: r.meta.window_end,
            cells: r.rows.len(),
            meta: r.meta.clone(),
        })
        .collect();
    let newest_end = store.latest().map(|r| r.meta.window_end).unwrap_or(0);
    let within = |span: i64| {
        compose(
            store
                .iter()
                .filter(|r| r.meta.window_start >= newest_end - span)
                .map(|r| &r.meta),
        )
    };
    let privacy = PrivacySummary {
        last_day: within(DAY_MS),
        last_30_days: within(30 * DAY_MS),
        all: compose(store.iter().map(|r| &r.meta)),
    };
    Json(ReleasesResponse {
        releases,
        cumulative_epsilon: privacy.all.epsilon,
        privacy,
    })
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

async fn heatmap(State(state): State<AppState>, Query(q): Query<HeatmapQuery>) -> Response {
    let Some(filter) = BandFilter::parse(q.age_band.as_deref()) else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            "age_band must be an age band label or all",
        );
    };
    let store = state.store.read().expect("store lock");
    let Some(release) = store.window_or_latest(q.window) else {
        return no_window();
    };
    let levels = heatmap::levels(release);
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
    let store = state.store.read().expect("store lock");
    let Some(release) = store.window_or_latest(q.window) else {
        return no_window();
    };
    let of_cell = |r: &hushmap_schema::Release| -> Vec<ReleaseRow> {
        r.rows
            .iter()
            .filter(|row| row.region == q.region)
            .cloned()
            .collect()
    };
    let bands = of_cell(release);
    let Some(level) = bands.first().map(|r| r.level) else {
        return problem(
            StatusCode::NOT_FOUND,
            "not_found",
            "the window has no such cell",
        );
    };
    let series = store
        .iter()
        .flat_map(|r| combine_bands(&of_cell(r), r.meta.max_ci_half_width))
        .collect();
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
    let store = state.store.read().expect("store lock");
    let Some(release) = store.window_or_latest(q.window) else {
        return no_window();
    };
    let level = q
        .level
        .or_else(|| heatmap::levels(release).first().copied());
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
