//! The internal `/metrics` and `/healthz` listener.
//!
//! Every service exposes its counters on a port of its own that only the
//! cluster's scraper reaches (the NetworkPolicies say who). It is served
//! with hyper directly, so a service with no public HTTP of its own (the
//! aggregator) links no web framework: `cargo tree -p hushmap-aggregate`
//! shows no axum.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use hushmap_service::metrics::{OPENMETRICS_CONTENT_TYPE, serve_metrics};
//! use std::sync::Arc;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! serve_metrics(listener, OPENMETRICS_CONTENT_TYPE, Arc::new(|| "# EOF\n".to_string())).await
//! # }
//! ```

use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The content type of an OpenMetrics text exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of the Prometheus text format (0.0.4).
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders the exposition on each scrape.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// A scrape that has not sent its request head by then is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// No scrape keeps a connection longer than this.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(60);

/// Answers `GET /metrics` with `render()` (as `content_type`) and
/// `GET /healthz` with `ok` on `listener`, until the task is dropped or
/// aborted. Anything else is 404
/// (405 for another method on a known path).
///
/// An accept error (out of file descriptors) is logged and the loop goes
/// on after a pause: a scraper must not be able to stop the listener.
pub async fn serve_metrics(
    listener: TcpListener,
    content_type: &'static str,
    render: RenderMetrics,
) -> std::io::Result<()> {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let render = render.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = answer(&request, content_type, &render);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            // Errors are the scraper's business (a reset, a bad request).
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, connection).await;
        });
    }
}

fn answer(
    request: &Request<Incoming>,
    content_type: &'static str,
    render: &RenderMetrics,
) -> Response<String> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, content_type, render()),
        (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok".to_string()),
        (_, "/metrics" | "/healthz") => {
            (StatusCode::METHOD_NOT_ALLOWED, "text/plain", String::new())
        }
        _ => (StatusCode::NOT_FOUND, "text/plain", String::new()),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, request: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_health_and_nothing_else() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(serve_metrics(
            listener,
            OPENMETRICS_CONTENT_TYPE,
            Arc::new(|| "hushmap_test_total 7\n# EOF\n".to_string()),
        ));
        let close = "Connection: close\r\n\r\n";
        let metrics = get(
            addr,
            &format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{close}"),
        )
        .await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains(OPENMETRICS_CONTENT_TYPE), "{metrics}");
        assert!(
            metrics.ends_with("hushmap_test_total 7\n# EOF\n"),
            "{metrics}"
        );
        let health = get(
            addr,
            &format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{close}"),
        )
        .await;
        assert!(
            health.starts_with("HTTP/1.1 200") && health.ends_with("ok"),
            "{health}"
        );
        let other = get(addr, &format!("GET /admin HTTP/1.1\r\nHost: x\r\n{close}")).await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        let post = get(
            addr,
            &format!("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n{close}"),
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        task.abort();
    }
}
