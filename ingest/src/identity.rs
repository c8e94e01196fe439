//! ID tokens: who a signed-in person is, as the deploying health
//! authority's identity provider says.
//!
//! A signed-in client sends `Authorization: Bearer <ID token>`, a JWT the
//! identity provider signed. [`IdTokenVerifier`] checks, with the
//! well-kept `jsonwebtoken` crate, the signature (EdDSA, ES256 or RS256 by
//! default; never `none`, never an HMAC, whatever the token's header says),
//! the issuer, the audience, the expiry and not-before, against public keys
//! configured as a JWKS file or PEM files, which it re-reads when they
//! change (a broken file leaves the keys in force). What comes out is the
//! verified issuer and `sub`, which [`ContributorKeys`] turns into the
//! contributor key; the token itself is never logged nor kept.
//!
//! [`ContributorKeys`]: hushmap_submission::contributor::ContributorKeys

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation, decode, decode_header};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// Where the identity provider's keys come from, and what a token must
/// say. With no keys configured, ID tokens are refused (anonymous use
/// only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentitySettings {
    /// A JWKS file of the provider's signing keys (re-read on change).
    pub jwks_file: Option<PathBuf>,
    /// PEM public keys (Ed25519, P-256 or RSA), one per file; the file's
    /// name without extension is the key id (re-read on change).
    pub pem_files: Vec<PathBuf>,
    /// The `iss` a token must carry.
    pub issuer: Option<String>,
    /// The `aud` a token must carry: this service's client id at the
    /// provider.
    pub audience: Option<String>,
    /// Signature algorithms accepted.
    pub algorithms: Vec<String>,
    /// Clock skew allowed when checking `exp` and `nbf`, seconds.
    pub leeway_secs: u64,
    /// The provider's authorization endpoint: where the self-check page
    /// starts a sign-in (authorization code flow with PKCE, state and
    /// nonce; the client id is `audience`, the redirect URI the page
    /// itself). None: the page offers no sign-in.
    pub authorization_endpoint: Option<String>,
    /// The provider's token endpoint, where the page redeems the code (the
    /// provider must allow the page's origin by CORS, as it does for any
    /// browser-based public client).
    pub token_endpoint: Option<String>,
    /// Replaced by `authorization_endpoint` and `token_endpoint`: the
    /// implicit flow it served let a link sign its reader in as someone
    /// else. Read only to refuse it with that explanation.
    #[serde(skip_serializing)]
    pub sign_in_url: Option<String>,
    /// Anonymous contributor tokens older than this are refused (the
    /// browser then starts over as a new contributor).
    pub contributor_token_max_age_days: u32,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        IdentitySettings {
            jwks_file: None,
            pem_files: Vec::new(),
            issuer: None,
            audience: None,
            algorithms: vec!["EdDSA".into(), "ES256".into(), "RS256".into()],
            leeway_secs: 60,
            authorization_endpoint: None,
            token_endpoint: None,
            sign_in_url: None,
            contributor_token_max_age_days: 365,
        }
    }
}

impl IdentitySettings {
    /// Whether ID tokens are accepted at all.
    pub fn accepts_id_tokens(&self) -> bool {
        self.jwks_file.is_some() || !self.pem_files.is_empty()
    }

    /// What the self-check page needs to offer sign-in, when configured.
    pub fn sign_in(&self) -> Option<crate::page::SignInEndpoints<'_>> {
        Some(crate::page::SignInEndpoints {
            authorization_endpoint: self.authorization_endpoint.as_deref()?,
            token_endpoint: self.token_endpoint.as_deref()?,
            client_id: self.audience.as_deref()?,
        })
    }
}

/// Why the identity settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityConfigError {
    #[error("identity.{0} is required when ID token keys are configured")]
    Missing(&'static str),
    #[error(
        "identity.algorithms: {0:?} is not an accepted signature algorithm (EdDSA, ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512)"
    )]
    Algorithm(String),
    #[error("{path}: {reason}")]
    Keys { path: PathBuf, reason: String },
    #[error("identity: the configured key files hold no usable public key")]
    NoKeys,
}

/// Why an ID token was refused. The text says why; it never echoes the
/// token or its claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("this service does not accept ID tokens")]
    NotAccepted,
    #[error("the ID token is not a well-formed JWT with an accepted algorithm")]
    Malformed,
    #[error("the ID token is signed with a key this service does not know")]
    UnknownKey,
    #[error("the ID token's signature does not verify")]
    BadSignature,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token is not valid yet")]
    NotYetValid,
    #[error("the ID token was issued by another identity provider")]
    WrongIssuer,
    #[error("the ID token is meant for another service")]
    WrongAudience,
    #[error("the ID token lacks a required claim (iss, aud, exp or sub)")]
    MissingClaim,
}

/// The person an ID token vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSubject {
    pub issuer: String,
    pub subject: String,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
}

/// One public key of the provider.
struct ProviderKey {
    kid: Option<String>,
    /// The one algorithm the key is for, when its JWK says so.
    alg: Option<Algorithm>,
    family: AlgorithmFamily,
    key: DecodingKey,
}

/// Verifies ID tokens against the provider's keys, re-reading them when
/// their files change.
pub struct IdTokenVerifier {
    issuer: String,
    audience: String,
    algorithms: Vec<Algorithm>,
    leeway_secs: u64,
    files: Vec<(PathBuf, KeyFileKind)>,
    keys: RwLock<Arc<Vec<ProviderKey>>>,
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

#[derive(Debug, Clone, Copy)]
enum KeyFileKind {
    Jwks,
    Pem,
}

impl std::fmt::Debug for IdTokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdTokenVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, IdentityConfigError> {
    names
        .iter()
        .map(|name| {
            let alg: Algorithm = name
                .parse()
                .map_err(|_| IdentityConfigError::Algorithm(name.clone()))?;
            // A shared-secret algorithm would let anyone holding the public
            // key (it is public) sign tokens: never accepted.
            if alg.family() == AlgorithmFamily::Hmac {
                return Err(IdentityConfigError::Algorithm(name.clone()));
            }
            Ok(alg)
        })
        .collect()
}

impl IdTokenVerifier {
    /// The verifier `settings` describe, its keys loaded; `None` when no
    /// keys are configured (ID tokens are then refused).
    pub fn new(
        settings: &IdentitySettings,
    ) -> Result<Option<IdTokenVerifier>, IdentityConfigError> {
        if !settings.accepts_id_tokens() {
            return Ok(None);
        }
        let issuer = settings
            .issuer
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or(IdentityConfigError::Missing("issuer"))?;
        let audience = settings
            .audience
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or(IdentityConfigError::Missing("audience"))?;
        let algorithms = parse_algorithms(&settings.algorithms)?;
        if algorithms.is_empty() {
            return Err(IdentityConfigError::Missing("algorithms"));
        }
        let files: Vec<(PathBuf, KeyFileKind)> = settings
            .jwks_file
            .iter()
            .map(|p| (p.clone(), KeyFileKind::Jwks))
            .chain(
                settings
                    .pem_files
                    .iter()
                    .map(|p| (p.clone(), KeyFileKind::Pem)),
            )
            .collect();
        let stamps = files.iter().map(|(p, _)| file_stamp(p)).collect();
        let keys = load_keys(&files)?;
        Ok(Some(IdTokenVerifier {
            issuer,
            audience,
            algorithms,
            leeway_secs: settings.leeway_secs,
            files,
            keys: RwLock::new(Arc::new(keys)),
            stamps: Mutex::new(stamps),
        }))
    }

    /// Re-reads the key files if any changed since the last read; returns
    /// the number of keys now in force, or `None` if nothing changed. Files
    /// that fail to load leave the previous keys in force.
    pub fn reload_if_changed(&self) -> Result<Option<usize>, IdentityConfigError> {
        let now: Vec<_> = self.files.iter().map(|(p, _)| file_stamp(p)).collect();
        let mut stamps = self.stamps.lock().expect("stamp lock");
        if now == *stamps {
            return Ok(None);
        }
        let keys = load_keys(&self.files)?;
        let n = keys.len();
        *self.keys.write().expect("key lock") = Arc::new(keys);
        *stamps = now;
        Ok(Some(n))
    }

    /// Verifies `token` and returns whom it vouches for.
    pub fn verify(&self, token: &str) -> Result<VerifiedSubject, IdTokenError> {
        // The header is read before the signature is checked only to pick
        // the key; the algorithm must be one this service accepts anyway.
        let header = decode_header(token).map_err(|_| IdTokenError::Malformed)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(IdTokenError::Malformed);
        }
        let keys = self.keys.read().expect("key lock").clone();
        let candidates = keys.iter().filter(|k| {
            k.family == header.alg.family()
                && k.alg.is_none_or(|a| a == header.alg)
                && match (&header.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    (Some(_), None) => false,
                    (None, _) => true,
                }
        });
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway_secs;
        let mut outcome = Err(IdTokenError::UnknownKey);
        for key in candidates {
            match decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => {
                    if data.claims.sub.is_empty() || data.claims.iss != self.issuer {
                        return Err(IdTokenError::MissingClaim);
                    }
                    return Ok(VerifiedSubject {
                        issuer: data.claims.iss,
                        subject: data.claims.sub,
                    });
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    let refused = match e.kind() {
                        // Another key may still verify it.
                        ErrorKind::InvalidSignature => IdTokenError::BadSignature,
                        ErrorKind::ExpiredSignature => return Err(IdTokenError::Expired),
                        ErrorKind::ImmatureSignature => return Err(IdTokenError::NotYetValid),
                        ErrorKind::InvalidIssuer => return Err(IdTokenError::WrongIssuer),
                        ErrorKind::InvalidAudience => return Err(IdTokenError::WrongAudience),
                        ErrorKind::MissingRequiredClaim(_) => {
                            return Err(IdTokenError::MissingClaim);
                        }
                        _ => return Err(IdTokenError::Malformed),
                    };
                    outcome = Err(refused);
                }
            }
        }
        outcome
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn load_keys(files: &[(PathBuf, KeyFileKind)]) -> Result<Vec<ProviderKey>, IdentityConfigError> {
    let mut keys = Vec::new();
    for (path, kind) in files {
        let bad = |reason: String| IdentityConfigError::Keys {
            path: path.clone(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        match kind {
            KeyFileKind::Jwks => {
                let set: JwkSet =
                    serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a JWKS: {e}")))?;
                for jwk in &set.keys {
                    let key = DecodingKey::from_jwk(jwk)
                        .map_err(|e| bad(format!("unusable key: {e}")))?;
                    let alg = match jwk.common.key_algorithm {
                        Some(a) => Some(
                            a.to_string()
                                .parse::<Algorithm>()
                                .map_err(|_| bad(format!("key algorithm {a} cannot sign JWTs")))?,
                        ),
                        None => None,
                    };
                    keys.push(checked(key, jwk.common.key_id.clone(), alg).map_err(bad)?);
                }
            }
            KeyFileKind::Pem => {
                let key = DecodingKey::from_ed_pem(&bytes)
                    .or_else(|_| DecodingKey::from_ec_pem(&bytes))
                    .or_else(|_| DecodingKey::from_rsa_pem(&bytes))
                    .map_err(|_| bad("not a PEM Ed25519, EC or RSA public key".into()))?;
                let kid = path.file_stem().map(|s| s.to_string_lossy().into_owned());
                keys.push(checked(key, kid, None).map_err(bad)?);
            }
        }
    }
    if keys.is_empty() {
        return Err(IdentityConfigError::NoKeys);
    }
    Ok(keys)
}

/// A key as the verifier will use it, refused at load rather than failing
/// (or worse) at verification.
fn checked(
    key: DecodingKey,
    kid: Option<String>,
    alg: Option<Algorithm>,
) -> Result<ProviderKey, String> {
    let family = key.family();
    match family {
        AlgorithmFamily::Hmac => {
            return Err("a shared-secret (oct) key cannot verify a provider's tokens".into());
        }
        // The verifier reads 32 bytes from an Ed25519 key: check them now.
        AlgorithmFamily::Ed => {
            if !matches!(key.try_get_as_bytes(), Ok(b) if b.len() == 32) {
                return Err("an Ed25519 key must be 32 bytes".into());
            }
        }
        AlgorithmFamily::Rsa | AlgorithmFamily::Ec => {}
    }
    if alg.is_some_and(|a| a.family() != family) {
        return Err("the key's `alg` does not match its type".into());
    }
    Ok(ProviderKey {
        kid,
        alg,
        family,
        key,
    })
}
