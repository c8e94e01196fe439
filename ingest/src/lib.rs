//! Hushmap ingest: the public edge.
//!
//! A submission is validated strictly ([`validate`]), triaged ([`triage`])
//! so the person gets their risk level at once, coarsened ([`coarsen`]) to
//! a [`CoarseRecord`](hushmap_schema::CoarseRecord) and produced to Kafka
//! ([`producer`]). Who submits is a person ([`contributor`]): a signed-in
//! user whose ID token [`identity`] verifies, or an anonymous browser that
//! sends back the contributor token it was issued. Everything else in the
//! body is dropped in the handler; the raw body, coordinates, exact age,
//! tokens and subject ids never reach a log, a metric, Kafka or disk.
//!
//! The `service` feature (on by default) builds the HTTP service and its
//! Kafka producer. Without it only the parse → validate → triage → coarsen
//! steps are built ([`body`], [`validate`], [`triage`], [`coarsen`]): the
//! fuzz targets need no more, and skip building librdkafka and the HTTP
//! stack.

pub mod body;
pub mod coarsen;
#[cfg(feature = "service")]
pub mod config;
pub mod contributor;
#[cfg(feature = "service")]
pub mod dev_idp;
#[cfg(feature = "service")]
pub mod identity;
#[cfg(feature = "service")]
pub mod metrics;
#[cfg(feature = "service")]
pub mod openapi;
pub mod problem;
#[cfg(feature = "service")]
pub mod producer;
pub mod proof_of_work;
#[cfg(feature = "service")]
pub mod rate_limit;
#[cfg(feature = "service")]
pub mod server;
pub mod triage;
pub mod validate;

#[cfg(feature = "service")]
pub use config::IngestConfig;
#[cfg(feature = "service")]
pub use server::{IngestServer, ServeError};
