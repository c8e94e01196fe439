//! Strict validation of a parsed submission, field by field.
//!
//! Parsing (shape, types, unknown fields) is serde's job; this module checks
//! what types cannot express: ranges, duplicates, exclusive fields and time
//! bounds. Error details describe the rule, never the submitted value.

use crate::problem::{ErrorCode, Problem};
use crate::triage::TriageInput;
use hushmap_schema::region::RegionResolution;
use hushmap_schema::submission::Submission;
use hushmap_schema::{RegionCell, RegionError, SymptomSet, Window, WindowLength};
use std::collections::HashSet;
use std::hash::Hash;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How far in the future `observed_at` may be (clock skew allowance).
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;

/// What validation needs to know about the deployment.
#[derive(Debug, Clone, Copy)]
pub struct ValidationRules {
    pub resolution: RegionResolution,
    pub window: WindowLength,
    pub allowed_lateness_ms: i64,
}

/// A submission that passed every check, already reduced to what triage
/// and coarsening need.
#[derive(Debug)]
pub struct ValidSubmission {
    pub triage: TriageInput,
    pub region: RegionCell,
    pub window: Window,
}

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Problem {
    Problem::new(ErrorCode::InvalidValue, detail).with_field(field)
}

/// Index of the first repeated element, if any.
fn first_duplicate<T: Eq + Hash>(items: &[T]) -> Option<usize> {
    let mut seen = HashSet::with_capacity(items.len());
    items.iter().position(|x| !seen.insert(x))
}

/// Validates `sub` received at `now_ms` (ms since the epoch).
pub fn validate(
    sub: Submission,
    rules: &ValidationRules,
    now_ms: i64,
) -> Result<ValidSubmission, Problem> {
    let age = u8::try_from(sub.age)
        .ok()
        .filter(|a| *a <= 120)
        .ok_or_else(|| invalid("age", "age must be an integer from 0 to 120"))?;
    if let Some(i) = first_duplicate(&sub.symptoms) {
        return Err(invalid(
            format!("symptoms[{i}]"),
            "each symptom may be listed once",
        ));
    }
    if let Some(i) = first_duplicate(&sub.conditions) {
        return Err(invalid(
            format!("conditions[{i}]"),
            "each condition may be listed once",
        ));
    }
    let region = match (&sub.location, &sub.region) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "region",
                "give either location or region, not both",
            ));
        }
        (None, None) => {
            return Err(Problem::new(
                ErrorCode::MissingField,
                "one of location or region is required",
            )
            .with_field("location"));
        }
        (Some(loc), None) => RegionCell::from_coordinate(loc.lat, loc.lon, rules.resolution)
            .map_err(|e| match e {
                RegionError::Longitude => invalid(
                    "location.lon",
                    "lon must be a finite number from -180 to 180",
                ),
                _ => invalid("location.lat", "lat must be a finite number from -90 to 90"),
            })?,
        (None, Some(cell)) => {
            RegionCell::from_client_cell(cell, rules.resolution).map_err(|e| match e {
                RegionError::TooCoarse { target, .. } => invalid(
                    "region",
                    format!("region must be an H3 cell of resolution {target} or finer"),
                ),
                _ => invalid("region", "region must be a valid H3 cell index"),
            })?
        }
    };
    let observed_ms = match &sub.observed_at {
        None => now_ms,
        Some(text) => {
            let t = OffsetDateTime::parse(text, &Rfc3339)
                .map_err(|_| invalid("observed_at", "observed_at must be an RFC 3339 timestamp"))?;
            let ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
                .map_err(|_| invalid("observed_at", "observed_at is out of range"))?;
            if ms > now_ms + MAX_FUTURE_MS {
                return Err(invalid(
                    "observed_at",
                    "observed_at may be at most 5 minutes in the future",
                ));
            }
            ms
        }
    };
    let window = Window::containing(observed_ms, rules.window);
    if window.end_ms.saturating_add(rules.allowed_lateness_ms) <= now_ms {
        return Err(invalid(
            "observed_at",
            "observed_at is older than the window still open for submissions",
        ));
    }
    let symptoms: SymptomSet = sub.symptoms.iter().copied().collect();
    Ok(ValidSubmission {
        triage: TriageInput {
            age,
            symptoms,
            has_condition: !sub.conditions.is_empty(),
            contact: sub.contact_with_confirmed_case,
            travelled: sub.travelled_internationally_14d,
        },
        region,
        window,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hushmap_schema::domain::{Condition, Gender, Subject, Symptom};
    use hushmap_schema::submission::Location;

    const NOW: i64 = 1_764_000_000_000;

    fn rules() -> ValidationRules {
        ValidationRules {
            resolution: RegionResolution::new(5).unwrap(),
            window: WindowLength::from_secs(3600).unwrap(),
            allowed_lateness_ms: 600_000,
        }
    }

    fn base() -> Submission {
        Submission {
            subject: Subject::Myself,
            age: 34,
            gender: Gender::Undisclosed,
            symptoms: vec![Symptom::Fever],
            conditions: vec![],
            travelled_internationally_14d: false,
            contact_with_confirmed_case: false,
            location: Some(Location {
                lat: 19.076,
                lon: 72.8777,
            }),
            region: None,
            observed_at: None,
        }
    }

    fn field_of(r: Result<ValidSubmission, Problem>) -> (ErrorCode, String) {
        let p = r.expect_err("should be rejected");
        (p.code, p.field.unwrap_or_default())
    }

    #[test]
    fn accepts_a_plain_submission() {
        let v = validate(base(), &rules(), NOW).unwrap();
        assert_eq!(v.region.resolution(), 5);
        assert!(v.window.start_ms <= NOW && NOW < v.window.end_ms);
    }

    #[test]
    fn age_range() {
        for bad in [-1, 121, 1000] {
            let s = Submission { age: bad, ..base() };
            assert_eq!(
                field_of(validate(s, &rules(), NOW)),
                (ErrorCode::InvalidValue, "age".into())
            );
        }
        for good in [0, 120] {
            assert!(
                validate(
                    Submission {
                        age: good,
                        ..base()
                    },
                    &rules(),
                    NOW
                )
                .is_ok()
            );
        }
    }

    #[test]
    fn duplicates_name_the_repeated_entry() {
        let s = Submission {
            symptoms: vec![Symptom::Fever, Symptom::Headache, Symptom::Fever],
            ..base()
        };
        assert_eq!(
            field_of(validate(s, &rules(), NOW)),
            (ErrorCode::InvalidValue, "symptoms[2]".into())
        );
        let s = Submission {
            conditions: vec![Condition::Diabetes, Condition::Diabetes],
            ..base()
        };
        assert_eq!(
            field_of(validate(s, &rules(), NOW)),
            (ErrorCode::InvalidValue, "conditions[1]".into())
        );
    }

    #[test]
    fn location_and_region_are_exclusive_and_one_is_required() {
        let s = Submission {
            region: Some("85608b0bfffffff".into()),
            ..base()
        };
        assert_eq!(
            field_of(validate(s, &rules(), NOW)),
            (ErrorCode::InvalidValue, "region".into())
        );
        let s = Submission {
            location: None,
            ..base()
        };
        assert_eq!(
            field_of(validate(s, &rules(), NOW)),
            (ErrorCode::MissingField, "location".into())
        );
    }

    #[test]
    fn coordinates_out_of_range() {
        for (lat, lon, field) in [
            (91.0, 0.0, "location.lat"),
            (f64::NAN, 0.0, "location.lat"),
            (0.0, 181.0, "location.lon"),
            (0.0, f64::NEG_INFINITY, "location.lon"),
        ] {
            let s = Submission {
                location: Some(Location { lat, lon }),
                ..base()
            };
            assert_eq!(
                field_of(validate(s, &rules(), NOW)),
                (ErrorCode::InvalidValue, field.into())
            );
        }
    }

    #[test]
    fn client_regions_are_coarsened_or_refused() {
        let fine = h3o::LatLng::new(19.076, 72.8777)
            .unwrap()
            .to_cell(h3o::Resolution::Nine)
            .to_string();
        let s = Submission {
            location: None,
            region: Some(fine),
            ..base()
        };
        assert_eq!(validate(s, &rules(), NOW).unwrap().region.resolution(), 5);
        for bad in ["zzz", "", "ffffffffffffffff"] {
            let s = Submission {
                location: None,
                region: Some(bad.into()),
                ..base()
            };
            assert_eq!(
                field_of(validate(s, &rules(), NOW)),
                (ErrorCode::InvalidValue, "region".into()),
                "{bad}"
            );
        }
        let coarse = h3o::LatLng::new(19.076, 72.8777)
            .unwrap()
            .to_cell(h3o::Resolution::Two)
            .to_string();
        let s = Submission {
            location: None,
            region: Some(coarse),
            ..base()
        };
        assert_eq!(
            field_of(validate(s, &rules(), NOW)),
            (ErrorCode::InvalidValue, "region".into())
        );
    }

    #[test]
    fn observed_at_bounds() {
        let fmt = |ms: i64| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .unwrap()
                .format(&Rfc3339)
                .unwrap()
        };
        let ok = Submission {
            observed_at: Some(fmt(NOW + 4 * 60_000)),
            ..base()
        };
        assert!(validate(ok, &rules(), NOW).is_ok());
        for bad in [
            fmt(NOW + 6 * 60_000),
            fmt(NOW - 3 * 3_600_000),
            "yesterday".to_string(),
            "2026-13-01T00:00:00Z".into(),
        ] {
            let s = Submission {
                observed_at: Some(bad.clone()),
                ..base()
            };
            assert_eq!(
                field_of(validate(s, &rules(), NOW)),
                (ErrorCode::InvalidValue, "observed_at".into()),
                "{bad}"
            );
        }
    }
}
