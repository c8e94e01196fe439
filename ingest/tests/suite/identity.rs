//! Who a submission counts as, tried as an attacker would, against the
//! real service and broker: ID tokens from the identity provider (signed
//! in), contributor tokens (anonymous browsers), and every way of speaking
//! for someone else. A refused token is a 401 problem with a stable code,
//! and nothing reaches the topic.

use crate::common;

use common::{TestIngest, start_ingest, trust_test_idp};
use hushmap_schema::ContributorKey;
use hushmap_testkit::idp::{TEST_AUDIENCE, TEST_ISSUER, TestIdp, unsigned_token};
use hushmap_testkit::{brokers, now_ms, payload_keyring, topic_records_on, wait_until};
use serde_json::{Value, json};
use std::time::Duration;

fn body() -> Value {
    json!({"for": "self", "age": 52, "gender": "female", "symptoms": ["fever"], "conditions": [],
        "travelled_internationally_14d": false, "contact_with_confirmed_case": false,
        "location": {"lat": 48.85, "lon": 2.35}})
}

/// How many records each contributor has on the ingest's topic, most
/// first (partitions interleave, so order says nothing).
async fn per_contributor(ingest: &TestIngest) -> anyhow::Result<Vec<usize>> {
    let mut counts: std::collections::HashMap<ContributorKey, usize> = Default::default();
    for key in contributors(ingest).await? {
        *counts.entry(key).or_default() += 1;
    }
    let mut n: Vec<usize> = counts.into_values().collect();
    n.sort_unstable_by(|a, b| b.cmp(a));
    Ok(n)
}

/// The contributor keys of every record on the ingest's topic.
async fn contributors(ingest: &TestIngest) -> anyhow::Result<Vec<ContributorKey>> {
    let topic = ingest.topic.clone();
    let records =
        tokio::task::spawn_blocking(move || topic_records_on(&brokers(), &topic)).await??;
    let keyring = payload_keyring();
    Ok(records
        .iter()
        .map(|(_, v)| keyring.open(v).expect("sealed by ingest").contributor)
        .collect())
}

async fn post(
    client: &reqwest::Client,
    ingest: &TestIngest,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, Option<String>, Value)> {
    let mut req = client
        .post(format!("{}/v1/submissions", ingest.url))
        .json(&body());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    Ok((status, challenge, resp.json().await?))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_person_is_one_contributor_and_nobody_else_can_be_them() -> anyhow::Result<()> {
    let ingest = start_ingest(trust_test_idp).await?;
    let client = reqwest::Client::new();
    let idp = TestIdp::ed25519();
    let alice = bearer(&idp.token_for("alice"));

    // Twice with the same token, and once with a fresh token for the same
    // person: one contributor. Signed in, no contributor token comes back.
    let fresh_alice = bearer(&idp.token_for("alice"));
    for auth in [&alice, &alice, &fresh_alice] {
        let (status, _, answer) = post(&client, &ingest, &[("authorization", auth)]).await?;
        assert_eq!(status, 202, "{answer}");
        assert!(answer.get("contributor_token").is_none(), "{answer}");
    }
    // Every algorithm the provider may use: EdDSA, ES256, RS256.
    for (who, key) in [("bob", TestIdp::p256()), ("carol", TestIdp::rsa())] {
        let (status, _, answer) = post(
            &client,
            &ingest,
            &[("authorization", &bearer(&key.token_for(who)))],
        )
        .await?;
        assert_eq!(status, 202, "{who}: {answer}");
    }
    // Alice's three as one contributor, bob and carol one each.
    assert_eq!(per_contributor(&ingest).await?, vec![3, 1, 1]);

    // Speaking for alice without her provider's signature: refused, 401,
    // with a stable code and a bearer challenge; nothing produced.
    let now = now_ms() / 1000;
    let claims = |f: &dyn Fn(&mut Value)| {
        let mut c = json!({"iss": TEST_ISSUER, "aud": TEST_AUDIENCE, "sub": "alice",
            "iat": now, "nbf": now, "exp": now + 3600});
        f(&mut c);
        c
    };
    let hs256_with_the_public_key = {
        // The classic algorithm confusion: HMAC keyed with the public key.
        use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
        let public = std::fs::read(&TestIdp::public_keys()[0])?;
        encode(
            &Header::new(Algorithm::HS256),
            &claims(&|_| {}),
            &EncodingKey::from_secret(&public)?,
        )?
    };
    let refused: Vec<(&str, String, &str)> = vec![
        (
            "another provider's key",
            TestIdp::foreign().token_for("alice"),
            "invalid_id_token",
        ),
        ("alg none", unsigned_token("alice"), "invalid_id_token"),
        (
            "HS256 keyed with the public key",
            hs256_with_the_public_key,
            "invalid_id_token",
        ),
        (
            "expired",
            idp.token_with(&claims(&|c| c["exp"] = json!(now - 3600))),
            "expired_id_token",
        ),
        (
            "not yet valid",
            idp.token_with(&claims(&|c| c["nbf"] = json!(now + 3600))),
            "invalid_id_token",
        ),
        (
            "wrong audience",
            idp.token_with(&claims(&|c| c["aud"] = json!("another-service"))),
            "invalid_id_token",
        ),
        (
            "wrong issuer",
            idp.token_with(&claims(&|c| c["iss"] = json!("https://evil.invalid"))),
            "invalid_id_token",
        ),
        (
            "no subject",
            idp.token_with(&claims(&|c| drop(c.as_object_mut().unwrap().remove("sub")))),
            "invalid_id_token",
        ),
        ("garbage", "not.a.jwt".into(), "invalid_id_token"),
        (
            "a signature taken from another token",
            {
                let good = idp.token_for("mallory");
                let other = idp.token_for("alice");
                let sig = good.rsplit('.').next().unwrap().to_string();
                let (head, _) = other.rsplit_once('.').unwrap();
                format!("{head}.{sig}")
            },
            "invalid_id_token",
        ),
    ];
    for (what, token, code) in &refused {
        let (status, challenge, problem) =
            post(&client, &ingest, &[("authorization", &bearer(token))]).await?;
        assert_eq!(status, 401, "{what}: {problem}");
        assert_eq!(problem["code"], *code, "{what}");
        assert_eq!(problem["type"], format!("/errors/{code}"));
        assert!(
            challenge.is_some_and(|c| c.starts_with("Bearer")),
            "{what}: a bearer challenge"
        );
        // The answer never echoes the token.
        assert!(!problem.to_string().contains(token.as_str()), "{what}");
    }
    for scheme in ["Basic YWxpY2U6cHc=", "Bearer", "bearer   "] {
        let (status, _, problem) = post(&client, &ingest, &[("authorization", scheme)]).await?;
        assert_eq!(
            (status, problem["code"].as_str()),
            (401, Some("invalid_id_token"))
        );
    }
    assert_eq!(
        contributors(&ingest).await?.len(),
        5,
        "nothing refused was produced"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_browser_is_one_contributor_and_forged_tokens_are_refused()
-> anyhow::Result<()> {
    // No identity provider configured: anonymous use only.
    let ingest = start_ingest(|_| {}).await?;
    let client = reqwest::Client::new();

    // First check: a token comes back; sent back, it is the same person.
    let (status, _, first) = post(&client, &ingest, &[]).await?;
    assert_eq!(status, 202);
    let token = first["contributor_token"].as_str().unwrap().to_string();
    for _ in 0..3 {
        let (status, _, again) = post(&client, &ingest, &[("hushmap-contributor", &token)]).await?;
        assert_eq!(status, 202);
        assert_eq!(
            again["contributor_token"],
            token.as_str(),
            "echoed, not renewed"
        );
    }
    // Another browser: another token, another contributor.
    let (_, _, other) = post(&client, &ingest, &[]).await?;
    assert_ne!(other["contributor_token"], token.as_str());
    // One browser, one contributor; the other browser another.
    assert_eq!(per_contributor(&ingest).await?, vec![4, 1]);

    // Forged, altered or made-up tokens: 401, never a fresh identity.
    let mut altered = token.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == 'A' { 'B' } else { 'A' });
    for (what, bad) in [
        ("altered", altered.as_str()),
        (
            "made up",
            "c1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ),
        ("empty", ""),
        (
            "an ID token in the wrong header",
            "eyJhbGciOiJub25lIn0.e30.",
        ),
    ] {
        let (status, challenge, problem) =
            post(&client, &ingest, &[("hushmap-contributor", bad)]).await?;
        assert_eq!(status, 401, "{what}: {problem}");
        assert_eq!(problem["code"], "invalid_contributor_token", "{what}");
        assert!(challenge.is_some(), "{what}");
        assert!(problem.get("contributor_token").is_none());
    }
    // An ID token where none is accepted: refused, not anonymous.
    let (status, _, problem) = post(
        &client,
        &ingest,
        &[(
            "authorization",
            &bearer(&TestIdp::ed25519().token_for("alice")),
        )],
    )
    .await?;
    assert_eq!(
        (status, problem["code"].as_str()),
        (401, Some("invalid_id_token"))
    );
    // Both kinds at once: which person is it? Refused.
    let (status, _, problem) = post(
        &client,
        &ingest,
        &[
            ("hushmap-contributor", &token),
            ("authorization", "Bearer x.y.z"),
        ],
    )
    .await?;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("conflicting_identity"))
    );
    assert_eq!(
        contributors(&ingest).await?.len(),
        5,
        "nothing refused was produced"
    );
    Ok(())
}

/// The provider rotates its key: ingest takes the new key within seconds
/// of the file changing, refuses the old one, and keeps the keys in force
/// when the file is broken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_providers_keys_are_reread_when_they_change() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(hushmap_testkit::unique("hushmap-idp-keys"));
    std::fs::create_dir_all(&dir)?;
    // One key file, under the key id both fixtures claim.
    let key_file = dir.join("test-ed25519.pem");
    std::fs::copy(&TestIdp::public_keys()[0], &key_file)?;
    let file = key_file.clone();
    let ingest = start_ingest(move |c| {
        trust_test_idp(c);
        c.identity.pem_files = vec![file];
    })
    .await?;
    let client = reqwest::Client::new();
    let (old, new) = (TestIdp::ed25519(), TestIdp::foreign());
    let status = |token: String| {
        let (client, ingest) = (&client, &ingest);
        async move {
            let (status, _, _) =
                post(client, ingest, &[("authorization", &bearer(&token))]).await?;
            anyhow::Ok(status)
        }
    };
    assert_eq!(status(old.token_for("dana")).await?, 202);
    assert_eq!(status(new.token_for("dana")).await?, 401);

    let foreign_public = hushmap_testkit::idp::TestIdp::foreign()
        .private_key_file()
        .with_file_name("foreign-ed25519.pem");
    std::fs::copy(&foreign_public, &key_file)?;
    wait_until(
        "the rotated key to be in force",
        Duration::from_secs(20),
        || async { Ok((status(new.token_for("dana")).await? == 202).then_some(())) },
    )
    .await?;
    assert_eq!(status(old.token_for("dana")).await?, 401);

    // A broken file: the rotated key stays in force.
    std::fs::write(&key_file, "-----BEGIN PUBLIC KEY-----\nbroken\n")?;
    // Real time, not a condition: a failed reload changes nothing anyone
    // can see; 7 s spans the 5 s reload period, so the file has been read.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(status(new.token_for("dana")).await?, 202);
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// Rotating the contributor secret mid-window (issue 34, item 10): a
/// browser that comes back with its old token, and a person who signs in
/// again, stay one contributor in that window, on one partition key; new
/// browsers get the new key's tokens; a keyring without the old key sends
/// its browsers back to start over (401), never makes them someone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_mid_window_keeps_each_browser_and_person_one_contributor()
-> anyhow::Result<()> {
    use hushmap_service::secrets::Secret;
    const OLD: &str = "rotation-test-old-secret-0123456789abcdef";
    const NEW: &str = "rotation-test-new-secret-0123456789abcdef";
    let day = 86_400_000i64;
    let window_start = now_ms().div_euclid(day) * day;
    // The new key comes into force 1 ms into the current (one-day) window.
    let from = time::OffsetDateTime::from_unix_timestamp_nanos(
        (i128::from(window_start) + 1) * 1_000_000,
    )?
    .format(&time::format_description::well_known::Rfc3339)?;
    let serving = |secret: String| {
        move |c: &mut hushmap_ingest::IngestConfig| {
            trust_test_idp(c);
            c.contributor_secret = Some(Secret::new(secret));
        }
    };
    let client = reqwest::Client::new();
    let alice = bearer(&TestIdp::ed25519().token_for("alice"));

    // Before: one secret, as every deployment before key ids had it.
    let before = start_ingest(serving(OLD.to_string())).await?;
    let (status, _, first) = post(&client, &before, &[]).await?;
    assert_eq!(status, 202);
    let token = first["contributor_token"].as_str().unwrap().to_string();
    assert!(token.starts_with("c1."), "{token}");
    let (status, _, _) = post(&client, &before, &[("authorization", &alice)]).await?;
    assert_eq!(status, 202);

    // After: the old secret as key 0, the new one in force mid-window.
    let after = start_ingest(serving(format!("0={OLD},k2@{from}={NEW}"))).await?;
    let (status, _, again) = post(&client, &after, &[("hushmap-contributor", &token)]).await?;
    assert_eq!(status, 202, "the returning browser was refused: {again}");
    assert_eq!(again["contributor_token"], token.as_str());
    let (status, _, _) = post(&client, &after, &[("authorization", &alice)]).await?;
    assert_eq!(status, 202);
    let (status, _, newcomer) = post(&client, &after, &[]).await?;
    assert_eq!(status, 202);
    let new_token = newcomer["contributor_token"].as_str().unwrap().to_string();
    assert!(new_token.starts_with("c2.k2."), "{new_token}");

    // On the topics: (partition key, contributor, window) of each record.
    let keyring = payload_keyring();
    let mut records = Vec::new();
    for ingest in [&before, &after] {
        let topic = ingest.topic.clone();
        for (key, value) in
            tokio::task::spawn_blocking(move || topic_records_on(&brokers(), &topic)).await??
        {
            let r = keyring.open(&value).expect("sealed by ingest");
            records.push((key, r.contributor, r.window.start_ms));
        }
    }
    let (b, a): (Vec<_>, Vec<_>) = (records[..2].to_vec(), records[2..].to_vec());
    assert_eq!((b.len(), a.len()), (2, 3), "{records:?}");
    assert!(
        records.iter().all(|r| r.2 == window_start),
        "every record in the window of the rotation"
    );
    // Each of the two before the rotation has its twin after: the same
    // contributor and the same partition key (the browser and alice).
    for old in &b {
        assert!(
            a.iter().any(|new| new == old),
            "a contributor became someone else across the rotation: {old:?} not in {a:?}"
        );
    }
    // The newcomer is nobody from before.
    let newcomer_key = a.iter().find(|r| !b.contains(r)).expect("the newcomer").1;
    assert!(b.iter().all(|r| r.1 != newcomer_key));
    drop((before, after));

    // Without the old key, its browsers start over; the new key's hold.
    let only_new = start_ingest(serving(format!("k2={NEW}"))).await?;
    let (status, _, refused) = post(&client, &only_new, &[("hushmap-contributor", &token)]).await?;
    assert_eq!(status, 401, "{refused}");
    assert_eq!(refused["code"], "invalid_contributor_token");
    let (status, _, _) = post(&client, &only_new, &[("hushmap-contributor", &new_token)]).await?;
    assert_eq!(status, 202);
    Ok(())
}
