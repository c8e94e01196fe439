//! A development identity provider, for demos and tests only: it signs ID
//! tokens with a local Ed25519 key, as the health authority's provider
//! would with its own. Never part of a deployment: ingest only ever
//! *verifies* tokens, with public keys.
//!
//! - [`DevSigner`]: one token (the `dev-id-token` subcommand).
//! - [`DevIdp`]: a sign-in page (the `dev-idp` subcommand) that sends the
//!   browser back to the self-check page with `#id_token=…`, as an OpenID
//!   Connect provider's implicit flow would.
//!
//! The key pair is made with OpenSSL (`openssl genpkey -algorithm ed25519`,
//! or a P-256 or RSA key for ES256 or RS256; `openssl pkey -pubout`);
//! ingest is given the public half (`identity.pem_files`), under the same
//! key id as the private file's name without `.key.pem`.

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// What a development ID token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DevIdpError {
    #[error("{path}: {reason}")]
    Key { path: String, reason: String },
    #[error("signing: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// A loaded signing key and what its tokens say.
#[derive(Clone)]
pub struct DevSigner {
    key: EncodingKey,
    alg: Algorithm,
    kid: Option<String>,
    issuer: String,
    audience: String,
    ttl_secs: u64,
}

impl DevSigner {
    /// Reads the PKCS#8 PEM private key at `path` (Ed25519 signs EdDSA,
    /// P-256 ES256, RSA RS256); its key id is the file name without
    /// `.key.pem` (the public file must be named alike for ingest to find
    /// it by id).
    pub fn load(
        path: &Path,
        issuer: &str,
        audience: &str,
        ttl_secs: u64,
    ) -> Result<DevSigner, DevIdpError> {
        let bad = |reason: String| DevIdpError::Key {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let (key, alg) = EncodingKey::from_ed_pem(&pem)
            .map(|k| (k, Algorithm::EdDSA))
            .or_else(|_| EncodingKey::from_ec_pem(&pem).map(|k| (k, Algorithm::ES256)))
            .or_else(|_| EncodingKey::from_rsa_pem(&pem).map(|k| (k, Algorithm::RS256)))
            .map_err(|_| bad("not a PKCS#8 PEM Ed25519, P-256 or RSA private key".into()))?;
        let kid = path
            .file_stem()
            .map(|s| s.to_string_lossy().trim_end_matches(".key").to_string());
        Ok(DevSigner {
            key,
            alg,
            kid,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            ttl_secs,
        })
    }

    /// A token for `subject`, valid from now for the signer's lifetime.
    pub fn sign(&self, subject: &str) -> Result<String, DevIdpError> {
        let now = jsonwebtoken::get_current_timestamp();
        self.sign_claims(&DevClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: subject.to_string(),
            iat: now,
            nbf: now,
            exp: now + self.ttl_secs,
        })
    }

    /// A token with exactly these claims (tests make expired or foreign ones).
    pub fn sign_claims(&self, claims: &DevClaims) -> Result<String, DevIdpError> {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        Ok(encode(&header, claims, &self.key)?)
    }
}

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
