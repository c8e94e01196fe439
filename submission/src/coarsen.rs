//! Turns a validated submission into the coarse record that goes to Kafka.
//!
//! This is the privacy boundary of ingest: the output type has no room for a
//! coordinate, exact age, exact time, gender, condition or id. Who the
//! submission is from arrives as a [`ContributorKey`] already keyed
//! ([`contributor`](crate::contributor)), so the same person maps to the
//! same key (for contribution bounding) while the key cannot be linked back
//! without the secret.

use crate::contributor::ContributorKeys;
use crate::triage;
use crate::validate::ValidSubmission;
use hmac::{Hmac, Mac};
use hushmap_schema::{AgeBand, CoarseRecord, ContributorKey, RiskLevel, WindowLength};
use sha2::Sha256;

/// Coarsens submissions and derives their Kafka keys.
#[derive(Clone)]
pub struct Coarsener {
    keys: ContributorKeys,
    window: WindowLength,
}

impl std::fmt::Debug for Coarsener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coarsener")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Coarsener {
    /// One secret, without key ids.
    pub fn new(secret: &[u8], window: WindowLength) -> Coarsener {
        Coarsener::with_keys(ContributorKeys::new(secret), window)
    }

    /// Partition keys under a keyring: each window's under the key in force
    /// at its start, so a rotation mid-window keeps a contributor's records
    /// of that window on one partition.
    pub fn with_keys(keys: ContributorKeys, window: WindowLength) -> Coarsener {
        Coarsener { keys, window }
    }

    /// The Kafka key of a record: a keyed hash of its contributor and
    /// window. All of one contributor's records of a window share a
    /// partition, which contribution bounding needs when aggregation runs
    /// partitioned (docs/SCALE.md); the key changes every window, so the
    /// broker, which sees keys in the clear, cannot link a person's
    /// submissions across windows, and it says nothing about the region.
    pub fn partition_key(&self, record: &CoarseRecord) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.keys.window_secret(record.window.start_ms))
                .expect("HMAC takes any key length");
        // Domain-separated from contributor keys, which hash under the same
        // secret.
        mac.update(b"hushmap.partition.v2\0");
        mac.update(&record.contributor.0);
        mac.update(&record.window.start_ms.to_le_bytes());
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    /// Triages and coarsens `contributor`'s submission; consumes it so
    /// nothing else of it outlives this call.
    pub fn coarsen(
        &self,
        valid: ValidSubmission,
        contributor: ContributorKey,
    ) -> (RiskLevel, CoarseRecord) {
        let risk = triage::assess(&valid.triage);
        let record = CoarseRecord {
            window: valid.window,
            window_length: self.window,
            region: valid.region,
            age_band: AgeBand::from_age(valid.triage.age),
            risk,
            symptoms: valid.triage.symptoms,
            contributor,
        };
        (risk, record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{ValidationRules, validate};
    use hushmap_schema::domain::{Gender, Subject, Symptom};
    use hushmap_schema::region::RegionResolution;
    use hushmap_schema::submission::{Location, Submission};

    fn submission(lat: f64, lon: f64, age: i64) -> Submission {
        Submission {
            subject: Subject::Myself,
            age,
            gender: Gender::Female,
            symptoms: vec![Symptom::Fever, Symptom::DryCough],
            conditions: vec![],
            travelled_internationally_14d: false,
            contact_with_confirmed_case: true,
            location: Some(Location { lat, lon }),
            region: None,
            observed_at: None,
        }
    }

    fn rules() -> ValidationRules {
        ValidationRules {
            resolution: RegionResolution::new(5).unwrap(),
            window: WindowLength::from_secs(3600).unwrap(),
            allowed_lateness_ms: 0,
        }
    }

    #[test]
    fn encoded_record_holds_no_coordinate_or_exact_age() {
        let c = Coarsener::new(
            b"0123456789abcdef0123456789abcdef",
            WindowLength::from_secs(3600).unwrap(),
        );
        let (lat, lon, age) = (18.520_431_7_f64, 73.856_743_9_f64, 37);
        let v = validate(submission(lat, lon, age), &rules(), 1_764_000_000_000).unwrap();
        let (risk, record) = c.coarsen(v, ContributorKey([7; 16]));
        assert_eq!(risk, RiskLevel::High);
        assert_eq!(record.age_band, AgeBand::From30To44);
        let bytes = record.encode();
        // Neither coordinate appears in any common binary representation.
        for needle in [
            lat.to_le_bytes().to_vec(),
            lon.to_le_bytes().to_vec(),
            (lat as f32).to_le_bytes().to_vec(),
        ] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_slice()));
        }
        for text in ["18.52", "73.85"] {
            assert!(!bytes.windows(text.len()).any(|w| w == text.as_bytes()));
        }
        // The region is the coarse cell, and the cell's centre is kilometres away.
        let (clat, clon) = record.region.center();
        assert!((clat - lat).abs() > 1e-4 || (clon - lon).abs() > 1e-4);
    }

    #[test]
    fn partition_keys_follow_contributor_and_window_only() {
        let w = WindowLength::from_secs(3600).unwrap();
        let c = Coarsener::new(b"0123456789abcdef0123456789abcdef", w);
        let at = |lat: f64, who: u8, now: i64| {
            let s = submission(lat, 1.0, 20);
            c.coarsen(
                validate(s, &rules(), now).unwrap(),
                ContributorKey([who; 16]),
            )
            .1
        };
        let now = 1_764_000_000_000;
        // One contributor, two regions, one window: one key (one partition).
        let (here, there) = (at(1.0, 1, now), at(40.0, 1, now));
        assert_ne!(here.region, there.region);
        assert_eq!(c.partition_key(&here), c.partition_key(&there));
        // The next window: another key, so windows cannot be linked.
        let later = at(1.0, 1, now + 3_600_000);
        assert_ne!(c.partition_key(&here), c.partition_key(&later));
        // Another contributor in the same region: (almost surely) another key.
        assert_ne!(c.partition_key(&here), c.partition_key(&at(1.0, 2, now)));
        let key = c.partition_key(&here);
        assert_eq!(key.len(), 16);
        assert!(key.parse::<hushmap_schema::RegionCell>().is_err());
    }
}
