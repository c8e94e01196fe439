//! The development sign-in (`hushmap-dev-idp serve`): an OpenID Connect
//! provider's authorization code flow with PKCE, as small as it can be and
//! as strict as a real provider is about what the self-check page must
//! send.
//!
//! 1. `GET /authorize?response_type=code&client_id&redirect_uri&state&nonce&code_challenge&code_challenge_method=S256`
//!    shows the sign-in form. The client id must be the audience, the
//!    redirect URI exactly the registered one, and `state`, `nonce` and an
//!    S256 challenge are required: no implicit flow, no plain PKCE.
//! 2. `POST /sign-in` sends the browser back to
//!    `redirect_uri?code=…&state=…`; the code lives 60 s and is bound to
//!    the client, the redirect URI, the challenge and the nonce.
//! 3. `POST /token` (`grant_type=authorization_code`, `code`,
//!    `redirect_uri`, `client_id`, `code_verifier`) answers the ID token,
//!    carrying the nonce, once per code and only to the holder of the
//!    verifier whose SHA-256 is the challenge.
//!
//! RFC 6749 §4.1, RFC 7636 (PKCE) and OpenID Connect Core §3.1; RFC 9700
//! advises against the implicit flow this replaces (a token in a link
//! signed the reader in as whoever made the link).

use crate::{DevClaims, DevIdpError, DevSigner};
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an authorization code can be redeemed.
const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// Codes not yet redeemed, at most (a loopback-only development tool; the
/// bound keeps a runaway client from growing the map).
const MAX_PENDING_CODES: usize = 10_000;

/// The development identity provider: sign-in page, authorization codes,
/// token endpoint.
pub struct DevIdp {
    signer: DevSigner,
    /// The one registered redirect URI (the self-check page).
    redirect_uri: String,
    codes: Mutex<HashMap<String, Grant>>,
}

/// What an authorization code stands for until it is redeemed.
struct Grant {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    nonce: String,
    subject: String,
    issued: Instant,
}

/// The authorization request (query of `/authorize`, hidden fields of the
/// sign-in form).
#[derive(Deserialize, Default)]
#[serde(default)]
struct AuthorizationRequest {
    response_type: String,
    client_id: String,
    redirect_uri: String,
    state: String,
    nonce: String,
    code_challenge: String,
    code_challenge_method: String,
}

#[derive(Deserialize)]
struct SignIn {
    name: String,
    #[serde(flatten)]
    request: AuthorizationRequest,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TokenRequest {
    grant_type: String,
    code: String,
    redirect_uri: String,
    client_id: String,
    code_verifier: String,
}

const PAGE_HEAD: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Development sign-in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}
label{display:block;margin:.5rem 0 .25rem}input,button{font:inherit;padding:.4rem .6rem}</style>
</head><body>
<h1>Development sign-in</h1>
<p>This stands in for the health authority's identity provider in the demo.
Any name signs you in; the self-check then counts your checks as one person.</p>
<form method="post" action="/sign-in">
<label for="name">Your name (any)</label>
<input id="name" name="name" required maxlength="64" autocomplete="username">
"#;

const PAGE_TAIL: &str = r#"<button type="submit">Sign in</button>
</form></body></html>"#;

impl DevIdp {
    /// A provider that signs with `signer` for the client whose id is the
    /// signer's audience, returning only to `redirect_uri`.
    pub fn new(signer: DevSigner, redirect_uri: &str) -> DevIdp {
        DevIdp {
            signer,
            redirect_uri: redirect_uri.to_string(),
            codes: Mutex::new(HashMap::new()),
        }
    }

    /// Serves the provider on `listen` until `shutdown` resolves.
    pub async fn serve(
        self,
        listen: SocketAddr,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), DevIdpError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| DevIdpError::Bind {
                addr: listen,
                source,
            })?;
        tracing::info!(addr = %listener.local_addr()?, "development identity provider listening");
        let app = Router::new()
            .route("/authorize", get(authorize))
            .route("/sign-in", post(sign_in))
            .route("/token", post(token))
            .with_state(Arc::new(self));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }

    /// Why `request` is not one this provider answers, if it is not.
    fn check(&self, request: &AuthorizationRequest) -> Result<(), &'static str> {
        if request.redirect_uri != self.redirect_uri {
            return Err("redirect_uri is not the registered one");
        }
        if request.client_id != self.signer.audience {
            return Err("unknown client_id");
        }
        if request.response_type != "code" {
            return Err("response_type must be code (no implicit flow)");
        }
        if request.code_challenge_method != "S256" || !is_challenge(&request.code_challenge) {
            return Err("a PKCE code_challenge with code_challenge_method=S256 is required");
        }
        if !is_random_value(&request.state) || !is_random_value(&request.nonce) {
            return Err("state and nonce are required (16 to 128 URL-safe characters)");
        }
        Ok(())
    }
}

/// A base64url SHA-256: 43 characters.
fn is_challenge(s: &str) -> bool {
    s.len() == 43 && s.bytes().all(is_url_safe)
}

fn is_random_value(s: &str) -> bool {
    (16..=128).contains(&s.len()) && s.bytes().all(is_url_safe)
}

fn is_url_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// An error the browser sees (never sent back to an unchecked redirect
/// URI: that would make this an open redirector).
fn refuse(reason: &str) -> Response {
    (StatusCode::BAD_REQUEST, reason.to_string()).into_response()
}

async fn authorize(
    State(idp): State<Arc<DevIdp>>,
    Query(request): Query<AuthorizationRequest>,
) -> Response {
    if let Err(reason) = idp.check(&request) {
        return refuse(reason);
    }
    // The request travels on in hidden fields; every value was checked to
    // be URL-safe characters except the redirect URI, which equals the
    // registered one, and all are escaped.
    let mut page = String::from(PAGE_HEAD);
    for (name, value) in [
        ("response_type", &request.response_type),
        ("client_id", &request.client_id),
        ("redirect_uri", &request.redirect_uri),
        ("state", &request.state),
        ("nonce", &request.nonce),
        ("code_challenge", &request.code_challenge),
        ("code_challenge_method", &request.code_challenge_method),
    ] {
        page.push_str(&format!(
            r#"<input type="hidden" name="{name}" value="{}">"#,
            escape(value)
        ));
        page.push('\n');
    }
    page.push_str(PAGE_TAIL);
    Html(page).into_response()
}

async fn sign_in(State(idp): State<Arc<DevIdp>>, Form(form): Form<SignIn>) -> Response {
    if let Err(reason) = idp.check(&form.request) {
        return refuse(reason);
    }
    let name = form.name.trim();
    if name.is_empty() || name.len() > 64 {
        return refuse("a name of 1 to 64 characters");
    }
    let code = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    // Checked above to be URL-safe characters: it goes into the query as is.
    let state = form.request.state.clone();
    {
        let mut codes = idp.codes.lock().expect("codes lock");
        codes.retain(|_, g| g.issued.elapsed() < CODE_LIFETIME);
        if codes.len() >= MAX_PENDING_CODES {
            return (StatusCode::SERVICE_UNAVAILABLE, "too many sign-ins pending").into_response();
        }
        let r = form.request;
        codes.insert(
            code.clone(),
            Grant {
                client_id: r.client_id,
                redirect_uri: r.redirect_uri,
                code_challenge: r.code_challenge,
                nonce: r.nonce,
                subject: format!("dev:{name}"),
                issued: Instant::now(),
            },
        );
    }
    let location = format!(
        "{}{}code={code}&state={}",
        idp.redirect_uri,
        if idp.redirect_uri.contains('?') {
            '&'
        } else {
            '?'
        },
        state
    );
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// An OAuth error from the token endpoint (RFC 6749 §5.2).
fn token_error(idp: &DevIdp, error: &'static str) -> Response {
    let mut response = (
        StatusCode::BAD_REQUEST,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({ "error": error })),
    )
        .into_response();
    allow_page_origin(idp, &mut response);
    response
}

/// The self-check page calls the token endpoint from its own origin: the
/// answer names that origin (and only it) for CORS.
fn allow_page_origin(idp: &DevIdp, response: &mut Response) {
    if let Some(origin) = origin_of(&idp.redirect_uri)
        && let Ok(value) = HeaderValue::from_str(&origin)
    {
        response
            .headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
}

/// `scheme://host[:port]` of an absolute URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    Some(format!("{scheme}://{authority}"))
}

async fn token(State(idp): State<Arc<DevIdp>>, Form(request): Form<TokenRequest>) -> Response {
    if request.grant_type != "authorization_code" {
        return token_error(&idp, "unsupported_grant_type");
    }
    // Taken out whatever happens next: a code is redeemed at most once.
    let grant = idp.codes.lock().expect("codes lock").remove(&request.code);
    let Some(grant) = grant else {
        return token_error(&idp, "invalid_grant");
    };
    let verifier_ok = (43..=128).contains(&request.code_verifier.len())
        && request.code_verifier.bytes().all(is_url_safe)
        && URL_SAFE_NO_PAD.encode(Sha256::digest(request.code_verifier.as_bytes()))
            == grant.code_challenge;
    if grant.issued.elapsed() >= CODE_LIFETIME
        || grant.redirect_uri != request.redirect_uri
        || grant.client_id != request.client_id
        || !verifier_ok
    {
        return token_error(&idp, "invalid_grant");
    }
    let now = jsonwebtoken::get_current_timestamp();
    let claims = DevClaims {
        iss: idp.signer.issuer.clone(),
        aud: idp.signer.audience.clone(),
        sub: grant.subject,
        iat: now,
        nbf: now,
        exp: now + idp.signer.ttl_secs,
        nonce: Some(grant.nonce),
    };
    match idp.signer.sign_claims(&claims) {
        Ok(id_token) => {
            let mut response = (
                [(header::CACHE_CONTROL, "no-store")],
                axum::Json(serde_json::json!({
                    "id_token": id_token,
                    "token_type": "Bearer",
                    "expires_in": idp.signer.ttl_secs,
                })),
            )
                .into_response();
            allow_page_origin(&idp, &mut response);
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot sign a development token");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn escape(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
