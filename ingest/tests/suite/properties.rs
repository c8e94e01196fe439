//! Property tests: whatever bytes, JSON or identity headers arrive, the
//! handler answers with the contract (202, or a 4xx problem document that
//! names a known code) and never panics or hangs; made-up tokens are never
//! taken as an identity.

use crate::common;

use common::start_ingest;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::sync::OnceLock;

const CODES: [&str; 11] = [
    "malformed_json",
    "unknown_field",
    "missing_field",
    "invalid_value",
    "payload_too_large",
    "unsupported_media_type",
    "conflicting_identity",
    "invalid_id_token",
    "expired_id_token",
    "invalid_contributor_token",
    "expired_contributor_token",
];

struct Service {
    runtime: tokio::runtime::Runtime,
    url: String,
    client: reqwest::Client,
}

/// One service for all cases (proptest runs cases on one thread).
fn service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let ingest = runtime
            .block_on(start_ingest(common::trust_test_idp))
            .expect("ingest starts");
        let url = ingest.url.clone();
        // The service lives as long as the test binary.
        std::mem::forget(ingest);
        Service {
            runtime,
            url,
            client: reqwest::Client::new(),
        }
    })
}

/// Posts `body` and checks the answer against the contract.
fn check(body: Vec<u8>) -> Result<(), TestCaseError> {
    check_with(body, &[]).map(|_| ())
}

/// Posts `body` with `headers` and checks the answer against the
/// contract; returns the status.
fn check_with(body: Vec<u8>, headers: &[(&str, &str)]) -> Result<u16, TestCaseError> {
    let s = service();
    let (status, content_type, text) = s.runtime.block_on(async {
        let mut request = s
            .client
            .post(format!("{}/v1/submissions", s.url))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let resp = request.send().await.expect("service answers");
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ct, resp.text().await.unwrap())
    });
    let body: Value = serde_json::from_str(&text)
        .map_err(|e| TestCaseError::fail(format!("non-JSON answer {status}: {e}")))?;
    if status == 202 {
        prop_assert_eq!(content_type, "application/json");
        prop_assert!(body["risk"].is_string() && body["region"].is_string());
    } else {
        prop_assert!([400, 401, 413, 422].contains(&status), "status {}", status);
        prop_assert_eq!(content_type, "application/problem+json");
        prop_assert_eq!(body["status"].as_u64(), Some(u64::from(status)));
        let code = body["code"].as_str().unwrap_or_default();
        prop_assert!(CODES.contains(&code), "code {}", code);
        prop_assert_eq!(
            body["type"].as_str().unwrap_or_default(),
            format!("/errors/{code}")
        );
    }
    Ok(status)
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid() -> Map<String, Value> {
    json!({"for": "self", "age": 40, "gender": "female", "symptoms": ["fever"], "conditions": [],
        "travelled_internationally_14d": false, "contact_with_confirmed_case": false,
        "location": {"lat": 19.1, "lon": 72.9}})
    .as_object()
    .unwrap()
    .clone()
}

const KEYS: [&str; 12] = [
    "for",
    "age",
    "gender",
    "symptoms",
    "conditions",
    "travelled_internationally_14d",
    "contact_with_confirmed_case",
    "location",
    "region",
    "profile",
    "observed_at",
    "unexpected",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(bytes)?;
    }

    #[test]
    fn arbitrary_json(value in arb_json()) {
        check(serde_json::to_vec(&value).unwrap())?;
    }

    /// A valid body with a made-up `Authorization` or contributor token:
    /// refused (never a new identity), and answered by the contract.
    #[test]
    fn made_up_identities(
        scheme in prop::sample::select(vec!["Bearer ", "bearer ", "Basic ", ""]),
        token in "[ -~]{0,300}",
        as_contributor in any::<bool>(),
    ) {
        let body = serde_json::to_vec(&Value::Object(valid())).unwrap();
        let value = format!("{scheme}{token}");
        let header = if as_contributor { "hushmap-contributor" } else { "authorization" };
        // Only header values HTTP can carry are sent.
        prop_assume!(reqwest::header::HeaderValue::from_str(&value).is_ok());
        let status = check_with(body, &[(header, &value)])?;
        prop_assert_eq!(status, 401);
    }

    /// Valid submissions with one field replaced by anything, or removed.
    #[test]
    fn mutated_submissions(key in prop::sample::select(KEYS.to_vec()), value in arb_json(), remove in any::<bool>()) {
        let mut body = valid();
        if remove {
            body.remove(key);
        } else {
            body.insert(key.to_string(), value);
        }
        check(serde_json::to_vec(&Value::Object(body)).unwrap())?;
    }
}
