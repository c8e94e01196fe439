//! The page: its HTML and the bundle built from `dashboard/web`, compiled
//! into the binary (one binary serves everything). The bundle is served
//! gzip-compressed to browsers that accept it (app.js is over 1 MB, most of
//! it the places list and the country outlines) and with an `ETag`, so a
//! reload revalidates instead of downloading it again.

use crate::problem::problem;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::sync::LazyLock;

pub(crate) const INDEX_HTML: &str = include_str!("../assets/index.html");
/// Built from `dashboard/web` (see its README); committed so that a plain
/// `cargo build` needs no Node.js.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript",
        include_bytes!("../assets/app.js"),
    ),
    ("app.css", "text/css", include_bytes!("../assets/app.css")),
];

/// One asset as served: its bytes, gzipped once at first use, and its tag.
struct Encoded {
    gzip: Vec<u8>,
    etag: String,
}

static ENCODED: LazyLock<Vec<Encoded>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|(_, _, body)| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(body).expect("writing to memory");
            let digest = Sha256::digest(body);
            Encoded {
                gzip: gz.finish().expect("writing to memory"),
                etag: format!("\"{}\"", hex::encode(&digest[..12])),
            }
        })
        .collect()
});

/// Whether a header list names `value` (`If-None-Match`, `Accept-Encoding`).
fn lists(headers: &HeaderMap, name: header::HeaderName, value: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            // `gzip;q=0` refuses it.
            t == value
                || (t.starts_with(value)
                    && t[value.len()..].trim_start().starts_with(';')
                    && !t.ends_with("q=0"))
        })
}

/// Whether `If-None-Match` names `etag` (or is `*`): the client's copy is
/// current, so a `304` answers (the release list's polls use it too).
pub(crate) fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    lists(headers, header::IF_NONE_MATCH, etag) || lists(headers, header::IF_NONE_MATCH, "*")
}

pub(crate) async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|(n, _, _)| *n == name) else {
        return problem(StatusCode::NOT_FOUND, "not_found", "no such asset");
    };
    let (_, mime, body) = ASSETS[i];
    let encoded = &ENCODED[i];
    let common = [
        (header::CACHE_CONTROL, "private, max-age=300"),
        (header::VARY, "Accept-Encoding"),
    ];
    if not_modified(&headers, &encoded.etag) {
        return (
            StatusCode::NOT_MODIFIED,
            common,
            [(header::ETAG, encoded.etag.clone())],
        )
            .into_response();
    }
    let etag = [(header::ETAG, encoded.etag.clone())];
    if lists(&headers, header::ACCEPT_ENCODING, "gzip") {
        (
            common,
            etag,
            [
                (header::CONTENT_TYPE, mime),
                (header::CONTENT_ENCODING, "gzip"),
            ],
            encoded.gzip.clone(),
        )
            .into_response()
    } else {
        (common, etag, [(header::CONTENT_TYPE, mime)], body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_and_if_none_match_are_read_as_lists() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, "br, gzip;q=0.8".parse().unwrap());
        assert!(lists(&h, header::ACCEPT_ENCODING, "gzip"));
        h.insert(header::ACCEPT_ENCODING, "gzip;q=0, br".parse().unwrap());
        assert!(!lists(&h, header::ACCEPT_ENCODING, "gzip"));
        h.insert(header::ACCEPT_ENCODING, "gzipx".parse().unwrap());
        assert!(!lists(&h, header::ACCEPT_ENCODING, "gzip"));
        h.insert(header::IF_NONE_MATCH, "\"a\", \"b\"".parse().unwrap());
        assert!(not_modified(&h, "\"b\""));
        assert!(!not_modified(&h, "\"c\""));
        h.insert(header::IF_NONE_MATCH, "*".parse().unwrap());
        assert!(not_modified(&h, "\"c\""));
    }
}
