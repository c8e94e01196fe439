//! A development identity provider, for demos and tests only: it signs ID
//! tokens with a local Ed25519 key, as the health authority's provider
//! would with its own. Never part of a deployment: ingest only ever
//! *verifies* tokens, with public keys.
//!
//! - [`DevSigner`]: one token (`hushmap-dev-idp id-token`, and the
//!   signed-in share of `hushmap-traffic`).
//! - `DevIdp` (feature `page`): a sign-in page (`hushmap-dev-idp serve`)
//!   behind an OpenID Connect authorization code flow with PKCE, state and
//!   nonce, as the health authority's provider would run it.
//!
//! The key pair is made with OpenSSL (`openssl genpkey -algorithm ed25519`,
//! or a P-256 or RSA key for ES256 or RS256; `openssl pkey -pubout`);
//! ingest is given the public half (`identity.pem_files`), under the same
//! key id as the private file's name without `.key.pem`.

#[cfg(feature = "page")]
mod page;
#[cfg(feature = "page")]
pub use page::DevIdp;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

/// What a development ID token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// The nonce the client sent with its authorization request, returned
    /// so that the client can tell a token it asked for from one it was
    /// handed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
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
            nonce: None,
        })
    }

    /// A token with exactly these claims (tests make expired or foreign ones).
    pub fn sign_claims(&self, claims: &DevClaims) -> Result<String, DevIdpError> {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        Ok(encode(&header, claims, &self.key)?)
    }
}
