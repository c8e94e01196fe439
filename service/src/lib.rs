//! Process plumbing shared by `hushmap-ingest`, `hushmap-aggregate` and
//! `hushmap-dashboard`: how they log, how they are asked to stop, how their
//! Kafka clients connect ([`kafka`]), where secrets come from
//! ([`secrets`]), the internal metrics listener ([`metrics`]) and, with
//! the `http` feature, how the public services serve HTTP to clients that
//! may be hostile (`http`, `tls`, `client_address`).

#[cfg(feature = "http")]
pub mod client_address;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod consumer;
#[cfg(feature = "http")]
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod runtime;
pub mod secrets;
#[cfg(feature = "http")]
pub mod tls;

use std::io::IsTerminal;

/// Installs the global `tracing` subscriber.
///
/// `HUSHMAP_LOG` is an `EnvFilter` directive (default `info`);
/// `HUSHMAP_LOG_FORMAT=json` switches to one JSON object per line. Logs go
/// to stderr. What is logged is decided at each call site; no layer here
/// records request bodies or headers.
///
/// Whatever `HUSHMAP_LOG` says, targets known to log a client's address
/// are capped below the level where they do (see [`ADDRESS_LOGGING_CAPS`]).
pub fn init_tracing() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("HUSHMAP_LOG")
        .unwrap_or_else(|_| "info".into());
    for cap in ADDRESS_LOGGING_CAPS {
        filter = filter.add_directive(cap.parse().expect("valid directive"));
    }
    let json = std::env::var("HUSHMAP_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init()
    } else {
        builder.compact().init()
    }
}

/// Filter directives appended after `HUSHMAP_LOG`: axum's server logs
/// "connection <peer address> accepted" at TRACE, which is a client IP in
/// the logs (found by the soak's leak scan).
pub const ADDRESS_LOGGING_CAPS: [&str; 1] = ["axum::serve=debug"];

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested");
}
