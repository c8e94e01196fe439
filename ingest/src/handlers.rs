//! The request handlers of the public listener and the state they share:
//! the self-check page, `POST /v1/submissions` (identity, proof of work,
//! the submission steps, the producer), `GET /v1/challenge`, `/readyz` and
//! the admin `/metrics`. [`server`](crate::server) binds and routes them;
//! [`openapi`](crate::openapi) documents them.

use crate::identity::{IdTokenError, IdTokenVerifier};
use crate::metrics::IngestMetrics;
use crate::page::{Language, SelfCheckPages};
use crate::producer::{ProduceError, SubmissionProducer};
use crate::proof_of_work::{PROOF_HEADER, Proofs};
use crate::rate_limit::ClientRateLimiter;
use axum::body::to_bytes;
use axum::extract::{ConnectInfo, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use hushmap_schema::ContributorKey;
use hushmap_schema::submission::{CONTRIBUTOR_HEADER, Submission, Triage};
use hushmap_service::client_address::TrustedProxies;
use hushmap_service::clock::now_ms;
use hushmap_submission::body::parse_submission;
use hushmap_submission::coarsen::Coarsener;
use hushmap_submission::contributor::{ContributorKeys, ContributorTokenError};
use hushmap_submission::problem::{ErrorCode, Problem};
use hushmap_submission::triage;
use hushmap_submission::validate::{ValidationRules, validate};
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// What every handler shares; built once by
/// [`IngestServer::bind`](crate::server::IngestServer::bind).
pub(crate) struct AppState {
    pub(crate) rules: ValidationRules,
    pub(crate) coarsener: Coarsener,
    pub(crate) contributors: ContributorKeys,
    /// `None`: no identity provider configured; ID tokens are refused.
    pub(crate) id_tokens: Option<IdTokenVerifier>,
    pub(crate) contributor_token_max_age_days: u32,
    /// The self-check page in each language, with the sign-in link filled
    /// in.
    pub(crate) pages: SelfCheckPages,
    /// CSP and the other headers on every public response.
    pub(crate) security_headers: crate::page::SecurityHeaders,
    pub(crate) producer: SubmissionProducer,
    pub(crate) max_body_bytes: usize,
    pub(crate) next_request: AtomicU64,
    pub(crate) metrics: IngestMetrics,
    pub(crate) limiter: Option<ClientRateLimiter>,
    pub(crate) proxies: TrustedProxies,
    /// The broker's reachability, probed in the background (see
    /// [`IngestServer::serve`](crate::server::IngestServer::serve)):
    /// `/readyz` is public and must cost nothing.
    pub(crate) broker_ready: AtomicBool,
    /// Proofs of work for anonymous submissions; `None`: not required.
    pub(crate) proofs: Option<Proofs>,
    /// Bounds submissions waiting for Kafka; a full queue answers 503 at once.
    pub(crate) in_flight: Semaphore,
    pub(crate) unacknowledged: UnacknowledgedWarning,
}

/// How often, at most, ingest warns that the broker did not acknowledge
/// submissions.
const UNACKNOWLEDGED_WARNING_EVERY_MS: i64 = 10_000;

/// Warns that the broker did not acknowledge submissions at most once per
/// [`UNACKNOWLEDGED_WARNING_EVERY_MS`], with how many failed since the last
/// warning. While the broker is away every submission fails: a line each
/// would turn an outage at a national rate into a flood of log lines. Each
/// failure is also counted in `/metrics` (`code="unavailable"`).
#[derive(Default)]
pub(crate) struct UnacknowledgedWarning {
    /// When the last warning was written (ms since the epoch; 0: never).
    last_ms: AtomicI64,
    /// Failures since then.
    since: AtomicU64,
}

impl UnacknowledgedWarning {
    /// Counts one failure; warns if the interval has passed. Returns how
    /// many failures the warning it wrote covered.
    fn failed(&self, now_ms: i64, error: &ProduceError) -> Option<u64> {
        self.since.fetch_add(1, Ordering::Relaxed);
        let last = self.last_ms.load(Ordering::Relaxed);
        // One request among those failing at once wins the exchange.
        if now_ms - last >= UNACKNOWLEDGED_WARNING_EVERY_MS
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let failed = self.since.swap(0, Ordering::Relaxed);
            tracing::warn!(
                error = %error,
                failed,
                "submissions not acknowledged by kafka (failed: how many since the last such warning)"
            );
            return Some(failed);
        }
        None
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The self-check page in the language the request asks for (`?lang=`,
/// else `Accept-Language`; see [`Language::negotiate`]).
pub(crate) async fn page(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let requested = query
        .as_deref()
        .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("lang=")));
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    let language = Language::negotiate(requested, accept);
    (
        [
            (header::CONTENT_LANGUAGE, language.code()),
            // Caches keep one copy per language asked for.
            (header::VARY, "Accept-Language"),
        ],
        Html(state.pages.get(language).to_owned()),
    )
        .into_response()
}

/// Ready when the broker answered the latest background probe (a metadata
/// request for the topic, every [`READINESS_PROBE_EVERY`]). Answering costs
/// a load, never a broker round trip or a thread, whoever asks how often.
pub(crate) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.broker_ready.load(Ordering::Relaxed) {
        "ready".into_response()
    } else {
        respond(
            Problem::new(ErrorCode::Unavailable, "the broker is not reachable").with_retry_after(5),
        )
    }
}

/// `problem` as its RFC 9457 response, with the `Retry-After` and
/// `WWW-Authenticate` headers its code calls for.
fn respond(problem: Problem) -> Response {
    hushmap_service::http::problem_response(
        problem.code.status(),
        &problem,
        problem.retry_after_secs,
        problem.code.challenge(),
    )
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
pub(crate) async fn pow_worker() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        POW_WORKER,
    )
        .into_response()
}

/// The self-check page's script (sign-in, proof of work, the form).
pub(crate) async fn page_script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        crate::page::SCRIPT,
    )
        .into_response()
}

/// The self-check page's styles.
pub(crate) async fn page_styles() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        crate::page::STYLES,
    )
        .into_response()
}

/// Adds the security headers to every public response.
pub(crate) async fn security_headers(
    State(state): State<Arc<AppState>>,
    mut response: Response,
) -> Response {
    state.security_headers.apply(response.headers_mut());
    response
}

/// The self-check page's proof-of-work solver.
const POW_WORKER: &str = include_str!("../assets/pow-worker.js");

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
    // A request's outcome is logged at debug only; `/metrics` counts every
    // outcome. A refused request costs its sender almost nothing, so at
    // the default level (`info`) a line per request would let anyone fill
    // ingest's disk and log pipeline at the rate they can send
    // (`edge_attacks::a_flood_of_requests_is_counted_not_logged_line_by_line`).
    let span = tracing::debug_span!("submission", request_id);
    async move {
        match handle(&state, req).await {
            Ok(triage) => {
                // Neither the risk level nor who submitted is logged or
                // counted apart: only that one more was accepted.
                state.metrics.accepted();
                tracing::debug!(outcome = "accepted");
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
                tracing::debug!(outcome = problem.code.as_str(), field);
                respond(problem)
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
    let key = match &who.who {
        Who::Person(subject) => {
            state
                .contributors
                .subject_key(&subject.issuer, &subject.subject, valid.window.start_ms)
        }
        Who::Browser(key) => *key,
    };
    let (risk, record) = state.coarsener.coarsen(valid, key);

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
        let _ = state.unacknowledged.failed(now_ms(), &e);
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
    who: Who,
    token: Option<String>,
}

/// A verified identity, before the window is known.
enum Who {
    /// A signed-in person: keyed under the key in force at the record's
    /// window start, once validation has placed it in a window.
    Person(crate::identity::VerifiedSubject),
    /// An anonymous browser: keyed under the key its token names.
    Browser(ContributorKey),
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
                who: Who::Person(subject),
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
                who: Who::Browser(key),
                token: Some(text.to_string()),
            })
        }
        (None, None) => {
            let (token, key) = state.contributors.issue_token(now_ms);
            Ok(Resolved {
                who: Who::Browser(key),
                token: Some(token.to_string()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unacknowledged_submissions_are_warned_about_once_an_interval_with_a_count() {
        let warning = UnacknowledgedWarning::default();
        let error = ProduceError::Kafka(rdkafka::error::KafkaError::Canceled);
        let t0 = 1_800_000_000_000;
        assert_eq!(warning.failed(t0, &error), Some(1));
        for k in 1..=99 {
            assert_eq!(warning.failed(t0 + k * 100, &error), None);
        }
        // The next warning, an interval later, covers those 99 and itself.
        assert_eq!(
            warning.failed(t0 + UNACKNOWLEDGED_WARNING_EVERY_MS, &error),
            Some(100)
        );
        assert_eq!(
            warning.failed(t0 + UNACKNOWLEDGED_WARNING_EVERY_MS + 1, &error),
            None
        );
    }

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
