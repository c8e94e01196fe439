//! Sealed records: how a [`CoarseRecord`] travels on the submissions topic.
//!
//! Coarse records carry nothing precise, but a leaked topic or broker disk
//! should still show nothing readable: ingest seals each record with
//! XChaCha20-Poly1305 under a key that ingest and the aggregator load from
//! their configuration, and the aggregator opens it. Keys have numeric ids so
//! they can be rotated: the first key of a [`PayloadKeyring`] seals, every key
//! in it opens. To rotate, give the aggregator `new,old`, then ingest `new`,
//! and drop `old` once the topic's retention has passed.
//!
//! Envelope (version `0xA1`, 84 bytes):
//!
//! | offset | size | field                                          |
//! |-------:|-----:|------------------------------------------------|
//! | 0      | 1    | envelope version (`0xA1`)                      |
//! | 1      | 2    | key id, little endian                          |
//! | 3      | 24   | random nonce                                   |
//! | 27     | 57   | sealed record (41 bytes) and 16-byte tag       |
//!
//! The first three bytes are associated data, so a record cannot be moved
//! under another key id without failing authentication. The version byte
//! differs from the plain record's (`1`), so an unsealed record is told apart
//! from a damaged one.

use crate::record::{CoarseRecord, RecordError};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Identifies a payload key, written in every sealed record.
pub type KeyId = u16;

const VERSION: u8 = 0xA1;
const HEADER_LEN: usize = 3;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Length of a sealed record on the topic.
pub const SEALED_LEN: usize = HEADER_LEN + NONCE_LEN + CoarseRecord::ENCODED_LEN + TAG_LEN;

/// Why a keyring description was refused. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("payload keyring is empty; expected ID:HEX64[,ID:HEX64...]")]
    Empty,
    #[error("payload key entry {position} is not ID:HEX64")]
    Entry { position: usize },
    #[error("payload key id in entry {position} is not an integer 0..=65535")]
    Id { position: usize },
    #[error("payload key {id} is not 64 hex digits (32 bytes)")]
    Key { id: KeyId },
    #[error("payload key id {0} appears twice")]
    Duplicate(KeyId),
}

/// Why bytes from the submissions topic did not open. Each variant is one
/// counted reason for dropping a record; none carries record content.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpenError {
    #[error("sealed record is {0} bytes, expected {SEALED_LEN}")]
    Length(usize),
    #[error("record is not sealed (version byte {0:#04x})")]
    Unsealed(u8),
    #[error("record sealed under unknown key id {0}")]
    UnknownKey(KeyId),
    #[error("record failed authentication (tampered, or sealed under another key)")]
    Tampered,
    #[error("sealed record is authentic but invalid: {0}")]
    Record(#[from] RecordError),
}

impl OpenError {
    /// A short stable label, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            OpenError::Length(_) => "malformed",
            OpenError::Unsealed(_) => "unsealed",
            OpenError::UnknownKey(_) => "unknown_key",
            OpenError::Tampered => "tampered",
            OpenError::Record(_) => "invalid_record",
        }
    }
}

/// The payload keys a service holds: the first seals, all open.
///
/// Parsed from `ID:HEX64[,ID:HEX64...]` (what `HUSHMAP_PAYLOAD_KEYS` holds);
/// its `Debug` shows key ids only, and the key bytes are zeroed on drop.
///
/// ```
/// # use hushmap_schema::*;
/// # use hushmap_schema::region::RegionResolution;
/// # use hushmap_schema::sealed::PayloadKeyring;
/// # let len = WindowLength::from_secs(60).unwrap();
/// # let record = CoarseRecord {
/// #     window: Window::containing(1_700_000_000_000, len),
/// #     window_length: len,
/// #     region: RegionCell::from_coordinate(51.5, -0.12, RegionResolution::new(5).unwrap()).unwrap(),
/// #     age_band: AgeBand::From30To44,
/// #     risk: RiskLevel::Moderate,
/// #     symptoms: [Symptom::Fever].into_iter().collect(),
/// #     contributor: ContributorKey([7; 16]),
/// # };
/// let ingest: PayloadKeyring = format!("2:{}", "ab".repeat(32)).parse().unwrap();
/// let aggregate: PayloadKeyring =
///     format!("2:{},1:{}", "ab".repeat(32), "cd".repeat(32)).parse().unwrap();
/// let sealed = ingest.seal(&record);
/// assert_eq!(aggregate.open(&sealed), Ok(record));
/// ```
#[derive(Clone)]
pub struct PayloadKeyring {
    sealing: KeyId,
    keys: BTreeMap<KeyId, XChaCha20Poly1305>,
}

impl PayloadKeyring {
    /// The id new records are sealed under.
    pub fn sealing_key_id(&self) -> KeyId {
        self.sealing
    }

    /// Every id this keyring opens.
    pub fn key_ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.keys().copied()
    }

    /// A keyring description with one fresh random key (`ID:HEX64`), for
    /// demos and tests.
    pub fn generate_entry(id: KeyId) -> String {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        format!("{id}:{}", hex::encode(key))
    }

    /// Seals a record under the sealing key with a fresh random nonce.
    pub fn seal(&self, record: &CoarseRecord) -> Vec<u8> {
        let cipher = &self.keys[&self.sealing];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut out = Vec::with_capacity(SEALED_LEN);
        out.push(VERSION);
        out.extend_from_slice(&self.sealing.to_le_bytes());
        out.extend_from_slice(&nonce);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &record.encode(),
                    aad: &out[..HEADER_LEN],
                },
            )
            // Only fails for messages beyond the cipher's length limit.
            .expect("a 41-byte record always seals");
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens and decodes a sealed record; never panics on any input.
    pub fn open(&self, bytes: &[u8]) -> Result<CoarseRecord, OpenError> {
        self.open_with_seal_id(bytes).map(|(record, _)| record)
    }

    /// Like [`open`](Self::open), also returning the record's seal id: the
    /// first 128 bits of its random nonce, the same for every copy of one
    /// sealed record and distinct between any two sealings (random 192-bit
    /// nonces), so a consumer can recognise a replayed copy.
    pub fn open_with_seal_id(&self, bytes: &[u8]) -> Result<(CoarseRecord, u128), OpenError> {
        match bytes.first() {
            None => return Err(OpenError::Length(0)),
            Some(&VERSION) => {}
            Some(&other) => return Err(OpenError::Unsealed(other)),
        }
        if bytes.len() != SEALED_LEN {
            return Err(OpenError::Length(bytes.len()));
        }
        let id = KeyId::from_le_bytes([bytes[1], bytes[2]]);
        let cipher = self.keys.get(&id).ok_or(OpenError::UnknownKey(id))?;
        let (header, rest) = bytes.split_at(HEADER_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let plain = cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: header,
                },
            )
            .map_err(|_| OpenError::Tampered)?;
        let seal_id = u128::from_le_bytes(nonce[..16].try_into().expect("16 bytes"));
        Ok((CoarseRecord::decode(&plain)?, seal_id))
    }
}

impl fmt::Debug for PayloadKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayloadKeyring")
            .field("sealing", &self.sealing)
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl FromStr for PayloadKeyring {
    type Err = KeyringError;

    fn from_str(s: &str) -> Result<PayloadKeyring, KeyringError> {
        let mut keys = BTreeMap::new();
        let mut sealing = None;
        for (i, entry) in s.split(',').map(str::trim).enumerate() {
            let position = i + 1;
            if entry.is_empty() {
                continue;
            }
            let (id, key) = entry
                .split_once(':')
                .ok_or(KeyringError::Entry { position })?;
            let id: KeyId = id
                .trim()
                .parse()
                .map_err(|_| KeyringError::Id { position })?;
            let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(key.trim(), &mut bytes[..])
                .map_err(|_| KeyringError::Key { id })?;
            let cipher = XChaCha20Poly1305::new_from_slice(&bytes[..])
                .map_err(|_| KeyringError::Key { id })?;
            if keys.insert(id, cipher).is_some() {
                return Err(KeyringError::Duplicate(id));
            }
            sealing.get_or_insert(id);
        }
        Ok(PayloadKeyring {
            sealing: sealing.ok_or(KeyringError::Empty)?,
            keys,
        })
    }
}

impl<'de> serde::Deserialize<'de> for PayloadKeyring {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = zeroize::Zeroizing::new(String::deserialize(d)?);
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample as record;

    fn ring(s: &str) -> PayloadKeyring {
        s.parse().unwrap()
    }

    #[test]
    fn round_trip_and_no_plaintext() {
        let k = ring(&PayloadKeyring::generate_entry(7));
        let plain = record().encode();
        let sealed = k.seal(&record());
        assert_eq!(sealed.len(), SEALED_LEN);
        assert_eq!(&sealed[..3], &[VERSION, 7, 0]);
        assert_eq!(k.open(&sealed), Ok(record()));
        // No 4-byte run of the plain record (region, window, key) survives.
        for run in plain.windows(4) {
            assert!(!sealed.windows(4).any(|w| w == run) || run.iter().all(|&b| b == run[0]));
        }
        // Fresh nonce every time: the same record never seals the same way.
        assert_ne!(k.seal(&record()), sealed);
    }

    #[test]
    fn rotation_opens_old_and_new() {
        let old = PayloadKeyring::generate_entry(1);
        let new = PayloadKeyring::generate_entry(2);
        let before = ring(&old).seal(&record());
        let after = ring(&new).seal(&record());
        let aggregate = ring(&format!("{new},{old}"));
        assert_eq!(aggregate.sealing_key_id(), 2);
        assert_eq!(aggregate.open(&before), Ok(record()));
        assert_eq!(aggregate.open(&after), Ok(record()));
        assert_eq!(ring(&new).open(&before), Err(OpenError::UnknownKey(1)));
    }

    #[test]
    fn tampering_is_detected_anywhere() {
        let k = ring(&PayloadKeyring::generate_entry(1));
        let sealed = k.seal(&record());
        for i in 0..sealed.len() {
            let mut b = sealed.clone();
            b[i] ^= 0x01;
            let got = k.open(&b);
            assert!(
                matches!(
                    got,
                    Err(OpenError::Tampered | OpenError::UnknownKey(_) | OpenError::Unsealed(_))
                ),
                "byte {i}: {got:?}"
            );
        }
        // The same id under a different key is tampering, not success.
        let other = ring(&PayloadKeyring::generate_entry(1));
        assert_eq!(other.open(&sealed), Err(OpenError::Tampered));
    }

    #[test]
    fn bad_lengths_and_plain_records() {
        let k = ring(&PayloadKeyring::generate_entry(1));
        let sealed = k.seal(&record());
        assert_eq!(k.open(&[]), Err(OpenError::Length(0)));
        assert_eq!(k.open(&sealed[..40]), Err(OpenError::Length(40)));
        let mut long = sealed.clone();
        long.push(0);
        assert_eq!(k.open(&long), Err(OpenError::Length(SEALED_LEN + 1)));
        assert_eq!(k.open(&record().encode()), Err(OpenError::Unsealed(1)));
        assert_eq!(OpenError::Tampered.reason(), "tampered");
    }

    #[test]
    fn keyring_parsing() {
        let a = "ab".repeat(32);
        assert_eq!(
            ring(&format!(" 3:{a} , 4:{a} "))
                .key_ids()
                .collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(
            "".parse::<PayloadKeyring>().err(),
            Some(KeyringError::Empty)
        );
        assert_eq!(
            "x".parse::<PayloadKeyring>().err(),
            Some(KeyringError::Entry { position: 1 })
        );
        assert_eq!(
            format!("70000:{a}").parse::<PayloadKeyring>().err(),
            Some(KeyringError::Id { position: 1 })
        );
        assert_eq!(
            "1:abcd".parse::<PayloadKeyring>().err(),
            Some(KeyringError::Key { id: 1 })
        );
        assert_eq!(
            format!("1:{a},1:{a}").parse::<PayloadKeyring>().err(),
            Some(KeyringError::Duplicate(1))
        );
        // Neither errors nor Debug show key material.
        let k = ring(&format!("1:{a}"));
        assert!(!format!("{k:?}").contains("abab"));
        let err = format!("1:{}zz", "ab".repeat(31))
            .parse::<PayloadKeyring>()
            .unwrap_err();
        assert!(!err.to_string().contains("abab"));
    }
}
