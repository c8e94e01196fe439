//! Ingest's integration tests, one binary: each module is what was once a
//! test file of its own (`deploy/test.sh --test edge_attacks` runs one).

mod broker_outage;
mod common;
mod contract;
mod edge_attacks;
mod identity;
mod no_pii_in_logs;
mod properties;
mod selfcheck_page;
