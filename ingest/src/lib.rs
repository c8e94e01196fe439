//! Hushmap ingest: the public edge.
//!
//! A submission goes through the steps in `hushmap-submission` (parse,
//! validate, triage, coarsen) so the person gets their risk level at once,
//! and only the coarse record is produced to Kafka ([`producer`]), sealed
//! to the aggregator's public key. Who submits is a person: a signed-in
//! user whose ID token [`identity`] verifies, or an anonymous browser that
//! sends back the contributor token it was issued and a proof of work
//! ([`proof_of_work`]). Everything else in the body is dropped in the
//! handler ([`server`]); the raw body, coordinates, exact age, tokens and
//! subject ids never reach a log, a metric, Kafka or disk.

pub mod config;
pub mod handlers;
pub mod identity;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod producer;
pub mod proof_of_work;
pub mod rate_limit;
pub mod server;

pub use config::IngestConfig;
pub use server::{IngestServer, ServeError};
