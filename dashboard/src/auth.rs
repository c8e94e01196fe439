//! Access control: bearer tokens with roles.
//!
//! An analyst token opens the page and the JSON API; a researcher token
//! opens the exports and Arrow Flight. Tokens are kept as SHA-256 hashes
//! only: the configuration and the tokens file never hold a usable secret,
//! and tokens are long random strings, so a fast hash is enough (as for API
//! keys generally; there is no password to stretch).
//!
//! A token is presented as `Authorization: Bearer <token>` or, from the
//! browser after the login form, as the HttpOnly cookie [`COOKIE`].
//!
//! ```
//! use hushmap_dashboard::auth::{AccessTokens, Role, TokenEntry};
//! let entry = TokenEntry::for_token("s3cret-token-value", vec![Role::Researcher], "lab");
//! let tokens = AccessTokens::load(&[entry], None).unwrap();
//! assert!(tokens.check("s3cret-token-value", Role::Researcher).is_ok());
//! assert!(tokens.check("s3cret-token-value", Role::Analyst).is_err());
//! assert!(tokens.check("guess", Role::Researcher).is_err());
//! ```

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Name of the login cookie.
pub const COOKIE: &str = "hushmap_token";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The page and the JSON API.
    Analyst,
    /// Exports and Arrow Flight.
    Researcher,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        match s {
            "analyst" => Some(Role::Analyst),
            "researcher" => Some(Role::Researcher),
            _ => None,
        }
    }
}

/// One configured token: its hash, roles and a name for the logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// SHA-256 of the token, lower-case hex.
    pub sha256: String,
    pub roles: Vec<Role>,
    /// Who holds it, for the operators' records.
    #[serde(default)]
    pub name: String,
}

impl TokenEntry {
    /// The entry for a token (used by `hash-token` and tests).
    pub fn for_token(token: &str, roles: Vec<Role>, name: &str) -> TokenEntry {
        TokenEntry {
            sha256: hex::encode(Sha256::digest(token.as_bytes())),
            roles,
            name: name.into(),
        }
    }

    /// The tokens-file line for this entry.
    pub fn to_line(&self) -> String {
        let roles: Vec<&str> = self
            .roles
            .iter()
            .map(|r| match r {
                Role::Analyst => "analyst",
                Role::Researcher => "researcher",
            })
            .collect();
        format!("{} {} {}", self.sha256, roles.join(","), self.name)
            .trim_end()
            .to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading tokens file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tokens file {path}, line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error("token entry `{name}`: {reason}")]
    Entry { name: String, reason: &'static str },
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No token, or one that is not configured: 401.
    Unauthenticated,
    /// A valid token without the role: 403.
    Forbidden,
}

/// The configured tokens, by hash.
#[derive(Debug, Clone, Default)]
pub struct AccessTokens {
    by_hash: HashMap<[u8; 32], (String, Vec<Role>)>,
}

impl AccessTokens {
    /// Inline entries plus the lines of `file`, if any.
    pub fn load(entries: &[TokenEntry], file: Option<&Path>) -> Result<AccessTokens, AuthError> {
        let mut tokens = AccessTokens::default();
        for e in entries {
            tokens.add(e).map_err(|reason| AuthError::Entry {
                name: e.name.clone(),
                reason,
            })?;
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| AuthError::File {
                path: path.into(),
                source,
            })?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let err = |reason| AuthError::Line {
                    path: path.into(),
                    line: i + 1,
                    reason,
                };
                let mut parts = line.splitn(3, char::is_whitespace);
                let sha256 = parts.next().unwrap_or_default().to_string();
                let roles = parts
                    .next()
                    .ok_or_else(|| err("expected `<sha256 hex> <role>[,<role>] [name]`"))?
                    .split(',')
                    .map(Role::parse)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| err("roles are analyst and researcher"))?;
                let name = parts.next().unwrap_or_default().trim().to_string();
                tokens
                    .add(&TokenEntry {
                        sha256,
                        roles,
                        name,
                    })
                    .map_err(err)?;
            }
        }
        Ok(tokens)
    }

    fn add(&mut self, e: &TokenEntry) -> Result<(), &'static str> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&e.sha256, &mut hash)
            .map_err(|_| "sha256 must be 64 hex digits (the hash, not the token)")?;
        if e.roles.is_empty() {
            return Err("a token needs at least one role");
        }
        self.by_hash.insert(hash, (e.name.clone(), e.roles.clone()));
        Ok(())
    }

    /// No tokens configured: loopback-only open access.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Whether `token` holds `role`.
    pub fn check(&self, token: &str, role: Role) -> Result<(), Denied> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        match self.by_hash.get(&hash) {
            None => Err(Denied::Unauthenticated),
            Some((_, roles)) if roles.contains(&role) => Ok(()),
            Some(_) => Err(Denied::Forbidden),
        }
    }

    /// Checks the token a request presents (header first, then cookie).
    /// With no tokens configured every request passes: that mode is only
    /// allowed on loopback binds ([`DashboardConfig::validate`](crate::DashboardConfig::validate)).
    pub fn authorize(&self, headers: &HeaderMap, role: Role) -> Result<(), Denied> {
        if self.is_empty() {
            return Ok(());
        }
        let token = presented_token(headers).ok_or(Denied::Unauthenticated)?;
        self.check(&token, role)
    }
}

/// The token in `Authorization: Bearer …`, else in the login cookie.
pub fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        return v
            .strip_prefix("Bearer ")
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
    }
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn tokens() -> AccessTokens {
        AccessTokens::load(
            &[
                TokenEntry::for_token("analyst-token", vec![Role::Analyst], "a"),
                TokenEntry::for_token("both-token", vec![Role::Analyst, Role::Researcher], "b"),
            ],
            None,
        )
        .unwrap()
    }

    #[test]
    fn roles_are_enforced() {
        let t = tokens();
        assert_eq!(t.check("analyst-token", Role::Analyst), Ok(()));
        assert_eq!(
            t.check("analyst-token", Role::Researcher),
            Err(Denied::Forbidden)
        );
        assert_eq!(t.check("both-token", Role::Researcher), Ok(()));
        assert_eq!(t.check("nope", Role::Analyst), Err(Denied::Unauthenticated));
    }

    #[test]
    fn header_and_cookie_are_read() {
        let t = tokens();
        let mut h = HeaderMap::new();
        assert_eq!(t.authorize(&h, Role::Analyst), Err(Denied::Unauthenticated));
        h.insert(
            "cookie",
            HeaderValue::from_static("x=1; hushmap_token=analyst-token"),
        );
        assert_eq!(t.authorize(&h, Role::Analyst), Ok(()));
        // A header, when present, wins over the cookie.
        h.insert("authorization", HeaderValue::from_static("Bearer wrong"));
        assert_eq!(t.authorize(&h, Role::Analyst), Err(Denied::Unauthenticated));
        assert!(
            AccessTokens::default()
                .authorize(&h, Role::Researcher)
                .is_ok()
        );
    }

    #[test]
    fn tokens_file_is_parsed_and_checked() {
        let dir = std::env::temp_dir().join(format!("hushmap-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        let line = TokenEntry::for_token("file-token", vec![Role::Researcher], "lab one").to_line();
        std::fs::write(&path, format!("# comment\n\n{line}\n")).unwrap();
        let t = AccessTokens::load(&[], Some(&path)).unwrap();
        assert_eq!(t.check("file-token", Role::Researcher), Ok(()));

        std::fs::write(&path, "file-token researcher\n").unwrap();
        let err = AccessTokens::load(&[], Some(&path))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("64 hex"), "{err}");
        // The refusal never repeats the line (it might be a raw token).
        assert!(!err.contains("file-token"), "{err}");
        std::fs::write(&path, format!("{} admin\n", "0".repeat(64))).unwrap();
        assert!(AccessTokens::load(&[], Some(&path)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
