//! The public submission contract (`POST /v1/submissions`).
//!
//! These types are the single definition of the JSON body: ingest parses
//! with them (unknown fields rejected) and the traffic generator and tests
//! build bodies with them. Validation beyond JSON shape (ranges, duplicates,
//! time bounds) lives in ingest, which reports it field by field.
//!
//! Who submits is not in the body: a signed-in client proves it with an ID
//! token (`Authorization: Bearer …`), an anonymous one sends back the
//! `contributor_token` of its first answer (`Hushmap-Contributor`).

use crate::domain::{Condition, Gender, Subject, Symptom};
use serde::{Deserialize, Serialize};

/// A self-check submission as the client sends it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    #[serde(rename = "for")]
    pub subject: Subject,
    /// Years, 0..=120 (checked by ingest). Signed so that a negative value is
    /// reported as out of range rather than as a type error.
    pub age: i64,
    pub gender: Gender,
    pub symptoms: Vec<Symptom>,
    pub conditions: Vec<Condition>,
    pub travelled_internationally_14d: bool,
    pub contact_with_confirmed_case: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// An H3 cell index of any resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// RFC 3339 timestamp of the self-check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<String>,
}

/// A coordinate as sent by the client; never stored or forwarded.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

/// The 202 answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Triage {
    pub risk: crate::domain::RiskLevel,
    pub advice: String,
    /// The coarse region the submission was counted in.
    pub region: String,
    /// For anonymous use: this browser's identity, to send back in the
    /// `Hushmap-Contributor` header with every later self-check, so that
    /// one browser counts as one person. Random, signed by the service,
    /// holds no personal data and no time finer than a day. Absent for
    /// signed-in submissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contributor_token: Option<String>,
}

/// The header an anonymous client sends its contributor token back in.
pub const CONTRIBUTOR_HEADER: &str = "hushmap-contributor";
