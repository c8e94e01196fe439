//! Who may hand the scheduler a plan: only a client that presents the
//! cluster's shared secret.
//!
//! A Ballista scheduler runs any plan it is given, and a plan can read and
//! write files on the executors. [`RequireClientToken`] sits in front of
//! the scheduler's gRPC service and lets a call through only if
//!
//! - it is one of the calls executors make (register, heartbeat, poll for
//!   work, report a task, stop): executors cannot send metadata in
//!   Ballista 55, and in pull scheduling (which the cluster uses) those
//!   calls carry no plan *to* anyone, or
//! - it carries `authorization: Bearer <secret>` (compared in constant
//!   time), which the batch client adds to every call (`ExecuteQuery`,
//!   job status, sessions, cancel and every call Ballista adds later: the
//!   list above is an allow-list, the rest need the token).
//!
//! Anything else is answered `UNAUTHENTICATED` before the scheduler sees
//! it.

use http::{Request, Response};
use std::sync::Arc;
use std::task::{Context, Poll};

/// The scheduler's gRPC service path prefix.
const SCHEDULER_SERVICE: &str = "/ballista.protobuf.SchedulerGrpc/";

/// The calls an executor makes of the scheduler: no token needed.
pub const EXECUTOR_CALLS: [&str; 5] = [
    "RegisterExecutor",
    "HeartBeatFromExecutor",
    "PollWork",
    "UpdateTaskStatus",
    "ExecutorStopped",
];

/// The gRPC metadata key the client's token travels in.
pub const TOKEN_METADATA: &str = "authorization";

/// The value of [`TOKEN_METADATA`] for `secret`.
pub fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

/// A tower layer requiring the client token on every call but executors'.
#[derive(Clone)]
pub struct ClientTokenLayer {
    expected: Arc<[u8]>,
}

impl ClientTokenLayer {
    pub fn new(secret: &str) -> ClientTokenLayer {
        ClientTokenLayer {
            expected: bearer(secret).into_bytes().into(),
        }
    }
}

impl<S> tower::Layer<S> for ClientTokenLayer {
    type Service = RequireClientToken<S>;

    fn layer(&self, inner: S) -> RequireClientToken<S> {
        RequireClientToken {
            inner,
            expected: self.expected.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct RequireClientToken<S> {
    inner: S,
    expected: Arc<[u8]>,
}

impl<S> RequireClientToken<S> {
    /// Whether `path` and `headers` may pass.
    fn admits(&self, path: &str, headers: &http::HeaderMap) -> bool {
        if let Some(call) = path.strip_prefix(SCHEDULER_SERVICE)
            && EXECUTOR_CALLS.contains(&call)
        {
            return true;
        }
        headers
            .get(TOKEN_METADATA)
            .is_some_and(|v| constant_time_eq(v.as_bytes(), &self.expected))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl<S, B> tower::Service<Request<B>> for RequireClientToken<S>
where
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        std::future::Ready<Result<Response<tonic::body::Body>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.admits(request.uri().path(), request.headers()) {
            futures::future::Either::Left(self.inner.call(request))
        } else {
            tracing::warn!(
                call = request.uri().path().rsplit('/').next().unwrap_or_default(),
                "refused a scheduler call without the cluster's client token"
            );
            let refused = tonic::Status::unauthenticated(
                "this scheduler takes plans only from clients with the cluster's secret \
                 (HUSHMAP_CLUSTER_SECRET)",
            )
            .into_http();
            futures::future::Either::Right(std::future::ready(Ok(refused)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_executor_calls_pass_without_the_token() {
        let layer = ClientTokenLayer::new("s3cret-s3cret-s3cret-s3cret-s3cret");
        let guard = tower::Layer::layer(&layer, ());
        let mut with = http::HeaderMap::new();
        with.insert(
            TOKEN_METADATA,
            bearer("s3cret-s3cret-s3cret-s3cret-s3cret")
                .parse()
                .unwrap(),
        );
        let mut wrong = http::HeaderMap::new();
        wrong.insert(
            TOKEN_METADATA,
            bearer("s3cret-s3cret-s3cret-s3cret-s3creT")
                .parse()
                .unwrap(),
        );
        let none = http::HeaderMap::new();
        let path = |call: &str| format!("{SCHEDULER_SERVICE}{call}");
        for call in EXECUTOR_CALLS {
            assert!(guard.admits(&path(call), &none), "{call}");
        }
        for call in [
            "ExecuteQuery",
            "ExecuteQueryPush",
            "GetJobStatus",
            "CancelJob",
            "CleanJobData",
            "CreateUpdateSession",
            "SomethingAddedLater",
        ] {
            assert!(!guard.admits(&path(call), &none), "{call}");
            assert!(!guard.admits(&path(call), &wrong), "{call}");
            assert!(guard.admits(&path(call), &with), "{call}");
        }
        // An executor call's name under another service is not one.
        assert!(!guard.admits("/other.Service/PollWork", &none));
    }
}
