//! Hushmap dashboard: serves noisy releases, and only noisy releases.
//!
//! [`consumer`] reads the releases topic (read-committed) into the
//! [`ReleaseStore`](store::ReleaseStore), Parquet files by day; [`server`]
//! binds the listeners and routes: [`api`] serves the JSON API,
//! [`assets`] the analyst page, [`export`] the researchers' files and
//! [`flight`] the Arrow Flight service, all reading the store ([`query`]
//! through DataFusion) and sharing [`state`]. [`auth`] decides who may read what.

pub mod alerts;
pub mod api;
pub mod assets;
pub mod auth;
pub mod config;
pub mod consumer;
pub mod export;
pub mod flight;
pub mod flight_sql;
pub mod heatmap;
pub mod privacy;
pub mod problem;
pub mod provisional;
pub mod query;
pub mod server;
pub mod session;
pub mod sql_limits;
pub mod sql_worker;
pub mod state;
pub mod store;
pub mod webhook;

pub use config::DashboardConfig;
pub use server::{DashboardServer, ServeError};
