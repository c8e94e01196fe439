//! The page: its HTML and the bundle built from `dashboard/web`, compiled
//! into the binary (one binary serves everything).

use crate::problem::problem;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

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

pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, mime, body)) => (
            [
                (header::CONTENT_TYPE, *mime),
                (header::CACHE_CONTROL, "private, max-age=300"),
            ],
            *body,
        )
            .into_response(),
        None => problem(StatusCode::NOT_FOUND, "not_found", "no such asset"),
    }
}
