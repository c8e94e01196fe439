//! Who a submission counts as: the contributor key bounding works on.
//!
//! The unit of privacy is a person. Downstream of ingest a person is a
//! [`ContributorKey`]: a keyed hash (HMAC-SHA256 under the contributor
//! secret, truncated to 128 bits) of
//!
//! - a signed-in user's identity: the ID token's issuer and `sub` claim
//!   (verified in [`identity`](crate::identity)); the same person is the same
//!   key in every window, and nobody without a valid token from the
//!   identity provider can be them;
//! - or, for anonymous use, the random id inside a [`ContributorToken`]
//!   that ingest issued to that browser: the same browser is the same key
//!   as long as it sends its token back. Nobody can make a token ingest did
//!   not issue (it is MAC'd), so a forged or altered one is refused, never
//!   taken as a new identity.
//!
//! Each derivation has its own domain-separation prefix, so no id of one
//! kind can collide with one of another, nor with the partition keys.
//!
//! ## Rotating the secret
//!
//! The secret is a keyring ([`ContributorKeys::parse`]): entries with a
//! key id, each but the oldest in force from a time. Rotating never makes
//! one person two contributors within a window:
//!
//! - an anonymous token names the key that issued it (`c2.<id>.…`; tokens
//!   of the secret before key ids, `c1.…`, are key `0`), and its
//!   contributor is derived under that key for as long as the token lives,
//!   so a returning browser is the same contributor before and after;
//! - a signed-in person's key, and every partition key, are derived under
//!   the key in force at the *window's* start, so they change only at a
//!   window boundary, whenever in the window the new key came into force;
//! - new tokens are issued under the newest key in force.
//!
//! An old key stays in the keyring while tokens it issued live
//! (`identity.contributor_token_max_age_days`); removing it sooner (the
//! key leaked) makes its browsers start over as new contributors, counted
//! twice in that window, which is the price of cutting off a leaked key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use hushmap_schema::ContributorKey;
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const SUBJECT_DOMAIN: &[u8] = b"hushmap.contributor.subject.v1\0";
const ANONYMOUS_DOMAIN: &[u8] = b"hushmap.contributor.anonymous.v1\0";
const TOKEN_DOMAIN: &[u8] = b"hushmap.contributor-token.v1\0";
const BATCH_DOMAIN: &[u8] = b"hushmap.contributor.batch.v1\0";
const PROOF_OF_WORK_DOMAIN: &[u8] = b"hushmap.proof-of-work-key.v1\0";

/// Version prefix of a [`ContributorToken`]'s text under the key of id
/// `0` (the secret before key ids): `c1.<base64>`.
const TOKEN_PREFIX: &str = "c1.";
/// Prefix of a token under any other key: `c2.<key id>.<base64>`.
const KEYED_TOKEN_PREFIX: &str = "c2.";
/// The id of a secret given alone (without key ids).
pub const LEGACY_KEY_ID: &str = "0";
/// The shortest secret accepted, bytes.
pub const MIN_SECRET_BYTES: usize = 32;
/// id (16) ‖ issue day (4, big endian) ‖ MAC (16).
const TOKEN_BYTES: usize = 16 + 4 + 16;
const DAY_MS: i64 = 86_400_000;

/// Why a contributor token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ContributorTokenError {
    #[error("the contributor token is not one this service issued")]
    Invalid,
    #[error("the contributor token has expired")]
    Expired,
}

/// An anonymous browser's identity, as ingest issued it: a random 128-bit
/// id, the UTC day it was issued (no finer time), and a MAC over both.
/// It carries no personal data.
///
/// ```
/// use hushmap_submission::contributor::ContributorKeys;
/// let keys = ContributorKeys::new(b"0123456789abcdef0123456789abcdef");
/// let (token, key) = keys.issue_token(1_764_000_000_000);
/// // The browser sends it back: the same contributor.
/// assert_eq!(keys.open_token(&token.to_string(), 1_764_000_000_000, 365), Ok(key));
/// // One character changed: refused, not a new identity.
/// let mut forged = token.to_string();
/// let last = forged.pop().unwrap();
/// forged.push(if last == 'A' { 'B' } else { 'A' });
/// assert!(keys.open_token(&forged, 1_764_000_000_000, 365).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContributorToken {
    key_id: String,
    id: [u8; 16],
    day: u32,
    mac: [u8; 16],
}

impl ContributorToken {
    /// The id of the key that issued it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

impl std::fmt::Display for ContributorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut bytes = [0u8; TOKEN_BYTES];
        bytes[..16].copy_from_slice(&self.id);
        bytes[16..20].copy_from_slice(&self.day.to_be_bytes());
        bytes[20..].copy_from_slice(&self.mac);
        let body = URL_SAFE_NO_PAD.encode(bytes);
        if self.key_id == LEGACY_KEY_ID {
            write!(f, "{TOKEN_PREFIX}{body}")
        } else {
            write!(f, "{KEYED_TOKEN_PREFIX}{}.{body}", self.key_id)
        }
    }
}

/// Why a contributor keyring was refused (never quoting a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContributorKeyringError {
    #[error("contributor keyring entry {0}: expected ID=SECRET or ID@FROM=SECRET")]
    Entry(usize),
    #[error("contributor key {0:?}: a key id is 1 to 16 characters of a-z, 0-9 and -")]
    KeyId(String),
    #[error("contributor key {0:?}: the secret is shorter than {MIN_SECRET_BYTES} bytes")]
    ShortSecret(String),
    #[error("contributor key {id:?}: {from:?} is not an RFC 3339 time (2026-12-09T00:00:00Z)")]
    From { id: String, from: String },
    #[error("contributor key id {0:?} is listed twice")]
    DuplicateId(String),
    #[error(
        "the contributor keyring needs exactly one key without @FROM (the oldest, in force \
         since always); every later key names when it comes into force"
    )]
    Oldest,
    #[error("contributor keys {0:?} and {1:?} come into force at the same time")]
    SameTime(String, String),
}

/// One secret of the keyring.
struct KeyEntry {
    id: String,
    /// In force from (ms since the epoch); `i64::MIN` for the oldest.
    from_ms: i64,
    secret: Vec<u8>,
}

/// The keyed derivations of contributor keys and tokens, under a keyring
/// of secrets (see the module's "Rotating the secret").
#[derive(Clone)]
pub struct ContributorKeys {
    /// Oldest first (ascending `from_ms`).
    entries: std::sync::Arc<[KeyEntry]>,
}

impl std::fmt::Debug for ContributorKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContributorKeys(redacted)")
    }
}

fn mac(secret: &[u8], domain: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(domain);
    for part in parts {
        // Length-prefixed, so (a, bc) and (ab, c) differ.
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac
}

fn derive(secret: &[u8], domain: &[u8], parts: &[&[u8]]) -> ContributorKey {
    let digest = mac(secret, domain, parts).finalize().into_bytes();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    ContributorKey(key)
}

fn is_key_id(id: &str) -> bool {
    (1..=16).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl ContributorKeys {
    /// One secret, without key ids (key `0`, in force since always).
    pub fn new(secret: &[u8]) -> ContributorKeys {
        ContributorKeys {
            entries: vec![KeyEntry {
                id: LEGACY_KEY_ID.to_string(),
                from_ms: i64::MIN,
                secret: secret.to_vec(),
            }]
            .into(),
        }
    }

    /// The keyring as configured (`HUSHMAP_CONTRIBUTOR_SECRET`): either one
    /// secret (key `0`), or entries separated by commas or white space,
    /// each `ID=SECRET` (the oldest key, exactly one) or
    /// `ID@FROM=SECRET` (in force from `FROM`, RFC 3339). Key ids are 1
    /// to 16 characters of `a-z0-9-`; secrets at least 32 bytes without
    /// commas or white space. The secret before key ids is listed as `0`.
    ///
    /// ```
    /// use hushmap_submission::contributor::ContributorKeys;
    /// let old = "0123456789abcdef0123456789abcdef";
    /// let new = "fedcba9876543210fedcba9876543210";
    /// let keys = ContributorKeys::parse(&format!("0={old}, k2@2026-12-09T00:00:00Z={new}")).unwrap();
    /// let (token, _) = keys.issue_token(1_796_774_400_000); // 2026-12-09
    /// assert!(token.to_string().starts_with("c2.k2."));
    /// // A secret alone is key 0, as before key ids.
    /// assert_eq!(ContributorKeys::parse(old).unwrap().key_ids(), vec!["0"]);
    /// ```
    pub fn parse(raw: &str) -> Result<ContributorKeys, ContributorKeyringError> {
        let text = raw.trim();
        let items: Vec<&str> = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .collect();
        // A keyring only if its first entry reads as one: a key id before
        // `=` or `@`. Otherwise the whole value is one secret.
        let looks_keyed = items.first().is_some_and(|first| {
            first
                .split_once(['=', '@'])
                .is_some_and(|(id, _)| is_key_id(id))
        });
        if !looks_keyed {
            // The value as given, spaces and all: a secret from before key
            // ids keys exactly as it did.
            if raw.len() < MIN_SECRET_BYTES {
                return Err(ContributorKeyringError::ShortSecret(
                    LEGACY_KEY_ID.to_string(),
                ));
            }
            return Ok(ContributorKeys::new(raw.as_bytes()));
        }
        let mut entries: Vec<KeyEntry> = Vec::new();
        for (n, item) in items.iter().enumerate() {
            let (head, secret) = item
                .split_once('=')
                .ok_or(ContributorKeyringError::Entry(n + 1))?;
            let (id, from) = match head.split_once('@') {
                Some((id, from)) => (id, Some(from)),
                None => (head, None),
            };
            if !is_key_id(id) {
                return Err(ContributorKeyringError::KeyId(id.to_string()));
            }
            if secret.len() < MIN_SECRET_BYTES {
                return Err(ContributorKeyringError::ShortSecret(id.to_string()));
            }
            let from_ms = match from {
                None => i64::MIN,
                Some(from) => {
                    let t = time::OffsetDateTime::parse(
                        from,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .map_err(|_| ContributorKeyringError::From {
                        id: id.to_string(),
                        from: from.to_string(),
                    })?;
                    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
                }
            };
            if entries.iter().any(|e| e.id == id) {
                return Err(ContributorKeyringError::DuplicateId(id.to_string()));
            }
            if let Some(e) = entries
                .iter()
                .find(|e| e.from_ms == from_ms && from.is_some())
            {
                return Err(ContributorKeyringError::SameTime(
                    e.id.clone(),
                    id.to_string(),
                ));
            }
            entries.push(KeyEntry {
                id: id.to_string(),
                from_ms,
                secret: secret.as_bytes().to_vec(),
            });
        }
        if entries.iter().filter(|e| e.from_ms == i64::MIN).count() != 1 {
            return Err(ContributorKeyringError::Oldest);
        }
        entries.sort_by_key(|e| e.from_ms);
        Ok(ContributorKeys {
            entries: entries.into(),
        })
    }

    /// The key ids, oldest first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.id.as_str()).collect()
    }

    /// The newest key in force at `t_ms`.
    fn in_force(&self, t_ms: i64) -> &KeyEntry {
        self.entries
            .iter()
            .rev()
            .find(|e| e.from_ms <= t_ms)
            .unwrap_or(&self.entries[0])
    }

    /// The secret that keys a window starting at `window_start_ms`: the
    /// newest in force at the window's start, so that a key coming into
    /// force mid-window changes nothing until the next window.
    pub fn window_secret(&self, window_start_ms: i64) -> &[u8] {
        &self.in_force(window_start_ms).secret
    }

    /// A signed-in person in the window starting at `window_start_ms`: the
    /// verified issuer and subject of their ID token, under the window's
    /// key.
    pub fn subject_key(&self, issuer: &str, subject: &str, window_start_ms: i64) -> ContributorKey {
        derive(
            self.window_secret(window_start_ms),
            SUBJECT_DOMAIN,
            &[issuer.as_bytes(), subject.as_bytes()],
        )
    }

    /// A contributor id given in a batch input line (keyed with the run's
    /// own secret, so it links to nothing outside the run).
    pub fn batch_key(&self, id: &str) -> ContributorKey {
        derive(&self.entries[0].secret, BATCH_DOMAIN, &[id.as_bytes()])
    }

    /// The key proof-of-work challenges are MAC'd under: derived from the
    /// contributor secret, so every ingest replica accepts every replica's
    /// challenges.
    pub fn proof_of_work_key(&self, now_ms: i64) -> [u8; 32] {
        mac(&self.in_force(now_ms).secret, PROOF_OF_WORK_DOMAIN, &[])
            .finalize()
            .into_bytes()
            .into()
    }

    /// The MAC of a token: key `0`'s as before key ids; any other key's
    /// covers its id too, so a token cannot be moved to another key.
    fn token_mac(entry: &KeyEntry, id: &[u8; 16], day: u32) -> HmacSha256 {
        if entry.id == LEGACY_KEY_ID {
            mac(&entry.secret, TOKEN_DOMAIN, &[id, &day.to_be_bytes()])
        } else {
            mac(
                &entry.secret,
                TOKEN_DOMAIN,
                &[entry.id.as_bytes(), id, &day.to_be_bytes()],
            )
        }
    }

    /// A new anonymous identity, issued at `now_ms` under the newest key in
    /// force: the token for the browser, and the contributor key it stands
    /// for.
    pub fn issue_token(&self, now_ms: i64) -> (ContributorToken, ContributorKey) {
        let entry = self.in_force(now_ms);
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        let day = u32::try_from(now_ms.div_euclid(DAY_MS)).unwrap_or(0);
        let mut mac = [0u8; 16];
        mac.copy_from_slice(&Self::token_mac(entry, &id, day).finalize().into_bytes()[..16]);
        let key = derive(&entry.secret, ANONYMOUS_DOMAIN, &[&id]);
        (
            ContributorToken {
                key_id: entry.id.clone(),
                id,
                day,
                mac,
            },
            key,
        )
    }

    /// The contributor a token sent back stands for: refused when it is not
    /// one of ours (MAC checked in constant time), or older than
    /// `max_age_days`, or issued in the future.
    pub fn open_token(
        &self,
        text: &str,
        now_ms: i64,
        max_age_days: u32,
    ) -> Result<ContributorKey, ContributorTokenError> {
        let (key_id, body) = match text.strip_prefix(TOKEN_PREFIX) {
            Some(body) => (LEGACY_KEY_ID, body),
            None => text
                .strip_prefix(KEYED_TOKEN_PREFIX)
                .and_then(|rest| rest.split_once('.'))
                .ok_or(ContributorTokenError::Invalid)?,
        };
        // A key no longer (or never) in the keyring: not one we can vouch
        // for, so the browser starts over.
        let entry = self
            .entries
            .iter()
            .find(|e| e.id == key_id)
            .ok_or(ContributorTokenError::Invalid)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| ContributorTokenError::Invalid)?;
        let bytes: [u8; TOKEN_BYTES] = bytes
            .try_into()
            .map_err(|_| ContributorTokenError::Invalid)?;
        let id: [u8; 16] = bytes[..16].try_into().expect("16 bytes");
        let day = u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes"));
        Self::token_mac(entry, &id, day)
            .verify_truncated_left(&bytes[20..])
            .map_err(|_| ContributorTokenError::Invalid)?;
        let today = now_ms.div_euclid(DAY_MS);
        let age = today - i64::from(day);
        // A day of slack for clocks; a token from further ahead was not
        // issued by a clock we trust.
        if age < -1 {
            return Err(ContributorTokenError::Invalid);
        }
        if age > i64::from(max_age_days) {
            return Err(ContributorTokenError::Expired);
        }
        Ok(derive(&entry.secret, ANONYMOUS_DOMAIN, &[&id]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000;

    fn keys() -> ContributorKeys {
        ContributorKeys::new(b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn a_token_sent_back_is_the_same_contributor_and_tokens_differ() {
        let k = keys();
        let (t1, key1) = k.issue_token(NOW);
        let (t2, key2) = k.issue_token(NOW);
        assert_ne!(key1, key2);
        assert_ne!(t1.to_string(), t2.to_string());
        assert_eq!(
            k.open_token(&t1.to_string(), NOW + 3 * DAY_MS, 365),
            Ok(key1)
        );
        // No time finer than a day, no personal data: 16 random bytes, a
        // day number and a MAC.
        assert_eq!(t1.day as i64, NOW / DAY_MS);
        assert_eq!(t1.to_string().len(), TOKEN_PREFIX.len() + 48);
    }

    #[test]
    fn forged_altered_foreign_or_old_tokens_are_refused() {
        let k = keys();
        let (t, _) = k.issue_token(NOW);
        let text = t.to_string();
        // Every single-character change is refused.
        for i in TOKEN_PREFIX.len()..text.len() {
            for c in ['A', 'z', '0', '-'] {
                let mut altered: Vec<char> = text.chars().collect();
                if altered[i] == c {
                    continue;
                }
                altered[i] = c;
                let altered: String = altered.into_iter().collect();
                assert_eq!(
                    k.open_token(&altered, NOW, 365),
                    Err(ContributorTokenError::Invalid),
                    "{altered}"
                );
            }
        }
        // Another deployment's secret: not ours.
        let other = ContributorKeys::new(b"fedcba9876543210fedcba9876543210");
        assert!(other.open_token(&text, NOW, 365).is_err());
        // A made-up one, an empty one, a wrong prefix.
        for bad in ["", "c1.", "c2.AAAA", "c1.!!!!", &format!("x{text}")] {
            assert_eq!(
                k.open_token(bad, NOW, 365),
                Err(ContributorTokenError::Invalid)
            );
        }
        // Too old, and from the future.
        assert_eq!(
            k.open_token(&text, NOW + 366 * DAY_MS, 365),
            Err(ContributorTokenError::Expired)
        );
        assert_eq!(
            k.open_token(&text, NOW - 2 * DAY_MS, 365),
            Err(ContributorTokenError::Invalid)
        );
    }

    #[test]
    fn kinds_of_identity_never_collide() {
        let k = keys();
        let w = NOW;
        assert_eq!(
            k.subject_key("iss", "alice", w),
            k.subject_key("iss", "alice", w)
        );
        assert_ne!(
            k.subject_key("iss", "alice", w),
            k.subject_key("other", "alice", w)
        );
        assert_ne!(
            k.subject_key("is", "salice", w),
            k.subject_key("iss", "alice", w)
        );
        assert_ne!(k.batch_key("alice"), k.subject_key("", "alice", w));
        assert_ne!(k.proof_of_work_key(NOW)[..16], k.batch_key("").0);
    }

    const OLD: &str = "0123456789abcdef0123456789abcdef";
    const NEW: &str = "fedcba9876543210fedcba9876543210";
    /// 20 minutes into the hour of NOW (2025-11-24T16:00:00Z).
    const ROTATION: &str = "2025-11-24T16:20:00Z";

    #[test]
    fn a_rotation_keeps_every_contributor_within_a_window() {
        let before = ContributorKeys::parse(&format!("0={OLD}")).unwrap();
        let after = ContributorKeys::parse(&format!("k2@{ROTATION}={NEW} 0={OLD}")).unwrap();
        assert_eq!(after.key_ids(), vec!["0", "k2"]);
        let rotation_ms = NOW + 20 * 60_000;
        let hour = 3_600_000;
        let window = rotation_ms.div_euclid(hour) * hour;
        assert!(window < rotation_ms, "the rotation falls mid-window");
        // A browser issued a token before: after the rotation it is the
        // same contributor, whatever the time.
        let (token, key) = before.issue_token(window);
        assert_eq!(token.key_id(), "0");
        assert!(token.to_string().starts_with("c1."));
        for at in [rotation_ms, rotation_ms + 30 * DAY_MS] {
            assert_eq!(after.open_token(&token.to_string(), at, 365), Ok(key));
        }
        // A signed-in person: the same key in the window of the rotation,
        // a new one only from the next window on.
        let person = before.subject_key("iss", "alice", window);
        assert_eq!(after.subject_key("iss", "alice", window), person);
        assert_ne!(after.subject_key("iss", "alice", window + hour), person);
        assert_eq!(after.window_secret(window), OLD.as_bytes());
        assert_eq!(after.window_secret(window + hour), NEW.as_bytes());
        // New browsers get the new key's tokens from the rotation on.
        let (early, _) = after.issue_token(rotation_ms - 1);
        assert_eq!(early.key_id(), "0");
        let (late, late_key) = after.issue_token(rotation_ms);
        assert_eq!(late.key_id(), "k2");
        assert!(late.to_string().starts_with("c2.k2."));
        assert_eq!(
            after.open_token(&late.to_string(), rotation_ms, 365),
            Ok(late_key)
        );
        // The keyring without the old key: its tokens start over.
        let only_new = ContributorKeys::parse(&format!("k2={NEW}")).unwrap();
        assert_eq!(
            only_new.open_token(&token.to_string(), rotation_ms, 365),
            Err(ContributorTokenError::Invalid)
        );
        // A token moved to another key id, or naming an unknown one: refused.
        let text = late.to_string();
        for forged in [
            text.replacen("c2.k2.", "c2.k3.", 1),
            text.replacen("c2.k2.", "c1.", 1),
            text.replacen("c2.k2.", "c2.0.", 1),
            text.replacen("c2.k2.", "c2..", 1),
        ] {
            assert_eq!(
                after.open_token(&forged, rotation_ms, 365),
                Err(ContributorTokenError::Invalid),
                "{forged}"
            );
        }
    }

    #[test]
    fn a_broken_keyring_is_refused_without_quoting_a_secret() {
        use ContributorKeyringError as E;
        let t = "2026-12-09T00:00:00Z";
        for (text, want) in [
            (format!("0={OLD},0@{t}={NEW}"), E::DuplicateId("0".into())),
            (format!("0@{t}={OLD}"), E::Oldest),
            (format!("0={OLD},k2={NEW}"), E::Oldest),
            (
                format!("0={OLD},k2@yesterday={NEW}"),
                E::From {
                    id: "k2".into(),
                    from: "yesterday".into(),
                },
            ),
            (format!("0={OLD},k2@{t}=short"), E::ShortSecret("k2".into())),
            (
                format!("0={OLD},k2@{t}={NEW},k3@{t}={NEW}"),
                E::SameTime("k2".into(), "k3".into()),
            ),
            (format!("0={OLD},K2@{t}={NEW}"), E::KeyId("K2".into())),
            (format!("0={OLD},{NEW}"), E::Entry(2)),
            ("short".to_string(), E::ShortSecret("0".into())),
        ] {
            let err = ContributorKeys::parse(&text)
                .err()
                .unwrap_or_else(|| panic!("{text} accepted"));
            assert_eq!(err, want, "{text}");
            assert!(!err.to_string().contains(OLD) && !err.to_string().contains(NEW));
        }
        // One secret alone, as every deployment before key ids has it.
        assert_eq!(ContributorKeys::parse(OLD).unwrap().key_ids(), vec!["0"]);
        assert_eq!(
            ContributorKeys::parse(&format!("  {OLD}==  "))
                .unwrap()
                .key_ids(),
            vec!["0"]
        );
    }
}
