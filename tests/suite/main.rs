//! Hushmap's cross-service tests, one binary: whole pipelines, real service
//! processes, real brokers, browsers and researcher clients. Each module is
//! one area (`deploy/test.sh --test soak` runs one); the harness they
//! share is the `hushmap_tests` library (`tests/src`).

mod alerts;
mod dashboard_access;
mod dashboard_edge;
mod dashboard_history;
mod dashboard_page;
mod dashboard_polling;
mod dashboard_tls;
mod deploy_topics;
mod end_to_end;
mod faults_under_load;
mod flight_sql_limits;
mod hostile_topic;
mod kafka_cluster;
mod kafka_sasl_ssl;
mod measurements;
mod partitioned;
mod provisional_map;
mod secure_defaults;
mod soak;
mod utility;
