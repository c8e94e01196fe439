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
//! - **idle timeout**: a connection on which no request is being handled
//!   and no request or response body has moved for
//!   [`HttpLimits::idle_timeout_ms`] is closed. Idleness is judged by
//!   requests, not bytes: HTTP/2 PING frames, SETTINGS or WINDOW_UPDATE
//!   frames, or half-sent header blocks move bytes without a request, and
//!   would otherwise keep a connection (and its slot) for ever; a response
//!   the client stops reading stops moving too;
//! - **request deadline**: every request's handler, including the reading
//!   of its body, must finish within [`HttpLimits::request_timeout_ms`],
//!   else it is answered 408 (a body trickled a byte at a time holds a
//!   handler, not only a connection). A streamed response's body is not
//!   under it (it moves, or the idle timeout ends it);
//! - **connection cap**: past [`HttpLimits::max_connections`] open
//!   connections, new ones are closed at once and counted, so a flood of
//!   slow clients costs the server a bounded amount;
//! - **per-client share**: one client (an IPv4 address, or the IPv6 /64 it
//!   is in) holds at most [`HttpLimits::max_connections_per_client`] of
//!   them, so a few addresses cannot take every slot. Peers that carry many
//!   clients (the ingress, a load balancer: [`HttpLimits::shared_peers`])
//!   are not held to it.
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
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
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
    /// A connection with no request in hand and no body moving for this
    /// many milliseconds is closed (bytes that carry no request, such as
    /// HTTP/2 PINGs, do not count).
    pub idle_timeout_ms: u64,
    /// A request's handler (body included) must finish within this many
    /// milliseconds, else the request is answered 408. Above every
    /// deadline of the service's own (SQL queries, Kafka produces).
    pub request_timeout_ms: u64,
    /// Open connections at most; past it new ones are closed at once.
    pub max_connections: usize,
    /// Open connections at most from one client (an IPv4 address or an
    /// IPv6 /64); past it that client's new ones are closed at once.
    /// Unset: a sixteenth of `max_connections` (at least 1), so a smaller
    /// cap brings its share down with it.
    pub max_connections_per_client: Option<usize>,
    /// Peers whose connections carry many clients (the ingress
    /// controllers, a load balancer), not held to the per-client share.
    /// A service adds the proxies it trusts for `X-Forwarded-For`.
    pub shared_peers: Vec<ipnet::IpNet>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            request_timeout_ms: 60_000,
            max_connections: 4_096,
            max_connections_per_client: None,
            shared_peers: Vec::new(),
        }
    }
}

/// Why limits were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpLimitsError {
    #[error("http.{0} must be positive")]
    Zero(&'static str),
    #[error(
        "http.max_connections_per_client ({per_client}) must be below http.max_connections \
         ({total}): one client must not be able to take every slot"
    )]
    ShareNotBelowCap { per_client: usize, total: usize },
}

impl HttpLimits {
    /// These limits with `proxies` (a service's trusted proxies) among the
    /// shared peers: each of their connections carries many clients.
    pub fn sharing_with(&self, proxies: &[ipnet::IpNet]) -> HttpLimits {
        let mut limits = self.clone();
        limits.shared_peers.extend_from_slice(proxies);
        limits
    }

    /// One client's share of the connection cap.
    pub fn per_client_share(&self) -> usize {
        self.max_connections_per_client
            .unwrap_or((self.max_connections / 16).max(1))
    }

    pub fn validate(&self) -> Result<(), HttpLimitsError> {
        for (name, value) in [
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("max_connections", self.max_connections as u64),
            ("max_connections_per_client", self.per_client_share() as u64),
        ] {
            if value == 0 {
                return Err(HttpLimitsError::Zero(name));
            }
        }
        if let Some(share) = self.max_connections_per_client
            && share >= self.max_connections
        {
            return Err(HttpLimitsError::ShareNotBelowCap {
                per_client: share,
                total: self.max_connections,
            });
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
    /// Connections closed at once because their client held its share.
    pub refused_per_client: Counter,
    /// Connections closed by the idle timeout.
    pub idle_closed: Counter,
    /// Requests answered 408 at the request deadline.
    pub request_timeouts: Counter,
    /// TLS handshakes that failed or did not finish in time.
    pub tls_failed: Counter,
}

impl ConnectionStats {
    /// Adds the metrics to a service's registry (`http_connections`,
    /// `http_connections_refused_total`,
    /// `http_connections_refused_per_client_total`,
    /// `http_connections_idle_closed_total`, `http_request_timeouts_total`,
    /// `http_tls_handshakes_failed_total` under the registry's prefix).
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
            "http_connections_refused_per_client",
            "Connections closed at once: their client held max_connections_per_client",
            self.refused_per_client.clone(),
        );
        registry.register(
            "http_connections_idle_closed",
            "Connections closed after idle_timeout_ms with no request in hand and no body moving",
            self.idle_closed.clone(),
        );
        registry.register(
            "http_request_timeouts",
            "Requests answered 408: their handler, body included, passed request_timeout_ms",
            self.request_timeouts.clone(),
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
    let shares = Arc::new(ClientShares::new(limits));
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let request_timeout = Duration::from_millis(limits.request_timeout_ms);
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
        let Some(share) = shares.take(peer.ip()) else {
            stats.refused_per_client.inc();
            drop(stream);
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.refused.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let service = hyper::service::service_fn({
            let router = router.clone();
            let activity = activity.clone();
            let stats = stats.clone();
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                let mut router = router.clone();
                let activity = activity.clone();
                let stats = stats.clone();
                async move {
                    let handling = activity.handling();
                    let request = request
                        .map(|body| axum::body::Body::new(MovingBody::new(body, activity.clone())));
                    let response =
                        match tokio::time::timeout(request_timeout, router.call(request)).await {
                            Ok(response) => response?,
                            Err(_) => {
                                stats.request_timeouts.inc();
                                request_timeout_response(request_timeout)
                            }
                        };
                    drop(handling);
                    Ok::<_, std::convert::Infallible>(
                        response.map(|body| MovingBody::new(body, activity)),
                    )
                }
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
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        let _ = watcher.watch(connection).await;
                    }
                    Some(acceptor) => {
                        match tokio::time::timeout(handshake_deadline, acceptor.accept(stream))
                            .await
                        {
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
            drop(share);
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

/// Whether a connection is doing anything for a request: handlers
/// running, and when a request last started or a body last moved.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    handling: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            handling: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Marks a handler running until the guard is dropped (a cancelled
    /// handler included).
    fn handling(self: &Arc<Self>) -> Handling {
        self.touch();
        self.handling.fetch_add(1, Ordering::Relaxed);
        Handling(self.clone())
    }

    /// Resolves once no handler has run and no body moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            if self.handling.load(Ordering::Relaxed) > 0 {
                // Handlers are bounded by the request deadline; look again
                // when this one could be over.
                self.touch();
                tokio::time::sleep(idle).await;
                continue;
            }
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let quiet = self.started.elapsed().saturating_sub(last);
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    }
}

/// A running handler (see [`Activity::handling`]).
struct Handling(Arc<Activity>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.touch();
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request or response body that marks its connection active whenever a
/// frame of it moves, and when it ends or is dropped.
struct MovingBody<B> {
    inner: B,
    activity: Arc<Activity>,
}

impl<B> MovingBody<B> {
    fn new(inner: B, activity: Arc<Activity>) -> MovingBody<B> {
        MovingBody { inner, activity }
    }
}

impl<B> Drop for MovingBody<B> {
    fn drop(&mut self) {
        self.activity.touch();
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for MovingBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(Some(Ok(_)))) {
            self.activity.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The 408 of a request that passed its deadline.
fn request_timeout_response(after: Duration) -> axum::response::Response {
    let body = serde_json::json!({
        "type": "/errors/request_timeout",
        "title": "Request timeout",
        "status": 408,
        "detail": format!(
            "the request was not received and handled within {} ms",
            after.as_millis()
        ),
        "code": "request_timeout",
    });
    let mut response = problem_response(axum::http::StatusCode::REQUEST_TIMEOUT, &body, None, None);
    // The rest of a half-sent body would be read as the next request.
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// Open connections per client, for the per-client share.
struct ClientShares {
    per_client: usize,
    shared_peers: Vec<ipnet::IpNet>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ClientShares {
    fn new(limits: &HttpLimits) -> ClientShares {
        ClientShares {
            per_client: limits.per_client_share(),
            shared_peers: limits.shared_peers.clone(),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A share for one more connection from `peer`, or None if its client
    /// holds its whole share. Peers in `shared_peers` always get one.
    fn take(self: &Arc<Self>, peer: IpAddr) -> Option<ClientShare> {
        let peer = crate::client_address::canonical(peer);
        if self.shared_peers.iter().any(|net| net.contains(&peer)) {
            return Some(ClientShare(None));
        }
        // One subscriber usually holds a whole IPv6 /64.
        let client = crate::client_address::rate_key(peer, 64);
        let mut open = self.open.lock().expect("client shares lock");
        let held = open.entry(client).or_insert(0);
        if *held >= self.per_client {
            return None;
        }
        *held += 1;
        Some(ClientShare(Some((self.clone(), client))))
    }
}

/// One connection's place in its client's share, given back on drop.
struct ClientShare(Option<(Arc<ClientShares>, IpAddr)>);

impl Drop for ClientShare {
    fn drop(&mut self) {
        if let Some((shares, client)) = self.0.take() {
            let mut open = shares.open.lock().expect("client shares lock");
            if let Some(held) = open.get_mut(&client) {
                *held -= 1;
                if *held == 0 {
                    open.remove(&client);
                }
            }
        }
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
    use tokio::net::{TcpSocket, TcpStream};

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

    /// Reads until the server closes (`Some(bytes)`) or `within` passes.
    async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        tokio::time::timeout(within, stream.read_to_end(&mut got))
            .await
            .ok()
            .map(|_| got)
    }

    /// Waits (up to 10 s) for a condition on the server's counters.
    async fn wait_for(condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "condition not met within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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

    /// The trickled login: a body that comes a byte at a time keeps moving
    /// (the idle timeout never fires) but holds a handler and a slot; the
    /// request deadline answers it 408 and closes the connection.
    #[tokio::test]
    async fn a_body_trickled_past_the_request_deadline_is_answered_408() {
        let limits = HttpLimits {
            idle_timeout_ms: 300,
            request_timeout_ms: 1_000,
            ..HttpLimits::default()
        };
        let (addr, stats) = server(limits).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
            .await
            .unwrap();
        let trickle = async {
            // A byte every 100 ms: well inside the idle timeout each time.
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if s.write_all(b"a").await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), trickle).await;
        let got = read_to_close(&mut s, Duration::from_secs(5))
            .await
            .expect("the trickled request was never closed");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("request_timeout"), "{text}");
        assert_eq!(stats.request_timeouts.get(), 1);
        assert_eq!(
            stats.idle_closed.get(),
            0,
            "closed by the deadline, not idleness"
        );
    }

    /// Writes HTTP/2 frames by hand: the client preface and a SETTINGS
    /// frame, then a PING every 100 ms, never a request. Returns whether
    /// the server closed the connection within `within`.
    async fn ping_only_h2(addr: SocketAddr, within: Duration) -> bool {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        // SETTINGS, empty: length 0, type 4, flags 0, stream 0.
        s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            // PING: length 8, type 6, flags 0, stream 0, 8 opaque bytes.
            let ping = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
            if s.write_all(&ping).await.is_err() {
                return true;
            }
            // Drain what came back (SETTINGS, ACKs, at last a GOAWAY).
            match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) | Err(_) => {}
            }
        }
        false
    }

    /// An HTTP/2 connection that only ever sends PINGs moves bytes both
    /// ways for ever; with idleness judged by bytes it held its slot
    /// indefinitely. It carries no request, so it is idle and closed.
    #[tokio::test]
    async fn a_ping_only_http2_connection_is_closed_at_the_idle_timeout() {
        let limits = HttpLimits {
            idle_timeout_ms: 500,
            ..HttpLimits::default()
        };
        let (addr, stats) = server(limits).await;
        assert!(
            ping_only_h2(addr, Duration::from_secs(10)).await,
            "a PING-only HTTP/2 connection was still open after 10 s (idle timeout 0.5 s)"
        );
        assert_eq!(stats.idle_closed.get(), 1);
    }

    /// A request in hand is not idleness: a handler slower than the idle
    /// timeout (within the request deadline) still gets its answer.
    #[tokio::test]
    async fn a_slow_handler_is_not_cut_by_the_idle_timeout() {
        let limits = HttpLimits {
            idle_timeout_ms: 200,
            ..HttpLimits::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                "slow"
            }),
        );
        let stats = ConnectionStats::default();
        let s = stats.clone();
        tokio::spawn(async move {
            serve(listener, app, &limits, None, s, std::future::pending()).await
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let got = read_to_close(&mut c, Duration::from_secs(5)).await.unwrap();
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("slow"),
            "{text}"
        );
        assert_eq!(stats.idle_closed.get(), 0);
    }

    /// A connection from `source` (a loopback address of its own).
    async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    }

    /// Whether the server serves a request on `s` (false: closed unheard).
    async fn served(mut s: TcpStream) -> bool {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok();
        let got = read_to_close(&mut s, Duration::from_secs(5)).await;
        matches!(got, Some(got) if got.starts_with(b"HTTP/1.1 200"))
    }

    /// One address opens as many connections as the whole cap (and holds
    /// them with half-sent requests): it gets its share, and another
    /// address still gets in.
    #[tokio::test]
    async fn one_client_at_its_share_leaves_room_for_another() {
        let limits = HttpLimits {
            max_connections: 8,
            max_connections_per_client: Some(4),
            ..HttpLimits::default()
        };
        let (addr, stats) = server(limits).await;
        let mut held = Vec::new();
        for _ in 0..8 {
            let mut s = connect_from("127.0.0.2", addr).await;
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
            held.push(s);
        }
        wait_for(|| stats.refused_per_client.get() == 4).await;
        assert_eq!(stats.open.get(), 4);
        assert!(served(connect_from("127.0.0.3", addr).await).await);
        assert_eq!(stats.refused.get(), 0);
        // The first client's share comes back as its connections close.
        held.clear();
        wait_for(|| stats.open.get() == 0).await;
        assert!(served(connect_from("127.0.0.2", addr).await).await);
    }

    /// The ingress carries everyone's connections: it is not held to one
    /// client's share.
    #[tokio::test]
    async fn shared_peers_are_not_held_to_one_clients_share() {
        let limits = HttpLimits {
            max_connections: 8,
            max_connections_per_client: Some(2),
            shared_peers: vec!["127.0.0.4/32".parse().unwrap()],
            ..HttpLimits::default()
        };
        let (addr, stats) = server(limits).await;
        let mut held = Vec::new();
        for _ in 0..6 {
            let mut s = connect_from("127.0.0.4", addr).await;
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
            held.push(s);
        }
        wait_for(|| stats.open.get() == 6).await;
        assert_eq!(stats.refused_per_client.get(), 0);
    }

    #[test]
    fn a_share_as_large_as_the_cap_is_refused() {
        let limits = HttpLimits {
            max_connections: 8,
            max_connections_per_client: Some(8),
            ..HttpLimits::default()
        };
        assert_eq!(
            limits.validate(),
            Err(HttpLimitsError::ShareNotBelowCap {
                per_client: 8,
                total: 8
            })
        );
        assert_eq!(HttpLimits::default().validate(), Ok(()));
        // Unset, the share follows the cap: an older configuration with a
        // small cap still starts.
        let small = HttpLimits {
            max_connections: 20,
            ..HttpLimits::default()
        };
        assert_eq!(small.validate(), Ok(()));
        assert_eq!(small.per_client_share(), 1);
        assert_eq!(HttpLimits::default().per_client_share(), 256);
    }

    #[tokio::test]
    async fn past_the_cap_new_connections_are_closed_and_counted() {
        let limits = HttpLimits {
            max_connections: 2,
            // The global cap, from one address: loopback is not held to a
            // client's share here (the share's own tests are below).
            shared_peers: vec!["127.0.0.0/8".parse().unwrap()],
            ..HttpLimits::default()
        };
        let (addr, stats) = server(limits).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
            held.push(s);
        }
        wait_for(|| stats.open.get() == 2).await;
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
