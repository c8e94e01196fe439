//! Steady submission load with a distinctive value in every field, for soak
//! and fault tests: each coordinate, signed-in subject, ID token, client
//! address (sent as `X-Forwarded-For`) and user agent is new and recorded
//! as a needle for `hushmap-leakscan`. Every submission is signed in as a
//! subject of its own, so each is its own contributor and, at a huge ε,
//! released totals equal accepted ones. (The ingest under load must trust
//! the test identity provider: [`TestIdp::ingest_env`].)

use hushmap_testkit::idp::TestIdp;

use hushmap_schema::submission::Location;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A box near Sydney: latitudes negative and longitudes above 60, so no
/// four-decimal cut of a coordinate can also be a log timestamp's seconds.
pub const LOAD_AREA: [f64; 4] = [-34.2, 150.6, -33.4, 151.4];

/// What a load run sent and how ingest answered.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub sent: u64,
    pub accepted: u64,
    /// 503: the broker did not acknowledge in time.
    pub unavailable: u64,
    /// Anything else, transport errors included.
    pub other: u64,
    pub secs: f64,
    /// `hushmap-leakscan --needles` lines: every value submitted.
    pub needles: String,
}

/// One distinctive submission (JSON body, ID token, client address, user
/// agent), its values appended to `needles`.
pub fn distinctive_submission(
    i: u64,
    needles: &mut String,
) -> (serde_json::Value, String, String, String) {
    let mut s = crate::anonymous_submissions(1_000 + i, 1).remove(0);
    let [south, west, north, east] = LOAD_AREA;
    s.location = Some(Location {
        lat: south + rand::random::<f64>() * (north - south),
        lon: west + rand::random::<f64>() * (east - west),
    });
    s.region = None;
    let subject = format!("load-subject-{i:06}-{:08x}", rand::random::<u32>());
    let token = TestIdp::ed25519().token_for(&subject);
    let ip = format!("203.0.113.{}", 1 + i % 250);
    let agent = format!("HushmapLoad/1.0 (load-ua-{:08x})", rand::random::<u32>());
    let body = serde_json::to_value(&s).expect("a submission serialises");
    // The values exactly as they went over the wire.
    for key in ["lat", "lon"] {
        let _ = writeln!(needles, "coordinate {}", body["location"][key]);
    }
    let _ = writeln!(needles, "profile {subject}");
    let _ = writeln!(needles, "token {token}");
    let _ = writeln!(needles, "client_ip {ip}");
    let _ = writeln!(needles, "user_agent {agent}");
    (body, token, ip, agent)
}

/// Starts sending `rate` submissions/s to `ingest_url` for `duration`, at
/// most 64 in flight; the handle resolves when every answer is in.
pub fn steady_load(ingest_url: &str, rate: f64, duration: Duration) -> JoinHandle<LoadReport> {
    let url = format!("{ingest_url}/v1/submissions");
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        let mut report = LoadReport::default();
        let started = Instant::now();
        let mut answers = Vec::new();
        while started.elapsed() < duration {
            ticker.tick().await;
            let (body, token, ip, agent) = distinctive_submission(report.sent, &mut report.needles);
            report.sent += 1;
            let permit = in_flight
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore never closed");
            let request = client
                .post(&url)
                .header("x-forwarded-for", ip)
                .header("user-agent", agent)
                .bearer_auth(token)
                .json(&body);
            answers.push(tokio::spawn(async move {
                let status = request.send().await.map(|r| r.status().as_u16());
                drop(permit);
                status.unwrap_or(0)
            }));
        }
        for answer in answers {
            match answer.await.unwrap_or(0) {
                202 => report.accepted += 1,
                503 => report.unavailable += 1,
                _ => report.other += 1,
            }
        }
        report.secs = started.elapsed().as_secs_f64();
        report
    })
}
