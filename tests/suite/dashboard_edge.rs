//! Slow clients against the dashboard's two listeners, real HTTP and real
//! gRPC: half-sent requests on the page's listener are closed at the
//! header-read deadline, a half-sent HTTP/2 preface on Flight at the idle
//! deadline, a flood past the connection cap is closed at once, and normal
//! clients (a page request, a Flight `ListFlights`) are served throughout.

use arrow_flight::flight_service_client::FlightServiceClient;
use hushmap_dashboard::DashboardConfig;
use hushmap_testkit::observe::accepted_connections;
use hushmap_testkit::{closed_within, send_partial, wait_until};
use hushmap_tests::StandaloneDashboard;
use std::net::SocketAddr;
use std::time::Duration;

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
    let d = start(|c| c.http.max_connections = 10).await?;
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
