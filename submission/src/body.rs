//! The submission body, parsed as the public API parses it: unknown fields,
//! wrong types and malformed JSON become the contract's problem details
//! ([`Problem`]), whose text names the field and the rule, never the value.
//!
//! Kept apart from the server so that batch mode and the fuzz targets parse
//! exactly as the API does without building the HTTP service.

use crate::problem::{ErrorCode, Problem};
use hushmap_schema::submission::Submission;
use serde_json::error::Category;

/// Parses a submission body as the API does: unknown fields, wrong types
/// and malformed JSON become the contract's problem details.
pub fn parse_submission(bytes: &[u8]) -> Result<Submission, Problem> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(bytes))
        .map_err(parse_problem)
}

/// Maps a serde error to the contract's codes. Details name the field and
/// the rule, never the value that was sent.
fn parse_problem(err: serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let path = err.path().to_string();
    let inner = err.inner();
    match inner.classify() {
        // JSON cannot spell NaN or ∞; an overflowing literal such as 1e999
        // is the closest a client gets, and it is a bad value, not bad JSON.
        Category::Syntax if path != "." && inner.to_string().starts_with("number out of range") => {
            Problem::new(
                ErrorCode::InvalidValue,
                "invalid value: number out of range",
            )
            .with_field(path)
        }
        Category::Syntax | Category::Eof | Category::Io => Problem::new(
            ErrorCode::MalformedJson,
            format!(
                "invalid JSON at line {}, column {}",
                inner.line(),
                inner.column()
            ),
        ),
        Category::Data => {
            let msg = inner.to_string();
            let join = |name: &str| {
                if path == "." {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                }
            };
            if let Some(name) = backticked(&msg, "unknown field `") {
                // serde_path_to_error's path already ends at the unknown field.
                let field = if path == "." {
                    name.to_string()
                } else {
                    path.clone()
                };
                Problem::new(
                    ErrorCode::UnknownField,
                    "the body has a field this API does not accept",
                )
                .with_field(field)
            } else if let Some(name) = backticked(&msg, "missing field `") {
                Problem::new(ErrorCode::MissingField, "a required field is missing")
                    .with_field(join(name))
            } else if path == "." {
                Problem::new(ErrorCode::MalformedJson, "the body must be a JSON object")
            } else {
                // Type or enum errors: describe the expectation, not the input.
                let expected = msg
                    .split("expected ")
                    .nth(1)
                    .map(|e| e.split(" at line").next().unwrap_or(e));
                let detail = match expected {
                    Some(e) => format!("invalid value: expected {e}"),
                    None => "invalid value".to_string(),
                };
                Problem::new(ErrorCode::InvalidValue, detail).with_field(path)
            }
        }
    }
}

/// The name between `prefix` and the next backtick, if `msg` starts so.
fn backticked<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    msg.strip_prefix(prefix)?.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem_for(body: &str) -> Problem {
        parse_submission(body.as_bytes())
            .map(|_| ())
            .expect_err("must fail")
    }

    const VALID: &str = r#"{"for":"self","age":30,"gender":"female","symptoms":[],"conditions":[],
        "travelled_internationally_14d":false,"contact_with_confirmed_case":false,"location":{"lat":1.0,"lon":2.0}}"#;

    #[test]
    fn parse_errors_map_to_contract_codes() {
        let p = problem_for("{not json");
        assert_eq!((p.code, p.status), (ErrorCode::MalformedJson, 400));
        let p = problem_for("[]");
        assert_eq!(p.code, ErrorCode::MalformedJson);
        let p = problem_for(&VALID.replace("\"age\":30", "\"age\":30,\"ip\":\"10.0.0.1\""));
        assert_eq!(
            (p.code, p.status, p.field.as_deref()),
            (ErrorCode::UnknownField, 400, Some("ip"))
        );
        let p = problem_for(&VALID.replace("\"lat\":1.0", "\"lat\":1.0,\"alt\":3"));
        assert_eq!(
            (p.code, p.field.as_deref()),
            (ErrorCode::UnknownField, Some("location.alt"))
        );
        let p = problem_for(&VALID.replace("\"age\":30,", ""));
        assert_eq!(
            (p.code, p.status, p.field.as_deref()),
            (ErrorCode::MissingField, 422, Some("age"))
        );
        let p = problem_for(&VALID.replace("\"female\"", "\"robot\""));
        assert_eq!(
            (p.code, p.status, p.field.as_deref()),
            (ErrorCode::InvalidValue, 422, Some("gender"))
        );
        let p =
            problem_for(&VALID.replace("\"symptoms\":[]", "\"symptoms\":[\"fever\",\"sneezing\"]"));
        assert_eq!(
            (p.code, p.field.as_deref()),
            (ErrorCode::InvalidValue, Some("symptoms[1]"))
        );
        let p = problem_for(&VALID.replace("\"lat\":1.0", "\"lat\":1e999"));
        assert_eq!(
            (p.code, p.status, p.field.as_deref()),
            (ErrorCode::InvalidValue, 422, Some("location.lat"))
        );
        let p = problem_for(&VALID.replace("\"age\":30", "\"age\":\"thirty\""));
        assert_eq!(
            (p.code, p.field.as_deref()),
            (ErrorCode::InvalidValue, Some("age"))
        );
        assert!(
            !p.detail.contains("thirty"),
            "detail must not echo input: {}",
            p.detail
        );
    }
}
