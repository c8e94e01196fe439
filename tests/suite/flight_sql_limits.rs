//! Attacks on Flight SQL through a real gRPC client: SQL that generates
//! rows or values without end is refused, a query that runs long is
//! stopped at its deadline, a result past its caps is stopped, a token
//! runs only so many queries at once (and exports and plain Flight tickets
//! take the same places), an error from reading the store does not name the
//! store's files, and an overflowing window bound is refused (not a panic).
//! Each fails if the attack works.

use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use hushmap_dashboard::auth::{Role, TokenEntry};
use hushmap_tests::{StandaloneDashboard, wait_until};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::transport::Channel;

const RESEARCHER: &str = "researcher-sql-limits-5c1e9a7b3d";
const OTHER: &str = "researcher-sql-limits-other-8f2d";

struct Running {
    flight: String,
    http: std::net::SocketAddr,
    data_dir: PathBuf,
    _dashboard: StandaloneDashboard,
}

async fn start() -> anyhow::Result<Running> {
    start_with(|config| {
        // 5 s, not 2: every query starts a worker process (the debug
        // binary, ~150 MB to map and link), and under CI's four tests at
        // once a 100-row query once took past 2 s (warm run at 4a8dcdf).
        // The runaway sum below takes about a minute: still far past it.
        config.sql.query_timeout_ms = 5_000;
        config.sql.max_rows = 1_000;
        config.sql.max_bytes = 64 * 1024;
        config.sql.max_concurrent_per_token = 1;
    })
    .await
}

/// A dashboard with the two researcher tokens, its SQL limits set by
/// `limits`.
async fn start_with(
    limits: impl FnOnce(&mut hushmap_dashboard::DashboardConfig),
) -> anyhow::Result<Running> {
    let dashboard = StandaloneDashboard::start(|config| {
        for (token, name) in [(RESEARCHER, "r"), (OTHER, "o")] {
            config
                .auth
                .tokens
                .push(TokenEntry::for_token(token, vec![Role::Researcher], name));
        }
        limits(config);
    })
    .await?;
    Ok(Running {
        flight: format!("http://{}", dashboard.flight),
        http: dashboard.http,
        data_dir: dashboard.data_dir.clone(),
        _dashboard: dashboard,
    })
}

async fn client(url: &str, token: &str) -> anyhow::Result<FlightSqlServiceClient<Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect()
        .await?;
    let mut client = FlightSqlServiceClient::new(channel);
    client.set_header("authorization", format!("Bearer {token}"));
    Ok(client)
}

/// Runs `sql` to the end; the status it failed with, if it failed.
async fn run(url: &str, token: &str, sql: &str) -> anyhow::Result<Result<usize, tonic::Status>> {
    let mut c = client(url, token).await?;
    let info = match c.execute(sql.to_string(), None).await {
        Ok(info) => info,
        Err(e) => return Ok(Err(status(e))),
    };
    let ticket = info.endpoint[0].ticket.clone().expect("a ticket");
    let stream = match c.do_get(ticket).await {
        Ok(s) => s,
        Err(e) => return Ok(Err(status(e))),
    };
    Ok(match stream.try_collect::<Vec<_>>().await {
        Ok(batches) => Ok(batches.iter().map(|b| b.num_rows()).sum()),
        Err(e) => Err(status(e)),
    })
}

fn status(e: arrow_flight::error::FlightError) -> tonic::Status {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => panic!("not a gRPC status: {other}"),
    }
}

/// Waits (up to 10 s) until `token` may run a query again.
async fn ran_again_soon(url: &str, token: &str) -> anyhow::Result<()> {
    let last = std::sync::Mutex::new(String::new());
    wait_until(
        "the token to run a query again",
        Duration::from_secs(10),
        || async {
            match run(url, token, "SELECT 1").await? {
                Ok(1) => Ok(Some(())),
                other => {
                    *last.lock().unwrap() = format!("{other:?}");
                    Ok(None)
                }
            }
        },
    )
    .await
    .map_err(|e| e.context(format!("still busy: {}", last.lock().unwrap())))
}

/// 100⁵ = 10¹⁰ rows to sum (a count would come from statistics): far past
/// any deadline.
fn long_sum() -> String {
    format!(
        "SELECT sum(a.x * b.x + c.x - d.x * e.x) FROM {}, {}, {}, {}, {}",
        values(100, "a"),
        values(100, "b"),
        values(100, "c"),
        values(100, "d"),
        values(100, "e")
    )
}

/// `(VALUES (1), …, (n)) AS name(x)`: rows without a generator.
fn values(n: usize, name: &str) -> String {
    let rows: Vec<String> = (1..=n).map(|i| format!("({i})")).collect();
    format!("(VALUES {}) AS {name}(x)", rows.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_sql_is_refused_or_stopped() -> anyhow::Result<()> {
    let d = start().await?;
    // Generators: refused at planning.
    for sql in [
        "SELECT count(*) FROM generate_series(1, 100000000000)",
        "SELECT cardinality(range(1, 5000000000))",
        "SELECT length(repeat('x', 2000000000))",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
    ] {
        let refused = run(&d.flight, RESEARCHER, sql).await?.expect_err(sql);
        assert_eq!(refused.code(), Code::InvalidArgument, "{sql}: {refused:?}");
    }
    // 100⁵ = 10¹⁰ rows to sum (a count would come from statistics): stopped at the 5 s deadline.
    let v = values(100, "a");
    let long = long_sum();
    let started = Instant::now();
    let stopped = run(&d.flight, RESEARCHER, &long)
        .await?
        .expect_err("deadline");
    assert_eq!(stopped.code(), Code::DeadlineExceeded, "{stopped:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped only after {:?}",
        started.elapsed()
    );
    // The work itself stopped too (a token's place is held until its work
    // ends, and this token has one): the next query runs within seconds,
    // not after the minute the sum would take.
    ran_again_soon(&d.flight, RESEARCHER).await?;
    // 10⁴ rows against a cap of 10³; wide rows against the byte cap.
    let many = format!("SELECT a.x, b.x FROM {v}, {}", values(100, "b"));
    let capped = run(&d.flight, RESEARCHER, &many).await?.expect_err("rows");
    assert_eq!(capped.code(), Code::ResourceExhausted, "{capped:?}");
    assert!(capped.message().contains("1000 rows"), "{capped:?}");
    let wide = format!(
        "SELECT a.x, rpad_free FROM {v}, (SELECT '{}' AS rpad_free)",
        "w".repeat(4096)
    );
    let capped = run(&d.flight, RESEARCHER, &wide).await?.expect_err("bytes");
    assert_eq!(capped.code(), Code::ResourceExhausted, "{capped:?}");
    // Within the limits, a query answers.
    assert_eq!(
        run(&d.flight, RESEARCHER, &format!("SELECT x FROM {v}"))
            .await?
            .map_err(|s| s.to_string()),
        Ok(100)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_runs_one_query_at_a_time() -> anyhow::Result<()> {
    let d = start().await?;
    let long = long_sum();
    let first = tokio::spawn({
        let (url, long) = (d.flight.clone(), long.clone());
        async move {
            // The probes below hold the token's place for a moment each;
            // a long query that meets one is turned away too and tries
            // again, as a client would.
            loop {
                match run(&url, RESEARCHER, &long).await {
                    Ok(Err(s)) if s.code() == Code::ResourceExhausted => {
                        // A client's backoff before it tries again.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => return other,
                }
            }
        }
    });
    // While it runs, the same token is turned away; another is not.
    let last = std::sync::Mutex::new(String::new());
    wait_until(
        "the same token to be turned away while its long query runs",
        Duration::from_secs(15),
        || async {
            match run(&d.flight, RESEARCHER, "SELECT 1").await? {
                Err(s) if s.code() == Code::ResourceExhausted => Ok(Some(())),
                other => {
                    *last.lock().unwrap() = format!("{other:?}");
                    Ok(None)
                }
            }
        },
    )
    .await
    .map_err(|e| e.context(format!("never turned away: {}", last.lock().unwrap())))?;
    assert_eq!(
        run(&d.flight, OTHER, "SELECT 1")
            .await?
            .map_err(|s| s.to_string()),
        Ok(1)
    );
    let first = first.await??;
    assert_eq!(first.unwrap_err().code(), Code::DeadlineExceeded);
    // Its place is free again once the work was cancelled.
    ran_again_soon(&d.flight, RESEARCHER).await?;
    assert_eq!(
        run(&d.flight, RESEARCHER, "SELECT 1")
            .await?
            .map_err(|s| s.to_string()),
        Ok(1)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_problem_not_the_files() -> anyhow::Result<()> {
    let d = start().await?;
    // A planning error is the client's to read.
    let bad = run(&d.flight, RESEARCHER, "SELECT no_such_column FROM releases")
        .await?
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("no_such_column"), "{bad:?}");
    // A broken file in the store: the error says the query failed, and
    // neither the store's directory nor the file's name.
    let day = d.data_dir.join("releases").join("day=2026-01-01");
    std::fs::create_dir_all(&day)?;
    std::fs::write(day.join("broken-7f3a.parquet"), b"not parquet at all")?;
    let failed = run(&d.flight, RESEARCHER, "SELECT count(*) FROM releases")
        .await?
        .unwrap_err();
    let dir = d.data_dir.display().to_string();
    for secret in [dir.as_str(), "broken-7f3a", "day=2026-01-01", "/tmp"] {
        assert!(!failed.message().contains(secret), "{secret} in {failed:?}");
    }
    assert_eq!(failed.code(), Code::Internal, "{failed:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_window_bound_is_refused() -> anyhow::Result<()> {
    let d = start().await?;
    let channel = tonic::transport::Endpoint::from_shared(d.flight.clone())?
        .connect()
        .await?;
    let mut flight = arrow_flight::flight_service_client::FlightServiceClient::new(channel);
    let mut request = tonic::Request::new(arrow_flight::FlightDescriptor::new_path(vec![
        "window".into(),
        i64::MAX.to_string(),
    ]));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {RESEARCHER}").parse()?);
    let refused = flight.get_flight_info(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    // Still serving.
    assert_eq!(
        run(&d.flight, RESEARCHER, "SELECT 1")
            .await?
            .map_err(|s| s.to_string()),
        Ok(1)
    );
    Ok(())
}

/// Exports and plain Flight tickets had no cap and no deadline: a token
/// could run any number beside its queries. They now take places in the
/// same admission: while a token's long query holds its one place, its
/// export is refused 429 and its plain `do_get` RESOURCE_EXHAUSTED, while
/// another token's are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_and_tickets_share_the_tokens_places() -> anyhow::Result<()> {
    let d = start_with(|config| {
        // Long enough that the probes below meet the query still running.
        config.sql.query_timeout_ms = 20_000;
        config.sql.max_concurrent_per_token = 1;
    })
    .await?;
    let url = d.flight.clone();
    let long = tokio::spawn({
        let url = url.clone();
        async move {
            // A probe below may hold the place for a moment as the long
            // query asks for it: then it asks again, as a client would.
            loop {
                match run(&url, RESEARCHER, &long_sum()).await {
                    Ok(Err(s)) if s.code() == Code::ResourceExhausted => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => return other,
                }
            }
        }
    });
    wait_until(
        "the long query to hold the token's place",
        Duration::from_secs(15),
        || async {
            Ok(matches!(run(&url, RESEARCHER, "SELECT 1").await?, Err(s) if s.code() == Code::ResourceExhausted)
                .then_some(()))
        },
    )
    .await?;
    let http = reqwest::Client::new();
    let export = |token: &'static str| {
        http.get(format!("http://{}/api/v1/export?format=parquet", d.http))
            .bearer_auth(token)
            .send()
    };
    let refused = export(RESEARCHER).await?;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert!(refused.text().await?.contains("busy"));
    assert_ne!(export(OTHER).await?.status(), 429, "another token's export");
    let ticket = |token: &'static str| {
        let url = url.clone();
        async move {
            let mut c = client(&url, token).await?;
            Ok::<_, anyhow::Error>(match c.do_get(arrow_flight::Ticket::new("")).await {
                Ok(stream) => stream
                    .try_collect::<Vec<_>>()
                    .await
                    .map(|_| ())
                    .map_err(status),
                Err(e) => Err(status(e)),
            })
        }
    };
    assert_eq!(
        ticket(RESEARCHER).await?.unwrap_err().code(),
        Code::ResourceExhausted
    );
    // (The store is empty: another token's ticket is answered, not found.)
    let other = ticket(OTHER).await?;
    assert!(
        !matches!(&other, Err(s) if s.code() == Code::ResourceExhausted),
        "another token's ticket: {other:?}"
    );
    // The long query itself is stopped at its deadline as before.
    long.abort();
    Ok(())
}

/// The peak resident memory of this process, in KiB. nextest (the README's
/// test command) runs each test in a process of its own, so here it is the
/// dashboard's.
fn peak_rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/self/status"))
}

/// `WITH t0 AS (SELECT 'xxxxxxxxxxxxxxxx' AS s), t1 AS (SELECT <double> AS
/// s FROM t0), … SELECT <select> FROM tn`: a string of 16·2ⁿ bytes from a
/// few hundred bytes of SQL.
fn doubled(double: &str, n: usize, select: &str) -> String {
    let mut sql = "WITH t0 AS (SELECT 'xxxxxxxxxxxxxxxx' AS s)".to_string();
    for i in 1..=n {
        sql.push_str(&format!(", t{i} AS (SELECT {double} AS s FROM t{})", i - 1));
    }
    sql + &format!(" SELECT {select} FROM t{n}")
}

/// Issue 34, item 1: researchers' SQL could kill the dashboard. 60 KB of
/// `1+1+…+1` overflowed a serving thread's stack and aborted the whole
/// process; a string doubled over stacked CTEs grew outside DataFusion's
/// memory pool until the pod died. Now every query runs in a worker
/// process of its own under a memory limit, after a check of its nesting
/// and with an allow-list of functions: the deep sum and `concat` are
/// refused before planning, `s || s` (an operator, nothing to take away)
/// ends its worker at the limit, a 64 MiB value within the worker's
/// memory but past the result's cap is stopped in the worker (it never
/// crosses into the dashboard), and the dashboard (this process) answers
/// on with its peak memory grown less than 64 MiB. Run in the dashboard,
/// the first would abort this test's process, the others would grow it
/// by hundreds of MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_that_exhausts_stack_or_memory_fails_alone() -> anyhow::Result<()> {
    let d = start_with(|config| {
        config.sql.query_timeout_ms = 20_000;
        config.sql.worker_memory_mb = 256;
        config.sql.max_bytes = 16 << 20;
    })
    .await?;
    // Warm: the first query's client, channel and tasks are the dashboard's
    // ordinary cost.
    assert_eq!(
        run(&d.flight, RESEARCHER, "SELECT 1")
            .await?
            .map_err(|s| s.to_string()),
        Ok(1)
    );
    let before = peak_rss_kib()?;
    let deep = format!("SELECT {}1", "1+".repeat(30_000));
    let by_concat = doubled("concat(s, s)", 30, "length(s)");
    let by_pipes = doubled("s || s", 30, "length(s)");
    for _ in 0..3 {
        let refused = run(&d.flight, RESEARCHER, &deep).await?.expect_err("deep");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().contains("nests expressions"),
            "{refused:?}"
        );
        let refused = run(&d.flight, RESEARCHER, &by_concat)
            .await?
            .expect_err("concat");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains("concat"), "{refused:?}");
        let ended = run(&d.flight, RESEARCHER, &by_pipes)
            .await?
            .expect_err("pipes");
        assert_eq!(ended.code(), Code::ResourceExhausted, "{ended:?}");
        assert!(ended.message().contains("256 MiB"), "{ended:?}");
        // Past the result's cap: one 64 MiB value, and 64 MiB of an 8 KiB
        // value repeated (as a string view, whose data no slice counts,
        // and which Flight's encoder re-sent with every slice).
        let views = format!(
            "{} CROSS JOIN {}",
            doubled("s || s", 9, "CAST(s AS VARCHAR)"),
            values(8192, "v")
        );
        for sql in [doubled("s || s", 22, "s"), views] {
            let capped = run(&d.flight, RESEARCHER, &sql).await?.expect_err("64 MiB");
            assert_eq!(capped.code(), Code::ResourceExhausted, "{capped:?}");
            assert!(capped.message().contains("16777216 bytes"), "{capped:?}");
        }
    }
    // Fewer doublings fit: the limit is the worker's memory, not the SQL.
    assert_eq!(
        run(&d.flight, RESEARCHER, &doubled("s || s", 10, "length(s)"))
            .await?
            .map_err(|s| s.to_string()),
        Ok(1)
    );
    // Alive, serving Flight SQL and HTTP, and no bigger for it.
    assert_eq!(
        run(&d.flight, OTHER, "SELECT 1")
            .await?
            .map_err(|s| s.to_string()),
        Ok(1)
    );
    let health = reqwest::get(format!("http://{}/healthz", d.http)).await?;
    assert_eq!(health.status(), 200);
    let grown = peak_rss_kib()?.saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "the dashboard's peak memory grew {grown} KiB"
    );
    Ok(())
}

/// The neighbours of the file-path leak in `EXPLAIN` (its physical plan
/// lists the store's files): plain `EXPLAIN` shows the logical plan only,
/// and the forms that show the physical plan, or run the query, are
/// refused; so are statements other than a query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_no_file_and_only_queries_run() -> anyhow::Result<()> {
    let d = start().await?;
    let day = d.data_dir.join("releases").join("day=2026-01-01");
    std::fs::create_dir_all(&day)?;
    let mut c = client(&d.flight, RESEARCHER).await?;
    let info = c
        .execute("EXPLAIN SELECT count(*) FROM releases".into(), None)
        .await?;
    let batches: Vec<_> = c
        .do_get(info.endpoint[0].ticket.clone().expect("a ticket"))
        .await?
        .try_collect()
        .await?;
    let text = arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
    assert!(text.contains("logical_plan"), "{text}");
    for secret in [
        d.data_dir.display().to_string(),
        "day=".into(),
        "/tmp".into(),
    ] {
        assert!(!text.contains(&secret), "{secret} in {text}");
    }
    for sql in [
        "EXPLAIN ANALYZE SELECT count(*) FROM releases",
        "EXPLAIN VERBOSE SELECT count(*) FROM releases",
        "EXPLAIN FORMAT TREE SELECT count(*) FROM releases",
        "CREATE EXTERNAL TABLE passwd STORED AS CSV LOCATION '/etc/passwd'",
        "SET datafusion.explain.logical_plan_only = false",
        "SELECT 1; SELECT 2",
    ] {
        let refused = run(&d.flight, RESEARCHER, sql).await?.expect_err(sql);
        assert_eq!(refused.code(), Code::InvalidArgument, "{sql}: {refused:?}");
    }
    Ok(())
}

/// The worker processes of this test process (the dashboard runs in it).
fn workers_alive() -> anyhow::Result<usize> {
    let me = std::process::id().to_string();
    let mut n = 0;
    for entry in std::fs::read_dir("/proc")? {
        let stat = match std::fs::read_to_string(entry?.path().join("stat")) {
            Ok(stat) => stat,
            Err(_) => continue,
        };
        // pid (comm) state ppid …: comm may hold spaces, so after the ')'.
        let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
        if after.split_whitespace().nth(1) == Some(me.as_str()) {
            n += 1;
        }
    }
    Ok(n)
}

/// A client that starts a large result and never reads it: the serving
/// loop stops polling the response when the HTTP/2 window is full, so a
/// deadline checked only as batches are read never came, and the worker
/// (blocked on its full pipe) held a worker slot and the token's place
/// for as long as the client kept the connection. The worker's watchdog
/// kills it at the deadline, read or not, and frees both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_nobody_reads_ends_at_its_deadline() -> anyhow::Result<()> {
    let d = start_with(|config| {
        config.sql.query_timeout_ms = 3_000;
        config.sql.max_rows = 100_000_000;
        config.sql.max_bytes = 1 << 30;
        config.sql.max_concurrent_per_token = 1;
    })
    .await?;
    // 10⁶ rows of three numbers, 24 MB: far past any window.
    let sql = format!(
        "SELECT a.x, b.x, c.x FROM {}, {}, {}",
        values(100, "a"),
        values(100, "b"),
        values(100, "c")
    );
    let mut c = client(&d.flight, RESEARCHER).await?;
    let info = c.execute(sql, None).await?;
    let started = Instant::now();
    let unread = c
        .do_get(info.endpoint[0].ticket.clone().expect("a ticket"))
        .await?;
    assert_eq!(workers_alive()?, 1, "the query's worker runs");
    // Past the deadline the worker is gone, though the stream is still
    // held and unread, and the token may run a query again.
    wait_until(
        "the unread query's worker to end",
        Duration::from_secs(10),
        || async { Ok((workers_alive()? == 0).then_some(())) },
    )
    .await?;
    assert!(
        started.elapsed() >= Duration::from_millis(2_500),
        "the worker ended before its deadline: the result was not held back \
         ({:?})",
        started.elapsed()
    );
    ran_again_soon(&d.flight, RESEARCHER).await?;
    drop(unread);
    Ok(())
}
