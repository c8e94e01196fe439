//! The submission body, as ingest handles it: parse (the API's error
//! mapping), validate, triage and coarsen. Whatever the bytes, nothing
//! panics; what passes encodes into a record that decodes back the same.
//! The bytes are also tried as a contributor token sent back.
#![no_main]

use hushmap_submission::coarsen::Coarsener;
use hushmap_submission::body::parse_submission;
use hushmap_submission::contributor::ContributorKeys;
use hushmap_submission::validate::{ValidationRules, validate};
use hushmap_schema::region::RegionResolution;
use hushmap_schema::{CoarseRecord, ContributorKey, WindowLength};
use libfuzzer_sys::fuzz_target;

/// 2026-11-29T00:00:00Z: a fixed clock keeps runs reproducible.
const NOW_MS: i64 = 1_795_910_400_000;

fuzz_target!(|bytes: &[u8]| {
    // The same bytes as a contributor token sent back: refused or opened,
    // never a panic; only a token ingest issued opens.
    let keys = ContributorKeys::new(b"fuzz-contributor-secret-0123456789abcdef");
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = keys.open_token(text, NOW_MS, 365);
    }
    let Ok(submission) = parse_submission(bytes) else {
        return;
    };
    let window = WindowLength::ONE_DAY;
    let rules = ValidationRules {
        resolution: RegionResolution::new(5).expect("valid resolution"),
        window,
        allowed_lateness_ms: 600_000,
    };
    let Ok(valid) = validate(submission, &rules, NOW_MS) else {
        return;
    };
    let coarsener = Coarsener::new(b"fuzz-contributor-secret-0123456789abcdef", window);
    let (_risk, record) = coarsener.coarsen(valid, ContributorKey([7; 16]));
    assert!(record.region.resolution() <= 6);
    assert_eq!(CoarseRecord::decode(&record.encode()), Ok(record));
});
