//! Hushmap ingest: the public edge.
//!
//! A submission is validated strictly ([`validate`]), triaged ([`triage`])
//! so the person gets their risk level at once, coarsened ([`coarsen`]) to
//! a [`CoarseRecord`](hushmap_schema::CoarseRecord) and produced to Kafka
//! ([`producer`]). Everything else in the body is dropped in the handler; the
//! raw body, coordinates, exact age and profile id never reach a log, a
//! metric, Kafka or disk.

pub mod coarsen;
pub mod config;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod producer;
pub mod rate_limit;
pub mod server;
pub mod triage;
pub mod validate;

pub use config::IngestConfig;
pub use server::{IngestServer, ServeError};
