//! The HTTP service: routes, the submission handler and graceful shutdown.

use crate::body::parse_submission;
use crate::coarsen::Coarsener;
use crate::config::IngestConfig;
use crate::metrics::IngestMetrics;
use crate::openapi;
use crate::problem::{ErrorCode, Problem};
use crate::producer::SubmissionProducer;
use crate::rate_limit::ClientRateLimiter;
use crate::triage;
use crate::validate::{ValidationRules, validate};
use axum::Router;
use axum::body::to_bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use hushmap_schema::submission::{Submission, Triage};
use std::future::Future;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

/// The public self-check form.
const SELF_CHECK_PAGE: &str = include_str!("../assets/selfcheck.html");

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
}

pub(crate) struct AppState {
    rules: ValidationRules,
    coarsener: Coarsener,
    producer: SubmissionProducer,
    max_body_bytes: usize,
    next_request: AtomicU64,
    metrics: IngestMetrics,
    limiter: Option<ClientRateLimiter>,
    trust_forwarded_for: bool,
    /// Bounds submissions waiting for Kafka; a full queue answers 503 at once.
    in_flight: Semaphore,
}

/// A bound, ready-to-serve ingest service.
pub struct IngestServer {
    listener: TcpListener,
    state: Arc<AppState>,
    request_timeout: Duration,
}

impl IngestServer {
    /// Validates the config, connects the producer and binds the listener.
    pub async fn bind(config: IngestConfig) -> Result<IngestServer, ServeError> {
        config.validate()?;
        let secret = match &config.contributor_secret {
            Some(s) => s.expose().to_vec(),
            None => {
                tracing::warn!(
                    "dev mode: contributor secret is random per process; profiles are not linked across restarts"
                );
                rand::random::<[u8; 32]>().to_vec()
            }
        };
        let rl = &config.rate_limit;
        let limiter = NonZeroU32::new(rl.per_minute).map(|per_minute| {
            ClientRateLimiter::new(
                per_minute,
                NonZeroU32::new(rl.burst).unwrap_or(NonZeroU32::MIN),
            )
        });
        let state = AppState {
            rules: ValidationRules {
                resolution: config.resolution(),
                window: config.window_length(),
                allowed_lateness_ms: i64::from(config.allowed_lateness_secs) * 1000,
            },
            coarsener: Coarsener::new(&secret, config.window_length()),
            producer: SubmissionProducer::new(
                &config.kafka,
                config.payload_keys.clone().expect("validated"),
            )?,
            max_body_bytes: config.max_body_bytes,
            next_request: AtomicU64::new(1),
            metrics: IngestMetrics::default(),
            limiter,
            trust_forwarded_for: rl.trust_forwarded_for,
            in_flight: Semaphore::new(config.max_in_flight),
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Ok(IngestServer {
            listener,
            state: Arc::new(state),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The routes, for serving or for driving in-process.
    fn router(&self) -> Router {
        Router::new()
            .route("/", get(|| async { Html(SELF_CHECK_PAGE) }))
            .route("/v1/submissions", post(submit))
            .route(
                "/openapi.json",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        openapi::document(),
                    )
                }),
            )
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(ready))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                self.request_timeout,
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
        let state = self.state.clone();
        let janitor = tokio::spawn({
            let state = self.state.clone();
            async move {
                let mut every = tokio::time::interval(Duration::from_secs(60));
                loop {
                    every.tick().await;
                    if let Some(l) = &state.limiter {
                        l.forget_idle();
                    }
                }
            }
        });
        tracing::info!(addr = %self.listener.local_addr()?, "ingest listening");
        let served = axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        janitor.abort();
        if let Err(e) = state.producer.flush(Duration::from_secs(10)) {
            tracing::warn!(error = %e, "producer flush on shutdown failed");
        }
        served?;
        tracing::info!("ingest stopped");
        Ok(())
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Ready when the broker answers a metadata request for the topic.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let probe = tokio::task::spawn_blocking(move || {
        state.producer.broker_reachable(Duration::from_secs(2))
    })
    .await;
    match probe {
        Ok(true) => "ready".into_response(),
        _ => Problem::new(ErrorCode::Unavailable, "the broker is not reachable")
            .with_retry_after(5)
            .into_response(),
    }
}

/// The client's address: the socket peer, or the last `X-Forwarded-For`
/// entry when configured to trust a proxy. Used only as a rate-limit key.
fn client_ip(state: &AppState, req: &Request) -> Option<IpAddr> {
    if state.trust_forwarded_for
        && let Some(ip) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return Some(ip);
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Submit a self-check.
///
/// Returns the risk level at once. The 202 is sent only after Kafka
/// acknowledged the coarse record; nothing else of the body is kept.
#[utoipa::path(
    post,
    path = "/v1/submissions",
    request_body(
        content = Submission,
        content_type = "application/json",
        examples(
            ("accepted_location" = (summary = "A self-check with a location", value = json!({
                "for": "self", "age": 34, "gender": "female", "symptoms": ["fever", "dry_cough"], "conditions": [],
                "travelled_internationally_14d": false, "contact_with_confirmed_case": true,
                "location": {"lat": 19.08, "lon": 72.88}
            }))),
            ("accepted_region" = (summary = "A signed-up user sending an H3 cell", value = json!({
                "for": "family_member", "age": 71, "gender": "undisclosed", "symptoms": [],
                "conditions": ["hypertension"], "travelled_internationally_14d": false,
                "contact_with_confirmed_case": false, "region": "8660a25a7ffffff", "profile": "user-1234"
            }))),
            ("rejected_422_age" = (summary = "Age out of range", value = json!({
                "for": "self", "age": 130, "gender": "male", "symptoms": [], "conditions": [],
                "travelled_internationally_14d": false, "contact_with_confirmed_case": false,
                "location": {"lat": 51.5, "lon": -0.13}
            }))),
            ("rejected_422_both_places" = (summary = "Both location and region", value = json!({
                "for": "self", "age": 30, "gender": "male", "symptoms": [], "conditions": [],
                "travelled_internationally_14d": false, "contact_with_confirmed_case": false,
                "location": {"lat": 51.5, "lon": -0.13}, "region": "8660a25a7ffffff"
            }))),
            ("rejected_400_unknown_field" = (summary = "A field the API does not know", value = json!({
                "for": "self", "age": 30, "gender": "male", "symptoms": [], "conditions": [],
                "travelled_internationally_14d": false, "contact_with_confirmed_case": false,
                "location": {"lat": 51.5, "lon": -0.13}, "user_agent": "Mozilla/5.0"
            })))
        )
    ),
    responses(
        (status = 202, description = "Accepted and stored (coarse record only)", body = Triage,
            example = json!({"risk": "high", "advice": "Your answers suggest a high risk. ...", "region": "85608b0bfffffff"})),
        (status = 400, description = "Malformed JSON or unknown field", body = Problem, content_type = "application/problem+json",
            example = json!({"type": "/errors/unknown_field", "title": "The body has a field this API does not know",
                "status": 400, "detail": "the body has a field this API does not accept", "code": "unknown_field", "field": "user_agent"})),
        (status = 413, description = "Body larger than 16 KiB", body = Problem, content_type = "application/problem+json",
            example = json!({"type": "/errors/payload_too_large", "title": "The body is too large", "status": 413,
                "detail": "the body may be at most 16384 bytes", "code": "payload_too_large"})),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json",
            example = json!({"type": "/errors/unsupported_media_type", "title": "The body must be application/json",
                "status": 415, "detail": "send the submission as application/json", "code": "unsupported_media_type"})),
        (status = 422, description = "Missing field or invalid value; `field` names it", body = Problem,
            content_type = "application/problem+json",
            example = json!({"type": "/errors/invalid_value", "title": "A field has an invalid value", "status": 422,
                "detail": "age must be an integer from 0 to 120", "code": "invalid_value", "field": "age"})),
        (status = 429, description = "Rate limited; see Retry-After", body = Problem, content_type = "application/problem+json",
            example = json!({"type": "/errors/rate_limited", "title": "Too many requests", "status": 429,
                "detail": "too many submissions from this client; retry later", "code": "rate_limited"})),
        (status = 503, description = "Kafka unavailable or queue full; see Retry-After", body = Problem,
            content_type = "application/problem+json",
            example = json!({"type": "/errors/unavailable", "title": "The service cannot accept submissions right now",
                "status": 503, "detail": "submissions cannot be stored right now; try again shortly", "code": "unavailable"}))
    )
)]
pub(crate) async fn submit(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let request_id = state.next_request.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("submission", request_id);
    async move {
        match handle(&state, req).await {
            Ok(triage) => {
                state.metrics.accepted(triage.risk);
                tracing::info!(outcome = "accepted", risk = triage.risk.label());
                (StatusCode::ACCEPTED, axum::Json(triage)).into_response()
            }
            Err(problem) => {
                state.metrics.rejected(problem.code);
                tracing::info!(
                    outcome = problem.code.as_str(),
                    field = problem.field.as_deref().unwrap_or("")
                );
                problem.into_response()
            }
        }
    }
    .instrument(span)
    .await
}

async fn handle(state: &AppState, req: Request) -> Result<Triage, Problem> {
    if let (Some(limiter), Some(ip)) = (&state.limiter, client_ip(state, &req))
        && let Err(wait) = limiter.check(ip)
    {
        let secs = u32::try_from(wait.as_secs().saturating_add(1)).unwrap_or(u32::MAX);
        return Err(Problem::new(
            ErrorCode::RateLimited,
            "too many submissions from this client; retry later",
        )
        .with_retry_after(secs));
    }
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    if !is_json(headers) {
        return Err(Problem::new(
            ErrorCode::UnsupportedMediaType,
            "send the submission as application/json",
        ));
    }
    let too_large = || {
        Problem::new(
            ErrorCode::PayloadTooLarge,
            format!("the body may be at most {} bytes", state.max_body_bytes),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        return Err(too_large());
    }
    let bytes = to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|_| too_large())?;
    let submission = parse_submission(&bytes)?;
    let valid = validate(submission, &state.rules, now_ms())?;
    let (risk, record) = state.coarsener.coarsen(valid);

    let unavailable =
        |detail: &str| Problem::new(ErrorCode::Unavailable, detail).with_retry_after(5);
    let Ok(_permit) = state.in_flight.try_acquire() else {
        return Err(unavailable(
            "too many submissions are waiting for storage; try again shortly",
        ));
    };
    state.metrics.in_flight().inc();
    let started = Instant::now();
    let key = state.coarsener.partition_key(&record);
    let sent = state.producer.send(&key, &record).await;
    state
        .metrics
        .observe_produce(started.elapsed().as_secs_f64());
    state.metrics.in_flight().dec();
    if let Err(e) = sent {
        tracing::warn!(error = %e, "submission not acknowledged by kafka");
        return Err(unavailable(
            "submissions cannot be stored right now; try again shortly",
        ));
    }
    Ok(Triage {
        risk,
        advice: triage::advice(risk).to_string(),
        region: record.region.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_check() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(is_json(&h));
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(!is_json(&h));
    }
}
