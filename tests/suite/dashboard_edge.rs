//! Slow clients and token guessers against the dashboard's two listeners,
//! real HTTP and real gRPC: half-sent requests on the page's listener are
//! closed at the header-read deadline, a half-sent HTTP/2 preface on Flight
//! at the idle deadline, a login body trickled a byte at a time at the
//! request deadline (408), a flood past the connection cap is closed at
//! once, and normal clients (a page request, a Flight `ListFlights`) are
//! served throughout. Wrong tokens, at the login, as bearer tokens on the
//! API and on Flight, are throttled per client, the client named by the
//! trusted proxy in front (the ingress), so one guesser does not lock out
//! every analyst behind it.

use arrow_flight::flight_service_client::FlightServiceClient;
use hushmap_dashboard::DashboardConfig;
use hushmap_dashboard::auth::{Role, TOKEN_FAILURES_PER_MINUTE, TokenEntry};
use hushmap_testkit::observe::accepted_connections;
use hushmap_testkit::{closed_within, send_partial, wait_until};
use hushmap_tests::StandaloneDashboard;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

async fn start(tweak: impl FnOnce(&mut DashboardConfig)) -> anyhow::Result<StandaloneDashboard> {
    StandaloneDashboard::start(tweak).await
}

async fn flight_answers(addr: SocketAddr) -> anyhow::Result<()> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = FlightServiceClient::new(channel);
    let mut flights = client
        .list_flights(arrow_flight::Criteria::default())
        .await?
        .into_inner();
    while flights.message().await?.is_some() {}
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_and_normal_ones_served() -> anyhow::Result<()> {
    let d = start(|c| {
        c.http.header_read_timeout_ms = 1_000;
        c.http.idle_timeout_ms = 2_000;
        // Below the listener's timeouts, as the dashboard requires.
        c.sql.query_timeout_ms = 1_000;
    })
    .await?;
    let half_http = futures::future::join_all((0..50).map(|_| {
        send_partial(
            d.http,
            b"GET /api/v1/releases HTTP/1.1\r\nHost: d\r\nAuthori",
        )
    }))
    .await;
    // Half an HTTP/2 connection preface: gRPC's first bytes.
    let half_flight =
        futures::future::join_all((0..20).map(|_| send_partial(d.flight, b"PRI * HTTP/2.0\r\n")))
            .await;
    // Normal clients meanwhile.
    let health = reqwest::get(format!("http://{}/healthz", d.http)).await?;
    assert_eq!(health.status(), 200);
    flight_answers(d.flight).await?;
    let closed = futures::future::join_all(
        half_http
            .into_iter()
            .chain(half_flight)
            .map(|s| closed_within(s, Duration::from_secs(15))),
    )
    .await;
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(
        open, 0,
        "{open} of 70 half-sent requests still open after 15 s"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_a_flood_is_closed_at_once_on_both_listeners() -> anyhow::Result<()> {
    let d = start(|c| {
        c.http.max_connections = 10;
        // The global cap, from one address: loopback is not held to a
        // client's share here (`service/src/http.rs` tests the share).
        c.http.max_connections_per_client = Some(5);
        c.http.shared_peers = vec!["127.0.0.0/8".parse().expect("a CIDR")];
    })
    .await?;
    for addr in [d.http, d.flight] {
        let mut held = Vec::new();
        for _ in 0..10 {
            held.push(send_partial(addr, b"GET / HTTP/1.1\r\n").await);
        }
        // The accept loop has taken the ten (asking the dashboard would
        // take a connection past its cap, and be counted).
        wait_until(
            &format!("{addr} to accept the ten held connections"),
            Duration::from_secs(10),
            || async { Ok((accepted_connections(addr)? >= 10).then_some(())) },
        )
        .await?;
        let flood =
            futures::future::join_all((0..20).map(|_| send_partial(addr, b"GET / HTTP/1.1\r\n")))
                .await;
        let closed = futures::future::join_all(
            flood
                .into_iter()
                .map(|s| closed_within(s, Duration::from_secs(5))),
        )
        .await;
        assert!(closed.iter().all(Option::is_some), "{addr}: {closed:?}");
        drop(held);
    }
    let metrics = reqwest::get(format!("http://{}/metrics", d.http))
        .await?
        .text()
        .await?;
    for listener in ["http", "flight"] {
        let line = format!(
            "hushmap_dashboard_http_connections_refused_total{{listener=\"{listener}\"}} 20"
        );
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
    // Served again once the holders left.
    wait_until(
        "Flight to serve again once the holders left",
        Duration::from_secs(10),
        || async { Ok(flight_answers(d.flight).await.ok()) },
    )
    .await?;
    Ok(())
}

/// The trickled login: `Content-Length: 100000` and a byte at a time, each
/// well inside the idle timeout. It held a slot for ever (no request
/// deadline on the dashboard); now it is answered 408 at the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_login_is_answered_408_at_the_request_deadline() -> anyhow::Result<()> {
    let d = start(|c| {
        c.http.idle_timeout_ms = 1_000;
        c.http.request_timeout_ms = 2_000;
        c.sql.query_timeout_ms = 500;
    })
    .await?;
    let mut s = send_partial(
        d.http,
        b"POST /login HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\ntoken=",
    )
    .await;
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if s.write_all(b"a").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(6), trickle).await;
    let mut answer = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut answer),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the trickled login was still open 16 s after it began"))??;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let metrics = reqwest::get(format!("http://{}/metrics", d.http))
        .await?
        .text()
        .await?;
    let line = "hushmap_dashboard_http_request_timeouts_total{listener=\"http\"} 1";
    assert!(metrics.contains(line), "{line} not in\n{metrics}");
    Ok(())
}

const GOOD: &str = "a-good-token-for-the-throttle-test";

/// Waits, if needed, so that a run of guesses does not straddle the turn
/// of a clock minute (the allowance is per minute and would refill).
async fn within_one_minute() {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        % 60;
    if secs > 40 {
        tokio::time::sleep(Duration::from_secs(61 - secs)).await;
    }
}

/// A dashboard behind a "proxy" at 127.0.0.1 (the test's own connections),
/// with one token holding both roles.
async fn behind_the_proxy() -> anyhow::Result<StandaloneDashboard> {
    start(|c| {
        c.auth.tokens = vec![TokenEntry::for_token(
            GOOD,
            vec![Role::Analyst, Role::Researcher],
            "throttle",
        )];
        c.auth.trusted_proxies = vec!["127.0.0.1/32".parse().expect("a CIDR")];
    })
    .await
}

/// GET /api/v1/releases with `token` as the client `forwarded_for`.
async fn api_as(
    http: &reqwest::Client,
    d: &StandaloneDashboard,
    forwarded_for: &str,
    token: &str,
) -> anyhow::Result<u16> {
    Ok(http
        .get(format!("http://{}/api/v1/releases", d.http))
        .header("x-forwarded-for", forwarded_for)
        .bearer_auth(token)
        .send()
        .await?
        .status()
        .as_u16())
}

/// Bearer-token guessing on the API was never throttled; behind the
/// ingress, login guessing was throttled by the ingress's address, so one
/// guesser locked every analyst out. Now wrong tokens are counted per
/// client (the address the trusted proxy names) across the login, the API
/// and Flight, and the guesser alone is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_are_throttled_per_client_behind_the_proxy() -> anyhow::Result<()> {
    let d = behind_the_proxy().await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    within_one_minute().await;

    // Bearer guessing on the API: five 401s, then even the right token 429.
    for i in 0..TOKEN_FAILURES_PER_MINUTE {
        let status = api_as(
            &http,
            &d,
            "203.0.113.1",
            &format!("guess-number-{i:04}-abcdef"),
        )
        .await?;
        assert_eq!(status, 401);
    }
    assert_eq!(api_as(&http, &d, "203.0.113.1", GOOD).await?, 429);
    // Another client behind the same proxy is served.
    assert_eq!(api_as(&http, &d, "203.0.113.2", GOOD).await?, 200);

    // Login guessing from a third client: it alone is refused; a fourth
    // logs in (303 to the page, a session cookie).
    let login = |who: &'static str, token: String| {
        http.post(format!("http://{}/login", d.http))
            .header("x-forwarded-for", who)
            .form(&[("token", token)])
            .send()
    };
    for i in 0..TOKEN_FAILURES_PER_MINUTE {
        assert_eq!(
            login("203.0.113.3", format!("login-guess-{i:04}-abc"))
                .await?
                .status(),
            401
        );
    }
    let r = login("203.0.113.3", GOOD.to_string()).await?;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let r = login("203.0.113.4", GOOD.to_string()).await?;
    assert_eq!(r.status(), 303);
    assert!(r.headers().contains_key("set-cookie"));

    // Flight: the same allowance, over gRPC metadata.
    let flight = |who: &'static str, token: String| {
        let addr = d.flight;
        async move {
            let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
                .connect()
                .await?;
            let mut client = FlightServiceClient::new(channel);
            let mut request = tonic::Request::new(arrow_flight::Criteria::default());
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
            request
                .metadata_mut()
                .insert("x-forwarded-for", who.parse()?);
            Ok::<_, anyhow::Error>(match client.list_flights(request).await {
                Ok(_) => tonic::Code::Ok,
                Err(status) => status.code(),
            })
        }
    };
    for i in 0..TOKEN_FAILURES_PER_MINUTE {
        assert_eq!(
            flight("203.0.113.5", format!("flight-guess-{i:04}-abc")).await?,
            tonic::Code::Unauthenticated
        );
    }
    assert_eq!(
        flight("203.0.113.5", GOOD.to_string()).await?,
        tonic::Code::ResourceExhausted
    );
    assert_eq!(
        flight("203.0.113.6", GOOD.to_string()).await?,
        tonic::Code::Ok
    );
    // One allowance across the surfaces: the Flight guesser is refused on
    // the API too.
    assert_eq!(api_as(&http, &d, "203.0.113.5", GOOD).await?, 429);
    Ok(())
}

/// A client that is not a trusted proxy cannot pick its key with a
/// forged `X-Forwarded-For`: a new one per guess changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_forwarded_for_does_not_reset_the_allowance() -> anyhow::Result<()> {
    let d = behind_the_proxy().await?;
    // From 127.0.0.3: not the trusted proxy.
    let http = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 3]))
        .build()?;
    within_one_minute().await;
    for i in 0..TOKEN_FAILURES_PER_MINUTE {
        let status = api_as(
            &http,
            &d,
            &format!("198.51.100.{i}"),
            &format!("guess-number-{i:04}-abcdef"),
        )
        .await?;
        assert_eq!(status, 401);
    }
    assert_eq!(api_as(&http, &d, "198.51.100.200", GOOD).await?, 429);
    Ok(())
}
