//! What a researcher's SQL may cost: a deadline, caps on what a result
//! may hold, a limit on queries (and exports, tickets, alerts) run at once
//! per token, and the worker processes the queries run in.
//!
//! Flight SQL takes arbitrary SQL from anyone holding a researcher token.
//! The release store is small, so the danger is not reading it but
//! *making* data or recursing deep. Each query runs in a worker process of
//! its own (`crate::sql_worker`: a memory limit the kernel enforces, an
//! allow-list of functions, a nesting limit, killed at the deadline); its
//! result is capped in rows and bytes; and each token runs at most
//! [`SqlLimits::max_concurrent_per_token`] queries at once
//! ([`QueryAdmission`]).
//!
//! Errors sent back name the problem in words (a planning error's own
//! message, "the query ran past its deadline"); errors from reading the
//! store, which may name files and directories, become a fixed message
//! and are logged instead.

use futures::stream::{BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Status;

/// Limits on researchers' SQL (`sql.*` in the configuration).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SqlLimits {
    /// A query (planning and every batch of its result) must finish within
    /// this many milliseconds.
    pub query_timeout_ms: u64,
    /// Rows a result may hold; past it the query is stopped.
    pub max_rows: u64,
    /// Bytes (Arrow in memory) a result may hold; past it the query is
    /// stopped.
    pub max_bytes: u64,
    /// Queries one token may run at once. A query counts until its work
    /// has ended, not only until its client stopped listening.
    pub max_concurrent_per_token: usize,
    /// Threads each query's worker process runs it on.
    pub threads: usize,
    /// Worker processes (queries) at once, all tokens together; a query
    /// waits for a free one until its deadline.
    pub workers: usize,
    /// Memory a worker process may allocate (`RLIMIT_DATA`), in MiB; past
    /// it the query fails, not the dashboard. Size the dashboard's memory
    /// for `workers` times this on top of its own.
    pub worker_memory_mb: u64,
    /// The executable workers are started from (`<it> sql-worker`);
    /// default: the dashboard's own.
    pub worker_binary: Option<std::path::PathBuf>,
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits {
            query_timeout_ms: 30_000,
            max_rows: 1_000_000,
            max_bytes: 256 * 1024 * 1024,
            max_concurrent_per_token: 2,
            threads: 1,
            workers: 3,
            worker_memory_mb: 384,
            worker_binary: None,
        }
    }
}

/// Counts each token's queries in progress.
#[derive(Debug, Default)]
pub struct QueryAdmission {
    running: Mutex<HashMap<[u8; 32], usize>>,
}

/// A query's place; its token's count drops when this does.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<QueryAdmission>,
    key: [u8; 32],
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut running = self.admission.running.lock().expect("admission lock");
        if let Some(n) = running.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.key);
            }
        }
    }
}

impl QueryAdmission {
    /// Admits a query for `token` (keyed by its digest; the token itself is
    /// not kept) unless it already runs `max` of them.
    pub fn admit(self: &Arc<Self>, token: &str, max: usize) -> Result<Admitted, Status> {
        self.admit_digest(Sha256::digest(token.as_bytes()).into(), max)
    }

    /// As [`admit`](Self::admit), for a token known by its digest (a login
    /// session holds only that).
    pub fn admit_digest(self: &Arc<Self>, key: [u8; 32], max: usize) -> Result<Admitted, Status> {
        let mut running = self.running.lock().expect("admission lock");
        let n = running.entry(key).or_default();
        if *n >= max {
            return Err(Status::resource_exhausted(format!(
                "this token already runs {max} queries at once; wait for one to finish"
            )));
        }
        *n += 1;
        Ok(Admitted {
            admission: self.clone(),
            key,
        })
    }
}

/// Status for a query that ran past its deadline.
pub fn deadline_status(limits: &SqlLimits) -> Status {
    Status::deadline_exceeded(format!(
        "the query ran past its deadline of {} ms",
        limits.query_timeout_ms
    ))
}

/// A read of the store outside SQL (an export, a plain Flight ticket)
/// under a query's rules: the time spent waiting for `items` (reading and
/// encoding the store: the server's work) is limited to `budget`, past
/// which the stream ends with `at_limit`; and the token's place
/// (`admitted`) is held until the stream has ended or is dropped, so reads
/// cannot be piled up past [`SqlLimits::max_concurrent_per_token`].
///
/// Time the *client* takes between items (a long download over a slow
/// link) is not counted: a wall-clock deadline cut such downloads off. A
/// client that stops reading is the serving loop's to end (its idle rule),
/// and an export's own (see `crate::export`).
pub fn within_budget<T: Send + 'static>(
    items: BoxStream<'static, T>,
    budget: Duration,
    at_limit: T,
    admitted: Admitted,
) -> BoxStream<'static, T> {
    futures::stream::unfold(
        Some((items, budget, at_limit, admitted)),
        move |state| async move {
            let (mut items, left, at_limit, admitted) = state?;
            let started = tokio::time::Instant::now();
            tokio::select! {
                next = items.next() => {
                    let left = left.saturating_sub(started.elapsed());
                    next.map(|item| (item, Some((items, left, at_limit, admitted))))
                }
                () = tokio::time::sleep(left) => Some((at_limit, None)),
            }
        },
    )
    .boxed()
}

/// A query's budget of server time (`sql.query_timeout_ms`).
pub fn budget_of(limits: &SqlLimits) -> Duration {
    Duration::from_millis(limits.query_timeout_ms)
}

/// The deadline of a query starting now.
pub fn deadline_of(limits: &SqlLimits) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_millis(limits.query_timeout_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_runs_at_most_its_share_at_once() {
        let admission = Arc::new(QueryAdmission::default());
        let a = admission.admit("token-a", 2).unwrap();
        let _b = admission.admit("token-a", 2).unwrap();
        let refused = admission.admit("token-a", 2).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(admission.admit("token-b", 2).is_ok(), "another token");
        drop(a);
        assert!(admission.admit("token-a", 2).is_ok(), "a place freed");
    }

    #[tokio::test]
    async fn a_read_ends_when_its_work_passes_the_budget_and_frees_its_place() {
        let admission = Arc::new(QueryAdmission::default());
        let admitted = admission.admit("token-a", 1).unwrap();
        assert!(
            admission.admit("token-a", 1).is_err(),
            "the read holds the place"
        );
        // 10 ms of work an item, endless: ended by the 200 ms budget.
        let endless = futures::stream::repeat(1).then(|n| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            n
        });
        let items: Vec<i32> =
            within_budget(endless.boxed(), Duration::from_millis(200), -1, admitted)
                .collect()
                .await;
        assert_eq!(items.last(), Some(&-1), "ended with the limit's item");
        assert!(items.len() > 3 && items.len() < 30, "{}", items.len());
        assert!(
            admission.admit("token-a", 1).is_ok(),
            "the place is free again"
        );
    }

    /// A slow reader is not the server's work: a download that takes the
    /// client longer than the budget, the server little, is not cut.
    #[tokio::test]
    async fn time_the_client_takes_is_not_counted() {
        let admission = Arc::new(QueryAdmission::default());
        let admitted = admission.admit("token-a", 1).unwrap();
        let items = futures::stream::iter(0..5).boxed();
        let mut read = within_budget(items, Duration::from_millis(100), -1, admitted);
        let mut got = Vec::new();
        while let Some(item) = read.next().await {
            got.push(item);
            // The client reads an item every 60 ms: 300 ms in all.
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }
}
