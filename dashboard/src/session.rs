//! The HTTP side of access control: the role gate in front of each group
//! of routes, and the browser login.
//!
//! A login starts a server-side session ([`Sessions`]): the cookie holds a
//! random session id, never the token, and the session ends at logout,
//! after 12 hours, at a restart, or when its token is revoked. The cookie
//! is HttpOnly (no script can read it) and SameSite=Strict (no other site
//! can make the browser send it); `Secure` when `auth.cookie_secure` is
//! set, for deployments behind TLS. Every state-changing POST must come
//! from the dashboard's own pages (`Origin`, else `Referer`, naming this
//! host), and wrong tokens (at login, or as a bearer token) are throttled per
//! client address ([`crate::auth::TokenFailures`]).

use crate::auth::{self, Denied, Role};
use crate::problem::problem;
use crate::state::AppState;
use axum::extract::{ConnectInfo, Form, Request, State};
use axum::http::HeaderMap;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use hushmap_service::client_address::rate_key;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};

pub(crate) const LOGIN_HTML: &str = include_str!("../assets/login.html");

pub(crate) async fn require_analyst(
    state: State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    require(state, request, next, Role::Analyst).await
}

pub(crate) async fn require_researcher(
    state: State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    require(state, request, next, Role::Researcher).await
}

/// A place in the admission of queries, exports and alerts for the token
/// a request was let in with, held until the returned guard is dropped;
/// [`Busy`] (a 429) if that token already runs its share.
pub(crate) fn admit(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<crate::sql_limits::Admitted, Busy> {
    let max = state.sql_limits.max_concurrent_per_token;
    state
        .sql_admission
        .admit_digest(token_digest(state, headers), max)
        .map_err(|_| Busy(max))
}

/// A token already running its share (the share) of queries, exports and
/// alerts at once: answered 429.
pub(crate) struct Busy(usize);

impl IntoResponse for Busy {
    fn into_response(self) -> Response {
        busy(self.0)
    }
}

/// The digest of the token a request was let in with (its bearer token,
/// or its session's), which keys its place in the admission of queries,
/// exports and alerts; under open access every request shares one.
fn token_digest(state: &AppState, headers: &HeaderMap) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    match auth::presented(headers) {
        Some(auth::Presented::Bearer(token)) => Sha256::digest(token.as_bytes()).into(),
        Some(auth::Presented::Session(id)) => state
            .sessions
            .resolve(&id)
            .unwrap_or_else(|| Sha256::digest(b"").into()),
        None => Sha256::digest(b"").into(),
    }
}

/// A 429 for a token already running its share of queries, exports and
/// alerts at once.
fn busy(max: usize) -> Response {
    let mut r = problem(
        StatusCode::TOO_MANY_REQUESTS,
        "busy",
        &format!(
            "this token already runs {max} queries, exports or alerts at once; wait for one to finish"
        ),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// The client a request is throttled as: the socket peer, or the address
/// the trusted proxies name; an IPv6 client by its /64.
pub(crate) fn client_of(state: &AppState, peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
    let peer = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
    rate_key(state.proxies.client(peer, headers), 64)
}

async fn require(
    State(state): State<AppState>,
    request: Request,
    next: Next,
    role: Role,
) -> Response {
    // A bearer token is a guess until it matches: wrong ones spend the
    // client's allowance, and a client out of it is refused before its
    // token is looked at (sessions are not: an id is not guessed).
    let bearer = matches!(
        auth::presented(request.headers()),
        Some(auth::Presented::Bearer(_))
    );
    let client = bearer.then(|| {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        client_of(&state, peer, request.headers())
    });
    // In a block of its own: the closure borrows the request, and must be
    // gone before the request moves on (the future stays Send).
    let decision = {
        let authorize = || {
            state
                .tokens
                .authorize(request.headers(), role, &state.sessions)
        };
        match client {
            Some(client) if !state.tokens.is_open() => {
                match state.token_failures.judge(client, authorize) {
                    Ok(decision) => decision,
                    Err(wait) => return throttled(wait),
                }
            }
            _ => authorize(),
        }
    };
    match decision {
        Ok(()) => next.run(request).await,
        // A browser asking for the page goes to the login form.
        Err(Denied::Unauthenticated) if request.uri().path() == "/" => {
            Redirect::to("/login").into_response()
        }
        Err(Denied::Unauthenticated) => {
            let mut r = problem(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send Authorization: Bearer <token>, or log in at /login",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        // A browser whose token lacks the analyst role gets a page saying so.
        Err(Denied::Forbidden) if request.uri().path() == "/" => (
            StatusCode::FORBIDDEN,
            Html(LOGIN_HTML.replace(
                "<!--error-->",
                "<p class=\"error\">This token has no analyst role: it opens the exports and Arrow Flight (see docs/RESEARCHERS.md), not this page. Log in with an analyst token.</p>",
            )),
        )
            .into_response(),
        Err(Denied::Forbidden) => problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            match role {
                Role::Analyst => "this needs a token with the analyst role",
                Role::Researcher => "this needs a token with the researcher role",
            },
        ),
    }
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    token: String,
}

/// Whether a state-changing request comes from this dashboard's own
/// pages: its `Origin` (else `Referer`) names the host it was sent to. A
/// request with neither (a script, curl) is not a browser's cross-site
/// request and passes; a browser always sends `Origin` with a POST.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .map(|v| v.to_str().unwrap_or("invalid"));
    match source {
        None => true,
        Some(source) => {
            let rest = source
                .strip_prefix("https://")
                .or_else(|| source.strip_prefix("http://"));
            rest.is_some_and(|r| r.split('/').next() == Some(host))
        }
    }
}

fn cross_site() -> Response {
    problem(
        StatusCode::FORBIDDEN,
        "cross_site",
        "this request came from another site's page",
    )
}

/// Checks the token and starts a session in an HttpOnly, SameSite=Strict
/// cookie.
pub(crate) async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    // Failed logins spend the client's allowance; a client out of it is
    // refused before its token is even looked at.
    let client = client_of(&state, Some(peer), &headers);
    let token = form.token.trim();
    let verdict = state.token_failures.judge(client, || {
        let known = [Role::Analyst, Role::Researcher]
            .into_iter()
            .any(|r| state.tokens.check(token, r).is_ok());
        if known {
            Ok(())
        } else {
            Err(Denied::Unauthenticated)
        }
    });
    match verdict {
        Err(wait) => return throttled(wait),
        Ok(Err(_)) => {
            return (
                StatusCode::UNAUTHORIZED,
                Html(LOGIN_HTML.replace("<!--error-->", "<p class=\"error\">Unknown token.</p>")),
            )
                .into_response();
        }
        Ok(Ok(())) => {}
    }
    let id = state.sessions.create(token);
    let secure = if state.cookie_secure { "; Secure" } else { "" };
    let cookie = format!(
        "{}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        auth::COOKIE,
        auth::SESSION_LIFETIME.as_secs()
    );
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("hex id and fixed text"),
    );
    r
}

fn throttled(wait: std::time::Duration) -> Response {
    let mut r = problem(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many wrong tokens from this address; wait before trying again",
    );
    let secs = wait.as_secs().saturating_add(1).to_string();
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&secs).expect("digits"),
    );
    r
}

/// Ends the session and forgets the cookie.
pub(crate) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    if let Some(id) = auth::session_cookie(&headers) {
        state.sessions.end(&id);
    }
    let mut r = Redirect::to("/login").into_response();
    let cookie = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        auth::COOKIE
    );
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("fixed text"),
    );
    r
}
