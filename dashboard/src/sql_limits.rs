//! What a researcher's SQL may cost: a session without row generators, a
//! deadline, caps on what a result may hold, and a limit on queries run at
//! once per token.
//!
//! Flight SQL takes arbitrary SQL from anyone holding a researcher token.
//! The release store is small, so the danger is not reading it but
//! *making* data: `generate_series(1, 1e12)`, a recursive CTE with no stop,
//! `range()` or `repeat()` building a value of billions of elements
//! (allocated by the function, outside DataFusion's memory pool), a cross
//! join of a table with itself five times. The researcher session
//! ([`researcher_session`]) has no table functions, no recursive CTEs and
//! none of the [`UNBOUNDED_FUNCTIONS`]; what is left can still run long or
//! return much, so every query runs under a deadline with row and byte caps
//! ([`limit_stream`]), and each token runs at most
//! [`SqlLimits::max_concurrent_per_token`] queries at once
//! ([`QueryAdmission`]).
//!
//! Errors sent back name the problem in words (a planning error's own
//! message, "the query ran past its deadline"); errors from reading the
//! store, which may name files and directories, become a fixed message
//! and are logged here instead ([`client_status`]).

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::prelude::{SessionConfig, SessionContext};
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
    /// Threads researchers' queries run on, apart from the threads serving
    /// the page, the API and Flight.
    pub threads: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits {
            query_timeout_ms: 30_000,
            max_rows: 1_000_000,
            max_bytes: 256 * 1024 * 1024,
            max_concurrent_per_token: 2,
            threads: 1,
        }
    }
}

/// Scalar functions that build values of a size given by an argument, not
/// by their input: removed from the researcher session.
pub const UNBOUNDED_FUNCTIONS: &[&str] = &[
    "range",
    "generate_series",
    "repeat",
    "lpad",
    "rpad",
    "array_repeat",
    "array_resize",
];

/// The session researchers' SQL is planned in: the same memory pool as the
/// dashboard's own queries, no recursive CTEs, no table functions (every
/// one of DataFusion's generates or reads rows by argument), none of the
/// [`UNBOUNDED_FUNCTIONS`], and a shallow parser.
pub fn researcher_session(runtime: Arc<RuntimeEnv>) -> SessionContext {
    let mut config = SessionConfig::new();
    config.options_mut().execution.enable_recursive_ctes = false;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let table_functions: Vec<String> = ctx.state().table_functions().keys().cloned().collect();
    for name in table_functions {
        ctx.deregister_udtf(&name);
    }
    for name in UNBOUNDED_FUNCTIONS {
        ctx.deregister_udf(name);
    }
    ctx
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

/// What a client is told about a failed query.
pub fn client_status(e: &DataFusionError) -> Status {
    match e.find_root() {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(..) => {
            Status::invalid_argument(e.find_root().message().into_owned())
        }
        DataFusionError::ResourcesExhausted(..) => Status::resource_exhausted(
            "the query needs more memory than a query may use; narrow it (fewer rows, fewer groups)",
        ),
        _ => {
            tracing::warn!(error = %e, "a researcher's query failed");
            Status::internal("the query failed while running; the dashboard's log has the details")
        }
    }
}

/// A query's `batches`, stopped with a clear status at the deadline or when
/// the result passes a cap (rows, and bytes of Arrow in memory). `work` is
/// held until the stream ends or is dropped, which cancels the query.
pub fn limit_stream(
    batches: BoxStream<'static, Result<RecordBatch, DataFusionError>>,
    limits: &SqlLimits,
    deadline: tokio::time::Instant,
    work: AbortOnDrop,
) -> BoxStream<'static, Result<RecordBatch, Status>> {
    struct State {
        batches: BoxStream<'static, Result<RecordBatch, DataFusionError>>,
        rows: u64,
        bytes: u64,
        done: bool,
        work: AbortOnDrop,
    }
    let limits = limits.clone();
    let state = State {
        batches,
        rows: 0,
        bytes: 0,
        done: false,
        work,
    };
    futures::stream::unfold(state, move |mut s| {
        let limits = limits.clone();
        async move {
            if s.done {
                return None;
            }
            let next = tokio::select! {
                next = s.batches.next() => next,
                () = tokio::time::sleep_until(deadline) => {
                    s.done = true;
                    s.work.stop().await;
                    return Some((Err(deadline_status(&limits)), s));
                }
            };
            let item = match next? {
                Err(e) => Err(client_status(&e)),
                Ok(batch) => {
                    s.rows += batch.num_rows() as u64;
                    s.bytes += batch.get_array_memory_size() as u64;
                    if s.rows > limits.max_rows {
                        Err(Status::resource_exhausted(format!(
                            "the result has more than {} rows; narrow the query or aggregate",
                            limits.max_rows
                        )))
                    } else if s.bytes > limits.max_bytes {
                        Err(Status::resource_exhausted(format!(
                            "the result is larger than {} bytes; narrow the query or aggregate",
                            limits.max_bytes
                        )))
                    } else {
                        Ok(batch)
                    }
                }
            };
            s.done = item.is_err();
            if s.done {
                // Stopped by a cap: end the work before answering, so the
                // token's place is free when the client hears why.
                s.work.stop().await;
            }
            Some((item, s))
        }
    })
    .boxed()
}

/// The threads researchers' queries run on.
///
/// DataFusion's operators yield to the scheduler between batches, but one
/// that makes many batches from data it already holds (a cross join) may
/// not yield for a long time: run on the threads serving requests, such a
/// query would stall the page, the API and every other client, and no
/// deadline could answer until it yielded. Here it can only stall this
/// pool; the deadline answers the client on time from the serving
/// threads, and the work is cancelled at its next yield.
pub struct SqlRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl SqlRuntime {
    pub fn new(threads: usize) -> std::io::Result<SqlRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("hushmap-sql")
            .enable_all()
            .build()?;
        Ok(SqlRuntime {
            runtime: Some(runtime),
        })
    }

    /// Runs `df` on the pool; its batches arrive through the returned
    /// stream (two at most waiting). `admitted` is held by the work itself,
    /// so the token's place frees when the work has really ended. Dropping
    /// the stream cancels the work.
    pub fn execute(
        &self,
        df: datafusion::dataframe::DataFrame,
        admitted: Admitted,
    ) -> (
        BoxStream<'static, Result<RecordBatch, DataFusionError>>,
        AbortOnDrop,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let work = self
            .runtime
            .as_ref()
            .expect("running until dropped")
            .spawn(async move {
                let _admitted = admitted;
                let mut batches = match cooperative_stream(df).await {
                    Ok(batches) => batches,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                while let Some(batch) = batches.next().await {
                    if tx.send(batch).await.is_err() {
                        return;
                    }
                }
            });
        let batches = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|batch| (batch, rx))
        })
        .boxed();
        (batches, AbortOnDrop(work))
    }
}

/// Executes `df` with every operator of its physical plan under a
/// [`CooperativeExec`]: each batch any operator makes spends the task's
/// scheduling budget, so the task yields every few batches and a
/// cancelled query stops there, not when it is done. (DataFusion inserts
/// such nodes only above scans and exchanges; a cross join making
/// billions of rows from two small inputs it holds never passes one.)
async fn cooperative_stream(
    df: datafusion::dataframe::DataFrame,
) -> Result<datafusion::physical_plan::SendableRecordBatchStream, DataFusionError> {
    let task = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let plan = plan
        .transform_up(|node| {
            Ok(Transformed::yes(
                Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>
            ))
        })?
        .data;
    datafusion::physical_plan::execute_stream(plan, task)
}

impl Drop for SqlRuntime {
    fn drop(&mut self) {
        // Dropped from async code when the dashboard stops: a runtime may
        // not block there, so it is let go rather than waited for.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Cancels a query's work when its result stream is dropped.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

/// Longest wait for cancelled work to end before a refusal is sent anyway
/// (cooperative plans end at their next batch, well within it).
const STOP_WAIT: Duration = Duration::from_secs(2);

impl AbortOnDrop {
    /// Cancels the work and waits (up to [`STOP_WAIT`]) until it has ended,
    /// so the token's place it holds is free again: a client told its
    /// query was stopped can send the next one at once. Past the wait the
    /// refusal goes out regardless; the place frees when the work yields.
    pub async fn stop(&mut self) {
        self.0.abort();
        let _ = tokio::time::timeout(STOP_WAIT, &mut self.0).await;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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

    #[tokio::test]
    async fn the_researcher_session_generates_nothing() {
        let ctx = researcher_session(Arc::new(RuntimeEnv::default()));
        for sql in [
            "SELECT * FROM generate_series(1, 1000000000000)",
            "SELECT * FROM range(1000000000000)",
            "SELECT range(1, 1000000000)",
            "SELECT generate_series(1, 1000000000)",
            "SELECT repeat('x', 1000000000)",
            "SELECT lpad('x', 1000000000)",
            "SELECT rpad('x', 1000000000, 'y')",
            "SELECT array_repeat(1, 1000000000)",
            "SELECT list_repeat(1, 1000000000)",
            "SELECT array_resize([1], 1000000000, 0)",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
        ] {
            // Each plans in a default session: refused here for what was
            // taken out, not for a typo.
            assert!(SessionContext::new().sql(sql).await.is_ok(), "{sql}");
            let refused = match ctx.sql(sql).await {
                Err(e) => e,
                Ok(df) => df.collect().await.expect_err(sql),
            };
            let status = client_status(&refused);
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{sql}: {refused}"
            );
        }
        // Ordinary SQL still works.
        let ok = ctx
            .sql("SELECT upper('a') || 'b', abs(-1), date_trunc('day', now()) IS NOT NULL")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(ok[0].num_rows(), 1);
    }
}
