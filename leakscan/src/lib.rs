//! `hushmap-leakscan`: looks for personal data where Hushmap promises there
//! is none, in raw bytes — Kafka topics from offset 0, service logs, the
//! dashboard's release store, metrics output and exports.
//!
//! The failure Hushmap exists to avoid was a logging server full of raw
//! answers and home locations. This tool is how an operator (and our test
//! suite, after a soak with distinctive values in every field) checks that
//! nothing of the kind accumulated anywhere. See [`detect`] for what counts
//! as a leak and [`source`] for what is read.
//!
//! ```
//! use hushmap_leakscan::{detect::Needles, source::Scanner};
//! let mut needles = Needles::default();
//! needles.add_coordinate("19.076091");
//! let mut scanner = Scanner::new(needles);
//! scanner.scan_bytes(b"{\"n_total\":12,\"high_share\":0.5}", || "release".into());
//! assert!(scanner.findings().is_empty());
//! scanner.scan_bytes(b"GET /?lat=19.076091", || "access.log:1".into());
//! // The keyed pattern, the needle, and the needle cut to four decimals.
//! assert_eq!(scanner.findings().len(), 3);
//! ```

pub mod detect;
pub mod source;

pub use detect::{Finding, LeakKind, Needles};
pub use source::Scanner;

/// Why a source could not be scanned (distinct from finding a leak).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("decoding {source_name} as Arrow/Parquet: {reason}")]
    Decode { source_name: String, reason: String },
    #[error("reading topic {topic}: {reason}")]
    Kafka { topic: String, reason: String },
    #[error("fetching {url}: {reason}")]
    Http { url: String, reason: String },
    #[error(
        "needles file line {line}: expected `KIND VALUE` with KIND one of coordinate, profile, client_ip, user_agent, token"
    )]
    Needles { line: usize },
}
