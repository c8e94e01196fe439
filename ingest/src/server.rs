//! The HTTP service: routes, the submission handler and graceful shutdown.

use crate::coarsen::Coarsener;
use crate::config::IngestConfig;
use crate::problem::{ErrorCode, Problem};
use crate::producer::SubmissionProducer;
use crate::triage;
use crate::validate::{ValidationRules, validate};
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hushmap_schema::submission::{Submission, Triage};
use serde_json::error::Category;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tracing::Instrument;

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

struct AppState {
    rules: ValidationRules,
    coarsener: Coarsener,
    producer: SubmissionProducer,
    max_body_bytes: usize,
    next_request: AtomicU64,
}

/// A bound, ready-to-serve ingest service.
pub struct IngestServer {
    listener: TcpListener,
    state: Arc<AppState>,
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
        let state = AppState {
            rules: ValidationRules {
                resolution: config.resolution(),
                window: config.window_length(),
                allowed_lateness_ms: i64::from(config.allowed_lateness_secs) * 1000,
            },
            coarsener: Coarsener::new(&secret, config.window_length()),
            producer: SubmissionProducer::new(&config.kafka)?,
            max_body_bytes: config.max_body_bytes,
            next_request: AtomicU64::new(1),
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
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then drains requests and flushes the
    /// producer.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let state = self.state.clone();
        let app = Router::new()
            .route("/v1/submissions", post(submit))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(self.state);
        tracing::info!(addr = %self.listener.local_addr()?, "ingest listening");
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        if let Err(e) = state.producer.flush(Duration::from_secs(10)) {
            tracing::warn!(error = %e, "producer flush on shutdown failed");
        }
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

/// Maps a serde error to the contract's codes. Details name the field and
/// the rule, never the value that was sent.
fn parse_problem(err: serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let path = err.path().to_string();
    let inner = err.inner();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => Problem::new(
            ErrorCode::MalformedJson,
            format!(
                "invalid JSON at line {}, column {}",
                inner.line(),
                inner.column()
            ),
        ),
        Category::Data => {
            let msg = inner.to_string();
            let join = |name: &str| {
                if path == "." {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                }
            };
            if let Some(name) = backticked(&msg, "unknown field `") {
                // serde_path_to_error's path already ends at the unknown field.
                let field = if path == "." {
                    name.to_string()
                } else {
                    path.clone()
                };
                Problem::new(
                    ErrorCode::UnknownField,
                    "the body has a field this API does not accept",
                )
                .with_field(field)
            } else if let Some(name) = backticked(&msg, "missing field `") {
                Problem::new(ErrorCode::MissingField, "a required field is missing")
                    .with_field(join(name))
            } else if path == "." {
                Problem::new(ErrorCode::MalformedJson, "the body must be a JSON object")
            } else {
                // Type or enum errors: describe the expectation, not the input.
                let expected = msg
                    .split("expected ")
                    .nth(1)
                    .map(|e| e.split(" at line").next().unwrap_or(e));
                let detail = match expected {
                    Some(e) => format!("invalid value: expected {e}"),
                    None => "invalid value".to_string(),
                };
                Problem::new(ErrorCode::InvalidValue, detail).with_field(path)
            }
        }
    }
}

/// The name between `prefix` and the next backtick, if `msg` starts so.
fn backticked<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    msg.strip_prefix(prefix)?.split('`').next()
}

async fn submit(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let request_id = state.next_request.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("submission", request_id);
    async move {
        match handle(&state, &headers, body).await {
            Ok(triage) => {
                tracing::info!(outcome = "accepted", risk = triage.risk.label());
                (StatusCode::ACCEPTED, axum::Json(triage)).into_response()
            }
            Err(problem) => {
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

async fn handle(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Triage, Problem> {
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
    let submission: Submission =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&bytes))
            .map_err(parse_problem)?;
    let valid = validate(submission, &state.rules, now_ms())?;
    let (risk, record) = state.coarsener.coarsen(valid);
    if let Err(e) = state.producer.send(&record).await {
        tracing::warn!(error = %e, "submission not acknowledged by kafka");
        return Err(Problem::new(
            ErrorCode::Unavailable,
            "submissions cannot be stored right now; try again shortly",
        )
        .with_retry_after(5));
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

    fn problem_for(body: &str) -> Problem {
        serde_path_to_error::deserialize::<_, Submission>(&mut serde_json::Deserializer::from_str(
            body,
        ))
        .map(|_| ())
        .map_err(parse_problem)
        .expect_err("must fail")
    }

    const VALID: &str = r#"{"for":"self","age":30,"gender":"female","symptoms":[],"conditions":[],
        "travelled_internationally_14d":false,"contact_with_confirmed_case":false,"location":{"lat":1.0,"lon":2.0}}"#;

    #[test]
    fn parse_errors_map_to_contract_codes() {
        let p = problem_for("{not json");
        assert_eq!((p.code, p.status), (ErrorCode::MalformedJson, 400));
        let p = problem_for("[]");
        assert_eq!(p.code, ErrorCode::MalformedJson);
        let p = problem_for(&VALID.replace("\"age\":30", "\"age\":30,\"ip\":\"10.0.0.1\""));
        assert_eq!(
            (p.code, p.status, p.field.as_deref()),
            (ErrorCode::UnknownField, 400, Some("ip"))
        );
        let p = problem_for(&VALID.replace("\"lat\":1.0", "\"lat\":1.0,\"alt\":3"));
        assert_eq!(
            (p.code, p.field.as_deref()),
            (ErrorCode::UnknownField, Some("location.alt"))
        );
        let p = problem_for(&VALID.replace("\"age\":30,", ""));
        assert_eq!(
            (p.code, p.status, p.field.as_deref()),
            (ErrorCode::MissingField, 422, Some("age"))
        );
        let p = problem_for(&VALID.replace("\"female\"", "\"robot\""));
        assert_eq!(
            (p.code, p.status, p.field.as_deref()),
            (ErrorCode::InvalidValue, 422, Some("gender"))
        );
        let p =
            problem_for(&VALID.replace("\"symptoms\":[]", "\"symptoms\":[\"fever\",\"sneezing\"]"));
        assert_eq!(
            (p.code, p.field.as_deref()),
            (ErrorCode::InvalidValue, Some("symptoms[1]"))
        );
        let p = problem_for(&VALID.replace("\"age\":30", "\"age\":\"thirty\""));
        assert_eq!(
            (p.code, p.field.as_deref()),
            (ErrorCode::InvalidValue, Some("age"))
        );
        assert!(
            !p.detail.contains("thirty"),
            "detail must not echo input: {}",
            p.detail
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
