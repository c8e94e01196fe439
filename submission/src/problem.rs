//! RFC 9457 problem details, the one error shape of the public API.
//!
//! `code` and `field` are extension members: `code` is stable and
//! machine-readable, `field` is a JSON path into the submission. The
//! `detail` text never echoes a submitted value.

use http::StatusCode;
use serde::Serialize;

/// Stable error codes of the submission API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    MalformedJson,
    UnknownField,
    MissingField,
    InvalidValue,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    Unavailable,
    /// 400: both an ID token and a contributor token were sent.
    ConflictingIdentity,
    /// 401: the ID token is forged, foreign, malformed or not accepted.
    InvalidIdToken,
    /// 401: the ID token has expired (sign in again).
    ExpiredIdToken,
    /// 401: the contributor token is not one this service issued.
    InvalidContributorToken,
    /// 401: the contributor token is too old (drop it; start over).
    ExpiredContributorToken,
    /// 428: an anonymous submission without a proof of work.
    ProofRequired,
    /// 428: the proof of work is forged, expired, reused or insufficient.
    InvalidProof,
}

impl ErrorCode {
    /// The `WWW-Authenticate` challenge a 401 carries (RFC 9110 §11.6.1): a
    /// bearer challenge (RFC 6750) for ID tokens, the contributor-token scheme
    /// for anonymous clients.
    pub fn challenge(self) -> Option<&'static str> {
        match self {
            ErrorCode::InvalidIdToken | ErrorCode::ExpiredIdToken => {
                Some("Bearer realm=\"hushmap\", error=\"invalid_token\"")
            }
            ErrorCode::InvalidContributorToken | ErrorCode::ExpiredContributorToken => {
                Some("Hushmap-Contributor realm=\"hushmap\"")
            }
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::UnknownField => "unknown_field",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidValue => "invalid_value",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ConflictingIdentity => "conflicting_identity",
            ErrorCode::InvalidIdToken => "invalid_id_token",
            ErrorCode::ExpiredIdToken => "expired_id_token",
            ErrorCode::InvalidContributorToken => "invalid_contributor_token",
            ErrorCode::ExpiredContributorToken => "expired_contributor_token",
            ErrorCode::ProofRequired => "proof_required",
            ErrorCode::InvalidProof => "invalid_proof",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::MalformedJson | ErrorCode::UnknownField | ErrorCode::ConflictingIdentity => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::InvalidIdToken
            | ErrorCode::ExpiredIdToken
            | ErrorCode::InvalidContributorToken
            | ErrorCode::ExpiredContributorToken => StatusCode::UNAUTHORIZED,
            ErrorCode::MissingField | ErrorCode::InvalidValue => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ProofRequired | ErrorCode::InvalidProof => StatusCode::PRECONDITION_REQUIRED,
        }
    }

    fn title(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "The body is not valid JSON",
            ErrorCode::UnknownField => "The body has a field this API does not know",
            ErrorCode::MissingField => "A required field is missing",
            ErrorCode::InvalidValue => "A field has an invalid value",
            ErrorCode::PayloadTooLarge => "The body is too large",
            ErrorCode::UnsupportedMediaType => "The body must be application/json",
            ErrorCode::RateLimited => "Too many requests",
            ErrorCode::Unavailable => "The service cannot accept submissions right now",
            ErrorCode::ConflictingIdentity => {
                "Send either an ID token or a contributor token, not both"
            }
            ErrorCode::InvalidIdToken => "The ID token was not accepted",
            ErrorCode::ExpiredIdToken => "The ID token has expired",
            ErrorCode::InvalidContributorToken => "The contributor token was not accepted",
            ErrorCode::ExpiredContributorToken => "The contributor token has expired",
            ErrorCode::ProofRequired => "Anonymous submissions need a proof of work",
            ErrorCode::InvalidProof => "The proof of work was not accepted",
        }
    }
}

/// A problem details response (RFC 9457).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// `/errors/<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: ErrorCode,
    /// JSON path of the offending field, when one applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip)]
    pub retry_after_secs: Option<u32>,
}

impl Problem {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Problem {
        Problem {
            type_uri: format!("/errors/{}", code.as_str()),
            title: code.title().to_string(),
            status: code.status().as_u16(),
            detail: detail.into(),
            code,
            field: None,
            retry_after_secs: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Problem {
        self.field = Some(field.into());
        self
    }

    pub fn with_retry_after(mut self, secs: u32) -> Problem {
        self.retry_after_secs = Some(secs);
        self
    }
}
