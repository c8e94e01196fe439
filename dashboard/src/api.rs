//! HTTP: the JSON API and the analyst page.
//!
//! * `GET /api/v1/releases`: every stored window with its privacy cost, and
//!   the cumulative ε a contributor may have spent across them.
//! * `GET /api/v1/heatmap?window=<start ms>&age_band=<band|all>&level=<res>`:
//!   the cells of one window (latest by default) at one hierarchy level
//!   (finest by default) with outlines for drawing; suppressed cells name
//!   their nearest unsuppressed ancestor.
//! * `GET /healthz`, `GET /`.

use crate::config::DashboardConfig;
use crate::consumer::spawn_release_consumer;
use crate::heatmap::{self, BandFilter, HeatmapCell, heatmap_cells};
use crate::store::ReleaseStore;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hushmap_schema::ReleaseMeta;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;

const INDEX_HTML: &str = include_str!("../assets/index.html");

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
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

type SharedStore = Arc<RwLock<ReleaseStore>>;

pub struct DashboardServer {
    listener: TcpListener,
    store: SharedStore,
    consumer: tokio::task::JoinHandle<()>,
}

impl DashboardServer {
    pub async fn bind(config: DashboardConfig) -> Result<DashboardServer, ServeError> {
        config.validate()?;
        let store = SharedStore::default();
        let consumer = spawn_release_consumer(&config.kafka, store.clone())?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Ok(DashboardServer {
            listener,
            store,
            consumer,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let app = Router::new()
            .route("/", get(|| async { Html(INDEX_HTML) }))
            .route("/healthz", get(|| async { "ok" }))
            .route("/api/v1/releases", get(releases))
            .route("/api/v1/heatmap", get(heatmap))
            .with_state(self.store);
        tracing::info!(addr = %self.listener.local_addr()?, "dashboard listening");
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        self.consumer.abort();
        result?;
        Ok(())
    }
}

#[derive(Serialize)]
struct ReleaseSummary {
    window_start: i64,
    window_end: i64,
    cells: usize,
    meta: ReleaseMeta,
}

#[derive(Serialize)]
struct ReleasesResponse {
    releases: Vec<ReleaseSummary>,
    /// Sum of ε over every stored window: an upper bound on what a
    /// contributor who submitted in every one of them may have lost (basic
    /// composition). Under zCDP the aggregator's ledger composes in ρ and
    /// finds a lower figure; this one is never an understatement.
    cumulative_epsilon: f64,
}

async fn releases(State(store): State<SharedStore>) -> Json<ReleasesResponse> {
    let store = store.read().expect("store lock");
    let releases: Vec<ReleaseSummary> = store
        .iter()
        .map(|r| ReleaseSummary {
            window_start: r.meta.window_start,
            window_end: r.meta.window_end,
            cells: r.rows.len(),
            meta: r.meta.clone(),
        })
        .collect();
    let cumulative_epsilon = releases.iter().map(|r| r.meta.epsilon).sum();
    Json(ReleasesResponse {
        releases,
        cumulative_epsilon,
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

fn problem(status: StatusCode, code: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": format!("/errors/{code}"), "title": detail, "status": status.as_u16(), "detail": detail, "code": code,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

async fn heatmap(State(store): State<SharedStore>, Query(q): Query<HeatmapQuery>) -> Response {
    let Some(filter) = BandFilter::parse(q.age_band.as_deref()) else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            "age_band must be an age band label or all",
        );
    };
    let store = store.read().expect("store lock");
    let release = match q.window {
        Some(start) => store.get(start),
        None => store.latest(),
    };
    let Some(release) = release else {
        return problem(
            StatusCode::NOT_FOUND,
            "not_found",
            "no release for that window",
        );
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
