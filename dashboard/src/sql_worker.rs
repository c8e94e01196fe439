//! Researchers' SQL in a process of its own, one process per query.
//!
//! Flight SQL takes any SQL from anyone holding a researcher token, and
//! DataFusion's memory pool does not see everything a query allocates:
//! scalar functions build their results outside it (`s || s` doubled over
//! thirty stacked CTEs makes a gigabyte from a few hundred bytes of SQL),
//! and planning a deeply nested expression recurses on a thread's stack.
//! Run inside the dashboard, either took the whole process down (map, API,
//! exports and Flight with it). So the dashboard plans and runs no
//! researcher SQL itself: each query is handed to a fresh
//! `hushmap-dashboard sql-worker` child ([`SqlWorkers`]) that
//!
//! - may allocate only `sql.worker_memory_mb` (`RLIMIT_DATA`, which the
//!   kernel enforces on every allocation, in the pool or not; DataFusion's
//!   own pool is three quarters of it, so operators that track their
//!   memory fail with a clear error first);
//! - plans on a thread with a large stack, with DataFusion's
//!   `recursive_protection` (workspace `Cargo.toml`), after a check of the
//!   statement ([`checked_statement`]): one query (or a plain `EXPLAIN` of
//!   one), expressions nested at most [`MAX_EXPR_DEPTH`] deep, queries at
//!   most [`MAX_QUERY_DEPTH`];
//! - may call only the [`RESEARCHER_SCALAR_FUNCTIONS`] (an allow-list: no
//!   function that builds a value of a size given by an argument, and none
//!   that multiplies its input's size), every aggregate and window
//!   function, no table functions and no recursive CTEs;
//! - runs at a lower CPU priority than the serving threads, is killed at
//!   the query's deadline (planning included: a process can be pre-empted,
//!   a thread could not), and dies with the dashboard (`PR_SET_PDEATHSIG`);
//! - gets no environment (no secrets the dashboard was started with).
//!
//! A worker that dies (out of memory, out of stack) ends its query with
//! `RESOURCE_EXHAUSTED`; the dashboard goes on. At most `sql.workers` run
//! at once; a query waits for a free one until its deadline.
//!
//! The worker reads one [`WorkerRequest`] (JSON) on standard input and
//! writes an Arrow IPC stream on standard output; a refusal or failure is
//! one [`WorkerError`] (JSON) on standard error and a non-zero exit.

use crate::sql_limits::{Admitted, SqlLimits, deadline_status};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::arrow::ipc::reader::StreamDecoder;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::format::ExplainFormat;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr as LogicalExpr, LogicalPlan, ScalarUDF};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Expr, Query, Statement as SqlStatement, Visit, Visitor};
use futures::stream::{BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdout};
use tokio::sync::Semaphore;
use tonic::Status;

/// The subcommand of `hushmap-dashboard` that runs one query.
pub const WORKER_SUBCOMMAND: &str = "sql-worker";

/// Statements longer than this are refused before they reach a worker.
pub const MAX_SQL_BYTES: usize = 64 * 1024;

/// How deep expressions may nest (`1+1+…+1` nests one level per `+`).
/// Legible SQL stays far below it; the planner's recursion stays far from
/// any stack's end.
pub const MAX_EXPR_DEPTH: usize = 128;

/// How deep queries may nest (subqueries, CTEs, set operations).
pub const MAX_QUERY_DEPTH: usize = 16;

/// The stack of the thread a worker plans and runs on. Address space
/// only, touched as used; counted in the worker's memory limit.
const WORKER_STACK: usize = 32 * 1024 * 1024;

/// Scalar functions researchers' SQL may call. Left out: generators of a
/// size given by an argument (`range`, `repeat`, `lpad`, `array_repeat`,
/// …), builders that multiply their input's size (`concat`, `replace`,
/// `string_to_array`, `encode`, every array constructor and array
/// operation), and what reads or names anything outside the table. Every
/// aggregate and window function stays: their results are bounded by
/// their input, and their state is in DataFusion's pool.
pub const RESEARCHER_SCALAR_FUNCTIONS: &[&str] = &[
    // Comparison and conditionals.
    "coalesce",
    "nullif",
    "nvl",
    "nvl2",
    "greatest",
    "least",
    "nanvl",
    "isnan",
    "iszero",
    // Arithmetic.
    "abs",
    "ceil",
    "floor",
    "round",
    "trunc",
    "signum",
    "sqrt",
    "cbrt",
    "exp",
    "ln",
    "log",
    "log2",
    "log10",
    "power",
    "pow",
    "pi",
    "degrees",
    "radians",
    "sin",
    "cos",
    "tan",
    "asin",
    "acos",
    "atan",
    "atan2",
    "sinh",
    "cosh",
    "tanh",
    "asinh",
    "acosh",
    "atanh",
    "cot",
    "gcd",
    "lcm",
    "factorial",
    "random",
    // Strings (results no larger than their input, or of a fixed size).
    "lower",
    "upper",
    "initcap",
    "btrim",
    "trim",
    "ltrim",
    "rtrim",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "bit_length",
    "left",
    "right",
    "substr",
    "substring",
    "substr_index",
    "substring_index",
    "strpos",
    "instr",
    "position",
    "starts_with",
    "ends_with",
    "contains",
    "split_part",
    "reverse",
    "ascii",
    "chr",
    "levenshtein",
    "find_in_set",
    "to_hex",
    "uuid",
    // Dates and times.
    "now",
    "current_date",
    "current_time",
    "today",
    "date_trunc",
    "datetrunc",
    "date_bin",
    "date_part",
    "datepart",
    "to_timestamp",
    "to_timestamp_seconds",
    "to_timestamp_millis",
    "to_timestamp_micros",
    "to_timestamp_nanos",
    "to_date",
    "to_char",
    "date_format",
    "to_unixtime",
    "from_unixtime",
    "make_date",
    "make_time",
    "to_local_time",
    // Types and fields (what the planner itself calls for `s['f']`; not
    // `arrow_cast`, which reaches any Arrow type by name).
    "arrow_typeof",
    "get_field",
];

/// Why a worker refused or failed a query, as it tells the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct WorkerError {
    pub code: WorkerCode,
    pub message: String,
}

/// The gRPC status a [`WorkerError`] becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerCode {
    /// The statement: refused by the checks or the planner (the message is
    /// the client's to read).
    InvalidArgument,
    /// Past a limit of memory or size.
    ResourceExhausted,
    /// A failure while running (reading the store): the message may name
    /// files, so it goes to the dashboard's log, not the client.
    Internal,
}

impl WorkerError {
    fn invalid(message: impl Into<String>) -> WorkerError {
        WorkerError {
            code: WorkerCode::InvalidArgument,
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> WorkerError {
        WorkerError {
            code: WorkerCode::Internal,
            message: message.into(),
        }
    }

    /// The worker's verdict on a DataFusion error.
    pub fn from_datafusion(e: &DataFusionError) -> WorkerError {
        match e.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(..)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(..) => {
                WorkerError::invalid(e.find_root().message().into_owned())
            }
            DataFusionError::ResourcesExhausted(..) => WorkerError {
                code: WorkerCode::ResourceExhausted,
                message: "the query needs more memory than a query may use; narrow it (fewer \
                          rows, fewer groups)"
                    .into(),
            },
            _ => WorkerError::internal(e.to_string()),
        }
    }

    /// What the client is told (an internal error's detail is logged here
    /// instead).
    pub fn into_status(self) -> Status {
        match self.code {
            WorkerCode::InvalidArgument => Status::invalid_argument(self.message),
            WorkerCode::ResourceExhausted => Status::resource_exhausted(self.message),
            WorkerCode::Internal => {
                tracing::warn!(error = %self.message, "a researcher's query failed");
                Status::internal(
                    "the query failed while running; the dashboard's log has the details",
                )
            }
        }
    }
}

/// What the dashboard asks of a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerRequest {
    pub sql: String,
    /// Plan only and send the result's schema (Flight's `GetFlightInfo`).
    pub schema_only: bool,
    /// The result's caps (`sql.max_rows`, `sql.max_bytes`): the worker
    /// stops before it writes a batch past them, so an oversized result
    /// never crosses into the dashboard.
    pub max_rows: u64,
    pub max_bytes: u64,
}

/// A result past `sql.max_rows`.
fn too_many_rows(max_rows: u64) -> WorkerError {
    WorkerError {
        code: WorkerCode::ResourceExhausted,
        message: format!("the result has more than {max_rows} rows; narrow the query or aggregate"),
    }
}

/// A result past `sql.max_bytes`.
fn too_many_bytes(max_bytes: u64) -> WorkerError {
    WorkerError {
        code: WorkerCode::ResourceExhausted,
        message: format!(
            "the result is larger than {max_bytes} bytes; narrow the query or aggregate"
        ),
    }
}

/// The worker's settings, from its command line.
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    /// The release store (the `day=…` directories).
    pub store: PathBuf,
    pub threads: usize,
    pub memory_mb: u64,
}

/// The session researchers' SQL is planned in: the store as `releases`, a
/// memory pool of `pool_bytes`, no recursive CTEs, no table functions,
/// only the [`RESEARCHER_SCALAR_FUNCTIONS`], and `EXPLAIN` showing the
/// logical plan only (the physical plan names the store's files).
pub fn researcher_session(
    store: &Path,
    pool_bytes: usize,
    threads: usize,
) -> Result<SessionContext, DataFusionError> {
    // No spilling: a spill file is memory of no pool (on a tmpfs) or disk
    // no limit covers, and a worker killed at its deadline leaves its
    // files behind. A query past its pool fails instead.
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(pool_bytes, 1.0)
        .with_object_list_cache_limit(0)
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()?;
    let mut config = SessionConfig::new().with_target_partitions(threads.max(1));
    config.options_mut().execution.enable_recursive_ctes = false;
    config.options_mut().explain.logical_plan_only = true;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let state = ctx.state();
    for name in state.table_functions().keys() {
        ctx.deregister_udtf(name);
    }
    for name in state.scalar_functions().keys() {
        if !RESEARCHER_SCALAR_FUNCTIONS.contains(&name.as_str()) {
            ctx.deregister_udf(name);
        }
    }
    ctx.register_table(crate::query::TABLE, crate::query::release_table(store)?)?;
    Ok(ctx)
}

/// Counts how deep expressions and queries nest, and stops past the
/// limits (so the walk itself recurses no deeper than they allow).
#[derive(Default)]
struct Nesting {
    expr: usize,
    query: usize,
}

impl Visitor for Nesting {
    type Break = String;

    fn pre_visit_query(&mut self, _query: &Query) -> ControlFlow<String> {
        self.query += 1;
        if self.query > MAX_QUERY_DEPTH {
            return ControlFlow::Break(format!(
                "the statement nests queries more than {MAX_QUERY_DEPTH} deep"
            ));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<String> {
        self.query -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<String> {
        self.expr += 1;
        if self.expr > MAX_EXPR_DEPTH {
            return ControlFlow::Break(format!(
                "the statement nests expressions more than {MAX_EXPR_DEPTH} deep \
                 (a chain like 1+1+…+1 nests one level per operator)"
            ));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<String> {
        self.expr -= 1;
        ControlFlow::Continue(())
    }
}

/// Refuses a statement longer than [`MAX_SQL_BYTES`] (the dashboard before
/// it starts a worker, the worker before it parses).
fn check_length(sql: &str) -> Result<(), WorkerError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(WorkerError::invalid(format!(
            "the statement is longer than {MAX_SQL_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Parses `sql` and checks it before anything plans it: one query (or a
/// plain `EXPLAIN` of one: no `ANALYZE`, which runs it, no `VERBOSE` and
/// no other format, which show the physical plan and its files), nested
/// within [`MAX_EXPR_DEPTH`] and [`MAX_QUERY_DEPTH`].
pub fn checked_statement(sql: &str) -> Result<DfStatement, WorkerError> {
    check_length(sql)?;
    let mut parser = DFParserBuilder::new(sql)
        .build()
        .map_err(|e| WorkerError::from_datafusion(&e))?;
    let mut statements = parser
        .parse_statements()
        .map_err(|e| WorkerError::from_datafusion(&e))?;
    if statements.len() != 1 {
        return Err(WorkerError::invalid("send exactly one statement"));
    }
    let statement = statements.pop_front().expect("one statement");
    let verdict = {
        let query = match &statement {
            DfStatement::Statement(s) => match s.as_ref() {
                SqlStatement::Query(q) => Ok(q),
                _ => Err(()),
            },
            DfStatement::Explain(explain) => {
                let o = &explain.options;
                if o.analyze || o.verbose || !matches!(o.format, None | Some(ExplainFormat::Indent))
                {
                    return Err(WorkerError::invalid(
                        "EXPLAIN ANALYZE, EXPLAIN VERBOSE and other formats are not available; \
                         plain EXPLAIN shows the logical plan",
                    ));
                }
                match explain.statement.as_ref() {
                    DfStatement::Statement(s) => match s.as_ref() {
                        SqlStatement::Query(q) => Ok(q),
                        _ => Err(()),
                    },
                    _ => Err(()),
                }
            }
            _ => Err(()),
        };
        match query {
            Err(()) => Err(WorkerError::invalid(
                "only queries (SELECT, WITH, VALUES) and EXPLAIN of a query are allowed",
            )),
            Ok(q) => match q.visit(&mut Nesting::default()) {
                ControlFlow::Break(why) => Err(WorkerError::invalid(why)),
                ControlFlow::Continue(()) => Ok(()),
            },
        }
    };
    match verdict {
        Ok(()) => Ok(statement),
        Err(e) => {
            // A refused statement may be nested thousands deep, and its
            // drop would recurse that deep: a worker exits right after a
            // refusal, so it is left to the process's end.
            std::mem::forget(statement);
            Err(e)
        }
    }
}

/// Checks and plans `sql` in `ctx` (a [`researcher_session`]): read-only,
/// no DDL, DML or SET statements.
pub async fn plan(ctx: &SessionContext, sql: &str) -> Result<DataFrame, WorkerError> {
    let statement = checked_statement(sql)?;
    let from_df = |e: DataFusionError| WorkerError::from_datafusion(&e);
    let plan = ctx
        .state()
        .statement_to_plan(statement)
        .await
        .map_err(from_df)?;
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(from_df)?;
    check_functions(&plan)?;
    ctx.execute_logical_plan(plan).await.map_err(from_df)
}

/// Refuses a plan that calls a scalar function outside the allow-list.
/// The session's registry holds only those, but SQL syntax reaches other
/// functions through DataFusion's expression planners, which do not ask
/// the registry (`OVERLAY(… PLACING …)`, `[a, b]` array literals): the
/// plan is what runs, so the plan is checked.
fn check_functions(plan: &LogicalPlan) -> Result<(), WorkerError> {
    let allowed = |f: &ScalarUDF| {
        std::iter::once(f.name())
            .chain(f.aliases().iter().map(String::as_str))
            .any(|name| RESEARCHER_SCALAR_FUNCTIONS.contains(&name))
    };
    let mut refused = None;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let LogicalExpr::ScalarFunction(f) = e
                    && !allowed(&f.func)
                {
                    refused = Some(f.func.name().to_string());
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })
    .map_err(|e| WorkerError::from_datafusion(&e))?;
    match refused {
        None => Ok(()),
        Some(name) => Err(WorkerError::invalid(format!(
            "the function {name} is not available to researchers' SQL (docs/RESEARCHERS.md lists \
             what is)"
        ))),
    }
}

/// `hushmap-dashboard sql-worker`: reads a request, answers it, returns
/// the exit code.
pub fn run_worker(args: WorkerArgs) -> i32 {
    let mut request = String::new();
    // JSON escapes a byte in at most six.
    let read = std::io::stdin()
        .take(MAX_SQL_BYTES as u64 * 6 + 4096)
        .read_to_string(&mut request);
    let answered = read
        .map_err(|e| WorkerError::internal(format!("reading the request: {e}")))
        .and_then(|_| {
            serde_json::from_str::<WorkerRequest>(&request)
                .map_err(|e| WorkerError::internal(format!("the request is not valid: {e}")))
        })
        .and_then(|request| {
            // Planning and running on a thread with a large stack.
            std::thread::Builder::new()
                .name("hushmap-sql-worker".into())
                .stack_size(WORKER_STACK)
                .spawn(move || answer(&args, request))
                .map_err(|e| WorkerError::internal(format!("starting the worker thread: {e}")))?
                .join()
                .unwrap_or_else(|_| Err(WorkerError::internal("the worker thread panicked")))
        });
    match answered {
        Ok(()) => 0,
        Err(mut e) => {
            // A planner's message may quote the statement: kept short, so
            // that it fits the pipe the dashboard reads it from.
            if e.message.len() > MAX_ERROR_BYTES {
                let mut end = MAX_ERROR_BYTES;
                while !e.message.is_char_boundary(end) {
                    end -= 1;
                }
                e.message.truncate(end);
                e.message.push('…');
            }
            let mut stderr = std::io::stderr().lock();
            let _ = serde_json::to_writer(&mut stderr, &e);
            let _ = stderr.write_all(b"\n");
            2
        }
    }
}

/// The longest error message a worker sends.
const MAX_ERROR_BYTES: usize = 4096;

/// The most one message of a result may hold (Arrow in memory): the
/// worker cuts batches to it, and refuses a single row larger, so the
/// dashboard never holds more of a result than this at a time.
pub const MAX_BATCH_BYTES: u64 = 4 * 1024 * 1024;

/// The type a result's column is sent as: dictionaries as their values,
/// string and binary views as plain strings and binaries (nested types
/// likewise). A dictionary repeats a value without its cost, and a view's
/// data buffers are counted by no slice and re-sent with every slice of a
/// batch: either let a small result grow large in the dashboard's Flight
/// encoder. Their plain forms cost what they hold.
fn plain_type(t: &DataType) -> DataType {
    match t {
        DataType::Dictionary(_, values) => plain_type(values),
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(f) => DataType::List(plain_field(f)),
        DataType::LargeList(f) => DataType::LargeList(plain_field(f)),
        DataType::ListView(f) | DataType::LargeListView(f) => DataType::LargeList(plain_field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(plain_field(f), *n),
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| plain_field(f)).collect())
        }
        DataType::Map(f, sorted) => DataType::Map(plain_field(f), *sorted),
        other => other.clone(),
    }
}

fn plain_field(f: &Field) -> FieldRef {
    Arc::new(f.clone().with_data_type(plain_type(f.data_type())))
}

/// The schema a result is sent under ([`plain_type`] for every column).
fn plain_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| plain_field(f))
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

/// `batch` under `schema` (its plain form).
fn plain_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, WorkerError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                datafusion::arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WorkerError::internal(format!("sending the result: {e}")))?;
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| WorkerError::internal(format!("sending the result: {e}")))
}

fn answer(args: &WorkerArgs, request: WorkerRequest) -> Result<(), WorkerError> {
    // `threads` runtime threads run the plan's partitions (there are as
    // many: `researcher_session`); the query itself is planned on this
    // thread, the one with the large stack (`block_on`).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| WorkerError::internal(format!("starting the runtime: {e}")))?;
    runtime.block_on(async {
        let ctx = researcher_session(&args.store, pool_bytes(args.memory_mb), args.threads)
            .map_err(|e| WorkerError::from_datafusion(&e))?;
        let df = plan(&ctx, &request.sql).await?;
        let schema = plain_schema(df.schema().as_arrow());
        let written = |e: datafusion::arrow::error::ArrowError| {
            WorkerError::internal(format!("writing the result: {e}"))
        };
        let mut out = StreamWriter::try_new(std::io::BufWriter::new(std::io::stdout()), &schema)
            .map_err(written)?;
        if !request.schema_only {
            let mut batches = df
                .execute_stream()
                .await
                .map_err(|e| WorkerError::from_datafusion(&e))?;
            let (mut rows, mut bytes) = (0u64, 0u64);
            while let Some(batch) = batches.next().await {
                let batch = batch.map_err(|e| WorkerError::from_datafusion(&e))?;
                let batch = plain_batch(&batch, &schema)?;
                rows += batch.num_rows() as u64;
                bytes += arrow_bytes(&batch);
                if rows > request.max_rows {
                    return Err(too_many_rows(request.max_rows));
                }
                if bytes > request.max_bytes {
                    return Err(too_many_bytes(request.max_bytes));
                }
                for part in cut(&batch)? {
                    out.write(&part).map_err(written)?;
                }
                out.flush().map_err(written)?;
            }
        }
        out.finish().map_err(written)?;
        Ok(())
    })
}

/// `batch` in parts of at most [`MAX_BATCH_BYTES`] each (by rows).
fn cut(batch: &RecordBatch) -> Result<Vec<RecordBatch>, WorkerError> {
    let bytes = arrow_bytes(batch);
    if bytes <= MAX_BATCH_BYTES {
        return Ok(vec![batch.clone()]);
    }
    let rows = batch.num_rows();
    let per_part = ((rows as u64 * MAX_BATCH_BYTES / bytes) as usize).max(1);
    let mut parts = Vec::new();
    let mut offset = 0;
    while offset < rows {
        let mut len = per_part.min(rows - offset);
        // Rows differ in size: halve a part until it fits.
        let part = loop {
            let part = batch.slice(offset, len);
            if arrow_bytes(&part) <= MAX_BATCH_BYTES {
                break part;
            }
            if len == 1 {
                return Err(WorkerError {
                    code: WorkerCode::ResourceExhausted,
                    message: format!(
                        "a row of the result is larger than {MAX_BATCH_BYTES} bytes; select less \
                         of it"
                    ),
                });
            }
            len /= 2;
        };
        offset += len;
        parts.push(part);
    }
    Ok(parts)
}

/// DataFusion's pool in a worker of `memory_mb`: what is left after the
/// worker's stack and room for what the pool does not see, so that an
/// operator that tracks its memory fails with a clear error before the
/// kernel's limit ends the process.
fn pool_bytes(memory_mb: u64) -> usize {
    let mib = 1024 * 1024;
    let rest = memory_mb
        .saturating_mul(mib)
        .saturating_sub(WORKER_STACK as u64 + WORKER_SLACK);
    rest.max(16 * mib) as usize
}

/// Memory in a worker outside its pool and stack: its binary's writable
/// data, the runtime, the parser and planner, the result's writer.
const WORKER_SLACK: u64 = 64 * 1024 * 1024;

/// The least `sql.worker_memory_mb` a worker starts and plans in.
pub const MIN_WORKER_MEMORY_MB: u64 = 160;

/// Starts workers for the dashboard and reads their answers.
pub struct SqlWorkers {
    binary: PathBuf,
    store: PathBuf,
    limits: SqlLimits,
    slots: Arc<Semaphore>,
}

impl SqlWorkers {
    /// Workers over the release store at `store`, started from
    /// `sql.worker_binary` (default: this very executable).
    pub fn new(store: &Path, limits: &SqlLimits) -> std::io::Result<SqlWorkers> {
        let binary = match &limits.worker_binary {
            Some(path) => path.clone(),
            None => std::env::current_exe()?,
        };
        Ok(SqlWorkers {
            binary,
            store: store.to_path_buf(),
            limits: limits.clone(),
            slots: Arc::new(Semaphore::new(limits.workers.max(1))),
        })
    }

    /// Starts `sql` in a worker once one is free, and waits for its
    /// result's schema (planning), all by `deadline`. `admitted` (the
    /// token's place) and the worker's slot are held until the worker has
    /// ended and been reaped: at `deadline` at the latest, whether or not
    /// anyone still reads its result.
    pub async fn start(
        &self,
        sql: &str,
        schema_only: bool,
        deadline: tokio::time::Instant,
        admitted: Admitted,
    ) -> Result<WorkerRun, Status> {
        check_length(sql).map_err(WorkerError::into_status)?;
        let slot = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| deadline_status(&self.limits))?
            .map_err(|_| Status::unavailable("the dashboard is stopping"))?;
        let mut child = self.spawn().map_err(|e| {
            tracing::error!(error = %e, "a SQL worker could not be started");
            Status::unavailable(
                "the query could not be started; the dashboard's log has the details",
            )
        })?;
        let request = serde_json::to_vec(&WorkerRequest {
            sql: sql.to_string(),
            schema_only,
            max_rows: self.limits.max_rows,
            max_bytes: self.limits.max_bytes,
        })
        .map_err(|_| Status::internal("the request could not be encoded"))?;
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        // What the worker says on stderr, read as it comes (a worker
        // blocked on a full pipe would never exit), at most STDERR_LIMIT.
        let said = tokio::spawn(async move {
            let mut said = String::new();
            let _ = stderr.take(STDERR_LIMIT).read_to_string(&mut said).await;
            said
        });
        // The watchdog owns the process: it kills it at the deadline or
        // when the run is dropped, reaps it, and only then frees the slot
        // and the token's place.
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let (exit_tx, exit) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                () = tokio::time::sleep_until(deadline) => {
                    let _ = child.kill().await;
                    child.wait().await
                }
                _ = killed => {
                    let _ = child.kill().await;
                    child.wait().await
                }
            };
            // The place and the slot are free before anyone hears of the
            // exit: a client told its query ended may send the next.
            drop(slot);
            drop(admitted);
            let _ = exit_tx.send(status.ok());
        });
        let mut run = WorkerRun {
            kill: Some(kill),
            exit: Some(exit),
            said: Some(said),
            deadline,
            reader: IpcReader {
                stdout,
                decoder: StreamDecoder::new(),
                ready: std::collections::VecDeque::new(),
                read: 0,
                max_read: self
                    .limits
                    .max_bytes
                    .saturating_add(self.limits.max_bytes / 8)
                    .saturating_add(2 * MAX_BATCH_BYTES),
            },
            limits: self.limits.clone(),
        };
        let started = async {
            use tokio::io::AsyncWriteExt;
            // A worker that died before reading says why on stderr.
            let _ = stdin.write_all(&request).await;
            drop(stdin);
            run.read_schema().await
        };
        let started = tokio::time::timeout_at(deadline, started).await;
        match started {
            Ok(Ok(_schema)) => Ok(run),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(deadline_status(&self.limits)),
        }
    }

    fn spawn(&self) -> std::io::Result<Child> {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg(WORKER_SUBCOMMAND)
            .arg("--store")
            .arg(&self.store)
            .arg("--threads")
            .arg(self.limits.threads.max(1).to_string())
            .arg("--memory-mb")
            .arg(self.limits.worker_memory_mb.to_string())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let memory = self.limits.worker_memory_mb.saturating_mul(1024 * 1024);
        // CPU seconds: a backstop should the dashboard's own kill at the
        // deadline not happen (the dashboard itself stopped, say).
        let cpu = self.limits.query_timeout_ms.div_ceil(1000) + 5;
        let parent = std::process::id();
        // SAFETY: between fork and exec only async-signal-safe calls are
        // made (setrlimit, prctl, getppid, setpriority: system calls, no
        // allocation, no lock).
        unsafe {
            command.pre_exec(move || {
                let limit = |resource, value: u64| {
                    let rlimit = libc::rlimit {
                        rlim_cur: value as libc::rlim_t,
                        rlim_max: value as libc::rlim_t,
                    };
                    if libc::setrlimit(resource, &rlimit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                };
                limit(libc::RLIMIT_DATA, memory)?;
                limit(libc::RLIMIT_CPU, cpu)?;
                limit(libc::RLIMIT_CORE, 0)?;
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The dashboard may have died before the line above.
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other("the dashboard is gone"));
                }
                // Below the serving threads: a query may slow, not stall,
                // the page. (Failure to lower is harmless: ignored.)
                libc::setpriority(libc::PRIO_PROCESS, 0, 10);
                Ok(())
            });
        }
        command.spawn()
    }
}

/// A query running in a worker: its result's schema is read; batches
/// follow ([`WorkerRun::into_stream`]). Dropping it kills the worker.
pub struct WorkerRun {
    /// Dropped or sent: the watchdog kills the worker.
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    /// The worker's exit, once reaped.
    exit: Option<tokio::sync::oneshot::Receiver<Option<ExitStatus>>>,
    said: Option<tokio::task::JoinHandle<String>>,
    deadline: tokio::time::Instant,
    reader: IpcReader,
    limits: SqlLimits,
}

struct IpcReader {
    stdout: ChildStdout,
    decoder: StreamDecoder,
    ready: std::collections::VecDeque<RecordBatch>,
    /// Bytes read from the worker so far, and the most it may send: the
    /// byte cap plus room for the stream's framing. A worker stops at the
    /// cap itself, and cuts its batches to [`MAX_BATCH_BYTES`]; this holds
    /// if one did not.
    read: u64,
    max_read: u64,
}

/// A batch's bytes of Arrow in memory: its arrays' own slices (a batch
/// decoded from the worker's stream points into the buffer it was read
/// into, which also holds its neighbours).
fn arrow_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(usize::MAX) as u64)
        .sum()
}

/// Bytes read from a worker's standard error at most.
const STDERR_LIMIT: u64 = 64 * 1024;

impl WorkerRun {
    /// The result's schema.
    pub fn schema(&self) -> SchemaRef {
        self.reader.decoder.schema().expect("read at start")
    }

    async fn read_schema(&mut self) -> Result<SchemaRef, Status> {
        loop {
            if let Some(schema) = self.reader.decoder.schema() {
                return Ok(schema);
            }
            if !self.fill().await? {
                return Err(self.ended().await.err().unwrap_or_else(|| {
                    Status::internal("the query's worker ended without a result")
                }));
            }
        }
    }

    /// Reads more of the stream into the decoder; false at its end.
    async fn fill(&mut self) -> Result<bool, Status> {
        let mut chunk = [0u8; 64 * 1024];
        let n = match self.reader.stdout.read(&mut chunk).await {
            Ok(n) => n,
            Err(_) => return Ok(false),
        };
        if n == 0 {
            return Ok(false);
        }
        self.reader.read += n as u64;
        if self.reader.read > self.reader.max_read {
            self.stop().await;
            return Err(too_many_bytes(self.limits.max_bytes).into_status());
        }
        // A copy of what was read: decoded arrays point into it.
        let mut buffer = Buffer::from(chunk[..n].to_vec());
        while !buffer.is_empty() {
            match self.reader.decoder.decode(&mut buffer) {
                Ok(Some(batch)) => self.reader.ready.push_back(batch),
                Ok(None) => {}
                // A worker that died mid-write: its exit says why.
                Err(_) => return Ok(false),
            }
        }
        Ok(true)
    }

    /// The next batch, or the end (`None`) once the worker exited cleanly.
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, Status> {
        loop {
            if let Some(batch) = self.reader.ready.pop_front() {
                return Ok(Some(batch));
            }
            if !self.fill().await? {
                return self.ended().await.map(|()| None);
            }
        }
    }

    /// How the worker ended, once its output has.
    async fn ended(&mut self) -> Result<(), Status> {
        let Some(exit) = self.exit.take() else {
            return Err(Status::internal("the query's worker was already stopped"));
        };
        let status = match tokio::time::timeout(std::time::Duration::from_secs(5), exit).await {
            Ok(Ok(Some(status))) => status,
            _ => {
                self.stop().await;
                return Err(Status::internal(
                    "the query's worker did not end; the dashboard's log has the details",
                ));
            }
        };
        if status.success() {
            return Ok(());
        }
        let said = match self.said.take() {
            Some(said) => tokio::time::timeout(std::time::Duration::from_secs(2), said)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => String::new(),
        };
        Err(self.verdict(status, &said))
    }

    /// A failed worker's status: its own word if it gave one, else what
    /// ended it.
    fn verdict(&self, status: ExitStatus, said: &str) -> Status {
        if let Some(e) = said
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str::<WorkerError>(line).ok())
        {
            return e.into_status();
        }
        use std::os::unix::process::ExitStatusExt;
        let Some(signal) = status.signal() else {
            // Not a worker's own exit (a worker says why in JSON): the
            // executable is not a worker (`sql.worker_binary`), or it could
            // not start. Its first words go to the log (no SQL in them).
            let first = said
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect::<String>();
            tracing::error!(code = status.code(), said = %first, "a SQL worker failed to run");
            return Status::internal(
                "the query's worker failed to run; the dashboard's log has the details",
            );
        };
        if tokio::time::Instant::now() >= self.deadline {
            return deadline_status(&self.limits);
        }
        // Out of memory (the allocator aborts at the limit), out of stack
        // (Rust aborts on overflow) or killed by the kernel: the query
        // asked for more than a query may have. Its SQL is not logged.
        tracing::warn!(signal, "a researcher's query ended its worker");
        Status::resource_exhausted(format!(
            "the query needed more than a query may use ({} MiB of memory, nesting within the \
             limits); narrow it",
            self.limits.worker_memory_mb
        ))
    }

    /// Waits for a worker that has sent all it will (a schema-only run)
    /// to end; its slot and the token's place are free when this returns.
    pub async fn finish(mut self) -> Result<(), Status> {
        while self.next_batch().await?.is_some() {}
        Ok(())
    }

    /// Kills the worker and waits (briefly) until it has been reaped, so
    /// that the token's place is free when the client hears why.
    pub async fn stop(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(exit) = self.exit.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), exit).await;
        }
    }

    /// The result's batches, stopped with a clear status at the deadline
    /// or when the result passes a cap (rows, and bytes of Arrow in
    /// memory); the worker is killed then, and when the stream is dropped
    /// (and at the deadline by its watchdog, read or not).
    pub fn into_stream(self) -> BoxStream<'static, Result<RecordBatch, Status>> {
        struct State {
            run: WorkerRun,
            rows: u64,
            bytes: u64,
            done: bool,
        }
        let state = State {
            run: self,
            rows: 0,
            bytes: 0,
            done: false,
        };
        futures::stream::unfold(state, move |mut s| async move {
            if s.done {
                return None;
            }
            let deadline = s.run.deadline;
            let next = tokio::select! {
                next = s.run.next_batch() => next,
                () = tokio::time::sleep_until(deadline) => {
                    s.done = true;
                    s.run.stop().await;
                    return Some((Err(deadline_status(&s.run.limits)), s));
                }
            };
            let limits = &s.run.limits;
            let item = match next {
                Ok(None) => return None,
                Err(status) => Err(status),
                Ok(Some(batch)) => {
                    s.rows += batch.num_rows() as u64;
                    s.bytes += arrow_bytes(&batch);
                    if s.rows > limits.max_rows {
                        Err(too_many_rows(limits.max_rows).into_status())
                    } else if s.bytes > limits.max_bytes {
                        Err(too_many_bytes(limits.max_bytes).into_status())
                    } else {
                        Ok(batch)
                    }
                }
            };
            s.done = item.is_err();
            if s.done {
                // Stopped: end the work before answering, so the token's
                // place is free when the client hears why.
                s.run.stop().await;
            }
            Some((item, s))
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SessionContext {
        let dir = std::env::temp_dir().join(format!("hushmap-sql-worker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        researcher_session(&dir, 64 * 1024 * 1024, 1).unwrap()
    }

    async fn refused(ctx: &SessionContext, sql: &str) -> WorkerError {
        match plan(ctx, sql).await {
            Err(e) => e,
            Ok(df) => WorkerError::from_datafusion(&df.collect().await.expect_err(sql)),
        }
    }

    #[tokio::test]
    async fn the_researcher_session_generates_and_multiplies_nothing() {
        let ctx = session();
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
            "SELECT concat('ab', 'ab', 'ab')",
            "SELECT concat_ws('-', 'ab', 'ab')",
            "SELECT replace('ab', 'a', 'aaaa')",
            "SELECT overlay('ab' placing 'xyz' from 1)",
            "SELECT string_to_array('a,b', ',')",
            "SELECT unnest(string_to_array('a,b', ','))",
            "SELECT make_array(1, 2)",
            "SELECT array_concat([1], [2])",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
        ] {
            // Each plans in a default session: refused here for what was
            // taken out, not for a typo.
            assert!(SessionContext::new().sql(sql).await.is_ok(), "{sql}");
            let e = refused(&ctx, sql).await;
            assert_eq!(e.code, WorkerCode::InvalidArgument, "{sql}: {e}");
        }
        // Ordinary SQL still works.
        let ok = plan(
            &ctx,
            "SELECT upper('a') || 'b', abs(-1), round(2.5), substr('abc', 2), \
             date_trunc('day', now()) IS NOT NULL, count(*) FROM releases",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
        assert_eq!(ok[0].num_rows(), 1);
    }

    #[tokio::test]
    async fn statements_other_than_a_query_and_deep_nesting_are_refused_before_planning() {
        let ctx = session();
        let deep_sum = format!("SELECT {}1", "1+".repeat(30_000));
        let deep_and = format!("SELECT 1 WHERE {}true", "true AND ".repeat(5_000));
        let deep_queries = format!(
            "SELECT * FROM {}(SELECT 1){}",
            "(SELECT * FROM ".repeat(20),
            " AS t)".repeat(20)
        );
        for (sql, says) in [
            (deep_sum.as_str(), "nests expressions"),
            (deep_and.as_str(), "nests expressions"),
            (deep_queries.as_str(), ""),
            ("SELECT 1; SELECT 2", "exactly one statement"),
            (
                "SET datafusion.explain.logical_plan_only = false",
                "only queries",
            ),
            (
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
                "only queries",
            ),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "only queries"),
            ("EXPLAIN ANALYZE SELECT 1", "EXPLAIN ANALYZE"),
            ("EXPLAIN VERBOSE SELECT 1", "EXPLAIN ANALYZE"),
            ("EXPLAIN FORMAT TREE SELECT 1", "EXPLAIN ANALYZE"),
            ("EXPLAIN CREATE TABLE t AS SELECT 1", "only queries"),
        ] {
            let e = checked_statement(sql).expect_err(sql);
            assert_eq!(e.code, WorkerCode::InvalidArgument, "{e}");
            assert!(e.message.contains(says), "{sql:.60}: {e}");
        }
        // Within the limits, nesting plans.
        let fine = format!("SELECT {}1", "1+".repeat(MAX_EXPR_DEPTH - 2));
        assert!(plan(&ctx, &fine).await.is_ok());
    }

    /// A sort past the pool fails; it does not spill to a temporary
    /// directory (memory of no pool on a tmpfs, files a killed worker
    /// leaves behind).
    #[tokio::test]
    async fn a_query_past_its_pool_fails_and_does_not_spill() {
        let dir = std::env::temp_dir().join(format!("hushmap-sql-spill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pool = 24 * 1024 * 1024;
        let rows = (1..=1500)
            .map(|i| format!("({i})"))
            .collect::<Vec<_>>()
            .join(",");
        // 2.25 M rows to sort, ~36 MB: past the pool.
        let sql = format!(
            "SELECT a.x, b.x FROM (VALUES {rows}) AS a(x), (VALUES {rows}) AS b(x) \
             ORDER BY random()"
        );
        let e = refused(&researcher_session(&dir, pool, 1).unwrap(), &sql).await;
        assert_eq!(e.code, WorkerCode::ResourceExhausted, "{e}");
        // With DataFusion's default disk manager the same sort spills to a
        // temporary directory and answers.
        let spilling = SessionContext::new_with_config_rt(
            SessionConfig::new().with_target_partitions(1),
            RuntimeEnvBuilder::new()
                .with_memory_limit(pool, 1.0)
                .build_arc()
                .unwrap(),
        );
        let spilled = spilling.sql(&sql).await.unwrap().collect().await;
        assert!(spilled.is_ok(), "{spilled:?}");
    }

    /// Dictionaries and views are sent as the plain values they stand
    /// for, so that what a result costs is what is counted.
    #[test]
    fn results_are_sent_as_plain_types() {
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::LargeUtf8));
        assert_eq!(plain_type(&dict), DataType::LargeUtf8);
        assert_eq!(plain_type(&DataType::Utf8View), DataType::Utf8);
        let nested = DataType::List(Arc::new(Field::new("item", DataType::Utf8View, true)));
        assert_eq!(
            plain_type(&nested),
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
        );
        let keys = datafusion::arrow::array::Int32Array::from(vec![0; 1000]);
        let values = datafusion::arrow::array::StringArray::from(vec!["x".repeat(10_000)]);
        let column =
            datafusion::arrow::array::DictionaryArray::try_new(keys, Arc::new(values)).unwrap();
        let batch = RecordBatch::try_from_iter([("d", Arc::new(column) as _)]).unwrap();
        let counted_as_dictionary = arrow_bytes(&batch);
        let schema = plain_schema(&batch.schema());
        let plain = plain_batch(&batch, &schema).unwrap();
        assert_eq!(plain.schema().field(0).data_type(), &DataType::Utf8);
        assert!(arrow_bytes(&plain) >= 10_000_000, "{}", arrow_bytes(&plain));
        assert!(counted_as_dictionary < 100_000);
        // Cut into parts of at most MAX_BATCH_BYTES.
        let parts = cut(&plain).unwrap();
        assert!(parts.len() >= 3);
        assert!(parts.iter().all(|p| arrow_bytes(p) <= MAX_BATCH_BYTES));
        assert_eq!(parts.iter().map(|p| p.num_rows()).sum::<usize>(), 1000);
    }

    #[tokio::test]
    async fn explain_shows_the_logical_plan_and_no_file() {
        let ctx = session();
        let shown = plan(
            &ctx,
            "EXPLAIN SELECT count(*) FROM releases WHERE level = 5",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&shown)
            .unwrap()
            .to_string();
        assert!(text.contains("logical_plan"), "{text}");
        assert!(!text.contains("physical_plan"), "{text}");
        assert!(
            !text.contains(std::env::temp_dir().to_str().unwrap()),
            "{text}"
        );
    }
}
