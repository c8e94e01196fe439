//! The dashboard's error answers: RFC 9457 problem details, built by the
//! same function as ingest's (`hushmap_service::http::problem_response`).

use axum::http::StatusCode;
use axum::response::Response;

/// An RFC 9457 problem response, as ingest answers.
pub fn problem(status: StatusCode, code: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": format!("/errors/{code}"), "title": detail, "status": status.as_u16(), "detail": detail, "code": code,
    });
    hushmap_service::http::problem_response(status, &body, None, None)
}
