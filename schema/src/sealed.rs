//! Sealed envelopes: how records travel on Hushmap's Kafka topics.
//!
//! Coarse records carry nothing precise, but a leaked topic, a broker disk
//! or a stolen ingest should still show nothing readable. Two envelopes, one
//! per [`Purpose`]:
//!
//! * **Submissions** (ingest → aggregator): HPKE (RFC 9180) in base mode,
//!   DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305 (the `hpke`
//!   crate). Ingest holds only a [`PayloadPublicKey`]; the aggregator holds
//!   the private keys ([`PayloadKeyring`]). A stolen ingest can seal new
//!   records but cannot open one sealed in an earlier epoch.
//!
//!   An encapsulation costs two X25519 scalar multiplications (~190 µs on
//!   the benchmark machine), too much per record at ingest's rate, so ingest
//!   encapsulates once per *epoch* ([`SubmissionSealer`]: a minute, or 2²⁰
//!   records) and seals each record with XChaCha20-Poly1305 under a key
//!   exported from that HPKE context (RFC 9180 §5.3), with a random nonce.
//!   Every envelope carries its encapsulated key, so each opens on its own;
//!   the aggregator decapsulates once per epoch and keeps the key. The
//!   epoch key is in ingest's memory only while the epoch lasts (wiped when
//!   replaced), and it only opens records ingest sealed in that epoch, which
//!   passed through ingest in clear moments before.
//! * **Bounded** (aggregation stage 1 → stage 2): XChaCha20-Poly1305 under a
//!   key each private key derives (HKDF-SHA256), so only a holder of the
//!   private key, the aggregator, can write or read the bounded topic:
//!   ingest cannot slip records past contribution bounding, and nobody
//!   without the key can forge a stage-1 watermark ([`BoundedKeyring`]).
//!
//! Keys have numeric ids so they can be rotated: ingest seals under one
//! public key; the aggregator opens under every private key it holds and
//! seals bounded messages under its first. To rotate, give the aggregator
//! `new,old`, then ingest the new public key, and drop `old` once the
//! submissions topic's retention has passed.
//!
//! Submissions envelope (version `0xA2`, 116 bytes):
//!
//! | offset | size | field                                          |
//! |-------:|-----:|------------------------------------------------|
//! | 0      | 1    | envelope version (`0xA2`)                      |
//! | 1      | 2    | key id, little endian                          |
//! | 3      | 32   | HPKE encapsulated key (fresh per epoch)        |
//! | 35     | 24   | random nonce                                   |
//! | 59     | 57   | sealed record (41 bytes) and 16-byte tag       |
//!
//! Bounded envelope (version `0xB2`, variable length):
//!
//! | offset | size | field                                          |
//! |-------:|-----:|------------------------------------------------|
//! | 0      | 1    | envelope version (`0xB2`)                      |
//! | 1      | 2    | key id, little endian                          |
//! | 3      | 24   | random nonce                                   |
//! | 27     | n+16 | sealed message and 16-byte tag                 |
//!
//! The associated data of both is the first three bytes (and, for a
//! submission, its encapsulated key) followed by the purpose's label, so an envelope is accepted only under its own key id and
//! only for the purpose it was sealed for: a submissions envelope copied onto
//! the bounded topic (or back) is refused as [`OpenError::WrongPurpose`], and
//! one whose version byte is rewritten fails authentication. The version
//! bytes differ from the plain record's (`1`), so an unsealed record is told
//! apart from a damaged one.

use crate::record::{CoarseRecord, RecordError};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Identifies a payload key pair, written in every envelope sealed under it.
pub type KeyId = u16;

type HpkeKem = X25519HkdfSha256;
type HpkeKdf = hpke::kdf::HkdfSha256;
type HpkeAead = hpke::aead::ChaCha20Poly1305;
type PrivateKey = <HpkeKem as Kem>::PrivateKey;
type PublicKey = <HpkeKem as Kem>::PublicKey;
type EncappedKey = <HpkeKem as Kem>::EncappedKey;

const HEADER_LEN: usize = 3;
const ENC_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// HPKE's `info`: which protocol the key schedule is for.
const HPKE_INFO: &[u8] = b"hushmap sealed record";

/// How long ingest seals under one HPKE encapsulation, and how many records
/// at most: the epoch key is all a stolen ingest could open, and only the
/// records it sealed in that epoch. Anything that stands in for ingest
/// (the benches' producers) seals the same way, so the aggregator opens
/// what it would open in production: one decapsulation an epoch, not one a
/// record.
pub const SEALING_EPOCH: Duration = Duration::from_secs(60);
/// See [`SEALING_EPOCH`].
pub const SEALING_EPOCH_RECORDS: u64 = 1 << 20;
/// The exporter context of an epoch's record key.
const RECORD_KEY_LABEL: &[u8] = b"hushmap record key v2";
/// Epochs the aggregator remembers the key of; past it, it forgets them
/// all (and decapsulates again as records of live epochs arrive).
const REMEMBERED_EPOCHS: usize = 4096;
/// HKDF `info` deriving a bounded-topic key from a private key.
const BOUNDED_KEY_INFO: &[u8] = b"hushmap bounded-topic key v2";

/// Length of a sealed record on the submissions topic.
pub const SEALED_LEN: usize =
    HEADER_LEN + ENC_LEN + NONCE_LEN + CoarseRecord::ENCODED_LEN + TAG_LEN;

/// What an envelope was sealed for; bound into its associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A coarse record from ingest on the submissions topic.
    Submissions,
    /// A message of partitioned aggregation's stage 1 on the bounded topic.
    Bounded,
}

impl Purpose {
    fn version(self) -> u8 {
        match self {
            Purpose::Submissions => 0xA2,
            Purpose::Bounded => 0xB2,
        }
    }

    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Submissions => b"hushmap.submissions",
            Purpose::Bounded => b"hushmap.bounded",
        }
    }

    fn of_version(version: u8) -> Option<Purpose> {
        [Purpose::Submissions, Purpose::Bounded]
            .into_iter()
            .find(|p| p.version() == version)
    }

    /// The associated data: the envelope's header (for a submission, up to
    /// and including its encapsulated key), then the purpose label.
    fn associated_data(self, header: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(header.len() + 24);
        aad.extend_from_slice(header);
        aad.extend_from_slice(self.label());
        aad
    }

    /// Checks an envelope's version byte against this purpose.
    fn check_version(self, bytes: &[u8]) -> Result<(), OpenError> {
        match bytes.first() {
            None => Err(OpenError::Length(0)),
            Some(&v) if v == self.version() => Ok(()),
            Some(&v) => match Purpose::of_version(v) {
                Some(found) => Err(OpenError::WrongPurpose {
                    expected: self,
                    found,
                }),
                None => Err(OpenError::Unsealed(v)),
            },
        }
    }
}

/// Why a key description was refused. Never contains key material.
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
    #[error("payload public key {id} is not a usable X25519 public key")]
    PublicKey { id: KeyId },
    #[error("payload key id {0} appears twice")]
    Duplicate(KeyId),
    #[error("a payload public key is one ID:HEX64 entry (ingest seals under one key)")]
    OnePublicKey,
}

/// Why bytes from a topic did not open. Each variant is one counted reason
/// for dropping a record; none carries record content.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpenError {
    #[error("sealed envelope is {0} bytes, not a valid length")]
    Length(usize),
    #[error("record is not sealed (version byte {0:#04x})")]
    Unsealed(u8),
    #[error("envelope was sealed for {found:?}, not {expected:?} (moved between topics)")]
    WrongPurpose { expected: Purpose, found: Purpose },
    #[error("envelope sealed under unknown key id {0}")]
    UnknownKey(KeyId),
    #[error("envelope failed authentication (tampered, or sealed under another key)")]
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
            OpenError::WrongPurpose { .. } => "wrong_purpose",
            OpenError::UnknownKey(_) => "unknown_key",
            OpenError::Tampered => "tampered",
            OpenError::Record(_) => "invalid_record",
        }
    }
}

fn parse_entry(position: usize, entry: &str) -> Result<(KeyId, Zeroizing<[u8; 32]>), KeyringError> {
    let (id, key) = entry
        .split_once(':')
        .ok_or(KeyringError::Entry { position })?;
    let id: KeyId = id
        .trim()
        .parse()
        .map_err(|_| KeyringError::Id { position })?;
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(key.trim(), &mut bytes[..]).map_err(|_| KeyringError::Key { id })?;
    Ok((id, bytes))
}

/// A private key's bytes, wiped when dropped.
fn private_bytes(private: &PrivateKey) -> Zeroizing<[u8; 32]> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    private.write_exact(&mut bytes[..]);
    bytes
}

fn entries(s: &str) -> impl Iterator<Item = (usize, &str)> {
    s.split(',')
        .map(str::trim)
        .enumerate()
        .map(|(i, e)| (i + 1, e))
        .filter(|(_, e)| !e.is_empty())
}

/// The key ingest seals submissions under: one X25519 public key and its id.
///
/// Parsed from `ID:HEX64` (what `HUSHMAP_PAYLOAD_PUBLIC_KEY` holds; print
/// it with `hushmap-aggregate payload-public-key`). It opens nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct PayloadPublicKey {
    id: KeyId,
    key: PublicKey,
}

impl PayloadPublicKey {
    /// The id written in every record sealed under this key.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Seals one record under an encapsulation of its own (an epoch of one
    /// record): for tests and tools. Ingest uses a [`SubmissionSealer`].
    pub fn seal(&self, record: &CoarseRecord) -> Vec<u8> {
        self.new_epoch()
            // Parsing proved the key usable (`FromStr` encapsulates once).
            .expect("a parsed public key always encapsulates")
            .seal(&record.encode())
    }

    /// A sealer that encapsulates once per `epoch` or `max_records`,
    /// whichever comes first.
    pub fn sealer(&self, epoch: Duration, max_records: u64) -> SubmissionSealer {
        SubmissionSealer {
            current: Mutex::new(Arc::new(
                self.new_epoch()
                    .expect("a parsed public key always encapsulates"),
            )),
            public: self.clone(),
            epoch,
            max_records: max_records.max(1),
        }
    }

    /// A fresh HPKE encapsulation and the record key exported from it.
    fn new_epoch(&self) -> Result<SealingEpoch, hpke::HpkeError> {
        let (enc, context) = hpke::setup_sender::<HpkeAead, HpkeKdf, HpkeKem, _>(
            &OpModeS::Base,
            &self.key,
            HPKE_INFO,
            &mut OsRng.unwrap_err(),
        )?;
        let mut key = Zeroizing::new([0u8; 32]);
        context.export(RECORD_KEY_LABEL, &mut key[..])?;
        let mut header = Vec::with_capacity(HEADER_LEN + ENC_LEN);
        header.push(Purpose::Submissions.version());
        header.extend_from_slice(&self.id.to_le_bytes());
        header.extend_from_slice(&enc.to_bytes());
        Ok(SealingEpoch {
            aad: Purpose::Submissions.associated_data(&header),
            header,
            cipher: XChaCha20Poly1305::new((&*key).into()),
            started: Instant::now(),
            sealed: AtomicU64::new(0),
        })
    }
}

/// One encapsulation: the envelope's header up to its encapsulated key, and
/// the record key exported from the HPKE context.
struct SealingEpoch {
    header: Vec<u8>,
    aad: Vec<u8>,
    cipher: XChaCha20Poly1305,
    started: Instant,
    sealed: AtomicU64,
}

impl SealingEpoch {
    fn seal(&self, plain: &[u8]) -> Vec<u8> {
        self.sealed.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::with_capacity(SEALED_LEN);
        out.extend_from_slice(&self.header);
        append_sealed(&self.cipher, out, &self.aad, plain)
    }
}

/// Appends a fresh random nonce and `plain` sealed under `cipher` with
/// `aad` to `out` (an envelope's header): the tail both envelopes share.
fn append_sealed(
    cipher: &XChaCha20Poly1305,
    mut out: Vec<u8>,
    aad: &[u8],
    plain: &[u8],
) -> Vec<u8> {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut chacha20poly1305::aead::OsRng);
    out.extend_from_slice(&nonce);
    let sealed = cipher
        .encrypt(&nonce, Payload { msg: plain, aad })
        // Only fails beyond the cipher's length limit (256 GiB).
        .expect("an envelope's message is far below the AEAD's length limit");
    out.extend_from_slice(&sealed);
    out
}

/// Ingest's sealer: records sealed to the aggregator's public key, one HPKE
/// encapsulation per epoch (see the module documentation for why and what
/// it costs). Shared by every request; sealing takes a lock only to read
/// the current epoch.
pub struct SubmissionSealer {
    public: PayloadPublicKey,
    epoch: Duration,
    max_records: u64,
    current: Mutex<Arc<SealingEpoch>>,
}

impl SubmissionSealer {
    /// Seals a record for the submissions topic.
    pub fn seal(&self, record: &CoarseRecord) -> Vec<u8> {
        let epoch = {
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            if current.started.elapsed() >= self.epoch
                || current.sealed.load(Ordering::Relaxed) >= self.max_records
            {
                // The old epoch's key is wiped when the last record being
                // sealed under it is done (the cipher zeroizes on drop).
                *current = Arc::new(
                    self.public
                        .new_epoch()
                        .expect("a parsed public key always encapsulates"),
                );
            }
            current.clone()
        };
        epoch.seal(&record.encode())
    }
}

impl fmt::Debug for SubmissionSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubmissionSealer")
            .field("key_id", &self.public.id)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for PayloadPublicKey {
    /// `ID:HEX64`, as parsed: a public key is not secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.id, hex::encode(self.key.to_bytes()))
    }
}

impl fmt::Debug for PayloadPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PayloadPublicKey({self})")
    }
}

impl FromStr for PayloadPublicKey {
    type Err = KeyringError;

    fn from_str(s: &str) -> Result<PayloadPublicKey, KeyringError> {
        let mut all = entries(s);
        let (position, entry) = all.next().ok_or(KeyringError::Empty)?;
        if all.next().is_some() {
            return Err(KeyringError::OnePublicKey);
        }
        let (id, bytes) = parse_entry(position, entry)?;
        let key = PublicKey::from_bytes(&bytes[..]).map_err(|_| KeyringError::Key { id })?;
        let public = PayloadPublicKey { id, key };
        // A low-order point makes every encapsulation fail: refuse it now,
        // not on the first submission.
        public
            .new_epoch()
            .map_err(|_| KeyringError::PublicKey { id })?;
        Ok(public)
    }
}

impl<'de> serde::Deserialize<'de> for PayloadPublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The private keys the aggregator holds: each opens submissions sealed to
/// its public key and derives a bounded-topic key; the first's public key is
/// the one to give ingest, and its bounded key seals stage 1's messages.
///
/// Parsed from `ID:HEX64[,ID:HEX64...]` (what `HUSHMAP_PAYLOAD_KEYS` holds;
/// generate an entry with `hushmap-aggregate generate-payload-key`); its
/// `Debug` shows key ids only, and the key bytes are zeroed on drop.
///
/// ```
/// # use hushmap_schema::*;
/// # use hushmap_schema::region::RegionResolution;
/// # use hushmap_schema::sealed::{PayloadKeyring, PayloadPublicKey};
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
/// let new = PayloadKeyring::generate_entry(2);
/// let old = PayloadKeyring::generate_entry(1);
/// let aggregate: PayloadKeyring = format!("{new},{old}").parse().unwrap();
/// // What ingest holds: the first key's public half, nothing secret.
/// let ingest: PayloadPublicKey = aggregate.public_key().to_string().parse().unwrap();
/// let sealed = ingest.seal(&record);
/// assert_eq!(aggregate.open(&sealed), Ok(record));
/// ```
#[derive(Clone)]
pub struct PayloadKeyring {
    first: KeyId,
    keys: BTreeMap<KeyId, PrivateKey>,
    /// Record keys of epochs already decapsulated (only after a record of
    /// the epoch opened), shared by clones.
    epochs: Arc<Mutex<EpochKeys>>,
}

/// Record keys by (key id, encapsulated key).
type EpochKeys = HashMap<(KeyId, [u8; ENC_LEN]), XChaCha20Poly1305>;

impl PayloadKeyring {
    /// The id of the first key: its public key is ingest's, its bounded key
    /// seals stage 1's messages.
    pub fn first_key_id(&self) -> KeyId {
        self.first
    }

    /// Every id this keyring opens.
    pub fn key_ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.keys().copied()
    }

    /// The first key's public half: what ingest seals under.
    pub fn public_key(&self) -> PayloadPublicKey {
        PayloadPublicKey {
            id: self.first,
            key: HpkeKem::sk_to_pk(&self.keys[&self.first]),
        }
    }

    /// A private key description with one fresh random key (`ID:HEX64`),
    /// for `generate-payload-key`, demos and tests.
    pub fn generate_entry(id: KeyId) -> String {
        let (private, _) = HpkeKem::gen_keypair(&mut OsRng.unwrap_err());
        format!("{id}:{}", hex::encode(private_bytes(&private)))
    }

    /// The bounded-topic keys derived from these private keys.
    pub fn bounded_keyring(&self) -> BoundedKeyring {
        let keys = self
            .keys
            .iter()
            .map(|(&id, private)| {
                let secret = private_bytes(private);
                let mut derived = Zeroizing::new([0u8; 32]);
                hkdf::Hkdf::<sha2::Sha256>::new(None, &secret[..])
                    .expand(BOUNDED_KEY_INFO, &mut derived[..])
                    .expect("32 bytes is a valid HKDF-SHA256 output length");
                (id, XChaCha20Poly1305::new((&*derived).into()))
            })
            .collect();
        BoundedKeyring {
            sealing: self.first,
            keys,
        }
    }

    /// Opens and decodes a sealed record; never panics on any input.
    pub fn open(&self, bytes: &[u8]) -> Result<CoarseRecord, OpenError> {
        self.open_with_seal_id(bytes).map(|(record, _)| record)
    }

    /// Like [`open`](Self::open), also returning the record's seal id: 128
    /// bits of SHA-256 over its encapsulated key and nonce, the same for
    /// every copy of one sealed record and distinct between any two sealings
    /// (a random 192-bit nonce each), so a consumer can recognise a replayed
    /// copy. Nobody without the epoch's key can make another authentic
    /// record with the same seal id.
    pub fn open_with_seal_id(&self, bytes: &[u8]) -> Result<(CoarseRecord, u128), OpenError> {
        Purpose::Submissions.check_version(bytes)?;
        if bytes.len() != SEALED_LEN {
            return Err(OpenError::Length(bytes.len()));
        }
        let id = KeyId::from_le_bytes([bytes[1], bytes[2]]);
        let private = self.keys.get(&id).ok_or(OpenError::UnknownKey(id))?;
        let (header, rest) = bytes.split_at(HEADER_LEN + ENC_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let enc: [u8; ENC_LEN] = header[HEADER_LEN..].try_into().expect("32 bytes");
        let payload = Payload {
            msg: sealed,
            aad: &Purpose::Submissions.associated_data(header),
        };
        let remembered = self
            .epochs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(id, enc))
            .cloned();
        let plain = match remembered {
            Some(cipher) => cipher.decrypt(XNonce::from_slice(nonce), payload),
            None => {
                let cipher = epoch_cipher(private, &enc).ok_or(OpenError::Tampered)?;
                let plain = cipher.decrypt(XNonce::from_slice(nonce), payload);
                // Remembered only once a record of it opened: junk
                // encapsulations cannot crowd out real epochs.
                if plain.is_ok() {
                    let mut epochs = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
                    if epochs.len() >= REMEMBERED_EPOCHS {
                        epochs.clear();
                    }
                    epochs.insert((id, enc), cipher);
                }
                plain
            }
        }
        .map_err(|_| OpenError::Tampered)?;
        let plain = Zeroizing::new(plain);
        let digest = Sha256::new()
            .chain_update(enc)
            .chain_update(nonce)
            .finalize();
        let seal_id = u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"));
        Ok((CoarseRecord::decode(&plain)?, seal_id))
    }
}

/// Decapsulates an epoch and exports its record key; `None` for an
/// encapsulated key that is no X25519 public key of use.
fn epoch_cipher(private: &PrivateKey, enc: &[u8; ENC_LEN]) -> Option<XChaCha20Poly1305> {
    let encapped = EncappedKey::from_bytes(enc).ok()?;
    let context = hpke::setup_receiver::<HpkeAead, HpkeKdf, HpkeKem>(
        &OpModeR::Base,
        private,
        &encapped,
        HPKE_INFO,
    )
    .ok()?;
    let mut key = Zeroizing::new([0u8; 32]);
    context.export(RECORD_KEY_LABEL, &mut key[..]).ok()?;
    Some(XChaCha20Poly1305::new((&*key).into()))
}

impl fmt::Debug for PayloadKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayloadKeyring")
            .field("first", &self.first)
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl FromStr for PayloadKeyring {
    type Err = KeyringError;

    fn from_str(s: &str) -> Result<PayloadKeyring, KeyringError> {
        let mut keys = BTreeMap::new();
        let mut first = None;
        for (position, entry) in entries(s) {
            let (id, bytes) = parse_entry(position, entry)?;
            let private =
                PrivateKey::from_bytes(&bytes[..]).map_err(|_| KeyringError::Key { id })?;
            if keys.insert(id, private).is_some() {
                return Err(KeyringError::Duplicate(id));
            }
            first.get_or_insert(id);
        }
        Ok(PayloadKeyring {
            first: first.ok_or(KeyringError::Empty)?,
            keys,
            epochs: Arc::default(),
        })
    }
}

impl<'de> serde::Deserialize<'de> for PayloadKeyring {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Zeroizing::new(String::deserialize(d)?);
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The aggregator's keys for the bounded topic, derived from its private
/// payload keys ([`PayloadKeyring::bounded_keyring`]): the first seals,
/// every one opens. Stage 1 and stage 2 are both the aggregator, so a
/// symmetric key is enough, and it keeps the bounded topic closed to anyone
/// who holds only the public key.
#[derive(Clone)]
pub struct BoundedKeyring {
    sealing: KeyId,
    keys: BTreeMap<KeyId, XChaCha20Poly1305>,
}

impl BoundedKeyring {
    /// Seals an encoded bounded-topic message.
    pub fn seal_bytes(&self, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + message.len() + TAG_LEN);
        out.push(Purpose::Bounded.version());
        out.extend_from_slice(&self.sealing.to_le_bytes());
        let aad = Purpose::Bounded.associated_data(&out);
        append_sealed(&self.keys[&self.sealing], out, &aad, message)
    }

    /// Opens a bounded envelope, returning the message bytes and the seal id
    /// (the nonce's first 128 bits); never panics on any input.
    pub fn open_bytes(&self, bytes: &[u8]) -> Result<(Zeroizing<Vec<u8>>, u128), OpenError> {
        Purpose::Bounded.check_version(bytes)?;
        if bytes.len() < HEADER_LEN + NONCE_LEN + TAG_LEN {
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
                    aad: &Purpose::Bounded.associated_data(header),
                },
            )
            .map_err(|_| OpenError::Tampered)?;
        let seal_id = u128::from_le_bytes(nonce[..16].try_into().expect("16 bytes"));
        Ok((Zeroizing::new(plain), seal_id))
    }
}

impl fmt::Debug for BoundedKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedKeyring")
            .field("sealing", &self.sealing)
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample as record;

    fn ring(s: &str) -> PayloadKeyring {
        s.parse().unwrap()
    }

    fn fresh(id: KeyId) -> PayloadKeyring {
        ring(&PayloadKeyring::generate_entry(id))
    }

    #[test]
    fn round_trip_and_no_plaintext() {
        let k = fresh(7);
        let plain = record().encode();
        let sealed = k.public_key().seal(&record());
        assert_eq!(sealed.len(), SEALED_LEN);
        assert_eq!(&sealed[..3], &[0xA2, 7, 0]);
        assert_eq!(k.open(&sealed), Ok(record()));
        // No 4-byte run of the plain record (region, window, key) survives.
        for run in plain.windows(4) {
            assert!(!sealed.windows(4).any(|w| w == run) || run.iter().all(|&b| b == run[0]));
        }
        // A fresh encapsulation every time: never sealed the same way twice,
        // and the seal ids differ.
        let again = k.public_key().seal(&record());
        assert_ne!(again, sealed);
        assert_ne!(
            k.open_with_seal_id(&again).unwrap().1,
            k.open_with_seal_id(&sealed).unwrap().1
        );
    }

    #[test]
    fn an_epoch_encapsulates_once_and_every_record_opens_alone() {
        let entry = PayloadKeyring::generate_entry(5);
        let k = ring(&entry);
        let sealer = k.public_key().sealer(Duration::from_secs(3600), 3);
        let sealed: Vec<Vec<u8>> = (0..4).map(|_| sealer.seal(&record())).collect();
        let enc = |s: &Vec<u8>| s[3..35].to_vec();
        // Three records share an encapsulation; the fourth starts an epoch.
        assert_eq!(enc(&sealed[0]), enc(&sealed[1]));
        assert_eq!(enc(&sealed[1]), enc(&sealed[2]));
        assert_ne!(enc(&sealed[2]), enc(&sealed[3]));
        // Each opens on its own, in any order, from a fresh keyring or one
        // that remembers the epoch; seal ids all differ.
        let mut ids = std::collections::BTreeSet::new();
        for s in sealed.iter().rev() {
            let (opened, id) = k.open_with_seal_id(s).unwrap();
            assert_eq!(opened, record());
            assert_eq!(ring(&entry).open_with_seal_id(s).unwrap(), (opened, id));
            ids.insert(id);
        }
        assert_eq!(ids.len(), 4);
        // A remembered epoch does not let a changed encapsulated key through.
        let mut moved = sealed[0].clone();
        moved[10] ^= 1;
        assert_eq!(k.open(&moved), Err(OpenError::Tampered));
        // Time ends an epoch too.
        let timed = k.public_key().sealer(Duration::ZERO, 1 << 20);
        assert_ne!(enc(&timed.seal(&record())), enc(&timed.seal(&record())));
    }

    #[test]
    fn the_public_key_round_trips_and_opens_nothing() {
        let entry = PayloadKeyring::generate_entry(3);
        let k = ring(&entry);
        let text = k.public_key().to_string();
        let public: PayloadPublicKey = text.parse().unwrap();
        assert_eq!(public, k.public_key());
        assert_eq!(public.id(), 3);
        // The public key is not the private one, and does not parse as it
        // would open anything: a keyring made of it opens nothing sealed to
        // the real key.
        assert_ne!(text, entry);
        let pretend = ring(&text);
        assert_eq!(
            pretend.open(&public.seal(&record())),
            Err(OpenError::Tampered)
        );
        // A public key is one entry, and not a low-order point.
        assert_eq!(
            format!("{text},{text}").parse::<PayloadPublicKey>(),
            Err(KeyringError::OnePublicKey)
        );
        assert_eq!(
            format!("1:{}", "00".repeat(32)).parse::<PayloadPublicKey>(),
            Err(KeyringError::PublicKey { id: 1 })
        );
    }

    #[test]
    fn rotation_opens_old_and_new() {
        let old = PayloadKeyring::generate_entry(1);
        let new = PayloadKeyring::generate_entry(2);
        let before = ring(&old).public_key().seal(&record());
        let after = ring(&new).public_key().seal(&record());
        let aggregate = ring(&format!("{new},{old}"));
        assert_eq!(aggregate.first_key_id(), 2);
        assert_eq!(aggregate.public_key().id(), 2);
        assert_eq!(aggregate.open(&before), Ok(record()));
        assert_eq!(aggregate.open(&after), Ok(record()));
        assert_eq!(ring(&new).open(&before), Err(OpenError::UnknownKey(1)));
        // Bounded messages sealed before the rotation (under old's derived
        // key) still open after it.
        let bounded_before = ring(&old).bounded_keyring().seal_bytes(b"mark");
        assert_eq!(
            &aggregate
                .bounded_keyring()
                .open_bytes(&bounded_before)
                .unwrap()
                .0[..],
            b"mark"
        );
    }

    #[test]
    fn tampering_is_detected_anywhere() {
        let k = fresh(1);
        let sealed = k.public_key().seal(&record());
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
        assert_eq!(fresh(1).open(&sealed), Err(OpenError::Tampered));
    }

    #[test]
    fn an_envelope_is_only_accepted_for_its_purpose() {
        let k = fresh(1);
        let bounded = k.bounded_keyring();
        let submission = k.public_key().seal(&record());
        let message = bounded.seal_bytes(&record().encode());
        // Moved between topics: refused by its version byte.
        assert_eq!(
            bounded.open_bytes(&submission).unwrap_err(),
            OpenError::WrongPurpose {
                expected: Purpose::Bounded,
                found: Purpose::Submissions
            }
        );
        assert_eq!(
            k.open(&message),
            Err(OpenError::WrongPurpose {
                expected: Purpose::Submissions,
                found: Purpose::Bounded
            })
        );
        assert_eq!(k.open(&message).unwrap_err().reason(), "wrong_purpose");
        // Moved and relabelled: the purpose is authenticated, so rewriting
        // the version byte fails.
        let mut relabelled = submission.clone();
        relabelled[0] = Purpose::Bounded.version();
        assert_eq!(
            bounded.open_bytes(&relabelled).unwrap_err(),
            OpenError::Tampered
        );
        // A bounded message cannot be forged without the private key: the
        // same key id under another keyring's derived key is tampering.
        assert_eq!(
            fresh(1).bounded_keyring().open_bytes(&message).unwrap_err(),
            OpenError::Tampered
        );
    }

    #[test]
    fn bounded_envelopes_round_trip_and_catch_tampering() {
        let bounded = fresh(4).bounded_keyring();
        let sealed = bounded.seal_bytes(b"watermark body");
        let (plain, seal_id) = bounded.open_bytes(&sealed).unwrap();
        assert_eq!(&plain[..], b"watermark body");
        assert_ne!(
            bounded.open_bytes(&bounded.seal_bytes(b"x")).unwrap().1,
            seal_id
        );
        for i in 0..sealed.len() {
            let mut b = sealed.clone();
            b[i] ^= 0x80;
            assert!(bounded.open_bytes(&b).is_err(), "byte {i}");
        }
        assert_eq!(
            bounded.open_bytes(&sealed[..20]).unwrap_err(),
            OpenError::Length(20)
        );
    }

    #[test]
    fn bad_lengths_and_plain_records() {
        let k = fresh(1);
        let sealed = k.public_key().seal(&record());
        assert_eq!(k.open(&[]), Err(OpenError::Length(0)));
        assert_eq!(k.open(&sealed[..40]), Err(OpenError::Length(40)));
        let mut long = sealed.clone();
        long.push(0);
        assert_eq!(k.open(&long), Err(OpenError::Length(SEALED_LEN + 1)));
        assert_eq!(k.open(&record().encode()), Err(OpenError::Unsealed(1)));
        // The symmetric envelope of earlier versions is not accepted.
        assert_eq!(k.open(&[0xA1; 84]), Err(OpenError::Unsealed(0xA1)));
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
        assert!(!format!("{:?}", k.bounded_keyring()).contains("abab"));
        let err = format!("1:{}zz", "ab".repeat(31))
            .parse::<PayloadKeyring>()
            .unwrap_err();
        assert!(!err.to_string().contains("abab"));
    }
}
