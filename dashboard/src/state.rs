//! What every handler shares, HTTP ([`api`](crate::api), export, sessions)
//! and Flight ([`flight`](crate::flight), [`flight_sql`](crate::flight_sql)):
//! neither side imports the other.

use crate::alerts::AlertSettings;
use crate::auth::{Sessions, TokenFailures, TokenRegistry};
use crate::provisional::ProvisionalBoard;
use crate::query::{CellFilter, CellStream, ReleaseQuery, export_metadata};
use crate::sql_limits::{QueryAdmission, SqlLimits};
use crate::sql_worker::SqlWorkers;
use crate::store::{ReleaseStore, StoreError, day_of};
use datafusion::arrow::datatypes::SchemaRef;
use hushmap_schema::{Release, ReleaseMeta};
use hushmap_service::client_address::TrustedProxies;
use hushmap_service::http::ConnectionStats;
use hushmap_service::tls::ServerTls;
use std::sync::{Arc, RwLock};

/// What every handler (HTTP and Flight) shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<RwLock<ReleaseStore>>,
    pub query: Arc<ReleaseQuery>,
    pub tokens: Arc<TokenRegistry>,
    pub cookie_secure: bool,
    /// The listeners' TLS, when the dashboard terminates it (for metrics).
    pub tls: Option<ServerTls>,
    /// The HTTP listener's connection counts.
    pub connections: ConnectionStats,
    /// The Flight listener's.
    pub flight_connections: ConnectionStats,
    /// What a researcher's SQL may cost, and who runs how many.
    pub sql_limits: SqlLimits,
    pub sql_admission: Arc<QueryAdmission>,
    pub sql_workers: Arc<SqlWorkers>,
    /// Browser sessions and failed logins.
    pub sessions: Arc<Sessions>,
    pub token_failures: Arc<TokenFailures>,
    /// Whose `X-Forwarded-For` names the client (`auth.trusted_proxies`).
    pub proxies: Arc<TrustedProxies>,
    /// How `GET /api/v1/alerts` computes by default.
    pub alerts: AlertSettings,
    /// What the alert webhook sent.
    pub webhook: Arc<crate::webhook::WebhookStats>,
    /// The measurements behind the releases, when the dashboard reads them.
    pub measurements: Option<Measurements>,
    /// The open window's provisional numbers, when the dashboard reads them.
    pub provisional: Arc<RwLock<ProvisionalBoard>>,
}

/// The measurements topic's releases: their store and its table.
#[derive(Clone)]
pub struct Measurements {
    pub store: Arc<RwLock<ReleaseStore>>,
    pub query: Arc<ReleaseQuery>,
}

/// `estimates=measured` asked of a dashboard that does not read them.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "this deployment does not publish its measurements (the aggregator's and the dashboard's \
     kafka.measurements_topic)"
)]
pub struct NotPublished;

impl AppState {
    /// The release of `window` (the newest when `None`), rows and all.
    /// Its file is read on a blocking thread when its rows are not in
    /// memory, so a history lookup never stalls the async workers.
    pub async fn release(&self, window: Option<i64>) -> Result<Option<Arc<Release>>, StoreError> {
        let store = self.store.clone();
        off_the_workers(move || store.read().expect("store lock").window_or_latest(window)).await
    }

    /// The cells `filter` selects, streamed from the Parquet store through
    /// DataFusion, with metadata describing the releases they come from.
    pub fn cells(&self, filter: CellFilter) -> Result<(SchemaRef, CellStream), NotPublished> {
        let (store, query) = self.source(filter)?;
        let (days, meta) = {
            let store = store.read().expect("store lock");
            let releases: Vec<_> = store
                .windows()
                .filter(|r| filter.contains_window(r.meta.window_start))
                .collect();
            let mut days: Vec<String> = releases
                .iter()
                .map(|r| day_of(r.meta.window_start))
                .collect();
            days.dedup();
            let metas: Vec<&ReleaseMeta> = releases.iter().map(|r| &r.meta).collect();
            (days, export_metadata(&metas))
        };
        Ok(query.cells(filter, days, meta))
    }

    /// The store and table `filter` reads: the releases, or the
    /// measurements behind them.
    pub fn source(
        &self,
        filter: CellFilter,
    ) -> Result<(&Arc<RwLock<ReleaseStore>>, &Arc<ReleaseQuery>), NotPublished> {
        if !filter.measured {
            return Ok((&self.store, &self.query));
        }
        self.measurements
            .as_ref()
            .map(|m| (&m.store, &m.query))
            .ok_or(NotPublished)
    }
}

/// Runs `work` (file reads, a store lock held while reading) on tokio's
/// blocking pool; a panic in it goes on in the caller.
pub async fn off_the_workers<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
