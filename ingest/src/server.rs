//! The HTTP service: binding, routes (to [`handlers`](crate::handlers)),
//! the broker probe behind `/readyz`, and graceful shutdown.
//!
//! Two listeners: the public one (the self-check page, the submission API,
//! OpenAPI, health) and an admin one, loopback by default, for `/metrics`.
//! Nothing the public listener serves changes with anyone's submission but
//! that submission's own answer.

use crate::config::IngestConfig;
use crate::handlers::{
    AppState, UnacknowledgedWarning, challenge, page, page_script, page_styles, pow_worker, ready,
    security_headers, submit,
};
use crate::identity::IdTokenVerifier;
use crate::metrics::IngestMetrics;
use crate::openapi;
use crate::page::{SecurityHeaders, SelfCheckPages};
use crate::producer::SubmissionProducer;
use crate::proof_of_work::Proofs;
use crate::rate_limit::ClientRateLimiter;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::{get, post};
use hushmap_service::client_address::TrustedProxies;
use hushmap_service::clock::now_ms;
use hushmap_service::http::HttpLimits;
use hushmap_service::metrics::{PROMETHEUS_TEXT_CONTENT_TYPE, serve_metrics};
use hushmap_service::tls::ServerTls;
use hushmap_submission::coarsen::Coarsener;
use hushmap_submission::contributor::ContributorKeys;
use hushmap_submission::validate::ValidationRules;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::timeout::TimeoutLayer;

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
    #[error("the self-check page: {0}")]
    Page(#[from] crate::page::PageError),
}

/// A bound, ready-to-serve ingest service.
pub struct IngestServer {
    listener: TcpListener,
    admin_listener: TcpListener,
    state: Arc<AppState>,
    request_timeout: Duration,
    http: HttpLimits,
    tls: Option<ServerTls>,
}

impl IngestServer {
    /// Validates the config, connects the producer and binds the listener.
    pub async fn bind(config: IngestConfig) -> Result<IngestServer, ServeError> {
        config.validate()?;
        let contributors = match &config.contributor_secret {
            Some(s) => {
                let keys =
                    ContributorKeys::parse(s.expose()).map_err(crate::config::ConfigError::from)?;
                // Key ids are not secret: an operator sees which keyring
                // each replica holds (every replica must hold the same).
                tracing::info!(key_ids = ?keys.key_ids(), "contributor keyring loaded");
                keys
            }
            None => {
                tracing::warn!(
                    "dev mode: contributor secret is random per process; contributor tokens and subjects are not linked across restarts"
                );
                ContributorKeys::new(&rand::random::<[u8; 32]>())
            }
        };
        let rl = &config.rate_limit;
        let limiter = NonZeroU32::new(rl.per_minute).map(|per_minute| {
            ClientRateLimiter::new(
                per_minute,
                NonZeroU32::new(rl.burst).unwrap_or(NonZeroU32::MIN),
                rl.ipv6_prefix_len,
            )
        });
        let tls = ServerTls::load(&config.tls).map_err(crate::config::ConfigError::from)?;
        let mut metrics = IngestMetrics::default();
        if let Some(tls) = &tls {
            metrics.register_tls(tls);
        }
        let id_tokens =
            IdTokenVerifier::new(&config.identity).map_err(crate::config::ConfigError::from)?;
        let state = AppState {
            id_tokens,
            contributor_token_max_age_days: config.identity.contributor_token_max_age_days,
            pages: SelfCheckPages::render(config.identity.sign_in())?,
            security_headers: SecurityHeaders::new(config.identity.sign_in(), config.tls.enabled()),
            rules: ValidationRules {
                resolution: config.resolution(),
                window: config.window_length(),
                allowed_lateness_ms: i64::from(config.allowed_lateness_secs) * 1000,
            },
            coarsener: Coarsener::with_keys(contributors.clone(), config.window_length()),
            producer: SubmissionProducer::new(
                &config.kafka,
                config.payload_public_key.clone().expect("validated"),
            )?,
            max_body_bytes: config.max_body_bytes,
            next_request: AtomicU64::new(1),
            metrics,
            limiter,
            proxies: TrustedProxies::new(rl.trusted_proxies.clone()),
            broker_ready: AtomicBool::new(false),
            proofs: (config.proof_of_work_bits() > 0).then(|| {
                Proofs::new(
                    &contributors.proof_of_work_key(now_ms()),
                    config.proof_of_work_bits(),
                    config.proof_of_work.challenge_lifetime_secs,
                )
            }),
            in_flight: Semaphore::new(config.max_in_flight),
            unacknowledged: UnacknowledgedWarning::default(),
            contributors,
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let admin_listener = TcpListener::bind(config.admin_listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.admin_listen,
                source,
            })?;
        Ok(IngestServer {
            listener,
            admin_listener,
            state: Arc::new(state),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            http: config.http.sharing_with(&rl.trusted_proxies),
            tls,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Where `/metrics` is served (the admin listener).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The public routes, for serving or for driving in-process.
    fn router(&self) -> Router {
        Router::new()
            .route("/", get(page))
            .route("/v1/submissions", post(submit))
            .route("/v1/challenge", get(challenge))
            .route("/pow-worker.js", get(pow_worker))
            .route("/selfcheck.js", get(page_script))
            .route("/selfcheck.css", get(page_styles))
            .route(
                "/openapi.json",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        openapi::document(),
                    )
                }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(ready))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                self.request_timeout,
            ))
            .layer(axum::middleware::map_response_with_state(
                self.state.clone(),
                security_headers,
            ))
            .with_state(self.state.clone())
    }

    /// Serves until `shutdown` resolves, then drains requests and flushes the
    /// producer.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let app = self.router();
        // The admin listener: metrics and health, never beside the public API.
        let metrics_state = self.state.clone();
        let admin = tokio::spawn(serve_metrics(
            self.admin_listener,
            PROMETHEUS_TEXT_CONTENT_TYPE,
            Arc::new(move || metrics_state.metrics.render()),
        ));
        let state = self.state.clone();
        let readiness = tokio::spawn(probe_readiness(self.state.clone()));
        let janitor = tokio::spawn({
            let state = self.state.clone();
            async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                let mut ticks = 0u64;
                loop {
                    every.tick().await;
                    ticks += 1;
                    if ticks.is_multiple_of(12)
                        && let Some(l) = &state.limiter
                    {
                        l.forget_idle();
                    }
                    if let Some(p) = &state.proofs {
                        p.forget_expired((now_ms() / 1000) as u64);
                    }
                    // Key rotation at the identity provider: new keys are in
                    // force within 5 s; a broken file keeps the old ones.
                    if let Some(v) = &state.id_tokens {
                        match v.reload_if_changed() {
                            Ok(Some(n)) => {
                                tracing::info!(keys = n, "identity provider keys reloaded")
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "identity provider keys not reloaded; the previous keys stay in force")
                            }
                        }
                    }
                }
            }
        });
        let certificates = self.tls.as_ref().map(ServerTls::watch);
        let acceptor = self.tls.as_ref().map(ServerTls::acceptor);
        tracing::info!(addr = %self.listener.local_addr()?, tls = acceptor.is_some(), "ingest listening");
        let served = hushmap_service::http::serve(
            self.listener,
            app,
            &self.http,
            acceptor,
            self.state.metrics.connections().clone(),
            shutdown,
        )
        .await;
        readiness.abort();
        janitor.abort();
        admin.abort();
        if let Some(watching) = certificates {
            watching.abort();
        }
        if let Err(e) = state.producer.flush(Duration::from_secs(10)) {
            tracing::warn!(error = %e, "producer flush on shutdown failed");
        }
        served?;
        tracing::info!("ingest stopped");
        Ok(())
    }
}

/// How often the broker's reachability is probed for `/readyz`.
const READINESS_PROBE_EVERY: Duration = Duration::from_secs(2);

/// Probes the broker every [`READINESS_PROBE_EVERY`] on a blocking thread
/// of its own, one probe at a time.
async fn probe_readiness(state: Arc<AppState>) {
    loop {
        let probing = state.clone();
        let reachable = tokio::task::spawn_blocking(move || {
            probing.producer.broker_reachable(Duration::from_secs(2))
        })
        .await
        .unwrap_or(false);
        if reachable != state.broker_ready.swap(reachable, Ordering::Relaxed) {
            tracing::info!(reachable, "broker reachability changed");
        }
        tokio::time::sleep(READINESS_PROBE_EVERY).await;
    }
}
