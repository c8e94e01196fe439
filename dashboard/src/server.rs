//! The dashboard's listeners: binding, the router (page, JSON API,
//! exports, login), Flight beside it on its own port through the same
//! hardened accept loop, security headers, the tokens file reload, and
//! shutdown. The handlers are in [`api`](crate::api) and
//! [`assets`](crate::assets); Flight in [`flight`](crate::flight).

use crate::assets::{INDEX_HTML, asset};
use crate::auth::{Sessions, TokenFailures, TokenRegistry};
use crate::config::DashboardConfig;
use crate::consumer::{ReleaseSinks, spawn_release_consumer};
use crate::export::export;
use crate::flight::ReleaseFlightService;
use crate::provisional::ProvisionalBoard;
use crate::query::{QueryError, ReleaseQuery};
use crate::session::{LOGIN_HTML, login, logout, require_analyst, require_researcher};
use crate::sql_limits::QueryAdmission;
use crate::sql_worker::SqlWorkers;
use crate::state::{AppState, Measurements};
use crate::store::{ReleaseStore, StoreError};
use crate::webhook::{AlertWebhook, WebhookStats, spawn_alert_webhook};
use axum::Router;
use axum::http::header;
use axum::middleware;
use axum::response::{Html, Response};
use axum::routing::{get, post};
use hushmap_service::client_address::TrustedProxies;
use hushmap_service::http::{ConnectionStats, HttpLimits};
use hushmap_service::tls::ServerTls;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;

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
    #[error("release consumer: {0}")]
    Consumer(#[from] crate::consumer::ConsumerError),
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
    consumers: Vec<tokio::task::JoinHandle<()>>,
    http: HttpLimits,
    tls: Option<ServerTls>,
}

impl DashboardServer {
    pub async fn bind(config: DashboardConfig) -> Result<DashboardServer, ServeError> {
        let tokens = config.validate()?;
        if tokens.is_empty() {
            tracing::warn!("no access tokens configured: open access, loopback only");
        }
        let store =
            ReleaseStore::open(&config.data_dir)?.with_cached_windows(config.cached_windows);
        let query = ReleaseQuery::new(store.dir())?;
        let sql_workers = SqlWorkers::new(store.dir(), &config.sql)?;
        let store = Arc::new(RwLock::new(store));
        let measurements = if config.kafka.measurements_topic.is_empty() {
            None
        } else {
            let store = ReleaseStore::open_measurements(&config.data_dir)?
                .with_cached_windows(config.cached_windows);
            Some(Measurements {
                query: Arc::new(ReleaseQuery::new(store.dir())?),
                store: Arc::new(RwLock::new(store)),
            })
        };
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })
        };
        let tls = ServerTls::load(&config.tls).map_err(crate::config::ConfigError::from)?;
        let listener = bind(config.listen).await?;
        let flight_listener = bind(config.flight_listen).await?;
        let webhook_stats = Arc::new(WebhookStats::default());
        let webhook = spawn_alert_webhook(AlertWebhook {
            settings: config.alerts.clone(),
            store: store.clone(),
            stats: webhook_stats.clone(),
        });
        let provisional = Arc::new(RwLock::new(ProvisionalBoard::default()));
        let consumers = spawn_release_consumer(
            &config.kafka,
            &config.data_dir,
            ReleaseSinks {
                store: store.clone(),
                measurements: measurements.as_ref().map(|m| m.store.clone()),
                provisional: provisional.clone(),
                fresh: webhook.map(|(tx, _)| tx),
            },
        )?;
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
                sql_workers: Arc::new(sql_workers),
                sessions: Arc::new(Sessions::default()),
                token_failures: Arc::new(TokenFailures::default()),
                proxies: Arc::new(TrustedProxies::new(config.auth.trusted_proxies.clone())),
                alerts: config.alerts.clone(),
                webhook: webhook_stats,
                measurements,
                provisional,
            },
            consumers,
            http: config.http.sharing_with(&config.auth.trusted_proxies),
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
            .merge(crate::api::analyst_routes())
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
            .route("/metrics", get(crate::api::metrics))
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
        for consumer in &self.consumers {
            consumer.abort();
        }
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
        state.token_failures.forget_idle();
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
