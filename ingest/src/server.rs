//! The HTTP service: routes, the submission handler and graceful shutdown.
//!
//! Two listeners: the public one (the self-check page, the submission API,
//! OpenAPI, health) and an admin one, loopback by default, for `/metrics`.
//! Nothing the public listener serves changes with anyone's submission but
//! that submission's own answer.

use crate::body::parse_submission;
use crate::coarsen::Coarsener;
use crate::config::IngestConfig;
use crate::contributor::{ContributorKeys, ContributorTokenError};
use crate::identity::{IdTokenError, IdTokenVerifier};
use crate::metrics::IngestMetrics;
use crate::openapi;
use crate::problem::{ErrorCode, Problem};
use crate::producer::SubmissionProducer;
use crate::proof_of_work::{PROOF_HEADER, Proofs};
use crate::rate_limit::ClientRateLimiter;
use crate::triage;
use crate::validate::{ValidationRules, validate};
use axum::Router;
use axum::body::to_bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use hushmap_schema::ContributorKey;
use hushmap_schema::submission::{CONTRIBUTOR_HEADER, Submission, Triage};
use hushmap_service::client_address::TrustedProxies;
use hushmap_service::http::HttpLimits;
use std::future::Future;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    contributors: ContributorKeys,
    /// `None`: no identity provider configured; ID tokens are refused.
    id_tokens: Option<IdTokenVerifier>,
    contributor_token_max_age_days: u32,
    /// The self-check page, with the sign-in link filled in.
    page: String,
    producer: SubmissionProducer,
    max_body_bytes: usize,
    next_request: AtomicU64,
    metrics: IngestMetrics,
    limiter: Option<ClientRateLimiter>,
    proxies: TrustedProxies,
    /// The broker's reachability, probed in the background (see
    /// [`IngestServer::serve`]): `/readyz` is public and must cost nothing.
    broker_ready: AtomicBool,
    /// Proofs of work for anonymous submissions; `None`: not required.
    proofs: Option<Proofs>,
    /// Bounds submissions waiting for Kafka; a full queue answers 503 at once.
    in_flight: Semaphore,
}

/// A bound, ready-to-serve ingest service.
pub struct IngestServer {
    listener: TcpListener,
    admin_listener: TcpListener,
    state: Arc<AppState>,
    request_timeout: Duration,
    http: HttpLimits,
}

impl IngestServer {
    /// Validates the config, connects the producer and binds the listener.
    pub async fn bind(config: IngestConfig) -> Result<IngestServer, ServeError> {
        config.validate()?;
        let secret = match &config.contributor_secret {
            Some(s) => s.expose().to_vec(),
            None => {
                tracing::warn!(
                    "dev mode: contributor secret is random per process; contributor tokens and subjects are not linked across restarts"
                );
                rand::random::<[u8; 32]>().to_vec()
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
        let id_tokens =
            IdTokenVerifier::new(&config.identity).map_err(crate::config::ConfigError::from)?;
        let contributors = ContributorKeys::new(&secret);
        let state = AppState {
            id_tokens,
            contributor_token_max_age_days: config.identity.contributor_token_max_age_days,
            page: self_check_page(config.identity.sign_in_url.as_deref()),
            rules: ValidationRules {
                resolution: config.resolution(),
                window: config.window_length(),
                allowed_lateness_ms: i64::from(config.allowed_lateness_secs) * 1000,
            },
            coarsener: Coarsener::new(&secret, config.window_length()),
            producer: SubmissionProducer::new(
                &config.kafka,
                config.payload_public_key.clone().expect("validated"),
            )?,
            max_body_bytes: config.max_body_bytes,
            next_request: AtomicU64::new(1),
            metrics: IngestMetrics::default(),
            limiter,
            proxies: TrustedProxies::new(rl.trusted_proxies.clone()),
            broker_ready: AtomicBool::new(false),
            proofs: (config.proof_of_work_bits() > 0).then(|| {
                Proofs::new(
                    &contributors.proof_of_work_key(),
                    config.proof_of_work_bits(),
                    config.proof_of_work.challenge_lifetime_secs,
                )
            }),
            in_flight: Semaphore::new(config.max_in_flight),
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
            http: config.http.clone(),
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
            .with_state(self.state.clone())
    }

    /// The admin routes: metrics and health, never beside the public API.
    fn admin_router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(self.state.clone())
    }

    /// Serves until `shutdown` resolves, then drains requests and flushes the
    /// producer.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let app = self.router();
        let admin_router = self.admin_router();
        let admin = axum::serve(self.admin_listener, admin_router);
        let admin = tokio::spawn(async move { admin.await });
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
        tracing::info!(addr = %self.listener.local_addr()?, "ingest listening");
        let served = hushmap_service::http::serve(
            self.listener,
            app,
            &self.http,
            // TLS is the fronting proxy's: ingest sits behind the ingress.
            None,
            self.state.metrics.connections().clone(),
            shutdown,
        )
        .await;
        readiness.abort();
        janitor.abort();
        admin.abort();
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

/// The self-check page, with the identity provider's sign-in link (if any)
/// in a `<meta>` the page's script reads.
fn self_check_page(sign_in_url: Option<&str>) -> String {
    let escaped = sign_in_url
        .unwrap_or_default()
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    SELF_CHECK_PAGE.replace("{{SIGN_IN_URL}}", &escaped)
}

async fn page(State(state): State<Arc<AppState>>) -> Html<String> {
    Html(state.page.clone())
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

/// Ready when the broker answered the latest background probe (a metadata
/// request for the topic, every [`READINESS_PROBE_EVERY`]). Answering costs
/// a load, never a broker round trip or a thread, whoever asks how often.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.broker_ready.load(Ordering::Relaxed) {
        "ready".into_response()
    } else {
        Problem::new(ErrorCode::Unavailable, "the broker is not reachable")
            .with_retry_after(5)
            .into_response()
    }
}

/// A proof-of-work challenge for an anonymous submission.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Challenge {
    /// Send back as `Hushmap-Proof: <challenge>.<counter>`.
    challenge: String,
    /// Leading zero bits `SHA-256(base64url-decoded challenge ‖ counter as
    /// 8 little-endian bytes)` must have; 0: no proof needed.
    difficulty: u8,
    /// Seconds the challenge may be redeemed for.
    expires_in: u64,
}

/// A proof-of-work challenge (anonymous submissions need one solved).
#[utoipa::path(
    get,
    path = "/v1/challenge",
    responses((status = 200, description = "A fresh challenge; difficulty 0 means none is needed", body = Challenge,
        example = json!({"challenge": "AAAAAGdMz4Bq3W0mJ9yPpX1bQ2c4dE5fG6hI7jK8", "difficulty": 16, "expires_in": 120})))
)]
pub(crate) async fn challenge(State(state): State<Arc<AppState>>) -> Response {
    let body = match &state.proofs {
        Some(p) => Challenge {
            challenge: p.issue((now_ms() / 1000) as u64),
            difficulty: p.difficulty(),
            expires_in: p.lifetime_secs(),
        },
        None => Challenge {
            challenge: String::new(),
            difficulty: 0,
            expires_in: 0,
        },
    };
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// The self-check page's proof-of-work solver (a Web Worker).
async fn pow_worker() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        POW_WORKER,
    )
        .into_response()
}

/// The self-check page's proof-of-work solver.
const POW_WORKER: &str = include_str!("../assets/pow-worker.js");

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

/// The client's address: the socket peer, or, when the peer is one of our
/// proxies, the right-most untrusted `X-Forwarded-For` entry. Used only as
/// a rate-limit key.
fn client_ip(state: &AppState, req: &Request) -> Option<IpAddr> {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>()?.0.ip();
    Some(state.proxies.client(peer, req.headers()))
}

/// Submit a self-check.
///
/// Returns the risk level at once. The 202 is sent only after Kafka
/// acknowledged the coarse record; nothing else of the body is kept.
///
/// Who submits counts once per window, whatever they send: a signed-in
/// person proves who they are with an ID token from the health authority's
/// identity provider (`Authorization: Bearer …`); an anonymous browser
/// sends back the `contributor_token` of its first answer in the
/// `Hushmap-Contributor` header (for anonymous use, the unit is the
/// browser). A bad, expired or forged token is a 401, never a new identity.
#[utoipa::path(
    post,
    path = "/v1/submissions",
    params(
        ("Authorization" = Option<String>, Header,
            description = "`Bearer <ID token>`: a signed-in person (EdDSA, ES256 or RS256 JWT from the identity provider)."),
        ("Hushmap-Contributor" = Option<String>, Header,
            description = "The `contributor_token` of this browser's first answer; omit on the first check. Not with `Authorization`."),
        ("Hushmap-Proof" = Option<String>, Header,
            description = "Without `Authorization`, when `/v1/challenge` says a difficulty above 0: `<challenge>.<counter>`, a solved challenge (single use).")
    ),
    request_body(
        content = Submission,
        content_type = "application/json",
        examples(
            ("accepted_location" = (summary = "A self-check with a location", value = json!({
                "for": "self", "age": 34, "gender": "female", "symptoms": ["fever", "dry_cough"], "conditions": [],
                "travelled_internationally_14d": false, "contact_with_confirmed_case": true,
                "location": {"lat": 19.08, "lon": 72.88}
            }))),
            ("accepted_region" = (summary = "A check sending an H3 cell instead of a location", value = json!({
                "for": "family_member", "age": 71, "gender": "undisclosed", "symptoms": [],
                "conditions": ["hypertension"], "travelled_internationally_14d": false,
                "contact_with_confirmed_case": false, "region": "8660a25a7ffffff"
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
        (status = 202, description = "Accepted and stored (coarse record only). `contributor_token` is present for anonymous submissions: keep it and send it back.", body = Triage,
            example = json!({"risk": "high", "advice": "Your answers suggest a high risk. ...", "region": "85608b0bfffffff",
                "contributor_token": "c1.bTJ5Zm9vYmFyYmF6cXV1eAAATmhBzpc1xW5kx8ZqWkL2Tg"})),
        (status = 400, description = "Malformed JSON, unknown field, or both an ID token and a contributor token (conflicting_identity)", body = Problem, content_type = "application/problem+json",
            example = json!({"type": "/errors/unknown_field", "title": "The body has a field this API does not know",
                "status": 400, "detail": "the body has a field this API does not accept", "code": "unknown_field", "field": "user_agent"})),
        (status = 401, description = "ID token or contributor token refused (invalid_id_token, expired_id_token, invalid_contributor_token, expired_contributor_token); nothing stored", body = Problem,
            content_type = "application/problem+json",
            example = json!({"type": "/errors/invalid_id_token", "title": "The ID token was not accepted", "status": 401,
                "detail": "the ID token is meant for another service", "code": "invalid_id_token"})),
        (status = 428, description = "Anonymous submission without a valid proof of work (proof_required, invalid_proof); nothing read or stored", body = Problem,
            content_type = "application/problem+json",
            example = json!({"type": "/errors/proof_required", "title": "Anonymous submissions need a proof of work", "status": 428,
                "detail": "fetch a challenge from /v1/challenge, solve it and send `Hushmap-Proof: <challenge>.<counter>`", "code": "proof_required"})),
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
                // Neither the risk level nor who submitted is logged or
                // counted apart: only that one more was accepted.
                state.metrics.accepted();
                tracing::info!(outcome = "accepted");
                (StatusCode::ACCEPTED, axum::Json(triage)).into_response()
            }
            Err(problem) => {
                state.metrics.rejected(problem.code);
                // The field is a path of the schema's own names, except for
                // an unknown field: its name is client text (an e-mail, a
                // phone number, anything), so only the code is logged.
                let field = match problem.code {
                    ErrorCode::UnknownField => "",
                    _ => problem.field.as_deref().unwrap_or(""),
                };
                tracing::info!(outcome = problem.code.as_str(), field);
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
    // Who it is from, before anything is read: a bad token is a 401,
    // never a new identity.
    let who = resolve_contributor(state, headers, now_ms())?;
    // Anonymous: the proof of work, before the body is read.
    if let Some(proofs) = &state.proofs
        && headers.get(header::AUTHORIZATION).is_none()
    {
        let proof = headers
            .get(PROOF_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Problem::new(
                    ErrorCode::ProofRequired,
                    "fetch a challenge from /v1/challenge, solve it and send `Hushmap-Proof: <challenge>.<counter>`",
                )
            })?;
        proofs
            .redeem(proof, (now_ms() / 1000) as u64)
            .map_err(|e| Problem::new(ErrorCode::InvalidProof, e.to_string()))?;
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
    let (risk, record) = state.coarsener.coarsen(valid, who.key);

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
        contributor_token: who.token,
    })
}

/// Who a submission counts as, and the contributor token to answer with.
struct Resolved {
    key: ContributorKey,
    token: Option<String>,
}

/// The contributor a request speaks for: the signed-in person of a valid
/// ID token, the browser of a contributor token ingest issued, or (with
/// neither) a new browser, issued a token now.
fn resolve_contributor(
    state: &AppState,
    headers: &HeaderMap,
    now_ms: i64,
) -> Result<Resolved, Problem> {
    let bearer = headers.get(header::AUTHORIZATION);
    let anonymous = headers.get(CONTRIBUTOR_HEADER);
    match (bearer, anonymous) {
        (Some(_), Some(_)) => Err(Problem::new(
            ErrorCode::ConflictingIdentity,
            "send an ID token (signed in) or a contributor token (anonymous), not both",
        )),
        (Some(value), None) => {
            let id_token_problem = |e: IdTokenError| {
                let code = match e {
                    IdTokenError::Expired => ErrorCode::ExpiredIdToken,
                    _ => ErrorCode::InvalidIdToken,
                };
                Problem::new(code, e.to_string())
            };
            let token = value
                .to_str()
                .ok()
                .and_then(|v| {
                    let (scheme, token) = v.split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
                })
                .ok_or_else(|| {
                    Problem::new(
                        ErrorCode::InvalidIdToken,
                        "the Authorization header must be `Bearer <ID token>`",
                    )
                })?;
            let verifier = state
                .id_tokens
                .as_ref()
                .ok_or(IdTokenError::NotAccepted)
                .map_err(id_token_problem)?;
            let subject = verifier.verify(token).map_err(id_token_problem)?;
            Ok(Resolved {
                key: state
                    .contributors
                    .subject_key(&subject.issuer, &subject.subject),
                token: None,
            })
        }
        (None, Some(value)) => {
            let text = value.to_str().unwrap_or_default();
            let key = state
                .contributors
                .open_token(text, now_ms, state.contributor_token_max_age_days)
                .map_err(|e| {
                    let code = match e {
                        ContributorTokenError::Expired => ErrorCode::ExpiredContributorToken,
                        ContributorTokenError::Invalid => ErrorCode::InvalidContributorToken,
                    };
                    Problem::new(code, e.to_string())
                })?;
            Ok(Resolved {
                key,
                token: Some(text.to_string()),
            })
        }
        (None, None) => {
            let (token, key) = state.contributors.issue_token(now_ms);
            Ok(Resolved {
                key,
                token: Some(token.to_string()),
            })
        }
    }
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
