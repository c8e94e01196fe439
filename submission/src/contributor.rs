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

/// Version prefix of a [`ContributorToken`]'s text.
const TOKEN_PREFIX: &str = "c1.";
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
    id: [u8; 16],
    day: u32,
    mac: [u8; 16],
}

impl std::fmt::Display for ContributorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut bytes = [0u8; TOKEN_BYTES];
        bytes[..16].copy_from_slice(&self.id);
        bytes[16..20].copy_from_slice(&self.day.to_be_bytes());
        bytes[20..].copy_from_slice(&self.mac);
        write!(f, "{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }
}

/// The keyed derivations of contributor keys and tokens.
#[derive(Clone)]
pub struct ContributorKeys {
    secret: Vec<u8>,
}

impl std::fmt::Debug for ContributorKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContributorKeys(redacted)")
    }
}

impl ContributorKeys {
    pub fn new(secret: &[u8]) -> ContributorKeys {
        ContributorKeys {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self, domain: &[u8], parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(domain);
        for part in parts {
            // Length-prefixed, so (a, bc) and (ab, c) differ.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    fn key(&self, domain: &[u8], parts: &[&[u8]]) -> ContributorKey {
        let digest = self.mac(domain, parts).finalize().into_bytes();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        ContributorKey(key)
    }

    /// A signed-in person: the verified issuer and subject of their ID token.
    pub fn subject_key(&self, issuer: &str, subject: &str) -> ContributorKey {
        self.key(SUBJECT_DOMAIN, &[issuer.as_bytes(), subject.as_bytes()])
    }

    /// A contributor id given in a batch input line (keyed with the run's
    /// own secret, so it links to nothing outside the run).
    pub fn batch_key(&self, id: &str) -> ContributorKey {
        self.key(BATCH_DOMAIN, &[id.as_bytes()])
    }

    /// The key proof-of-work challenges are MAC'd under: derived from the
    /// contributor secret, so every ingest replica accepts every replica's
    /// challenges.
    pub fn proof_of_work_key(&self) -> [u8; 32] {
        self.mac(PROOF_OF_WORK_DOMAIN, &[])
            .finalize()
            .into_bytes()
            .into()
    }

    fn token_mac(&self, id: &[u8; 16], day: u32) -> HmacSha256 {
        self.mac(TOKEN_DOMAIN, &[id, &day.to_be_bytes()])
    }

    /// A new anonymous identity, issued at `now_ms`: the token for the
    /// browser, and the contributor key it stands for.
    pub fn issue_token(&self, now_ms: i64) -> (ContributorToken, ContributorKey) {
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        let day = u32::try_from(now_ms.div_euclid(DAY_MS)).unwrap_or(0);
        let mut mac = [0u8; 16];
        mac.copy_from_slice(&self.token_mac(&id, day).finalize().into_bytes()[..16]);
        let key = self.key(ANONYMOUS_DOMAIN, &[&id]);
        (ContributorToken { id, day, mac }, key)
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
        let body = text
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(ContributorTokenError::Invalid)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| ContributorTokenError::Invalid)?;
        let bytes: [u8; TOKEN_BYTES] = bytes
            .try_into()
            .map_err(|_| ContributorTokenError::Invalid)?;
        let id: [u8; 16] = bytes[..16].try_into().expect("16 bytes");
        let day = u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes"));
        self.token_mac(&id, day)
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
        Ok(self.key(ANONYMOUS_DOMAIN, &[&id]))
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
        assert_eq!(k.subject_key("iss", "alice"), k.subject_key("iss", "alice"));
        assert_ne!(
            k.subject_key("iss", "alice"),
            k.subject_key("other", "alice")
        );
        assert_ne!(k.subject_key("is", "salice"), k.subject_key("iss", "alice"));
        assert_ne!(k.batch_key("alice"), k.subject_key("", "alice"));
        assert_ne!(k.proof_of_work_key()[..16], k.batch_key("").0);
    }
}
