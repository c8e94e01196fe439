//! Hushmap dashboard: serves noisy releases, and only noisy releases.
//!
//! [`consumer`] reads the releases topic (read-committed) into the
//! [`ReleaseStore`](store::ReleaseStore), Parquet files by day; [`api`]
//! serves the analyst page, the JSON API and the exports, [`flight`] the
//! Arrow Flight service, both reading the store ([`query`] through
//! DataFusion). [`auth`] decides who may read what.

pub mod api;
pub mod auth;
pub mod config;
pub mod consumer;
pub mod export;
pub mod flight;
pub mod flight_sql;
pub mod heatmap;
pub mod privacy;
pub mod problem;
pub mod query;
pub mod session;
pub mod sql_limits;
pub mod state;
pub mod store;

pub use api::{DashboardServer, ServeError};
pub use config::DashboardConfig;
