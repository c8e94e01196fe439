//! The development sign-in page (`hushmap-dev-idp serve`).

use crate::{DevIdpError, DevSigner};
use axum::Router;
use axum::extract::{Form, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;

/// The development sign-in page.
pub struct DevIdp {
    signer: DevSigner,
    /// Where a signed-in browser is sent back to (the self-check page).
    return_to: String,
}

#[derive(Deserialize)]
struct SignIn {
    name: String,
}

const SIGN_IN_PAGE: &str = r#"<!doctype html>
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
<button type="submit">Sign in</button>
</form></body></html>"#;

impl DevIdp {
    pub fn new(signer: DevSigner, return_to: &str) -> DevIdp {
        DevIdp {
            signer,
            return_to: return_to.to_string(),
        }
    }

    /// Serves the sign-in page on `listen` until `shutdown` resolves.
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
            .route("/", get(|| async { Html(SIGN_IN_PAGE) }))
            .route("/sign-in", post(sign_in))
            .with_state(Arc::new(self));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}

async fn sign_in(State(idp): State<Arc<DevIdp>>, Form(form): Form<SignIn>) -> Response {
    let name = form.name.trim();
    if name.is_empty() || name.len() > 64 {
        return (StatusCode::BAD_REQUEST, "a name of 1 to 64 characters").into_response();
    }
    match idp.signer.sign(&format!("dev:{name}")) {
        Ok(token) => (
            StatusCode::SEE_OTHER,
            [(
                header::LOCATION,
                format!("{}#id_token={token}", idp.return_to),
            )],
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot sign a development token");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
