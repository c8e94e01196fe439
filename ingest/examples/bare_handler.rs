//! The throughput ceiling for ingest benchmarks: an axum handler that parses
//! the same JSON into the same `Submission` type and answers 202, with no
//! validation, triage, coarsening or Kafka. `bench/ingest.sh` drives it and
//! the real service with the same load tool and settings.
//!
//! `cargo run --release -p hushmap-ingest --example bare_handler -- 127.0.0.1:8090`

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use hushmap_schema::submission::Submission;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let app = Router::new().route(
        "/v1/submissions",
        post(|body: Bytes| async move {
            match serde_json::from_slice::<Submission>(&body) {
                Ok(_) => StatusCode::ACCEPTED,
                Err(_) => StatusCode::BAD_REQUEST,
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await
}
