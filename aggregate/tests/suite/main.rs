//! The aggregator's integration tests, one binary: each module is what was
//! once a test file of its own (`cargo nextest run -E 'test(/^flood::/)'`
//! or `deploy/test.sh --test flood` runs one). One binary links
//! DataFusion once instead of once per file.

mod batch_mode;
mod common;
mod dp_audit;
mod exactly_once;
mod flood;
mod moved_envelopes;
mod partitioned_recovery;
mod producer_timestamps;
mod provisional;
mod release_log;
mod schedule;
