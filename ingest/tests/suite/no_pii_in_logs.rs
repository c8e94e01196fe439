//! The seed's failure turned into a test: run the real binary at the most
//! verbose log level, push ~1,000 submissions with distinctive coordinates,
//! ages, signed-in subjects, ID tokens and contributor tokens through it
//! and the real broker, and search every byte it logged and every metric it
//! exposed for them, and for anyone's triage result.

use crate::common;

use common::IngestProcess;
use hushmap_ingest::proof_of_work::solve;
use hushmap_testkit::idp::TestIdp;
use hushmap_testkit::{brokers, create_topics, unique};
use serde_json::json;

const N: usize = 1000;

/// Distinctive values: 6-decimal coordinates and subject ids that occur
/// nowhere else.
fn submission(i: usize) -> (serde_json::Value, String, String, String) {
    // Integer parts of 60 and above: a needle like "12.1241" would also
    // match log timestamps at second 12 ("…T01:45:12.124123Z").
    let lat = format!("{:.6}", 64.0 + (i as f64) * 0.000_731 + 0.123_457);
    let lon = format!("{:.6}", 77.0 + (i as f64) * 0.000_593 + 0.654_321);
    let subject = format!("pii-canary-{i:04}-qzx");
    let body = json!({
        "for": "self", "age": 17 + (i % 97), "gender": "other", "symptoms": ["fever", "headache"], "conditions": ["diabetes"],
        "travelled_internationally_14d": i.is_multiple_of(2), "contact_with_confirmed_case": i.is_multiple_of(3),
        "location": {"lat": lat.parse::<f64>().unwrap(), "lon": lon.parse::<f64>().unwrap()},
    });
    (body, lat, lon, subject)
}

const CONTRIBUTOR_SECRET: &str = "log-test-secret-0123456789abcdef0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_personal_reaches_logs_or_metrics() -> anyhow::Result<()> {
    let topic = unique("test.ingest.pii");
    create_topics(&[(&topic, 2)]).await?;
    let mut env = TestIdp::ingest_env();
    env.extend(
        [
            ("HUSHMAP_LOG", "trace"),
            ("HUSHMAP_LOG_FORMAT", "json"),
            ("HUSHMAP_INGEST_KAFKA__BROKERS", &brokers()),
            ("HUSHMAP_INGEST_KAFKA__TOPIC", &topic),
            // Anonymous requests carry a proof of work, as in production
            // (a low difficulty: the test is about what is logged).
            ("HUSHMAP_INGEST_PROOF_OF_WORK__DIFFICULTY_BITS", "4"),
            ("HUSHMAP_CONTRIBUTOR_SECRET", CONTRIBUTOR_SECRET),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let ingest = IngestProcess::start(env).await?;
    let (url, admin_url) = (ingest.url.clone(), ingest.admin_url.clone());
    let client = reqwest::Client::new();

    // Secrets are needles too: trace-level logs must not echo the config.
    let mut needles = vec![CONTRIBUTOR_SECRET.to_string()];
    let idp = TestIdp::ed25519();
    let mut browser_token: Option<String> = None;
    for i in 0..N {
        let (body, lat, lon, subject) = submission(i);
        let age = body["age"].as_u64().unwrap();
        // Half signed in (a subject of their own), half one anonymous
        // browser sending back its contributor token.
        let mut request = client.post(format!("{url}/v1/submissions")).json(&body);
        let id_token = idp.token_for(&subject);
        let proof = async || -> anyhow::Result<String> {
            let c: serde_json::Value = client
                .get(format!("{url}/v1/challenge"))
                .send()
                .await?
                .json()
                .await?;
            let c = c["challenge"].as_str().unwrap().to_string();
            Ok(format!("{c}.{}", solve(&c, 4)))
        };
        if i % 2 == 0 {
            request = request.bearer_auth(&id_token);
            needles.push(id_token.clone());
            needles.push(id_token.rsplit('.').next().unwrap().to_string());
            needles.push(subject.clone());
        } else {
            let p = proof().await?;
            needles.push(p.clone());
            request = request.header("hushmap-proof", p);
            if let Some(t) = &browser_token {
                request = request.header("hushmap-contributor", t);
            }
        }
        let resp = request.send().await?;
        assert_eq!(resp.status(), 202);
        let answer: serde_json::Value = resp.json().await?;
        if let Some(t) = answer["contributor_token"].as_str() {
            needles.push(t.to_string());
            browser_token = Some(t.to_string());
        }
        // A forged token: refused, and the refusal does not echo it either.
        if i % 100 == 0 {
            let forged = TestIdp::foreign().token_for(&subject);
            let resp = client
                .post(format!("{url}/v1/submissions"))
                .bearer_auth(&forged)
                .json(&body)
                .send()
                .await?;
            assert_eq!(resp.status(), 401);
            needles.push(forged.rsplit('.').next().unwrap().to_string());
        }
        // Also send a broken copy: error paths log too.
        let mut broken = body.clone();
        broken["age"] = json!(format!("{age} years"));
        let resp = client
            .post(format!("{url}/v1/submissions"))
            .header("hushmap-proof", proof().await?)
            .json(&broken)
            .send()
            .await?;
        assert_eq!(resp.status(), 422);
        needles.extend([
            lat.clone(),
            lon.clone(),
            format!("\"age\":{age}"),
            format!("age={age}"),
        ]);
        // An unknown field named with someone's e-mail address or phone
        // number, top level and nested: refused, and its name not logged.
        if i % 50 == 0 {
            let email = format!("patient{i}.name@example.org");
            let phone = format!("+91 98{i:03}0 12345");
            let mut named = body.clone();
            named[email.as_str()] = json!(true);
            named["location"][phone.as_str()] = json!(1);
            let resp = client
                .post(format!("{url}/v1/submissions"))
                .header("hushmap-proof", proof().await?)
                .json(&named)
                .send()
                .await?;
            assert_eq!(resp.status(), 400);
            needles.extend([email, phone]);
        }
        needles.push(lat[..lat.len() - 2].to_string()); // 4 decimals is still a house
        needles.push(lon[..lon.len() - 2].to_string());
    }
    // Nobody's triage result is logged or counted apart.
    needles.extend(["\"risk\"".to_string(), "risk=".to_string()]);
    let metrics = client
        .get(format!("{admin_url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(metrics.contains(&format!("hushmap_ingest_submissions_accepted_total {N}")));

    let (status, logs) = ingest.terminate()?;
    assert!(status.success(), "ingest exited with {status}");
    assert!(
        logs.len() > 100_000,
        "trace logging produced only {} bytes; is the test looking at the right output?",
        logs.len()
    );
    assert!(
        logs.contains("\"outcome\":\"accepted\""),
        "request outcomes are logged"
    );

    // One automaton pass per haystack over ~10,000 needles (a `contains`
    // per needle was most of this test's CPU time).
    let finder = aho_corasick::AhoCorasick::new(&needles)?;
    for haystack in [("logs", &logs), ("metrics", &metrics)] {
        let found: Vec<&String> = finder
            .find_overlapping_iter(haystack.1.as_str())
            .map(|m| &needles[m.pattern().as_usize()])
            .take(5)
            .collect();
        assert!(
            found.is_empty(),
            "{} contain personal values, e.g. {found:?}",
            haystack.0
        );
    }
    Ok(())
}
