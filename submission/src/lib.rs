//! One self-check submission, from request body to coarse record.
//!
//! The steps every path that accepts a submission takes, in order: the
//! public edge (`hushmap-ingest`), the aggregator's batch mode and the fuzz
//! targets all run this code, so a submission refused by one is refused by
//! all of them.
//!
//! 1. [`body::parse_submission`]: strict JSON into
//!    [`Submission`](hushmap_schema::submission::Submission) (unknown fields
//!    refused);
//! 2. [`validate::validate`]: ranges, the reporting window, the location
//!    coarsened to a [`RegionCell`](hushmap_schema::RegionCell);
//! 3. [`triage::assess`]: the risk level the person is told at once;
//! 4. [`coarsen::Coarsener`]: the [`CoarseRecord`](hushmap_schema::CoarseRecord)
//!    that is all that travels downstream, keyed by the person
//!    ([`contributor`]).
//!
//! Each step refuses with a [`problem::Problem`], whose stable
//! [`problem::ErrorCode`] is part of the public API. Nothing here does I/O.

pub mod body;
pub mod coarsen;
pub mod contributor;
pub mod problem;
pub mod triage;
pub mod validate;
