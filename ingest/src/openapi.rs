//! The OpenAPI 3 document of the public API, generated from the Rust types
//! of the contract, served at `/openapi.json`.
//!
//! Request examples are named `accepted_*` (the service answers 202) or
//! `rejected_<status>_*`; the contract test posts every one of them to a
//! running service and checks the answer.

use hushmap_schema::domain::{Condition, Gender, RiskLevel, Subject, Symptom};
use hushmap_schema::submission::{Location, Submission, Triage};
use hushmap_submission::problem::{ErrorCode, Problem};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hushmap ingest",
        description = "Self-check submissions. Answers the person's risk level at once; stores only a coarse, \
                       pseudonymous record (region cell, age band, window, symptoms, risk level)."
    ),
    paths(crate::handlers::submit, crate::handlers::challenge),
    components(schemas(
        Submission,
        Location,
        Triage,
        Problem,
        ErrorCode,
        Subject,
        Gender,
        Symptom,
        Condition,
        RiskLevel,
        crate::handlers::Challenge
    ))
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("OpenAPI document serialises")
}
