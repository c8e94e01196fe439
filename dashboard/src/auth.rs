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
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// Name of the login cookie: a session id, never the token.
pub const COOKIE: &str = "hushmap_session";

/// How long a browser session lasts without a new login.
pub const SESSION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// Browser sessions, held only in this process.
///
/// The login cookie carries a random session id (256 bits); the session
/// maps it to the *digest* of the token that logged in, so neither the
/// cookie nor this table holds a token. A session ends at logout, after
/// [`SESSION_LIFETIME`], when the process restarts, and as soon as its
/// token is no longer in force (revoked in the tokens file): every request
/// checks the digest against the tokens in force now.
#[derive(Debug, Default)]
pub struct Sessions {
    /// Keyed by the digest of the session id.
    by_id: Mutex<HashMap<[u8; 32], Session>>,
}

/// A session: the digest of the token that logged in, and when it ends.
type Session = ([u8; 32], std::time::Instant);

impl Sessions {
    /// Starts a session for `token`; returns its id (the cookie value).
    pub fn create(&self, token: &str) -> String {
        let id: [u8; 32] = rand::random();
        let token_hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let expires = std::time::Instant::now() + SESSION_LIFETIME;
        self.by_id
            .lock()
            .expect("sessions lock")
            .insert(Sha256::digest(id).into(), (token_hash, expires));
        hex::encode(id)
    }

    /// The token digest of a live session.
    pub(crate) fn resolve(&self, id: &str) -> Option<[u8; 32]> {
        let key: [u8; 32] = Sha256::digest(id.as_bytes_id()?).into();
        let mut sessions = self.by_id.lock().expect("sessions lock");
        match sessions.get(&key) {
            Some((hash, expires)) if *expires > std::time::Instant::now() => Some(*hash),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session `id` (logout).
    pub fn end(&self, id: &str) {
        if let Some(bytes) = id.as_bytes_id() {
            let key: [u8; 32] = Sha256::digest(bytes).into();
            self.by_id.lock().expect("sessions lock").remove(&key);
        }
    }

    /// Drops expired sessions.
    pub fn sweep(&self) {
        let now = std::time::Instant::now();
        self.by_id
            .lock()
            .expect("sessions lock")
            .retain(|_, (_, expires)| *expires > now);
    }

    pub fn len(&self) -> usize {
        self.by_id.lock().expect("sessions lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A session id as sent: 64 hex digits.
trait SessionIdText {
    fn as_bytes_id(&self) -> Option<[u8; 32]>;
}

impl SessionIdText for str {
    fn as_bytes_id(&self) -> Option<[u8; 32]> {
        let mut id = [0u8; 32];
        hex::decode_to_slice(self, &mut id).ok()?;
        Some(id)
    }
}

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

/// Whether `token` is usable: 16 to 256 characters from the URL-safe
/// base64 and hex alphabets, so that it fits an HTTP header and a cookie
/// as it is.
pub fn valid_token(token: &str) -> bool {
    (16..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b))
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
        self.check_hash(&Sha256::digest(token.as_bytes()).into(), role)
    }

    /// Whether the token with this digest holds `role`.
    fn check_hash(&self, hash: &[u8; 32], role: Role) -> Result<(), Denied> {
        match self.by_hash.get(hash) {
            None => Err(Denied::Unauthenticated),
            Some((_, roles)) if roles.contains(&role) => Ok(()),
            Some(_) => Err(Denied::Forbidden),
        }
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }
}

/// The tokens in force, reloaded from the tokens file when it changes, so
/// that a token can be added or revoked without a restart.
///
/// Open access (every request passes) is decided once, at start: only
/// when no token and no tokens file is configured, which
/// [`DashboardConfig::validate`](crate::DashboardConfig::validate) allows on
/// loopback binds only. A tokens file that later empties locks everyone
/// out; it never opens the dashboard.
#[derive(Debug)]
pub struct TokenRegistry {
    inline: Vec<TokenEntry>,
    file: Option<PathBuf>,
    open: bool,
    current: RwLock<Arc<AccessTokens>>,
    /// The file's (modified time, length) when last read.
    stamp: Mutex<Option<(SystemTime, u64)>>,
}

impl TokenRegistry {
    /// `initial`: the tokens `inline` and `file` held at start.
    pub fn new(
        inline: Vec<TokenEntry>,
        file: Option<PathBuf>,
        initial: AccessTokens,
    ) -> TokenRegistry {
        let open = inline.is_empty() && file.is_none();
        let stamp = file.as_deref().and_then(file_stamp);
        TokenRegistry {
            inline,
            file,
            open,
            current: RwLock::new(Arc::new(initial)),
            stamp: Mutex::new(stamp),
        }
    }

    /// No tokens configured at all: open access (loopback only).
    pub fn is_open(&self) -> bool {
        self.open
    }

    fn current(&self) -> Arc<AccessTokens> {
        self.current.read().expect("token lock").clone()
    }

    /// Whether `token` holds `role` (always, in open access).
    pub fn check(&self, token: &str, role: Role) -> Result<(), Denied> {
        if self.open {
            return Ok(());
        }
        self.current().check(token, role)
    }

    /// Checks what a request presents: a bearer token, else a session
    /// cookie (whose token must still be in force).
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        role: Role,
        sessions: &Sessions,
    ) -> Result<(), Denied> {
        if self.open {
            return Ok(());
        }
        match presented(headers).ok_or(Denied::Unauthenticated)? {
            Presented::Bearer(token) => self.current().check(&token, role),
            Presented::Session(id) => {
                let hash = sessions.resolve(&id).ok_or(Denied::Unauthenticated)?;
                self.current().check_hash(&hash, role)
            }
        }
    }

    /// Re-reads the tokens file if it changed since the last read; returns
    /// the number of tokens now in force, or `None` if nothing changed. A
    /// file that fails to parse leaves the previous tokens in force.
    pub fn reload_if_changed(&self) -> Result<Option<usize>, AuthError> {
        let Some(file) = self.file.as_deref() else {
            return Ok(None);
        };
        let now = file_stamp(file);
        let mut stamp = self.stamp.lock().expect("stamp lock");
        if now == *stamp {
            return Ok(None);
        }
        let tokens = AccessTokens::load(&self.inline, Some(file))?;
        let n = tokens.len();
        *self.current.write().expect("token lock") = Arc::new(tokens);
        *stamp = now;
        Ok(Some(n))
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// What a request presents to be let in.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    Bearer(String),
    Session(String),
}

/// `Authorization: Bearer …`, else the session cookie.
pub fn presented(headers: &HeaderMap) -> Option<Presented> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        return v
            .strip_prefix("Bearer ")
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .map(Presented::Bearer);
    }
    session_cookie(headers).map(Presented::Session)
}

/// The session id in the login cookie.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
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

/// Failed tokens per client (an IPv6 client by its /64, the client named by
/// trusted proxies' `X-Forwarded-For`): at most
/// [`TOKEN_FAILURES_PER_MINUTE`] in a clock minute, counting wrong tokens
/// at `/login`, as `Authorization: Bearer` on the API and exports, and on
/// Flight. Then every token from that client, right or wrong, is refused
/// until the minute is over (so a guesser learns nothing from a throttled
/// answer). Sessions already open are not refused: a session id is not
/// guessed, and a stale cookie is no attack.
#[derive(Debug, Default)]
pub struct TokenFailures {
    by_client: std::sync::Mutex<HashMap<std::net::IpAddr, (u64, u32)>>,
}

/// Wrong tokens a client may present in a minute.
pub const TOKEN_FAILURES_PER_MINUTE: u32 = 5;

fn minute_now() -> (u64, std::time::Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let minute = now.as_secs() / 60;
    let left = std::time::Duration::from_secs((minute + 1) * 60).saturating_sub(now);
    (minute, left)
}

impl TokenFailures {
    /// Judges a token `client` presented: `Err(wait)` without looking at
    /// it while the client is out of this minute's allowance; otherwise
    /// `verify`'s verdict, a wrong token (`Denied::Unauthenticated`)
    /// spending one of the allowance. The one way the login, the API and
    /// Flight judge a token.
    pub(crate) fn judge<T>(
        &self,
        client: std::net::IpAddr,
        verify: impl FnOnce() -> Result<T, Denied>,
    ) -> Result<Result<T, Denied>, std::time::Duration> {
        self.check(client)?;
        let verdict = verify();
        if matches!(verdict, Err(Denied::Unauthenticated)) {
            self.fail(client);
        }
        Ok(verdict)
    }

    /// `Err(wait)` if `client` used up this minute's failures.
    fn check(&self, client: std::net::IpAddr) -> Result<(), std::time::Duration> {
        let (minute, left) = minute_now();
        let by_client = self.by_client.lock().expect("token failures lock");
        match by_client.get(&client) {
            Some((m, n)) if *m == minute && *n >= TOKEN_FAILURES_PER_MINUTE => Err(left),
            _ => Ok(()),
        }
    }

    /// Counts one failure.
    fn fail(&self, client: std::net::IpAddr) {
        let (minute, _) = minute_now();
        let mut by_client = self.by_client.lock().expect("token failures lock");
        let entry = by_client.entry(client).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 += 1;
    }

    /// Forgets clients whose minute is over.
    pub fn forget_idle(&self) {
        let (minute, _) = minute_now();
        self.by_client
            .lock()
            .expect("token failures lock")
            .retain(|_, (m, _)| *m == minute);
    }
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
    fn tokens_fit_a_header_and_a_cookie() {
        assert!(valid_token("d3ea4faab535dcaace62e0ac17ecb021"));
        assert!(valid_token("abcDEF0123456789-_.~+/="));
        assert!(!valid_token("short"));
        assert!(!valid_token("has a space in it, sadly"));
        assert!(!valid_token("semicolon;Domain=example.org"));
        assert!(!valid_token(&"x".repeat(257)));
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

    fn registry(t: AccessTokens) -> TokenRegistry {
        TokenRegistry::new(
            vec![TokenEntry::for_token(
                "analyst-token",
                vec![Role::Analyst],
                "a",
            )],
            None,
            t,
        )
    }

    #[test]
    fn a_bearer_token_or_a_live_session_is_read() {
        let t = registry(tokens());
        let sessions = Sessions::default();
        let mut h = HeaderMap::new();
        assert_eq!(
            t.authorize(&h, Role::Analyst, &sessions),
            Err(Denied::Unauthenticated)
        );
        // The token itself in a cookie opens nothing: cookies hold sessions.
        h.insert(
            "cookie",
            HeaderValue::from_static("x=1; hushmap_session=analyst-token"),
        );
        assert_eq!(
            t.authorize(&h, Role::Analyst, &sessions),
            Err(Denied::Unauthenticated)
        );
        let id = sessions.create("analyst-token");
        assert!(!id.contains("analyst"));
        h.insert(
            "cookie",
            HeaderValue::from_str(&format!("x=1; hushmap_session={id}")).unwrap(),
        );
        assert_eq!(t.authorize(&h, Role::Analyst, &sessions), Ok(()));
        assert_eq!(
            t.authorize(&h, Role::Researcher, &sessions),
            Err(Denied::Forbidden)
        );
        // A header, when present, wins over the cookie.
        h.insert("authorization", HeaderValue::from_static("Bearer wrong"));
        assert_eq!(
            t.authorize(&h, Role::Analyst, &sessions),
            Err(Denied::Unauthenticated)
        );
        h.remove("authorization");
        // Logout ends it.
        sessions.end(&id);
        assert_eq!(
            t.authorize(&h, Role::Analyst, &sessions),
            Err(Denied::Unauthenticated)
        );
        // Open access only when nothing at all is configured.
        let open = TokenRegistry::new(vec![], None, AccessTokens::default());
        assert!(open.authorize(&h, Role::Researcher, &sessions).is_ok());
        assert!(
            registry(AccessTokens::default())
                .authorize(&h, Role::Researcher, &sessions)
                .is_err()
        );
    }

    #[test]
    fn a_revoked_token_ends_its_sessions() {
        let dir = std::env::temp_dir().join(format!("hushmap-revoke-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        let line = |t: &str| format!("{} analyst x\n", hex::encode(Sha256::digest(t)));
        std::fs::write(&path, line("kept-token") + &line("revoked-token")).unwrap();
        let reg = TokenRegistry::new(
            vec![],
            Some(path.clone()),
            AccessTokens::load(&[], Some(&path)).unwrap(),
        );
        let sessions = Sessions::default();
        let cookie = |id: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                "cookie",
                HeaderValue::from_str(&format!("hushmap_session={id}")).unwrap(),
            );
            h
        };
        let (kept, revoked) = (
            cookie(&sessions.create("kept-token")),
            cookie(&sessions.create("revoked-token")),
        );
        assert!(reg.authorize(&revoked, Role::Analyst, &sessions).is_ok());
        // Another length, so the change is seen within the same second.
        std::fs::write(&path, line("kept-token")).unwrap();
        assert_eq!(reg.reload_if_changed().unwrap(), Some(1));
        assert_eq!(
            reg.authorize(&revoked, Role::Analyst, &sessions),
            Err(Denied::Unauthenticated)
        );
        assert!(reg.authorize(&kept, Role::Analyst, &sessions).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_changed_tokens_file_takes_effect_and_a_broken_one_does_not() {
        let dir = std::env::temp_dir().join(format!("hushmap-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        let line =
            |t: &str, name: &str| TokenEntry::for_token(t, vec![Role::Analyst], name).to_line();
        std::fs::write(&path, line("first-token", "one")).unwrap();
        let initial = AccessTokens::load(&[], Some(&path)).unwrap();
        let reg = TokenRegistry::new(vec![], Some(path.clone()), initial);
        assert!(!reg.is_open());
        assert_eq!(reg.reload_if_changed().unwrap(), None);
        assert_eq!(reg.check("first-token", Role::Analyst), Ok(()));

        // Revoke the first, add a second (a different length, so the change
        // shows even where mtime is coarse).
        std::fs::write(&path, line("second-token", "number two")).unwrap();
        assert_eq!(reg.reload_if_changed().unwrap(), Some(1));
        assert_eq!(
            reg.check("first-token", Role::Analyst),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(reg.check("second-token", Role::Analyst), Ok(()));

        // A broken file keeps the tokens in force.
        std::fs::write(&path, "not a token line at all\n").unwrap();
        assert!(reg.reload_if_changed().is_err());
        assert_eq!(reg.check("second-token", Role::Analyst), Ok(()));

        // An emptied file locks everyone out; it never opens access.
        std::fs::write(&path, "").unwrap();
        assert_eq!(reg.reload_if_changed().unwrap(), Some(0));
        assert_eq!(
            reg.check("second-token", Role::Analyst),
            Err(Denied::Unauthenticated)
        );
        assert!(
            reg.authorize(&HeaderMap::new(), Role::Analyst, &Sessions::default())
                .is_err()
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
