//! Hushmap dashboard: serves noisy releases, and only noisy releases.
//!
//! [`consumer`] reads the releases topic (read-committed) into the
//! [`ReleaseStore`](store::ReleaseStore); [`api`] serves the JSON API and the
//! analyst page.

pub mod api;
pub mod config;
pub mod consumer;
pub mod heatmap;
pub mod store;

pub use api::{DashboardServer, ServeError};
pub use config::DashboardConfig;
