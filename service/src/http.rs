//! Serving HTTP to clients that may be hostile.
//!
//! `axum::serve` runs hyper without a timer, so hyper's header-read timeout
//! never fires, and it has no idle timeout and no connection cap: a client
//! that sends half a request line keeps its connection (and a task, and a
//! file descriptor) for ever, and a few thousand of them exhaust the
//! process. [`serve`] is the accept loop both public services use instead:
//!
//! - **header-read timeout**: a request's head (request line and headers)
//!   must arrive within [`HttpLimits::header_read_timeout_ms`]; hyper also
//!   applies it while a kept-alive connection waits for its next request;
//! - **idle timeout**: a connection on which no byte moves either way for
//!   [`HttpLimits::idle_timeout_ms`] is closed (a body trickled then
//!   stopped, a client that never reads its response);
//! - **connection cap**: past [`HttpLimits::max_connections`] open
//!   connections, new ones are closed at once and counted, so a flood of
//!   slow clients costs the server a bounded amount.
//!
//! The whole-request deadline (a body trickled a byte at a time) stays a
//! `tower_http` timeout layer in each service, since it must answer 408.
//!
//! With a [`TlsAcceptor`] (see [`crate::tls`]) every connection is TLS; its
//! handshake must finish within the header-read timeout (a handshake sent a
//! byte at a time is the same slow client), and a failed one is counted.
//!
//! The peer address is put in each request's extensions as
//! `ConnectInfo<SocketAddr>`, as `into_make_service_with_connect_info` does.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use hushmap_service::http::{ConnectionStats, HttpLimits, serve};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
//! let stats = ConnectionStats::default();
//! serve(listener, app, &HttpLimits::default(), None, stats, std::future::pending()).await
//! # }
//! ```

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::Service;

/// How long a connection may take and how many may be open at once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    /// A request's line and headers must arrive within this many
    /// milliseconds of the server starting to wait for them.
    pub header_read_timeout_ms: u64,
    /// A connection on which nothing moves, either way, for this many
    /// milliseconds is closed.
    pub idle_timeout_ms: u64,
    /// Open connections at most; past it new ones are closed at once.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 4_096,
        }
    }
}

/// Why limits were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpLimitsError {
    #[error("http.{0} must be positive")]
    Zero(&'static str),
}

impl HttpLimits {
    pub fn validate(&self) -> Result<(), HttpLimitsError> {
        if self.header_read_timeout_ms == 0 {
            return Err(HttpLimitsError::Zero("header_read_timeout_ms"));
        }
        if self.idle_timeout_ms == 0 {
            return Err(HttpLimitsError::Zero("idle_timeout_ms"));
        }
        if self.max_connections == 0 {
            return Err(HttpLimitsError::Zero("max_connections"));
        }
        Ok(())
    }
}

/// What the accept loop saw, for a service's `/metrics` (clones share the
/// counts).
#[derive(Debug, Default, Clone)]
pub struct ConnectionStats {
    /// Connections open now.
    pub open: Gauge,
    /// Connections closed at once because `max_connections` were open.
    pub refused: Counter,
    /// Connections closed by the idle timeout.
    pub idle_closed: Counter,
    /// TLS handshakes that failed or did not finish in time.
    pub tls_failed: Counter,
}

impl ConnectionStats {
    /// Adds the three metrics to a service's registry (`http_connections`,
    /// `http_connections_refused_total`, `http_connections_idle_closed_total`
    /// under the registry's prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_connections",
            "Connections open on the public listener",
            self.open.clone(),
        );
        registry.register(
            "http_connections_refused",
            "Connections closed at once: max_connections were open",
            self.refused.clone(),
        );
        registry.register(
            "http_connections_idle_closed",
            "Connections closed after idle_timeout_ms without a byte moving",
            self.idle_closed.clone(),
        );
        registry.register(
            "http_tls_handshakes_failed",
            "TLS handshakes that failed or did not finish within header_read_timeout_ms",
            self.tls_failed.clone(),
        );
    }
}

/// Serves `router` on `listener` within `limits` (over TLS with `tls`)
/// until `shutdown` resolves, then waits (up to 10 s) for requests in
/// progress.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &HttpLimits,
    tls: Option<TlsAcceptor>,
    stats: ConnectionStats,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms));
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: the listener is fine,
                    // the moment is not. Never log the peer (an address).
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.refused.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = WatchedIo {
            inner: stream,
            activity: activity.clone(),
        };
        let service = hyper::service::service_fn({
            let router = router.clone();
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                let mut router = router.clone();
                async move { router.call(request.map(axum::body::Body::new)).await }
            }
        });
        let builder = builder.clone();
        let stats = stats.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let handshake_deadline = Duration::from_millis(limits.header_read_timeout_ms);
        stats.open.inc();
        tokio::spawn(async move {
            let served = async {
                match tls {
                    None => {
                        let connection = builder
                            .serve_connection_with_upgrades(TokioIo::new(io), service)
                            .into_owned();
                        let _ = watcher.watch(connection).await;
                    }
                    Some(acceptor) => {
                        match tokio::time::timeout(handshake_deadline, acceptor.accept(io)).await {
                            Ok(Ok(tls_stream)) => {
                                let connection = builder
                                    .serve_connection_with_upgrades(
                                        TokioIo::new(tls_stream),
                                        service,
                                    )
                                    .into_owned();
                                let _ = watcher.watch(connection).await;
                            }
                            // A plaintext request, a client that distrusts
                            // the certificate, a handshake too slow: the
                            // client's business, counted, never logged
                            // (the peer is an address).
                            Ok(Err(_)) | Err(_) => {
                                stats.tls_failed.inc();
                            }
                        }
                    }
                }
            };
            tokio::select! {
                // A connection's own errors (a reset, a malformed request
                // hyper answered with 400) are the client's business.
                () = served => {}
                () = activity.idle_for(idle) => {
                    stats.idle_closed.inc();
                }
            }
            stats.open.dec();
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("connections still open 10 s after shutdown began; closing them");
        }
    }
    Ok(())
}

/// When a byte last moved on a connection.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let quiet = self.started.elapsed().saturating_sub(last);
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    }
}

/// A stream that records when bytes last moved through it.
struct WatchedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The media type of every error answer (RFC 9457).
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem details response: the one way both public services
/// answer an error. `body` is the problem object (its `status` member must
/// be `status`); `retry_after_secs` sets `Retry-After` (429, 503) and
/// `challenge` sets `WWW-Authenticate` (401).
///
/// ```
/// use hushmap_service::http::problem_response;
/// let body = serde_json::json!({
///     "type": "/errors/not_found", "title": "Not found", "status": 404,
///     "detail": "no release for that window", "code": "not_found",
/// });
/// let response = problem_response(axum::http::StatusCode::NOT_FOUND, &body, None, None);
/// assert_eq!(response.headers()["content-type"], "application/problem+json");
/// ```
pub fn problem_response(
    status: axum::http::StatusCode,
    body: &impl Serialize,
    retry_after_secs: Option<u32>,
    challenge: Option<&'static str>,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    use axum::response::IntoResponse;
    // A problem object is plain data: serialising it cannot fail.
    let body = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    if let Some(secs) = retry_after_secs {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(value) = challenge {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server(limits: HttpLimits) -> (SocketAddr, ConnectionStats) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                peer.ip().to_string()
            })
            .post(|body: String| async move { body }),
        );
        let stats = ConnectionStats::default();
        let s = stats.clone();
        tokio::spawn(async move {
            serve(listener, app, &limits, None, s, std::future::pending()).await
        });
        (addr, stats)
    }

    /// Reads until the server closes (`Ok(bytes)`) or `within` passes.
    async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        tokio::time::timeout(within, stream.read_to_end(&mut got))
            .await
            .ok()
            .map(|_| got)
    }

    #[tokio::test]
    async fn serves_a_request_with_the_peer_address() {
        let (addr, _) = server(HttpLimits::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let got = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("127.0.0.1"), "{text}");
    }

    #[tokio::test]
    async fn a_half_sent_request_is_closed_at_the_header_deadline() {
        let limits = HttpLimits {
            header_read_timeout_ms: 300,
            ..HttpLimits::default()
        };
        let (addr, _) = server(limits).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        assert!(
            read_to_close(&mut s, Duration::from_secs(5))
                .await
                .is_some(),
            "the half-sent request was never closed"
        );
    }

    #[tokio::test]
    async fn a_connection_that_goes_quiet_mid_body_is_closed_when_idle() {
        let limits = HttpLimits {
            idle_timeout_ms: 300,
            ..HttpLimits::default()
        };
        let (addr, stats) = server(limits).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
            .await
            .unwrap();
        assert!(
            read_to_close(&mut s, Duration::from_secs(5))
                .await
                .is_some()
        );
        assert_eq!(stats.idle_closed.get(), 1);
    }

    #[tokio::test]
    async fn past_the_cap_new_connections_are_closed_and_counted() {
        let limits = HttpLimits {
            max_connections: 2,
            ..HttpLimits::default()
        };
        let (addr, stats) = server(limits).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
            held.push(s);
        }
        while stats.open.get() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut third = TcpStream::connect(addr).await.unwrap();
        let got = read_to_close(&mut third, Duration::from_secs(5)).await;
        assert_eq!(got, Some(Vec::new()), "closed without an answer");
        assert_eq!(stats.refused.get(), 1);
        // Once a slot frees, clients are served again.
        drop(held);
        let mut s = loop {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            match read_to_close(&mut s, Duration::from_secs(5)).await {
                Some(got) if !got.is_empty() => break got,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        assert!(String::from_utf8_lossy(&std::mem::take(&mut s)).starts_with("HTTP/1.1 200"));
    }
}
