//! The self-check form in a real browser (Debian's chromium driven by
//! playwright-core, see `tests/browser/selfcheck.mjs`): a person fills it in
//! and gets their risk level; the location leaves the browser coarsened;
//! checking again sends the browser's contributor token back; signing in
//! through the development identity provider (authorization code flow with
//! PKCE, state and nonce) sends an ID token instead; a link carrying a
//! valid ID token, or another person's authorization code, leaves the page
//! signed out; the page's CSP and other security headers are checked in
//! the browser, which must report nothing refused.
//! The screenshot is kept at `target/test-artifacts/selfcheck.png`.
//!
//! Then the page in English, Hindi and Marathi (`tests/browser/languages.mjs`):
//! chosen by the browser's language and by the visible switch, filled in
//! with the keyboard alone, answered in its language, and checked by
//! axe-core with no serious WCAG 2.1 A/AA violation. Screenshots:
//! `target/test-artifacts/selfcheck-{en,hi,mr}.png`.

use crate::common;

use common::{start_ingest, trust_test_idp};
use hushmap_dev_idp::{DevIdp, DevSigner};
use hushmap_testkit::idp::{TEST_AUDIENCE, TEST_ISSUER, TestIdp};
use std::path::PathBuf;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_fills_in_the_form_and_gets_advice() -> anyhow::Result<()> {
    let idp_addr = std::net::SocketAddr::from(([127, 0, 0, 1], hushmap_testkit::free_port()));
    let ingest = start_ingest(|c| {
        trust_test_idp(c);
        // What production asks of anonymous browsers (off in dev mode).
        c.proof_of_work.difficulty_bits = Some(15);
        c.identity.authorization_endpoint = Some(format!("http://{idp_addr}/authorize"));
        c.identity.token_endpoint = Some(format!("http://{idp_addr}/token"));
    })
    .await?;
    let url = ingest.url.clone();
    let signer = DevSigner::load(
        &TestIdp::ed25519().private_key_file(),
        TEST_ISSUER,
        TEST_AUDIENCE,
        600,
    )?;
    // What an attacker puts in a link: a valid token of their own.
    let attackers_token = signer.sign("dev:mallory")?;
    let (stop_idp, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        DevIdp::new(signer, &format!("{url}/")).serve(idp_addr, async move {
            let _ = stopped.await;
        }),
    );

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    anyhow::ensure!(
        dir.join("node_modules/playwright-core").exists(),
        "run `npm ci --prefix ingest/tests/browser` first (deploy/test.sh does)"
    );
    let artefacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artefacts)?;
    let shot = artefacts.join("selfcheck.png");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(&dir)
            .arg("selfcheck.mjs")
            .arg(&url)
            .arg(&shot)
            .arg(&attackers_token)
            .output()
    })
    .await??;
    let _ = stop_idp.send(());
    assert!(
        out.status.success(),
        "browser test failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_speaks_english_hindi_and_marathi_to_keyboard_users() -> anyhow::Result<()> {
    let ingest = start_ingest(|_| {}).await?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    anyhow::ensure!(
        dir.join("node_modules/axe-core").exists(),
        "run `npm ci --prefix ingest/tests/browser` first (deploy/test.sh does)"
    );
    let artefacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artefacts)?;
    let url = ingest.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(&dir)
            .arg("languages.mjs")
            .arg(&url)
            .arg(&artefacts)
            .output()
    })
    .await??;
    assert!(
        out.status.success(),
        "browser test failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

/// The development provider holds the page to the flow a real provider
/// would: no implicit flow, no sign-in without PKCE, state and nonce, only
/// the registered redirect URI, and a code redeemed once, by the holder of
/// the verifier, for a token that carries the nonce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_provider_holds_to_pkce() -> anyhow::Result<()> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use sha2::{Digest, Sha256};

    let idp_addr = std::net::SocketAddr::from(([127, 0, 0, 1], hushmap_testkit::free_port()));
    let redirect = "http://127.0.0.1:1/";
    let signer = DevSigner::load(
        &TestIdp::ed25519().private_key_file(),
        TEST_ISSUER,
        TEST_AUDIENCE,
        600,
    )?;
    let (stop_idp, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(DevIdp::new(signer, redirect).serve(idp_addr, async move {
        let _ = stopped.await;
    }));
    let idp = format!("http://{idp_addr}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    hushmap_testkit::wait_until(
        "the development provider listens",
        std::time::Duration::from_secs(10),
        || async {
            Ok(http
                .get(format!("{idp}/authorize"))
                .send()
                .await
                .ok()
                .map(|_| ()))
        },
    )
    .await?;

    let verifier = URL_SAFE_NO_PAD.encode([7u8; 32]);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let good = vec![
        ("response_type", "code".to_string()),
        ("client_id", TEST_AUDIENCE.to_string()),
        ("redirect_uri", redirect.to_string()),
        ("state", "s".repeat(24)),
        ("nonce", "n".repeat(24)),
        ("code_challenge", challenge.clone()),
        ("code_challenge_method", "S256".to_string()),
    ];
    let with = |key: &str, value: Option<&str>| {
        let mut q: Vec<(&str, String)> = good.iter().filter(|(k, _)| *k != key).cloned().collect();
        if let Some(v) = value {
            q.push((
                good.iter().find(|(k, _)| *k == key).unwrap().0,
                v.to_string(),
            ));
        }
        q
    };
    // Each broken request is refused at /authorize and at /sign-in.
    for (what, query) in [
        ("implicit flow", with("response_type", Some("id_token"))),
        ("no PKCE", with("code_challenge", None)),
        ("plain PKCE", with("code_challenge_method", Some("plain"))),
        ("no state", with("state", None)),
        ("no nonce", with("nonce", None)),
        (
            "another redirect URI",
            with("redirect_uri", Some("https://attacker.example/")),
        ),
        ("another client", with("client_id", Some("someone-else"))),
    ] {
        let page = http
            .get(format!("{idp}/authorize"))
            .query(&query)
            .send()
            .await?;
        assert_eq!(page.status(), 400, "{what}: /authorize");
        let mut form = query.clone();
        form.push(("name", "mallory".into()));
        let signed = http
            .post(format!("{idp}/sign-in"))
            .form(&form)
            .send()
            .await?;
        assert_eq!(signed.status(), 400, "{what}: /sign-in");
    }
    let page = http
        .get(format!("{idp}/authorize"))
        .query(&good)
        .send()
        .await?;
    assert_eq!(page.status(), 200);

    let sign_in = || async {
        let mut form = good.clone();
        form.push(("name", "asha".into()));
        let back = http
            .post(format!("{idp}/sign-in"))
            .form(&form)
            .send()
            .await?;
        anyhow::ensure!(back.status() == 303, "sign-in answered {}", back.status());
        let location = back.headers()["location"].to_str()?.to_string();
        anyhow::ensure!(location.starts_with(redirect), "{location}");
        anyhow::ensure!(location.contains(&format!("state={}", "s".repeat(24))));
        let code = location
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix("code="))
            .unwrap()
            .to_string();
        Ok::<_, anyhow::Error>(code)
    };
    let redeem = |code: String, verifier: String| {
        let http = http.clone();
        let idp = idp.clone();
        async move {
            let answer = http
                .post(format!("{idp}/token"))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", redirect),
                    ("client_id", TEST_AUDIENCE),
                    ("code_verifier", &verifier),
                ])
                .send()
                .await?;
            let status = answer.status().as_u16();
            Ok::<_, anyhow::Error>((status, answer.json::<serde_json::Value>().await?))
        }
    };
    // A wrong verifier spends the code: the right one is then too late.
    let code = sign_in().await?;
    let (status, body) = redeem(code.clone(), URL_SAFE_NO_PAD.encode([8u8; 32])).await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, _) = redeem(code, verifier.clone()).await?;
    assert_eq!(status, 400, "a code survived a failed redemption");
    // The right verifier: one token, carrying the nonce; once only.
    let code = sign_in().await?;
    let (status, body) = redeem(code.clone(), verifier.clone()).await?;
    assert_eq!(status, 200, "{body}");
    let token = body["id_token"].as_str().unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap())?)?;
    assert_eq!(claims["nonce"], "n".repeat(24));
    assert_eq!(claims["sub"], "dev:asha");
    let (status, _) = redeem(code, verifier).await?;
    assert_eq!(status, 400, "a code redeemed twice");
    let _ = stop_idp.send(());
    Ok(())
}
