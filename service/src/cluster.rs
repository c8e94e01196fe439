//! Where a batch cluster's scheduler is: one parse for the batch client
//! (`df://HOST[:PORT]`, `hushmap-aggregate batch --cluster`) and for the
//! executors (`HOST[:PORT]`, `hushmap-cluster executor --scheduler`), and
//! one default port for both.

use std::fmt;

/// Ballista's scheduler port: the default of a URL or address without one,
/// and where `hushmap-cluster scheduler` binds unless told otherwise.
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;

/// A Ballista scheduler's address, written `df://HOST[:PORT]` (the form
/// Ballista's clients take).
///
/// ```
/// use hushmap_service::cluster::ClusterUrl;
///
/// let url = ClusterUrl::parse("df://scheduler.batch:50050").unwrap();
/// assert_eq!(url.to_string(), "df://scheduler.batch:50050");
/// assert_eq!(ClusterUrl::parse("df://scheduler").unwrap().port(), 50050);
/// assert!(ClusterUrl::parse("http://scheduler:50050").is_err());
/// assert!(ClusterUrl::parse("df://scheduler:50050/path").is_err());
/// // An executor names its scheduler without the scheme.
/// let address = ClusterUrl::parse_address("scheduler.batch:6000").unwrap();
/// assert_eq!((address.host(), address.port()), ("scheduler.batch", 6000));
/// assert!(ClusterUrl::parse_address("scheduler.batch:0").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    host: String,
    port: u16,
}

/// Why a scheduler address was refused: the text and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: {why}")]
pub struct ClusterUrlError {
    text: String,
    why: &'static str,
}

impl ClusterUrl {
    /// `df://HOST[:PORT]`.
    pub fn parse(text: &str) -> Result<ClusterUrl, ClusterUrlError> {
        let rest = text.strip_prefix("df://").ok_or_else(|| ClusterUrlError {
            text: text.to_string(),
            why: "expected df://HOST[:PORT]",
        })?;
        Self::host_and_port(text, rest)
    }

    /// `HOST[:PORT]`, without the scheme.
    pub fn parse_address(text: &str) -> Result<ClusterUrl, ClusterUrlError> {
        Self::host_and_port(text, text)
    }

    fn host_and_port(text: &str, rest: &str) -> Result<ClusterUrl, ClusterUrlError> {
        let bad = |why| ClusterUrlError {
            text: text.to_string(),
            why,
        };
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad(
                "only a host and a port, no scheme, path, query or user",
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("the port must be 1 to 65535"))?,
            ),
            None => (rest, DEFAULT_SCHEDULER_PORT),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(ClusterUrl {
            host: host.to_string(),
            port,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for ClusterUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "df://{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_a_df_url_with_a_host_and_a_port() {
        assert_eq!(
            ClusterUrl::parse("df://localhost").unwrap().to_string(),
            "df://localhost:50050"
        );
        assert_eq!(
            ClusterUrl::parse("df://10.0.0.7:6000").unwrap(),
            ClusterUrl {
                host: "10.0.0.7".into(),
                port: 6000
            }
        );
        for bad in [
            "localhost:50050",
            "df://",
            "df://:50050",
            "df://h:0",
            "df://h:99999",
            "df://h:x",
            "df://user@h:1",
            "df://h:1/x",
        ] {
            assert!(ClusterUrl::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn an_executor_names_its_scheduler_by_host_and_port() {
        assert_eq!(
            ClusterUrl::parse_address("localhost").unwrap().port(),
            DEFAULT_SCHEDULER_PORT
        );
        for bad in ["", ":50050", "h:0", "h:x", "df://h:1", "h:1/x"] {
            let refused = ClusterUrl::parse_address(bad).unwrap_err();
            assert!(
                refused.to_string().starts_with(&format!("{bad:?}: ")),
                "{refused}"
            );
        }
    }
}
