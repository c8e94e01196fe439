//! A price on anonymous submissions: a stateless proof-of-work challenge.
//!
//! Anyone can submit anonymously, so someone who controls many clients can
//! paint a fake hotspot with many "people". A proof of work does not tell a
//! fake submission from a real one; it makes each one cost CPU time, which
//! a real person spends once (a fraction of a second on a phone, in a Web
//! Worker, while they read their result) and a forger spends for every
//! fake. Submissions with a valid ID token skip it: the identity provider
//! already bounds them to one person each.
//!
//! A challenge is `time ‖ nonce ‖ mac`: the issue time (seconds), 16 random
//! bytes and an HMAC-SHA-256 of both under a key held only in memory (a
//! restart invalidates outstanding challenges, which live two minutes
//! anyway). Ingest keeps no state for an issued challenge. A proof is a
//! counter `n` such that `SHA-256(challenge ‖ n as 8 little-endian bytes)`
//! starts with `difficulty` zero bits; it is checked before the body is
//! read. A challenge is single-use: a redeemed one is remembered until it
//! expires (in this process; with several ingest replicas, once per
//! replica at most, which multiplies a forger's discount by the replica
//! count, not more). The memory of redeemed challenges forgets them in
//! order of expiry ([`RedeemedChallenges`]), so a redemption costs the same
//! with a hundred thousand live proofs as with ten: no walk of the whole
//! set under its lock, which a forger could otherwise buy with proofs.
//!
//! ```
//! use hushmap_ingest::proof_of_work::{Proofs, solve};
//! let proofs = Proofs::new(b"a key of at least thirty-two bytes!!", 8, 120);
//! let challenge = proofs.issue(1_000);
//! let counter = solve(&challenge, 8);
//! assert!(proofs.redeem(&format!("{challenge}.{counter}"), 1_010).is_ok());
//! // Single use.
//! assert!(proofs.redeem(&format!("{challenge}.{counter}"), 1_011).is_err());
//! ```

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

/// The request header carrying a solved challenge: `<challenge>.<counter>`.
pub const PROOF_HEADER: &str = "hushmap-proof";

const RANDOM_LEN: usize = 16;
const MAC_LEN: usize = 16;
const CHALLENGE_LEN: usize = 8 + RANDOM_LEN + MAC_LEN;

/// Why a proof was refused. The text is safe to send to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("the proof of work is not `<challenge>.<counter>` of a challenge from this service")]
    Malformed,
    #[error("the challenge was not issued by this service")]
    Forged,
    #[error("the challenge has expired; fetch a new one")]
    Expired,
    #[error("the proof of work does not meet the difficulty")]
    Insufficient,
    #[error("the challenge was already used; fetch a new one")]
    Reused,
}

/// Issues and checks challenges.
pub struct Proofs {
    key: Vec<u8>,
    difficulty: u8,
    lifetime_secs: u64,
    redeemed: Mutex<RedeemedChallenges>,
}

/// The random parts of redeemed challenges that have not expired yet.
///
/// A map for the replay check and a min-heap of expiry times beside it:
/// each redemption first forgets what has expired, from the heap's top, so
/// every entry is examined once when it is added and once when it is
/// forgotten. Amortised O(log n) a redemption, whatever the number of live
/// proofs (the earlier map was swept whole on every redemption past 4,096
/// entries).
#[derive(Debug, Default)]
pub struct RedeemedChallenges {
    expiry: HashMap<[u8; RANDOM_LEN], u64>,
    by_expiry: BinaryHeap<Reverse<(u64, [u8; RANDOM_LEN])>>,
    /// Entries looked at while forgetting, over the set's life: what the
    /// test holds to "once each", rather than a wall-clock time.
    examined: u64,
}

impl RedeemedChallenges {
    /// Records `id` as redeemed until `expires`, after forgetting what has
    /// expired at `now_secs`; false if it was already redeemed.
    pub fn insert(&mut self, id: [u8; RANDOM_LEN], expires: u64, now_secs: u64) -> bool {
        self.forget_expired(now_secs);
        if self.expiry.contains_key(&id) {
            return false;
        }
        self.expiry.insert(id, expires);
        self.by_expiry.push(Reverse((expires, id)));
        true
    }

    /// Forgets every challenge that expired at or before `now_secs`.
    pub fn forget_expired(&mut self, now_secs: u64) {
        while let Some(Reverse((expires, id))) = self.by_expiry.peek().copied() {
            if expires > now_secs {
                break;
            }
            self.examined += 1;
            self.by_expiry.pop();
            self.expiry.remove(&id);
        }
    }

    /// Challenges remembered.
    pub fn len(&self) -> usize {
        self.expiry.len()
    }

    pub fn is_empty(&self) -> bool {
        self.expiry.is_empty()
    }

    /// Entries examined while forgetting, since the set was made.
    pub fn examined(&self) -> u64 {
        self.examined
    }
}

impl Proofs {
    /// `difficulty`: leading zero bits a proof's hash needs (expected work
    /// 2^difficulty hashes). `lifetime_secs`: how long a challenge may be
    /// redeemed after it was issued.
    pub fn new(key: &[u8], difficulty: u8, lifetime_secs: u64) -> Proofs {
        Proofs {
            key: key.to_vec(),
            difficulty,
            lifetime_secs,
            redeemed: Mutex::new(RedeemedChallenges::default()),
        }
    }

    pub fn difficulty(&self) -> u8 {
        self.difficulty
    }

    pub fn lifetime_secs(&self) -> u64 {
        self.lifetime_secs
    }

    /// The MAC of a challenge's head (time and random part), before
    /// truncation.
    fn mac(&self, head: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"hushmap proof-of-work challenge v1");
        mac.update(head);
        mac
    }

    /// A fresh challenge at `now_secs`, base64url.
    pub fn issue(&self, now_secs: u64) -> String {
        let mut bytes = Vec::with_capacity(CHALLENGE_LEN);
        bytes.extend_from_slice(&now_secs.to_be_bytes());
        bytes.extend_from_slice(&rand::random::<[u8; RANDOM_LEN]>());
        let mac = self.mac(&bytes).finalize().into_bytes();
        bytes.extend_from_slice(&mac[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Checks `<challenge>.<counter>` at `now_secs` and marks the challenge
    /// used.
    pub fn redeem(&self, proof: &str, now_secs: u64) -> Result<(), ProofError> {
        let (challenge, counter) = proof.trim().split_once('.').ok_or(ProofError::Malformed)?;
        let counter: u64 = counter.parse().map_err(|_| ProofError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(challenge)
            .map_err(|_| ProofError::Malformed)?;
        if bytes.len() != CHALLENGE_LEN {
            return Err(ProofError::Malformed);
        }
        let (head, mac) = bytes.split_at(8 + RANDOM_LEN);
        // Constant time: a MAC compared byte by byte leaks its prefix.
        self.mac(head)
            .verify_truncated_left(mac)
            .map_err(|_| ProofError::Forged)?;
        let issued = u64::from_be_bytes(head[..8].try_into().expect("8 bytes"));
        let expires = issued.saturating_add(self.lifetime_secs);
        if now_secs >= expires || issued > now_secs.saturating_add(5) {
            return Err(ProofError::Expired);
        }
        if leading_zero_bits(&work(&bytes, counter)) < u32::from(self.difficulty) {
            return Err(ProofError::Insufficient);
        }
        let id: [u8; RANDOM_LEN] = head[8..].try_into().expect("16 bytes");
        let mut redeemed = self.redeemed.lock().expect("redeemed lock");
        if !redeemed.insert(id, expires, now_secs) {
            return Err(ProofError::Reused);
        }
        Ok(())
    }

    /// Forgets redeemed challenges that expired.
    pub fn forget_expired(&self, now_secs: u64) {
        self.redeemed
            .lock()
            .expect("redeemed lock")
            .forget_expired(now_secs);
    }

    /// Challenges redeemed and not yet expired, and the entries examined
    /// while forgetting so far (for the tests).
    pub fn redeemed_stats(&self) -> (usize, u64) {
        let redeemed = self.redeemed.lock().expect("redeemed lock");
        (redeemed.len(), redeemed.examined())
    }
}

fn work(challenge: &[u8], counter: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(challenge);
    h.update(counter.to_le_bytes());
    h.finalize().into()
}

fn leading_zero_bits(hash: &[u8; 32]) -> u32 {
    let mut bits = 0;
    for byte in hash {
        if *byte == 0 {
            bits += 8;
        } else {
            return bits + byte.leading_zeros();
        }
    }
    bits
}

/// Finds a counter for `challenge` (what the page's worker does; here for
/// tests, benchmarks and non-browser clients).
pub fn solve(challenge: &str, difficulty: u8) -> u64 {
    let bytes = URL_SAFE_NO_PAD.decode(challenge).unwrap_or_default();
    (0u64..)
        .find(|n| leading_zero_bits(&work(&bytes, *n)) >= u32::from(difficulty))
        .expect("a counter exists")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"proof-of-work-test-key-0123456789abcdef";

    #[test]
    fn a_solved_challenge_is_accepted_once() {
        let p = Proofs::new(KEY, 10, 120);
        let c = p.issue(5_000);
        let n = solve(&c, 10);
        assert_eq!(p.redeem(&format!("{c}.{n}"), 5_001), Ok(()));
        assert_eq!(
            p.redeem(&format!("{c}.{n}"), 5_002),
            Err(ProofError::Reused)
        );
    }

    #[test]
    fn forged_expired_lazy_and_garbled_proofs_are_refused() {
        let p = Proofs::new(KEY, 12, 120);
        let c = p.issue(5_000);
        let n = solve(&c, 12);
        // Another key's challenge.
        let other = Proofs::new(b"another-key-0123456789abcdef-0123456789", 12, 120);
        let f = other.issue(5_000);
        assert_eq!(
            p.redeem(&format!("{f}.{}", solve(&f, 12)), 5_001),
            Err(ProofError::Forged)
        );
        // A changed time, a changed random part: the MAC no longer fits.
        let mut bytes = URL_SAFE_NO_PAD.decode(&c).unwrap();
        bytes[7] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(
            p.redeem(&format!("{tampered}.{n}"), 5_001),
            Err(ProofError::Forged)
        );
        assert_eq!(
            p.redeem(&format!("{c}.{n}"), 5_120),
            Err(ProofError::Expired)
        );
        // A counter that does not meet the difficulty (the first that fails).
        let lazy = (0u64..)
            .find(|k| leading_zero_bits(&work(&URL_SAFE_NO_PAD.decode(&c).unwrap(), *k)) < 12)
            .unwrap();
        assert_eq!(
            p.redeem(&format!("{c}.{lazy}"), 5_001),
            Err(ProofError::Insufficient)
        );
        for garbled in ["", "abc", "abc.1", &format!("{c}.x"), c.as_str()] {
            assert_eq!(
                p.redeem(garbled, 5_001),
                Err(ProofError::Malformed),
                "{garbled}"
            );
        }
        assert_eq!(p.redeem(&format!("{c}.{n}"), 5_001), Ok(()));
    }

    /// The attack: fill the replay memory with live proofs (a forger with
    /// CPU to spare can), then make every later redemption pay for all of
    /// them under the one lock. Each remembered challenge must be examined
    /// once when forgotten, never once per redemption.
    #[test]
    fn a_redemption_never_walks_the_live_proofs() {
        let p = Proofs::new(KEY, 0, 120);
        let mut now = 10_000;
        // 100,000 live proofs: issued over 100 s, each alive two minutes.
        for i in 0..100_000u64 {
            now = 10_000 + i / 1_000;
            let c = p.issue(now);
            assert_eq!(p.redeem(&format!("{c}.0"), now), Ok(()));
        }
        assert_eq!(p.redeemed_stats(), (100_000, 0));
        // 10,000 more redemptions while all of them live: nothing is
        // examined (the old sweep looked at 10^9 entries here).
        for _ in 0..10_000 {
            let c = p.issue(now);
            assert_eq!(p.redeem(&format!("{c}.0"), now), Ok(()));
        }
        assert_eq!(p.redeemed_stats(), (110_000, 0));
        // Time passes: the first 60 seconds' proofs expire and are each
        // examined once as they go, by the redemptions that follow.
        now = 10_000 + 120 + 59;
        for _ in 0..1_000 {
            let c = p.issue(now);
            assert_eq!(p.redeem(&format!("{c}.0"), now), Ok(()));
        }
        let (live, examined) = p.redeemed_stats();
        assert_eq!(examined, 60_000, "each expired proof examined once");
        assert_eq!(live, 110_000 - 60_000 + 1_000);
        // A replay of a live one is still refused; of a forgotten one, it
        // has expired anyway.
        let c = p.issue(now);
        assert_eq!(p.redeem(&format!("{c}.0"), now), Ok(()));
        assert_eq!(
            p.redeem(&format!("{c}.0"), now + 1),
            Err(ProofError::Reused)
        );
        p.forget_expired(now + 1_000);
        assert_eq!(p.redeemed_stats().0, 0);
        assert_eq!(
            p.redeem(&format!("{c}.0"), now + 1_000),
            Err(ProofError::Expired)
        );
    }

    #[test]
    fn the_expected_work_doubles_with_each_bit() {
        // Mean counters over many challenges: about 2^d.
        let p = Proofs::new(KEY, 0, 120);
        let mean = |d: u8| {
            let total: u64 = (0..200).map(|i| solve(&p.issue(i), d) + 1).sum();
            total as f64 / 200.0
        };
        let (m6, m8) = (mean(6), mean(8));
        assert!((32.0..128.0).contains(&m6), "{m6}");
        assert!((128.0..512.0).contains(&m8), "{m8}");
    }
}
