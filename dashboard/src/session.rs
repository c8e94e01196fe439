//! The HTTP side of access control: the role gate in front of each group
//! of routes, and the browser login that keeps a token in a cookie.
//!
//! The cookie is HttpOnly (no script can read it) and SameSite=Strict (no
//! other site can make the browser send it); `Secure` when
//! `auth.cookie_secure` is set, for deployments behind TLS.

use crate::api::{AppState, problem};
use crate::auth::{self, Denied, Role};
use axum::extract::{Form, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

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

async fn require(
    State(state): State<AppState>,
    request: Request,
    next: Next,
    role: Role,
) -> Response {
    match state.tokens.authorize(request.headers(), role) {
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

/// Checks the token and keeps it in an HttpOnly, SameSite=Strict cookie.
pub(crate) async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim();
    let known = [Role::Analyst, Role::Researcher]
        .into_iter()
        .any(|r| state.tokens.check(token, r).is_ok());
    if !known {
        return (
            StatusCode::UNAUTHORIZED,
            Html(LOGIN_HTML.replace("<!--error-->", "<p class=\"error\">Unknown token.</p>")),
        )
            .into_response();
    }
    let secure = if state.cookie_secure { "; Secure" } else { "" };
    let cookie = format!(
        "{}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200{secure}",
        auth::COOKIE
    );
    match HeaderValue::from_str(&cookie) {
        Ok(v) => {
            let mut r = Redirect::to("/").into_response();
            r.headers_mut().insert(header::SET_COOKIE, v);
            r
        }
        Err(_) => problem(
            StatusCode::BAD_REQUEST,
            "invalid_value",
            "the token holds characters a cookie cannot carry; use the Authorization header",
        ),
    }
}

/// Forgets the login cookie.
pub(crate) async fn logout() -> Response {
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("hushmap_token=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    r
}
